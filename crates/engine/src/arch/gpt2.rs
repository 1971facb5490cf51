//! GPT-2: learned position embeddings instead of rope, LayerNorms with biases, one fused QKV
//! projection with bias, and a plain GELU MLP.
//!
//!   x = tok_embd[t] + pos_embd[p]
//!   h = x + Wo · attn(split(Wqkv · ln(x) + bqkv)) + bo
//!   x = h + Wdown · gelu(Wup · ln(h) + bup) + bdown

use super::Architecture;
use crate::blocks::{
    add_rows_of, Activation, AttnParams, AttnShape, AttnWeights, EmbeddingAndHead, Ffn, FfnWeights,
    LogitRows, Norm, PreNormLayer, Runtime,
};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::weights::{Mat, TensorLoader};

struct Gpt2 {
    shape: AttnShape,
    pos_embd: Mat,
    io: EmbeddingAndHead,
    layers: Vec<PreNormLayer>,
}

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let eps = c.norm_eps.unwrap_or(1e-5);
    let shape = AttnShape::of(c);
    let layers = (0..c.n_layer)
        .map(|l| {
            Ok(PreNormLayer {
                attn_norm: Norm::layer(t, &format!("blk.{l}.attn_norm"), c.n_embd, eps)?,
                attn: AttnWeights::load(t, l, c.n_embd, shape)?,
                ffn_norm: Norm::layer(t, &format!("blk.{l}.ffn_norm"), c.n_embd, eps)?,
                ffn: Ffn::Dense(
                    FfnWeights::plain(t, l, c.n_embd, c.n_ff)?,
                    Activation::GeluTanh,
                ),
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let norm = Norm::layer(t, "output_norm", c.n_embd, eps)?;
    Ok(Box::new(Gpt2 {
        shape,
        pos_embd: t.table("position_embd.weight", c.n_ctx_train, c.n_embd)?,
        io: EmbeddingAndHead::load_with_norm(t, c.n_embd, norm)?,
        layers,
    }))
}

impl Architecture for Gpt2 {
    fn forward(
        &self,
        rt: &mut Runtime,
        tokens: &[u32],
        rows: LogitRows,
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        self.io.embed(rt, tokens, 1.0)?;
        add_rows_of(rt, &self.pos_embd, |pos| pos)?;
        let params = AttnParams::causal(self.shape, None);
        for (l, layer) in self.layers.iter().enumerate() {
            layer.run(rt, l, &params, 1.0);
        }
        self.io.logits(rt, rows, logits);
        Ok(())
    }

    fn n_vocab(&self) -> usize {
        self.io.n_vocab()
    }
}
