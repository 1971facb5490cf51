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
pub struct Runtime<'a> {
    pub file: &'a GgufFile,
    pub pool: &'a ThreadPool,
    pub kv: &'a mut KvCache,
    pub scratch: &'a mut Scratch,
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

/// Causal attention of `n_tokens` queries at positions `pos0..` over the cached keys and values
/// of `layer` (the current tokens already stored). With a sliding `window`, a query at p sees
/// keys at positions p - window + 1 ..= p. Writes `n_tokens × n_head × head_dim_v` into `out`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    pool: &ThreadPool,
    kv: &KvCache,
    layer: usize,
    q: &[f32],
    pos0: usize,
    n_tokens: usize,
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
    let keys = kv.keys(layer, pos0 + n_tokens);
    let values = kv.values(layer, pos0 + n_tokens);
    let out = sized(out, n_tokens * n_head * head_dim_v);
    par_chunks_mut(pool, out, head_dim_v, &|idx, acc| {
        let (t, h) = (idx / n_head, idx % n_head);
        let g = h / group;
        let pos = pos0 + t;
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

/// Which positions of a batch get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    Last,
    All,
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

    /// Embeds `tokens` (times `scale`) into `rt.scratch.x`, after checking the cache has room.
    pub fn embed(
        &self,
        rt: &mut Runtime,
        tokens: &[u32],
        pos0: usize,
        scale: f32,
    ) -> Result<(), EngineError> {
        check_room(rt.kv, pos0, tokens.len())?;
        embed(rt.file, &self.token_embd, tokens, scale, &mut rt.scratch.x)
    }

    /// Final norm and output projection of `rt.scratch.x` for the rows asked for; appends to
    /// `logits`.
    pub fn logits(
        &self,
        rt: &mut Runtime,
        eps: f32,
        n_tokens: usize,
        rows: LogitRows,
        logits: &mut Vec<f32>,
    ) {
        let scratch = &mut *rt.scratch;
        let dim = self.output_norm.len();
        let (first, n) = match rows {
            LogitRows::Last => (n_tokens - 1, 1),
            LogitRows::All => (0, n_tokens),
        };
        let x = &scratch.x[first * dim..(first + n) * dim];
        rmsnorm_rows(x, &self.output_norm, eps, &mut scratch.xn);
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

/// Self-attention over `scratch.xn` (`n_tokens × n_embd`, already normalized) at positions
/// `pos0..`; the projected output lands in `scratch.proj`.
pub fn attention_block(
    rt: &mut Runtime,
    layer: usize,
    w: &AttnWeights,
    p: &AttnParams,
    pos0: usize,
    n_tokens: usize,
) {
    let s = &mut *rt.scratch;
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
    for t in 0..n_tokens {
        p.rope
            .apply(&mut s.q[t * q_row..(t + 1) * q_row], hd, pos0 + t);
        p.rope
            .apply(&mut s.k[t * k_row..(t + 1) * k_row], hd, pos0 + t);
    }
    rt.kv.store(layer, pos0, &s.k, &s.v);
    attention(
        pool,
        rt.kv,
        layer,
        &s.q,
        pos0,
        n_tokens,
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
pub fn ffn_block(rt: &mut Runtime, w: &FfnWeights, act: GateActivation, n_tokens: usize) {
    let s = &mut *rt.scratch;
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
