//! Q8_K: the activation format every k-quant weight is dotted against. A block holds 256 values
//! as one f32 scale, 256 signed bytes and the sum of each run of 16 bytes (which lets the weight
//! formats fold their minimums and offsets into a few multiplications).
//!
//! Quantizing matches ggml's `quantize_row_q8_K_ref` bit for bit (llama.cpp uses that reference
//! for its own activations), in the scalar, AVX2 and NEON variants alike.
//!
//! This file also holds the few helpers the other k-quant files share.

use ggml_type::GgmlType;

use super::{blocks, blocks_mut, Block, QuantFormat};
use crate::simd;

/// Elements in every k-quant super-block.
pub const QK_K: usize = 256;

/// ggml's `block_q8_K`: f32 `d`, 256 `i8`, 16 `i16` run sums (little-endian; stored as bytes so
/// the block has alignment 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8K {
    /// f32 scale (little-endian): value = d * q.
    pub d: [u8; 4],
    pub qs: [i8; QK_K],
    /// i16 sum of each run of 16 `qs` (little-endian).
    pub bsums: [[u8; 2]; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

// SAFETY: repr(C) of byte arrays only: alignment 1, no padding, any bit pattern valid.
unsafe impl Block for BlockQ8K {}

impl BlockQ8K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }

    #[inline(always)]
    pub fn bsum(&self, j: usize) -> i16 {
        i16::from_le_bytes(self.bsums[j])
    }

    /// All 16 run sums.
    #[inline(always)]
    pub fn bsums(&self) -> [i16; QK_K / 16] {
        std::array::from_fn(|j| self.bsum(j))
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the k-quant files.
// ---------------------------------------------------------------------------------------------

/// The blocks of a dot product: `n / 256` of each, fewer if a slice is short (the callers pass
/// whole rows; the check is theirs).
#[inline(always)]
pub(crate) fn dot_blocks<'a, B: Block>(
    n: usize,
    w: &'a [u8],
    act: &'a [u8],
) -> (&'a [B], &'a [BlockQ8K]) {
    let (w, a) = (blocks::<B>(w), blocks::<BlockQ8K>(act));
    let nb = n / QK_K;
    debug_assert!(nb * QK_K == n && w.len() >= nb && a.len() >= nb);
    (&w[..nb.min(w.len())], &a[..nb.min(a.len())])
}

/// Round to nearest, ties to even, exactly as ggml's `nearest_int` does it (adding 1.5 * 2^23
/// and reading the mantissa bits), including what that yields for NaN and out-of-range input.
#[inline(always)]
pub(crate) fn nearest_int(f: f32) -> i32 {
    let v = f + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// The 256 inputs of block `i` of a row.
#[inline(always)]
pub(crate) fn block_input(src: &[f32], i: usize) -> &[f32; QK_K] {
    let run = &src[i * QK_K..(i + 1) * QK_K];
    // SAFETY: `run` holds exactly QK_K floats.
    unsafe { &*run.as_ptr().cast::<[f32; QK_K]>() }
}

// ---------------------------------------------------------------------------------------------
// Quantize / dequantize.
// ---------------------------------------------------------------------------------------------

/// The reference quantizer (ggml's `quantize_row_q8_K_ref`): the scale takes the sign of the
/// element of largest magnitude (the first one, on ties), which becomes -127.
pub fn quantize_block(x: &[f32; QK_K], y: &mut BlockQ8K) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let av = v.abs();
        if av > amax {
            amax = av;
            max = v;
        }
    }
    if amax == 0.0 {
        // ggml leaves the run sums alone here; zero is what they are.
        *y = BlockQ8K {
            d: [0; 4],
            qs: [0; QK_K],
            bsums: [[0; 2]; QK_K / 16],
        };
        return;
    }
    let iscale = -127.0 / max;
    for (q, &v) in y.qs.iter_mut().zip(x) {
        // Truncating like C's store of an int into an int8_t.
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for j in 0..QK_K / 16 {
        let s: i32 = y.qs[16 * j..16 * j + 16]
            .iter()
            .map(|&q| i32::from(q))
            .sum();
        y.bsums[j] = (s as i16).to_le_bytes();
    }
    y.d = (1.0 / iscale).to_le_bytes();
}

