//! AVX-512 kernels of the 16-row layout: the 16 lanes of a 512-bit accumulator are the 16 rows
//! of a group, and `vpdpbusd` on 512-bit vectors sums four int8 products per lane straight into
//! 32 bits. Against the 8-row kernels of [`super::x86`] a 16-row record halves the instructions
//! per weight that do not depend on the row count: the activation broadcasts (folded into
//! `vpdpbusd` as `{1to16}` operands), the per-block scale arithmetic, the loop itself.
//!
//! Tiles of up to [`WIDE_TILE_TOKENS`] tokens reuse each unpacked record, and each token's sum
//! over a block is split into independent chains of `vpdpbusd` (its latency is several cycles,
//! its throughput about one a cycle), so that enough products are in flight whatever the tile.
//!
//! Software prefetch (as the 256-bit kernels do) in the one-token products of the 32-element
//! formats, whose records are short: it doubled a Q8_0 product with 640 columns from memory.
//! In the one-token Q4_K/Q5_K/Q6_K products it depends on the CPU ([`kquant_prefetch`]): on
//! AMD Zen 4 it slowed them (Q4_K, 75 MB: 51.8 GMAC/s without, 28-36 with it 1-16 KiB ahead),
//! as the hardware prefetcher streams those records well; on an Intel Xeon with AVX-512 the
//! same product from memory ran at half the 8-row kernel's speed without it, and generation
//! on a 1.2 B Q4_K model went from ~12 to ~17 tokens/s with it 8 KiB ahead.
//!
//! The integer sums are the same as those of the 8-row kernels and the floating-point
//! operations the same in the same order, so the results are bit for bit equal to theirs.

use super::iq4::{table_of, xs};
use super::kquant::{q2k, q3k, q4k, q5k, q6k, Q8K_BLOCK, Q8K_BSUMS, Q8K_QS};
use super::x86::{lane_shuffle, ODD_BYTE_PAIRS, RUN_SCALE};
use super::{ActView, PackedMatrix, WIDE_GROUP, WIDE_TILE_TOKENS};
use ggml_type::GgmlType;
use std::arch::x86_64::*;

const G: usize = WIDE_GROUP;
const T: usize = WIDE_TILE_TOKENS;
/// Bytes of one vector (16 rows × 4 bytes).
const VB: usize = 4 * G;

type Tile = [[f32; G]; T];

/// How far ahead (bytes) the one-token k-quant products prefetch their records; 0: not at all.
/// `HEARTH_KQUANT_PREFETCH=BYTES` sets it (0 turns it off); else 8 KiB on Intel CPUs and none
/// on others (see the module's note for the measurements). Decided once.
pub(super) fn kquant_prefetch() -> usize {
    static AHEAD: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *AHEAD.get_or_init(|| {
        let default = if crate::simd::x86::is_intel() {
            8192
        } else {
            0
        };
        super::x86::prefetch_setting("HEARTH_KQUANT_PREFETCH", default)
    })
}

