//! Element-wise and row-wise ops on f32 activations.

/// RMS normalization of `x` scaled by `weight`: out = x / sqrt(mean(x²) + eps) * weight.
pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), weight.len());
    debug_assert_eq!(x.len(), out.len());
    let scale = 1.0 / ((sum_of_squares(x) / x.len() as f64) as f32 + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// Σ x² in f64, as ggml sums it, so that long rows lose no precision. The squares of f32 are
/// exact in f64; eight running sums (which the compiler turns into vectors) instead of one
/// chain change the total by rounding in f64, far below what survives the cast to f32.
fn sum_of_squares(x: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let mut runs = x.chunks_exact(8);
    for run in &mut runs {
        for (acc, &v) in lanes.iter_mut().zip(run) {
            *acc += (v as f64) * (v as f64);
        }
    }
    let tail: f64 = runs
        .remainder()
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum();
    lanes.iter().sum::<f64>() + tail
}

/// In-place RMS normalization of `x` scaled by `weight`.
pub fn rmsnorm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    debug_assert_eq!(x.len(), weight.len());
    let scale = 1.0 / ((sum_of_squares(x) / x.len() as f64) as f32 + eps).sqrt();
    for (v, &w) in x.iter_mut().zip(weight) {
        *v = *v * scale * w;
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// How rotary embeddings pair the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): llama's layout after the GGUF converter's permutation.
    Normal,
    /// Split halves (x[i], x[i + d/2]): GPT-NeoX, Gemma, Qwen.
    Neox,
}

/// Rotary embeddings over the first `2 * freqs.len()` dimensions of a head: pair i turns by
/// `pos * freqs[i]`, and both halves of the rotation are scaled by `mscale` (YaRN's magnitude
/// correction; 1 otherwise). Scaling schemes (linear, YaRN, Llama 3 factors, LongRoPE) only
/// change the per-pair frequencies and `mscale`, so one apply serves all of them.
#[derive(Debug, Clone)]
pub struct Rope {
    style: RopeStyle,
    freqs: Vec<f32>,
    mscale: f32,
}

impl Rope {
    /// Plain rotary embeddings: pair i at `freq_scale * base^(-2i / rope_dims)`.
    pub fn new(style: RopeStyle, rope_dims: usize, base: f32, freq_scale: f32) -> Rope {
        let freqs = Rope::base_freqs(rope_dims, base)
            .into_iter()
            .map(|f| f * freq_scale)
            .collect();
        Rope::with_freqs(style, freqs, 1.0)
    }

    /// The unscaled frequency `base^(-2i / rope_dims)` of each pair, computed as ggml does (a
    /// running product), so that positions rotate by the same angles as llama.cpp's.
    pub fn base_freqs(rope_dims: usize, base: f32) -> Vec<f32> {
        let theta_scale = base.powf(-2.0 / rope_dims as f32);
        let mut freqs = Vec::with_capacity(rope_dims / 2);
        let mut theta = 1.0f32;
        for _ in 0..rope_dims / 2 {
            freqs.push(theta);
            theta *= theta_scale;
        }
        freqs
    }

    /// Rotary embeddings with explicit per-pair frequencies and magnitude scale.
    pub fn with_freqs(style: RopeStyle, freqs: Vec<f32>, mscale: f32) -> Rope {
        Rope {
            style,
            freqs,
            mscale,
        }
    }

    /// Rotates every head in `x` (`n_heads` consecutive heads of `head_dim`) for position `pos`.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        self.apply_qk(x, &mut [], head_dim, pos);
    }

    /// Rotates every head of one token's queries `q` and keys `k` for position `pos`: the same
    /// angles for all of them, so each sine and cosine is computed once (a head's rotation is
    /// the same as [`Rope::apply`]'s).
    pub fn apply_qk(&self, q: &mut [f32], k: &mut [f32], head_dim: usize, pos: usize) {
        // Angles a batch at a time, on the stack: a decode step allocates nothing.
        const BATCH: usize = 64;
        let half = self.freqs.len();
        debug_assert!(2 * half <= head_dim);
        let p = pos as f32;
        let (mut sin, mut cos) = ([0f32; BATCH], [0f32; BATCH]);
        for first in (0..half).step_by(BATCH) {
            let freqs = &self.freqs[first..(first + BATCH).min(half)];
            for (i, &f) in freqs.iter().enumerate() {
                let (s, c) = (p * f).sin_cos();
                (sin[i], cos[i]) = (s * self.mscale, c * self.mscale);
            }
            let n = freqs.len();
            let heads = q
                .chunks_exact_mut(head_dim)
                .chain(k.chunks_exact_mut(head_dim));
            for head in heads {
                for (j, (&sin, &cos)) in sin[..n].iter().zip(&cos[..n]).enumerate() {
                    let i = first + j;
                    let (a, b) = match self.style {
                        RopeStyle::Normal => (2 * i, 2 * i + 1),
                        RopeStyle::Neox => (i, i + half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos - x1 * sin;
                    head[b] = x0 * sin + x1 * cos;
                }
            }
        }
    }
}

/// Layer normalization of `x` with a learned scale and (optionally) shift:
/// out = (x - mean) / sqrt(var + eps) * weight + bias.
pub fn layernorm(x: &[f32], weight: &[f32], bias: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), out.len());
    out.copy_from_slice(x);
    layernorm_inplace(out, weight, bias, eps);
}

