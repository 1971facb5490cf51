//! Mistral 3 (Ministral 3 and friends): Llama's layout with YaRN rope (its log multiplier and
//! beta values read from the file) and, when `attention.temperature_scale` is set, queries
//! scaled up with the log of the position in units of the original context.

use super::decoder::Decoder;
use super::Architecture;
use crate::blocks::{Activation, AttnShape, EmbeddingAndHead, PreNormLayer};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::rope::RopeConfig;
use crate::weights::TensorLoader;
use kernels::ops::RopeStyle;

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let hp = t.hparams();
    let io = EmbeddingAndHead::load(t, c.n_embd, c.rms_eps)?;
    let shape = AttnShape::of(c);
    let rope = RopeConfig::of(t, c, RopeStyle::Normal)?
        .with_factor_tensors(t)?
        .build();
    let layers = (0..c.n_layer)
        .map(|l| PreNormLayer::load_rms(t, l, c, shape, Activation::Silu))
        .collect::<Result<Vec<_>, EngineError>>()?;
    let mut d = Decoder::plain(io, layers, rope, shape);
    if let Some(scale) = hp
        .opt_f32("attention.temperature_scale")?
        .filter(|&s| s != 0.0)
    {
        let floor = hp
            .opt_usize("rope.scaling.original_context_length")?
            .unwrap_or(c.n_ctx_train);
        d.q_temperature = Some((scale, floor));
    }
    if let Some(s) = hp.opt_positive("attention.scale")? {
        d.attn_scale = s;
    }
    Ok(Box::new(d))
}
