//! Q3_K: 256 values in 16 runs of 16, each with a 6-bit scale (stored with an offset of 32)
//! times the block's f16 `d`: value = d * (sc - 32) * q with q in -4..=3, kept as 2 low bits
//! (`qs`) and a high bit (`hmask`, set when q >= 0).
//!
//! The quantizer reproduces ggml's `quantize_row_q3_K_ref` bit for bit.

use ggml_type::GgmlType;

use super::q8_k::{block_input, dot_blocks, nearest_int, BlockQ8K, QK_K};
use super::{blocks, blocks_mut, f16_to_f32, f32_to_f16, Block, QuantFormat};
#[cfg(target_arch = "x86_64")]
use crate::simd;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ3K {
    /// High bits: bit k of byte l belongs to value 32k + l.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits: per 128 values, 32 bytes; bits 2k..2k+2 of byte l belong to value 32k + l.
    pub qs: [u8; QK_K / 4],
    /// 16 six-bit scales: low nibbles in bytes 0..8 (runs 0..8 low halves, 8..16 high halves),
    /// top 2 bits in bytes 8..12.
    pub scales: [u8; 12],
    /// f16 scale of the scales.
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

// SAFETY: repr(C) of byte arrays only: alignment 1, no padding, any bit pattern valid.
unsafe impl Block for BlockQ3K {}

const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `make_q3_quants` with `do_rmse`: a symmetric fit `x ≈ scale * l`, `l` in
/// -nmax..nmax, improved one value at a time (weights `x²`). Returns the scale; `out` gets
/// `l + nmax`. Operation order follows ggml bit for bit.
fn make_q3_quants(nmax: i32, x: &[f32], out: &mut [i8]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        out[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut l = [0i32; 16];
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        l[i] = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        let w = x[i] * x[i];
        let lf = l[i] as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = x[i] * x[i];
            let li = l[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l[i] {
                    let nf = new_l as f32;
                    slx += w * x[i] * nf;
                    sl2 += w * nf * nf;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for i in 0..n {
        out[i] = (l[i] + nmax) as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Scale `j` (0..16) of the 12 packed bytes, without the offset of 32 removed.
#[inline(always)]
fn scale_code(j: usize, s: &[u8; 12]) -> u8 {
    let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    low | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)
}

/// All 16 scales, offset removed ([`scale_code`] applied to whole 32-bit words).
#[inline(always)]
pub(crate) fn unpack_scales(s: &[u8; 12]) -> [i8; 16] {
    let word = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let (a, b, c) = (word(0), word(4), word(8));
    let (m4, m2) = (0x0f0f_0f0fu32, 0x0303_0303u32);
    let w = [
        (a & m4) | ((c & m2) << 4),
        (b & m4) | (((c >> 2) & m2) << 4),
        ((a >> 4) & m4) | (((c >> 4) & m2) << 4),
        ((b >> 4) & m4) | (((c >> 6) & m2) << 4),
    ];
    std::array::from_fn(|j| (w[j / 4] >> (8 * (j % 4))) as u8 as i8 - 32)
}

/// Quantizes one block (ggml's `quantize_row_q3_K_ref`).
pub fn quantize_block(x: &[f32; QK_K]) -> BlockQ3K {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for j in 0..QK_K / 16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        let scale = scales[j].abs();
        if scale > amax {
            amax = scale;
            max_scale = scales[j];
        }
    }
    let mut y = BlockQ3K {
        hmask: [0; QK_K / 8],
        qs: [0; QK_K / 4],
        scales: [0; 12],
        d: [0; 2],
    };
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &s) in scales.iter().enumerate() {
            // C stores the int into an int8_t before clamping.
            let q = (i32::from(nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
            if j < 8 {
                y.scales[j] = q & 0xF;
            } else {
                y.scales[j - 8] |= (q & 0xF) << 4;
            }
            y.scales[j % 4 + 8] |= (q >> 4) << (2 * (j / 4));
        }
        y.d = f32_to_f16(1.0 / iscale);
    } else {
        y.d = f32_to_f16(0.0);
    }
    let d_all = f16_to_f32(y.d);
    for j in 0..QK_K / 16 {
        let sc = scale_code(j, &y.scales) as i8 - 32;
        let d = d_all * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        for i in 0..16 {
            l[16 * j + i] = (nearest_int(x[16 * j + i] / d).clamp(-4, 3) + 4) as i8;
        }
    }
    for (j, v) in l.iter_mut().enumerate() {
        if *v > 3 {
            y.hmask[j % 32] |= 1 << (j / 32);
            *v -= 4;
        }
    }
    for h in 0..2 {
        let l = &l[128 * h..];
        for i in 0..32 {
            let q = [
                l[i] as u8,
                l[i + 32] as u8,
                l[i + 64] as u8,
                l[i + 96] as u8,
            ];
            y.qs[32 * h + i] = q[0] | (q[1] << 2) | (q[2] << 4) | (q[3] << 6);
        }
    }
    y
}

pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (i, y) in blocks_mut::<BlockQ3K>(dst)
        .iter_mut()
        .take(src.len() / QK_K)
        .enumerate()
    {
        *y = quantize_block(block_input(src, i));
    }
}

/// The 256 values of a block as unsigned 0..=7 (q + 4), in element order.
#[inline(always)]
fn unpack(x: &BlockQ3K) -> [u8; QK_K] {
    std::array::from_fn(|e| {
        let (h, k, i) = (e / 128, (e / 32) % 4, e % 32);
        let low = (x.qs[32 * h + i] >> (2 * k)) & 3;
        let high = (x.hmask[i] >> (e / 32)) & 1;
        low | (high << 2)
    })
}

pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (x, out) in blocks::<BlockQ3K>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d_all = f16_to_f32(x.d);
        let sc = unpack_scales(&x.scales);
        let q = unpack(x);
        for (j, (o, q)) in out.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
            let dl = d_all * f32::from(sc[j]);
            for (o, &q) in o.iter_mut().zip(q) {
                *o = dl * f32::from(q as i8 - 4);
            }
        }
    }
}

