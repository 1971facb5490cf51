//! F32: plain little-endian floats (a "block" of one element). Dotted against F32 activations.

use super::{blocks, blocks_mut, Block, QuantFormat};
use ggml_type::GgmlType;

/// One f32, little-endian.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockF32 {
    pub v: [u8; 4],
}
const _: () = assert!(std::mem::size_of::<BlockF32>() == 4);
// SAFETY: a byte array: alignment 1, no padding, any bits valid.
unsafe impl Block for BlockF32 {}

pub struct F32;

impl QuantFormat for F32 {
    fn ty(&self) -> GgmlType {
        GgmlType::F32
    }
    fn act_type(&self) -> GgmlType {
        GgmlType::F32
    }
    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (b, y) in blocks::<BlockF32>(src).iter().zip(dst) {
            *y = f32::from_le_bytes(b.v);
        }
    }
    fn quantize_row(&self, src: &[f32], dst: &mut [u8]) {
        for (x, b) in src.iter().zip(blocks_mut::<BlockF32>(dst)) {
            b.v = x.to_le_bytes();
        }
    }
    simd_dispatch!(vec_dot: vec_dot_scalar, vec_dot_avx2, neon: vec_dot_neon);
}

/// As ggml: each product rounded to f32, summed in f64.
fn vec_dot_scalar(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 4 * n && a.len() >= 4 * n);
    let (w, a) = (blocks::<BlockF32>(w), blocks::<BlockF32>(a));
    let mut sum = 0f64;
    for (x, y) in w.iter().zip(a).take(n) {
        sum += (f32::from_le_bytes(x.v) * f32::from_le_bytes(y.v)) as f64;
    }
    sum as f32
}

#[cfg(target_arch = "x86_64")]
fn vec_dot_avx2(n: usize, w: &[u8], a: &[u8]) -> f32 {
    if !crate::simd::detected().avx2 {
        return vec_dot_scalar(n, w, a);
    }
    let n = n.min(w.len() / 4).min(a.len() / 4);
    // SAFETY: the CPU has AVX2/FMA/F16C, and both slices hold at least `n` floats.
    unsafe { avx2::vec_dot(n, w.as_ptr(), a.as_ptr()) }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::simd::x86::hsum_ps;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2/FMA/F16C available; `w` and `a` readable for `4 * n` bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(n: usize, w: *const u8, a: *const u8) -> f32 {
        let (w, a) = (w.cast::<f32>(), a.cast::<f32>());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(w.add(i + 8 * k));
                let y = _mm256_loadu_ps(a.add(i + 8 * k));
                *acc = _mm256_fmadd_ps(x, y, *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(i)), _mm256_loadu_ps(a.add(i)), acc[0]);
            i += 8;
        }
        let acc = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut sum = hsum_ps(acc);
        while i < n {
            sum += w.add(i).read_unaligned() * a.add(i).read_unaligned();
            i += 1;
        }
        sum
    }
}

neon_vec_dot!(float: vec_dot_scalar, neon::vec_dot);

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
mod neon {
    use std::arch::aarch64::*;

    /// As the AVX2 kernel: products summed in f32 with fused multiply-adds, 16 lanes at a time.
    ///
    /// # Safety
    /// NEON available.
    #[inline(always)]
    pub unsafe fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let n = n.min(w.len() / 4).min(a.len() / 4);
        let (w, a) = (w.as_ptr().cast::<f32>(), a.as_ptr().cast::<f32>());
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i + 16 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                let x = vld1q_f32(w.add(i + 4 * k));
                let y = vld1q_f32(a.add(i + 4 * k));
                *acc = vfmaq_f32(*acc, x, y);
            }
            i += 16;
        }
        while i + 4 <= n {
            acc[0] = vfmaq_f32(acc[0], vld1q_f32(w.add(i)), vld1q_f32(a.add(i)));
            i += 4;
        }
        let acc = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        let mut sum = vaddvq_f32(acc);
        while i < n {
            sum += w.add(i).read_unaligned() * a.add(i).read_unaligned();
            i += 1;
        }
        sum
    }
}
