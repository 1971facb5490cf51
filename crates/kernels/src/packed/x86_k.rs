//! x86-64 kernels of the packed k-quants (layouts in [`super::kquant`]): lanes are the 8 rows.
//! As in [`super::x86`], `ISA` picks AVX2 or a VNNI encoding; the integer sums are the same.

use super::kquant::{q2k, q3k, q4k, q5k, q6k, Q8K_BLOCK, Q8K_BSUMS, Q8K_QS};
use super::x86::{
    bx, dpbusd, lane_shuffle, nibble_vectors, AVX2, AVX512_VNNI, AVX_VNNI, ODD_BYTE_PAIRS,
    RUN_SCALE, RUN_SCALE_TWICE,
};
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
    let mut xs = [std::ptr::null::<u8>(); TILE_TOKENS];
    for (c, xc) in xs.iter_mut().enumerate().take(n) {
        let row = x.acts.row(t0 + c);
        assert!(row.len() >= nb * Q8K_BLOCK, "activation row");
        *xc = row.as_ptr();
    }
    let args = Args {
        nb,
        group: group.as_ptr(),
        record: w.spec.record(GROUP),
        xs,
        prefetch: w.prefetch,
    };
    macro_rules! by_tokens {
        ($kind:expr) => {
            // SAFETY: AVX2/FMA/F16C and `ISA` present (the caller's promise); `group` holds
            // `nb` records and every token row `nb` Q8_K blocks (asserted), which is all the
            // kernel reads.
            unsafe {
                match (ISA, n) {
                    (AVX512_VNNI, 1) => tile_avx512_vnni::<{ $kind }, 1>(&args, out),
                    (AVX512_VNNI, 2) => tile_avx512_vnni::<{ $kind }, 2>(&args, out),
                    (AVX512_VNNI, 3) => tile_avx512_vnni::<{ $kind }, 3>(&args, out),
                    (AVX512_VNNI, _) => tile_avx512_vnni::<{ $kind }, 4>(&args, out),
                    (AVX_VNNI, 1) => tile_avx_vnni::<{ $kind }, 1>(&args, out),
                    (AVX_VNNI, 2) => tile_avx_vnni::<{ $kind }, 2>(&args, out),
                    (AVX_VNNI, 3) => tile_avx_vnni::<{ $kind }, 3>(&args, out),
                    (AVX_VNNI, _) => tile_avx_vnni::<{ $kind }, 4>(&args, out),
                    (_, 1) => tile_avx2::<{ $kind }, 1>(&args, out),
                    (_, 2) => tile_avx2::<{ $kind }, 2>(&args, out),
                    (_, 3) => tile_avx2::<{ $kind }, 3>(&args, out),
                    _ => tile_avx2::<{ $kind }, 4>(&args, out),
                }
            }
        };
    }
    match w.spec.ty {
        GgmlType::Q6_K => by_tokens!(Q6),
        GgmlType::Q3_K => by_tokens!(Q3),
        GgmlType::Q2_K => by_tokens!(Q2),
        GgmlType::Q5_K => by_tokens!(Q5),
        _ => by_tokens!(Q4),
    }
}

/// The `KIND` parameter of the tiles: which k-quant.
const Q2: u8 = 2;
const Q3: u8 = 3;
const Q4: u8 = 4;
const Q5: u8 = 5;
const Q6: u8 = 6;

/// # Safety
/// AVX2/FMA/F16C; `a` as [`group`] checks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<const KIND: u8, const C: usize>(
    a: &Args,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    match KIND {
        Q6 => tile_q6k::<AVX2, false, C>(a, out),
        Q3 => tile_q6k::<AVX2, true, C>(a, out),
        Q2 => tile_q2k::<AVX2, C>(a, out),
        Q5 => tile_q4k::<AVX2, true, C>(a, out),
        _ => tile_q4k::<AVX2, false, C>(a, out),
    }
}

