//! Q6_K: 256 values in 16 runs of 16, each with a signed 8-bit scale times the block's f16 `d`:
//! value = d * sc * (q - 32) with q in 0..=63, stored as 4 low bits (`ql`) and 2 high bits
//! (`qh`).
//!
//! The quantizer reproduces ggml's `quantize_row_q6_K_ref` bit for bit; `make_qx_quants` here
//! is ggml's symmetric fitting routine.

use ggml_type::GgmlType;

use super::q8_k::{block_input, dot_blocks, nearest_int, BlockQ8K, QK_K};
use super::{blocks, blocks_mut, f16_to_f32, f32_to_f16, Block, QuantFormat};
#[cfg(target_arch = "x86_64")]
use crate::simd;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ6K {
    /// Low 4 bits: per 128 values, 64 bytes; byte l holds values l (low nibble) and l+64 (high),
    /// byte l+32 holds values l+32 and l+96.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits: per 128 values, 32 bytes; byte l holds values l, l+32, l+64, l+96 at bits
    /// 0, 2, 4, 6.
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    /// f16 scale of the scales.
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

// SAFETY: repr(C) of byte arrays only: alignment 1, no padding, any bit pattern valid.
unsafe impl Block for BlockQ6K {}

const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights (weights `x²`): a
/// symmetric fit `x ≈ scale * (L - nmax)`, `L` in 0..2*nmax, refined over a sweep of candidate
/// scales. Returns the scale; `l` gets `L`. Operation order follows ggml bit for bit.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -nmaxf / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let q = level(iscale, x[i]);
        l[i] = (q + nmax) as i8;
        let w = x[i] * x[i];
        let qf = q as f32;
        sumlx += w * x[i] * qf;
        suml2 += w * qf * qf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let qf = level(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * qf;
            suml2 += w * qf * qf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                l[i] = (level(iscale, x[i]) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Quantizes one block (ggml's `quantize_row_q6_K_ref`).
pub fn quantize_block(x: &[f32; QK_K]) -> BlockQ6K {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for ib in 0..QK_K / 16 {
        let scale = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    let mut y = BlockQ6K {
        ql: [0; QK_K / 2],
        qh: [0; QK_K / 4],
        scales: [0; QK_K / 16],
        d: [0; 2],
    };
    if max_abs_scale < GROUP_MAX_EPS {
        y.d = f32_to_f16(0.0);
        return y;
    }
    let iscale = -128.0 / max_scale;
    y.d = f32_to_f16(1.0 / iscale);
    for (s, &v) in y.scales.iter_mut().zip(&scales) {
        // C stores the int into an int8_t (truncating) after capping at 127.
        *s = nearest_int(iscale * v).min(127) as i8;
    }
    let d_all = f16_to_f32(y.d);
    for j in 0..QK_K / 16 {
        let d = d_all * f32::from(y.scales[j]);
        if d == 0.0 {
            continue;
        }
        for i in 0..16 {
            l[16 * j + i] = (nearest_int(x[16 * j + i] / d).clamp(-32, 31) + 32) as i8;
        }
    }
    for h in 0..2 {
        let (l, ql, qh) = (&l[128 * h..], &mut y.ql[64 * h..], &mut y.qh[32 * h..]);
        for i in 0..32 {
            let q = [
                l[i] as u8,
                l[i + 32] as u8,
                l[i + 64] as u8,
                l[i + 96] as u8,
            ];
            ql[i] = (q[0] & 0xF) | ((q[2] & 0xF) << 4);
            ql[i + 32] = (q[1] & 0xF) | ((q[3] & 0xF) << 4);
            qh[i] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
    y
}

pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (i, y) in blocks_mut::<BlockQ6K>(dst)
        .iter_mut()
        .take(src.len() / QK_K)
        .enumerate()
    {
        *y = quantize_block(block_input(src, i));
    }
}

/// The 256 unsigned 6-bit values (0..=63) of a block, in element order.
#[inline(always)]
fn unpack(x: &BlockQ6K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for h in 0..2 {
        let (ql, qh) = (&x.ql[64 * h..], &x.qh[32 * h..]);
        let out = &mut q[128 * h..];
        for i in 0..32 {
            out[i] = (ql[i] & 0xF) | ((qh[i] & 3) << 4);
            out[i + 32] = (ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4);
            out[i + 64] = (ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4);
            out[i + 96] = (ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4);
        }
    }
    q
}

pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (x, out) in blocks::<BlockQ6K>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_to_f32(x.d);
        let q = unpack(x);
        for (j, (o, q)) in out.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
            let dl = d * f32::from(x.scales[j]);
            for (o, &q) in o.iter_mut().zip(q) {
                *o = dl * f32::from(q as i8 - 32);
            }
        }
    }
}

/// `sum_g sc[g] * bsums[g]`: with it the dot product works on the unsigned values and removes
/// the offset of 32 at the end.
#[inline(always)]
fn scales_dot_bsums(sc: &[i8; 16], y: &BlockQ8K) -> i32 {
    (0..16)
        .map(|g| i32::from(sc[g]) * i32::from(y.bsum(g)))
        .sum()
}

fn vec_dot_scalar(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let (xs, ys) = dot_blocks::<BlockQ6K>(n, w, act);
    let mut sumf = 0.0f32;
    for (x, y) in xs.iter().zip(ys) {
        let q = unpack(x);
        let mut sumi = 0i32;
        for g in 0..16 {
            let s: i32 = (16 * g..16 * g + 16)
                .map(|k| i32::from(q[k]) * i32::from(y.qs[k]))
                .sum();
            sumi += i32::from(x.scales[g]) * s;
        }
        sumi -= 32 * scales_dot_bsums(&x.scales, y);
        sumf += block_value(x, y, sumi);
    }
    sumf
}

/// The float epilogue shared by the scalar and NEON kernels, so that they agree bit for bit.
#[inline(always)]
fn block_value(x: &BlockQ6K, y: &BlockQ8K, sumi: i32) -> f32 {
    y.d() * f16_to_f32(x.d) * sumi as f32
}

#[cfg(target_arch = "x86_64")]
fn vec_dot_avx2(n: usize, w: &[u8], act: &[u8]) -> f32 {
    if !simd::detected().avx2 {
        return vec_dot_scalar(n, w, act);
    }
    let (xs, ys) = dot_blocks::<BlockQ6K>(n, w, act);
    // SAFETY: the CPU has AVX2/FMA/F16C.
    unsafe { avx2::vec_dot(xs, ys) }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ6K, BlockQ8K};
    use crate::quant::q8_k::kx86::{bsums, f16x1, mask, PAIR_SPREAD};
    use crate::simd::x86::hsum_ps;

    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn vec_dot(xs: &[BlockQ6K], ys: &[BlockQ8K]) -> f32 {
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(0x03);
        let m2_mid = _mm256_set1_epi8(0x0C);
        let m2_hi = _mm256_set1_epi8(0x30);
        let mut acc = _mm256_setzero_ps();
        for (x, y) in xs.iter().zip(ys) {
            let d = y.d() * f16x1(x.d);
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.scales.as_ptr().cast()));
            // The values are stored with +32: remove 32 * sum_g sc[g] * bsums[g].
            let offset = _mm256_madd_epi16(sc16, bsums(y));
            let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(offset));
            // Scales of each half of the block, in both 128-bit lanes.
            let halves = [
                _mm256_permute2x128_si256::<0x00>(sc16, sc16),
                _mm256_permute2x128_si256::<0x11>(sc16, sc16),
            ];
            for (h, &scales) in halves.iter().enumerate() {
                let ql = x.ql.as_ptr().add(64 * h);
                let qh = _mm256_loadu_si256(x.qh.as_ptr().add(32 * h).cast());
                let ql0 = _mm256_loadu_si256(ql.cast());
                let ql1 = _mm256_loadu_si256(ql.add(32).cast());
                // Values 0..32, 32..64, 64..96, 96..128 of this half, unsigned 0..=63.
                let q = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, m4),
                        _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m2)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_slli_epi16::<2>(_mm256_and_si256(qh, m2_mid)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                        _mm256_and_si256(qh, m2_hi),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2_hi),
                    ),
                ];
                let q8 = y.qs.as_ptr().add(128 * h);
                for (k, &qk) in q.iter().enumerate() {
                    let a = _mm256_loadu_si256(q8.add(32 * k).cast());
                    // Adjacent u8 x i8 products fit i16: 2 * 63 * 128 < 32768.
                    let p = _mm256_maddubs_epi16(qk, a);
                    let s = _mm256_shuffle_epi8(scales, mask(&PAIR_SPREAD[k]));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
                }
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_ps(acc)
    }
}