/// [`layernorm`] in place.
pub fn layernorm_inplace(x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    debug_assert_eq!(x.len(), weight.len());
    // Mean and variance in f64, as for rmsnorm.
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let scale = 1.0 / ((var as f32) + eps).sqrt();
    let mean = mean as f32;
    for (i, v) in x.iter_mut().enumerate() {
        *v = (*v - mean) * scale * weight[i] + bias.map_or(0.0, |b| b[i]);
    }
}

/// Soft-capping: x = cap * tanh(x / cap), in place (Gemma 2's attention and final logits).
pub fn softcap_inplace(x: &mut [f32], cap: f32) {
    for v in x.iter_mut() {
        *v = cap * (*v / cap).tanh();
    }
}

/// GELU (tanh approximation) in place, for feed-forward blocks without a gate.
pub fn gelu_inplace(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu(*v);
    }
}

/// Logistic sigmoid.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// gpt-oss's clamped SwiGLU, in place in `gate`: the gate is clamped from above and the linear
/// part to [-limit, limit], then gate * sigmoid(alpha * gate) * (up + 1).
pub fn swiglu_clamped_inplace(gate: &mut [f32], up: &[f32], alpha: f32, limit: f32) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = g.min(limit);
        let y = u.clamp(-limit, limit);
        *g = x * sigmoid(alpha * x) * (y + 1.0);
    }
}

/// SwiGLU: gate = silu(gate) * up, in place in `gate`.
pub fn swiglu_inplace(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gate and up lengths");
    #[cfg(target_arch = "x86_64")]
    if crate::simd::features().avx2 {
        // SAFETY: AVX2, FMA and F16C were detected; the lengths are equal.
        unsafe { swiglu_avx2(gate, up) };
        return;
    }
    swiglu_scalar(gate, up);
}

/// The reference of [`swiglu_inplace`].
pub fn swiglu_scalar(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// # Safety
/// The CPU must have AVX2, FMA and F16C; `gate.len() == up.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let n8 = gate.len() / 8 * 8;
    let (gp, upp) = (gate.as_mut_ptr(), up.as_ptr());
    for i in (0..n8).step_by(8) {
        let x = _mm256_loadu_ps(gp.add(i));
        // e^-x overflows to +inf below -88.7, where x / inf gives silu's limit, -0.
        let e = crate::simd::x86::exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), x));
        let g = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
        _mm256_storeu_ps(gp.add(i), _mm256_mul_ps(g, _mm256_loadu_ps(upp.add(i))));
    }
    swiglu_scalar(&mut gate[n8..], &up[n8..]);
}

/// GELU (tanh approximation) of gate times up, in place in `gate` (GeGLU).
pub fn geglu_inplace(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gate and up lengths");
    #[cfg(target_arch = "x86_64")]
    if crate::simd::features().avx2 {
        // SAFETY: AVX2, FMA and F16C were detected; the lengths are equal.
        unsafe { geglu_avx2(gate, up) };
        return;
    }
    geglu_scalar(gate, up);
}

/// The reference of [`geglu_inplace`].
pub fn geglu_scalar(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu(*g) * u;
    }
}