/// # Safety
/// As [`tile_avx2`], and AVX-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn tile_avx_vnni<const KIND: u8, const C: usize>(
    a: &Args,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    match KIND {
        Q6 => tile_q6k::<AVX_VNNI, false, C>(a, out),
        Q3 => tile_q6k::<AVX_VNNI, true, C>(a, out),
        Q2 => tile_q2k::<AVX_VNNI, C>(a, out),
        Q5 => tile_q4k::<AVX_VNNI, true, C>(a, out),
        _ => tile_q4k::<AVX_VNNI, false, C>(a, out),
    }
}

/// # Safety
/// As [`tile_avx2`], and AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_avx512_vnni<const KIND: u8, const C: usize>(
    a: &Args,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    match KIND {
        Q6 => tile_q6k::<AVX512_VNNI, false, C>(a, out),
        Q3 => tile_q6k::<AVX512_VNNI, true, C>(a, out),
        Q2 => tile_q2k::<AVX512_VNNI, C>(a, out),
        Q5 => tile_q4k::<AVX512_VNNI, true, C>(a, out),
        _ => tile_q4k::<AVX512_VNNI, false, C>(a, out),
    }
}

struct Args {
    nb: usize,
    group: *const u8,
    record: usize,
    xs: [*const u8; TILE_TOKENS],
    /// One-token products: bytes ahead to prefetch ([`PackedMatrix`]'s).
    prefetch: usize,
}

/// Shuffle controls of [`super::x86`]'s picks, for 256-bit vectors.
static RUN_SCALE_32: [[u8; 32]; 4] = [
    lane_shuffle(RUN_SCALE[0]),
    lane_shuffle(RUN_SCALE[1]),
    lane_shuffle(RUN_SCALE[2]),
    lane_shuffle(RUN_SCALE[3]),
];
static RUN_SCALE_TWICE_32: [[u8; 32]; 4] = [
    lane_shuffle(RUN_SCALE_TWICE[0]),
    lane_shuffle(RUN_SCALE_TWICE[1]),
    lane_shuffle(RUN_SCALE_TWICE[2]),
    lane_shuffle(RUN_SCALE_TWICE[3]),
];
static ODD_BYTE_PAIRS_32: [u8; 32] = lane_shuffle(ODD_BYTE_PAIRS);

/// # Safety
/// AVX2.
#[inline(always)]
unsafe fn shuffle_control(c: &[u8; 32]) -> __m256i {
    _mm256_loadu_si256(c.as_ptr().cast())
}

/// The 6-bit scales of a Q4_K or Q5_K record's 8 rows (layout in [`super::kquant`]): those
/// of runs `4h..4h + 4` in the bytes of each row's 32-bit lane of vector `h`.
///
/// # Safety
/// AVX2; `rec` a whole record.
#[inline(always)]
unsafe fn q4k_scale_bytes(rec: *const u8) -> [__m256i; 2] {
    let word = |w: usize| _mm256_loadu_si256(rec.add(q4k::sm(GROUP, w)).cast());
    let (w0, w2) = (word(0), word(2));
    [
        _mm256_and_si256(w0, _mm256_set1_epi32(0x3F3F_3F3F)),
        _mm256_or_si256(
            _mm256_and_si256(w2, _mm256_set1_epi32(0x0F0F_0F0F)),
            _mm256_and_si256(_mm256_srli_epi32::<2>(w0), _mm256_set1_epi32(0x3030_3030)),
        ),
    ]
}

