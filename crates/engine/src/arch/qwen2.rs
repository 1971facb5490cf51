//! Qwen 2 / 2.5 (and DeepSeek-R1 distills on Qwen): Llama's layout with biases on the query,
//! key and value projections and NeoX-style rope (YaRN when the file asks for it).
//!
//!   h = x + Wo · attn(rope(Wq · rms(x) + bq), rope(Wk · rms(x) + bk), Wv · rms(x) + bv)
//!   x = h + Wdown · (silu(Wgate · rms(h)) * Wup · rms(h))

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
    // The biases are optional in the blocks; Qwen 2 requires them.
    for l in 0..c.n_layer {
        for p in ["attn_q", "attn_k", "attn_v"] {
            let name = format!("blk.{l}.{p}.bias");
            if !t.has(&name) {
                return Err(EngineError::MissingTensor {
                    arch: c.arch.clone(),
                    name,
                });
            }
        }
    }
    let layers = (0..c.n_layer)
        .map(|l| PreNormLayer::load_rms(t, l, c, shape, Activation::Silu))
        .collect::<Result<Vec<_>, EngineError>>()?;
    Ok(Box::new(Decoder::plain(io, layers, rope, shape)))
}
