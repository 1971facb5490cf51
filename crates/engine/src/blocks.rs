//! Building blocks shared by the architectures: embedding lookup, linear layers over cached
//! quantized activations, normalization over rows, causal attention with GQA and sliding
//! windows, and the output head.

use crate::error::EngineError;
use crate::kv_cache::KvCache;
use crate::weights::Mat;
use gguf::{GgmlType, GgufFile};
use kernels::matmul::{matmul, QuantizedActs};
use kernels::ops::{self, f16};
use kernels::par::par_chunks_mut;
use kernels::pool::ThreadPool;

/// Everything a forward pass works with besides the weights.
pub struct Runtime<'a, 'k> {
    pub file: &'a GgufFile,
    pub pool: &'a ThreadPool,
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

    /// `x` (`n_tokens × cols`) quantized into `ty`, computed on first use after `invalidate`.
    pub fn get(&mut self, ty: GgmlType, x: &[f32], n_tokens: usize, cols: usize) -> &QuantizedActs {
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
                self.entries[i].1.quantize(ty, x, n_tokens, cols);
                self.valid += 1;
                i
            }
        };
        &self.entries[i].1
    }
}

/// out (`n_tokens × w.rows`) = x (`n_tokens × w.cols`) · wᵀ, quantizing x through `acts`.
pub fn linear(
    file: &GgufFile,
    pool: &ThreadPool,
    acts: &mut ActCache,
    w: &Mat,
    x: &[f32],
    n_tokens: usize,
    out: &mut Vec<f32>,
) {
    let act_ty = kernels::quant::format(w.ty)
        .map(|f| f.act_type())
        .unwrap_or(GgmlType::F32);
    let qx = acts.get(act_ty, x, n_tokens, w.cols);
    let out = sized(out, n_tokens * w.rows);
    match &w.packed {
        Some(p) => kernels::packed::matmul_packed(pool, p, qx, out),
        None => matmul(pool, &w.view(file), qx, out),
    }
}

/// Several products of the same input (`outs[m] = x · ws[m]ᵀ`), in one dispatch of the pool
/// where every matrix is packed for the same activation type; otherwise one by one.
pub fn linear_many(
    file: &GgufFile,
    pool: &ThreadPool,
    acts: &mut ActCache,
    ws: &[&Mat],
    x: &[f32],
    n_tokens: usize,
    outs: &mut [&mut Vec<f32>],
) {
    let act_of = |w: &Mat| kernels::quant::format(w.ty).map(|f| f.act_type());
    let n = ws.len();
    let all_packed = ws.iter().all(|w| w.packed.is_some());
    let same_acts = ws.iter().all(|w| act_of(w) == act_of(ws[0]));
    if let (true, true, true, Some(first)) = (
        all_packed,
        same_acts,
        (2..=4).contains(&n) && outs.len() == n,
        ws[0].packed.as_deref(),
    ) {
        // Fixed arrays: no allocation per layer in the decode loop.
        let mut packed = [first; 4];
        let mut slices: [&mut [f32]; 4] = Default::default();
        for (i, (w, out)) in ws.iter().zip(outs.iter_mut()).enumerate() {
            packed[i] = w.packed.as_deref().unwrap_or(first);
            slices[i] = sized(out, n_tokens * w.rows);
        }
        let act_ty = act_of(ws[0]).unwrap_or(GgmlType::F32);
        let qx = acts.get(act_ty, x, n_tokens, ws[0].cols);
        kernels::packed::matmul_packed_many(pool, &packed[..n], qx, &mut slices[..n]);
        return;
    }
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        linear(file, pool, acts, w, x, n_tokens, out);
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

/// RMS-normalizes each `dim`-sized row of `x` into `out`.
pub fn rmsnorm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut Vec<f32>) {
    let dim = weight.len();
    let out = sized(out, x.len());
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        ops::rmsnorm(xr, weight, eps, or);
    }
}

/// RMS-normalizes each `dim`-sized row of `x` in place (per-head norms use dim = head size).
pub fn rmsnorm_rows_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(weight.len()) {
        ops::rmsnorm_inplace(row, weight, eps);
    }
}

/// Largest head dimension the attention supports (checked when a model is loaded).
pub const MAX_HEAD_DIM: usize = 1024;

/// Head geometry of an attention layer.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
}