/// `sum_g sc[g] * bsums[g]`: with it the dot product works on the unsigned values and removes
/// the offset of 4 at the end.
#[inline(always)]
fn scales_dot_bsums(sc: &[i8; 16], y: &BlockQ8K) -> i32 {
    (0..16)
        .map(|g| i32::from(sc[g]) * i32::from(y.bsum(g)))
        .sum()
}

fn vec_dot_scalar(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let (xs, ys) = dot_blocks::<BlockQ3K>(n, w, act);
    let mut sumf = 0.0f32;
    for (x, y) in xs.iter().zip(ys) {
        let sc = unpack_scales(&x.scales);
        let q = unpack(x);
        let mut sumi = 0i32;
        for (g, &scale) in sc.iter().enumerate() {
            let s: i32 = (16 * g..16 * g + 16)
                .map(|k| i32::from(q[k]) * i32::from(y.qs[k]))
                .sum();
            sumi += i32::from(scale) * s;
        }
        sumi -= 4 * scales_dot_bsums(&sc, y);
        sumf += block_value(x, y, sumi);
    }
    sumf
}

/// The float epilogue shared by the scalar and NEON kernels, so that they agree bit for bit.
#[inline(always)]
fn block_value(x: &BlockQ3K, y: &BlockQ8K, sumi: i32) -> f32 {
    y.d() * f16_to_f32(x.d) * sumi as f32
}

#[cfg(target_arch = "x86_64")]
fn vec_dot_avx2(n: usize, w: &[u8], act: &[u8]) -> f32 {
    if !simd::detected().avx2 {
        return vec_dot_scalar(n, w, act);
    }
    let (xs, ys) = dot_blocks::<BlockQ3K>(n, w, act);
    // SAFETY: the CPU has AVX2/FMA/F16C.
    unsafe { avx2::vec_dot(xs, ys) }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{unpack_scales, BlockQ3K, BlockQ8K};
    use crate::quant::q8_k::kx86::{bsums, f16x1, mask, PAIR_SPREAD};
    use crate::simd::x86::hsum_ps;

    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn vec_dot(xs: &[BlockQ3K], ys: &[BlockQ8K]) -> f32 {
        let m3 = _mm256_set1_epi8(3);
        let one = _mm256_set1_epi8(1);
        let mut acc = _mm256_setzero_ps();
        for (x, y) in xs.iter().zip(ys) {
            let d = y.d() * f16x1(x.d);
            let sc = unpack_scales(&x.scales);
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc.as_ptr().cast()));
            // The values are taken with +4: remove 4 * sum_g sc[g] * bsums[g].
            let offset = _mm256_madd_epi16(sc16, bsums(y));
            let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<2>(offset));
            let halves = [
                _mm256_permute2x128_si256::<0x00>(sc16, sc16),
                _mm256_permute2x128_si256::<0x11>(sc16, sc16),
            ];
            let mut hm = _mm256_loadu_si256(x.hmask.as_ptr().cast());
            for (h, &scales) in halves.iter().enumerate() {
                let mut qs = _mm256_loadu_si256(x.qs.as_ptr().add(32 * h).cast());
                for (k, spread) in PAIR_SPREAD.iter().enumerate() {
                    // Values 128h + 32k + 0..32: two low bits, the high bit as +4; 0..=7.
                    // The shifts stay within each byte for the bits that are kept.
                    let low = _mm256_and_si256(qs, m3);
                    let high = _mm256_slli_epi16::<2>(_mm256_and_si256(hm, one));
                    qs = _mm256_srli_epi16::<2>(qs);
                    hm = _mm256_srli_epi16::<1>(hm);
                    let q = _mm256_or_si256(low, high);
                    let a = _mm256_loadu_si256(y.qs.as_ptr().add(128 * h + 32 * k).cast());
                    let p = _mm256_maddubs_epi16(q, a);
                    let s = _mm256_shuffle_epi8(scales, mask(spread));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
                }
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_ps(acc)
    }
}

