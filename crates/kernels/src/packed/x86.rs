//! x86-64 kernels of the packed product: the 8 lanes of an accumulator are the 8 rows of a
//! group. One source serves three instruction sets, chosen by the `ISA` parameter: AVX2
//! (`vpmaddubsw` pairs summed in 16 bits, then widened) and, where the CPU has it, the VNNI
//! int8 dot product `vpdpbusd` (four products summed straight into 32 bits: fewer instructions
//! per block), in its AVX-512 (EVEX, 256-bit vectors) or AVX-VNNI (VEX) encoding. All three
//! compute the same integer sums, so their results are bit for bit equal.

use super::{ActView, PackedMatrix, GROUP, TILE_TOKENS};
use std::arch::x86_64::*;

/// The `ISA` parameter of the kernels.
pub(super) const AVX2: u8 = 0;
pub(super) const AVX_VNNI: u8 = 1;
pub(super) const AVX512_VNNI: u8 = 2;

/// The f32 scales `2^(e - 128)` of the 8 E8M0 exponent bytes at `p`, exactly as
/// [`crate::quant::mxfp4::e8m0_half`] (a shift into the exponent field for `e >= 2`, the
/// subnormals `2^-128` and `2^-127` below).
///
/// # Safety
/// AVX2; 8 bytes readable at `p`.
#[inline(always)]
pub(super) unsafe fn e8m0_half_8(p: *const u8) -> __m256 {
    let e = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()));
    // (e - 1) << 23 is the f32 for e >= 2 (at least 2^-126); below, it is 0 or negative, and
    // the subnormal 2^-128 << min(e, 1) is the larger.
    let normal = _mm256_sub_epi32(_mm256_slli_epi32::<23>(e), _mm256_set1_epi32(1 << 23));
    let one = _mm256_set1_epi32(1);
    let subnormal = _mm256_sllv_epi32(_mm256_set1_epi32(0x0020_0000), _mm256_min_epu32(e, one));
    _mm256_castsi256_ps(_mm256_max_epi32(normal, subnormal))
}

/// A byte-shuffle control's byte that zeroes its destination.
const Z: u8 = 0x80;

/// A byte-shuffle control (`pshufb` indexes within each 128-bit part of the vector) of `N`
/// bytes that gives byte `k` of every 32-bit lane the byte `pick[k]` of the same lane (`Z`:
/// zero). A whole-vector constant, so that the shuffle reads it as its memory operand.
pub(super) const fn lane_shuffle<const N: usize>(pick: [u8; 4]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        let p = pick[i % 4];
        out[i] = if p < 4 { p + 4 * (i % 16 / 4) as u8 } else { p };
        i += 1;
    }
    out
}

/// Q4_K's scale of run `q` of four from each row's lane of scale bytes ([`lane_shuffle`]'s
/// picks): as a 32-bit value ...
pub(super) const RUN_SCALE: [[u8; 4]; 4] = [[0, Z, Z, Z], [1, Z, Z, Z], [2, Z, Z, Z], [3, Z, Z, Z]];

/// ... and in both 16-bit halves of the lane.
pub(super) const RUN_SCALE_TWICE: [[u8; 4]; 4] =
    [[0, Z, 0, Z], [1, Z, 1, Z], [2, Z, 2, Z], [3, Z, 3, Z]];

/// Bytes 1 and 3 of each lane as 16-bit values (bytes 0 and 2 are a mask away).
pub(super) const ODD_BYTE_PAIRS: [u8; 4] = [1, Z, 3, Z];

/// `acc + Σ` of each lane's four products of unsigned bytes of `w` by signed bytes of `x`.
///
/// # Safety
/// The CPU has the instruction set `ISA` names (only the VNNI ones use this).
#[inline(always)]
pub(super) unsafe fn dpbusd<const ISA: u8>(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    match ISA {
        AVX512_VNNI => _mm256_dpbusd_epi32(acc, w, x),
        AVX_VNNI => _mm256_dpbusd_avx_epi32(acc, w, x),
        _ => unreachable!("dpbusd without VNNI"),
    }
}

