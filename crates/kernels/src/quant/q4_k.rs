//! Q4_K: 256 values in 8 runs of 32. Each run has a 6-bit scale and a 6-bit minimum (packed
//! into 12 bytes), multiplied by the block's f16 `d` and `dmin`: value = d*sc*q - dmin*m with
//! q in 0..=15.
//!
//! The quantizer reproduces ggml's `quantize_row_q4_K_ref` bit for bit; `make_qkx2_quants` and
//! the scale packing here are shared with Q5_K (and the fitting routine with Q2_K).

use ggml_type::GgmlType;

use super::q8_k::{block_input, dot_blocks, nearest_int, BlockQ8K, QK_K};
use super::{blocks, blocks_mut, f16_to_f32, f32_to_f16, Block, QuantFormat};
#[cfg(target_arch = "x86_64")]
use crate::simd;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4K {
    /// f16 scale of the scales.
    pub d: [u8; 2],
    /// f16 scale of the minimums.
    pub dmin: [u8; 2],
    /// 8 six-bit scales and 8 six-bit minimums; see [`get_scale_min_k4`].
    pub scales: [u8; 12],
    /// Runs of 64 values: 32 bytes, low nibbles first run, high nibbles second.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

// SAFETY: repr(C) of byte arrays only: alignment 1, no padding, any bit pattern valid.
unsafe impl Block for BlockQ4K {}

/// Scale and minimum of run `j` (0..8) from the 12 packed bytes: runs 0..4 keep the low 6 bits
/// of bytes j and j+4; runs 4..8 keep nibbles of byte j+4 plus the top 2 bits of bytes j-4 and j.
#[inline(always)]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// All eight (scale, minimum) pairs.
#[inline(always)]
pub(crate) fn unpack_scales_mins(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    // Four runs at a time, in 32-bit words (get_scale_min_k4 applied to whole words).
    let word = |i: usize| u32::from_le_bytes([q[i], q[i + 1], q[i + 2], q[i + 3]]);
    let (a, b, c) = (word(0), word(4), word(8));
    let sc_lo = a & 0x3f3f_3f3f;
    let m_lo = b & 0x3f3f_3f3f;
    let sc_hi = (c & 0x0f0f_0f0f) | (((a >> 6) & 0x0303_0303) << 4);
    let m_hi = ((c >> 4) & 0x0f0f_0f0f) | (((b >> 6) & 0x0303_0303) << 4);
    let join = |lo: u32, hi: u32| (u64::from(lo) | (u64::from(hi) << 32)).to_le_bytes();
    (join(sc_lo, sc_hi), join(m_lo, m_hi))
}

/// The inverse of [`get_scale_min_k4`] for values below 64 (ggml's packing order).
pub(crate) fn pack_scales_mins(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    s[..4].copy_from_slice(&ls[..4]);
    s[4..8].copy_from_slice(&lm[..4]);
    for j in 4..8 {
        s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
        s[j - 4] |= (ls[j] >> 4) << 6;
        s[j] |= (lm[j] >> 4) << 6;
    }
    s
}

/// ggml's `make_qkx2_quants`: fits `x ≈ scale*L - min` with `L` in 0..=nmax, minimising the
/// weighted squared (or absolute, `use_mad`) error over a small sweep of candidate scales.
/// Returns (scale, min) with `min >= 0`; `l` gets the levels. Operation order follows ggml so
/// the results match it bit for bit.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let err = |diff: f32| if use_mad { diff.abs() } else { diff * diff };
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let lf = q as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Quantizes one block (ggml's `quantize_row_q4_K_ref`).
pub fn quantize_block(x: &[f32; QK_K]) -> BlockQ4K {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut weights = [0f32; 32];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            15,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            -1.0,
            0.1,
            20,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let (ls, lm) = quantize_scales_mins(&scales, &mins, max_scale, max_min);
    let mut y = BlockQ4K {
        d: f32_to_f16(max_scale / 63.0),
        dmin: f32_to_f16(max_min / 63.0),
        scales: pack_scales_mins(&ls, &lm),
        qs: [0; QK_K / 2],
    };
    requantize(x, &y.scales, y.d, y.dmin, 15, &mut l);
    for (j, q) in y.qs.chunks_exact_mut(32).enumerate() {
        for i in 0..32 {
            q[i] = l[64 * j + i] | (l[64 * j + 32 + i] << 4);
        }
    }
    y
}

/// Six-bit codes of the run scales and minimums relative to their maxima (shared with Q5_K).
pub(crate) fn quantize_scales_mins(
    scales: &[f32; 8],
    mins: &[f32; 8],
    max_scale: f32,
    max_min: f32,
) -> ([u8; 8], [u8; 8]) {
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // C stores the int into a uint8_t (truncating) before capping at 63.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    (ls, lm)
}

/// Recomputes the levels against the rounded scales and minimums actually stored (shared with
/// Q5_K); runs whose scale rounded to zero keep the levels of the fit.
pub(crate) fn requantize(
    x: &[f32; QK_K],
    packed: &[u8; 12],
    d: [u8; 2],
    dmin: [u8; 2],
    nmax: i32,
    l: &mut [u8; QK_K],
) {
    let d_all = f16_to_f32(d);
    let m_all = f16_to_f32(dmin);
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, packed);
        let d = d_all * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        let dm = m_all * f32::from(m);
        for i in 0..32 {
            l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (i, y) in blocks_mut::<BlockQ4K>(dst)
        .iter_mut()
        .take(src.len() / QK_K)
        .enumerate()
    {
        *y = quantize_block(block_input(src, i));
    }
}

pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, out) in blocks::<BlockQ4K>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_to_f32(b.d);
        let min = f16_to_f32(b.dmin);
        let (sc, m) = unpack_scales_mins(&b.scales);
        for (j, (q, y)) in
            b.qs.chunks_exact(32)
                .zip(out.chunks_exact_mut(64))
                .enumerate()
        {
            let d1 = d * f32::from(sc[2 * j]);
            let m1 = min * f32::from(m[2 * j]);
            let d2 = d * f32::from(sc[2 * j + 1]);
            let m2 = min * f32::from(m[2 * j + 1]);
            for i in 0..32 {
                y[i] = d1 * f32::from(q[i] & 0xF) - m1;
                y[i + 32] = d2 * f32::from(q[i] >> 4) - m2;
            }
        }
    }
}

