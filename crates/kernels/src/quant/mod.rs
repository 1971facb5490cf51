//! Quantized block formats. Each format lives in its own file with its block layout, a scalar
//! reference and SIMD variants; `FORMATS` is the table the rest of the program looks them up in.
//!
//! A weight row of `n` elements is `n / block_size` consecutive blocks. A matrix-vector product
//! dots each weight row against the activation row quantized once into the format's
//! `act_type()` (as ggml pairs them: Q4_0/Q5_0/Q8_0 with Q8_0, Q4_1/Q5_1 with Q8_1, k-quants
//! with Q8_K, F16 with F16, BF16 with BF16, F32 with F32; IQ4_NL and MXFP4 with Q8_0, IQ4_XS
//! with Q8_K).
//!
//! Block layouts are bit-exact with ggml's (`#[repr(C)]`, little-endian). Every block struct of
//! this module has alignment 1 (f16 scales are stored as `[u8; 2]` and converted with the `half`
//! crate), so any byte slice can be viewed as a slice of blocks without copying; see [`blocks`].

use ggml_type::GgmlType;

/// Implements `vec_dot_scalar`, `vec_dot_variants` and `vec_dot` inside an `impl QuantFormat`
/// from a scalar kernel, on x86-64 an AVX2 kernel and, on little-endian AArch64, optionally a
/// NEON kernel (`neon: path`) and a NEON kernel using SDOT (`dotprod: path`), as defined by
/// `neon_vec_dot!`. All are safe `VecDotFn`s; each SIMD one must itself fall back to scalar
/// when [`crate::simd::detected`] lacks what it needs (so that handing out its pointer is always
/// sound). `quantize: $scalar_q, $avx2_q` (and optionally `neon: $neon_q`) likewise adds
/// `quantize_variants` and `quantize_row_fast`.
macro_rules! simd_dispatch {
    (vec_dot: $scalar:path, $avx2:path $(, neon: $neon:path)? $(, dotprod: $dotprod:path)?) => {
        fn vec_dot_scalar(&self) -> $crate::quant::VecDotFn {
            $scalar
        }
        fn vec_dot_variants(&self) -> Vec<(&'static str, $crate::quant::VecDotFn)> {
            #[allow(unused_mut)]
            let mut v: Vec<(&'static str, $crate::quant::VecDotFn)> = vec![("scalar", $scalar)];
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::detected().avx2 {
                v.push(("avx2", $avx2));
            }
            #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
            {
                $(if $crate::simd::detected().neon {
                    v.push(("neon", $neon));
                })?
                $(if $crate::simd::detected().dotprod {
                    v.push(("neon-dotprod", $dotprod));
                })?
            }
            v
        }
        fn vec_dot(&self) -> $crate::quant::VecDotFn {
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::features().avx2 {
                return $avx2;
            }
            #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
            {
                $(if $crate::simd::features().dotprod {
                    return $dotprod;
                })?
                $(if $crate::simd::features().neon {
                    return $neon;
                })?
            }
            $scalar
        }
    };
    (quantize: $scalar:path, $avx2:path $(, neon: $neon:path)?) => {
        fn quantize_variants(&self) -> Vec<(&'static str, $crate::quant::QuantizeFn)> {
            #[allow(unused_mut)]
            let mut v: Vec<(&'static str, $crate::quant::QuantizeFn)> = Vec::new();
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::detected().avx2 {
                v.push(("avx2", $avx2));
            }
            #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
            {
                $(if $crate::simd::detected().neon {
                    v.push(("neon", $neon));
                })?
            }
            v
        }
        fn quantize_row_fast(&self, src: &[f32], dst: &mut [u8]) {
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::features().avx2 {
                return $avx2(src, dst);
            }
            #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
            {
                $(if $crate::simd::features().neon {
                    return $neon(src, dst);
                })?
            }
            $scalar(src, dst)
        }
    };
}

/// On little-endian AArch64, defines the safe `VecDotFn`s `vec_dot_neon` and
/// `vec_dot_neon_dotprod` (for `simd_dispatch!`) from one kernel body generic over
/// `simd::neon::I8Dot`: `$kernel::<D>(n, w, a)`, an `#[inline(always)] unsafe fn`
/// that is compiled once with plain NEON and once with SDOT enabled. Each wrapper falls back to
/// `$scalar` where the CPU lacks what it needs. `float: $scalar, $kernel` defines only
/// `vec_dot_neon`, around a kernel that is not generic.
macro_rules! neon_vec_dot {
    (float: $scalar:path, $($kernel:ident)::+) => {
        #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
        fn vec_dot_neon(n: usize, w: &[u8], a: &[u8]) -> f32 {
            #[target_feature(enable = "neon")]
            unsafe fn kernel(n: usize, w: &[u8], a: &[u8]) -> f32 {
                $($kernel)::+(n, w, a)
            }
            if !$crate::simd::detected().neon {
                return $scalar(n, w, a);
            }
            // SAFETY: the CPU has NEON.
            unsafe { kernel(n, w, a) }
        }
    };
    ($scalar:path, $($kernel:ident)::+) => {
        #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
        fn vec_dot_neon(n: usize, w: &[u8], a: &[u8]) -> f32 {
            #[target_feature(enable = "neon")]
            unsafe fn kernel(n: usize, w: &[u8], a: &[u8]) -> f32 {
                $($kernel)::+::<$crate::simd::neon::Widening>(n, w, a)
            }
            if !$crate::simd::detected().neon {
                return $scalar(n, w, a);
            }
            // SAFETY: the CPU has NEON.
            unsafe { kernel(n, w, a) }
        }

        #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
        fn vec_dot_neon_dotprod(n: usize, w: &[u8], a: &[u8]) -> f32 {
            #[target_feature(enable = "neon,dotprod")]
            unsafe fn kernel(n: usize, w: &[u8], a: &[u8]) -> f32 {
                $($kernel)::+::<$crate::simd::neon::DotProd>(n, w, a)
            }
            if !$crate::simd::detected().dotprod {
                return $scalar(n, w, a);
            }
            // SAFETY: the CPU has NEON and the dot product instructions.
            unsafe { kernel(n, w, a) }
        }
    };
}

pub mod bf16;
pub mod f16;
pub mod f32;
pub mod q4_0;
pub mod q4_1;
pub mod q5_0;
pub mod q5_1;
pub mod q8_0;
pub mod q8_1;

pub mod q2_k;
pub mod q3_k;
pub mod q4_k;
pub mod q5_k;
pub mod q6_k;
pub mod q8_k;

pub mod iq4_nl;
pub mod iq4_xs;
pub mod mxfp4;

/// Dot product of `n` elements: a weight row in one format against an activation row in that
/// format's `act_type()`. Both slices hold exactly `n / block_size` blocks.
pub type VecDotFn = fn(n: usize, w: &[u8], act: &[u8]) -> f32;

/// Quantizes `src.len()` elements (a multiple of the block size) into `dst`.
pub type QuantizeFn = fn(src: &[f32], dst: &mut [u8]);

pub trait QuantFormat: Sync {
    fn ty(&self) -> GgmlType;
    /// The format activations are quantized into before they are dotted against this one.
    fn act_type(&self) -> GgmlType;
    /// `dst.len()` elements from `src`, which holds exactly `dst.len() / block_size` blocks.
    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]);
    /// Reference quantizer: `src.len()` (a multiple of the block size) elements into `dst`.
    fn quantize_row(&self, src: &[f32], dst: &mut [u8]);
    /// The scalar reference dot product, which SIMD variants are tested against.
    fn vec_dot_scalar(&self) -> VecDotFn;
    /// Every variant of the dot product this CPU can run, named, scalar included (for tests and
    /// benchmarks).
    fn vec_dot_variants(&self) -> Vec<(&'static str, VecDotFn)>;
    /// The fastest dot product this CPU can run (chosen once at run time).
    fn vec_dot(&self) -> VecDotFn;
    /// SIMD variants of `quantize_row` this CPU can run, named, scalar excluded. Each must write
    /// exactly the same bytes as `quantize_row` (tests check it). Formats used for activations
    /// (on the hot path) provide them.
    fn quantize_variants(&self) -> Vec<(&'static str, QuantizeFn)> {
        Vec::new()
    }
    /// The fastest quantizer this CPU can run: same bytes as `quantize_row`, used to quantize
    /// activations.
    fn quantize_row_fast(&self, src: &[f32], dst: &mut [u8]) {
        self.quantize_row(src, dst)
    }
}

/// Every format with kernels, one line each.
pub static FORMATS: &[&dyn QuantFormat] = &[
    &f32::F32,
    &f16::F16,
    &bf16::BF16,
    &q8_0::Q8_0,
    &q8_1::Q8_1,
    &q4_0::Q4_0,
    &q4_1::Q4_1,
    &q5_0::Q5_0,
    &q5_1::Q5_1,
    &q2_k::Q2K,
    &q3_k::Q3K,
    &q4_k::Q4K,
    &q5_k::Q5K,
    &q6_k::Q6K,
    &q8_k::Q8K,
    &iq4_nl::Iq4Nl,
    &iq4_xs::Iq4Xs,
    &mxfp4::Mxfp4,
];

/// The kernels of `ty`, or `None` when no format in [`FORMATS`] handles it.
pub fn format(ty: GgmlType) -> Option<&'static dyn QuantFormat> {
    FORMATS.iter().copied().find(|f| f.ty() == ty)
}

