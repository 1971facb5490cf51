//! OLMo 2: norms after each sub-block instead of before (no pre-norms), RMS norms over the
//! whole query and key projections (not per head), NeoX rope.
//!
//!   h = x + rms_post_attn(Wo · attn(rope(rms_q(Wq · x)), rope(rms_k(Wk · x)), Wv · x))
//!   x = h + rms_post_ffw(Wdown · (silu(Wgate · h) * Wup · h))

use super::Architecture;
use crate::blocks::{
    self, add_residual, Activation, AttnParams, AttnShape, AttnWeights, EmbeddingAndHead,
    FfnWeights, LogitRows, Norm, Runtime,
};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::rope::{RopeConfig, RopeSet};
use crate::weights::TensorLoader;
use kernels::ops::RopeStyle;

struct Layer {
    attn: AttnWeights,
    post_attn_norm: Norm,
    ffn: FfnWeights,
    post_ffw_norm: Norm,
}

struct Olmo2 {
    shape: AttnShape,
    rope: RopeSet,
    io: EmbeddingAndHead,
    layers: Vec<Layer>,
}

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    if let Some(w) = c.sliding_window {
        // OLMo 3 files reuse this architecture with sliding-window layers.
        return Err(EngineError::BadHyperparameter {
            key: "olmo2.attention.sliding_window".into(),
            value: w.to_string(),
            why: "sliding-window OLMo (OLMo 3) is not supported yet".into(),
        });
    }
    let eps = c.rms_eps;
    let shape = AttnShape::of(c);
    let layers = (0..c.n_layer)
        .map(|l| {
            let v = |s: &str| Norm::rms(t, &format!("blk.{l}.{s}"), c.n_embd, eps);
            Ok(Layer {
                attn: AttnWeights::load(t, l, c.n_embd, shape)?
                    .with_full_norms(t, l, shape, eps)?,
                post_attn_norm: v("post_attention_norm")?,
                ffn: FfnWeights::gated(t, l, c.n_embd, c.n_ff)?,
                post_ffw_norm: v("post_ffw_norm")?,
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let rope = RopeConfig::of(t, c, RopeStyle::Neox)?;
    Ok(Box::new(Olmo2 {
        shape,
        rope: rope.build(),
        io: EmbeddingAndHead::load(t, c.n_embd, eps)?,
        layers,
    }))
}

impl Architecture for Olmo2 {
    fn forward(
        &self,
        rt: &mut Runtime,
        tokens: &[u32],
        rows: LogitRows,
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        self.io.embed(rt, tokens, 1.0)?;
        let params = AttnParams::causal(self.shape, Some(&self.rope));
        for (l, layer) in self.layers.iter().enumerate() {
            // No pre-norm: the sub-blocks read the residual stream itself.
            let s = &mut *rt.scratch;
            blocks::sized(&mut s.xn, s.x.len()).copy_from_slice(&s.x);
            blocks::attention_block(rt, l, &layer.attn, &params);
            layer
                .post_attn_norm
                .rows_inplace(rt.backend, &mut rt.scratch.proj);
            add_residual(rt, 1.0);
            let s = &mut *rt.scratch;
            blocks::sized(&mut s.xn, s.x.len()).copy_from_slice(&s.x);
            blocks::ffn_block(rt, &layer.ffn, Activation::Silu);
            layer
                .post_ffw_norm
                .rows_inplace(rt.backend, &mut rt.scratch.proj);
            add_residual(rt, 1.0);
        }
        self.io.logits(rt, rows, logits);
        Ok(())
    }

    fn n_vocab(&self) -> usize {
        self.io.n_vocab()
    }
}