/// Sum over the block of the minimums times the Q8_K run sums (two runs of 16 per minimum).
#[inline(always)]
pub(crate) fn mins_dot_bsums(m: &[u8; 8], bsums: &[i16; 16]) -> i32 {
    (0..8)
        .map(|j| i32::from(m[j]) * (i32::from(bsums[2 * j]) + i32::from(bsums[2 * j + 1])))
        .sum()
}

fn vec_dot_scalar(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let (xs, ys) = dot_blocks::<BlockQ4K>(n, w, act);
    let mut sumf = 0.0f32;
    for (x, y) in xs.iter().zip(ys) {
        let (sc, m) = unpack_scales_mins(&x.scales);
        let mut sumi = 0i32;
        for (j, q) in x.qs.chunks_exact(32).enumerate() {
            let a = &y.qs[64 * j..64 * j + 32];
            let b = &y.qs[64 * j + 32..64 * j + 64];
            let mut lo = 0i32;
            let mut hi = 0i32;
            for k in 0..32 {
                lo += i32::from(q[k] & 0xF) * i32::from(a[k]);
                hi += i32::from(q[k] >> 4) * i32::from(b[k]);
            }
            sumi += i32::from(sc[2 * j]) * lo + i32::from(sc[2 * j + 1]) * hi;
        }
        let summ = mins_dot_bsums(&m, &y.bsums());
        sumf += block_value(y.d(), x.d, x.dmin, sumi, summ);
    }
    sumf
}

/// The float epilogue shared by the scalar and NEON kernels, so that they agree bit for bit.
#[inline(always)]
fn block_value(yd: f32, d: [u8; 2], dmin: [u8; 2], sumi: i32, summ: i32) -> f32 {
    yd * f16_to_f32(d) * sumi as f32 - yd * f16_to_f32(dmin) * summ as f32
}

#[cfg(target_arch = "x86_64")]
fn vec_dot_avx2(n: usize, w: &[u8], act: &[u8]) -> f32 {
    if !simd::detected().avx2 {
        return vec_dot_scalar(n, w, act);
    }
    let (xs, ys) = dot_blocks::<BlockQ4K>(n, w, act);
    // SAFETY: the CPU has AVX2/FMA/F16C.
    unsafe { avx2::vec_dot(xs, ys) }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{unpack_scales_mins, BlockQ4K, BlockQ8K};
    use crate::quant::q8_k::kx86::{bsums_32, f16x2, hsum_ps128, mask, BCAST_I16};
    use crate::simd::x86::hsum_ps;

    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn vec_dot(xs: &[BlockQ4K], ys: &[BlockQ8K]) -> f32 {
        let low = _mm256_set1_epi8(0x0F);
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        for (x, y) in xs.iter().zip(ys) {
            let (xd, xmin) = f16x2(x.d.as_ptr());
            let yd = y.d();
            let (sc, m) = unpack_scales_mins(&x.scales);
            // Minimums: m[j] * (sum of the 32 activations of run j).
            let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(m.as_ptr().cast()));
            let prod = _mm_madd_epi16(mins, bsums_32(y));
            acc_m = _mm_fmadd_ps(_mm_set1_ps(yd * xmin), _mm_cvtepi32_ps(prod), acc_m);

            let sc16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(sc.as_ptr().cast()));
            let scales = _mm256_set_m128i(sc16, sc16);
            let qs = x.qs.as_ptr();
            let q8 = y.qs.as_ptr();
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let q4 = _mm256_loadu_si256(qs.add(32 * j).cast());
                let lo = _mm256_and_si256(q4, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), low);
                let a = _mm256_loadu_si256(q8.add(64 * j).cast());
                let b = _mm256_loadu_si256(q8.add(64 * j + 32).cast());
                // Adjacent u8 x i8 products fit i16: 2 * 15 * 128 < 32768.
                let s_lo = _mm256_shuffle_epi8(scales, mask(&BCAST_I16[2 * j]));
                let s_hi = _mm256_shuffle_epi8(scales, mask(&BCAST_I16[2 * j + 1]));
                let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a), s_lo);
                let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, b), s_hi);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(yd * xd), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_ps(acc) - hsum_ps128(acc_m)
    }
}