/// A block layout that may be viewed in place from bytes.
///
/// # Safety
/// Implementors must be `#[repr(C)]` structs of byte arrays (or integers of one byte) only: size
/// equal to the format's block bytes, alignment 1, no padding, and every bit pattern valid.
pub unsafe trait Block: Copy + 'static {}

/// Views `bytes` as blocks. Trailing bytes that do not fill a whole block are ignored (callers
/// pass whole rows, which are whole numbers of blocks).
#[inline(always)]
pub fn blocks<B: Block>(bytes: &[u8]) -> &[B] {
    const { assert!(std::mem::align_of::<B>() == 1 && std::mem::size_of::<B>() > 0) };
    let n = bytes.len() / std::mem::size_of::<B>();
    // SAFETY: `B: Block` is plain old data with alignment 1, and `n` whole blocks fit in `bytes`.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), n) }
}

/// Views `bytes` as mutable blocks; see [`blocks`].
#[inline(always)]
pub fn blocks_mut<B: Block>(bytes: &mut [u8]) -> &mut [B] {
    const { assert!(std::mem::align_of::<B>() == 1 && std::mem::size_of::<B>() > 0) };
    let n = bytes.len() / std::mem::size_of::<B>();
    // SAFETY: as in `blocks`; the borrow is unique.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), n) }
}

/// f16 bits (little-endian) to f32.
#[inline(always)]
pub fn f16_to_f32(b: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(b).to_f32()
}

/// f32 to f16 bits (little-endian), rounding to nearest even as ggml does.
#[inline(always)]
pub fn f32_to_f16(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// Round half away from zero, as C's `roundf`.
#[inline(always)]
pub(crate) fn roundf(x: f32) -> f32 {
    x.round()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, f) in FORMATS.iter().enumerate() {
            assert!(
                format(f.act_type()).is_some(),
                "{}: act type has no format",
                f.ty()
            );
            for g in &FORMATS[..i] {
                assert_ne!(f.ty(), g.ty(), "listed twice");
            }
            assert_eq!(format(f.ty()).map(|g| g.ty()), Some(f.ty()));
        }
    }
}
