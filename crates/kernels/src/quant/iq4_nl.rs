//! IQ4_NL: blocks of 32 four-bit indices into a fixed table of 16 non-linear levels
//! ([`KVALUES_IQ4NL`]) with one f16 scale: `x = d * KVALUES_IQ4NL[q]`. Dotted against Q8_0
//! activations, as in ggml. Element `j < 16` is the low nibble of `qs[j]`, element `j + 16` its
//! high nibble.
//!
//! The quantizer writes the bytes ggml's `quantize_iq4_nl` writes without an importance matrix
//! (what `ggml_quantize_chunk` and so `llama-quantize` produce): per block, a weighted least
//! squares fit over 15 candidate scales. (ggml's `quantize_row_iq4_nl_ref` skips that search;
//! model files do not come from it.)
//!
//! This file also holds what IQ4_XS and MXFP4 share with it: the block fit (`fit_block`) for
//! IQ4_XS, and, for MXFP4, whose blocks are also 32 nibbles indexing a table of 16 signed bytes,
//! the dot product kernels against Q8_0 (generic over `Lut4Block`).

use super::q8_0::BlockQ8_0;
use super::{blocks, blocks_mut, f16_to_f32, f32_to_f16, Block, QuantFormat};
use ggml_type::GgmlType;

pub const QK4_NL: usize = 32;

/// The 16 levels of IQ4_NL and IQ4_XS (ggml's `kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockIq4Nl {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Indices into [`KVALUES_IQ4NL`], two per byte.
    pub qs: [u8; QK4_NL / 2],
}
const _: () = assert!(std::mem::size_of::<BlockIq4Nl>() == 18);
// SAFETY: byte arrays only: alignment 1, no padding, any bits valid.
unsafe impl Block for BlockIq4Nl {}

/// A block of 32 four-bit indices into a table of 16 signed bytes, with one scale (IQ4_NL,
/// MXFP4): what the shared dot product kernels need to know of it.
pub(crate) trait Lut4Block: Block {
    /// The table the nibbles index.
    const VALUES: [i8; 16];
    /// The 16 bytes of nibbles (element `j < 16` low nibble of byte `j`, `j + 16` high nibble).
    fn qs(&self) -> &[u8; 16];
    /// The block's scale as f32 (exact).
    fn scale(&self) -> f32;
    /// [`Self::scale`] for the AVX2 kernel, which may convert with F16C.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn scale_avx2(&self) -> f32 {
        self.scale()
    }
    /// [`Self::scale`] for the NEON kernels, which may convert with FCVT.
    ///
    /// # Safety
    /// The CPU must have NEON.
    #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
    #[inline(always)]
    unsafe fn scale_neon(&self) -> f32 {
        self.scale()
    }
}