/// `out[c][i]` = row `8g + i` · token `t0 + c`, for `c < n` (at most [`TILE_TOKENS`]).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C, and the instruction set `ISA` names.
pub(super) unsafe fn group<const ISA: u8>(
    w: &PackedMatrix,
    x: &ActView,
    g: usize,
    t0: usize,
    n: usize,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    assert!((1..=TILE_TOKENS).contains(&n), "{n} tokens in a tile");
    if super::iq4::is_table_format(w.spec.ty) {
        return super::x86_iq4::group::<ISA>(w, x, g, t0, n, out);
    }
    if w.spec.is_k() {
        return super::x86_k::group::<ISA>(w, x, g, t0, n, out);
    }
    let (spec, nb, gb) = (w.spec, w.blocks_per_row(), w.group_bytes());
    let group = &w.data[g * gb..(g + 1) * gb];
    let mut xs = [std::ptr::null::<u8>(); TILE_TOKENS];
    let mut aux = [std::ptr::null::<f32>(); TILE_TOKENS];
    for c in 0..n {
        let row = x.acts.row(t0 + c);
        let a = x.acts.aux(t0 + c);
        assert!(
            row.len() >= nb * x.block && a.len() >= 2 * nb,
            "activation row"
        );
        xs[c] = row[x.qs_off..].as_ptr();
        aux[c] = a.as_ptr();
    }
    let args = Args {
        nb,
        group: group.as_ptr(),
        record: spec.record(GROUP),
        m_off: spec.m_off(GROUP),
        qs_off: spec.qs_off(GROUP),
        qh_off: spec.qh_off(GROUP),
        min_factor: spec.min_factor,
        xs,
        x_block: x.block,
        aux,
        prefetch: w.prefetch,
    };
    macro_rules! by_tokens {
        ($bits:literal, $min:literal) => {
            // SAFETY: the CPU has AVX2/FMA/F16C and `ISA` (the caller's promise); `group`
            // holds `nb` records of this spec, each token row `nb` activation blocks and
            // `2 * nb` aux values (asserted above), which is all the kernel reads.
            unsafe {
                match (ISA, n) {
                    (AVX512_VNNI, 1) => tile_avx512_vnni::<$bits, $min, 1>(&args, out),
                    (AVX512_VNNI, 2) => tile_avx512_vnni::<$bits, $min, 2>(&args, out),
                    (AVX512_VNNI, 3) => tile_avx512_vnni::<$bits, $min, 3>(&args, out),
                    (AVX512_VNNI, _) => tile_avx512_vnni::<$bits, $min, 4>(&args, out),
                    (AVX_VNNI, 1) => tile_avx_vnni::<$bits, $min, 1>(&args, out),
                    (AVX_VNNI, 2) => tile_avx_vnni::<$bits, $min, 2>(&args, out),
                    (AVX_VNNI, 3) => tile_avx_vnni::<$bits, $min, 3>(&args, out),
                    (AVX_VNNI, _) => tile_avx_vnni::<$bits, $min, 4>(&args, out),
                    (_, 1) => tile_avx2::<$bits, $min, 1>(&args, out),
                    (_, 2) => tile_avx2::<$bits, $min, 2>(&args, out),
                    (_, 3) => tile_avx2::<$bits, $min, 3>(&args, out),
                    _ => tile_avx2::<$bits, $min, 4>(&args, out),
                }
            }
        };
    }
    match (spec.bits, spec.has_min) {
        (4, false) => by_tokens!(4, false),
        (4, true) => by_tokens!(4, true),
        (5, false) => by_tokens!(5, false),
        (5, true) => by_tokens!(5, true),
        _ => by_tokens!(8, false),
    }
}

struct Args {
    nb: usize,
    group: *const u8,
    record: usize,
    m_off: usize,
    qs_off: usize,
    qh_off: usize,
    min_factor: f32,
    xs: [*const u8; TILE_TOKENS],
    x_block: usize,
    aux: [*const f32; TILE_TOKENS],
    /// One-token products: bytes ahead to prefetch ([`PackedMatrix`]'s).
    prefetch: usize,
}

/// The 8 weight vectors of one record (see the module layout): bytes `4i..4i + 4` of vector `k`
/// are elements `4k..4k + 4` of row `i`; unsigned for 4/5 bits, signed for 8.
///
/// # Safety
/// AVX2 available; `rec` readable for a whole record.
#[inline(always)]
unsafe fn weight_vectors<const BITS: u32>(a: &Args, rec: *const u8) -> [__m256i; 8] {
    let q = rec.add(a.qs_off);
    if BITS == 8 {
        return std::array::from_fn(|k| _mm256_loadu_si256(q.add(32 * k).cast()));
    }
    let mut v = nibble_vectors(q);
    if BITS == 5 {
        // Bit k of each qh byte becomes bit 4 of the same byte of vector k.
        let h = _mm256_loadu_si256(rec.add(a.qh_off).cast());
        let bit4 = _mm256_set1_epi8(0x10);
        for (k, vk) in v.iter_mut().enumerate() {
            let moved = if k < 4 {
                _mm256_sll_epi16(h, _mm_cvtsi32_si128(4 - k as i32))
            } else {
                _mm256_srl_epi16(h, _mm_cvtsi32_si128(k as i32 - 4))
            };
            *vk = _mm256_or_si256(*vk, _mm256_and_si256(moved, bit4));
        }
    }
    v
}