/// Scalar quantization of a row (a multiple of 256 elements) into Q8_K blocks.
pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (i, y) in blocks_mut::<BlockQ8K>(dst)
        .iter_mut()
        .take(src.len() / QK_K)
        .enumerate()
    {
        quantize_block(block_input(src, i), y);
    }
}

/// The AVX2 quantizer: the same bytes as [`quantize_row`].
#[cfg(target_arch = "x86_64")]
fn quantize_row_avx2(src: &[f32], dst: &mut [u8]) {
    if !simd::detected().avx2 {
        return quantize_row(src, dst);
    }
    for (i, y) in blocks_mut::<BlockQ8K>(dst)
        .iter_mut()
        .take(src.len() / QK_K)
        .enumerate()
    {
        // SAFETY: the CPU has AVX2/FMA/F16C.
        unsafe { avx2::quantize_block(block_input(src, i), y) };
    }
}

/// The NEON quantizer: the same bytes as [`quantize_row`].
#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
fn quantize_row_neon(src: &[f32], dst: &mut [u8]) {
    if !simd::detected().neon {
        return quantize_row(src, dst);
    }
    for (i, y) in blocks_mut::<BlockQ8K>(dst)
        .iter_mut()
        .take(src.len() / QK_K)
        .enumerate()
    {
        // SAFETY: the CPU has NEON.
        unsafe { neon::quantize_block(block_input(src, i), y) };
    }
}

pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (x, out) in blocks::<BlockQ8K>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = x.d();
        for (o, &q) in out.iter_mut().zip(&x.qs) {
            *o = d * f32::from(q);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dot product (Q8_K against Q8_K: ggml has none, but it keeps the format table uniform).
// ---------------------------------------------------------------------------------------------

fn vec_dot_scalar(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let (xs, ys) = dot_blocks::<BlockQ8K>(n, w, act);
    let mut sumf = 0.0f32;
    for (x, y) in xs.iter().zip(ys) {
        let sumi: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&a, &b)| i32::from(a) * i32::from(b))
                .sum();
        sumf += block_value(x, y, sumi);
    }
    sumf
}

/// The float epilogue shared by the scalar and NEON kernels, so that they agree bit for bit.
#[inline(always)]
fn block_value(x: &BlockQ8K, y: &BlockQ8K, sumi: i32) -> f32 {
    x.d() * y.d() * sumi as f32
}

#[cfg(target_arch = "x86_64")]
fn vec_dot_avx2(n: usize, w: &[u8], act: &[u8]) -> f32 {
    if !simd::detected().avx2 {
        return vec_dot_scalar(n, w, act);
    }
    let (xs, ys) = dot_blocks::<BlockQ8K>(n, w, act);
    // SAFETY: the CPU has AVX2/FMA/F16C.
    unsafe { avx2::vec_dot(xs, ys) }
}

/// AVX2 pieces shared by the k-quant files.
#[cfg(target_arch = "x86_64")]
pub(crate) mod kx86 {
    use std::arch::x86_64::*;

    use super::BlockQ8K;

