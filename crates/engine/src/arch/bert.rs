//! BERT: a post-norm encoder for embeddings (all-MiniLM, bge, e5, …). Its [`Encoder`] also
//! serves nomic-bert, which differs in positions (rope) and feed-forward (SwiGLU).
//!
//! With x the residual stream `[n_tokens, n_embd]`:
//!   x = LN_embd(tok_embd[t] + token_types[0] + position_embd[p])   (every token is "sentence A")
//! per layer, every token attending to its whole sequence (no causal mask):
//!   h = LN_attn_out(x + Wo · attn(Wq · x + bq, Wk · x + bk, Wv · x + bv) + bo)
//!   x = LN_layer_out(h + Wdown · gelu(Wup · h + bup) + bdown)
//! The output is the final x of every token: there is no head. The session pools it into one
//! embedding (`<arch>.pooling_type`).

use super::Architecture;
use crate::blocks::{
    self, add_rows_of, embed_tokens, hidden_states, sized, Activation, AttnParams, AttnShape,
    AttnWeights, FfnWeights, LogitRows, Norm, Runtime,
};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::rope::RopeSet;
use crate::weights::{Mat, TensorLoader};
use kernels::ops;

/// Where an encoder's token positions come from.
pub(super) enum Positions {
    /// Rows of `position_embd` added to the input (BERT).
    Learned(Mat),
    /// Rotary embeddings of queries and keys (nomic-bert).
    Rope(RopeSet),
}

struct Layer {
    attn: AttnWeights,
    attn_out_norm: Norm,
    ffn: FfnWeights,
    layer_out_norm: Norm,
}

/// A BERT-style encoder: embeddings with a LayerNorm, then post-norm layers.
pub(super) struct Encoder {
    n_embd: usize,
    token_embd: Mat,
    token_types: Option<Mat>,
    positions: Positions,
    embd_norm: Norm,
    shape: AttnShape,
    act: Activation,
    layers: Vec<Layer>,
}

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let pos = t.table("position_embd.weight", c.n_ctx_train, c.n_embd)?;
    let ffn = |l| FfnWeights::plain(t, l, c.n_embd, c.n_ff);
    let enc = Encoder::load(t, c, Positions::Learned(pos), ffn, Activation::GeluTanh)?;
    Ok(Box::new(enc))
}

impl Encoder {
    /// The embeddings and layers every BERT-style file has, with the positions and the
    /// feed-forward (`ffn(layer)`, run with `act`) of the architecture.
    pub(super) fn load(
        t: &TensorLoader,
        c: &ModelConfig,
        positions: Positions,
        ffn: impl Fn(usize) -> Result<FfnWeights, EngineError>,
        act: Activation,
    ) -> Result<Encoder, EngineError> {
        let eps = c
            .norm_eps
            .ok_or_else(|| EngineError::MissingHyperparameter {
                arch: c.arch.clone(),
                key: format!("{}.attention.layer_norm_epsilon", c.arch),
            })?;
        let n_vocab = t.vocab_rows("token_embd.weight", c.n_embd)?;
        let token_types = match t.has("token_types.weight") {
            true => {
                let n_types = t.vocab_rows("token_types.weight", c.n_embd)?;
                Some(t.table("token_types.weight", n_types, c.n_embd)?)
            }
            false => None,
        };
        // A classifier head on the pooled state serves reranking (pooling type "rank"), which
        // the configuration refuses; an embedder that carries one does not use it.
        for name in [
            "cls.weight",
            "cls.bias",
            "cls.output.weight",
            "cls.output.bias",
        ] {
            t.ignore(name);
        }
        let shape = AttnShape::of(c);
        let layers = (0..c.n_layer)
            .map(|l| {
                let norm = |s: &str| Norm::layer(t, &format!("blk.{l}.{s}"), c.n_embd, eps);
                Ok(Layer {
                    attn: AttnWeights::load(t, l, c.n_embd, shape)?,
                    attn_out_norm: norm("attn_output_norm")?,
                    ffn: ffn(l)?,
                    layer_out_norm: norm("layer_output_norm")?,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(Encoder {
            n_embd: c.n_embd,
            token_embd: t.table("token_embd.weight", n_vocab, c.n_embd)?,
            token_types,
            positions,
            embd_norm: Norm::layer(t, "token_embd_norm", c.n_embd, eps)?,
            shape,
            act,
            layers,
        })
    }
}

impl Architecture for Encoder {
    fn forward(
        &self,
        rt: &mut Runtime,
        tokens: &[u32],
        rows: LogitRows,
        out: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        if rows != LogitRows::Hidden {
            return Err(EngineError::NoOutputHead);
        }
        embed_tokens(rt, &self.token_embd, tokens, 1.0)?;
        if let Some(types) = &self.token_types {
            add_rows_of(rt, types, |_| 0)?;
        }
        let rope = match &self.positions {
            Positions::Learned(table) => {
                add_rows_of(rt, table, |pos| pos)?;
                None
            }
            Positions::Rope(rope) => Some(rope),
        };
        let n = tokens.len() * self.n_embd;
        self.embd_norm
            .rows_inplace(rt.backend, &mut rt.scratch.x[..n]);
        let params = AttnParams {
            causal: false,
            ..AttnParams::causal(self.shape, rope)
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let s = &mut *rt.scratch;
            sized(&mut s.xn, n).copy_from_slice(&s.x[..n]);
            blocks::attention_block(rt, l, &layer.attn, &params);
            let s = &mut *rt.scratch;
            ops::add_inplace(&mut s.x[..n], &s.proj[..n]);
            layer.attn_out_norm.rows_inplace(rt.backend, &mut s.x[..n]);
            sized(&mut s.xn, n).copy_from_slice(&s.x[..n]);
            blocks::ffn_block(rt, &layer.ffn, self.act);
            let s = &mut *rt.scratch;
            ops::add_inplace(&mut s.x[..n], &s.proj[..n]);
            layer.layer_out_norm.rows_inplace(rt.backend, &mut s.x[..n]);
        }
        hidden_states(rt, rows, self.n_embd, out)
    }

    fn n_vocab(&self) -> usize {
        self.token_embd.rows
    }

    fn is_encoder(&self) -> bool {
        true
    }
}
