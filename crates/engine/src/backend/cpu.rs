//! The CPU backend: the `kernels` crate on a thread pool. Weights of the formats the packed
//! kernels serve are repacked at load time; the others are read from the mapping.

use super::cpu_attention::{self, HostKv};
use super::{Backend, PreparedWeight, ReadRows, WeightJob};
use crate::blocks::{ActCache, Activation, AttnParams, Norm, NormKind, SeqPart};
use crate::kv_cache::KvCache;
use crate::weights::Mat;
use gguf::{GgmlType, GgufFile};
use kernels::matmul::matmul;
use kernels::ops::{self, Rope};
use kernels::packed::PackedMatrix;
use kernels::pool::ThreadPool;

/// Computes on this machine's cores through one thread pool.
pub struct CpuBackend {
    pool: ThreadPool,
}

impl CpuBackend {
    /// A backend computing on `threads` threads (the caller's counted; 0 counts as 1).
    pub fn new(threads: usize) -> CpuBackend {
        CpuBackend {
            pool: ThreadPool::new(threads),
        }
    }

    /// A backend on `threads` threads, ready to share between sessions.
    pub fn shared(threads: usize) -> super::SharedBackend {
        std::sync::Arc::new(CpuBackend::new(threads))
    }

    /// The threads a backend uses when the user gives no number: every core the process may
    /// run on.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// The pool the products and attention run on.
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// Calls `f(first_row, rows)` over `x`'s rows of `row_len` (a shorter last row is passed
    /// with the piece before it): on the pool in pieces of whole rows where there are enough
    /// (a prompt's), else once on this thread.
    fn each_row_chunk(
        &self,
        x: &mut [f32],
        row_len: usize,
        f: &(dyn Fn(usize, &mut [f32]) + Sync),
    ) {
        let rows = x.len() / row_len.max(1);
        match kernels::par::rows_per_chunk(&self.pool, rows, row_len) {
            Some(per) => {
                kernels::par::par_chunks_mut(&self.pool, x, per * row_len, &|i, x| f(i * per, x))
            }
            None => f(0, x),
        }
    }
}

/// Packing is on unless HEARTH_NO_PACK is set to something other than 0 (for comparisons).
fn packing_enabled() -> bool {
    std::env::var_os("HEARTH_NO_PACK").is_none_or(|v| v.is_empty() || v == "0")
}

/// The activation format a weight's dot product reads (f32 for formats without kernels).
fn act_type(w: &Mat) -> GgmlType {
    kernels::quant::format(w.ty).map_or(GgmlType::F32, |f| f.act_type())
}

