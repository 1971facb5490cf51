//! x86-64 kernels of the packed IQ4_NL, IQ4_XS and MXFP4 records (layouts in [`super::iq4`])
//! on 256-bit vectors: lanes are the 8 rows. The indices become signed levels with one byte
//! shuffle (`vpshufb`, the format's table, an argument, in both 128-bit lanes); signed levels
//! times signed activations go through the unsigned × signed products as Q8_0's do in
//! [`super::x86`]: `|w|` against `x` with `w`'s sign (exact: no level is -128, activations lie
//! in -127..=127, and a level 0, which MXFP4 has, gives 0 either way); IQ4_XS on VNNI takes
//! `level + 128` instead and the excess off, which its activations' stored 16-element sums make
//! cheap (see [`tile_xs`]). As there, `ISA` picks AVX2 or a VNNI encoding; the integer sums are
//! the same. IQ4_NL and MXFP4 share [`tile_nl`]; only the scales differ (f16, or
//! E8M0 exponent bytes).

use super::iq4::{e8m0_scales, table_of, xs};
use super::kquant::{Q8K_BLOCK, Q8K_BSUMS, Q8K_QS};
use super::x86::{bx, dpbusd, nibble_vectors, prefetch_ahead, AVX2, AVX512_VNNI, AVX_VNNI};
use super::{ActView, PackedMatrix, GROUP, TILE_TOKENS};
use ggml_type::GgmlType;
use std::arch::x86_64::*;

/// `out[c][i]` = row `8g + i` · token `t0 + c`, for `c < n`; the caller checked `n`.
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
    assert!((1..=TILE_TOKENS).contains(&n));
    let (nb, gb) = (w.blocks_per_row(), w.group_bytes());
    let group = &w.data[g * gb..(g + 1) * gb];
    let is_xs = w.spec.ty == GgmlType::IQ4_XS;
    let table = table_of(w.spec.ty);
    let mut xs = [std::ptr::null::<u8>(); TILE_TOKENS];
    let mut aux = [std::ptr::null::<f32>(); TILE_TOKENS];
    for c in 0..n {
        let row = x.acts.row(t0 + c);
        if is_xs {
            assert!(row.len() >= nb * Q8K_BLOCK, "activation row");
            xs[c] = row.as_ptr();
        } else {
            let a = x.acts.aux(t0 + c);
            assert!(
                row.len() >= nb * x.block && a.len() >= 2 * nb,
                "activation row"
            );
            xs[c] = row[x.qs_off..].as_ptr();
            aux[c] = a.as_ptr();
        }
    }
    let args = Args {
        nb,
        group: group.as_ptr(),
        record: w.record(),
        qs_off: w.spec.qs_off(GROUP),
        table: table.levels.as_ptr(),
        table_u: table.unsigned.as_ptr(),
        xs,
        x_block: x.block,
        aux,
        prefetch: w.prefetch,
    };
    macro_rules! by_tokens {
        ($fmt:expr) => {
            // SAFETY: AVX2/FMA/F16C and `ISA` present (the caller's promise); `group` holds
            // `nb` records and every token row `nb` activation blocks (and for IQ4_NL `2 * nb`
            // aux values), asserted above: all the kernel reads.
            unsafe {
                match (ISA, n) {
                    (AVX512_VNNI, 1) => tile_avx512_vnni::<{ $fmt }, 1>(&args, out),
                    (AVX512_VNNI, 2) => tile_avx512_vnni::<{ $fmt }, 2>(&args, out),
                    (AVX512_VNNI, 3) => tile_avx512_vnni::<{ $fmt }, 3>(&args, out),
                    (AVX512_VNNI, _) => tile_avx512_vnni::<{ $fmt }, 4>(&args, out),
                    (AVX_VNNI, 1) => tile_avx_vnni::<{ $fmt }, 1>(&args, out),
                    (AVX_VNNI, 2) => tile_avx_vnni::<{ $fmt }, 2>(&args, out),
                    (AVX_VNNI, 3) => tile_avx_vnni::<{ $fmt }, 3>(&args, out),
                    (AVX_VNNI, _) => tile_avx_vnni::<{ $fmt }, 4>(&args, out),
                    (_, 1) => tile_avx2::<{ $fmt }, 1>(&args, out),
                    (_, 2) => tile_avx2::<{ $fmt }, 2>(&args, out),
                    (_, 3) => tile_avx2::<{ $fmt }, 3>(&args, out),
                    _ => tile_avx2::<{ $fmt }, 4>(&args, out),
                }
            }
        };
    }
    if is_xs {
        by_tokens!(XS)
    } else if e8m0_scales(w.spec.ty) {
        by_tokens!(NL_E8M0)
    } else {
        by_tokens!(NL)
    }
}

