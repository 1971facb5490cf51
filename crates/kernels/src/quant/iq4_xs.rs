//! IQ4_XS: IQ4_NL's levels in 256-element super-blocks. Each run of 32 has a 6-bit signed scale
//! (stored as `ls + 32`: low four bits in `scales_l`, high two in `scales_h`) multiplied by the
//! super-block's f16 `d`: `x = d * (ls - 32) * KVALUES_IQ4NL[q]`. Dotted against Q8_K
//! activations, as in ggml. Inside each run the nibbles are ordered as in IQ4_NL.
//!
//! The quantizer matches ggml's `quantize_iq4_xs` without an importance matrix (the same as its
//! `quantize_row_iq4_xs_ref`) bit for bit.

use ggml_type::GgmlType;

use super::iq4_nl::{best_index, fit_block, pack_nibbles, KVALUES_IQ4NL};
use super::q8_k::{block_input, dot_blocks, nearest_int, BlockQ8K, QK_K};
use super::{blocks, blocks_mut, f16_to_f32, f32_to_f16, Block, QuantFormat};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIq4Xs {
    /// f16 scale of the run scales.
    pub d: [u8; 2],
    /// u16 (little-endian): bits `2r..2r + 2` are the high bits of run `r`'s scale code.
    pub scales_h: [u8; 2],
    /// Low four bits of the scale codes, two runs per byte (even runs in the low nibble).
    pub scales_l: [u8; QK_K / 64],
    /// The indices, 16 bytes per run of 32.
    pub qs: [[u8; 16]; QK_K / 32],
}
const _: () = assert!(std::mem::size_of::<BlockIq4Xs>() == 136);
// SAFETY: repr(C) of byte arrays only: alignment 1, no padding, any bit pattern valid.
unsafe impl Block for BlockIq4Xs {}

impl BlockIq4Xs {
    /// The eight run scales, `ls - 32` (in -32..=31).
    #[inline(always)]
    pub fn scales(&self) -> [i32; 8] {
        let h = u16::from_le_bytes(self.scales_h);
        std::array::from_fn(|r| {
            let lo = (self.scales_l[r / 2] >> (4 * (r % 2))) & 0x0F;
            let hi = ((h >> (2 * r)) & 3) as u8;
            i32::from(lo | (hi << 4)) - 32
        })
    }
}

/// Quantizes one super-block (ggml's `quantize_iq4_xs` on one block, without importance
/// weights): fits each run's scale as IQ4_NL does, codes them relative to the one of largest
/// magnitude, then picks each element's level against its run's coded scale.
pub fn quantize_block(x: &[f32; QK_K]) -> BlockIq4Xs {
    let (runs, _) = x.as_chunks::<32>();
    let mut scales = [0f32; 8];
    let mut max_scale = 0f32;
    let mut amax_scale = 0f32;
    for (r, s) in scales.iter_mut().enumerate() {
        *s = fit_block(&runs[r]);
        if s.abs() > amax_scale {
            amax_scale = s.abs();
            max_scale = *s;
        }
    }
    let d = -max_scale / 32.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut b = BlockIq4Xs {
        d: f32_to_f16(d),
        scales_h: [0; 2],
        scales_l: [0; 4],
        qs: [[0; 16]; 8],
    };
    let mut h = 0u16;
    for (r, &s) in scales.iter().enumerate() {
        let l = nearest_int(id * s).clamp(-32, 31);
        // ggml picks the levels against the unrounded `d`, not the stored f16.
        let dl = d * l as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        let xb = &runs[r];
        let lv: [u8; 32] = std::array::from_fn(|j| best_index(idl * xb[j]));
        pack_nibbles(&lv, &mut b.qs[r]);
        let code = (l + 32) as u8;
        b.scales_l[r / 2] |= (code & 0x0F) << (4 * (r % 2));
        h |= u16::from(code >> 4) << (2 * r);
    }
    b.scales_h = h.to_le_bytes();
    b
}

pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (i, y) in blocks_mut::<BlockIq4Xs>(dst)
        .iter_mut()
        .take(src.len() / QK_K)
        .enumerate()
    {
        *y = quantize_block(block_input(src, i));
    }
}

pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, out) in blocks::<BlockIq4Xs>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_to_f32(b.d);
        for ((ls, q), y) in b.scales().iter().zip(&b.qs).zip(out.chunks_exact_mut(32)) {
            let dl = d * *ls as f32;
            let (lo, hi) = y.split_at_mut(16);
            for ((l, h), &q) in lo.iter_mut().zip(hi).zip(q) {
                *l = dl * f32::from(KVALUES_IQ4NL[(q & 0x0F) as usize]);
                *h = dl * f32::from(KVALUES_IQ4NL[(q >> 4) as usize]);
            }
        }
    }
}

/// The float epilogue shared by every kernel, so that they agree bit for bit: the super-block's
/// exact integer sum `Σ_r (ls_r - 32) Σ level * a` times `d * d_a`.
#[inline(always)]
fn block_value(yd: f32, d: [u8; 2], sumi: i32) -> f32 {
    f16_to_f32(d) * yd * sumi as f32
}