/// Causal attention of each token's query over the cached keys and values of its own sequence
/// in `layer` (the current tokens already stored); `token_seq` gives each token's sequence and
/// position. With a sliding `window`, a query at p sees keys at positions p - window + 1 ..= p.
/// Writes `n_tokens × n_head × head_dim_v` into `out`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    pool: &ThreadPool,
    seqs: &[SeqPart],
    token_seq: &[(usize, usize)],
    layer: usize,
    q: &[f32],
    shape: AttnShape,
    scale: f32,
    window: Option<usize>,
    out: &mut Vec<f32>,
) {
    let AttnShape {
        n_head,
        n_head_kv,
        head_dim,
        head_dim_v,
    } = shape;
    let group = n_head / n_head_kv;
    let (k_row, v_row) = (n_head_kv * head_dim * 2, n_head_kv * head_dim_v * 2);
    let out = sized(out, token_seq.len() * n_head * head_dim_v);
    par_chunks_mut(pool, out, head_dim_v, &|idx, acc| {
        let (t, h) = (idx / n_head, idx % n_head);
        let g = h / group;
        let (seq, pos) = token_seq[t];
        let kv = &*seqs[seq].kv;
        let keys = kv.keys(layer, pos + 1);
        let values = kv.values(layer, pos + 1);
        let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        // The query in f16 like the cached keys, so one f16 dot kernel serves (as llama.cpp's
        // flash attention does).
        let mut qh = [0u8; 2 * MAX_HEAD_DIM];
        let qh = &mut qh[..2 * head_dim];
        f16::from_f32(&q[(t * n_head + h) * head_dim..][..head_dim], qh);
        // Online softmax over tiles of positions: scores of a tile, one rescale of the
        // accumulator when the running max grows, then the tile's values in one pass.
        acc.fill(0.0);
        let mut max = f32::NEG_INFINITY;
        let mut sum = 0.0f32;
        let mut scores = [0f32; ATTN_TILE];
        let mut p0 = first;
        while p0 <= pos {
            let n = (pos + 1 - p0).min(ATTN_TILE);
            let scores = &mut scores[..n];
            for (i, s) in scores.iter_mut().enumerate() {
                let k = &keys[(p0 + i) * k_row + g * head_dim * 2..][..head_dim * 2];
                *s = f16::dot(head_dim, qh, k) * scale;
            }
            let tile_max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if tile_max > max {
                let corr = (max - tile_max).exp();
                sum *= corr;
                ops::scale_inplace(acc, corr);
                max = tile_max;
            }
            sum += ops::exp_shifted_inplace(scores, max);
            let v0 = p0 * v_row + g * head_dim_v * 2;
            f16::weighted_sum(acc, scores, &values[v0..], v_row);
            p0 += n;
        }
        if sum > 0.0 {
            ops::scale_inplace(acc, 1.0 / sum);
        }
    });
}

/// Positions per attention tile (scores on the stack).
const ATTN_TILE: usize = 64;

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

/// The token embedding, the final norm and the output head every decoder has; the head is tied
/// to the embedding when the file has no `output.weight`.
pub struct EmbeddingAndHead {
    pub token_embd: Mat,
    pub output_norm: Vec<f32>,
    pub output: Mat,
}

impl EmbeddingAndHead {
    pub fn load(
        t: &crate::weights::TensorLoader,
        n_embd: usize,
    ) -> Result<EmbeddingAndHead, EngineError> {
        let n_vocab = t.vocab_rows("token_embd.weight", n_embd)?;
        let token_embd = t.table("token_embd.weight", n_vocab, n_embd)?;
        Ok(EmbeddingAndHead {
            output: t
                .opt_matrix("output.weight", n_vocab, n_embd)?
                .map_or_else(|| t.matrix("token_embd.weight", n_vocab, n_embd), Ok)?,
            token_embd,
            output_norm: t.vector("output_norm.weight", n_embd)?,
        })
    }

    pub fn n_vocab(&self) -> usize {
        self.output.rows
    }

    /// Embeds `tokens` (times `scale`) into `rt.scratch.x`, after checking every cache has
    /// room, and notes each token's sequence and position.
    pub fn embed(&self, rt: &mut Runtime, tokens: &[u32], scale: f32) -> Result<(), EngineError> {
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
        embed(rt.file, &self.token_embd, tokens, scale, &mut rt.scratch.x)
    }

    /// Final norm and output projection of `rt.scratch.x` for the rows asked for (or the
    /// normalized rows themselves for `Hidden`); appends to `logits`.
    pub fn logits(&self, rt: &mut Runtime, eps: f32, rows: LogitRows, logits: &mut Vec<f32>) {
        let scratch = &mut *rt.scratch;
        let dim = self.output_norm.len();
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
        rmsnorm_rows(x, &self.output_norm, eps, &mut scratch.xn);
        if rows == LogitRows::Hidden {
            logits.extend_from_slice(&scratch.xn[..n * dim]);
            return;
        }
        scratch.acts.invalidate();
        linear(
            rt.file,
            rt.pool,
            &mut scratch.acts,
            &self.output,
            &scratch.xn,
            n,
            &mut scratch.proj,
        );
        logits.extend_from_slice(&scratch.proj[..n * self.output.rows]);
    }
}

impl AttnShape {
    pub fn of(c: &crate::config::ModelConfig) -> AttnShape {
        AttnShape {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            head_dim_v: c.head_dim_v,
        }
    }
}

/// Weights of one self-attention sub-block.
pub struct AttnWeights {
    pub wq: Mat,
    pub wk: Mat,
    pub wv: Mat,
    pub wo: Mat,
    /// Per-head RMS norms of queries and keys (Gemma 3, Qwen 3).
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
}

/// How one layer's attention behaves.
pub struct AttnParams<'r> {
    pub shape: AttnShape,
    pub rope: &'r ops::Rope,
    pub scale: f32,
    pub window: Option<usize>,
    pub eps: f32,
}