fn packed(w: &Mat) -> Option<&PackedMatrix> {
    w.prepared.as_ref().and_then(|p| p.get::<PackedMatrix>())
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn threads(&self) -> usize {
        self.pool.n_threads()
    }

    fn prepares(&self, ty: GgmlType, rows: usize, cols: usize) -> bool {
        packing_enabled() && PackedMatrix::supported(ty, rows, cols)
    }

    fn prepare_weights(
        &self,
        jobs: &[WeightJob],
        read: &ReadRows,
    ) -> Result<Vec<Option<PreparedWeight>>, (usize, std::io::Error)> {
        // Packing runs once at load, on every core: not only the pool's threads.
        // One allocation for all of them, in 2 MiB pages where Linux gives them.
        let shapes: Vec<_> = jobs.iter().map(|j| (j.ty, j.rows, j.cols)).collect();
        let all = PackedMatrix::new_many(&shapes)
            .map_err(|e| (0, std::io::Error::new(std::io::ErrorKind::OutOfMemory, e)))?;
        let mut slots = Vec::new();
        let mut mats = Vec::new();
        for (j, p) in all.into_iter().enumerate() {
            if let Some(p) = p {
                slots.push(j);
                mats.push(p);
            }
        }
        PackedMatrix::pack_many(
            &mut mats,
            CpuBackend::default_threads(),
            |m, first_row, buf| read(slots[m], first_row, buf).map_err(|e| (slots[m], e)),
        )?;
        let mut out: Vec<Option<PreparedWeight>> = vec![None; jobs.len()];
        for (j, mat) in slots.into_iter().zip(mats) {
            out[j] = Some(PreparedWeight::new(mat));
        }
        Ok(out)
    }

    fn matmul(
        &self,
        file: &GgufFile,
        acts: &mut ActCache,
        w: &Mat,
        x: &[f32],
        n_tokens: usize,
        out: &mut [f32],
    ) {
        let qx = acts.get(&self.pool, act_type(w), x, n_tokens, w.cols);
        match packed(w) {
            Some(p) => kernels::packed::matmul_packed(&self.pool, p, qx, out),
            None => matmul(&self.pool, &w.view(file), qx, out),
        }
    }

    fn matmul_many(
        &self,
        file: &GgufFile,
        acts: &mut ActCache,
        ws: &[&Mat],
        x: &[f32],
        n_tokens: usize,
        outs: &mut [&mut [f32]],
    ) {
        let n = ws.len();
        let all_packed = ws.iter().all(|w| packed(w).is_some());
        let same_acts = ws.iter().all(|w| act_type(w) == act_type(ws[0]));
        if let (true, true, true, Some(first)) = (
            all_packed,
            same_acts,
            (2..=4).contains(&n) && outs.len() == n,
            packed(ws[0]),
        ) {
            // Fixed arrays: no allocation per layer in the decode loop.
            let mut mats = [first; 4];
            for (m, w) in mats.iter_mut().zip(ws) {
                *m = packed(w).unwrap_or(first);
            }
            let qx = acts.get(&self.pool, act_type(ws[0]), x, n_tokens, ws[0].cols);
            kernels::packed::matmul_packed_many(&self.pool, &mats[..n], qx, outs);
            return;
        }
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            self.matmul(file, acts, w, x, n_tokens, out);
        }
    }

    fn norm(&self, norm: &Norm, x: &[f32], out: &mut [f32]) {
        let dim = norm.weight.len();
        let bias = norm.bias.as_deref();
        self.each_row_chunk(out, dim, &|first_row, out| {
            let x = &x[first_row * dim..][..out.len()];
            for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
                match norm.kind {
                    NormKind::Rms => ops::rmsnorm(xr, &norm.weight, norm.eps, or),
                    NormKind::Layer => ops::layernorm(xr, &norm.weight, bias, norm.eps, or),
                }
            }
        });
    }

    fn norm_inplace(&self, norm: &Norm, x: &mut [f32]) {
        let dim = norm.weight.len();
        let bias = norm.bias.as_deref();
        self.each_row_chunk(x, dim, &|_, x| {
            for row in x.chunks_exact_mut(dim) {
                match norm.kind {
                    NormKind::Rms => ops::rmsnorm_inplace(row, &norm.weight, norm.eps),
                    NormKind::Layer => ops::layernorm_inplace(row, &norm.weight, bias, norm.eps),
                }
            }
        });
    }

    fn rope(
        &self,
        rope: &Rope,
        q: &mut [f32],
        k: &mut [f32],
        n_tokens: usize,
        head_dim: usize,
        pos0: usize,
    ) {
        if n_tokens == 0 {
            return;
        }
        let (q_row, k_row) = (q.len() / n_tokens, k.len() / n_tokens);
        // Tokens `first..first + count` of the batch, in `q` and `k` from their first rows.
        let rows = |first: usize, count: usize, q: &mut [f32], k: &mut [f32]| {
            for t in 0..count {
                let (q, k) = (&mut q[t * q_row..][..q_row], &mut k[t * k_row..][..k_row]);
                rope.apply_qk(q, k, head_dim, pos0 + first + t);
            }
        };
        match kernels::par::rows_per_chunk(&self.pool, n_tokens, q_row + k_row) {
            Some(per) if q_row > 0 && k_row > 0 => {
                kernels::par::par_zip_chunks_mut(
                    &self.pool,
                    q,
                    per * q_row,
                    k,
                    per * k_row,
                    &|i, q, k| rows(i * per, q.len() / q_row, q, k),
                );
            }
            _ => rows(0, n_tokens, q, k),
        }
    }

    fn activation(&self, act: Activation, hidden: &mut [f32], up: Option<&[f32]>) {
        // Element-wise, so any split gives the same values; pieces of whole 64-element runs
        // keep the vector kernels' short tail where it was, at the very end.
        const RUN: usize = 64;
        self.each_row_chunk(hidden, RUN, &|first_run, hidden| {
            let start = first_run * RUN;
            let up = up.map(|u| &u[start..start + hidden.len()]);
            match (up, act) {
                (None, Activation::GeluTanh) => ops::gelu_inplace(hidden),
                // No gate to clamp: SiLU of the up projection.
                (None, Activation::Silu | Activation::SwigluClamped { .. }) => {
                    for v in hidden.iter_mut() {
                        *v *= ops::sigmoid(*v);
                    }
                }
                (Some(up), Activation::Silu) => ops::swiglu_inplace(hidden, up),
                (Some(up), Activation::GeluTanh) => ops::geglu_inplace(hidden, up),
                (Some(up), Activation::SwigluClamped { alpha, limit }) => {
                    ops::swiglu_clamped_inplace(hidden, up, alpha, limit)
                }
            }
        });
    }

    fn alloc_kv(
        &self,
        n_layer: usize,
        n_ctx: usize,
        n_head_kv: usize,
        head_dims: (usize, usize),
    ) -> KvCache {
        let (k_row, v_row) = (n_head_kv * head_dims.0, n_head_kv * head_dims.1);
        let storage = HostKv::new(n_layer, n_ctx, n_head_kv, head_dims);
        KvCache::new(
            Box::new(storage),
            HostKv::ELEM_TYPE,
            n_layer,
            n_ctx,
            k_row,
            v_row,
        )
    }

    fn store_kv(&self, kv: &mut KvCache, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        host_kv_mut(kv).store(layer, pos, k, v);
    }

    fn attention(
        &self,
        seqs: &[SeqPart],
        token_seq: &[(usize, usize)],
        layer: usize,
        q: &[f32],
        p: &AttnParams,
        sinks: Option<&[f32]>,
        out: &mut [f32],
    ) {
        cpu_attention::attention(&self.pool, seqs, token_seq, layer, q, p, sinks, out);
    }
}