    /// The 16 run sums of a Q8_K block as i16 lanes.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn bsums(y: &BlockQ8K) -> __m256i {
        _mm256_loadu_si256(y.bsums.as_ptr().cast())
    }

    /// Two consecutive f16 values (4 bytes at `p`) as f32.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; `p` must point to 4 readable bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn f16x2(p: *const u8) -> (f32, f32) {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(p.cast::<i32>())));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }

    /// One f16 value (2 bytes) as f32.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn f16x1(b: [u8; 2]) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
            u16::from_le_bytes(b),
        ))))
    }

    /// Shuffle masks that spread i16 lane `2k` of a 128-bit half over the low 128 bits and
    /// lane `2k + 1` over the high 128 bits (for a source holding the same 8 lanes twice).
    pub(crate) const PAIR_SPREAD: [[u8; 32]; 4] = {
        let mut m = [[0u8; 32]; 4];
        let mut k = 0;
        while k < 4 {
            let mut i = 0;
            while i < 16 {
                let lo = (4 * k + (i % 2)) as u8;
                m[k][i] = lo;
                m[k][16 + i] = lo + 2;
                i += 1;
            }
            k += 1;
        }
        m
    };

    /// Shuffle masks that spread i16 lane `l` (0..8) of each 128-bit half over all of it.
    pub(crate) const BCAST_I16: [[u8; 32]; 8] = {
        let mut m = [[0u8; 32]; 8];
        let mut l = 0;
        while l < 8 {
            let mut i = 0;
            while i < 32 {
                m[l][i] = (2 * l + (i % 2)) as u8;
                i += 1;
            }
            l += 1;
        }
        m
    };

    /// A shuffle mask as a vector.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn mask(m: &[u8; 32]) -> __m256i {
        _mm256_loadu_si256(m.as_ptr().cast())
    }

    /// Sum of the four lanes.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn hsum_ps128(v: __m128) -> f32 {
        let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// Eight sums of adjacent pairs of the 16 run sums: the sum over each run of 32.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn bsums_32(y: &BlockQ8K) -> __m128i {
        let b = bsums(y);
        _mm_hadd_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ8K, QK_K};
    use crate::simd::x86::hsum_epi32;

    /// Largest of the eight lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hmax_ps(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }

    /// Same bytes as [`super::quantize_block`].
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_block(x: &[f32; QK_K], y: &mut BlockQ8K) {
        let sign = _mm256_set1_ps(-0.0);
        let xp = x.as_ptr();
        // MAXPS returns its second operand when either is NaN: NaN is skipped, as by the
        // scalar `>`.
        let mut acc = _mm256_setzero_ps();
        for j in 0..QK_K / 8 {
            acc = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xp.add(8 * j))), acc);
        }
        let amax = hmax_ps(acc);
        if amax == 0.0 {
            *y = BlockQ8K {
                d: [0; 4],
                qs: [0; QK_K],
                bsums: [[0; 2]; QK_K / 16],
            };
            return;
        }
        // The first element of that magnitude gives the sign.
        let target = _mm256_set1_ps(amax);
        let mut max = amax;
        for j in 0..QK_K / 8 {
            let v = _mm256_andnot_ps(sign, _mm256_loadu_ps(xp.add(8 * j)));
            let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(v, target));
            if hit != 0 {
                max = x[8 * j + hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        if !iscale.is_finite() {
            // Only for magnitudes below ~4e-37: the scalar code's int8 truncation of
            // out-of-range values, which packing would saturate instead.
            return super::quantize_block(x, y);
        }
        let vscale = _mm256_set1_ps(iscale);
        let magic = _mm256_set1_ps(12_582_912.0);
        let mant = _mm256_set1_epi32(0x007f_ffff);
        let bias = _mm256_set1_epi32(0x0040_0000);
        let cap = _mm256_set1_epi32(127);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let qs = y.qs.as_mut_ptr();
        for j in 0..QK_K / 32 {
            let mut q = [_mm256_setzero_si256(); 4];
            for (k, qk) in q.iter_mut().enumerate() {
                let v = _mm256_mul_ps(vscale, _mm256_loadu_ps(xp.add(32 * j + 8 * k)));
                // nearest_int bit for bit: add 1.5 * 2^23 and read the mantissa.
                let bits = _mm256_castps_si256(_mm256_add_ps(v, magic));
                let r = _mm256_sub_epi32(_mm256_and_si256(bits, mant), bias);
                *qk = _mm256_min_epi32(r, cap);
            }
            y.bsums[2 * j] = (hsum_epi32(_mm256_add_epi32(q[0], q[1])) as i16).to_le_bytes();
            y.bsums[2 * j + 1] = (hsum_epi32(_mm256_add_epi32(q[2], q[3])) as i16).to_le_bytes();
            // Packing works within 128-bit lanes; the permutation restores element order.
            let ab = _mm256_packs_epi32(q[0], q[1]);
            let cd = _mm256_packs_epi32(q[2], q[3]);
            let p = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
            _mm256_storeu_si256(qs.add(32 * j).cast(), p);
        }
        y.d = (1.0 / iscale).to_le_bytes();
    }

    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn vec_dot(xs: &[BlockQ8K], ys: &[BlockQ8K]) -> f32 {
        let mut sumf = 0.0f32;
        for (x, y) in xs.iter().zip(ys) {
            let mut acc = _mm256_setzero_si256();
            for j in 0..QK_K / 16 {
                let a = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.qs.as_ptr().add(16 * j).cast()));
                let b = _mm256_cvtepi8_epi16(_mm_loadu_si128(y.qs.as_ptr().add(16 * j).cast()));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
            }
            sumf += x.d() * y.d() * hsum_epi32(acc) as f32;
        }
        sumf
    }
}