/// The 8 nibble vectors of one 32-element run (128 bytes at `p`, laid out as the module says),
/// for the 32-element formats and each run of a k-quant record.
///
/// # Safety
/// AVX2; `p` readable for 128 bytes.
#[inline(always)]
pub(super) unsafe fn nibble_vectors(p: *const u8) -> [__m256i; 8] {
    let low4 = _mm256_set1_epi8(0x0F);
    let mut v = [_mm256_setzero_si256(); 8];
    for q in 0..4 {
        let raw = _mm256_loadu_si256(p.add(32 * q).cast());
        v[2 * q] = _mm256_and_si256(raw, low4);
        v[2 * q + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), low4);
    }
    v
}

/// Broadcast of the 4 activation bytes `xq[4k..4k + 4]`.
///
/// # Safety
/// AVX2; `xq` readable for `4k + 4` bytes.
#[inline(always)]
pub(super) unsafe fn bx(xq: *const u8, k: usize) -> __m256i {
    _mm256_set1_epi32(xq.add(4 * k).cast::<i32>().read_unaligned())
}

/// The 8 rows' integer dot products with one activation block (`xq`: 32 signed bytes).
///
/// # Safety
/// AVX2 and `ISA` available; `xq` readable for 32 bytes.
#[inline(always)]
unsafe fn row_dots<const ISA: u8, const BITS: u32>(
    v: &[__m256i; 8],
    abs: &[__m256i; 8],
    xq: *const u8,
) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    let bx = |k: usize| bx(xq, k);
    if ISA != AVX2 {
        // Unsigned weights as they are; signed ones as |w| against x with w's sign.
        let mut s = _mm256_setzero_si256();
        for k in 0..8 {
            s = if BITS == 8 {
                dpbusd::<ISA>(s, abs[k], _mm256_sign_epi8(bx(k), v[k]))
            } else {
                dpbusd::<ISA>(s, v[k], bx(k))
            };
        }
        return s;
    }
    match BITS {
        // 8 products of values below 16 by bytes of at most 127 in magnitude, two per i16:
        // at most 8 * 2 * 15 * 127 = 30480, no overflow.
        4 => {
            let mut s = _mm256_maddubs_epi16(v[0], bx(0));
            for (k, &vk) in v.iter().enumerate().skip(1) {
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(vk, bx(k)));
            }
            _mm256_madd_epi16(s, ones)
        }
        // Values below 32: four pairs per i16 sum (4 * 2 * 31 * 127 = 31496).
        5 => {
            let mut s0 = _mm256_maddubs_epi16(v[0], bx(0));
            let mut s1 = _mm256_maddubs_epi16(v[4], bx(4));
            for k in 1..4 {
                s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(v[k], bx(k)));
                s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(v[k + 4], bx(k + 4)));
            }
            _mm256_add_epi32(_mm256_madd_epi16(s0, ones), _mm256_madd_epi16(s1, ones))
        }
        // Signed weights: |w| times x with w's sign; each pair (at most 2 * 128 * 127) is
        // widened at once.
        _ => {
            let mut s = _mm256_setzero_si256();
            for k in 0..8 {
                let p = _mm256_maddubs_epi16(abs[k], _mm256_sign_epi8(bx(k), v[k]));
                s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
            }
            s
        }
    }
}

/// # Safety
/// AVX2/FMA/F16C available; `a` describes readable memory as [`group`] checks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<const BITS: u32, const HAS_MIN: bool, const C: usize>(
    a: &Args,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    tile::<AVX2, BITS, HAS_MIN, C>(a, out)
}

/// # Safety
/// As [`tile_avx2`], and AVX-VNNI available.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn tile_avx_vnni<const BITS: u32, const HAS_MIN: bool, const C: usize>(
    a: &Args,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    tile::<AVX_VNNI, BITS, HAS_MIN, C>(a, out)
}

