//! Qwen 3 and Qwen 3 MoE: Llama's layout with per-head RMS norms on queries and keys (before
//! rope), NeoX-style rope and no biases; the MoE variant replaces every feed-forward with 128
//! (or so) experts of which 8 run, softmax-gated and renormalized.
//!
//!   h = x + Wo · attn(rope(rms_q(Wq · rms(x))), rope(rms_k(Wk · rms(x))), Wv · rms(x))
//!   x = h + ffn(rms(h))

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
    let rope = RopeConfig::of(t, c, RopeStyle::Neox)?.build();
    let layers = (0..c.n_layer)
        .map(|l| {
            let mut layer = PreNormLayer::load_rms(t, l, c, shape, Activation::Silu)?;
            layer.attn = layer.attn.with_head_norms(t, l, shape, c.rms_eps)?;
            Ok(layer)
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    Ok(Box::new(Decoder::plain(io, layers, rope, shape)))
}