neon_vec_dot!(vec_dot_scalar, neon::vec_dot);

/// NEON pieces shared by the k-quant files.
#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
pub(crate) mod kneon {
    use std::arch::aarch64::*;

    use super::BlockQ8K;

    /// The 16 run sums of a Q8_K block as two vectors of eight i16.
    ///
    /// # Safety
    /// NEON must be available.
    #[inline(always)]
    pub(crate) unsafe fn bsums(y: &BlockQ8K) -> (int16x8_t, int16x8_t) {
        let p = y.bsums.as_ptr().cast::<i16>();
        (vld1q_s16(p), vld1q_s16(p.add(8)))
    }

    /// `sum_g c[g] * bsums[g]` over the 16 runs, exactly (i32), for coefficients that fit i16.
    ///
    /// # Safety
    /// NEON must be available.
    #[inline(always)]
    pub(crate) unsafe fn dot_bsums(c: (int16x8_t, int16x8_t), y: &BlockQ8K) -> i32 {
        let (b0, b1) = bsums(y);
        let p = vmull_s16(vget_low_s16(c.0), vget_low_s16(b0));
        let p = vmlal_high_s16(p, c.0, b0);
        let p = vmlal_s16(p, vget_low_s16(c.1), vget_low_s16(b1));
        vaddvq_s32(vmlal_high_s16(p, c.1, b1))
    }

    /// 16 signed bytes widened to four vectors of i32.
    ///
    /// # Safety
    /// NEON must be available.
    #[inline(always)]
    pub(crate) unsafe fn widen_i8x16(v: int8x16_t) -> [int32x4_t; 4] {
        let lo = vmovl_s8(vget_low_s8(v));
        let hi = vmovl_high_s8(v);
        [
            vmovl_s16(vget_low_s16(lo)),
            vmovl_high_s16(lo),
            vmovl_s16(vget_low_s16(hi)),
            vmovl_high_s16(hi),
        ]
    }

    /// `sum_g s[g] * r[g]` for 16 runs given as four vectors of four runs (`r`) and their 16
    /// factors (`s`), exactly (wrapping) in i32.
    ///
    /// # Safety
    /// NEON must be available.
    #[inline(always)]
    pub(crate) unsafe fn scaled_sum16(r: [int32x4_t; 4], s: [int32x4_t; 4]) -> i32 {
        let a = vmlaq_s32(vmulq_s32(r[0], s[0]), r[1], s[1]);
        let b = vmlaq_s32(vmulq_s32(r[2], s[2]), r[3], s[3]);
        vaddvq_s32(vaddq_s32(a, b))
    }
}

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
mod neon {
    use std::arch::aarch64::*;

    use super::{block_value, dot_blocks, BlockQ8K, QK_K};
    use crate::simd::neon::{load_i8x16, I8Dot};