/// The `FMT` parameter of the tiles: IQ4_NL (f16 scales), MXFP4 (IQ4_NL's record with E8M0
/// exponent bytes for scales), IQ4_XS.
const NL: u8 = 0;
const NL_E8M0: u8 = 1;
const XS: u8 = 2;

struct Args {
    nb: usize,
    group: *const u8,
    record: usize,
    /// IQ4_NL, MXFP4: offset of the indices in a record.
    qs_off: usize,
    /// The format's 16 levels ([`super::iq4::Table`]), signed and plus 128.
    table: *const i8,
    table_u: *const u8,
    /// Per token: IQ4_NL and MXFP4, its values of block 0; IQ4_XS, its Q8_K row.
    xs: [*const u8; TILE_TOKENS],
    x_block: usize,
    aux: [*const f32; TILE_TOKENS],
    /// One-token products: bytes ahead to prefetch ([`PackedMatrix`]'s).
    prefetch: usize,
}

/// # Safety
/// AVX2/FMA/F16C; `a` as [`group`] checks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<const FMT: u8, const C: usize>(
    a: &Args,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    match FMT {
        XS => tile_xs::<AVX2, C>(a, out),
        NL_E8M0 => tile_nl::<AVX2, C, true>(a, out),
        _ => tile_nl::<AVX2, C, false>(a, out),
    }
}

/// # Safety
/// As [`tile_avx2`], and AVX-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn tile_avx_vnni<const FMT: u8, const C: usize>(
    a: &Args,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    match FMT {
        XS => tile_xs::<AVX_VNNI, C>(a, out),
        NL_E8M0 => tile_nl::<AVX_VNNI, C, true>(a, out),
        _ => tile_nl::<AVX_VNNI, C, false>(a, out),
    }
}

/// # Safety
/// As [`tile_avx2`], and AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_avx512_vnni<const FMT: u8, const C: usize>(
    a: &Args,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    match FMT {
        XS => tile_xs::<AVX512_VNNI, C>(a, out),
        NL_E8M0 => tile_nl::<AVX512_VNNI, C, true>(a, out),
        _ => tile_nl::<AVX512_VNNI, C, false>(a, out),
    }
}

/// The levels (16 signed bytes at `table`) of the 8 index vectors of a 32-element run at `p`
/// (128 bytes), and their magnitudes.
///
/// # Safety
/// AVX2; `table` readable for 16 bytes, `p` for 128.
#[inline(always)]
unsafe fn levels(table: *const i8, p: *const u8) -> ([__m256i; 8], [__m256i; 8]) {
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(table.cast()));
    let idx = nibble_vectors(p);
    let v: [__m256i; 8] = std::array::from_fn(|k| _mm256_shuffle_epi8(table, idx[k]));
    let abs = std::array::from_fn(|k| _mm256_sign_epi8(v[k], v[k]));
    (v, abs)
}

/// Per lane, `Σ_k` of the four products of the levels of vector `k` with activation bytes
/// `4k..4k + 4` at `xq`; on AVX2 each pair of products is multiplied by the 16-bit halves of
/// `pair_mul`'s lane (VNNI: the plain sum).
///
/// # Safety
/// AVX2 and `ISA`; `xq` readable for 32 bytes.
#[inline(always)]
unsafe fn run_dot<const ISA: u8>(
    v: &[__m256i; 8],
    abs: &[__m256i; 8],
    xq: *const u8,
    pair_mul: __m256i,
) -> __m256i {
    let mut s = _mm256_setzero_si256();
    for k in 0..8 {
        let x = _mm256_sign_epi8(bx(xq, k), v[k]);
        s = if ISA != AVX2 {
            dpbusd::<ISA>(s, abs[k], x)
        } else {
            // A pair is at most 2 * 127 * 127 = 32258: it fits i16, two of them would not.
            _mm256_add_epi32(
                s,
                _mm256_madd_epi16(_mm256_maddubs_epi16(abs[k], x), pair_mul),
            )
        };
    }
    s
}