fn vec_dot_scalar(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let (xs, ys) = dot_blocks::<BlockIq4Xs>(n, w, act);
    let mut sumf = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let mut sumi = 0i32;
        for ((ls, q), a) in x.scales().iter().zip(&x.qs).zip(y.qs.chunks_exact(32)) {
            let (lo, hi) = a.split_at(16);
            let mut s = 0i32;
            for ((&q, &l), &h) in q.iter().zip(lo).zip(hi) {
                s += i32::from(KVALUES_IQ4NL[(q & 0x0F) as usize]) * i32::from(l)
                    + i32::from(KVALUES_IQ4NL[(q >> 4) as usize]) * i32::from(h);
            }
            sumi += ls * s;
        }
        sumf += block_value(y.d(), x.d, sumi);
    }
    sumf
}

#[cfg(target_arch = "x86_64")]
fn vec_dot_avx2(n: usize, w: &[u8], act: &[u8]) -> f32 {
    if !crate::simd::detected().avx2 {
        return vec_dot_scalar(n, w, act);
    }
    let (xs, ys) = dot_blocks::<BlockIq4Xs>(n, w, act);
    // SAFETY: the CPU has AVX2/FMA/F16C.
    unsafe { avx2::vec_dot(xs, ys) }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{block_value, BlockIq4Xs, BlockQ8K, KVALUES_IQ4NL};
    use crate::simd::x86::{hsum_epi32, nibbles};

    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn vec_dot(xs: &[BlockIq4Xs], ys: &[BlockQ8K]) -> f32 {
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()));
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let scales = x.scales();
            let q8 = y.qs.as_ptr();
            let mut acc = _mm256_setzero_si256();
            for (r, q) in x.qs.iter().enumerate() {
                let v = _mm256_shuffle_epi8(table, nibbles(q));
                let a = _mm256_loadu_si256(q8.add(32 * r).cast());
                // |level| * (a with the level's sign): pairs of products fit in i16
                // (2 * 127 * 127), and times the run scale (|ls - 32| <= 32) in i32.
                let p = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(a, v));
                let s = _mm256_madd_epi16(p, _mm256_set1_epi16(scales[r] as i16));
                acc = _mm256_add_epi32(acc, s);
            }
            sumf += block_value(y.d(), x.d, hsum_epi32(acc));
        }
        sumf
    }
}

neon_vec_dot!(vec_dot_scalar, neon::vec_dot);

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
mod neon {
    use std::arch::aarch64::*;

    use super::{block_value, dot_blocks, BlockIq4Xs, BlockQ8K, KVALUES_IQ4NL};
    use crate::simd::neon::{load_i8x16, nibbles, sums4, I8Dot};

    /// The super-block's integer sum of the scalar kernel, exactly.
    #[inline(always)]
    unsafe fn block_sum<D: I8Dot>(x: &BlockIq4Xs, y: &BlockQ8K) -> i32 {
        let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
        let zero = vdupq_n_s32(0);
        let py = y.qs.as_ptr();
        let mut runs = [zero; 8];
        for (r, (run, q)) in runs.iter_mut().zip(&x.qs).enumerate() {
            let (lo, hi) = nibbles(q);
            let s = D::dot(zero, vqtbl1q_s8(table, lo), load_i8x16(py.add(32 * r)));
            *run = D::dot(s, vqtbl1q_s8(table, hi), load_i8x16(py.add(32 * r + 16)));
        }
        let sc = x.scales();
        let r0 = sums4([runs[0], runs[1], runs[2], runs[3]]);
        let r1 = sums4([runs[4], runs[5], runs[6], runs[7]]);
        let s0 = vld1q_s32(sc.as_ptr());
        let s1 = vld1q_s32(sc.as_ptr().add(4));
        vaddvq_s32(vmlaq_s32(vmulq_s32(r0, s0), r1, s1))
    }

    /// # Safety
    /// NEON available, and SDOT where `D` uses it.
    #[inline(always)]
    pub(super) unsafe fn vec_dot<D: I8Dot>(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let (xs, ys) = dot_blocks::<BlockIq4Xs>(n, w, act);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            sumf += block_value(y.d(), x.d, block_sum::<D>(x, y));
        }
        sumf
    }
}

/// The IQ4_XS format.
pub struct Iq4Xs;

impl QuantFormat for Iq4Xs {
    fn ty(&self) -> GgmlType {
        GgmlType::IQ4_XS
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
    fn scale_codes_round_trip() {
        let mut x = [0f32; QK_K];
        for (i, v) in x.iter_mut().enumerate() {
            // Runs of very different magnitudes, some negative-dominated.
            let r = i / 32;
            let m = [1.0, -0.5, 0.25, 3.0, -2.0, 0.01, 1.5, -0.75][r];
            *v = m * (((i * 7919) % 61) as f32 - 20.0) / 40.0;
        }
        let b = quantize_block(&x);
        let sc = b.scales();
        assert!(sc.iter().all(|s| (-32..=31).contains(s)));
        // The run of largest fitted scale gets code -32 exactly (d = -max_scale / 32).
        assert!(sc.contains(&-32), "{sc:?}");
        // Writing the codes back the documented way gives the same bytes.
        let mut l = [0u8; 4];
        let mut h = 0u16;
        for (r, s) in sc.iter().enumerate() {
            let c = (s + 32) as u8;
            l[r / 2] |= (c & 15) << (4 * (r % 2));
            h |= u16::from(c >> 4) << (2 * r);
        }
        assert_eq!((l, h.to_le_bytes()), (b.scales_l, b.scales_h));
    }
}
