//! Gemma 3: interleaved sliding-window and global attention (every sixth layer global), a
//! different rope base for each kind, per-head QK norms, norms before and after both
//! sub-blocks, GeGLU, and embeddings scaled by sqrt(n_embd). Output tied to the embedding.
//!
//! Per layer, with x the residual stream `[n_tokens, n_embd]`:
//!   h = x + rms_post_attn(Wo · attn(rope(rms_q(Wq · rms(x))) * scale, rope(rms_k(Wk · rms(x))), Wv · rms(x)))
//!   x = h + rms_post_ffw(Wdown · (gelu(Wgate · rms(h)) * Wup · rms(h)))

use super::Architecture;
use crate::blocks::{AttnParams, AttnShape, EmbeddingAndHead, LogitRows, Runtime, SandwichLayer};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::rope::{RopeConfig, RopeSet};
use crate::weights::TensorLoader;
use kernels::ops::RopeStyle;

/// Gemma 3 makes every sixth layer global and the others sliding-window.
const SLIDING_PATTERN: usize = 6;
/// Rope base of the sliding-window layers (the metadata's base is for the global ones).
const SLIDING_ROPE_BASE: f32 = 10_000.0;

struct Gemma3 {
    n_embd: usize,
    shape: AttnShape,
    scale: f32,
    window: Option<usize>,
    rope_global: RopeSet,
    rope_local: RopeSet,
    io: EmbeddingAndHead,
    layers: Vec<SandwichLayer>,
}

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let eps = c.rms_eps;
    let io = EmbeddingAndHead::load(t, c.n_embd, eps)?;
    let shape = AttnShape::of(c);
    let layers = (0..c.n_layer)
        .map(|l| {
            let mut layer = SandwichLayer::load(t, l, c, shape)?;
            layer.attn = layer.attn.with_head_norms(t, l, shape, eps)?;
            Ok(layer)
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    // The 27B model scales queries by the model width per head; the others by the head size.
    let scale_dim = if c.n_layer == 62 {
        c.n_embd / c.n_head
    } else {
        c.head_dim
    };
    let rope = RopeConfig::of(t, c, RopeStyle::Neox)?;
    // The sliding layers keep their own base and no scaling.
    let local = RopeConfig {
        scaling: crate::rope::RopeScaling::None,
        attn_factor: 1.0,
        ..rope.clone()
    };
    Ok(Box::new(Gemma3 {
        n_embd: c.n_embd,
        shape,
        scale: 1.0 / (scale_dim as f32).sqrt(),
        window: c.sliding_window,
        rope_global: rope.build(),
        rope_local: local.build_with_base(SLIDING_ROPE_BASE),
        io,
        layers,
    }))
}

impl Architecture for Gemma3 {
    fn forward(
        &self,
        rt: &mut Runtime,
        tokens: &[u32],
        rows: LogitRows,
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        self.io.embed(rt, tokens, (self.n_embd as f32).sqrt())?;
        for (l, layer) in self.layers.iter().enumerate() {
            let sliding = (l + 1) % SLIDING_PATTERN != 0;
            let params = AttnParams {
                scale: self.scale,
                window: if sliding { self.window } else { None },
                ..AttnParams::causal(
                    self.shape,
                    Some(if sliding {
                        &self.rope_local
                    } else {
                        &self.rope_global
                    }),
                )
            };
            layer.run(rt, l, &params);
        }
        self.io.logits(rt, rows, logits);
        Ok(())
    }

    fn n_vocab(&self) -> usize {
        self.io.n_vocab()
    }
}