impl Lut4Block for BlockIq4Nl {
    const VALUES: [i8; 16] = KVALUES_IQ4NL;
    #[inline(always)]
    fn qs(&self) -> &[u8; 16] {
        &self.qs
    }
    #[inline(always)]
    fn scale(&self) -> f32 {
        f16_to_f32(self.d)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scale_avx2(&self) -> f32 {
        // One instruction, where `half` may take a slower path; the same exact value.
        crate::simd::x86::f16_to_f32(self.d)
    }
    #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
    #[inline(always)]
    unsafe fn scale_neon(&self) -> f32 {
        crate::simd::neon::f16_to_f32(self.d)
    }
}

/// Blocks below this magnitude quantize to zero (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// Candidate scales tried on each side of the first guess (ggml's `ntry` for IQ4_NL and IQ4_XS
/// without an importance matrix).
const NTRY: i32 = 7;

/// The index of the level nearest to `x` (ggml's `best_index_int8` over [`KVALUES_IQ4NL`]):
/// a binary search, ties to the upper level; NaN gives the last index.
#[inline(always)]
pub(crate) fn best_index(x: f32) -> u8 {
    let v = |i: usize| f32::from(KVALUES_IQ4NL[i]);
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < v(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - v(mu - 1) < v(mu) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// ggml's per-block scale fit (`quantize_row_iq4_nl_impl` without importance weights, whose
/// weights are then `x²`): the scale `d` minimising `Σ x² (x - d·level)²` over the levels nearest
/// to `x / d`, searched over 15 first guesses. 0 for a block of magnitude below
/// [`GROUP_MAX_EPS`]. Operation order follows ggml, so the result matches it bit for bit.
pub(crate) fn fit_block(xb: &[f32; 32]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in xb {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let values0 = f32::from(KVALUES_IQ4NL[0]);
    // The weighted sums of the levels chosen at inverse scale `id`.
    let sums = |id: f32| {
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for &x in xb {
            let q = f32::from(KVALUES_IQ4NL[best_index(id * x) as usize]);
            let w = x * x;
            sumqx += w * q * x;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let d = -max / values0;
    let (sumqx, sumq2) = sums(1.0 / d);
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let (sumqx, sumq2) = sums((itry + i32::from(KVALUES_IQ4NL[0])) as f32 / max);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// Packs 32 indices as ggml does: element `j` in the low nibble of byte `j`, `j + 16` in the high.
#[inline(always)]
pub(crate) fn pack_nibbles(l: &[u8; 32], qs: &mut [u8; 16]) {
    for (j, q) in qs.iter_mut().enumerate() {
        *q = l[j] | (l[j + 16] << 4);
    }
}

/// Quantizes one block (ggml's `quantize_iq4_nl` on one block, without importance weights).
pub fn quantize_block(x: &[f32; 32]) -> BlockIq4Nl {
    let d = fit_block(x);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let l: [u8; 32] = std::array::from_fn(|j| best_index(id * x[j]));
    let mut b = BlockIq4Nl {
        d: f32_to_f16(d),
        qs: [0; 16],
    };
    pack_nibbles(&l, &mut b.qs);
    b
}

pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    let (xs, _) = src.as_chunks::<QK4_NL>();
    for (x, b) in xs.iter().zip(blocks_mut::<BlockIq4Nl>(dst)) {
        *b = quantize_block(x);
    }
}

pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockIq4Nl>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK4_NL))
    {
        let d = f16_to_f32(b.d);
        let (lo, hi) = y.split_at_mut(QK4_NL / 2);
        for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b.qs) {
            *l = d * f32::from(KVALUES_IQ4NL[(q & 0x0F) as usize]);
            *h = d * f32::from(KVALUES_IQ4NL[(q >> 4) as usize]);
        }
    }
}

/// The IQ4_NL format.
pub struct Iq4Nl;

impl QuantFormat for Iq4Nl {
    fn ty(&self) -> GgmlType {
        GgmlType::IQ4_NL
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

// ---------------------------------------------------------------------------------------------
// Dot products of table-indexed blocks against Q8_0, shared with MXFP4.
// ---------------------------------------------------------------------------------------------

/// The scalar reference: per block, the exact integer sum of `VALUES[q] * a` times
/// `scale(w) * d(a)`.
pub(crate) fn lut4_dot_scalar<B: Lut4Block>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<B>(w), blocks::<BlockQ8_0>(a));
    debug_assert!(w.len() * 32 >= n && a.len() * 32 >= n);
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a).take(n / 32) {
        let (lo, hi) = y.qs.split_at(16);
        let mut s = 0i32;
        for ((&q, &l), &h) in x.qs().iter().zip(lo).zip(hi) {
            s += i32::from(B::VALUES[(q & 0x0F) as usize]) * i32::from(l)
                + i32::from(B::VALUES[(q >> 4) as usize]) * i32::from(h);
        }
        sum += s as f32 * (x.scale() * f16_to_f32(y.d));
    }
    sum
}

/// The AVX2 kernel; falls back to scalar where the CPU lacks AVX2.
#[cfg(target_arch = "x86_64")]
pub(crate) fn lut4_dot_avx2<B: Lut4Block>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    if !crate::simd::detected().avx2 {
        return lut4_dot_scalar::<B>(n, w, a);
    }
    // SAFETY: the CPU has AVX2/FMA/F16C.
    unsafe { avx2::vec_dot::<B>(n, blocks(w), blocks(a)) }
}

fn vec_dot_scalar(n: usize, w: &[u8], a: &[u8]) -> f32 {
    lut4_dot_scalar::<BlockIq4Nl>(n, w, a)
}

