//! StarCoder 2: LayerNorms with biases, biases on every projection, a plain GELU MLP (no
//! gate) and NeoX-style rope.
//!
//!   h = x + Wo · attn(rope(Wq · ln(x) + bq), rope(Wk · ln(x) + bk), Wv · ln(x) + bv) + bo
//!   x = h + Wdown · gelu(Wup · ln(h) + bup) + bdown

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
    let shape = AttnShape::of(c);
    let eps = c.norm_eps.unwrap_or(1e-5);
    let rope = RopeConfig::of(t, c, RopeStyle::Neox)?.build();
    let layers = (0..c.n_layer)
        .map(|l| {
            Ok(PreNormLayer {
                attn_norm: Norm::layer(t, &format!("blk.{l}.attn_norm"), c.n_embd, eps)?,
                attn: AttnWeights::load(t, l, c.n_embd, shape)?,
                ffn_norm: Norm::layer(t, &format!("blk.{l}.ffn_norm"), c.n_embd, eps)?,
                ffn: Ffn::Dense(
                    FfnWeights::plain(t, l, c.n_embd, c.n_ff)?,
                    Activation::GeluTanh,
                ),
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let norm = Norm::layer(t, "output_norm", c.n_embd, eps)?;
    let io = EmbeddingAndHead::load_with_norm(t, c.n_embd, norm)?;
    Ok(Box::new(Decoder::plain(io, layers, rope, shape)))
}
