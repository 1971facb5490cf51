//! Phi-3 / Phi-3.5 / Phi-4-mini: Llama's layout with the query, key and value projections
//! fused in one `attn_qkv` matrix, gate and up fused in `ffn_up`, NeoX rope over part of each
//! head, and LongRoPE: per-pair frequency divisors for short and long contexts (the long
//! ones when a sequence's context exceeds the original one) with a magnitude factor.
//! (The files name a sliding window, which llama.cpp does not apply either: the models
//! were trained with full attention in practice.)

use super::decoder::Decoder;
use super::Architecture;
use crate::blocks::{
    Activation, AttnShape, AttnWeights, EmbeddingAndHead, Ffn, FfnWeights, Norm, PreNormLayer,
};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::rope::RopeConfig;
use crate::weights::TensorLoader;
use kernels::ops::RopeStyle;

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let io = EmbeddingAndHead::load(t, c.n_embd, c.rms_eps)?;
    let shape = AttnShape::of(c);
    let rope = RopeConfig::of(t, c, RopeStyle::Neox)?
        .with_factor_tensors(t)?
        .build();
    let eps = c.rms_eps;
    let layers = (0..c.n_layer)
        .map(|l| {
            Ok(PreNormLayer {
                attn_norm: Norm::rms(t, &format!("blk.{l}.attn_norm"), c.n_embd, eps)?,
                attn: AttnWeights::load(t, l, c.n_embd, shape)?,
                ffn_norm: Norm::rms(t, &format!("blk.{l}.ffn_norm"), c.n_embd, eps)?,
                ffn: Ffn::Dense(
                    FfnWeights::gated_or_fused(t, l, c.n_embd, c.n_ff)?,
                    Activation::Silu,
                ),
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    Ok(Box::new(Decoder::plain(io, layers, rope, shape)))
}