#[cfg(target_arch = "x86_64")]
fn vec_dot_avx2(n: usize, w: &[u8], a: &[u8]) -> f32 {
    lut4_dot_avx2::<BlockIq4Nl>(n, w, a)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BlockQ8_0, Lut4Block};
    use crate::simd::x86::{dot_blocks, dot_i8_i8, f16_to_f32, nibbles, BlockPair};
    use std::arch::x86_64::*;
    use std::marker::PhantomData;

    /// # Safety
    /// AVX2/FMA/F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot<B: Lut4Block>(n: usize, w: &[B], a: &[BlockQ8_0]) -> f32 {
        dot_blocks::<Pair<B>>(w, a, n / 32)
    }

    struct Pair<B>(PhantomData<B>);

    impl<B: Lut4Block> BlockPair for Pair<B> {
        type W = B;
        type A = BlockQ8_0;
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn products(x: &B, y: &BlockQ8_0) -> (__m256, f32, f32) {
            // The table in both 128-bit lanes; each nibble picks its level (PSHUFB reads the low
            // four bits of each index byte, and the indices are below 16).
            let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(B::VALUES.as_ptr().cast()));
            let qx = _mm256_shuffle_epi8(table, nibbles(x.qs()));
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            // |levels| <= 127 and |activations| <= 127: pairs of products fit in i16.
            let p = _mm256_cvtepi32_ps(dot_i8_i8(qx, qy));
            (p, x.scale_avx2() * f16_to_f32(y.d), 0.0)
        }
    }
}

neon_vec_dot!(vec_dot_scalar, neon::vec_dot);

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
pub(crate) mod neon {
    use super::{blocks, BlockIq4Nl, BlockQ8_0, Lut4Block};
    use crate::simd::neon::{dot_blocks, f16_to_f32, load_i8x16, nibbles, BlockPair, I8Dot};
    use std::arch::aarch64::*;
    use std::marker::PhantomData;

    /// # Safety
    /// NEON available, and SDOT where `D` uses it.
    #[inline(always)]
    pub unsafe fn lut4_dot<B: Lut4Block, D: I8Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        dot_blocks::<Pair<B>, D>(blocks(w), blocks(a), n / 32)
    }

    /// # Safety
    /// As [`lut4_dot`].
    #[inline(always)]
    pub unsafe fn vec_dot<D: I8Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        lut4_dot::<BlockIq4Nl, D>(n, w, a)
    }

    struct Pair<B>(PhantomData<B>);

    impl<B: Lut4Block> BlockPair for Pair<B> {
        type W = B;
        type A = BlockQ8_0;
        const EXTRA: bool = false;
        #[inline(always)]
        unsafe fn products<D: I8Dot>(x: &B, y: &BlockQ8_0) -> int32x4_t {
            let table = vld1q_s8(B::VALUES.as_ptr());
            let (lo, hi) = nibbles(x.qs());
            let py = y.qs.as_ptr();
            let s = D::dot(vdupq_n_s32(0), vqtbl1q_s8(table, lo), load_i8x16(py));
            D::dot(s, vqtbl1q_s8(table, hi), load_i8x16(py.add(16)))
        }
        #[inline(always)]
        unsafe fn factors(x: &B, y: &BlockQ8_0) -> (f32, f32) {
            (x.scale_neon() * f16_to_f32(y.d), 0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_index_is_nearest_level() {
        for i in -1300..=1300 {
            let x = i as f32 * 0.1;
            let got = best_index(x) as usize;
            let dist = |k: usize| (x - f32::from(KVALUES_IQ4NL[k])).abs();
            for k in 0..16 {
                assert!(dist(got) <= dist(k), "x={x}: {got} vs {k}");
            }
        }
        // Ties go up; NaN to the last level (as ggml's comparisons fall).
        assert_eq!(best_index(-4.5), 8);
        assert_eq!(best_index(f32::NAN), 15);
    }

    #[test]
    fn zero_block_is_zero_scale() {
        let b = quantize_block(&[0.0; 32]);
        assert_eq!(f16_to_f32(b.d), 0.0);
        // Every index is that of the level nearest zero.
        assert!(b.qs.iter().all(|&q| q == 0x88));
    }
}