/// The host storage of a cache this backend made. Sessions get their caches from their own
/// backend, so another storage here is a bug in the engine, not bad input.
pub(super) fn host_kv(kv: &KvCache) -> &HostKv {
    kv.storage::<HostKv>()
        .expect("a KV cache made by the CPU backend")
}

fn host_kv_mut(kv: &mut KvCache) -> &mut HostKv {
    kv.storage_mut::<HostKv>()
        .expect("a KV cache made by the CPU backend")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::ops::RopeStyle;

    fn wave(n: usize, phase: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.731 + phase).sin() * 3.0)
            .collect()
    }

    /// A prompt's rows spread over threads: every row-wise op gives the values one thread
    /// gives, bit for bit (the golden logit tests hold whatever the thread count).
    #[test]
    fn row_ops_on_threads_equal_one_thread() {
        let (one, many) = (CpuBackend::new(1), CpuBackend::new(3));
        let (n_tokens, dim) = (53, 640);
        assert!(kernels::par::rows_per_chunk(many.pool(), n_tokens, dim).is_some());
        let x = wave(n_tokens * dim, 0.3);
        for kind in [NormKind::Rms, NormKind::Layer] {
            let norm = Norm {
                kind,
                weight: wave(dim, 1.0),
                bias: Some(wave(dim, 2.0)).filter(|_| kind == NormKind::Layer),
                eps: 1e-6,
            };
            let (mut a, mut b) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            one.norm(&norm, &x, &mut a);
            many.norm(&norm, &x, &mut b);
            assert_eq!(a, b, "{kind:?} norm");
            let (mut a, mut b) = (x.clone(), x.clone());
            one.norm_inplace(&norm, &mut a);
            many.norm_inplace(&norm, &mut b);
            assert_eq!(a, b, "{kind:?} norm in place");
        }

        let (head_dim, q_heads, k_heads) = (64, 4, 2);
        let rope = Rope::new(RopeStyle::Neox, head_dim, 10000.0, 1.0);
        let (q, k) = (
            wave(n_tokens * q_heads * head_dim, 0.5),
            wave(n_tokens * k_heads * head_dim, 0.9),
        );
        let (mut qa, mut ka, mut qb, mut kb) = (q.clone(), k.clone(), q.clone(), k.clone());
        one.rope(&rope, &mut qa, &mut ka, n_tokens, head_dim, 100);
        many.rope(&rope, &mut qb, &mut kb, n_tokens, head_dim, 100);
        assert_eq!((&qa, &ka), (&qb, &kb), "rope");
        // Token t of the batch turns by position 100 + t, as one token alone would.
        let (mut q7, mut k7) = (
            q[7 * q_heads * head_dim..8 * q_heads * head_dim].to_vec(),
            k[7 * k_heads * head_dim..8 * k_heads * head_dim].to_vec(),
        );
        one.rope(&rope, &mut q7, &mut k7, 1, head_dim, 107);
        assert_eq!(q7, qa[7 * q_heads * head_dim..8 * q_heads * head_dim]);
        assert_eq!(k7, ka[7 * k_heads * head_dim..8 * k_heads * head_dim]);

        // A length that is no multiple of any vector: the kernels' tail stays at the end.
        let n = n_tokens * 2048 + 13;
        let (gate, up) = (wave(n, 0.1), wave(n, 0.2));
        let acts = [
            Activation::Silu,
            Activation::GeluTanh,
            Activation::SwigluClamped {
                alpha: 1.702,
                limit: 7.0,
            },
        ];
        for act in acts {
            for up in [Some(&up[..]), None] {
                let (mut a, mut b) = (gate.clone(), gate.clone());
                one.activation(act, &mut a, up);
                many.activation(act, &mut b, up);
                assert_eq!(a, b, "{act:?}, gated: {}", up.is_some());
            }
        }
    }
}