/// `out[c][i]` = row `16g + i` · token `t0 + c`, for `c < n` (at most [`WIDE_TILE_TOKENS`]);
/// rows `n..` of `out` are left with values of no meaning.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `w` is in 16-row records.
pub(super) unsafe fn group(
    w: &PackedMatrix,
    x: &ActView,
    g: usize,
    t0: usize,
    n: usize,
    out: &mut Tile,
) {
    assert!((1..=T).contains(&n), "{n} tokens in a tile");
    assert_eq!(w.group, G, "16-row records");
    let (spec, nb, gb) = (w.spec, w.blocks_per_row(), w.group_bytes());
    let group = &w.data[g * gb..(g + 1) * gb];
    // Filled in place: a copy of these ~190 bytes compiles to a call of libc's `memcpy`, which
    // `scripts/check-avx512`'s emulator cannot run (it maps the kernels' code, not libc's).
    let mut args = Args {
        nb,
        group: group.as_ptr(),
        record: w.record(),
        m_off: spec.m_off(G),
        qs_off: spec.qs_off(G),
        qh_off: spec.qh_off(G),
        min_factor: spec.min_factor,
        table_u: table_of(spec.ty).unsigned.as_ptr(),
        xs: [std::ptr::null::<u8>(); T],
        x_block: x.block,
        aux: [std::ptr::null::<f32>(); T],
        prefetch: w.prefetch,
    };
    // Tiles run with 1, 2, 4 or 8 tokens; the slots past `n` repeat the last token (their
    // results are not used), which spares kernels for every count. Only the slots the kernel
    // reads are filled: a decode step's one-token tiles are short, and setting up eight
    // slots for one was a visible share of them.
    let slots = match n {
        1 | 2 => n,
        3 | 4 => 4,
        _ => T,
    };
    for c in 0..slots {
        let t = t0 + c.min(n - 1);
        let row = x.acts.row(t);
        if spec.is_k() {
            assert!(row.len() >= nb * Q8K_BLOCK, "activation row");
            args.xs[c] = row.as_ptr();
        } else {
            let a = x.acts.aux(t);
            assert!(
                row.len() >= nb * x.block && a.len() >= 2 * nb,
                "activation row"
            );
            args.xs[c] = row[x.qs_off..].as_ptr();
            args.aux[c] = a.as_ptr();
        }
    }
    let args = &args;
    // Chains per token: enough for about eight sums in flight.
    macro_rules! by_tokens {
        ($kernel:ident $(, $p:literal)*) => {
            // SAFETY: the CPU has the instructions (the caller's promise); `group` holds `nb`
            // records of this spec and every token row `nb` activation blocks (and `2 * nb`
            // aux values for the 32-element formats), asserted above: all the kernel reads.
            unsafe {
                match n {
                    1 => $kernel::<$($p,)* 1, 4>(args, out),
                    2 => $kernel::<$($p,)* 2, 4>(args, out),
                    3 | 4 => $kernel::<$($p,)* 4, 2>(args, out),
                    _ => $kernel::<$($p,)* 8, 1>(args, out),
                }
            }
        };
    }
    match (spec.ty, spec.bits, spec.has_min) {
        (GgmlType::Q4_K, _, _) => by_tokens!(tile_q4k, false),
        (GgmlType::Q5_K, _, _) => by_tokens!(tile_q4k, true),
        (GgmlType::Q6_K, _, _) => by_tokens!(tile_q6k, false),
        (GgmlType::Q3_K, _, _) => by_tokens!(tile_q6k, true),
        (GgmlType::Q2_K, _, _) => by_tokens!(tile_q2k),
        (GgmlType::IQ4_NL, _, _) => by_tokens!(tile_iq4nl, false),
        (GgmlType::MXFP4, _, _) => by_tokens!(tile_iq4nl, true),
        (GgmlType::IQ4_XS, _, _) => by_tokens!(tile_iq4xs),
        (_, 4, false) => by_tokens!(tile, 4, false),
        (_, 4, true) => by_tokens!(tile, 4, true),
        (_, 5, false) => by_tokens!(tile, 5, false),
        (_, 5, true) => by_tokens!(tile, 5, true),
        _ => by_tokens!(tile, 8, false),
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
    /// The table formats: their 16 levels plus 128 ([`super::iq4::Table`]).
    table_u: *const u8,
    /// Per token: its activation values (32-element formats: of block 0; k-quants: the Q8_K
    /// row).
    xs: [*const u8; T],
    x_block: usize,
    aux: [*const f32; T],
    /// The k-quants' one-token prefetch distance ([`PackedMatrix`]'s).
    prefetch: usize,
}

/// The 8 nibble vectors of one 32-element run (256 bytes at `p`).
///
/// # Safety
/// AVX-512 F/BW; `p` readable for 256 bytes.
#[inline(always)]
unsafe fn nibble_vectors(p: *const u8) -> [__m512i; 8] {
    let low4 = _mm512_set1_epi8(0x0F);
    let mut v = [_mm512_setzero_si512(); 8];
    for q in 0..4 {
        let raw = _mm512_loadu_si512(p.add(VB * q).cast());
        v[2 * q] = _mm512_and_si512(raw, low4);
        v[2 * q + 1] = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), low4);
    }
    v
}

/// Broadcast of the 4 activation bytes `xq[4k..4k + 4]`.
///
/// # Safety
/// AVX-512 F; `xq` readable for `4k + 4` bytes.
#[inline(always)]
unsafe fn bx(xq: *const u8, k: usize) -> __m512i {
    _mm512_set1_epi32(xq.add(4 * k).cast::<i32>().read_unaligned())
}

/// `Σ_j v[j] · x[4k..4k + 4]` per lane for `k = first_k + j`, in `CH` interleaved chains
/// summed at the end.
///
/// # Safety
/// AVX-512 F/BW/VNNI; `xq` readable for the bytes it reads.
#[inline(always)]
unsafe fn dots<const CH: usize>(v: &[__m512i], xq: *const u8, first_k: usize) -> __m512i {
    let mut chain = [_mm512_setzero_si512(); CH];
    for (j, &vk) in v.iter().enumerate() {
        chain[j % CH] = _mm512_dpbusd_epi32(chain[j % CH], vk, bx(xq, first_k + j));
    }
    let mut sum = chain[0];
    for c in chain.iter().skip(1) {
        sum = _mm512_add_epi32(sum, *c);
    }
    sum
}

