//! Self-attention: Q/K/V projections (separate or fused, with optional biases and Q/K norms),
//! rotary positions, the KV cache, and attention with GQA, sliding windows, soft-capping,
//! sinks, and causal or bidirectional masks.

use super::{linear, linear_many, sized, Linear, Norm, Runtime};
use crate::error::EngineError;
use crate::rope::RopeSet;
use crate::weights::TensorLoader;
use kernels::ops;

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

impl AttnShape {
    pub fn of(c: &crate::config::ModelConfig) -> AttnShape {
        AttnShape {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            head_dim_v: c.head_dim_v,
        }
    }

    fn q_row(&self) -> usize {
        self.n_head * self.head_dim
    }
    fn k_row(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
    fn v_row(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}

/// The query, key and value projections: three matrices, or one whose rows are Q, K then V
/// (`attn_qkv`: Phi-3, GPT-2, nomic-bert).
pub enum QkvProj {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

/// Weights of one self-attention sub-block.
pub struct AttnWeights {
    pub qkv: QkvProj,
    pub o: Linear,
    /// RMS norms of queries and keys: per head (Gemma 3, Qwen 3; a `head_dim` weight) or
    /// over the whole projection (OLMo 2).
    pub q_norm: Option<Norm>,
    pub k_norm: Option<Norm>,
    /// One extra logit per head that takes part in the softmax but has no value (gpt-oss).
    pub sinks: Option<Vec<f32>>,
}

impl AttnWeights {
    /// Loads `blk.{layer}.attn_{q,k,v}` or the fused `attn_qkv`, and `attn_output`, each with
    /// its bias when the file has one. Norms and sinks are added by the architectures that
    /// have them.
    pub fn load(
        t: &TensorLoader,
        layer: usize,
        n_embd: usize,
        shape: AttnShape,
    ) -> Result<AttnWeights, EngineError> {
        let name = |s: &str| format!("blk.{layer}.{s}");
        let (q_row, k_row, v_row) = (shape.q_row(), shape.k_row(), shape.v_row());
        let qkv = match Linear::opt(t, &name("attn_qkv"), q_row + k_row + v_row, n_embd)? {
            Some(fused) => QkvProj::Fused(fused),
            None => QkvProj::Separate {
                q: Linear::load(t, &name("attn_q"), q_row, n_embd)?,
                k: Linear::load(t, &name("attn_k"), k_row, n_embd)?,
                v: Linear::load(t, &name("attn_v"), v_row, n_embd)?,
            },
        };
        Ok(AttnWeights {
            qkv,
            o: Linear::load(
                t,
                &name("attn_output"),
                n_embd,
                shape.n_head * shape.head_dim_v,
            )?,
            q_norm: None,
            k_norm: None,
            sinks: None,
        })
    }

    /// Adds per-head RMS norms `attn_{q,k}_norm` (required).
    pub fn with_head_norms(
        mut self,
        t: &TensorLoader,
        layer: usize,
        shape: AttnShape,
        eps: f32,
    ) -> Result<AttnWeights, EngineError> {
        let hd = shape.head_dim;
        self.q_norm = Some(Norm::rms(t, &format!("blk.{layer}.attn_q_norm"), hd, eps)?);
        self.k_norm = Some(Norm::rms(t, &format!("blk.{layer}.attn_k_norm"), hd, eps)?);
        Ok(self)
    }

    /// Adds RMS norms over the whole query and key projections (OLMo 2).
    pub fn with_full_norms(
        mut self,
        t: &TensorLoader,
        layer: usize,
        shape: AttnShape,
        eps: f32,
    ) -> Result<AttnWeights, EngineError> {
        let name = |s: &str| format!("blk.{layer}.{s}");
        self.q_norm = Some(Norm::rms(t, &name("attn_q_norm"), shape.q_row(), eps)?);
        self.k_norm = Some(Norm::rms(t, &name("attn_k_norm"), shape.k_row(), eps)?);
        Ok(self)
    }

    /// Adds the per-head attention sinks `attn_sinks` (required).
    pub fn with_sinks(
        mut self,
        t: &TensorLoader,
        layer: usize,
        shape: AttnShape,
    ) -> Result<AttnWeights, EngineError> {
        self.sinks = Some(t.vector(&format!("blk.{layer}.attn_sinks.weight"), shape.n_head)?);
        Ok(self)
    }
}

/// How one layer's attention behaves.
pub struct AttnParams<'r> {
    pub shape: AttnShape,
    /// Rotary embeddings, or `None` for layers without (SmolLM3's every fourth layer, models
    /// with learned positions).
    pub rope: Option<&'r RopeSet>,
    /// Multiplies the query-key scores (usually 1/sqrt(head_dim)).
    pub scale: f32,
    /// A query at p sees keys at p - window + 1 ..= p.
    pub window: Option<usize>,
    /// Scores become cap * tanh(score / cap) (Gemma 2).
    pub softcap: Option<f32>,
    /// Whether a token sees only earlier positions (decoders) or its whole sequence (BERT).
    pub causal: bool,
    /// Llama 4 / Mistral 3 temperature tuning `(scale, floor)`: queries at position p are
    /// multiplied by 1 + scale · ln(⌊p / floor⌋ + 1), sharpening attention far into a long
    /// context.
    pub q_temperature: Option<(f32, usize)>,
}

impl<'r> AttnParams<'r> {
    /// Causal attention with rope, scaled by 1/sqrt(head_dim), no window or cap.
    pub fn causal(shape: AttnShape, rope: Option<&'r RopeSet>) -> AttnParams<'r> {
        AttnParams {
            shape,
            rope,
            scale: 1.0 / (shape.head_dim as f32).sqrt(),
            window: None,
            softcap: None,
            causal: true,
            q_temperature: None,
        }
    }
}

/// Self-attention over `scratch.xn` (`n_tokens × n_embd`, already normalized) at the positions
/// noted in `scratch.token_seq`; the projected output lands in `scratch.proj`.
pub fn attention_block(rt: &mut Runtime, layer: usize, w: &AttnWeights, p: &AttnParams) {
    let s = &mut *rt.scratch;
    let n_tokens = s.token_seq.len();
    let (file, be) = (rt.file, rt.backend);
    let (q_row, k_row, v_row) = (p.shape.q_row(), p.shape.k_row(), p.shape.v_row());
    s.acts.invalidate();
    match &w.qkv {
        QkvProj::Separate { q, k, v } => linear_many(
            be,
            file,
            &mut s.acts,
            &[q, k, v],
            &s.xn,
            n_tokens,
            &mut [&mut s.q, &mut s.k, &mut s.v],
        ),
        QkvProj::Fused(qkv) => {
            // The fused rows land in `attn` (free until the attention itself), then split.
            linear(be, file, &mut s.acts, qkv, &s.xn, n_tokens, &mut s.attn);
            let (q, k, v) = (
                sized(&mut s.q, n_tokens * q_row),
                sized(&mut s.k, n_tokens * k_row),
                sized(&mut s.v, n_tokens * v_row),
            );
            let fused = q_row + k_row + v_row;
            for (t, row) in s.attn.chunks_exact(fused).take(n_tokens).enumerate() {
                q[t * q_row..][..q_row].copy_from_slice(&row[..q_row]);
                k[t * k_row..][..k_row].copy_from_slice(&row[q_row..q_row + k_row]);
                v[t * v_row..][..v_row].copy_from_slice(&row[q_row + k_row..]);
            }
        }
    }
    if let Some(qn) = &w.q_norm {
        qn.rows_inplace(be, &mut s.q[..n_tokens * q_row]);
    }
    if let Some(kn) = &w.k_norm {
        kn.rows_inplace(be, &mut s.k[..n_tokens * k_row]);
    }
    if let Some(rope) = p.rope {
        let hd = p.shape.head_dim;
        let mut first = 0;
        for seq in rt.seqs.iter() {
            let (n, end) = (seq.n_tokens, first + seq.n_tokens);
            let r = rope.for_ctx(seq.kv.n_ctx());
            let q = &mut s.q[first * q_row..end * q_row];
            be.rope(r, q, &mut s.k[first * k_row..end * k_row], n, hd, seq.pos0);
            first = end;
        }
    }
    if let Some((scale, floor)) = p.q_temperature {
        for (t, &(_, pos)) in s.token_seq.iter().enumerate() {
            let m = 1.0 + scale * (((pos / floor.max(1)) as f32) + 1.0).ln();
            ops::scale_inplace(&mut s.q[t * q_row..(t + 1) * q_row], m);
        }
    }
    let mut first = 0;
    for seq in rt.seqs.iter_mut() {
        let end = first + seq.n_tokens;
        be.store_kv(
            seq.kv,
            layer,
            seq.pos0,
            &s.k[first * k_row..end * k_row],
            &s.v[first * v_row..end * v_row],
        );
        first = end;
    }
    let attn = sized(&mut s.attn, n_tokens * p.shape.n_head * p.shape.head_dim_v);
    be.attention(
        rt.seqs,
        &s.token_seq,
        layer,
        &s.q,
        p,
        w.sinks.as_deref(),
        attn,
    );
    s.acts.invalidate();
    linear(be, file, &mut s.acts, &w.o, &s.attn, n_tokens, &mut s.proj);
}
