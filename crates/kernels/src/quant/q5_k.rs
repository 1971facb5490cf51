//! Q5_K: Q4_K with a fifth bit. 256 values in 8 runs of 32, each with a 6-bit scale and a
//! 6-bit minimum (packed as in Q4_K): value = d*sc*q - dmin*m with q in 0..=31, the low 4 bits
//! in `qs` and the high bit in `qh`.
//!
//! The quantizer reproduces ggml's `quantize_row_q5_K_ref` bit for bit.

use ggml_type::GgmlType;

use super::q4_k::{
    make_qkx2_quants, mins_dot_bsums, pack_scales_mins, quantize_scales_mins, requantize,
    unpack_scales_mins,
};
use super::q8_k::{block_input, dot_blocks, BlockQ8K, QK_K};
use super::{blocks, blocks_mut, f16_to_f32, f32_to_f16, Block, QuantFormat};
#[cfg(target_arch = "x86_64")]
use crate::simd;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5K {
    /// f16 scale of the scales.
    pub d: [u8; 2],
    /// f16 scale of the minimums.
    pub dmin: [u8; 2],
    /// 8 six-bit scales and 8 six-bit minimums, packed as in Q4_K.
    pub scales: [u8; 12],
    /// High bits: bit 2j of byte l belongs to value 64j+l, bit 2j+1 to value 64j+32+l.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, as Q4_K's `qs`.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

// SAFETY: repr(C) of byte arrays only: alignment 1, no padding, any bit pattern valid.
unsafe impl Block for BlockQ5K {}

/// Quantizes one block (ggml's `quantize_row_q5_K_ref`).
pub fn quantize_block(x: &[f32; QK_K]) -> BlockQ5K {
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
            31,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            -0.5,
            0.1,
            15,
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
    let mut y = BlockQ5K {
        d: f32_to_f16(max_scale / 63.0),
        dmin: f32_to_f16(max_min / 63.0),
        scales: pack_scales_mins(&ls, &lm),
        qh: [0; QK_K / 8],
        qs: [0; QK_K / 2],
    };
    requantize(x, &y.scales, y.d, y.dmin, 31, &mut l);
    for (j, q) in y.qs.chunks_exact_mut(32).enumerate() {
        let (m1, m2) = (1u8 << (2 * j), 2u8 << (2 * j));
        for i in 0..32 {
            let (mut l1, mut l2) = (l[64 * j + i], l[64 * j + 32 + i]);
            if l1 > 15 {
                l1 -= 16;
                y.qh[i] |= m1;
            }
            if l2 > 15 {
                l2 -= 16;
                y.qh[i] |= m2;
            }
            q[i] = l1 | (l2 << 4);
        }
    }
    y
}

pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (i, y) in blocks_mut::<BlockQ5K>(dst)
        .iter_mut()
        .take(src.len() / QK_K)
        .enumerate()
    {
        *y = quantize_block(block_input(src, i));
    }
}

pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, out) in blocks::<BlockQ5K>(src)
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
            let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
            for i in 0..32 {
                let h1 = if b.qh[i] & u1 != 0 { 16 } else { 0 };
                let h2 = if b.qh[i] & u2 != 0 { 16 } else { 0 };
                y[i] = d1 * f32::from((q[i] & 0xF) + h1) - m1;
                y[i + 32] = d2 * f32::from((q[i] >> 4) + h2) - m2;
            }
        }
    }
}