/// [`dots`] over a whole run (`first_k` 0), its first chain starting at `init`.
///
/// # Safety
/// As [`dots`].
#[inline(always)]
unsafe fn dots_from<const CH: usize>(init: __m512i, v: &[__m512i; 8], xq: *const u8) -> __m512i {
    let mut chain = [_mm512_setzero_si512(); CH];
    chain[0] = init;
    for (j, &vk) in v.iter().enumerate() {
        chain[j % CH] = _mm512_dpbusd_epi32(chain[j % CH], vk, bx(xq, j));
    }
    let mut sum = chain[0];
    for c in chain.iter().skip(1) {
        sum = _mm512_add_epi32(sum, *c);
    }
    sum
}

/// `Σ x` of the 32 signed bytes at `xq`.
///
/// # Safety
/// AVX2; `xq` readable for 32 bytes.
#[inline(always)]
unsafe fn sum_bytes(xq: *const u8) -> i32 {
    // Unsigned sums of `x + 128`, 8 bytes each, then the 32 excesses of 128 off.
    let biased = _mm256_xor_si256(_mm256_loadu_si256(xq.cast()), _mm256_set1_epi8(i8::MIN));
    let sad = _mm256_sad_epu8(biased, _mm256_setzero_si256());
    let half = _mm_add_epi64(
        _mm256_castsi256_si128(sad),
        _mm256_extracti128_si256::<1>(sad),
    );
    let total = _mm_add_epi64(half, _mm_unpackhi_epi64(half, half));
    _mm_cvtsi128_si32(total) - 32 * 128
}

/// The 32-element formats.
///
/// # Safety
/// AVX2/FMA/F16C and AVX-512 F/BW/VL/VNNI; `a` describes readable memory as [`group`] checks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const BITS: u32, const HAS_MIN: bool, const C: usize, const CH: usize>(
    a: &Args,
    out: &mut Tile,
) {
    let min_factor = _mm512_set1_ps(a.min_factor);
    let mut acc = [_mm512_setzero_ps(); C];
    for b in 0..a.nb {
        let rec = a.group.add(b * a.record);
        if C == 1 {
            super::x86::prefetch_ahead(rec, a.prefetch, a.record);
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(rec.cast()));
        let m = if HAS_MIN {
            _mm512_cvtph_ps(_mm256_loadu_si256(rec.add(a.m_off).cast()))
        } else {
            _mm512_mul_ps(d, min_factor)
        };
        let q = rec.add(a.qs_off);
        let v = if BITS == 8 {
            // Signed weights as unsigned `w + 128` (the sign bit flipped); the excess
            // `128 Σ x` comes off each token's sum.
            let flip = _mm512_set1_epi8(i8::MIN);
            std::array::from_fn(|k| {
                _mm512_xor_si512(_mm512_loadu_si512(q.add(VB * k).cast()), flip)
            })
        } else {
            let mut v = nibble_vectors(q);
            if BITS == 5 {
                // Bit k of each qh byte becomes bit 4 of the same byte of vector k.
                let h = _mm512_loadu_si512(rec.add(a.qh_off).cast());
                let bit4 = _mm512_set1_epi8(0x10);
                for (k, vk) in v.iter_mut().enumerate() {
                    let moved = if k < 4 {
                        _mm512_sll_epi16(h, _mm_cvtsi32_si128(4 - k as i32))
                    } else {
                        _mm512_srl_epi16(h, _mm_cvtsi32_si128(k as i32 - 4))
                    };
                    *vk = _mm512_or_si512(*vk, _mm512_and_si512(moved, bit4));
                }
            }
            v
        };
        for (c, acc) in acc.iter_mut().enumerate() {
            let xq = a.xs[c].add(b * a.x_block);
            let mut isum = dots::<CH>(&v, xq, 0);
            if BITS == 8 {
                isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(128 * sum_bytes(xq)));
            }
            let dx = _mm512_set1_ps(*a.aux[c].add(2 * b));
            *acc = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(isum), *acc);
            if BITS != 8 {
                let sx = _mm512_set1_ps(*a.aux[c].add(2 * b + 1));
                *acc = _mm512_fmadd_ps(m, sx, *acc);
            }
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), *acc);
    }
}