/// GELU, tanh approximation.
pub fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
}

/// # Safety
/// The CPU must have AVX2, FMA and F16C; `gate.len() == up.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn geglu_avx2(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let n8 = gate.len() / 8 * 8;
    let (gp, upp) = (gate.as_mut_ptr(), up.as_ptr());
    for i in (0..n8).step_by(8) {
        let x = _mm256_loadu_ps(gp.add(i));
        // gelu(x) = x (1 + tanh u) / 2 = x / (1 + e^(-2u)): no cancellation at either end.
        let x2 = _mm256_mul_ps(x, x);
        let inner = _mm256_fmadd_ps(x2, _mm256_set1_ps(0.044_715), _mm256_set1_ps(1.0));
        let minus_2u = _mm256_mul_ps(_mm256_mul_ps(x, inner), _mm256_set1_ps(-2.0 * 0.797_884_6));
        let e = crate::simd::x86::exp_ps(minus_2u);
        let g = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
        _mm256_storeu_ps(gp.add(i), _mm256_mul_ps(g, _mm256_loadu_ps(upp.add(i))));
    }
    geglu_scalar(&mut gate[n8..], &up[n8..]);
}

/// x[i] = e^(x[i] - shift), returning the sum of the results (softmax numerators).
pub fn exp_shifted_inplace(x: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::features().avx2 {
        // SAFETY: AVX2, FMA and F16C were detected.
        return unsafe { exp_shifted_avx2(x, shift) };
    }
    exp_shifted_scalar(x, shift)
}

/// The reference of [`exp_shifted_inplace`].
pub fn exp_shifted_scalar(x: &mut [f32], shift: f32) -> f32 {
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - shift).exp();
        sum += *v;
    }
    sum
}

/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp_shifted_avx2(x: &mut [f32], shift: f32) -> f32 {
    use std::arch::x86_64::*;
    let n8 = x.len() / 8 * 8;
    let p = x.as_mut_ptr();
    let sh = _mm256_set1_ps(shift);
    let mut sum = _mm256_setzero_ps();
    for i in (0..n8).step_by(8) {
        let e = crate::simd::x86::exp_ps(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), sh));
        _mm256_storeu_ps(p.add(i), e);
        sum = _mm256_add_ps(sum, e);
    }
    crate::simd::x86::hsum_ps(sum) + exp_shifted_scalar(&mut x[n8..], shift)
}

/// a += b
pub fn add_inplace(a: &mut [f32], b: &[f32]) {
    for (x, &y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// x *= s
pub fn scale_inplace(x: &mut [f32], s: f32) {
    for v in x.iter_mut() {
        *v *= s;
    }
}

/// Dot product of two f32 slices (written so the compiler vectorizes it).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..n {
        sum += a[i] * b[i];
    }
    sum
}

