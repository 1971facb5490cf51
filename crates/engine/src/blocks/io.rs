//! The token embedding, the final norm and the output head.

use super::{check_room, embed, linear, Linear, LogitRows, Norm, Runtime};
use crate::error::EngineError;
use crate::weights::{Mat, TensorLoader};

/// The token embedding, the final norm and the output head every decoder has; the head is tied
/// to the embedding when the file has no `output.weight`.
pub struct EmbeddingAndHead {
    pub token_embd: Mat,
    pub output_norm: Norm,
    pub output: Linear,
}

impl EmbeddingAndHead {
    /// With an RMS output norm.
    pub fn load(
        t: &TensorLoader,
        n_embd: usize,
        eps: f32,
    ) -> Result<EmbeddingAndHead, EngineError> {
        // The embedding first: a file without tensors is reported by its first one.
        t.vocab_rows("token_embd.weight", n_embd)?;
        let norm = Norm::rms(t, "output_norm", n_embd, eps)?;
        EmbeddingAndHead::load_with_norm(t, n_embd, norm)
    }

    /// With the output norm the architecture loaded (a LayerNorm for GPT-2 and StarCoder 2).
    pub fn load_with_norm(
        t: &TensorLoader,
        n_embd: usize,
        output_norm: Norm,
    ) -> Result<EmbeddingAndHead, EngineError> {
        let n_vocab = t.vocab_rows("token_embd.weight", n_embd)?;
        let token_embd = t.table("token_embd.weight", n_vocab, n_embd)?;
        let output = match Linear::opt(t, "output", n_vocab, n_embd)? {
            Some(head) => head,
            None => t.matrix("token_embd.weight", n_vocab, n_embd)?.into(),
        };
        Ok(EmbeddingAndHead {
            output,
            token_embd,
            output_norm,
        })
    }

    pub fn n_vocab(&self) -> usize {
        self.output.rows()
    }

    /// Embeds `tokens` (times `scale`) into `rt.scratch.x`: see [`embed_tokens`].
    pub fn embed(&self, rt: &mut Runtime, tokens: &[u32], scale: f32) -> Result<(), EngineError> {
        embed_tokens(rt, &self.token_embd, tokens, scale)
    }

    /// Final norm and output projection of `rt.scratch.x` for the rows asked for (or the
    /// normalized rows themselves for `Hidden`); appends to `logits`.
    pub fn logits(&self, rt: &mut Runtime, rows: LogitRows, logits: &mut Vec<f32>) {
        self.head(rt, rows, logits, true)
    }

    /// Like [`EmbeddingAndHead::logits`], for models whose layers end normalized (BERT's
    /// post-norms): no final norm.
    pub fn head(&self, rt: &mut Runtime, rows: LogitRows, logits: &mut Vec<f32>, norm: bool) {
        let scratch = &mut *rt.scratch;
        let dim = self.token_embd.cols;
        let n_tokens = scratch.token_seq.len();
        let n = match rows {
            LogitRows::Last => {
                // Gather each sequence's last row in front (rows only move forward).
                let mut end = 0;
                for (i, seq) in rt.seqs.iter().enumerate() {
                    end += seq.n_tokens;
                    if end - 1 != i {
                        scratch.x.copy_within((end - 1) * dim..end * dim, i * dim);
                    }
                }
                rt.seqs.len()
            }
            LogitRows::All | LogitRows::Hidden => n_tokens,
        };
        let x = &scratch.x[..n * dim];
        if norm {
            self.output_norm.rows(rt.backend, x, &mut scratch.xn);
        } else {
            super::sized(&mut scratch.xn, n * dim).copy_from_slice(x);
        }
        if rows == LogitRows::Hidden {
            logits.extend_from_slice(&scratch.xn[..n * dim]);
            return;
        }
        scratch.acts.invalidate();
        linear(
            rt.backend,
            rt.file,
            &mut scratch.acts,
            &self.output,
            &scratch.xn,
            n,
            &mut scratch.proj,
        );
        logits.extend_from_slice(&scratch.proj[..n * self.n_vocab()]);
    }
}

/// Embeds `tokens` (rows of `table`, times `scale`) into `rt.scratch.x`, after checking every
/// cache has room, and notes each token's sequence and position.
pub fn embed_tokens(
    rt: &mut Runtime,
    table: &Mat,
    tokens: &[u32],
    scale: f32,
) -> Result<(), EngineError> {
    if rt.n_tokens() != tokens.len() {
        return Err(EngineError::BatchMismatch {
            tokens: tokens.len(),
            parts: rt.n_tokens(),
        });
    }
    let token_seq = &mut rt.scratch.token_seq;
    token_seq.clear();
    for (i, seq) in rt.seqs.iter().enumerate() {
        check_room(seq.kv, seq.pos0, seq.n_tokens)?;
        token_seq.extend((0..seq.n_tokens).map(|t| (i, seq.pos0 + t)));
    }
    embed(rt.file, table, tokens, scale, &mut rt.scratch.x)
}

/// The output of a model without an output head (an encoder): the final hidden states
/// `rt.scratch.x` of every token, `n_tokens × dim`, appended to `out`. Logits are refused.
pub fn hidden_states(
    rt: &Runtime,
    rows: LogitRows,
    dim: usize,
    out: &mut Vec<f32>,
) -> Result<(), EngineError> {
    if rows != LogitRows::Hidden {
        return Err(EngineError::NoOutputHead);
    }
    let n = rt.scratch.token_seq.len() * dim;
    out.extend_from_slice(&rt.scratch.x[..n]);
    Ok(())
}

/// Adds row `index(t)` of `table` (dequantized) to each token row of `rt.scratch.x`: learned
/// position embeddings (index = position) or BERT's token-type embedding.
pub fn add_rows_of(
    rt: &mut Runtime,
    table: &Mat,
    index: impl Fn(usize) -> usize,
) -> Result<(), EngineError> {
    let view = table.view(rt.file);
    let s = &mut *rt.scratch;
    let dim = table.cols;
    // `up` is free until the first feed-forward.
    let row = super::sized(&mut s.up, dim);
    for (t, &(_, pos)) in s.token_seq.iter().enumerate() {
        let i = index(pos);
        if i >= table.rows {
            return Err(EngineError::ContextFull {
                needed: i + 1,
                ctx: table.rows,
            });
        }
        view.dequantize_row(i, row);
        kernels::ops::add_inplace(&mut s.x[t * dim..][..dim], row);
    }
    Ok(())
}
