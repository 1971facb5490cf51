//! F16: IEEE half floats, little-endian (a "block" of one element). Dotted against F16
//! activations, as ggml does.

use super::{blocks, blocks_mut, f16_to_f32, f32_to_f16, Block, QuantFormat};
use ggml_type::GgmlType;

/// One f16, little-endian.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockF16 {
    pub v: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockF16>() == 2);
// SAFETY: a byte array: alignment 1, no padding, any bits valid.
unsafe impl Block for BlockF16 {}

pub struct F16;

impl QuantFormat for F16 {
    fn ty(&self) -> GgmlType {
        GgmlType::F16
    }
    fn act_type(&self) -> GgmlType {
        GgmlType::F16
    }
    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (b, y) in blocks::<BlockF16>(src).iter().zip(dst) {
            *y = f16_to_f32(b.v);
        }
    }
    fn quantize_row(&self, src: &[f32], dst: &mut [u8]) {
        quantize_scalar(src, dst)
    }
    simd_dispatch!(vec_dot: vec_dot_scalar, vec_dot_avx2, neon: vec_dot_neon);
    simd_dispatch!(quantize: quantize_scalar, quantize_avx2, neon: quantize_neon);
}

/// Round to nearest even, as ggml.
fn quantize_scalar(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.iter().zip(blocks_mut::<BlockF16>(dst)) {
        b.v = f32_to_f16(*x);
    }
}

/// As ggml: each product (exact in f32) summed in f64.
fn vec_dot_scalar(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 2 * n && a.len() >= 2 * n);
    let (w, a) = (blocks::<BlockF16>(w), blocks::<BlockF16>(a));
    let mut sum = 0f64;
    for (x, y) in w.iter().zip(a).take(n) {
        sum += (f16_to_f32(x.v) * f16_to_f32(y.v)) as f64;
    }
    sum as f32
}

#[cfg(target_arch = "x86_64")]
fn vec_dot_avx2(n: usize, w: &[u8], a: &[u8]) -> f32 {
    if !crate::simd::detected().avx2 {
        return vec_dot_scalar(n, w, a);
    }
    let n = n.min(w.len() / 2).min(a.len() / 2);
    // SAFETY: the CPU has AVX2/FMA/F16C, and both slices hold at least `n` halves.
    unsafe { avx2::vec_dot(n, w.as_ptr(), a.as_ptr()) }
}

#[cfg(target_arch = "x86_64")]
fn quantize_avx2(src: &[f32], dst: &mut [u8]) {
    if !crate::simd::detected().avx2 {
        return quantize_scalar(src, dst);
    }
    let n = src.len().min(dst.len() / 2);
    // SAFETY: the CPU has AVX2/FMA/F16C; `src` holds `n` floats and `dst` `2 * n` bytes.
    unsafe { avx2::quantize(n, src.as_ptr(), dst.as_mut_ptr()) }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::simd::x86::{hsum_ps, load_f16x8};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2/FMA/F16C available; `w` and `a` readable for `2 * n` bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(n: usize, w: *const u8, a: *const u8) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                let x = load_f16x8(w.add(2 * (i + 8 * k)));
                let y = load_f16x8(a.add(2 * (i + 8 * k)));
                *acc = _mm256_fmadd_ps(x, y, *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(load_f16x8(w.add(2 * i)), load_f16x8(a.add(2 * i)), acc[0]);
            i += 8;
        }
        let acc = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut sum = hsum_ps(acc);
        while i < n {
            let x = super::f16_to_f32([*w.add(2 * i), *w.add(2 * i + 1)]);
            let y = super::f16_to_f32([*a.add(2 * i), *a.add(2 * i + 1)]);
            sum += x * y;
            i += 1;
        }
        sum
    }

    /// # Safety
    /// AVX2/FMA/F16C available; `src` readable for `n` floats, `dst` writable for `2 * n` bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize(n: usize, src: *const f32, dst: *mut u8) {
        let mut i = 0;
        while i + 8 <= n {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.add(i)));
            _mm_storeu_si128(dst.add(2 * i).cast(), h);
            i += 8;
        }
        while i < n {
            let b = super::f32_to_f16(*src.add(i));
            *dst.add(2 * i) = b[0];
            *dst.add(2 * i + 1) = b[1];
            i += 1;
        }
    }
}

neon_vec_dot!(float: vec_dot_scalar, neon::vec_dot);

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
fn quantize_neon(src: &[f32], dst: &mut [u8]) {
    if !crate::simd::detected().neon {
        return quantize_scalar(src, dst);
    }
    // SAFETY: the CPU has NEON.
    unsafe { neon::quantize(src, dst) }
}

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
mod neon {
    use crate::simd::neon::{f32x8_to_f16, load_f16x8};
    use std::arch::aarch64::*;

    /// As the AVX2 kernel: products (exact in f32) summed in f32 with fused multiply-adds.
    ///
    /// # Safety
    /// NEON available.
    #[inline(always)]
    pub unsafe fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let n = n.min(w.len() / 2).min(a.len() / 2);
        let (w, a) = (w.as_ptr(), a.as_ptr());
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i + 16 <= n {
            for k in 0..2 {
                let (x0, x1) = load_f16x8(w.add(2 * (i + 8 * k)));
                let (y0, y1) = load_f16x8(a.add(2 * (i + 8 * k)));
                acc[2 * k] = vfmaq_f32(acc[2 * k], x0, y0);
                acc[2 * k + 1] = vfmaq_f32(acc[2 * k + 1], x1, y1);
            }
            i += 16;
        }
        while i + 8 <= n {
            let (x0, x1) = load_f16x8(w.add(2 * i));
            let (y0, y1) = load_f16x8(a.add(2 * i));
            acc[0] = vfmaq_f32(acc[0], x0, y0);
            acc[1] = vfmaq_f32(acc[1], x1, y1);
            i += 8;
        }
        let acc = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        let mut sum = vaddvq_f32(acc);
        while i < n {
            let x = super::f16_to_f32([*w.add(2 * i), *w.add(2 * i + 1)]);
            let y = super::f16_to_f32([*a.add(2 * i), *a.add(2 * i + 1)]);
            sum += x * y;
            i += 1;
        }
        sum
    }

    /// Same bytes as the scalar reference.
    ///
    /// # Safety
    /// NEON available.
    pub unsafe fn quantize(src: &[f32], dst: &mut [u8]) {
        let n = src.len().min(dst.len() / 2);
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        while i + 8 <= n {
            let h = f32x8_to_f16(vld1q_f32(s.add(i)), vld1q_f32(s.add(i + 4)));
            vst1q_u16(d.add(2 * i).cast(), h);
            i += 8;
        }
        while i < n {
            let b = super::f32_to_f16(*s.add(i));
            *d.add(2 * i) = b[0];
            *d.add(2 * i + 1) = b[1];
            i += 1;
        }
    }
}