/// IQ4_NL (`E8M0` false: f16 scales) and MXFP4 (`E8M0` true: exponent bytes), each with its
/// table.
///
/// # Safety
/// AVX2/FMA/F16C and `ISA`; `a` as [`group`] checks.
#[inline(always)]
unsafe fn tile_nl<const ISA: u8, const C: usize, const E8M0: bool>(
    a: &Args,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); C];
    for b in 0..a.nb {
        let rec = a.group.add(b * a.record);
        if C == 1 {
            prefetch_ahead(rec, a.prefetch, a.record);
        }
        let d = if E8M0 {
            super::x86::e8m0_half_8(rec)
        } else {
            _mm256_cvtph_ps(_mm_loadu_si128(rec.cast()))
        };
        let (v, abs) = levels(a.table, rec.add(a.qs_off));
        for (c, acc) in acc.iter_mut().enumerate() {
            let isum = run_dot::<ISA>(&v, &abs, a.xs[c].add(b * a.x_block), ones);
            let dx = _mm256_broadcast_ss(&*a.aux[c].add(2 * b));
            *acc = _mm256_fmadd_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(isum), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        _mm256_storeu_ps(o.as_mut_ptr(), *acc);
    }
}

/// IQ4_XS. AVX2 as IQ4_NL, each pair of products times the run's scale; VNNI with the
/// levels as unsigned `level + 128` (a second table), the excess `128 Σ x` of each run seeding
/// its sum, negated (from the Q8_K 16-element sums): one instruction per product of 4.
///
/// # Safety
/// AVX2/FMA/F16C and `ISA`; `a` as [`group`] checks.
#[inline(always)]
unsafe fn tile_xs<const ISA: u8, const C: usize>(a: &Args, out: &mut [[f32; GROUP]; TILE_TOKENS]) {
    let table_u = _mm256_broadcastsi128_si256(_mm_loadu_si128(a.table_u.cast()));
    let mut acc = [_mm256_setzero_ps(); C];
    for b in 0..a.nb {
        let rec = a.group.add(b * a.record);
        if C == 1 {
            prefetch_ahead(rec, a.prefetch, a.record);
        }
        // Per token, lane s: -128 (bsum_2s + bsum_2s+1) (|Σ x| <= 32 * 127 over a run).
        let offsets: [__m256i; C] = std::array::from_fn(|c| {
            let bsums = _mm256_loadu_si256(a.xs[c].add(b * Q8K_BLOCK + Q8K_BSUMS).cast());
            _mm256_madd_epi16(bsums, _mm256_set1_epi16(-128))
        });
        let offsets = offsets.as_ptr().cast::<i32>();
        let mut sums = [_mm256_setzero_si256(); C];
        for s in 0..8 {
            let q = rec.add(xs::qs(GROUP, s));
            // Each row's scale as a 32-bit lane.
            let sc32 = _mm256_cvtepi8_epi32(_mm_loadl_epi64(rec.add(xs::sc(GROUP) + 8 * s).cast()));
            if ISA != AVX2 {
                let idx = nibble_vectors(q);
                let u: [__m256i; 8] = std::array::from_fn(|k| _mm256_shuffle_epi8(table_u, idx[k]));
                for (c, sum) in sums.iter_mut().enumerate() {
                    let xq = a.xs[c].add(b * Q8K_BLOCK + Q8K_QS + 32 * s);
                    // |Σ| <= 32 * 241 * 127 + 128 * 32 * 127, times |scale| <= 32, over 8
                    // runs: within 32 bits.
                    let mut dot = _mm256_set1_epi32(*offsets.add(8 * c + s));
                    for (k, &uk) in u.iter().enumerate() {
                        dot = dpbusd::<ISA>(dot, uk, bx(xq, k));
                    }
                    *sum = _mm256_add_epi32(*sum, _mm256_mullo_epi32(dot, sc32));
                }
                continue;
            }
            let (v, abs) = levels(a.table, q);
            // The scale in both 16-bit halves of the lane.
            let sc16 = _mm256_or_si256(
                _mm256_and_si256(sc32, _mm256_set1_epi32(0xFFFF)),
                _mm256_slli_epi32::<16>(sc32),
            );
            for (c, sum) in sums.iter_mut().enumerate() {
                let xq = a.xs[c].add(b * Q8K_BLOCK + Q8K_QS + 32 * s);
                // |Σ| <= 32 * 127 * 127 per run, times |scale| <= 32, over 8 runs: < 2^28.
                *sum = _mm256_add_epi32(*sum, run_dot::<ISA>(&v, &abs, xq, sc16));
            }
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(rec.add(xs::d(GROUP)).cast()));
        for (c, acc) in acc.iter_mut().enumerate() {
            let dx = _mm256_set1_ps(a.xs[c].add(b * Q8K_BLOCK).cast::<f32>().read_unaligned());
            *acc = _mm256_fmadd_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(sums[c]), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        _mm256_storeu_ps(o.as_mut_ptr(), *acc);
    }
}
