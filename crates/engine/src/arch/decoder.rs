//! The pre-norm decoder most architectures are: token embedding (times a scale), layers of
//! [`PreNormLayer`], final norm and head, with the knobs that differ between families spelled
//! out as data each architecture file fills in (rope per layer, window per layer, Granite's
//! multipliers, Mistral 3's query temperature). Architectures with another layer shape
//! (Gemma, OLMo 2, GPT-2, BERT) have their own forward pass.

use super::Architecture;
use crate::blocks::{AttnParams, AttnShape, EmbeddingAndHead, LogitRows, PreNormLayer, Runtime};
use crate::error::EngineError;
use crate::rope::RopeSet;
use kernels::ops;

/// How one layer's attention differs from the model's default.
pub struct LayerAttn {
    /// `None`: this layer has no rotary embedding (SmolLM3's every fourth layer).
    pub rope: Option<usize>,
    pub window: Option<usize>,
}

pub struct Decoder {
    pub io: EmbeddingAndHead,
    pub layers: Vec<PreNormLayer>,
    pub layer_attn: Vec<LayerAttn>,
    /// Rotary embeddings the layers pick from by index.
    pub ropes: Vec<RopeSet>,
    pub shape: AttnShape,
    /// Query-key scale (1/sqrt(head_dim) unless the file says otherwise).
    pub attn_scale: f32,
    pub q_temperature: Option<(f32, usize)>,
    pub embed_scale: f32,
    pub residual_scale: f32,
    /// Logits are divided by this (Granite's `logit_scale`).
    pub logit_divisor: f32,
}

impl Decoder {
    /// Every layer with rope 0 and no window, no multipliers.
    pub fn plain(
        io: EmbeddingAndHead,
        layers: Vec<PreNormLayer>,
        rope: RopeSet,
        shape: AttnShape,
    ) -> Decoder {
        let layer_attn = (0..layers.len())
            .map(|_| LayerAttn {
                rope: Some(0),
                window: None,
            })
            .collect();
        Decoder {
            io,
            layers,
            layer_attn,
            ropes: vec![rope],
            shape,
            attn_scale: 1.0 / (shape.head_dim as f32).sqrt(),
            q_temperature: None,
            embed_scale: 1.0,
            residual_scale: 1.0,
            logit_divisor: 1.0,
        }
    }
}

impl Architecture for Decoder {
    fn forward(
        &self,
        rt: &mut Runtime,
        tokens: &[u32],
        rows: LogitRows,
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        self.io.embed(rt, tokens, self.embed_scale)?;
        for (l, (layer, la)) in self.layers.iter().zip(&self.layer_attn).enumerate() {
            let params = AttnParams {
                scale: self.attn_scale,
                window: la.window,
                q_temperature: self.q_temperature,
                ..AttnParams::causal(self.shape, la.rope.map(|r| &self.ropes[r]))
            };
            layer.run(rt, l, &params, self.residual_scale);
        }
        let start = logits.len();
        self.io.logits(rt, rows, logits);
        if self.logit_divisor != 1.0 && rows != LogitRows::Hidden {
            ops::scale_inplace(&mut logits[start..], 1.0 / self.logit_divisor);
        }
        Ok(())
    }

    fn n_vocab(&self) -> usize {
        self.io.n_vocab()
    }
}