neon_vec_dot!(vec_dot_scalar, neon::vec_dot);

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
mod neon {
    use std::arch::aarch64::*;

    use super::{block_value, dot_blocks, BlockQ6K, BlockQ8K};
    use crate::quant::q8_k::kneon::{dot_bsums, scaled_sum16, widen_i8x16};
    use crate::simd::neon::{load_i8x16, sums4, I8Dot};

    /// The block's `sumi` of the scalar kernel, exactly: on the stored values (0..=63), less
    /// 32 * sum_g sc[g] * bsums[g].
    #[inline(always)]
    unsafe fn block_sum<D: I8Dot>(x: &BlockQ6K, y: &BlockQ8K) -> i32 {
        let m4 = vdupq_n_u8(0x0F);
        let m2 = vdupq_n_u8(0x03);
        let m2_mid = vdupq_n_u8(0x0C);
        let m2_hi = vdupq_n_u8(0x30);
        let zero = vdupq_n_s32(0);
        let py = y.qs.as_ptr();
        let mut runs = [zero; 16];
        for h in 0..2 {
            let ql = x.ql.as_ptr().add(64 * h);
            let qh = x.qh.as_ptr().add(32 * h);
            // Bytes l and 16 + l (the two vectors of each pair) of this half.
            for s in 0..2 {
                let ql0 = vld1q_u8(ql.add(16 * s));
                let ql1 = vld1q_u8(ql.add(32 + 16 * s));
                let qh = vld1q_u8(qh.add(16 * s));
                // Values 0..32, 32..64, 64..96, 96..128 of this half, unsigned 0..=63.
                let q = [
                    vorrq_u8(vandq_u8(ql0, m4), vshlq_n_u8::<4>(vandq_u8(qh, m2))),
                    vorrq_u8(vandq_u8(ql1, m4), vshlq_n_u8::<2>(vandq_u8(qh, m2_mid))),
                    vorrq_u8(vshrq_n_u8::<4>(ql0), vandq_u8(qh, m2_hi)),
                    vorrq_u8(vshrq_n_u8::<4>(ql1), vandq_u8(vshrq_n_u8::<2>(qh), m2_hi)),
                ];
                for (k, &qk) in q.iter().enumerate() {
                    let at = 128 * h + 32 * k + 16 * s;
                    let a = load_i8x16(py.add(at));
                    runs[at / 16] = D::dot(zero, vreinterpretq_s8_u8(qk), a);
                }
            }
        }
        let r = [
            sums4([runs[0], runs[1], runs[2], runs[3]]),
            sums4([runs[4], runs[5], runs[6], runs[7]]),
            sums4([runs[8], runs[9], runs[10], runs[11]]),
            sums4([runs[12], runs[13], runs[14], runs[15]]),
        ];
        let sc = vld1q_s8(x.scales.as_ptr());
        let sc16 = (vmovl_s8(vget_low_s8(sc)), vmovl_high_s8(sc));
        scaled_sum16(r, widen_i8x16(sc)) - 32 * dot_bsums(sc16, y)
    }

    /// # Safety
    /// NEON available, and SDOT where `D` uses it.
    #[inline(always)]
    pub(super) unsafe fn vec_dot<D: I8Dot>(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let (xs, ys) = dot_blocks::<BlockQ6K>(n, w, act);
        let mut sumf = 0.0f32;
        for (x, y) in xs.iter().zip(ys) {
            sumf += block_value(x, y, block_sum::<D>(x, y));
        }
        sumf
    }
}

/// The Q6_K format.
pub struct Q6K;

impl QuantFormat for Q6K {
    fn ty(&self) -> GgmlType {
        GgmlType::Q6_K
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
