//! The CPU backend's KV storage (f16 in host memory) and attention over it.

use super::cpu::host_kv;
use super::KvStorage;
use crate::blocks::{AttnParams, AttnShape, SeqPart, MAX_HEAD_DIM};
use gguf::GgmlType;
use kernels::ops::{self, f16};
use kernels::par::par_chunks_mut;
use kernels::pool::ThreadPool;

/// Positions per attention tile (scores on the stack).
const ATTN_TILE: usize = 64;

/// Bytes per cached element.
const ELEM: usize = 2;

/// Keys and values of every layer as f16 (as llama.cpp stores them by default: half the
/// memory of f32).
pub struct HostKv {
    layers: Vec<LayerKv>,
}

struct LayerKv {
    /// f16 little-endian bytes, `n_ctx × k_row` elements.
    k: Vec<u8>,
    v: Vec<u8>,
}

impl KvStorage for HostKv {}

impl HostKv {
    pub const ELEM_TYPE: GgmlType = GgmlType::F16;

    /// Room for `n_ctx` positions. Memory is reserved up front but zero pages are not touched
    /// until used, so resident memory grows with the positions actually filled.
    pub fn new(n_layer: usize, n_ctx: usize, k_row: usize, v_row: usize) -> HostKv {
        let layers = (0..n_layer)
            .map(|_| LayerKv {
                k: vec![0; n_ctx * k_row * ELEM],
                v: vec![0; n_ctx * v_row * ELEM],
            })
            .collect();
        HostKv { layers }
    }

    /// Stores rows of keys and values (f32, converted to f16) starting at position `pos`.
    pub fn store(
        &mut self,
        layer: usize,
        pos: usize,
        k_row: usize,
        v_row: usize,
        k: &[f32],
        v: &[f32],
    ) {
        let l = &mut self.layers[layer];
        let k_start = pos * k_row * ELEM;
        f16::from_f32(k, &mut l.k[k_start..k_start + k.len() * ELEM]);
        let v_start = pos * v_row * ELEM;
        f16::from_f32(v, &mut l.v[v_start..v_start + v.len() * ELEM]);
    }

    /// Key bytes of `layer` for positions `0..len`, one row of `k_row` f16 values per position.
    pub fn keys(&self, layer: usize, len: usize, k_row: usize) -> &[u8] {
        &self.layers[layer].k[..len * k_row * ELEM]
    }

    pub fn values(&self, layer: usize, len: usize, v_row: usize) -> &[u8] {
        &self.layers[layer].v[..len * v_row * ELEM]
    }
}

/// See [`super::Backend::attention`]. Causal: keys up to the token's position; otherwise every
/// position the sequence has after this batch. Parallel over (token, head) pairs, with an
/// online softmax over tiles of positions.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    pool: &ThreadPool,
    seqs: &[SeqPart],
    token_seq: &[(usize, usize)],
    layer: usize,
    q: &[f32],
    p: &AttnParams,
    sinks: Option<&[f32]>,
    out: &mut [f32],
) {
    let AttnShape {
        n_head,
        n_head_kv,
        head_dim,
        head_dim_v,
    } = p.shape;
    let (scale, window, softcap) = (p.scale, p.window, p.softcap);
    let group = n_head / n_head_kv;
    let (k_elems, v_elems) = (n_head_kv * head_dim, n_head_kv * head_dim_v);
    let (k_row, v_row) = (k_elems * ELEM, v_elems * ELEM);
    let out = &mut out[..token_seq.len() * n_head * head_dim_v];
    par_chunks_mut(pool, out, head_dim_v, &|idx, acc| {
        let (t, h) = (idx / n_head, idx % n_head);
        let g = h / group;
        let (seq, pos) = token_seq[t];
        let part = &seqs[seq];
        let last = if p.causal {
            pos
        } else {
            part.pos0 + part.n_tokens - 1
        };
        let kv = host_kv(part.kv);
        let keys = kv.keys(layer, last + 1, k_elems);
        let values = kv.values(layer, last + 1, v_elems);
        let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        // The query in f16 like the cached keys, so one f16 dot kernel serves (as llama.cpp's
        // flash attention does).
        let mut qh = [0u8; 2 * MAX_HEAD_DIM];
        let qh = &mut qh[..2 * head_dim];
        f16::from_f32(&q[(t * n_head + h) * head_dim..][..head_dim], qh);
        // Online softmax over tiles of positions: scores of a tile, one rescale of the
        // accumulator when the running max grows, then the tile's values in one pass. A sink
        // starts the softmax as a logit with no value.
        acc.fill(0.0);
        let (mut max, mut sum) = match sinks {
            Some(s) => (s[h], 1.0f32),
            None => (f32::NEG_INFINITY, 0.0f32),
        };
        let mut scores = [0f32; ATTN_TILE];
        let mut p0 = first;
        while p0 <= last {
            let n = (last + 1 - p0).min(ATTN_TILE);
            let scores = &mut scores[..n];
            for (i, s) in scores.iter_mut().enumerate() {
                let k = &keys[(p0 + i) * k_row + g * head_dim * 2..][..head_dim * 2];
                *s = f16::dot(head_dim, qh, k) * scale;
            }
            if let Some(cap) = softcap {
                ops::softcap_inplace(scores, cap);
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
