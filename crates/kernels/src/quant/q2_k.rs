//! Q2_K: 256 values in 16 runs of 16, each with a 4-bit scale and a 4-bit minimum (one byte)
//! times the block's f16 `d` and `dmin`: value = d*sc*q - dmin*m with q in 0..=3.
//!
//! The quantizer reproduces ggml's `quantize_row_q2_K_ref` bit for bit.

use ggml_type::GgmlType;

use super::q4_k::make_qkx2_quants;
use super::q8_k::{block_input, dot_blocks, nearest_int, BlockQ8K, QK_K};
use super::{blocks, blocks_mut, f16_to_f32, f32_to_f16, Block, QuantFormat};
#[cfg(target_arch = "x86_64")]
use crate::simd;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ2K {
    /// Per run: scale in the low nibble, minimum in the high nibble.
    pub scales: [u8; QK_K / 16],
    /// Per 128 values, 32 bytes; bits 2k..2k+2 of byte l belong to value 32k + l.
    pub qs: [u8; QK_K / 4],
    /// f16 scale of the scales.
    pub d: [u8; 2],
    /// f16 scale of the minimums.
    pub dmin: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

// SAFETY: repr(C) of byte arrays only: alignment 1, no padding, any bit pattern valid.
unsafe impl Block for BlockQ2K {}

/// Quantizes one block (ggml's `quantize_row_q2_K_ref`).
pub fn quantize_block(x: &[f32; QK_K]) -> BlockQ2K {
    const Q4SCALE: f32 = 15.0;
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut mins = [0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 16 {
        let xs = &x[16 * j..16 * j + 16];
        let mut weights = [0f32; 16];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let (s, m) = make_qkx2_quants(
            3,
            xs,
            &weights,
            &mut l[16 * j..16 * j + 16],
            -0.5,
            0.1,
            15,
            true,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let mut y = BlockQ2K {
        scales: [0; QK_K / 16],
        qs: [0; QK_K / 4],
        d: [0; 2],
        dmin: [0; 2],
    };
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (q, &s) in y.scales.iter_mut().zip(&scales) {
            // C stores the int into a uint8_t (truncating).
            *q = nearest_int(iscale * s) as u8;
        }
        y.d = f32_to_f16(max_scale / Q4SCALE);
    } else {
        y.d = f32_to_f16(0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (q, &m) in y.scales.iter_mut().zip(&mins) {
            *q |= (nearest_int(iscale * m) << 4) as u8;
        }
        y.dmin = f32_to_f16(max_min / Q4SCALE);
    } else {
        y.dmin = f32_to_f16(0.0);
    }
    let (d_all, m_all) = (f16_to_f32(y.d), f16_to_f32(y.dmin));
    for j in 0..QK_K / 16 {
        let d = d_all * f32::from(y.scales[j] & 0xF);
        if d == 0.0 {
            continue;
        }
        let dm = m_all * f32::from(y.scales[j] >> 4);
        for i in 0..16 {
            l[16 * j + i] = nearest_int((x[16 * j + i] + dm) / d).clamp(0, 3) as u8;
        }
    }
    for h in 0..2 {
        let l = &l[128 * h..];
        for i in 0..32 {
            y.qs[32 * h + i] = l[i] | (l[i + 32] << 2) | (l[i + 64] << 4) | (l[i + 96] << 6);
        }
    }
    y
}

pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (i, y) in blocks_mut::<BlockQ2K>(dst)
        .iter_mut()
        .take(src.len() / QK_K)
        .enumerate()
    {
        *y = quantize_block(block_input(src, i));
    }
}

/// The 256 values (0..=3) of a block, in element order.
#[inline(always)]
fn unpack(x: &BlockQ2K) -> [u8; QK_K] {
    std::array::from_fn(|e| (x.qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3)
}

pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (x, out) in blocks::<BlockQ2K>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_to_f32(x.d);
        let min = f16_to_f32(x.dmin);
        let q = unpack(x);
        for (j, (o, q)) in out.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
            let dl = d * f32::from(x.scales[j] & 0xF);
            let ml = min * f32::from(x.scales[j] >> 4);
            for (o, &q) in o.iter_mut().zip(q) {
                *o = dl * f32::from(q) - ml;
            }
        }
    }
}

/// `sum_g m[g] * bsums[g]` over the run minimums.
#[inline(always)]
fn mins_dot_bsums(x: &BlockQ2K, y: &BlockQ8K) -> i32 {
    (0..16)
        .map(|g| i32::from(x.scales[g] >> 4) * i32::from(y.bsum(g)))
        .sum()
}

/// The float epilogue shared by the scalar and NEON kernels, so that they agree bit for bit
/// (`summ` is [`mins_dot_bsums`]).
#[inline(always)]
fn block_value(x: &BlockQ2K, y: &BlockQ8K, sumi: i32, summ: i32) -> f32 {
    y.d() * f16_to_f32(x.d) * sumi as f32 - y.d() * f16_to_f32(x.dmin) * summ as f32
}

fn vec_dot_scalar(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let (xs, ys) = dot_blocks::<BlockQ2K>(n, w, act);
    let mut sumf = 0.0f32;
    for (x, y) in xs.iter().zip(ys) {
        let q = unpack(x);
        let mut sumi = 0i32;
        for g in 0..16 {
            let s: i32 = (16 * g..16 * g + 16)
                .map(|k| i32::from(q[k]) * i32::from(y.qs[k]))
                .sum();
            sumi += i32::from(x.scales[g] & 0xF) * s;
        }
        sumf += block_value(x, y, sumi, mins_dot_bsums(x, y));
    }
    sumf
}

#[cfg(target_arch = "x86_64")]
fn vec_dot_avx2(n: usize, w: &[u8], act: &[u8]) -> f32 {
    if !simd::detected().avx2 {
        return vec_dot_scalar(n, w, act);
    }
    let (xs, ys) = dot_blocks::<BlockQ2K>(n, w, act);
    // SAFETY: the CPU has AVX2/FMA/F16C.
    unsafe { avx2::vec_dot(xs, ys) }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ2K, BlockQ8K};
    use crate::quant::q8_k::kx86::{bsums, f16x2, mask, PAIR_SPREAD};
    use crate::simd::x86::hsum_ps;

    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn vec_dot(xs: &[BlockQ2K], ys: &[BlockQ8K]) -> f32 {
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm_set1_epi8(0x0F);
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm256_setzero_ps();
        for (x, y) in xs.iter().zip(ys) {
            let (xd, xmin) = f16x2(x.d.as_ptr());
            let yd = y.d();
            let packed = _mm_loadu_si128(x.scales.as_ptr().cast());
            let sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(packed, m4));
            let m16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
            let mins = _mm256_madd_epi16(m16, bsums(y));
            acc_m = _mm256_fmadd_ps(_mm256_set1_ps(yd * xmin), _mm256_cvtepi32_ps(mins), acc_m);
            let halves = [
                _mm256_permute2x128_si256::<0x00>(sc16, sc16),
                _mm256_permute2x128_si256::<0x11>(sc16, sc16),
            ];
            let mut sumi = _mm256_setzero_si256();
            for (h, &scales) in halves.iter().enumerate() {
                let mut qs = _mm256_loadu_si256(x.qs.as_ptr().add(32 * h).cast());
                for (k, spread) in PAIR_SPREAD.iter().enumerate() {
                    let q = _mm256_and_si256(qs, m3);
                    qs = _mm256_srli_epi16::<2>(qs);
                    let a = _mm256_loadu_si256(y.qs.as_ptr().add(128 * h + 32 * k).cast());
                    let p = _mm256_maddubs_epi16(q, a);
                    let s = _mm256_shuffle_epi8(scales, mask(spread));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
                }
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(yd * xd), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_ps(acc) - hsum_ps(acc_m)
    }
}

neon_vec_dot!(vec_dot_scalar, neon::vec_dot);

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
mod neon {
    use std::arch::aarch64::*;

    use super::{block_value, dot_blocks, BlockQ2K, BlockQ8K};
    use crate::quant::q8_k::kneon::{dot_bsums, scaled_sum16, widen_i8x16};
    use crate::simd::neon::{load_i8x16, sums4, I8Dot};

    /// The block's `sumi` and `summ` of the scalar kernel, exactly.
    #[inline(always)]
    unsafe fn block_sums<D: I8Dot>(x: &BlockQ2K, y: &BlockQ8K) -> (i32, i32) {
        let m3 = vdupq_n_u8(3);
        let zero = vdupq_n_s32(0);
        let py = y.qs.as_ptr();
        // The integer dot product of each run of 16, spread over four lanes.
        let mut runs = [zero; 16];
        for h in 0..2 {
            // Bytes l and 16 + l of this half; bits 2k..2k+2 belong to values 32k + l.
            let mut q0 = vld1q_u8(x.qs.as_ptr().add(32 * h));
            let mut q1 = vld1q_u8(x.qs.as_ptr().add(32 * h + 16));
            for k in 0..4 {
                let at = 128 * h + 32 * k;
                let v0 = vreinterpretq_s8_u8(vandq_u8(q0, m3));
                let v1 = vreinterpretq_s8_u8(vandq_u8(q1, m3));
                runs[at / 16] = D::dot(zero, v0, load_i8x16(py.add(at)));
                runs[at / 16 + 1] = D::dot(zero, v1, load_i8x16(py.add(at + 16)));
                q0 = vshrq_n_u8::<2>(q0);
                q1 = vshrq_n_u8::<2>(q1);
            }
        }
        let r = [
            sums4([runs[0], runs[1], runs[2], runs[3]]),
            sums4([runs[4], runs[5], runs[6], runs[7]]),
            sums4([runs[8], runs[9], runs[10], runs[11]]),
            sums4([runs[12], runs[13], runs[14], runs[15]]),
        ];
        let packed = vld1q_u8(x.scales.as_ptr());
        let sc = vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0F)));
        let sumi = scaled_sum16(r, widen_i8x16(sc));
        let m = vshrq_n_u8::<4>(packed);
        let m16 = (
            vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(m))),
            vreinterpretq_s16_u16(vmovl_high_u8(m)),
        );
        (sumi, dot_bsums(m16, y))
    }

    /// # Safety
    /// NEON available, and SDOT where `D` uses it.
    #[inline(always)]
    pub(super) unsafe fn vec_dot<D: I8Dot>(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let (xs, ys) = dot_blocks::<BlockQ2K>(n, w, act);
        let mut sumf = 0.0f32;
        for (x, y) in xs.iter().zip(ys) {
            let (sumi, summ) = block_sums::<D>(x, y);
            sumf += block_value(x, y, sumi, summ);
        }
        sumf
    }
}

/// The Q2_K format.
pub struct Q2K;

impl QuantFormat for Q2K {
    fn ty(&self) -> GgmlType {
        GgmlType::Q2_K
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