impl AttnWeights {
    /// Loads `blk.{layer}.attn_{q,k,v,output}` (and the QK norms when present).
    pub fn load(
        t: &crate::weights::TensorLoader,
        layer: usize,
        n_embd: usize,
        shape: AttnShape,
    ) -> Result<AttnWeights, EngineError> {
        let AttnShape {
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
        } = shape;
        let name = |s: &str| format!("blk.{layer}.{s}");
        Ok(AttnWeights {
            wq: t.matrix(&name("attn_q.weight"), n_head * head_dim, n_embd)?,
            wk: t.matrix(&name("attn_k.weight"), n_head_kv * head_dim, n_embd)?,
            wv: t.matrix(&name("attn_v.weight"), n_head_kv * head_dim_v, n_embd)?,
            wo: t.matrix(&name("attn_output.weight"), n_embd, n_head * head_dim_v)?,
            q_norm: t.opt_vector(&name("attn_q_norm.weight"), head_dim)?,
            k_norm: t.opt_vector(&name("attn_k_norm.weight"), head_dim)?,
        })
    }
}

/// Self-attention over `scratch.xn` (`n_tokens × n_embd`, already normalized) at the positions
/// noted in `scratch.token_seq`; the projected output lands in `scratch.proj`.
pub fn attention_block(rt: &mut Runtime, layer: usize, w: &AttnWeights, p: &AttnParams) {
    let s = &mut *rt.scratch;
    let n_tokens = s.token_seq.len();
    let (file, pool) = (rt.file, rt.pool);
    s.acts.invalidate();
    linear_many(
        file,
        pool,
        &mut s.acts,
        &[&w.wq, &w.wk, &w.wv],
        &s.xn,
        n_tokens,
        &mut [&mut s.q, &mut s.k, &mut s.v],
    );
    if let Some(qn) = &w.q_norm {
        rmsnorm_rows_inplace(&mut s.q, qn, p.eps);
    }
    if let Some(kn) = &w.k_norm {
        rmsnorm_rows_inplace(&mut s.k, kn, p.eps);
    }
    let hd = p.shape.head_dim;
    let (q_row, k_row) = (p.shape.n_head * hd, p.shape.n_head_kv * hd);
    for (t, &(_, pos)) in s.token_seq.iter().enumerate() {
        p.rope.apply(&mut s.q[t * q_row..(t + 1) * q_row], hd, pos);
        p.rope.apply(&mut s.k[t * k_row..(t + 1) * k_row], hd, pos);
    }
    let v_row = p.shape.n_head_kv * p.shape.head_dim_v;
    let mut first = 0;
    for seq in rt.seqs.iter_mut() {
        let end = first + seq.n_tokens;
        seq.kv.store(
            layer,
            seq.pos0,
            &s.k[first * k_row..end * k_row],
            &s.v[first * v_row..end * v_row],
        );
        first = end;
    }
    attention(
        pool,
        rt.seqs,
        &s.token_seq,
        layer,
        &s.q,
        p.shape,
        p.scale,
        p.window,
        &mut s.attn,
    );
    s.acts.invalidate();
    linear(
        file,
        pool,
        &mut s.acts,
        &w.wo,
        &s.attn,
        n_tokens,
        &mut s.proj,
    );
}

/// The gate's activation in a gated feed-forward block.
#[derive(Debug, Clone, Copy)]
pub enum GateActivation {
    Silu,
    GeluTanh,
}

/// Weights of a gated feed-forward sub-block: down(act(gate(x)) * up(x)).
pub struct FfnWeights {
    pub gate: Mat,
    pub up: Mat,
    pub down: Mat,
}

impl FfnWeights {
    pub fn load(
        t: &crate::weights::TensorLoader,
        layer: usize,
        n_embd: usize,
        n_ff: usize,
    ) -> Result<FfnWeights, EngineError> {
        let name = |s: &str| format!("blk.{layer}.{s}");
        Ok(FfnWeights {
            gate: t.matrix(&name("ffn_gate.weight"), n_ff, n_embd)?,
            up: t.matrix(&name("ffn_up.weight"), n_ff, n_embd)?,
            down: t.matrix(&name("ffn_down.weight"), n_embd, n_ff)?,
        })
    }
}

/// Gated feed-forward over `scratch.xn`; the output lands in `scratch.proj`.
pub fn ffn_block(rt: &mut Runtime, w: &FfnWeights, act: GateActivation) {
    let s = &mut *rt.scratch;
    let n_tokens = s.token_seq.len();
    let (file, pool) = (rt.file, rt.pool);
    s.acts.invalidate();
    linear_many(
        file,
        pool,
        &mut s.acts,
        &[&w.gate, &w.up],
        &s.xn,
        n_tokens,
        &mut [&mut s.gate, &mut s.up],
    );
    match act {
        GateActivation::Silu => ops::swiglu_inplace(&mut s.gate, &s.up),
        GateActivation::GeluTanh => ops::geglu_inplace(&mut s.gate, &s.up),
    }
    s.acts.invalidate();
    linear(
        file,
        pool,
        &mut s.acts,
        &w.down,
        &s.gate,
        n_tokens,
        &mut s.proj,
    );
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