neon_vec_dot!(vec_dot_scalar, neon::vec_dot);

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
mod neon {
    use std::arch::aarch64::*;

    use super::{block_value, dot_blocks, unpack_scales, BlockQ3K, BlockQ8K};
    use crate::quant::q8_k::kneon::{dot_bsums, scaled_sum16, widen_i8x16};
    use crate::simd::neon::{load_i8x16, sums4, I8Dot};

    /// The block's `sumi` of the scalar kernel, exactly: on the values taken with +4 (0..=7),
    /// less 4 * sum_g sc[g] * bsums[g].
    #[inline(always)]
    unsafe fn block_sum<D: I8Dot>(x: &BlockQ3K, y: &BlockQ8K) -> i32 {
        let m3 = vdupq_n_u8(3);
        let one = vdupq_n_u8(1);
        let zero = vdupq_n_s32(0);
        let py = y.qs.as_ptr();
        // High bits: bit 4h + k of bytes l and 16 + l belongs to values 128h + 32k + l.
        let mut hm0 = vld1q_u8(x.hmask.as_ptr());
        let mut hm1 = vld1q_u8(x.hmask.as_ptr().add(16));
        let mut runs = [zero; 16];
        for h in 0..2 {
            let mut q0 = vld1q_u8(x.qs.as_ptr().add(32 * h));
            let mut q1 = vld1q_u8(x.qs.as_ptr().add(32 * h + 16));
            for k in 0..4 {
                let at = 128 * h + 32 * k;
                let v0 = vorrq_u8(vandq_u8(q0, m3), vshlq_n_u8::<2>(vandq_u8(hm0, one)));
                let v1 = vorrq_u8(vandq_u8(q1, m3), vshlq_n_u8::<2>(vandq_u8(hm1, one)));
                let v0 = vreinterpretq_s8_u8(v0);
                let v1 = vreinterpretq_s8_u8(v1);
                runs[at / 16] = D::dot(zero, v0, load_i8x16(py.add(at)));
                runs[at / 16 + 1] = D::dot(zero, v1, load_i8x16(py.add(at + 16)));
                q0 = vshrq_n_u8::<2>(q0);
                q1 = vshrq_n_u8::<2>(q1);
                hm0 = vshrq_n_u8::<1>(hm0);
                hm1 = vshrq_n_u8::<1>(hm1);
            }
        }
        let r = [
            sums4([runs[0], runs[1], runs[2], runs[3]]),
            sums4([runs[4], runs[5], runs[6], runs[7]]),
            sums4([runs[8], runs[9], runs[10], runs[11]]),
            sums4([runs[12], runs[13], runs[14], runs[15]]),
        ];
        let sc = unpack_scales(&x.scales);
        let sc = vld1q_s8(sc.as_ptr());
        let sc16 = (vmovl_s8(vget_low_s8(sc)), vmovl_high_s8(sc));
        scaled_sum16(r, widen_i8x16(sc)) - 4 * dot_bsums(sc16, y)
    }

    /// # Safety
    /// NEON available, and SDOT where `D` uses it.
    #[inline(always)]
    pub(super) unsafe fn vec_dot<D: I8Dot>(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let (xs, ys) = dot_blocks::<BlockQ3K>(n, w, act);
        let mut sumf = 0.0f32;
        for (x, y) in xs.iter().zip(ys) {
            sumf += block_value(x, y, block_sum::<D>(x, y));
        }
        sumf
    }
}

/// The Q3_K format.
pub struct Q3K;

impl QuantFormat for Q3K {
    fn ty(&self) -> GgmlType {
        GgmlType::Q3_K
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_wise_scales_match_per_run_decoding() {
        let mut s = 0xDEAD_BEEFu32;
        for _ in 0..1000 {
            let q: [u8; 12] = std::array::from_fn(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as u8
            });
            let sc = unpack_scales(&q);
            for (j, &v) in sc.iter().enumerate() {
                assert_eq!(v, scale_code(j, &q) as i8 - 32);
            }
        }
    }
}
