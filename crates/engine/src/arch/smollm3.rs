//! SmolLM3: Llama's layout where every fourth layer has no rotary embedding (NoPE layers
//! attend by content alone, which helps long contexts).

use super::decoder::Decoder;
use super::Architecture;
use crate::blocks::{Activation, AttnShape, EmbeddingAndHead, PreNormLayer};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::rope::RopeConfig;
use crate::weights::TensorLoader;
use kernels::ops::RopeStyle;

/// Layers l with (l + 1) % NO_ROPE_STEP == 0 skip rope.
const NO_ROPE_STEP: usize = 4;

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let io = EmbeddingAndHead::load(t, c.n_embd, c.rms_eps)?;
    let shape = AttnShape::of(c);
    let rope = RopeConfig::of(t, c, RopeStyle::Normal)?.build();
    let layers = (0..c.n_layer)
        .map(|l| PreNormLayer::load_rms(t, l, c, shape, Activation::Silu))
        .collect::<Result<Vec<_>, EngineError>>()?;
    let mut d = Decoder::plain(io, layers, rope, shape);
    for (l, la) in d.layer_attn.iter_mut().enumerate() {
        if (l + 1) % NO_ROPE_STEP == 0 {
            la.rope = None;
        }
    }
    Ok(Box::new(d))
}
