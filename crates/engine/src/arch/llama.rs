//! Llama (and the models sharing its layout: Llama 2/3, Mistral, TinyLlama, SmolLM).
//!
//! Per layer, with x the residual stream `[n_tokens, n_embd]`:
//!   h = x + Wo · attn(rope(Wq · rms(x)), rope(Wk · rms(x)), Wv · rms(x))
//!   x = h + Wdown · (silu(Wgate · rms(h)) * Wup · rms(h))
//! then logits = Wout · rms(x), with Wout tied to the token embedding when absent.

use super::Architecture;
use crate::blocks::{
    self, AttnParams, AttnShape, AttnWeights, EmbeddingAndHead, FfnWeights, GateActivation,
    LogitRows, Runtime,
};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::weights::TensorLoader;
use kernels::ops::{self, Rope, RopeStyle};

struct Layer {
    attn_norm: Vec<f32>,
    attn: AttnWeights,
    ffn_norm: Vec<f32>,
    ffn: FfnWeights,
}

struct Llama {
    eps: f32,
    shape: AttnShape,
    rope: Rope,
    io: EmbeddingAndHead,
    layers: Vec<Layer>,
}

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let io = EmbeddingAndHead::load(t, c.n_embd)?;
    let shape = AttnShape::of(c);
    let layers = (0..c.n_layer)
        .map(|l| {
            Ok(Layer {
                attn_norm: t.vector(&format!("blk.{l}.attn_norm.weight"), c.n_embd)?,
                attn: AttnWeights::load(t, l, c.n_embd, shape)?,
                ffn_norm: t.vector(&format!("blk.{l}.ffn_norm.weight"), c.n_embd)?,
                ffn: FfnWeights::load(t, l, c.n_embd, c.n_ff)?,
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    Ok(Box::new(Llama {
        eps: c.rms_eps,
        shape,
        rope: Rope::new(
            RopeStyle::Normal,
            c.rope_dims,
            c.rope_base,
            c.rope_freq_scale,
        ),
        io,
        layers,
    }))
}

impl Architecture for Llama {
    fn forward(
        &self,
        rt: &mut Runtime,
        tokens: &[u32],
        rows: LogitRows,
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        self.io.embed(rt, tokens, 1.0)?;
        let params = AttnParams {
            shape: self.shape,
            rope: &self.rope,
            scale: 1.0 / (self.shape.head_dim as f32).sqrt(),
            window: None,
            eps: self.eps,
        };
        for (l, layer) in self.layers.iter().enumerate() {
            blocks::rmsnorm_rows(
                &rt.scratch.x,
                &layer.attn_norm,
                self.eps,
                &mut rt.scratch.xn,
            );
            blocks::attention_block(rt, l, &layer.attn, &params);
            ops::add_inplace(&mut rt.scratch.x, &rt.scratch.proj);
            blocks::rmsnorm_rows(&rt.scratch.x, &layer.ffn_norm, self.eps, &mut rt.scratch.xn);
            blocks::ffn_block(rt, &layer.ffn, GateActivation::Silu);
            ops::add_inplace(&mut rt.scratch.x, &rt.scratch.proj);
        }
        self.io.logits(rt, self.eps, rows, logits);
        Ok(())
    }

    fn n_vocab(&self) -> usize {
        self.io.n_vocab()
    }
}