/// Prefetches the one token's activation block `b + 1` (292 bytes of Q8_K) while block `b`
/// runs. A group of a wide matrix streams more weights than L1 holds between two reads of the
/// same activation block (16 rows of 8192 Q4_K columns: 74 KiB of records against 32 KiB of
/// L1d), so the activations come back from L2 every group, in the path of the sums: the
/// 2048x8192 down projection of a 1.2 B model streamed at 84-88% of the rate of the 8192x2048
/// gate and up projections, and at 92-99% with this (AMD Zen 4, one thread).
///
/// # Safety
/// AVX-512 F (prefetches never fault, so reading past the row's end is harmless).
#[inline(always)]
unsafe fn prefetch_next_act(a: &Args, b: usize) {
    super::x86::prefetch_lines(a.xs[0].wrapping_add((b + 1) * Q8K_BLOCK), Q8K_BLOCK);
}

/// Shuffle controls of [`super::x86`]'s picks, for 512-bit vectors.
static RUN_SCALE_64: [[u8; 64]; 4] = [
    lane_shuffle(RUN_SCALE[0]),
    lane_shuffle(RUN_SCALE[1]),
    lane_shuffle(RUN_SCALE[2]),
    lane_shuffle(RUN_SCALE[3]),
];
static ODD_BYTE_PAIRS_64: [u8; 64] = lane_shuffle(ODD_BYTE_PAIRS);

/// # Safety
/// AVX-512 F.
#[inline(always)]
unsafe fn shuffle_control(c: &[u8; 64]) -> __m512i {
    _mm512_loadu_si512(c.as_ptr().cast())
}

/// The 6-bit scales of a Q4_K or Q5_K record's 16 rows (layout in [`super::kquant`]): those
/// of runs `4h..4h + 4` in the bytes of each row's 32-bit lane of vector `h`.
///
/// # Safety
/// AVX-512 F/BW; `rec` a whole record.
#[inline(always)]
unsafe fn q4k_scale_bytes(rec: *const u8) -> [__m512i; 2] {
    let word = |w: usize| _mm512_loadu_si512(rec.add(q4k::sm(G, w)).cast());
    let (w0, w2) = (word(0), word(2));
    [
        _mm512_and_si512(w0, _mm512_set1_epi32(0x3F3F_3F3F)),
        _mm512_or_si512(
            _mm512_and_si512(w2, _mm512_set1_epi32(0x0F0F_0F0F)),
            _mm512_and_si512(_mm512_srli_epi32::<2>(w0), _mm512_set1_epi32(0x3030_3030)),
        ),
    ]
}

/// The 6-bit minimums of a Q4_K or Q5_K record's 16 rows as 16-bit pairs in each row's lane:
/// runs (0, 2), (1, 3), (4, 6) and (5, 7).
///
/// # Safety
/// AVX-512 F/BW; `rec` a whole record.
#[inline(always)]
unsafe fn q4k_min_pairs(rec: *const u8) -> [__m512i; 4] {
    let word = |w: usize| _mm512_loadu_si512(rec.add(q4k::sm(G, w)).cast());
    let (w1, w2) = (word(1), word(2));
    let low = _mm512_and_si512(w1, _mm512_set1_epi32(0x3F3F_3F3F));
    let high = _mm512_or_si512(
        _mm512_and_si512(_mm512_srli_epi32::<4>(w2), _mm512_set1_epi32(0x0F0F_0F0F)),
        _mm512_and_si512(_mm512_srli_epi32::<2>(w1), _mm512_set1_epi32(0x3030_3030)),
    );
    let (even, odd) = (
        _mm512_set1_epi32(0x00FF_00FF),
        shuffle_control(&ODD_BYTE_PAIRS_64),
    );
    [
        _mm512_and_si512(low, even),
        _mm512_shuffle_epi8(low, odd),
        _mm512_and_si512(high, even),
        _mm512_shuffle_epi8(high, odd),
    ]
}