/// The 6-bit minimums of a Q4_K or Q5_K record's 8 rows as 16-bit pairs in each row's lane:
/// runs (0, 2), (1, 3), (4, 6) and (5, 7).
///
/// # Safety
/// AVX2; `rec` a whole record.
#[inline(always)]
unsafe fn q4k_min_pairs(rec: *const u8) -> [__m256i; 4] {
    let word = |w: usize| _mm256_loadu_si256(rec.add(q4k::sm(GROUP, w)).cast());
    let (w1, w2) = (word(1), word(2));
    let low = _mm256_and_si256(w1, _mm256_set1_epi32(0x3F3F_3F3F));
    let high = _mm256_or_si256(
        _mm256_and_si256(_mm256_srli_epi32::<4>(w2), _mm256_set1_epi32(0x0F0F_0F0F)),
        _mm256_and_si256(_mm256_srli_epi32::<2>(w1), _mm256_set1_epi32(0x3030_3030)),
    );
    let (even, odd) = (
        _mm256_set1_epi32(0x00FF_00FF),
        shuffle_control(&ODD_BYTE_PAIRS_32),
    );
    [
        _mm256_and_si256(low, even),
        _mm256_shuffle_epi8(low, odd),
        _mm256_and_si256(high, even),
        _mm256_shuffle_epi8(high, odd),
    ]
}

/// Q4_K, and Q5_K (`Q5`): the same but for the fifth bits merged into the nibbles and the
/// wider values' sums in 16 bits.
///
/// # Safety
/// AVX2/FMA/F16C and `ISA`; `a` as [`group`] checks.
#[inline(always)]
unsafe fn tile_q4k<const ISA: u8, const Q5: bool, const C: usize>(
    a: &Args,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    let mut acc = [_mm256_setzero_ps(); C];
    let bit4 = _mm256_set1_epi8(0x10);
    for b in 0..a.nb {
        let rec = a.group.add(b * a.record);
        if C == 1 {
            super::x86::prefetch_ahead(rec, a.prefetch, a.record);
        }
        let scales = q4k_scale_bytes(rec);
        let mut sums = [_mm256_setzero_si256(); C];
        for s in 0..8 {
            let v = if Q5 {
                let mut v = nibble_vectors(rec.add(q5k::qs(GROUP, s)));
                // Bit k of each byte of the run's fifth bits becomes bit 4 of the same byte of
                // vector k.
                let h = _mm256_loadu_si256(rec.add(q5k::qh(GROUP, s)).cast());
                for (k, vk) in v.iter_mut().enumerate() {
                    let moved = match k {
                        0 => _mm256_slli_epi16::<4>(h),
                        1 => _mm256_slli_epi16::<3>(h),
                        2 => _mm256_slli_epi16::<2>(h),
                        3 => _mm256_slli_epi16::<1>(h),
                        4 => h,
                        5 => _mm256_srli_epi16::<1>(h),
                        6 => _mm256_srli_epi16::<2>(h),
                        _ => _mm256_srli_epi16::<3>(h),
                    };
                    *vk = _mm256_or_si256(*vk, _mm256_and_si256(moved, bit4));
                }
                v
            } else {
                nibble_vectors(rec.add(q4k::qs(GROUP) + 128 * s))
            };
            // Each row's scale in its 32-bit lane, and in both 16-bit halves of it.
            let sc32 = _mm256_shuffle_epi8(scales[s / 4], shuffle_control(&RUN_SCALE_32[s % 4]));
            let sc =
                _mm256_shuffle_epi8(scales[s / 4], shuffle_control(&RUN_SCALE_TWICE_32[s % 4]));
            for (c, sum) in sums.iter_mut().enumerate() {
                let xq = a.xs[c].add(b * Q8K_BLOCK + Q8K_QS + 32 * s);
                if ISA != AVX2 {
                    let mut dot = _mm256_setzero_si256();
                    for (k, &vk) in v.iter().enumerate() {
                        dot = dpbusd::<ISA>(dot, vk, bx(xq, k));
                    }
                    *sum = _mm256_add_epi32(*sum, _mm256_mullo_epi32(dot, sc32));
                    continue;
                }
                if Q5 {
                    // Values below 32: 4 pairs per i16 sum at most (4 * 2 * 31 * 128 = 31744).
                    let mut p0 = _mm256_maddubs_epi16(v[0], bx(xq, 0));
                    let mut p1 = _mm256_maddubs_epi16(v[4], bx(xq, 4));
                    for k in 1..4 {
                        p0 = _mm256_add_epi16(p0, _mm256_maddubs_epi16(v[k], bx(xq, k)));
                        p1 = _mm256_add_epi16(p1, _mm256_maddubs_epi16(v[k + 4], bx(xq, k + 4)));
                    }
                    let scaled =
                        _mm256_add_epi32(_mm256_madd_epi16(p0, sc), _mm256_madd_epi16(p1, sc));
                    *sum = _mm256_add_epi32(*sum, scaled);
                    continue;
                }
                // 8 pairs of (value < 16) × (|x| <= 128): at most 30720 per i16.
                let mut p = _mm256_maddubs_epi16(v[0], bx(xq, 0));
                for (k, &vk) in v.iter().enumerate().skip(1) {
                    p = _mm256_add_epi16(p, _mm256_maddubs_epi16(vk, bx(xq, k)));
                }
                *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(p, sc));
            }
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(rec.add(q4k::d(GROUP)).cast()));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(rec.add(q4k::dmin(GROUP)).cast()));
        let min_pairs = q4k_min_pairs(rec);
        for (c, acc) in acc.iter_mut().enumerate() {
            let xb = a.xs[c].add(b * Q8K_BLOCK);
            let dx = _mm256_set1_ps(xb.cast::<f32>().read_unaligned());
            // Sums of the activation runs of 32 (pairs of the 16-element sums), two runs per
            // 32-bit lane, against the rows' minimum pairs.
            let bs = _mm256_madd_epi16(
                _mm256_loadu_si256(xb.add(Q8K_BSUMS).cast()),
                _mm256_set1_epi16(1),
            );
            let mut run = [0i32; 8];
            _mm256_storeu_si256(run.as_mut_ptr().cast(), bs);
            let mut mins = _mm256_setzero_si256();
            // The minimums' pairs are runs (0, 2), (1, 3), (4, 6) and (5, 7).
            for (t, &m) in min_pairs.iter().enumerate() {
                let first = 4 * (t / 2) + t % 2;
                let pair = (run[first] as u32 & 0xFFFF) | (run[first + 2] as u32) << 16;
                mins = _mm256_add_epi32(mins, _mm256_madd_epi16(m, _mm256_set1_epi32(pair as i32)));
            }
            *acc = _mm256_fmadd_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(sums[c]), *acc);
            *acc = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dx), _mm256_cvtepi32_ps(mins), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        _mm256_storeu_ps(o.as_mut_ptr(), *acc);
    }
}