/// y += a * x
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, f32::NEG_INFINITY];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(x[3], 0.0);
        assert!(x[2] > x[1] && x[1] > x[0]);
    }

    /// The eight-lane sum against one chain, on rows with and without a tail, including
    /// values whose squares span many orders of magnitude.
    #[test]
    fn sum_of_squares_matches_one_chain() {
        for n in [0, 1, 7, 8, 9, 640, 2051] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 10f32.powi(i % 9 - 4))
                .collect();
            let chain: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            let lanes = sum_of_squares(&x);
            assert!(
                (lanes - chain).abs() <= chain * 1e-14,
                "{n}: {lanes} against {chain}"
            );
            assert_eq!(lanes as f32, chain as f32, "{n}");
        }
    }

    #[test]
    fn rmsnorm_unit_rms() {
        let x = [3.0, -4.0, 0.0, 5.0];
        let w = [1.0; 4];
        let mut out = [0.0; 4];
        rmsnorm(&x, &w, 0.0, &mut out);
        let rms = (out.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-5);
    }

    /// Every head of the queries and keys turned pair by pair by its own angle, with the
    /// angles in more than one of `apply_qk`'s batches and a partial rotation.
    #[test]
    fn rope_of_queries_and_keys_matches_each_pair_turned_alone() {
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let (head_dim, rope_dims) = (320, 288);
            let freqs = Rope::base_freqs(rope_dims, 10000.0);
            let rope = Rope::with_freqs(style, freqs.clone(), 1.25);
            let wave = |n: usize, phase: f32| -> Vec<f32> {
                (0..n).map(|i| (i as f32 * 0.37 + phase).sin()).collect()
            };
            let (mut q, mut k) = (wave(3 * head_dim, 0.1), wave(head_dim, 2.0));
            let (mut want_q, mut want_k) = (q.clone(), k.clone());
            let pos = 1234;
            rope.apply_qk(&mut q, &mut k, head_dim, pos);
            let half = freqs.len();
            for head in want_q
                .chunks_exact_mut(head_dim)
                .chain(want_k.chunks_exact_mut(head_dim))
            {
                for (i, f) in freqs.iter().enumerate() {
                    let (sin, cos) = (pos as f32 * f).sin_cos();
                    let (sin, cos) = (sin * 1.25, cos * 1.25);
                    let (a, b) = match style {
                        RopeStyle::Normal => (2 * i, 2 * i + 1),
                        RopeStyle::Neox => (i, i + half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos - x1 * sin;
                    head[b] = x0 * sin + x1 * cos;
                }
            }
            assert_eq!(q, want_q, "{style:?} queries");
            assert_eq!(k, want_k, "{style:?} keys");
        }
    }

    #[test]
    fn rope_preserves_norm_and_is_identity_at_zero() {
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let rope = Rope::new(style, 8, 10000.0, 1.0);
            let orig: Vec<f32> = (0..16).map(|i| i as f32 * 0.1 - 0.7).collect();
            let mut x = orig.clone();
            rope.apply(&mut x, 8, 0);
            assert_eq!(x, orig);
            rope.apply(&mut x, 8, 17);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = x.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-4);
            assert_ne!(x, orig);
        }
    }

    #[test]
    fn rope_rotates_expected_pairs() {
        // Normal pairs (0,1); neox pairs (0,2) for head_dim 4.
        let mut x = [1.0, 0.0, 0.0, 0.0];
        Rope::new(RopeStyle::Normal, 4, 10000.0, 1.0).apply(&mut x, 4, 1);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
        let mut y = [1.0, 0.0, 0.0, 0.0];
        Rope::new(RopeStyle::Neox, 4, 10000.0, 1.0).apply(&mut y, 4, 1);
        assert!((y[0] - 1f32.cos()).abs() < 1e-6 && (y[2] - 1f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn gelu_known_values() {
        assert_eq!(gelu(0.0), 0.0);
        assert!((gelu(1.0) - 0.841_192).abs() < 1e-4);
        assert!((gelu(-1.0) + 0.158_808).abs() < 1e-4);
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot_f32(&a, &b) - naive).abs() < 1e-3);
    }
}

/// f16 rows (little-endian bytes), as the KV cache stores them.
pub mod f16 {
    use crate::quant::{f16::F16, QuantFormat, VecDotFn};
    use std::sync::OnceLock;

    fn dot_fn() -> VecDotFn {
        static DOT: OnceLock<VecDotFn> = OnceLock::new();
        *DOT.get_or_init(|| F16.vec_dot())
    }

    /// Converts f32 values to f16 bytes (`dst.len() == 2 * src.len()`).
    pub fn from_f32(src: &[f32], dst: &mut [u8]) {
        F16.quantize_row_fast(src, dst);
    }

    /// Converts f16 bytes to f32 values (`src.len() == 2 * dst.len()`).
    pub fn to_f32(src: &[u8], dst: &mut [f32]) {
        assert_eq!(src.len(), 2 * dst.len(), "f16 row length");
        #[cfg(target_arch = "x86_64")]
        if crate::simd::features().avx2 {
            // SAFETY: AVX2, FMA and F16C were detected; lengths are checked above.
            unsafe { to_f32_avx2(src, dst) };
            return;
        }
        to_f32_scalar(src, dst);
    }

