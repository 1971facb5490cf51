//! Gemma 2: every other layer attends through a sliding window (even layers slide), attention
//! scores and final logits are soft-capped (cap · tanh(x / cap)), norms sit before and after
//! both sub-blocks, GeGLU, and embeddings are scaled by sqrt(n_embd). Output tied to the
//! embedding.
//!
//!   h = x + rms_post_attn(Wo · attn(rope(Wq · rms(x)), rope(Wk · rms(x)), Wv · rms(x)))
//!   x = h + rms_post_ffw(Wdown · (gelu(Wgate · rms(h)) * Wup · rms(h)))

use super::Architecture;
use crate::blocks::{AttnParams, AttnShape, EmbeddingAndHead, LogitRows, Runtime, SandwichLayer};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::rope::{RopeConfig, RopeSet};
use crate::weights::TensorLoader;
use kernels::ops::{self, RopeStyle};

/// Caps Gemma 2 was trained with, for files that do not name them.
const DEFAULT_ATTN_CAP: f32 = 50.0;
const DEFAULT_FINAL_CAP: f32 = 30.0;
/// Gemma 2's default window, for files that do not name one.
const DEFAULT_WINDOW: usize = 4096;

struct Gemma2 {
    n_embd: usize,
    shape: AttnShape,
    scale: f32,
    window: usize,
    attn_cap: f32,
    final_cap: f32,
    rope: RopeSet,
    io: EmbeddingAndHead,
    layers: Vec<SandwichLayer>,
}

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let hp = t.hparams();
    let eps = c.rms_eps;
    let shape = AttnShape::of(c);
    let layers = (0..c.n_layer)
        .map(|l| SandwichLayer::load(t, l, c, shape))
        .collect::<Result<Vec<_>, EngineError>>()?;
    // The 27B model (46 layers) scales queries by the model width per head.
    let scale_dim = if c.n_layer == 46 {
        c.n_embd / c.n_head
    } else {
        c.head_dim
    };
    let rope = RopeConfig::of(t, c, RopeStyle::Neox)?;
    Ok(Box::new(Gemma2 {
        n_embd: c.n_embd,
        shape,
        scale: 1.0 / (scale_dim as f32).sqrt(),
        window: c.sliding_window.unwrap_or(DEFAULT_WINDOW),
        attn_cap: hp
            .opt_positive("attn_logit_softcapping")?
            .unwrap_or(DEFAULT_ATTN_CAP),
        final_cap: hp
            .opt_positive("final_logit_softcapping")?
            .unwrap_or(DEFAULT_FINAL_CAP),
        rope: rope.build(),
        io: EmbeddingAndHead::load(t, c.n_embd, eps)?,
        layers,
    }))
}

impl Architecture for Gemma2 {
    fn forward(
        &self,
        rt: &mut Runtime,
        tokens: &[u32],
        rows: LogitRows,
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        self.io.embed(rt, tokens, (self.n_embd as f32).sqrt())?;
        for (l, layer) in self.layers.iter().enumerate() {
            let params = AttnParams {
                scale: self.scale,
                window: (l % 2 == 0).then_some(self.window),
                softcap: Some(self.attn_cap),
                ..AttnParams::causal(self.shape, Some(&self.rope))
            };
            layer.run(rt, l, &params);
        }
        let start = logits.len();
        self.io.logits(rt, rows, logits);
        if rows != LogitRows::Hidden {
            ops::softcap_inplace(&mut logits[start..], self.final_cap);
        }
        Ok(())
    }

    fn n_vocab(&self) -> usize {
        self.io.n_vocab()
    }
}
