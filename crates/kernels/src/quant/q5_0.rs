//! Q5_0: blocks of 32 5-bit values with one f16 scale, `x = d * (q - 16)`. Dotted against
//! Q8_0 activations. The low 4 bits of element `j < 16` are the low nibble of `qs[j]`, of
//! element `j + 16` its high nibble; the fifth bit of element `j` is bit `j` of `qh` (a
//! little-endian u32).

use super::q8_0::BlockQ8_0;
use super::{blocks, blocks_mut, f16_to_f32, f32_to_f16, Block, QuantFormat};
use ggml_type::GgmlType;

pub const QK5_0: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ5_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Fifth bits, a little-endian u32.
    pub qh: [u8; 4],
    pub qs: [u8; QK5_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
// SAFETY: byte arrays only: alignment 1, no padding, any bits valid.
unsafe impl Block for BlockQ5_0 {}

/// The 32 five-bit values of a block, unsigned (0..32), in element order.
#[inline(always)]
fn unpack(b: &BlockQ5_0) -> [u8; QK5_0] {
    let qh = u32::from_le_bytes(b.qh);
    let mut q = [0u8; QK5_0];
    for (j, &p) in b.qs.iter().enumerate() {
        q[j] = (p & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (p >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

pub struct Q5_0;

impl QuantFormat for Q5_0 {
    fn ty(&self) -> GgmlType {
        GgmlType::Q5_0
    }
    fn act_type(&self) -> GgmlType {
        GgmlType::Q8_0
    }
    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (b, y) in blocks::<BlockQ5_0>(src)
            .iter()
            .zip(dst.chunks_exact_mut(QK5_0))
        {
            let d = f16_to_f32(b.d);
            for (y, q) in y.iter_mut().zip(unpack(b)) {
                *y = (q as i32 - 16) as f32 * d;
            }
        }
    }
    /// As ggml's reference: the value of largest magnitude maps to -16, `d = max / -16`, and
    /// `q = min(31, trunc(x / d + 16.5))`.
    fn quantize_row(&self, src: &[f32], dst: &mut [u8]) {
        for (x, b) in src.chunks_exact(QK5_0).zip(blocks_mut::<BlockQ5_0>(dst)) {
            let mut amax = 0f32;
            let mut max = 0f32;
            for &v in x {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f32_to_f16(d);
            let mut qh = 0u32;
            for j in 0..QK5_0 / 2 {
                let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
                let q1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
                b.qs[j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
                qh |= ((q0 as u32 >> 4) & 1) << j;
                qh |= ((q1 as u32 >> 4) & 1) << (j + 16);
            }
            b.qh = qh.to_le_bytes();
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
    let (w, a) = (blocks::<BlockQ5_0>(w), blocks::<BlockQ8_0>(a));
    debug_assert!(w.len() * QK5_0 >= n && a.len() * QK5_0 >= n);
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK5_0) {
        let s: i32 = unpack(x)
            .iter()
            .zip(&y.qs)
            .map(|(&q, &v)| (q as i32 - 16) * v as i32)
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
mod avx2 {
    use super::{BlockQ5_0, BlockQ8_0, QK5_0};
    use crate::simd::x86::{
        bit_mask_bytes, dot_blocks, dot_i8_i8, f16_product, nibbles, BlockPair,
    };
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2/FMA/F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(n: usize, w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
        dot_blocks::<Pair>(w, a, n / QK5_0)
    }

    struct Pair;

    impl BlockPair for Pair {
        type W = BlockQ5_0;
        type A = BlockQ8_0;
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn products(x: &BlockQ5_0, y: &BlockQ8_0) -> (__m256, f32, f32) {
            // q - 16 as a signed byte: the nibble where the fifth bit is set, else the nibble
            // with its upper four bits set (nibble - 16).
            let bits = bit_mask_bytes(u32::from_le_bytes(x.qh));
            let high = _mm256_andnot_si256(bits, _mm256_set1_epi8(0xF0u8 as i8));
            let qx = _mm256_or_si256(nibbles(&x.qs), high);
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            let p = _mm256_cvtepi32_ps(dot_i8_i8(qx, qy));
            (p, f16_product(x.d, y.d), 0.0)
        }
    }
}

neon_vec_dot!(vec_dot_scalar, neon::vec_dot);

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
mod neon {
    use super::{blocks, BlockQ5_0, BlockQ8_0, QK5_0};
    use crate::simd::neon::{
        bit_mask_bytes, dot_blocks, f16_to_f32, load_i8x16, nibbles, BlockPair, I8Dot,
    };
    use std::arch::aarch64::*;

    /// # Safety
    /// NEON available, and SDOT where `D` uses it.
    #[inline(always)]
    pub unsafe fn vec_dot<D: I8Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        dot_blocks::<Pair, D>(blocks(w), blocks(a), n / QK5_0)
    }

    struct Pair;

    impl BlockPair for Pair {
        type W = BlockQ5_0;
        type A = BlockQ8_0;
        const EXTRA: bool = false;
        #[inline(always)]
        unsafe fn products<D: I8Dot>(x: &BlockQ5_0, y: &BlockQ8_0) -> int32x4_t {
            // q - 16 as a signed byte: the nibble where the fifth bit is set, else the nibble
            // with its upper four bits set (nibble - 16).
            let (lo, hi) = nibbles(&x.qs);
            let (b_lo, b_hi) = bit_mask_bytes(u32::from_le_bytes(x.qh));
            let f0 = vdupq_n_u8(0xF0);
            let lo = vreinterpretq_s8_u8(vorrq_u8(lo, vbicq_u8(f0, b_lo)));
            let hi = vreinterpretq_s8_u8(vorrq_u8(hi, vbicq_u8(f0, b_hi)));
            let py = y.qs.as_ptr();
            let s = D::dot(vdupq_n_s32(0), lo, load_i8x16(py));
            D::dot(s, hi, load_i8x16(py.add(16)))
        }
        #[inline(always)]
        unsafe fn factors(x: &BlockQ5_0, y: &BlockQ8_0) -> (f32, f32) {
            (f16_to_f32(x.d) * f16_to_f32(y.d), 0.0)
        }
    }
}
