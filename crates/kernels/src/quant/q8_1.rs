//! Q8_1: blocks of 32 signed bytes with an f16 scale `d` and an f16 `s = d * sum(q)`,
//! `x = d * q`. The activation format for Q4_1 and Q5_1 weights, whose minimum `m` then
//! contributes `m * s` per block.

use super::{blocks, blocks_mut, f16_to_f32, f32_to_f16, roundf, Block, QuantFormat};
use ggml_type::GgmlType;

pub const QK8_1: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ8_1 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// `d * sum(qs)`, f16.
    pub s: [u8; 2],
    pub qs: [i8; QK8_1],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);
// SAFETY: byte arrays only: alignment 1, no padding, any bits valid.
unsafe impl Block for BlockQ8_1 {}

pub struct Q8_1;

impl QuantFormat for Q8_1 {
    fn ty(&self) -> GgmlType {
        GgmlType::Q8_1
    }
    fn act_type(&self) -> GgmlType {
        GgmlType::Q8_1
    }
    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (b, y) in blocks::<BlockQ8_1>(src)
            .iter()
            .zip(dst.chunks_exact_mut(QK8_1))
        {
            let d = f16_to_f32(b.d);
            for (y, &q) in y.iter_mut().zip(&b.qs) {
                *y = q as f32 * d;
            }
        }
    }
    fn quantize_row(&self, src: &[f32], dst: &mut [u8]) {
        quantize_scalar(src, dst)
    }
    simd_dispatch!(
        vec_dot: vec_dot_scalar,
        vec_dot_avx2,
        neon: vec_dot_neon,
        dotprod: vec_dot_neon_dotprod
    );
    simd_dispatch!(quantize: quantize_scalar, quantize_avx2, neon: quantize_neon);
}

/// As ggml's reference: `d = max|x| / 127`, `q = round(x / d)` (ties away from zero),
/// `s = d * sum(q)` with the unrounded `d`.
fn quantize_scalar(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK8_1).zip(blocks_mut::<BlockQ8_1>(dst)) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = roundf(v * id) as i8;
            sum += *q as i32;
        }
        b.d = f32_to_f16(d);
        b.s = f32_to_f16(sum as f32 * d);
    }
}

/// Q8_1 against Q8_1 (ggml has no such kernel; weights are rarely stored as Q8_1): the `s`
/// fields are not used.
fn vec_dot_scalar(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ8_1>(w), blocks::<BlockQ8_1>(a));
    debug_assert!(w.len() * QK8_1 >= n && a.len() * QK8_1 >= n);
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK8_1) {
        let s: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&p, &q)| p as i32 * q as i32)
                .sum();
        sum += s as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    sum
}

#[cfg(target_arch = "x86_64")]
fn vec_dot_avx2(n: usize, w: &[u8], a: &[u8]) -> f32 {
    if !crate::simd::detected().avx2 {
        return vec_dot_scalar(n, w, a);
    }
    // SAFETY: the CPU has AVX2/FMA/F16C.
    unsafe { avx2::vec_dot(n, blocks(w), blocks(a)) }
}

#[cfg(target_arch = "x86_64")]
fn quantize_avx2(src: &[f32], dst: &mut [u8]) {
    if !crate::simd::detected().avx2 {
        return quantize_scalar(src, dst);
    }
    // SAFETY: the CPU has AVX2/FMA/F16C.
    unsafe { avx2::quantize(src, blocks_mut(dst)) }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BlockQ8_1, QK8_1};
    use crate::quant::f32_to_f16;
    use crate::simd::x86::{
        abs_max_32, dot_blocks, dot_i8_i8, f16_product, scale_round_i8_32, BlockPair,
    };
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2/FMA/F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(n: usize, w: &[BlockQ8_1], a: &[BlockQ8_1]) -> f32 {
        dot_blocks::<Pair>(w, a, n / QK8_1)
    }

    struct Pair;

    impl BlockPair for Pair {
        type W = BlockQ8_1;
        type A = BlockQ8_1;
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn products(x: &BlockQ8_1, y: &BlockQ8_1) -> (__m256, f32, f32) {
            let qx = _mm256_loadu_si256(x.qs.as_ptr().cast());
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            let p = _mm256_cvtepi32_ps(dot_i8_i8(qx, qy));
            (p, f16_product(x.d, y.d), 0.0)
        }
    }

    /// Same bytes as the scalar reference.
    ///
    /// # Safety
    /// AVX2/FMA/F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize(src: &[f32], dst: &mut [BlockQ8_1]) {
        for (x, b) in src.chunks_exact(QK8_1).zip(dst) {
            let Ok(x) = <&[f32; QK8_1]>::try_from(x) else {
                continue;
            };
            let d = abs_max_32(x) / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let sum = scale_round_i8_32(x, id, &mut b.qs);
            b.d = f32_to_f16(d);
            b.s = f32_to_f16(sum as f32 * d);
        }
    }
}

neon_vec_dot!(vec_dot_scalar, neon::vec_dot);

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
fn quantize_neon(src: &[f32], dst: &mut [u8]) {
    if !crate::simd::detected().neon {
        return quantize_scalar(src, dst);
    }
    // SAFETY: the CPU has NEON.
    unsafe { neon::quantize(src, blocks_mut(dst)) }
}

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
mod neon {
    use super::{blocks, BlockQ8_1, QK8_1};
    use crate::quant::f32_to_f16;
    use crate::simd::neon::{
        abs_max_32, dot_blocks, f16_to_f32, load_i8x16, scale_round_i8_32, BlockPair, I8Dot,
    };
    use std::arch::aarch64::*;

    /// # Safety
    /// NEON available, and SDOT where `D` uses it.
    #[inline(always)]
    pub unsafe fn vec_dot<D: I8Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        dot_blocks::<Pair, D>(blocks(w), blocks(a), n / QK8_1)
    }

    struct Pair;

    impl BlockPair for Pair {
        type W = BlockQ8_1;
        type A = BlockQ8_1;
        const EXTRA: bool = false;
        #[inline(always)]
        unsafe fn products<D: I8Dot>(x: &BlockQ8_1, y: &BlockQ8_1) -> int32x4_t {
            let (px, py) = (x.qs.as_ptr(), y.qs.as_ptr());
            let s = D::dot(vdupq_n_s32(0), load_i8x16(px), load_i8x16(py));
            D::dot(s, load_i8x16(px.add(16)), load_i8x16(py.add(16)))
        }
        #[inline(always)]
        unsafe fn factors(x: &BlockQ8_1, y: &BlockQ8_1) -> (f32, f32) {
            (f16_to_f32(x.d) * f16_to_f32(y.d), 0.0)
        }
    }

    /// Same bytes as the scalar reference.
    ///
    /// # Safety
    /// NEON available.
    pub unsafe fn quantize(src: &[f32], dst: &mut [BlockQ8_1]) {
        for (x, b) in src.chunks_exact(QK8_1).zip(dst) {
            let Ok(x) = <&[f32; QK8_1]>::try_from(x) else {
                continue;
            };
            let d = abs_max_32(x).max(0.0) / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let sum = scale_round_i8_32(x, id, &mut b.qs);
            b.d = f32_to_f16(d);
            b.s = f32_to_f16(sum as f32 * d);
        }
    }
}