    /// Same bytes as [`super::quantize_block`].
    ///
    /// # Safety
    /// NEON must be available.
    pub(super) unsafe fn quantize_block(x: &[f32; QK_K], y: &mut BlockQ8K) {
        let xp = x.as_ptr();
        // Largest magnitude with the scalar `>`, which skips NaN (of any kind).
        let mut acc = [vdupq_n_f32(0.0); 4];
        for j in 0..QK_K / 16 {
            for (k, acc) in acc.iter_mut().enumerate() {
                let v = vabsq_f32(vld1q_f32(xp.add(16 * j + 4 * k)));
                *acc = vbslq_f32(vcgtq_f32(v, *acc), v, *acc);
            }
        }
        let amax = vmaxvq_f32(vmaxq_f32(
            vmaxq_f32(acc[0], acc[1]),
            vmaxq_f32(acc[2], acc[3]),
        ));
        if amax == 0.0 {
            *y = BlockQ8K {
                d: [0; 4],
                qs: [0; QK_K],
                bsums: [[0; 2]; QK_K / 16],
            };
            return;
        }
        // The first element of that magnitude gives the sign.
        let target = vdupq_n_f32(amax);
        let mut max = amax;
        for j in 0..QK_K / 4 {
            let hit = vceqq_f32(vabsq_f32(vld1q_f32(xp.add(4 * j))), target);
            if vmaxvq_u32(hit) != 0 {
                if let Some(v) = x[4 * j..4 * j + 4].iter().find(|v| v.abs() == amax) {
                    max = *v;
                }
                break;
            }
        }
        let iscale = -127.0 / max;
        let vscale = vdupq_n_f32(iscale);
        let magic = vdupq_n_f32(12_582_912.0);
        let mant = vdupq_n_s32(0x007f_ffff);
        let bias = vdupq_n_s32(0x0040_0000);
        let cap = vdupq_n_s32(127);
        let qs = y.qs.as_mut_ptr();
        for j in 0..QK_K / 16 {
            let mut q = [vdupq_n_s32(0); 4];
            for (k, qk) in q.iter_mut().enumerate() {
                let v = vmulq_f32(vscale, vld1q_f32(xp.add(16 * j + 4 * k)));
                // nearest_int bit for bit: add 1.5 * 2^23 and read the mantissa.
                let bits = vreinterpretq_s32_f32(vaddq_f32(v, magic));
                *qk = vminq_s32(vsubq_s32(vandq_s32(bits, mant), bias), cap);
            }
            // Narrowing keeps the low bits, as C's store of an int into an int8_t; the run sum
            // is taken over the stored bytes, as the scalar code does.
            let w0 = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
            let w1 = vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]));
            let b = vcombine_s8(vmovn_s16(w0), vmovn_s16(w1));
            vst1q_s8(qs.add(16 * j), b);
            y.bsums[j] = vaddlvq_s8(b).to_le_bytes();
        }
        y.d = (1.0 / iscale).to_le_bytes();
    }

    /// The integer dot product of two Q8_K blocks.
    #[inline(always)]
    unsafe fn block_sum<D: I8Dot>(x: &BlockQ8K, y: &BlockQ8K) -> i32 {
        let (px, py) = (x.qs.as_ptr(), y.qs.as_ptr());
        let mut acc = [vdupq_n_s32(0); 2];
        for j in 0..QK_K / 32 {
            for (k, acc) in acc.iter_mut().enumerate() {
                let at = 32 * j + 16 * k;
                *acc = D::dot(*acc, load_i8x16(px.add(at)), load_i8x16(py.add(at)));
            }
        }
        vaddvq_s32(vaddq_s32(acc[0], acc[1]))
    }

    /// # Safety
    /// NEON available, and SDOT where `D` uses it.
    #[inline(always)]
    pub(super) unsafe fn vec_dot<D: I8Dot>(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let (xs, ys) = dot_blocks::<BlockQ8K>(n, w, act);
        let mut sumf = 0.0f32;
        for (x, y) in xs.iter().zip(ys) {
            sumf += block_value(x, y, block_sum::<D>(x, y));
        }
        sumf
    }
}