/// Q4_K, and Q5_K (`Q5`: the fifth bits merged into the nibbles); layouts in
/// [`super::kquant`].
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_q4k<const Q5: bool, const C: usize, const CH: usize>(a: &Args, out: &mut Tile) {
    let mut acc = [_mm512_setzero_ps(); C];
    let bit4 = _mm512_set1_epi8(0x10);
    let ahead = if C == 1 { a.prefetch } else { 0 };
    for b in 0..a.nb {
        let rec = a.group.add(b * a.record);
        if ahead > 0 {
            super::x86::prefetch_lines(rec.wrapping_add(ahead), a.record);
        }
        if C == 1 {
            prefetch_next_act(a, b);
        }
        let scales = q4k_scale_bytes(rec);
        let mut sums = [_mm512_setzero_si512(); C];
        for s in 0..8 {
            let v = if Q5 {
                let mut v = nibble_vectors(rec.add(q5k::qs(G, s)));
                // Bit k of each byte of the run's fifth bits becomes bit 4 of the same byte of
                // vector k (the and and or fuse into one `vpternlogd`).
                let h = _mm512_loadu_si512(rec.add(q5k::qh(G, s)).cast());
                for (k, vk) in v.iter_mut().enumerate() {
                    let moved = match k {
                        0 => _mm512_slli_epi16::<4>(h),
                        1 => _mm512_slli_epi16::<3>(h),
                        2 => _mm512_slli_epi16::<2>(h),
                        3 => _mm512_slli_epi16::<1>(h),
                        4 => h,
                        5 => _mm512_srli_epi16::<1>(h),
                        6 => _mm512_srli_epi16::<2>(h),
                        _ => _mm512_srli_epi16::<3>(h),
                    };
                    *vk = _mm512_or_si512(*vk, _mm512_and_si512(moved, bit4));
                }
                v
            } else {
                nibble_vectors(rec.add(q4k::qs(G) + 16 * G * s))
            };
            let sc = _mm512_shuffle_epi8(scales[s / 4], shuffle_control(&RUN_SCALE_64[s % 4]));
            for (c, sum) in sums.iter_mut().enumerate() {
                let xq = a.xs[c].add(b * Q8K_BLOCK + Q8K_QS + 32 * s);
                let dot = dots::<CH>(&v, xq, 0);
                *sum = _mm512_add_epi32(*sum, _mm512_mullo_epi32(dot, sc));
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(rec.add(q4k::d(G)).cast()));
        let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(rec.add(q4k::dmin(G)).cast()));
        let min_pairs = q4k_min_pairs(rec);
        for (c, acc) in acc.iter_mut().enumerate() {
            let xb = a.xs[c].add(b * Q8K_BLOCK);
            let dx = _mm512_set1_ps(xb.cast::<f32>().read_unaligned());
            // The sums of the 8 activation runs of 32 (pairs of the 16-element sums), as i16,
            // in the minimums' pairs: 32-bit words (0, 2), (1, 3), (4, 6), (5, 7).
            let bsums = xb.add(Q8K_BSUMS);
            let runs = _mm_shuffle_epi8(
                _mm_hadd_epi16(
                    _mm_loadu_si128(bsums.cast()),
                    _mm_loadu_si128(bsums.add(16).cast()),
                ),
                _mm_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15),
            );
            let pairs = [
                _mm_cvtsi128_si32(runs),
                _mm_extract_epi32::<1>(runs),
                _mm_extract_epi32::<2>(runs),
                _mm_extract_epi32::<3>(runs),
            ];
            let mut mins = _mm512_setzero_si512();
            for (&m, &pair) in min_pairs.iter().zip(&pairs) {
                mins = _mm512_dpwssd_epi32(mins, m, _mm512_set1_epi32(pair));
            }
            *acc = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(sums[c]), *acc);
            *acc = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, dx), _mm512_cvtepi32_ps(mins), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), *acc);
    }
}

