//! Perplexity as llama-perplexity computes it: the text in chunks of `ctx` tokens, each chunk
//! evaluated from an empty cache (its first token replaced by BOS when the model adds one), and
//! only the second half of each chunk scored, so every scored token has at least ctx/2 context.

use crate::backend::SharedBackend;
use crate::blocks::LogitRows;
use crate::error::EngineError;
use crate::model::Model;

#[derive(Debug, Clone)]
pub struct Perplexity {
    pub perplexity: f64,
    pub chunks: usize,
    pub ctx: usize,
    /// Mean negative log-likelihood of each chunk's scored tokens.
    pub chunk_nll: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error("the text has {tokens} tokens, fewer than one chunk of {ctx}: use a longer text or a smaller --ctx")]
    TooShort { tokens: usize, ctx: usize },
    #[error("--ctx must be at least 4 (got {0})")]
    CtxTooSmall(usize),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// `tokens` is the whole text, tokenized with BOS as the model adds it.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    ctx: usize,
    backend: SharedBackend,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<Perplexity, PerplexityError> {
    if ctx < 4 {
        return Err(PerplexityError::CtxTooSmall(ctx));
    }
    let n_chunks = tokens.len() / ctx;
    if n_chunks == 0 {
        return Err(PerplexityError::TooShort {
            tokens: tokens.len(),
            ctx,
        });
    }
    let bos = model
        .tokenizer()
        .bos()
        .filter(|_| model.tokenizer().add_bos());
    let n_vocab = model.n_vocab();
    let mut session = model.session(ctx, backend);
    session.set_batch(ctx);
    let first = ctx / 2;
    let (mut total_nll, mut total_count) = (0.0f64, 0usize);
    let mut chunk_nll = Vec::with_capacity(n_chunks);
    let mut chunk_tokens = Vec::with_capacity(ctx);
    for c in 0..n_chunks {
        let start = c * ctx;
        chunk_tokens.clear();
        chunk_tokens.extend_from_slice(&tokens[start..start + ctx]);
        if let Some(b) = bos {
            chunk_tokens[0] = b;
        }
        session.reset();
        let logits = session.eval(&chunk_tokens, LogitRows::All)?;
        let (mut nll, mut count) = (0.0f64, 0usize);
        for j in first..ctx - 1 {
            let row = &logits[j * n_vocab..(j + 1) * n_vocab];
            let target = tokens[start + j + 1] as usize;
            nll -= log_softmax_at(row, target);
            count += 1;
        }
        total_nll += nll;
        total_count += count;
        chunk_nll.push(nll / count as f64);
        progress(c + 1, n_chunks, (total_nll / total_count as f64).exp());
    }
    Ok(Perplexity {
        perplexity: (total_nll / total_count as f64).exp(),
        chunks: n_chunks,
        ctx,
        chunk_nll,
    })
}

/// log softmax(row)[i], in f64.
pub fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
    row.get(i)
        .map_or(f64::NEG_INFINITY, |&l| l as f64 - max - sum.ln())
}
