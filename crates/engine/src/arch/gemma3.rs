//! Gemma 3: interleaved sliding-window and global attention (every sixth layer global), a
//! different rope base for each kind, per-head QK norms, norms before and after both
//! sub-blocks, GeGLU, and embeddings scaled by sqrt(n_embd). Output tied to the embedding.
//!
//! Per layer, with x the residual stream `[n_tokens, n_embd]`:
//!   h = x + rms_post_attn(Wo · attn(rope(rms_q(Wq · rms(x))) * scale, rope(rms_k(Wk · rms(x))), Wv · rms(x)))
//!   x = h + rms_post_ffw(Wdown · (gelu(Wgate · rms(h)) * Wup · rms(h)))

use super::Architecture;
use crate::blocks::{
    self, AttnParams, AttnShape, AttnWeights, EmbeddingAndHead, FfnWeights, GateActivation,
    LogitRows, Runtime,
};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::weights::TensorLoader;
use kernels::ops::{self, Rope, RopeStyle};

/// Gemma 3 makes every sixth layer global and the others sliding-window.
const SLIDING_PATTERN: usize = 6;
/// Rope base of the sliding-window layers (the metadata's base is for the global ones).
const SLIDING_ROPE_BASE: f32 = 10_000.0;

struct Layer {
    attn_norm: Vec<f32>,
    attn: AttnWeights,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    ffn: FfnWeights,
    post_ffw_norm: Vec<f32>,
    sliding: bool,
}

struct Gemma3 {
    eps: f32,
    n_embd: usize,
    shape: AttnShape,
    scale: f32,
    window: Option<usize>,
    rope_global: Rope,
    rope_local: Rope,
    io: EmbeddingAndHead,
    layers: Vec<Layer>,
}

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let io = EmbeddingAndHead::load(t, c.n_embd)?;
    let shape = AttnShape::of(c);
    let layers = (0..c.n_layer)
        .map(|l| {
            let v = |s: &str| t.vector(&format!("blk.{l}.{s}.weight"), c.n_embd);
            Ok(Layer {
                attn_norm: v("attn_norm")?,
                attn: AttnWeights::load(t, l, c.n_embd, shape)?,
                post_attn_norm: v("post_attention_norm")?,
                ffn_norm: v("ffn_norm")?,
                ffn: FfnWeights::load(t, l, c.n_embd, c.n_ff)?,
                post_ffw_norm: v("post_ffw_norm")?,
                sliding: (l + 1) % SLIDING_PATTERN != 0,
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    // The 27B model scales queries by the model width per head; the others by the head size.
    let scale_dim = if c.n_layer == 62 {
        c.n_embd / c.n_head
    } else {
        c.head_dim
    };
    Ok(Box::new(Gemma3 {
        eps: c.rms_eps,
        n_embd: c.n_embd,
        shape,
        scale: 1.0 / (scale_dim as f32).sqrt(),
        window: c.sliding_window,
        rope_global: Rope::new(RopeStyle::Neox, c.rope_dims, c.rope_base, c.rope_freq_scale),
        rope_local: Rope::new(RopeStyle::Neox, c.rope_dims, SLIDING_ROPE_BASE, 1.0),
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
            let params = AttnParams {
                shape: self.shape,
                rope: if layer.sliding {
                    &self.rope_local
                } else {
                    &self.rope_global
                },
                scale: self.scale,
                window: if layer.sliding { self.window } else { None },
                eps: self.eps,
            };
            let s = &mut *rt.scratch;
            blocks::rmsnorm_rows(&s.x, &layer.attn_norm, self.eps, &mut s.xn);
            blocks::attention_block(rt, l, &layer.attn, &params);
            let s = &mut *rt.scratch;
            blocks::rmsnorm_rows_inplace(&mut s.proj, &layer.post_attn_norm, self.eps);
            ops::add_inplace(&mut s.x, &s.proj);
            blocks::rmsnorm_rows(&s.x, &layer.ffn_norm, self.eps, &mut s.xn);
            blocks::ffn_block(rt, &layer.ffn, GateActivation::GeluTanh);
            let s = &mut *rt.scratch;
            blocks::rmsnorm_rows_inplace(&mut s.proj, &layer.post_ffw_norm, self.eps);
            ops::add_inplace(&mut s.x, &s.proj);
        }
        self.io.logits(rt, self.eps, rows, logits);
        Ok(())
    }

    fn n_vocab(&self) -> usize {
        self.io.n_vocab()
    }
}