fn vec_dot_scalar(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let (xs, ys) = dot_blocks::<BlockQ5K>(n, w, act);
    let mut sumf = 0.0f32;
    for (x, y) in xs.iter().zip(ys) {
        let (sc, m) = unpack_scales_mins(&x.scales);
        let mut sumi = 0i32;
        for (j, q) in x.qs.chunks_exact(32).enumerate() {
            let a = &y.qs[64 * j..64 * j + 32];
            let b = &y.qs[64 * j + 32..64 * j + 64];
            let (mut lo, mut hi) = (0i32, 0i32);
            for k in 0..32 {
                let h1 = i32::from((x.qh[k] >> (2 * j)) & 1) << 4;
                let h2 = i32::from((x.qh[k] >> (2 * j + 1)) & 1) << 4;
                lo += (i32::from(q[k] & 0xF) | h1) * i32::from(a[k]);
                hi += (i32::from(q[k] >> 4) | h2) * i32::from(b[k]);
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
    let (xs, ys) = dot_blocks::<BlockQ5K>(n, w, act);
    // SAFETY: the CPU has AVX2/FMA/F16C.
    unsafe { avx2::vec_dot(xs, ys) }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{unpack_scales_mins, BlockQ5K, BlockQ8K};
    use crate::quant::q8_k::kx86::{bsums_32, f16x2, hsum_ps128, mask, BCAST_I16};
    use crate::simd::x86::hsum_ps;

    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn vec_dot(xs: &[BlockQ5K], ys: &[BlockQ8K]) -> f32 {
        let low = _mm256_set1_epi8(0x0F);
        let one = _mm256_set1_epi8(1);
        let two = _mm256_set1_epi8(2);
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        for (x, y) in xs.iter().zip(ys) {
            let (xd, xmin) = f16x2(x.d.as_ptr());
            let yd = y.d();
            let (sc, m) = unpack_scales_mins(&x.scales);
            let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(m.as_ptr().cast()));
            let prod = _mm_madd_epi16(mins, bsums_32(y));
            acc_m = _mm_fmadd_ps(_mm_set1_ps(yd * xmin), _mm_cvtepi32_ps(prod), acc_m);

            let sc16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(sc.as_ptr().cast()));
            let scales = _mm256_set_m128i(sc16, sc16);
            let qs = x.qs.as_ptr();
            let q8 = y.qs.as_ptr();
            let mut qh = _mm256_loadu_si256(x.qh.as_ptr().cast());
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let q4 = _mm256_loadu_si256(qs.add(32 * j).cast());
                // Bits 0 and 1 of `qh` belong to this run; the shift moves the next pair down
                // (within each byte: nothing from the neighbour reaches bits 0 and 1).
                let h_lo = _mm256_slli_epi16::<4>(_mm256_and_si256(qh, one));
                let h_hi = _mm256_slli_epi16::<3>(_mm256_and_si256(qh, two));
                qh = _mm256_srli_epi16::<2>(qh);
                let lo = _mm256_or_si256(_mm256_and_si256(q4, low), h_lo);
                let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q4), low), h_hi);
                let a = _mm256_loadu_si256(q8.add(64 * j).cast());
                let b = _mm256_loadu_si256(q8.add(64 * j + 32).cast());
                // Adjacent u8 x i8 products fit i16: 2 * 31 * 128 < 32768.
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

    use super::{block_value, dot_blocks, unpack_scales_mins, BlockQ5K, BlockQ8K};
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
    unsafe fn block_sums<D: I8Dot>(x: &BlockQ5K, y: &BlockQ8K) -> (i32, i32) {
        let m4 = vdupq_n_u8(0x0F);
        let zero = vdupq_n_s32(0);
        let py = y.qs.as_ptr();
        // Fifth bits: bits 2j and 2j + 1 of bytes l and 16 + l belong to values 64j + l and
        // 64j + 32 + l.
        let mut qh = [vld1q_u8(x.qh.as_ptr()), vld1q_u8(x.qh.as_ptr().add(16))];
        let one = vdupq_n_u8(1);
        let two = vdupq_n_u8(2);
        // The integer dot product of each run of 32 (0..=31), spread over four lanes.
        let mut runs = [zero; 8];
        for j in 0..4 {
            let (mut lo_sum, mut hi_sum) = (zero, zero);
            for (s, qh) in qh.iter_mut().enumerate() {
                let q = vld1q_u8(x.qs.as_ptr().add(32 * j + 16 * s));
                let lo = vorrq_u8(vandq_u8(q, m4), vshlq_n_u8::<4>(vandq_u8(*qh, one)));
                let hi = vorrq_u8(vshrq_n_u8::<4>(q), vshlq_n_u8::<3>(vandq_u8(*qh, two)));
                *qh = vshrq_n_u8::<2>(*qh);
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
        let (xs, ys) = dot_blocks::<BlockQ5K>(n, w, act);
        let mut sumf = 0.0f32;
        for (x, y) in xs.iter().zip(ys) {
            let (sumi, summ) = block_sums::<D>(x, y);
            sumf += block_value(y.d(), x.d, x.dmin, sumi, summ);
        }
        sumf
    }
}

/// The Q5_K format.
pub struct Q5K;

impl QuantFormat for Q5K {
    fn ty(&self) -> GgmlType {
        GgmlType::Q5_K
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
