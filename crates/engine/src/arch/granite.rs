//! IBM Granite 3: Llama's layout with four multipliers from the file: the embeddings are
//! scaled by `embedding_scale`, each sub-block's output by `residual_scale` before it joins
//! the residual stream, query-key scores by `attention.scale`, and the logits divided by
//! `logit_scale`.

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
    let rope = RopeConfig::of(t, c, RopeStyle::Normal)?.build();
    let layers = (0..c.n_layer)
        .map(|l| PreNormLayer::load_rms(t, l, c, shape, Activation::Silu))
        .collect::<Result<Vec<_>, EngineError>>()?;
    let mut d = Decoder::plain(io, layers, rope, shape);
    d.embed_scale = hp.opt_positive("embedding_scale")?.unwrap_or(1.0);
    d.residual_scale = hp.opt_positive("residual_scale")?.unwrap_or(1.0);
    if let Some(s) = hp.opt_positive("attention.scale")? {
        d.attn_scale = s;
    }
    d.logit_divisor = hp.opt_positive("logit_scale")?.unwrap_or(1.0);
    Ok(Box::new(d))
}
