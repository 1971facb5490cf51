//! gpt-oss (OpenAI's open-weight mixture of experts): every layer's feed-forward is a mixture
//! whose router has a bias and whose chosen experts are weighted by a softmax over just the
//! chosen scores; each expert projection has a bias and the gate uses a clamped SwiGLU.
//! Attention has Q/K/V/O biases and one learned sink logit per head; layers alternate
//! between a sliding window (even layers) and full attention; rope is neox-style with YaRN
//! on both kinds of layer. The output head is its own matrix.
//!
//! Per layer, with x the residual stream `[n_tokens, n_embd]`:
//!   h = x + (Wo · attn_sinks(rope(Wq · rms(x) + bq), rope(Wk · rms(x) + bk), Wv · rms(x) + bv) + bo)
//!   x = h + Σ_{e ∈ top-k(r)} softmax_k(r)_e · (Wdown_e · swiglu_oai(Wgate_e · n + bg_e, Wup_e · n + bu_e) + bd_e)
//! where n = rms_post_attn(h), r = Wrouter · n + brouter, and
//!   swiglu_oai(g, u) = min(g, 7) · sigmoid(1.702 · min(g, 7)) · (clamp(u, -7, 7) + 1).
//! Logits = Wout · rms(x).

use super::decoder::{Decoder, LayerAttn};
use super::Architecture;
use crate::blocks::{
    expert_weights_scale, experts_used, Activation, AttnShape, AttnWeights, EmbeddingAndHead, Ffn,
    Gating, MoeParams, MoeWeights, Norm, PreNormLayer,
};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::rope::RopeConfig;
use crate::weights::TensorLoader;
use kernels::ops::RopeStyle;

/// Without `attention.sliding_window_pattern`, layers alternate: sliding, full, sliding, …
/// (a layer slides unless it is the last of each group of this many).
const DEFAULT_SLIDING_PATTERN: usize = 2;

/// The clamped SwiGLU's constants, fixed by the model (not in the file's metadata).
const SWIGLU_ALPHA: f32 = 1.702;
const SWIGLU_LIMIT: f32 = 7.0;

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let hp = t.hparams();
    let eps = c.rms_eps;
    let io = EmbeddingAndHead::load(t, c.n_embd, eps)?;
    let shape = AttnShape::of(c);
    let n_expert = hp.usize("expert_count")?;
    let n_used = experts_used(&hp, n_expert)?;
    let n_ff_exp = hp.usize("expert_feed_forward_length")?;
    // A window is what makes the sliding layers differ; llama.cpp requires one too.
    let window = hp.usize("attention.sliding_window")?;
    let pattern = hp
        .opt_count("attention.sliding_window_pattern")?
        .unwrap_or(DEFAULT_SLIDING_PATTERN);
    // The routing is fixed by the architecture, whatever `expert_gating_func` says: softmax
    // over the k chosen (biased) router logits, which already sum to 1.
    let moe = MoeParams {
        n_used,
        gating: Gating::SoftmaxSelected,
        normalize: false,
        weights_scale: expert_weights_scale(&hp)?,
        act: Activation::SwigluClamped {
            alpha: SWIGLU_ALPHA,
            limit: SWIGLU_LIMIT,
        },
    };
    let rope = RopeConfig::of(t, c, RopeStyle::Neox)?;
    // Sliding layers keep the same scaling, with their own base when the file names one.
    let base_sliding = hp
        .opt_positive("rope.freq_base_swa")?
        .unwrap_or(c.rope_base);
    // Pattern 0 means every layer slides.
    let sliding = |l: usize| pattern == 0 || l % pattern < pattern - 1;
    let layers = (0..c.n_layer)
        .map(|l| {
            let norm = |s: &str| Norm::rms(t, &format!("blk.{l}.{s}"), c.n_embd, eps);
            Ok(PreNormLayer {
                attn_norm: norm("attn_norm")?,
                attn: AttnWeights::load(t, l, c.n_embd, shape)?.with_sinks(t, l, shape)?,
                // The experts' input norm is named after the attention it follows.
                ffn_norm: norm("post_attention_norm")?,
                ffn: Ffn::Experts(MoeWeights::load(t, l, c.n_embd, n_ff_exp, n_expert)?, moe),
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let mut d = Decoder::plain(io, layers, rope.build(), shape);
    d.ropes.push(rope.build_with_base(base_sliding));
    d.layer_attn = (0..c.n_layer)
        .map(|l| LayerAttn {
            rope: Some(usize::from(sliding(l))),
            window: sliding(l).then_some(window),
        })
        .collect();
    Ok(Box::new(d))
}