neon_vec_dot!(vec_dot_scalar, neon::vec_dot);

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
mod neon {
    use std::arch::aarch64::*;

    use super::{block_value, dot_blocks, unpack_scales_mins, BlockQ4K, BlockQ8K};
    use crate::quant::q8_k::kneon::bsums;
    use crate::simd::neon::{load_i8x16, sums4, I8Dot};

    /// Eight bytes widened to two vectors of i32.
    #[inline(always)]
    unsafe fn widen_u8x8(v: &[u8; 8]) -> [int32x4_t; 2] {
        let w = vmovl_u8(vld1_u8(v.as_ptr()));
        [
            vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(w))),
            vreinterpretq_s32_u32(vmovl_high_u16(w)),
        ]
    }

    /// The block's `sumi` and `summ` of the scalar kernel, exactly.
    #[inline(always)]
    unsafe fn block_sums<D: I8Dot>(x: &BlockQ4K, y: &BlockQ8K) -> (i32, i32) {
        let m4 = vdupq_n_u8(0x0F);
        let zero = vdupq_n_s32(0);
        let py = y.qs.as_ptr();
        // The integer dot product of each run of 32 (0..=15), spread over four lanes.
        let mut runs = [zero; 8];
        for j in 0..4 {
            let (mut lo_sum, mut hi_sum) = (zero, zero);
            for s in 0..2 {
                let q = vld1q_u8(x.qs.as_ptr().add(32 * j + 16 * s));
                let lo = vandq_u8(q, m4);
                let hi = vshrq_n_u8::<4>(q);
                let a = load_i8x16(py.add(64 * j + 16 * s));
                let b = load_i8x16(py.add(64 * j + 32 + 16 * s));
                lo_sum = D::dot(lo_sum, vreinterpretq_s8_u8(lo), a);
                hi_sum = D::dot(hi_sum, vreinterpretq_s8_u8(hi), b);
            }
            runs[2 * j] = lo_sum;
            runs[2 * j + 1] = hi_sum;
        }
        let (sc, m) = unpack_scales_mins(&x.scales);
        let sc = widen_u8x8(&sc);
        let r0 = sums4([runs[0], runs[1], runs[2], runs[3]]);
        let r1 = sums4([runs[4], runs[5], runs[6], runs[7]]);
        let sumi = vaddvq_s32(vmlaq_s32(vmulq_s32(r0, sc[0]), r1, sc[1]));
        // Minimums: m[j] * (bsums[2j] + bsums[2j + 1]).
        let m = widen_u8x8(&m);
        let (b0, b1) = bsums(y);
        let (p0, p1) = (vpaddlq_s16(b0), vpaddlq_s16(b1));
        let summ = vaddvq_s32(vmlaq_s32(vmulq_s32(p0, m[0]), p1, m[1]));
        (sumi, summ)
    }

    /// # Safety
    /// NEON available, and SDOT where `D` uses it.
    #[inline(always)]
    pub(super) unsafe fn vec_dot<D: I8Dot>(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let (xs, ys) = dot_blocks::<BlockQ4K>(n, w, act);
        let mut sumf = 0.0f32;
        for (x, y) in xs.iter().zip(ys) {
            let (sumi, summ) = block_sums::<D>(x, y);
            sumf += block_value(y.d(), x.d, x.dmin, sumi, summ);
        }
        sumf
    }
}

/// The Q4_K format.
pub struct Q4K;

impl QuantFormat for Q4K {
    fn ty(&self) -> GgmlType {
        GgmlType::Q4_K
    }
    fn act_type(&self) -> GgmlType {
        GgmlType::Q8_K
    }
    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        dequantize_row(src, dst)
    }
    fn quantize_row(&self, src: &[f32], dst: &mut [u8]) {
        quantize_row(src, dst)
    }
    simd_dispatch!(
        vec_dot: vec_dot_scalar,
        vec_dot_avx2,
        neon: vec_dot_neon,
        dotprod: vec_dot_neon_dotprod
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_packing_round_trips() {
        let ls = [0, 1, 17, 63, 32, 5, 48, 63];
        let lm = [63, 2, 33, 0, 15, 16, 31, 47];
        let p = pack_scales_mins(&ls, &lm);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &p), (ls[j], lm[j]));
        }
        assert_eq!(unpack_scales_mins(&p), (ls, lm));
        // Arbitrary bytes: the word-wise unpacking equals ggml's per-run one.
        let mut s = 0x1234_5678u32;
        for _ in 0..1000 {
            let q: [u8; 12] = std::array::from_fn(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as u8
            });
            let (sc, m) = unpack_scales_mins(&q);
            for j in 0..8 {
                assert_eq!(get_scale_min_k4(j, &q), (sc[j], m[j]));
            }
        }
    }
}
