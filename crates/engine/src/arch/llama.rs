//! Llama (and the models sharing its layout: Llama 2/3/3.1, Mistral, Mixtral, TinyLlama,
//! SmolLM 2).
//!
//! Per layer, with x the residual stream `[n_tokens, n_embd]`:
//!   h = x + Wo · attn(rope(Wq · rms(x)), rope(Wk · rms(x)), Wv · rms(x))
//!   x = h + ffn(rms(h))
//! where ffn is Wdown · (silu(Wgate · h) * Wup · h), or a mixture of such experts when
//! `llama.expert_count` > 0 (Mixtral). Rope may carry Llama 3.1's `rope_freqs` factors.
//! Logits = Wout · rms(x), with Wout tied to the token embedding when absent.

use super::decoder::Decoder;
use super::Architecture;
use crate::blocks::{Activation, AttnShape, EmbeddingAndHead, PreNormLayer};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::rope::RopeConfig;
use crate::weights::TensorLoader;
use kernels::ops::RopeStyle;

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let io = EmbeddingAndHead::load(t, c.n_embd, c.rms_eps)?;
    let shape = AttnShape::of(c);
    let rope = RopeConfig::of(t, c, RopeStyle::Normal)?
        .with_factor_tensors(t)?
        .build();
    let layers = (0..c.n_layer)
        .map(|l| PreNormLayer::load_rms(t, l, c, shape, Activation::Silu))
        .collect::<Result<Vec<_>, EngineError>>()?;
    Ok(Box::new(Decoder::plain(io, layers, rope, shape)))
}