/// Q6_K, and Q3_K (`Q3`: the same scales and sums; values `q + 4` in 0..8, an offset of 4);
/// layouts in [`super::kquant`].
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_q6k<const Q3: bool, const C: usize, const CH: usize>(a: &Args, out: &mut Tile) {
    // Each half of a run (16 elements: vectors 0..4 and 4..8) is a chain of its own already.
    let ch = CH.div_ceil(2).max(1);
    let mut acc = [_mm512_setzero_ps(); C];
    let (bits45, bit2) = (_mm512_set1_epi8(0x30), _mm512_set1_epi8(0x04));
    let (sc_at, d_at) = if Q3 {
        (q3k::sc(G), q3k::d(G))
    } else {
        (q6k::sc(G), q6k::d(G))
    };
    let ahead = if C == 1 { a.prefetch } else { 0 };
    for b in 0..a.nb {
        let rec = a.group.add(b * a.record);
        if ahead > 0 {
            super::x86::prefetch_lines(rec.wrapping_add(ahead), a.record);
        }
        if C == 1 {
            prefetch_next_act(a, b);
        }
        let mut sums = [_mm512_setzero_si512(); C];
        for t in 0..8 {
            let v = if Q3 {
                q3k_values(rec, t, bit2)
            } else {
                q6k_values(rec, t, bits45)
            };
            // Each row's two scales as i16 pairs, and as 32-bit lanes.
            let scp = _mm512_cvtepi8_epi16(_mm256_loadu_si256(rec.add(sc_at + 2 * G * t).cast()));
            let sc0 = _mm512_srai_epi32::<16>(_mm512_slli_epi32::<16>(scp));
            let sc1 = _mm512_srai_epi32::<16>(scp);
            // The offset of the values (Q6_K 32, Q3_K 4): minus it times Σ sc_r bsum_r over the
            // two runs, as one multiply-add of the pairs (|32 sc| <= 4096 fits 16 bits).
            let offset_scp = if Q3 {
                _mm512_slli_epi16::<2>(scp)
            } else {
                _mm512_slli_epi16::<5>(scp)
            };
            let neg_offset_scp = _mm512_sub_epi16(_mm512_setzero_si512(), offset_scp);
            for (c, sum) in sums.iter_mut().enumerate() {
                let xb = a.xs[c].add(b * Q8K_BLOCK);
                let xq = xb.add(Q8K_QS + 32 * t);
                let bsums =
                    _mm512_set1_epi32(xb.add(Q8K_BSUMS + 4 * t).cast::<i32>().read_unaligned());
                let (first, second) = half_dots(&v, xq, ch);
                let scaled = _mm512_add_epi32(
                    _mm512_mullo_epi32(first, sc0),
                    _mm512_mullo_epi32(second, sc1),
                );
                *sum = _mm512_dpwssd_epi32(_mm512_add_epi32(*sum, scaled), neg_offset_scp, bsums);
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(rec.add(d_at).cast()));
        for (c, acc) in acc.iter_mut().enumerate() {
            let dx = _mm512_set1_ps(a.xs[c].add(b * Q8K_BLOCK).cast::<f32>().read_unaligned());
            *acc = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(sums[c]), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), *acc);
    }
}

/// The 8 vectors of 2-bit values of one 32-element run (128 bytes at `p`; layout in
/// [`super::kquant`]): bits `2m, 2m + 1` of vector `h` are vector `4h + m`.
///
/// # Safety
/// AVX-512 F/BW; `p` readable for 128 bytes.
#[inline(always)]
unsafe fn crumb_vectors(p: *const u8) -> [__m512i; 8] {
    let low2 = _mm512_set1_epi8(0x03);
    let (h0, h1) = (
        _mm512_loadu_si512(p.cast()),
        _mm512_loadu_si512(p.add(VB).cast()),
    );
    let at = |h: __m512i, m: usize| {
        let moved = match m {
            0 => h,
            1 => _mm512_srli_epi16::<2>(h),
            2 => _mm512_srli_epi16::<4>(h),
            _ => _mm512_srli_epi16::<6>(h),
        };
        _mm512_and_si512(moved, low2)
    };
    [
        at(h0, 0),
        at(h0, 1),
        at(h0, 2),
        at(h0, 3),
        at(h1, 0),
        at(h1, 1),
        at(h1, 2),
        at(h1, 3),
    ]
}

/// The two 16-element halves of a run (vectors 0..4 and 4..8) dotted with a token's values
/// `xq`, each in chains of its own (`ch` per half).
///
/// # Safety
/// As [`dots`].
#[inline(always)]
unsafe fn half_dots(v: &[__m512i; 8], xq: *const u8, ch: usize) -> (__m512i, __m512i) {
    if ch >= 2 {
        (dots::<2>(&v[..4], xq, 0), dots::<2>(&v[4..], xq, 4))
    } else {
        (dots::<1>(&v[..4], xq, 0), dots::<1>(&v[4..], xq, 4))
    }
}

/// The 8 value vectors (0..64) of run `t` of a Q6_K record: nibbles and high bits.
///
/// # Safety
/// AVX-512 F/BW; `rec` a whole 16-row Q6_K record.
#[inline(always)]
unsafe fn q6k_values(rec: *const u8, t: usize, bits45: __m512i) -> [__m512i; 8] {
    let mut v = nibble_vectors(rec.add(q6k::ql(G, t)));
    let h0 = _mm512_loadu_si512(rec.add(q6k::qh(G, t)).cast());
    let h1 = _mm512_loadu_si512(rec.add(q6k::qh(G, t) + VB).cast());
    // Bits 2m, 2m + 1 to bits 4, 5.
    let up = |h: __m512i, m: usize| {
        let moved = match m {
            0 => _mm512_slli_epi16::<4>(h),
            1 => _mm512_slli_epi16::<2>(h),
            2 => h,
            _ => _mm512_srli_epi16::<2>(h),
        };
        _mm512_and_si512(moved, bits45)
    };
    for m in 0..4 {
        v[m] = _mm512_or_si512(v[m], up(h0, m));
        v[4 + m] = _mm512_or_si512(v[4 + m], up(h1, m));
    }
    v
}

