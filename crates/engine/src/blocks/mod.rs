//! Building blocks shared by the architectures: embedding lookup, linear layers (with optional
//! biases) over cached quantized activations, norms, attention, feed-forward and
//! mixture-of-experts blocks, and the output head. Architecture files wire these together.

mod attention;
mod ffn;
mod io;
mod layer;
mod moe;
mod norm;

pub use attention::{attention_block, AttnParams, AttnShape, AttnWeights, QkvProj, MAX_HEAD_DIM};
pub use ffn::{ffn_block, Activation, FfnWeights, UpGate};
pub use io::{add_rows_of, embed_tokens, hidden_states, EmbeddingAndHead};
pub use layer::{add_residual, PreNormLayer, SandwichLayer};
pub use moe::{expert_weights_scale, experts_used, moe_block, Ffn, Gating, MoeParams, MoeWeights};
pub use norm::{Norm, NormKind};

use crate::backend::Backend;
use crate::error::EngineError;
use crate::kv_cache::KvCache;
use crate::weights::{Mat, TensorLoader};
use gguf::{GgmlType, GgufFile};
use kernels::matmul::QuantizedActs;
use kernels::ops;
use kernels::pool::ThreadPool;

/// Everything a forward pass works with besides the weights.
pub struct Runtime<'a, 'k> {
    pub file: &'a GgufFile,
    pub backend: &'a dyn Backend,
    /// The sequences of the batch; their tokens lie one sequence after another.
    pub seqs: &'a mut [SeqPart<'k>],
    pub scratch: &'a mut Scratch,
}

/// One sequence's share of a batch: its cache and the positions its tokens take.
pub struct SeqPart<'k> {
    pub kv: &'k mut KvCache,
    /// Position of the sequence's first token in this batch.
    pub pos0: usize,
    pub n_tokens: usize,
}

impl Runtime<'_, '_> {
    /// Tokens in the batch.
    pub fn n_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.n_tokens).sum()
    }
}

/// Reusable buffers, grown to the largest batch seen and never shrunk, so decoding does not
/// allocate once warm.
#[derive(Default)]
pub struct Scratch {
    pub x: Vec<f32>,
    pub xn: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub attn: Vec<f32>,
    pub proj: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    /// Mixture-of-experts buffers: router scores, the rows routed to one expert and that
    /// expert's output, and each token's chosen experts with their weights.
    pub router: Vec<f32>,
    pub moe_x: Vec<f32>,
    pub moe_y: Vec<f32>,
    pub routes: Vec<(usize, f32)>,
    pub acts: ActCache,
    /// For each token of the batch: its sequence and position.
    pub token_seq: Vec<(usize, usize)>,
}

/// Resizes `buf` to `len` elements without shrinking its capacity.
pub fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..len]
}

/// The current layer input quantized into each activation format asked for, so that Q, K and V
/// (or gate and up) quantize their shared input once.
#[derive(Default)]
pub struct ActCache {
    entries: Vec<(GgmlType, QuantizedActs)>,
    valid: usize,
}

impl ActCache {
    /// Forgets the cached quantizations: call whenever the input changes.
    pub fn invalidate(&mut self) {
        self.valid = 0;
    }

    /// `x` (`n_tokens × cols`) quantized into `ty`, computed on first use after `invalidate`
    /// (a prompt's rows spread over `pool`).
    pub fn get(
        &mut self,
        pool: &ThreadPool,
        ty: GgmlType,
        x: &[f32],
        n_tokens: usize,
        cols: usize,
    ) -> &QuantizedActs {
        let found = self.entries[..self.valid]
            .iter()
            .position(|(t, _)| *t == ty);
        let i = match found {
            Some(i) => i,
            None => {
                if self.valid == self.entries.len() {
                    self.entries.push((ty, QuantizedActs::new()));
                }
                let i = self.valid;
                self.entries[i].0 = ty;
                self.entries[i].1.quantize_on(pool, ty, x, n_tokens, cols);
                self.valid += 1;
                i
            }
        };
        &self.entries[i].1
    }
}

/// A weight matrix and its optional bias: `y = x · Wᵀ + b`.
pub struct Linear {
    pub w: Mat,
    pub b: Option<Vec<f32>>,
}