    /// The reference of [`to_f32`].
    pub fn to_f32_scalar(src: &[u8], dst: &mut [f32]) {
        for (o, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
            *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        }
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C, and `src.len() == 2 * dst.len()`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn to_f32_avx2(src: &[u8], dst: &mut [f32]) {
        use std::arch::x86_64::*;
        let n8 = dst.len() / 8 * 8;
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
        for i in (0..n8).step_by(8) {
            _mm256_storeu_ps(dp.add(i), crate::simd::x86::load_f16x8(sp.add(2 * i)));
        }
        to_f32_scalar(&src[2 * n8..], &mut dst[n8..]);
    }

    /// Dot product of two f16 rows of `n` elements, accumulated in f32.
    pub fn dot(n: usize, a: &[u8], b: &[u8]) -> f32 {
        dot_fn()(n, a, b)
    }

    /// y += a * x, with x an f16 row (`x.len() == 2 * y.len()`).
    pub fn axpy(y: &mut [f32], a: f32, x: &[u8]) {
        assert_eq!(x.len(), 2 * y.len(), "f16 row length");
        #[cfg(target_arch = "x86_64")]
        if crate::simd::features().avx2 {
            // SAFETY: AVX2, FMA and F16C were detected; lengths are checked above.
            unsafe { axpy_avx2(y, a, x) };
            return;
        }
        axpy_scalar(y, a, x);
    }

    /// acc[j] += Σ_p w[p] · row_p[j] for the f16 rows `row_p = rows[p * stride..]` (bytes),
    /// `p < w.len()`: the value side of attention over a tile of positions.
    ///
    /// Panics if `rows` is too short for `w.len()` rows of `acc.len()` elements.
    pub fn weighted_sum(acc: &mut [f32], w: &[f32], rows: &[u8], stride: usize) {
        if w.is_empty() {
            return;
        }
        let need = (w.len() - 1)
            .checked_mul(stride)
            .and_then(|s| s.checked_add(2 * acc.len()));
        assert!(
            need.is_some_and(|n| n <= rows.len()),
            "f16 rows for a weighted sum"
        );
        #[cfg(target_arch = "x86_64")]
        if crate::simd::features().avx2 {
            // SAFETY: AVX2, FMA and F16C were detected; the rows were checked above.
            unsafe { weighted_sum_avx2(acc, w, rows, stride) };
            return;
        }
        #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
        if crate::simd::features().neon {
            // SAFETY: NEON was detected; the rows were checked above.
            unsafe { weighted_sum_neon(acc, w, rows, stride) };
            return;
        }
        weighted_sum_scalar(acc, w, rows, stride);
    }

    /// The reference of [`weighted_sum`].
    pub fn weighted_sum_scalar(acc: &mut [f32], w: &[f32], rows: &[u8], stride: usize) {
        for (p, &wp) in w.iter().enumerate() {
            axpy_scalar(acc, wp, &rows[p * stride..p * stride + 2 * acc.len()]);
        }
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C, and `rows` hold `w.len()` rows as checked by
    /// [`weighted_sum`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weighted_sum_avx2(acc: &mut [f32], w: &[f32], rows: &[u8], stride: usize) {
        use crate::simd::x86::load_f16x8;
        use std::arch::x86_64::*;
        const REGS: usize = 8;
        let n8 = acc.len() / 8 * 8;
        let (ap, rp) = (acc.as_mut_ptr(), rows.as_ptr());
        // Column chunks of up to 64 stay in registers across all positions.
        let mut j = 0;
        while j < n8 {
            let width = (n8 - j).min(8 * REGS) / 8;
            let mut a = [_mm256_setzero_ps(); REGS];
            for (i, ai) in a.iter_mut().enumerate().take(width) {
                *ai = _mm256_loadu_ps(ap.add(j + 8 * i));
            }
            for (p, &wp) in w.iter().enumerate() {
                let wv = _mm256_set1_ps(wp);
                let row = rp.add(p * stride + 2 * j);
                if width == REGS {
                    for (i, ai) in a.iter_mut().enumerate() {
                        *ai = _mm256_fmadd_ps(wv, load_f16x8(row.add(16 * i)), *ai);
                    }
                } else {
                    for (i, ai) in a.iter_mut().enumerate().take(width) {
                        *ai = _mm256_fmadd_ps(wv, load_f16x8(row.add(16 * i)), *ai);
                    }
                }
            }
            for (i, ai) in a.iter().enumerate().take(width) {
                _mm256_storeu_ps(ap.add(j + 8 * i), *ai);
            }
            j += 8 * width;
        }
        // The columns past the last whole vector.
        weighted_sum_scalar(&mut acc[n8..], w, &rows[2 * n8..], stride);
    }

    /// [`weighted_sum_avx2`] in NEON vectors of 4: column chunks of up to 64 in 16
    /// registers across all positions.
    ///
    /// # Safety
    /// NEON must be available, and `rows` hold `w.len()` rows as checked by [`weighted_sum`].
    #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
    #[target_feature(enable = "neon")]
    unsafe fn weighted_sum_neon(acc: &mut [f32], w: &[f32], rows: &[u8], stride: usize) {
        use crate::simd::neon::load_f16x8;
        use std::arch::aarch64::*;
        const REGS: usize = 8;
        let n8 = acc.len() / 8 * 8;
        let (ap, rp) = (acc.as_mut_ptr(), rows.as_ptr());
        let mut j = 0;
        while j < n8 {
            let width = (n8 - j).min(8 * REGS) / 8;
            let mut a = [[vdupq_n_f32(0.0); 2]; REGS];
            for (i, ai) in a.iter_mut().enumerate().take(width) {
                ai[0] = vld1q_f32(ap.add(j + 8 * i));
                ai[1] = vld1q_f32(ap.add(j + 8 * i + 4));
            }
            for (p, &wp) in w.iter().enumerate() {
                let wv = vdupq_n_f32(wp);
                let row = rp.add(p * stride + 2 * j);
                for (i, ai) in a.iter_mut().enumerate().take(width) {
                    let (lo, hi) = load_f16x8(row.add(16 * i));
                    ai[0] = vfmaq_f32(ai[0], wv, lo);
                    ai[1] = vfmaq_f32(ai[1], wv, hi);
                }
            }
            for (i, ai) in a.iter().enumerate().take(width) {
                vst1q_f32(ap.add(j + 8 * i), ai[0]);
                vst1q_f32(ap.add(j + 8 * i + 4), ai[1]);
            }
            j += 8 * width;
        }
        // The columns past the last whole vector.
        weighted_sum_scalar(&mut acc[n8..], w, &rows[2 * n8..], stride);
    }

    pub fn axpy_scalar(y: &mut [f32], a: f32, x: &[u8]) {
        for (o, b) in y.iter_mut().zip(x.chunks_exact(2)) {
            *o += a * half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        }
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C, and `x.len() == 2 * y.len()`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn axpy_avx2(y: &mut [f32], a: f32, x: &[u8]) {
        use std::arch::x86_64::*;
        let n8 = y.len() / 8 * 8;
        let va = _mm256_set1_ps(a);
        let (yp, xp) = (y.as_mut_ptr(), x.as_ptr());
        let mut i = 0;
        while i < n8 {
            let xv = crate::simd::x86::load_f16x8(xp.add(2 * i));
            let yv = _mm256_loadu_ps(yp.add(i));
            _mm256_storeu_ps(yp.add(i), _mm256_fmadd_ps(va, xv, yv));
            i += 8;
        }
        axpy_scalar(&mut y[n8..], a, &x[2 * n8..]);
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trip_dot_axpy() {
            let a: Vec<f32> = (0..40).map(|i| i as f32 * 0.25 - 3.0).collect();
            let b: Vec<f32> = (0..40).map(|i| 1.0 - i as f32 * 0.125).collect();
            let (mut ab, mut bb) = (vec![0u8; 80], vec![0u8; 80]);
            super::from_f32(&a, &mut ab);
            super::from_f32(&b, &mut bb);
            let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((super::dot(40, &ab, &bb) - exact).abs() < 1e-3);
            let mut y = vec![1.0f32; 40];
            super::axpy(&mut y, 2.0, &ab);
            let (mut wide, mut plain) = (vec![0f32; 40], vec![0f32; 40]);
            super::to_f32(&ab, &mut wide);
            super::to_f32_scalar(&ab, &mut plain);
            assert_eq!(wide, plain);
            assert!(wide.iter().zip(&a).all(|(x, y)| (x - y).abs() < 1e-3));
            let mut z = vec![1.0f32; 40];
            super::axpy_scalar(&mut z, 2.0, &ab);
            for (i, v) in y.iter().enumerate() {
                assert!((*v - (1.0 + 2.0 * a[i])).abs() < 1e-5);
                assert!((*v - z[i]).abs() < 1e-5);
            }
        }
    }
}
