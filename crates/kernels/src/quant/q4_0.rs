//! Q4_0: blocks of 32 4-bit values with one f16 scale, `x = d * (q - 8)`. Dotted against Q8_0
//! activations. Element `j < 16` is the low nibble of `qs[j]`, element `j + 16` its high nibble.

use super::q8_0::BlockQ8_0;
use super::{blocks, blocks_mut, f16_to_f32, f32_to_f16, Block, QuantFormat};
use ggml_type::GgmlType;

pub const QK4_0: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ4_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
// SAFETY: byte arrays only: alignment 1, no padding, any bits valid.
unsafe impl Block for BlockQ4_0 {}

pub struct Q4_0;

impl QuantFormat for Q4_0 {
    fn ty(&self) -> GgmlType {
        GgmlType::Q4_0
    }
    fn act_type(&self) -> GgmlType {
        GgmlType::Q8_0
    }
    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (b, y) in blocks::<BlockQ4_0>(src)
            .iter()
            .zip(dst.chunks_exact_mut(QK4_0))
        {
            let d = f16_to_f32(b.d);
            let (lo, hi) = y.split_at_mut(QK4_0 / 2);
            for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b.qs) {
                *l = ((q & 0x0F) as i32 - 8) as f32 * d;
                *h = ((q >> 4) as i32 - 8) as f32 * d;
            }
        }
    }
    /// As ggml's reference: the value of largest magnitude maps to -8, `d = max / -8`, and
    /// `q = min(15, trunc(x / d + 8.5))`.
    fn quantize_row(&self, src: &[f32], dst: &mut [u8]) {
        for (x, b) in src.chunks_exact(QK4_0).zip(blocks_mut::<BlockQ4_0>(dst)) {
            let mut amax = 0f32;
            let mut max = 0f32;
            for &v in x {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f32_to_f16(d);
            let (lo, hi) = x.split_at(QK4_0 / 2);
            for ((q, &l), &h) in b.qs.iter_mut().zip(lo).zip(hi) {
                let q0 = ((l * id + 8.5) as i8).min(15) as u8;
                let q1 = ((h * id + 8.5) as i8).min(15) as u8;
                *q = q0 | (q1 << 4);
            }
        }
    }
    simd_dispatch!(
        vec_dot: vec_dot_scalar,
        vec_dot_avx2,
        neon: vec_dot_neon,
        dotprod: vec_dot_neon_dotprod
    );
}

fn vec_dot_scalar(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ4_0>(w), blocks::<BlockQ8_0>(a));
    debug_assert!(w.len() * QK4_0 >= n && a.len() * QK4_0 >= n);
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK4_0) {
        let (lo, hi) = y.qs.split_at(QK4_0 / 2);
        let mut s = 0i32;
        for ((&q, &l), &h) in x.qs.iter().zip(lo).zip(hi) {
            s += ((q & 0x0F) as i32 - 8) * l as i32 + ((q >> 4) as i32 - 8) * h as i32;
        }
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
mod avx2 {
    use super::{BlockQ4_0, BlockQ8_0, QK4_0};
    use crate::simd::x86::{dot_blocks, dot_i8_i8, f16_product, nibbles, BlockPair};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2/FMA/F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(n: usize, w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
        dot_blocks::<Pair>(w, a, n / QK4_0)
    }

    struct Pair;

    impl BlockPair for Pair {
        type W = BlockQ4_0;
        type A = BlockQ8_0;
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn products(x: &BlockQ4_0, y: &BlockQ8_0) -> (__m256, f32, f32) {
            let qx = _mm256_sub_epi8(nibbles(&x.qs), _mm256_set1_epi8(8));
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            let p = _mm256_cvtepi32_ps(dot_i8_i8(qx, qy));
            (p, f16_product(x.d, y.d), 0.0)
        }
    }
}

neon_vec_dot!(vec_dot_scalar, neon::vec_dot);

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
mod neon {
    use super::{blocks, BlockQ4_0, BlockQ8_0, QK4_0};
    use crate::simd::neon::{dot_blocks, f16_to_f32, load_i8x16, nibbles, BlockPair, I8Dot};
    use std::arch::aarch64::*;

    /// # Safety
    /// NEON available, and SDOT where `D` uses it.
    #[inline(always)]
    pub unsafe fn vec_dot<D: I8Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        dot_blocks::<Pair, D>(blocks(w), blocks(a), n / QK4_0)
    }

    struct Pair;

    impl BlockPair for Pair {
        type W = BlockQ4_0;
        type A = BlockQ8_0;
        const EXTRA: bool = false;
        #[inline(always)]
        unsafe fn products<D: I8Dot>(x: &BlockQ4_0, y: &BlockQ8_0) -> int32x4_t {
            let (lo, hi) = nibbles(&x.qs);
            let eight = vdupq_n_s8(8);
            let lo = vsubq_s8(vreinterpretq_s8_u8(lo), eight);
            let hi = vsubq_s8(vreinterpretq_s8_u8(hi), eight);
            let py = y.qs.as_ptr();
            let s = D::dot(vdupq_n_s32(0), lo, load_i8x16(py));
            D::dot(s, hi, load_i8x16(py.add(16)))
        }
        #[inline(always)]
        unsafe fn factors(x: &BlockQ4_0, y: &BlockQ8_0) -> (f32, f32) {
            (f16_to_f32(x.d) * f16_to_f32(y.d), 0.0)
        }
    }
}