impl Linear {
    /// `{name}.weight` (`rows × cols`) and `{name}.bias` when the file has it.
    pub fn load(
        t: &TensorLoader,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Linear, EngineError> {
        Ok(Linear {
            w: t.matrix(&format!("{name}.weight"), rows, cols)?,
            b: t.opt_vector(&format!("{name}.bias"), rows)?,
        })
    }

    /// Like [`Linear::load`], or `None` when the file has no `{name}.weight`.
    pub fn opt(
        t: &TensorLoader,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Option<Linear>, EngineError> {
        if t.has(&format!("{name}.weight")) {
            Linear::load(t, name, rows, cols).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn rows(&self) -> usize {
        self.w.rows
    }
}

impl From<Mat> for Linear {
    fn from(w: Mat) -> Linear {
        Linear { w, b: None }
    }
}

/// Adds `bias` to every `bias.len()`-sized row of `out`.
pub fn add_bias_rows(out: &mut [f32], bias: &[f32]) {
    for row in out.chunks_exact_mut(bias.len()) {
        ops::add_inplace(row, bias);
    }
}

/// out (`n_tokens × w.rows`) = x (`n_tokens × w.cols`) · wᵀ on the backend (`acts` caches
/// the input's quantized forms).
pub fn matmul_rows(
    be: &dyn Backend,
    file: &GgufFile,
    acts: &mut ActCache,
    w: &Mat,
    x: &[f32],
    n_tokens: usize,
    out: &mut Vec<f32>,
) {
    let out = sized(out, n_tokens * w.rows);
    be.matmul(file, acts, w, x, n_tokens, out);
}

/// out = x · wᵀ + b for a [`Linear`].
pub fn linear(
    be: &dyn Backend,
    file: &GgufFile,
    acts: &mut ActCache,
    l: &Linear,
    x: &[f32],
    n_tokens: usize,
    out: &mut Vec<f32>,
) {
    matmul_rows(be, file, acts, &l.w, x, n_tokens, out);
    if let Some(b) = &l.b {
        add_bias_rows(&mut out[..n_tokens * l.w.rows], b);
    }
}

/// Several products of the same input (`outs[m] = x · ls[m]ᵀ + b`: Q/K/V, gate/up), in one
/// backend call (up to 4; more go one by one).
pub fn linear_many(
    be: &dyn Backend,
    file: &GgufFile,
    acts: &mut ActCache,
    ls: &[&Linear],
    x: &[f32],
    n_tokens: usize,
    outs: &mut [&mut Vec<f32>],
) {
    if ls.is_empty() || ls.len() > 4 || outs.len() != ls.len() {
        for (l, out) in ls.iter().zip(outs.iter_mut()) {
            linear(be, file, acts, l, x, n_tokens, out);
        }
        return;
    }
    // Fixed arrays: no allocation per layer in the decode loop.
    let n = ls.len();
    let mut ws: [&Mat; 4] = [&ls[0].w; 4];
    let mut slices: [&mut [f32]; 4] = Default::default();
    for (i, (l, out)) in ls.iter().zip(outs.iter_mut()).enumerate() {
        ws[i] = &l.w;
        slices[i] = sized(out, n_tokens * l.w.rows);
    }
    be.matmul_many(file, acts, &ws[..n], x, n_tokens, &mut slices[..n]);
    for (l, out) in ls.iter().zip(slices) {
        if let Some(b) = &l.b {
            add_bias_rows(out, b);
        }
    }
}

/// Rows of the embedding matrix for `tokens`, into `out` (`n_tokens × cols`), times `scale`.
pub fn embed(
    file: &GgufFile,
    table: &Mat,
    tokens: &[u32],
    scale: f32,
    out: &mut Vec<f32>,
) -> Result<(), EngineError> {
    let view = table.view(file);
    let out = sized(out, tokens.len() * table.cols);
    for (&tok, row) in tokens.iter().zip(out.chunks_exact_mut(table.cols)) {
        if tok as usize >= table.rows {
            return Err(EngineError::TokenOutOfRange {
                id: tok,
                n_vocab: table.rows,
            });
        }
        view.dequantize_row(tok as usize, row);
        if scale != 1.0 {
            ops::scale_inplace(row, scale);
        }
    }
    Ok(())
}

/// What a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    /// Logits of each sequence's last token.
    Last,
    /// Logits of every token.
    All,
    /// The final hidden state (after the output norm) of every token: `n_tokens × n_embd`,
    /// for embeddings.
    Hidden,
}

/// Checks that `n_tokens` more positions fit in the cache.
pub fn check_room(kv: &KvCache, pos0: usize, n_tokens: usize) -> Result<(), EngineError> {
    if pos0 + n_tokens > kv.n_ctx() {
        return Err(EngineError::ContextFull {
            needed: pos0 + n_tokens,
            ctx: kv.n_ctx(),
        });
    }
    Ok(())
}
