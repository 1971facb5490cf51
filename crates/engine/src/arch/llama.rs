//! Llama (and the models sharing its layout: Llama 2/3/3.1, Mistral, Mixtral, TinyLlama,
//! SmolLM 2).
//!
//! Per layer, with x the residual stream `[n_tokens, n_embd]`:
//!   h = x + Wo · attn(rope(Wq · rms(x)), rope(Wk · rms(x)), Wv · rms(x))
//!   x = h + ffn(rms(h))
//! where ffn is Wdown · (silu(Wgate · h) * Wup · h), or a mixture of such experts when
//! `llama.expert_count` > 0 (Mixtral). Rope may carry Llama 3.1's `rope_freqs` factors.
//! Logits = Wout · rms(x), with Wout tied to the token embedding when absent.

use super::Architecture;
use crate::blocks::{
    self, Activation, AttnParams, AttnShape, AttnWeights, EmbeddingAndHead, Ffn, LogitRows, Norm,
    Runtime,
};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::rope::{RopeConfig, RopeSet};
use crate::weights::TensorLoader;
use kernels::ops::{self, RopeStyle};

struct Layer {
    attn_norm: Norm,
    attn: AttnWeights,
    ffn_norm: Norm,
    ffn: Ffn,
}

struct Llama {
    shape: AttnShape,
    rope: RopeSet,
    io: EmbeddingAndHead,
    layers: Vec<Layer>,
}

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let hp = t.hparams();
    let eps = c.rms_eps;
    let io = EmbeddingAndHead::load(t, c.n_embd, eps)?;
    let shape = AttnShape::of(c);
    let rope = RopeConfig::from_hparams(
        &hp,
        RopeStyle::Normal,
        c.rope_dims,
        c.rope_base,
        c.n_ctx_train,
    )?
    .with_factor_tensors(t, c.n_ctx_train, None)?
    .build();
    let layers = (0..c.n_layer)
        .map(|l| {
            Ok(Layer {
                attn_norm: Norm::rms(t, &format!("blk.{l}.attn_norm"), c.n_embd, eps)?,
                attn: AttnWeights::load(t, l, c.n_embd, shape)?,
                ffn_norm: Norm::rms(t, &format!("blk.{l}.ffn_norm"), c.n_embd, eps)?,
                ffn: Ffn::dense_or_experts(t, l, c, Activation::Silu)?,
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    Ok(Box::new(Llama {
        shape,
        rope,
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
        let params = AttnParams::causal(self.shape, Some(&self.rope));
        for (l, layer) in self.layers.iter().enumerate() {
            layer.attn_norm.rows(&rt.scratch.x, &mut rt.scratch.xn);
            blocks::attention_block(rt, l, &layer.attn, &params);
            ops::add_inplace(&mut rt.scratch.x, &rt.scratch.proj);
            layer.ffn_norm.rows(&rt.scratch.x, &mut rt.scratch.xn);
            layer.ffn.run(rt);
            ops::add_inplace(&mut rt.scratch.x, &rt.scratch.proj);
        }
        self.io.logits(rt, rows, logits);
        Ok(())
    }

    fn n_vocab(&self) -> usize {
        self.io.n_vocab()
    }
}