/// # Safety
/// As [`tile_avx2`], and AVX-512 F/BW/VL/VNNI available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_avx512_vnni<const BITS: u32, const HAS_MIN: bool, const C: usize>(
    a: &Args,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    tile::<AVX512_VNNI, BITS, HAS_MIN, C>(a, out)
}

/// The body of the tile kernels, compiled into each of them with its instruction set.
///
/// # Safety
/// AVX2/FMA/F16C and `ISA` available; `a` describes readable memory as [`group`] checks.
#[inline(always)]
unsafe fn tile<const ISA: u8, const BITS: u32, const HAS_MIN: bool, const C: usize>(
    a: &Args,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    let min_factor = _mm256_set1_ps(a.min_factor);
    let mut acc = [_mm256_setzero_ps(); C];
    for b in 0..a.nb {
        let rec = a.group.add(b * a.record);
        if C == 1 {
            prefetch_ahead(rec, a.prefetch, a.record);
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(rec.cast()));
        let m = if HAS_MIN {
            _mm256_cvtph_ps(_mm_loadu_si128(rec.add(a.m_off).cast()))
        } else {
            _mm256_mul_ps(d, min_factor)
        };
        let v = weight_vectors::<BITS>(a, rec);
        let mut abs = [_mm256_setzero_si256(); 8];
        if BITS == 8 {
            for (a, &vk) in abs.iter_mut().zip(&v) {
                *a = _mm256_sign_epi8(vk, vk);
            }
        }
        for (c, acc) in acc.iter_mut().enumerate() {
            let isum = row_dots::<ISA, BITS>(&v, &abs, a.xs[c].add(b * a.x_block));
            let dx = _mm256_broadcast_ss(&*a.aux[c].add(2 * b));
            *acc = _mm256_fmadd_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(isum), *acc);
            if BITS != 8 {
                let sx = _mm256_broadcast_ss(&*a.aux[c].add(2 * b + 1));
                *acc = _mm256_fmadd_ps(m, sx, *acc);
            }
        }
    }
    for c in 0..C {
        _mm256_storeu_ps(out[c].as_mut_ptr(), acc[c]);
    }
}

/// Bytes ahead of the current record that a one-token product asks the cache for: a single
/// token streams the weights once, bound by memory latency unless loads are in flight early.
const PREFETCH_AHEAD: usize = 2048;

/// How far ahead (bytes) the one-token products of the 32-element and table formats prefetch
/// their records; 0: not at all. `HEARTH_PREFETCH=BYTES` sets it (0 turns it off); else none
/// on AMD CPUs with AVX-512 and [`PREFETCH_AHEAD`] elsewhere. On a Zen 4 the hardware
/// prefetchers alone streamed these products 8-18% faster (Q4_1, Q5_0, Q8_0 from memory, 1
/// thread), as the 16-row k-quant ones (see `x86_512::kquant_prefetch`); on a Zen 3 (AVX2)
/// and on Intel the software prefetch paid. Decided once.
pub(super) fn record_prefetch() -> usize {
    static AHEAD: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *AHEAD.get_or_init(|| {
        let amd_avx512 = !crate::simd::x86::is_intel() && is_x86_feature_detected!("avx512f");
        let default = if amd_avx512 { 0 } else { PREFETCH_AHEAD };
        prefetch_setting("HEARTH_PREFETCH", default)
    })
}

/// A prefetch distance in bytes: the environment variable `var` if it holds a number (0
/// turns prefetching off), else `default`.
pub(super) fn prefetch_setting(var: &str, default: usize) -> usize {
    match std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        // At most 1 MiB: further is no prefetch for any cache.
        Some(bytes) => bytes.min(1 << 20),
        None => default,
    }
}

/// Prefetches the cache lines of a record `ahead` bytes further on, if `ahead` is not 0
/// (prefetches never fault, so running past the end of the weights is harmless).
///
/// # Safety
/// SSE (every x86-64 CPU).
#[inline(always)]
pub(super) unsafe fn prefetch_ahead(rec: *const u8, ahead: usize, record: usize) {
    if ahead > 0 {
        prefetch_lines(rec.wrapping_add(ahead), record);
    }
}

/// Prefetches the cache lines of the `len` bytes at `at` (which may lie past the weights'
/// end: prefetches never fault).
///
/// # Safety
/// SSE (every x86-64 CPU).
#[inline(always)]
pub(super) unsafe fn prefetch_lines(at: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(off).cast());
        off += 64;
    }
}
