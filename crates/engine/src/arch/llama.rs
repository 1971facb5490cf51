//! Llama (and the models sharing its layout: Llama 2/3, Mistral, TinyLlama, SmolLM).
//!
//! Per layer, with x the residual stream `[n_tokens, n_embd]`:
//!   h = x + Wo · attn(rope(Wq · rms(x)), rope(Wk · rms(x)), Wv · rms(x))
//!   x = h + Wdown · (silu(Wgate · rms(h)) * Wup · rms(h))
//! then logits = Wout · rms(x), with Wout tied to the token embedding when absent.

use super::Architecture;
use crate::blocks::{
    self, AttnParams, AttnShape, AttnWeights, FfnWeights, GateActivation, LogitRows, Runtime,
};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::weights::{Mat, TensorLoader};
use gguf::GgufFile;
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
    token_embd: Mat,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: Mat,
}

pub fn load(file: &GgufFile, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let t = TensorLoader::new(file, &c.arch);
    let n_vocab = t.vocab_rows("token_embd.weight", c.n_embd)?;
    let token_embd = t.matrix("token_embd.weight", n_vocab, c.n_embd)?;
    let shape = AttnShape {
        n_head: c.n_head,
        n_head_kv: c.n_head_kv,
        head_dim: c.head_dim,
        head_dim_v: c.head_dim_v,
    };
    let layers = (0..c.n_layer)
        .map(|l| {
            Ok(Layer {
                attn_norm: t.vector(&format!("blk.{l}.attn_norm.weight"), c.n_embd)?,
                attn: AttnWeights::load(&t, l, c.n_embd, shape)?,
                ffn_norm: t.vector(&format!("blk.{l}.ffn_norm.weight"), c.n_embd)?,
                ffn: FfnWeights::load(&t, l, c.n_embd, c.n_ff)?,
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
        output: t
            .opt_matrix("output.weight", n_vocab, c.n_embd)?
            .unwrap_or(token_embd),
        token_embd,
        layers,
        output_norm: t.vector("output_norm.weight", c.n_embd)?,
    }))
}

impl Architecture for Llama {
    fn forward(
        &self,
        rt: &mut Runtime,
        tokens: &[u32],
        pos0: usize,
        rows: LogitRows,
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        let n = tokens.len();
        blocks::check_room(rt.kv, pos0, n)?;
        blocks::embed(rt.file, &self.token_embd, tokens, 1.0, &mut rt.scratch.x)?;
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
            blocks::attention_block(rt, l, &layer.attn, &params, pos0, n);
            ops::add_inplace(&mut rt.scratch.x, &rt.scratch.proj);
            blocks::rmsnorm_rows(&rt.scratch.x, &layer.ffn_norm, self.eps, &mut rt.scratch.xn);
            blocks::ffn_block(rt, &layer.ffn, GateActivation::Silu, n);
            ops::add_inplace(&mut rt.scratch.x, &rt.scratch.proj);
        }
        blocks::output_head(
            rt.file,
            rt.pool,
            rt.scratch,
            &self.output_norm,
            self.eps,
            &self.output,
            n,
            rows,
            logits,
        );
        Ok(())
    }

    fn n_vocab(&self) -> usize {
        self.output.rows
    }
}