/// The 8 value vectors (`q + 4`, 0..8) of run `t` of a Q3_K record: 2-bit values and third
/// bits.
///
/// # Safety
/// AVX-512 F/BW; `rec` a whole 16-row Q3_K record.
#[inline(always)]
unsafe fn q3k_values(rec: *const u8, t: usize, bit2: __m512i) -> [__m512i; 8] {
    let mut v = crumb_vectors(rec.add(q3k::ql(G, t)));
    // Bit k of each byte of the third bits becomes bit 2 of the same byte of vector k.
    let h = _mm512_loadu_si512(rec.add(q3k::qh(G, t)).cast());
    for (k, vk) in v.iter_mut().enumerate() {
        let moved = match k {
            0 => _mm512_slli_epi16::<2>(h),
            1 => _mm512_slli_epi16::<1>(h),
            2 => h,
            3 => _mm512_srli_epi16::<1>(h),
            4 => _mm512_srli_epi16::<2>(h),
            5 => _mm512_srli_epi16::<3>(h),
            6 => _mm512_srli_epi16::<4>(h),
            _ => _mm512_srli_epi16::<5>(h),
        };
        *vk = _mm512_or_si512(*vk, _mm512_and_si512(moved, bit2));
    }
    v
}

/// Q2_K (layout in [`super::kquant`]).
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_q2k<const C: usize, const CH: usize>(a: &Args, out: &mut Tile) {
    let ch = CH.div_ceil(2).max(1);
    let mut acc = [_mm512_setzero_ps(); C];
    let (low4, low16) = (_mm512_set1_epi16(0x0F), _mm512_set1_epi32(0xFFFF));
    let ahead = if C == 1 { a.prefetch } else { 0 };
    for b in 0..a.nb {
        let rec = a.group.add(b * a.record);
        if ahead > 0 {
            super::x86::prefetch_lines(rec.wrapping_add(ahead), a.record);
        }
        let mut sums = [_mm512_setzero_si512(); C];
        let mut mins = [_mm512_setzero_si512(); C];
        for t in 0..8 {
            let v = crumb_vectors(rec.add(q2k::qs(G, t)));
            // Each row's two scale-and-minimum bytes as i16 pairs: the scales as 32-bit
            // lanes, the minimums as pairs against the two runs' sums.
            let scm =
                _mm512_cvtepu8_epi16(_mm256_loadu_si256(rec.add(q2k::scm(G) + 2 * G * t).cast()));
            let scp = _mm512_and_si512(scm, low4);
            let (sc0, sc1) = (_mm512_and_si512(scp, low16), _mm512_srli_epi32::<16>(scp));
            let mp = _mm512_srli_epi16::<4>(scm);
            for c in 0..C {
                let xb = a.xs[c].add(b * Q8K_BLOCK);
                let xq = xb.add(Q8K_QS + 32 * t);
                let bsums =
                    _mm512_set1_epi32(xb.add(Q8K_BSUMS + 4 * t).cast::<i32>().read_unaligned());
                let (first, second) = half_dots(&v, xq, ch);
                let scaled = _mm512_add_epi32(
                    _mm512_mullo_epi32(first, sc0),
                    _mm512_mullo_epi32(second, sc1),
                );
                sums[c] = _mm512_add_epi32(sums[c], scaled);
                mins[c] = _mm512_dpwssd_epi32(mins[c], mp, bsums);
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(rec.add(q2k::d(G)).cast()));
        let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(rec.add(q2k::dmin(G)).cast()));
        for (c, acc) in acc.iter_mut().enumerate() {
            let dx = _mm512_set1_ps(a.xs[c].add(b * Q8K_BLOCK).cast::<f32>().read_unaligned());
            *acc = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(sums[c]), *acc);
            *acc = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, dx), _mm512_cvtepi32_ps(mins[c]), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), *acc);
    }
}

/// The unsigned levels (level + 128, 16 bytes at `table_u`) of the 8 index vectors of a
/// 32-element run at `p`.
///
/// # Safety
/// AVX-512 F/BW; `table_u` readable for 16 bytes, `p` for 256.
#[inline(always)]
unsafe fn levels_u(table_u: *const u8, p: *const u8) -> [__m512i; 8] {
    let table = _mm512_broadcast_i32x4(_mm_loadu_si128(table_u.cast()));
    let idx = nibble_vectors(p);
    std::array::from_fn(|k| _mm512_shuffle_epi8(table, idx[k]))
}

