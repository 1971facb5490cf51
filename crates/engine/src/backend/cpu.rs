//! The CPU backend: the `kernels` crate on a thread pool. Weights of the formats the packed
//! kernels serve are repacked at load time; the others are read from the mapping.

use super::cpu_attention::{self, HostKv};
use super::{Backend, PreparedWeight, ReadRows, WeightJob};
use crate::blocks::{ActCache, AttnParams, Norm, NormKind, SeqPart};
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
        let mut slots = Vec::new();
        let mut mats = Vec::new();
        for (j, job) in jobs.iter().enumerate() {
            if let Some(p) = PackedMatrix::new(job.ty, job.rows, job.cols) {
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
        let qx = acts.get(act_type(w), x, n_tokens, w.cols);
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
            let qx = acts.get(act_type(ws[0]), x, n_tokens, ws[0].cols);
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
        for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            match norm.kind {
                NormKind::Rms => ops::rmsnorm(xr, &norm.weight, norm.eps, or),
                NormKind::Layer => ops::layernorm(xr, &norm.weight, bias, norm.eps, or),
            }
        }
    }

    fn norm_inplace(&self, norm: &Norm, x: &mut [f32]) {
        let dim = norm.weight.len();
        match norm.kind {
            NormKind::Rms => {
                for row in x.chunks_exact_mut(dim) {
                    ops::rmsnorm_inplace(row, &norm.weight, norm.eps);
                }
            }
            NormKind::Layer => {
                for row in x.chunks_exact_mut(dim) {
                    ops::layernorm_inplace(row, &norm.weight, norm.bias.as_deref(), norm.eps);
                }
            }
        }
    }

    fn rope(&self, rope: &Rope, x: &mut [f32], head_dim: usize, pos: usize) {
        rope.apply(x, head_dim, pos);
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