/// Q6_K, and Q3_K (`Q3`: the same scales and sums; values `q + 4` in 0..8, an offset of 4).
///
/// # Safety
/// AVX2/FMA/F16C and `ISA`; `a` as [`group`] checks.
#[inline(always)]
unsafe fn tile_q6k<const ISA: u8, const Q3: bool, const C: usize>(
    a: &Args,
    out: &mut [[f32; GROUP]; TILE_TOKENS],
) {
    let mut acc = [_mm256_setzero_ps(); C];
    let (bits45, bit2) = (_mm256_set1_epi8(0x30), _mm256_set1_epi8(0x04));
    let (sc_at, d_at) = if Q3 {
        (q3k::sc(GROUP), q3k::d(GROUP))
    } else {
        (q6k::sc(GROUP), q6k::d(GROUP))
    };
    // Within each 32-bit lane (one row): the scale of the first or second 16-element run in
    // both 16-bit halves.
    // (pshufb indexes bytes within each 128-bit half.)
    let dup_first = _mm256_setr_epi8(
        0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13, 0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12,
        13, 12, 13,
    );
    let dup_second = _mm256_setr_epi8(
        2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15, 2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10,
        11, 14, 15, 14, 15,
    );
    for b in 0..a.nb {
        let rec = a.group.add(b * a.record);
        if C == 1 {
            super::x86::prefetch_ahead(rec, a.prefetch, a.record);
        }
        let mut sums = [_mm256_setzero_si256(); C];
        for t in 0..8 {
            let v = if Q3 {
                q3k_values(rec, t, bit2)
            } else {
                q6k_values(rec, t, bits45)
            };
            let scp = _mm256_cvtepi8_epi16(_mm_loadu_si128(rec.add(sc_at + 16 * t).cast()));
            let sc0 = _mm256_shuffle_epi8(scp, dup_first);
            let sc1 = _mm256_shuffle_epi8(scp, dup_second);
            // Each row's two scales as 32-bit lanes (VNNI sums reach 32 bits at once).
            let sc0_32 = _mm256_srai_epi32::<16>(_mm256_slli_epi32::<16>(scp));
            let sc1_32 = _mm256_srai_epi32::<16>(scp);
            for (c, sum) in sums.iter_mut().enumerate() {
                let xb = a.xs[c].add(b * Q8K_BLOCK);
                let xq = xb.add(Q8K_QS + 32 * t);
                // The offset of the values (Q6_K 32, Q3_K 4) times Σ sc_r bsum_r over the two
                // runs.
                let bsums =
                    _mm256_set1_epi32(xb.add(Q8K_BSUMS + 4 * t).cast::<i32>().read_unaligned());
                let sc_bsums = _mm256_madd_epi16(scp, bsums);
                let offset = if Q3 {
                    _mm256_slli_epi32::<2>(sc_bsums)
                } else {
                    _mm256_slli_epi32::<5>(sc_bsums)
                };
                if ISA != AVX2 {
                    let (mut first, mut second) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                    for k in 0..4 {
                        first = dpbusd::<ISA>(first, v[k], bx(xq, k));
                        second = dpbusd::<ISA>(second, v[k + 4], bx(xq, k + 4));
                    }
                    let scaled = _mm256_add_epi32(
                        _mm256_mullo_epi32(first, sc0_32),
                        _mm256_mullo_epi32(second, sc1_32),
                    );
                    *sum = _mm256_add_epi32(*sum, _mm256_sub_epi32(scaled, offset));
                    continue;
                }
                // Values below 64: two pairs per i16 sum at most (2 * 2 * 63 * 128 = 32256).
                let pair = |k: usize| {
                    _mm256_add_epi16(
                        _mm256_maddubs_epi16(v[k], bx(xq, k)),
                        _mm256_maddubs_epi16(v[k + 1], bx(xq, k + 1)),
                    )
                };
                let first = _mm256_add_epi32(
                    _mm256_madd_epi16(pair(0), sc0),
                    _mm256_madd_epi16(pair(2), sc0),
                );
                let second = _mm256_add_epi32(
                    _mm256_madd_epi16(pair(4), sc1),
                    _mm256_madd_epi16(pair(6), sc1),
                );
                *sum = _mm256_add_epi32(
                    *sum,
                    _mm256_sub_epi32(_mm256_add_epi32(first, second), offset),
                );
            }
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(rec.add(d_at).cast()));
        for (c, acc) in acc.iter_mut().enumerate() {
            let dx = _mm256_set1_ps(a.xs[c].add(b * Q8K_BLOCK).cast::<f32>().read_unaligned());
            *acc = _mm256_fmadd_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(sums[c]), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        _mm256_storeu_ps(o.as_mut_ptr(), *acc);
    }
}

/// The 8 vectors of 2-bit values of one 32-element run (64 bytes at `p`; layout in
/// [`super::kquant`]): bits `2m, 2m + 1` of vector `h` are vector `4h + m`.
///
/// # Safety
/// AVX2; `p` readable for 64 bytes.
#[inline(always)]
unsafe fn crumb_vectors(p: *const u8) -> [__m256i; 8] {
    let low2 = _mm256_set1_epi8(0x03);
    let (h0, h1) = (
        _mm256_loadu_si256(p.cast()),
        _mm256_loadu_si256(p.add(4 * GROUP).cast()),
    );
    let at = |h: __m256i, m: usize| {
        let moved = match m {
            0 => h,
            1 => _mm256_srli_epi16::<2>(h),
            2 => _mm256_srli_epi16::<4>(h),
            _ => _mm256_srli_epi16::<6>(h),
        };
        _mm256_and_si256(moved, low2)
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

/// The sums of a run's two 16-element halves (vectors 0..4 and 4..8) against a token's values
/// `xq`, each times its rows' scales: `sc32` (0, 1) as 32-bit lanes for the VNNI encodings,
/// `sc16` (0, 1) in both 16-bit halves of each lane for AVX2's `vpmaddwd`. Values below 8: a
/// 16-bit sum of four `vpmaddubsw` pairs is at most 4 * 2 * 7 * 128 = 7168.
///
/// # Safety
/// AVX2 and `ISA`; `xq` readable for 32 bytes.
#[inline(always)]
unsafe fn scaled_halves<const ISA: u8>(
    v: &[__m256i; 8],
    xq: *const u8,
    sc32: (__m256i, __m256i),
    sc16: (__m256i, __m256i),
) -> __m256i {
    if ISA != AVX2 {
        let (mut first, mut second) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for k in 0..4 {
            first = dpbusd::<ISA>(first, v[k], bx(xq, k));
            second = dpbusd::<ISA>(second, v[k + 4], bx(xq, k + 4));
        }
        return _mm256_add_epi32(
            _mm256_mullo_epi32(first, sc32.0),
            _mm256_mullo_epi32(second, sc32.1),
        );
    }
    let half = |k0: usize| {
        let product = |k: usize| _mm256_maddubs_epi16(v[k], bx(xq, k));
        _mm256_add_epi16(
            _mm256_add_epi16(product(k0), product(k0 + 1)),
            _mm256_add_epi16(product(k0 + 2), product(k0 + 3)),
        )
    };
    _mm256_add_epi32(
        _mm256_madd_epi16(half(0), sc16.0),
        _mm256_madd_epi16(half(4), sc16.1),
    )
}

/// Each row's scale pair (i16, as `vpmovsxbw`/`vpmovzxbw` give them) as the first and second
/// scale in 32-bit lanes and in both 16-bit halves of each lane.
///
/// # Safety
/// AVX2.
#[inline(always)]
unsafe fn scale_forms(scp: __m256i) -> ((__m256i, __m256i), (__m256i, __m256i)) {
    let sc0_32 = _mm256_srai_epi32::<16>(_mm256_slli_epi32::<16>(scp));
    let sc1_32 = _mm256_srai_epi32::<16>(scp);
    let sc0_16 = _mm256_or_si256(
        _mm256_and_si256(sc0_32, _mm256_set1_epi32(0xFFFF)),
        _mm256_slli_epi32::<16>(sc0_32),
    );
    let sc1_16 = _mm256_or_si256(
        _mm256_and_si256(sc1_32, _mm256_set1_epi32(0xFFFF)),
        _mm256_slli_epi32::<16>(sc1_32),
    );
    ((sc0_32, sc1_32), (sc0_16, sc1_16))
}

/// The 8 value vectors (0..64) of run `t` of a Q6_K record: nibbles and high bits.
///
/// # Safety
/// AVX2; `rec` a whole 8-row Q6_K record.
#[inline(always)]
unsafe fn q6k_values(rec: *const u8, t: usize, bits45: __m256i) -> [__m256i; 8] {
    let mut v = nibble_vectors(rec.add(q6k::ql(GROUP, t)));
    let h0 = _mm256_loadu_si256(rec.add(q6k::qh(GROUP, t)).cast());
    let h1 = _mm256_loadu_si256(rec.add(q6k::qh(GROUP, t) + 32).cast());
    // Bits 2m, 2m + 1 to bits 4, 5.
    let up = |h: __m256i, m: usize| {
        let moved = match m {
            0 => _mm256_slli_epi16::<4>(h),
            1 => _mm256_slli_epi16::<2>(h),
            2 => h,
            _ => _mm256_srli_epi16::<2>(h),
        };
        _mm256_and_si256(moved, bits45)
    };
    for m in 0..4 {
        v[m] = _mm256_or_si256(v[m], up(h0, m));
        v[4 + m] = _mm256_or_si256(v[4 + m], up(h1, m));
    }
    v
}

/// The 8 value vectors (`q + 4`, 0..8) of run `t` of a Q3_K record: 2-bit values and third
/// bits.
///
/// # Safety
/// AVX2; `rec` a whole 8-row Q3_K record.
#[inline(always)]
unsafe fn q3k_values(rec: *const u8, t: usize, bit2: __m256i) -> [__m256i; 8] {
    let mut v = crumb_vectors(rec.add(q3k::ql(GROUP, t)));
    // Bit k of each byte of the third bits becomes bit 2 of the same byte of vector k.
    let h = _mm256_loadu_si256(rec.add(q3k::qh(GROUP, t)).cast());
    for (k, vk) in v.iter_mut().enumerate() {
        let moved = match k {
            0 => _mm256_slli_epi16::<2>(h),
            1 => _mm256_slli_epi16::<1>(h),
            2 => h,
            3 => _mm256_srli_epi16::<1>(h),
            4 => _mm256_srli_epi16::<2>(h),
            5 => _mm256_srli_epi16::<3>(h),
            6 => _mm256_srli_epi16::<4>(h),
            _ => _mm256_srli_epi16::<5>(h),
        };
        *vk = _mm256_or_si256(*vk, _mm256_and_si256(moved, bit2));
    }
    v
}

/// Q2_K (layout in [`super::kquant`]).
///
/// # Safety
/// AVX2/FMA/F16C and `ISA`; `a` as [`group`] checks.
#[inline(always)]
unsafe fn tile_q2k<const ISA: u8, const C: usize>(a: &Args, out: &mut [[f32; GROUP]; TILE_TOKENS]) {
    let mut acc = [_mm256_setzero_ps(); C];
    let low4 = _mm256_set1_epi16(0x0F);
    for b in 0..a.nb {
        let rec = a.group.add(b * a.record);
        if C == 1 {
            super::x86::prefetch_ahead(rec, a.prefetch, a.record);
        }
        let mut sums = [_mm256_setzero_si256(); C];
        let mut mins = [_mm256_setzero_si256(); C];
        for t in 0..8 {
            let v = crumb_vectors(rec.add(q2k::qs(GROUP, t)));
            let scm =
                _mm256_cvtepu8_epi16(_mm_loadu_si128(rec.add(q2k::scm(GROUP) + 16 * t).cast()));
            let (sc32, sc16) = scale_forms(_mm256_and_si256(scm, low4));
            let mp = _mm256_srli_epi16::<4>(scm);
            for c in 0..C {
                let xb = a.xs[c].add(b * Q8K_BLOCK);
                let xq = xb.add(Q8K_QS + 32 * t);
                let bsums =
                    _mm256_set1_epi32(xb.add(Q8K_BSUMS + 4 * t).cast::<i32>().read_unaligned());
                let scaled = scaled_halves::<ISA>(&v, xq, sc32, sc16);
                sums[c] = _mm256_add_epi32(sums[c], scaled);
                mins[c] = _mm256_add_epi32(mins[c], _mm256_madd_epi16(mp, bsums));
            }
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(rec.add(q2k::d(GROUP)).cast()));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(rec.add(q2k::dmin(GROUP)).cast()));
        for (c, acc) in acc.iter_mut().enumerate() {
            let dx = _mm256_set1_ps(a.xs[c].add(b * Q8K_BLOCK).cast::<f32>().read_unaligned());
            *acc = _mm256_fmadd_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(sums[c]), *acc);
            *acc = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dx), _mm256_cvtepi32_ps(mins[c]), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        _mm256_storeu_ps(o.as_mut_ptr(), *acc);
    }
}