/// The f32 scales `2^(e - 128)` of the 16 E8M0 exponent bytes at `p`, exactly as
/// [`crate::quant::mxfp4::e8m0_half`], as [`super::x86::e8m0_half_8`] makes them.
///
/// # Safety
/// AVX-512 F; 16 bytes readable at `p`.
#[inline(always)]
pub(super) unsafe fn e8m0_half_16(p: *const u8) -> __m512 {
    let e = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast()));
    let normal = _mm512_sub_epi32(_mm512_slli_epi32::<23>(e), _mm512_set1_epi32(1 << 23));
    let one = _mm512_set1_epi32(1);
    let subnormal = _mm512_sllv_epi32(_mm512_set1_epi32(0x0020_0000), _mm512_min_epu32(e, one));
    _mm512_castsi512_ps(_mm512_max_epi32(normal, subnormal))
}

/// IQ4_NL (`E8M0` false) and MXFP4 (`E8M0` true: IQ4_NL's record with exponent bytes for
/// scales, and its own table; layouts in [`super::iq4`]): the levels as unsigned `level + 128`
/// (the table's second form), the excess `128 Σ x` off each token's sum, as Q8_0 does.
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_iq4nl<const E8M0: bool, const C: usize, const CH: usize>(a: &Args, out: &mut Tile) {
    let mut acc = [_mm512_setzero_ps(); C];
    for b in 0..a.nb {
        let rec = a.group.add(b * a.record);
        if C == 1 {
            super::x86::prefetch_ahead(rec, a.prefetch, a.record);
        }
        let d = if E8M0 {
            e8m0_half_16(rec)
        } else {
            _mm512_cvtph_ps(_mm256_loadu_si256(rec.cast()))
        };
        let v = levels_u(a.table_u, rec.add(a.qs_off));
        for (c, acc) in acc.iter_mut().enumerate() {
            let xq = a.xs[c].add(b * a.x_block);
            let isum = _mm512_sub_epi32(
                dots::<CH>(&v, xq, 0),
                _mm512_set1_epi32(128 * sum_bytes(xq)),
            );
            let dx = _mm512_set1_ps(*a.aux[c].add(2 * b));
            *acc = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(isum), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), *acc);
    }
}

/// IQ4_XS (layout in [`super::iq4`]): unsigned levels as for IQ4_NL; the excess `128 Σ x` of
/// each run seeds its chain of products, negated (from the Q8_K 16-element sums, computed
/// once per token and super-block), so the run's sum is exact before its scale multiplies it.
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_iq4xs<const C: usize, const CH: usize>(a: &Args, out: &mut Tile) {
    let mut acc = [_mm512_setzero_ps(); C];
    for b in 0..a.nb {
        let rec = a.group.add(b * a.record);
        // Per token, lane s: -128 (bsum_2s + bsum_2s+1) (|Σ x| <= 32 * 127 over a run).
        let offsets: [__m256i; C] = std::array::from_fn(|c| {
            let bsums = _mm256_loadu_si256(a.xs[c].add(b * Q8K_BLOCK + Q8K_BSUMS).cast());
            _mm256_madd_epi16(bsums, _mm256_set1_epi16(-128))
        });
        let offsets = offsets.as_ptr().cast::<i32>();
        let mut sums = [_mm512_setzero_si512(); C];
        for s in 0..8 {
            let v = levels_u(a.table_u, rec.add(xs::qs(G, s)));
            let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(rec.add(xs::sc(G) + G * s).cast()));
            for (c, sum) in sums.iter_mut().enumerate() {
                let xq = a.xs[c].add(b * Q8K_BLOCK + Q8K_QS + 32 * s);
                let offset = _mm512_set1_epi32(*offsets.add(8 * c + s));
                // |Σ| <= 32 * 241 * 127 + 128 * 32 * 127: the run's exact sum, then times
                // |sc| <= 32, over 8 runs: well within 32 bits.
                let dot = dots_from::<CH>(offset, &v, xq);
                *sum = _mm512_add_epi32(*sum, _mm512_mullo_epi32(dot, sc));
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(rec.add(xs::d(G)).cast()));
        for (c, acc) in acc.iter_mut().enumerate() {
            let dx = _mm512_set1_ps(a.xs[c].add(b * Q8K_BLOCK).cast::<f32>().read_unaligned());
            *acc = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(sums[c]), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), *acc);
    }
}
