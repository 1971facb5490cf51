//! MXFP4 (OCP microscaling FP4, as gpt-oss ships its expert weights): blocks of 32 E2M1
//! values (four bits: sign, two exponent bits, one mantissa bit) sharing one E8M0 scale (a bare
//! power of two). Stored as ggml does: the E2M1 codes index a table of the doubled values
//! ([`KVALUES_MXFP4`]) and the scale is applied halved, `x = 2^(e - 128) * KVALUES_MXFP4[q]`.
//! Element `j < 16` is the low nibble of `qs[j]`, element `j + 16` its high nibble. Dotted
//! against Q8_0 activations, as in ggml (with IQ4_NL's kernels: see [`super::iq4_nl`]).
//!
//! The quantizer matches ggml's `quantize_row_mxfp4_ref` (which `ggml_quantize_chunk` uses):
//! `e = floor(log2(max |x|)) - 2 + 127`, then each value to its nearest level.

use super::iq4_nl::{lut4_dot_scalar, Lut4Block};
use super::{blocks, blocks_mut, Block, QuantFormat};
use ggml_type::GgmlType;

pub const QK_MXFP4: usize = 32;

/// E2M1 values doubled (so that they are integers): codes 0..8 are +0, 0.5, 1, 1.5, 2, 3, 4, 6,
/// codes 8..16 the same negated.
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockMxfp4 {
    /// E8M0 scale: the block's values are multiplied by 2^(e - 127).
    pub e: u8,
    /// E2M1 codes, two per byte.
    pub qs: [u8; QK_MXFP4 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockMxfp4>() == 17);
// SAFETY: bytes only: alignment 1, no padding, any bits valid.
unsafe impl Block for BlockMxfp4 {}

impl Lut4Block for BlockMxfp4 {
    const VALUES: [i8; 16] = KVALUES_MXFP4;
    #[inline(always)]
    fn qs(&self) -> &[u8; 16] {
        &self.qs
    }
    #[inline(always)]
    fn scale(&self) -> f32 {
        e8m0_half(self.e)
    }
}

/// Half the E8M0 scale `e`, `2^(e - 128)`, exactly (subnormal for `e < 2`). E8M0's NaN (255) is
/// read as 2^127, as ggml reads it.
#[inline(always)]
pub fn e8m0_half(e: u8) -> f32 {
    if e < 2 {
        f32::from_bits(0x0020_0000 << e)
    } else {
        f32::from_bits(u32::from(e - 1) << 23)
    }
}

/// `log2f` correctly rounded (through f64, whose log2 is accurate far beyond the f32 rounding;
/// this matches glibc's `log2f`, which ggml calls, including just below powers of two, where
/// the f32 result rounds up to the integer).
#[inline(always)]
fn log2f(x: f32) -> f32 {
    (f64::from(x)).log2() as f32
}

/// C's conversion of a float to `uint8_t` as compiled for x86-64 (truncate to i32, keep the low
/// byte); out-of-range values, which C leaves undefined, give what CVTTSS2SI gives (0x80000000).
#[inline(always)]
fn c_f32_to_u8(v: f32) -> u8 {
    if !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        // NaN too.
        0
    } else {
        v as i32 as u8
    }
}

/// ggml's `best_index_mxfp4`: the first code whose level times `d` is nearest to `x`.
#[inline(always)]
fn best_index(x: f32, d: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (f32::from(KVALUES_MXFP4[0]) * d - x).abs();
    for (i, &v) in KVALUES_MXFP4.iter().enumerate().skip(1) {
        let err = (f32::from(v) * d - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

/// Quantizes one block (ggml's `quantize_row_mxfp4_ref`).
pub fn quantize_block(x: &[f32]) -> BlockMxfp4 {
    let mut amax = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
        }
    }
    let e = if amax > 0.0 {
        c_f32_to_u8(log2f(amax).floor() - 2.0 + 127.0)
    } else {
        0
    };
    let d = e8m0_half(e);
    let mut b = BlockMxfp4 { e, qs: [0; 16] };
    let (lo, hi) = x.split_at(QK_MXFP4 / 2);
    for ((q, &l), &h) in b.qs.iter_mut().zip(lo).zip(hi) {
        *q = best_index(l, d) | (best_index(h, d) << 4);
    }
    b
}

pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK_MXFP4)
        .zip(blocks_mut::<BlockMxfp4>(dst))
    {
        *b = quantize_block(x);
    }
}

pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockMxfp4>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_MXFP4))
    {
        let d = e8m0_half(b.e);
        let (lo, hi) = y.split_at_mut(QK_MXFP4 / 2);
        for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b.qs) {
            *l = f32::from(KVALUES_MXFP4[(q & 0x0F) as usize]) * d;
            *h = f32::from(KVALUES_MXFP4[(q >> 4) as usize]) * d;
        }
    }
}

/// The MXFP4 format.
pub struct Mxfp4;

impl QuantFormat for Mxfp4 {
    fn ty(&self) -> GgmlType {
        GgmlType::MXFP4
    }
    fn act_type(&self) -> GgmlType {
        GgmlType::Q8_0
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

fn vec_dot_scalar(n: usize, w: &[u8], a: &[u8]) -> f32 {
    lut4_dot_scalar::<BlockMxfp4>(n, w, a)
}

#[cfg(target_arch = "x86_64")]
fn vec_dot_avx2(n: usize, w: &[u8], a: &[u8]) -> f32 {
    super::iq4_nl::lut4_dot_avx2::<BlockMxfp4>(n, w, a)
}

neon_vec_dot!(vec_dot_scalar, neon::vec_dot);

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
mod neon {
    use super::BlockMxfp4;
    use crate::quant::iq4_nl::neon::lut4_dot;
    use crate::simd::neon::I8Dot;

    /// # Safety
    /// NEON available, and SDOT where `D` uses it.
    #[inline(always)]
    pub unsafe fn vec_dot<D: I8Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        lut4_dot::<BlockMxfp4, D>(n, w, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_half_is_a_power_of_two() {
        for e in 0..=255u8 {
            assert_eq!(e8m0_half(e), 2f64.powi(i32::from(e) - 128) as f32, "e={e}");
        }
    }

    #[test]
    fn scale_exponent_as_ggml() {
        // max |x| in [4, 8): e = 127, the largest level (6 * 2^(e - 127)) covers it.
        assert_eq!(quantize_block(&[5.0; 32]).e, 127);
        assert_eq!(quantize_block(&[-4.0; 32]).e, 127);
        assert_eq!(quantize_block(&[0.0; 32]).e, 0);
        // Just below 16, log2f rounds to 4 exactly: ggml takes e = 129, not 128.
        let below = f32::from_bits(16f32.to_bits() - 1);
        assert_eq!(log2f(below), 4.0);
        assert_eq!(quantize_block(&[below; 32]).e, 129);
        // Just below 2 it does not.
        let below = f32::from_bits(2f32.to_bits() - 1);
        assert!(log2f(below) < 1.0);
        assert_eq!(quantize_block(&[below; 32]).e, 125);
    }

    #[test]
    fn exact_values_round_trip() {
        // Every level at scale 2^(127 - 127): the doubled table halved.
        let mut x = [0f32; 32];
        for (i, v) in x.iter_mut().enumerate() {
            *v = f32::from(KVALUES_MXFP4[i % 16]) * 0.5;
        }
        x[7] = 6.0;
        let b = quantize_block(&x);
        let mut bytes = [0u8; 17];
        blocks_mut::<BlockMxfp4>(&mut bytes)[0] = b;
        let mut y = [0f32; 32];
        dequantize_row(&bytes, &mut y);
        assert_eq!(x, y);
    }
}