/// The Q8_K format.
pub struct Q8K;

impl QuantFormat for Q8K {
    fn ty(&self) -> GgmlType {
        GgmlType::Q8_K
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
    simd_dispatch!(quantize: quantize_row, quantize_row_avx2, neon: quantize_row_neon);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32 - 0.5) * 8.0
            })
            .collect()
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(126.7), 127);
    }

    #[test]
    fn quantize_variants_agree() {
        for seed in 0..40 {
            let mut x = row(4 * QK_K, seed);
            match seed % 5 {
                1 => {
                    // Ties on the largest magnitude: the first one decides the sign.
                    x[7] = -9.0;
                    x[100] = 9.0;
                }
                2 => x[256..512].fill(0.0),
                3 => {
                    x[600] = f32::NAN;
                    x[601] = f32::from_bits(0x7fc1_2345);
                    // A signaling NaN after the largest value of its block.
                    x[1023] = f32::from_bits(0x7f80_0001);
                }
                4 => {
                    x[800] = f32::INFINITY;
                    // A block of subnormals: the scale overflows.
                    for (k, v) in x[..256].iter_mut().enumerate() {
                        *v = f32::from_bits(k as u32 * 3 + 1) * if k % 2 == 0 { 1.0 } else { -1.0 };
                    }
                }
                _ => {}
            }
            let mut want = vec![0u8; 4 * 292];
            quantize_row(&x, &mut want);
            for (name, f) in Q8K.quantize_variants() {
                let mut got = vec![0xAAu8; 4 * 292];
                f(&x, &mut got);
                assert_eq!(got, want, "variant {name}, seed {seed}");
            }
            let mut fast = vec![0x55u8; 4 * 292];
            Q8K.quantize_row_fast(&x, &mut fast);
            assert_eq!(fast, want);
        }
    }

    #[test]
    fn first_largest_magnitude_sets_sign() {
        let mut x = [0.0f32; QK_K];
        x[3] = -2.0;
        x[9] = 2.0;
        let mut b = BlockQ8K {
            d: [0; 4],
            qs: [0; QK_K],
            bsums: [[0; 2]; 16],
        };
        quantize_block(&x, &mut b);
        assert_eq!(b.qs[3], -127);
        assert_eq!(b.qs[9], 127);
        assert_eq!(b.d(), 2.0 / 127.0);
        assert_eq!(b.bsum(0), 0);
    }

    #[test]
    fn vec_dot_variants_agree() {
        let n = 3 * QK_K;
        let mut a = vec![0u8; 3 * 292];
        let mut b = vec![0u8; 3 * 292];
        quantize_row(&row(n, 1), &mut a);
        quantize_row(&row(n, 2), &mut b);
        let want = vec_dot_scalar(n, &a, &b);
        for (name, f) in Q8K.vec_dot_variants() {
            assert_eq!(f(n, &a, &b), want, "{name}");
        }
    }

    /// Arbitrary weight bytes (scales fixed up to finite values by `fix`) against a quantized
    /// activation row: the scalar kernel equals the f64 dot product of the dequantized rows (so
    /// dot and dequantize agree on the layout), and every variant is close to it.
    fn check_arbitrary<B: Block>(f: &dyn QuantFormat, fix: impl Fn(&mut B, usize)) {
        let nb = 6;
        let n = nb * QK_K;
        let mut s = 0x9E37_79B9u32;
        let mut w: Vec<u8> = (0..nb * std::mem::size_of::<B>())
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as u8
            })
            .collect();
        for (i, b) in blocks_mut::<B>(&mut w).iter_mut().enumerate() {
            fix(b, i);
        }
        for seed in 0..4 {
            let x = row(n, 100 + seed);
            let mut act = vec![0u8; nb * 292];
            quantize_row(&x, &mut act);
            let want = f.vec_dot_scalar()(n, &w, &act);
            let (mut xw, mut xa) = (vec![0f32; n], vec![0f32; n]);
            f.dequantize_row(&w, &mut xw);
            dequantize_row(&act, &mut xa);
            let exact: f64 = xw
                .iter()
                .zip(&xa)
                .map(|(&p, &q)| f64::from(p) * f64::from(q))
                .sum();
            let mag: f64 = xw
                .iter()
                .zip(&xa)
                .map(|(&p, &q)| (f64::from(p) * f64::from(q)).abs())
                .sum();
            assert!(
                (f64::from(want) - exact).abs() <= 1e-5 * mag,
                "{}: {want} vs {exact} (magnitude {mag})",
                f.ty()
            );
            // Variants sum in another order: compare against the size of the terms.
            for (name, v) in f.vec_dot_variants() {
                let got = v(n, &w, &act);
                assert!(
                    (f64::from(got) - f64::from(want)).abs() <= 1e-5 * mag,
                    "{} {name}: {got} vs scalar {want} (magnitude {mag})",
                    f.ty()
                );
            }
        }
        // The NEON kernels compute every block's integers exactly and share the scalar float
        // epilogue: bit for bit, even against arbitrary activation bytes (whose run sums need
        // not match their values).
        let mut act: Vec<u8> = (0..nb * 292)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as u8
            })
            .collect();
        for (i, y) in blocks_mut::<BlockQ8K>(&mut act).iter_mut().enumerate() {
            y.d = (SCALES[(i + 2) % 6] * 0.5).to_le_bytes();
        }
        let want = f.vec_dot_scalar()(n, &w, &act);
        for (name, v) in f.vec_dot_variants() {
            if name.starts_with("neon") {
                let got = v(n, &w, &act);
                assert_eq!(got.to_bits(), want.to_bits(), "{} {name}", f.ty());
            }
        }
    }

    const SCALES: [f32; 6] = [0.011, -0.0007, 0.25, 1.5e-3, 0.0, 3.0e-5];

    #[test]
    fn arbitrary_blocks_q2_k() {
        check_arbitrary::<super::super::q2_k::BlockQ2K>(&super::super::q2_k::Q2K, |b, i| {
            b.d = crate::quant::f32_to_f16(SCALES[i]);
            b.dmin = crate::quant::f32_to_f16(SCALES[(i + 1) % 6]);
        });
    }

    #[test]
    fn arbitrary_blocks_q3_k() {
        check_arbitrary::<super::super::q3_k::BlockQ3K>(&super::super::q3_k::Q3K, |b, i| {
            b.d = crate::quant::f32_to_f16(SCALES[i]);
        });
    }

    #[test]
    fn arbitrary_blocks_q4_k() {
        check_arbitrary::<super::super::q4_k::BlockQ4K>(&super::super::q4_k::Q4K, |b, i| {
            b.d = crate::quant::f32_to_f16(SCALES[i]);
            b.dmin = crate::quant::f32_to_f16(SCALES[(i + 1) % 6]);
        });
    }

    #[test]
    fn arbitrary_blocks_q5_k() {
        check_arbitrary::<super::super::q5_k::BlockQ5K>(&super::super::q5_k::Q5K, |b, i| {
            b.d = crate::quant::f32_to_f16(SCALES[i]);
            b.dmin = crate::quant::f32_to_f16(SCALES[(i + 1) % 6]);
        });
    }

    #[test]
    fn arbitrary_blocks_q6_k() {
        check_arbitrary::<super::super::q6_k::BlockQ6K>(&super::super::q6_k::Q6K, |b, i| {
            b.d = crate::quant::f32_to_f16(SCALES[i]);
        });
    }

    #[test]
    fn arbitrary_blocks_q8_k() {
        check_arbitrary::<BlockQ8K>(&Q8K, |b, i| {
            b.d = SCALES[i].to_le_bytes();
        });
    }
}
