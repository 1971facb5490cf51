//! The forward pass reaches the hardware only through `engine::Backend`: a backend that wraps
//! the CPU one sees every layer's KV writes and attention, its choice of which weights to
//! prepare is honoured, and a failure to prepare a weight is a load error naming the tensor.

use engine::backend::{Backend, PreparedWeight, ReadRows, WeightJob};
use engine::blocks::{ActCache, Activation, AttnParams, Norm, SeqPart};
use engine::kv_cache::KvCache;
use engine::weights::Mat;
use engine::{CpuBackend, EngineError, LogitRows, Model, SharedBackend};
use gguf::{GgmlType, GgufFile};
use kernels::ops::Rope;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The CPU backend behind a wrapper that counts calls and may refuse to prepare weights or
/// fail doing so (as a device out of memory would).
struct Wrapped {
    cpu: CpuBackend,
    prepare: bool,
    fail_prepare: bool,
    prepared: AtomicUsize,
    kv_allocs: AtomicUsize,
    kv_stores: AtomicUsize,
    attentions: AtomicUsize,
    products: AtomicUsize,
}

impl Wrapped {
    fn new(prepare: bool, fail_prepare: bool) -> Wrapped {
        Wrapped {
            cpu: CpuBackend::new(2),
            prepare,
            fail_prepare,
            prepared: AtomicUsize::new(0),
            kv_allocs: AtomicUsize::new(0),
            kv_stores: AtomicUsize::new(0),
            attentions: AtomicUsize::new(0),
            products: AtomicUsize::new(0),
        }
    }
}

fn bump(c: &AtomicUsize) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Backend for Wrapped {
    fn name(&self) -> &'static str {
        "wrapped-cpu"
    }
    fn threads(&self) -> usize {
        self.cpu.threads()
    }
    fn prepares(&self, ty: GgmlType, rows: usize, cols: usize) -> bool {
        // A failing backend asks for every matrix, so it fails on any CPU.
        self.fail_prepare || (self.prepare && self.cpu.prepares(ty, rows, cols))
    }
    fn prepare_weights(
        &self,
        jobs: &[WeightJob],
        read: &ReadRows,
    ) -> Result<Vec<Option<PreparedWeight>>, (usize, std::io::Error)> {
        if self.fail_prepare && !jobs.is_empty() {
            let oom = std::io::Error::new(std::io::ErrorKind::OutOfMemory, "device full");
            return Err((jobs.len() - 1, oom));
        }
        let out = self.cpu.prepare_weights(jobs, read)?;
        self.prepared
            .fetch_add(out.iter().flatten().count(), Ordering::Relaxed);
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
        bump(&self.products);
        self.cpu.matmul(file, acts, w, x, n_tokens, out)
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
        bump(&self.products);
        self.cpu.matmul_many(file, acts, ws, x, n_tokens, outs)
    }
    fn norm(&self, norm: &Norm, x: &[f32], out: &mut [f32]) {
        self.cpu.norm(norm, x, out)
    }
    fn norm_inplace(&self, norm: &Norm, x: &mut [f32]) {
        self.cpu.norm_inplace(norm, x)
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
        self.cpu.rope(rope, q, k, n_tokens, head_dim, pos0)
    }
    fn activation(&self, act: Activation, hidden: &mut [f32], up: Option<&[f32]>) {
        self.cpu.activation(act, hidden, up)
    }
    fn alloc_kv(
        &self,
        n_layer: usize,
        n_ctx: usize,
        n_head_kv: usize,
        head_dims: (usize, usize),
    ) -> KvCache {
        bump(&self.kv_allocs);
        self.cpu.alloc_kv(n_layer, n_ctx, n_head_kv, head_dims)
    }
    fn store_kv(&self, kv: &mut KvCache, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        bump(&self.kv_stores);
        self.cpu.store_kv(kv, layer, pos, k, v)
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
        bump(&self.attentions);
        self.cpu.attention(seqs, token_seq, layer, q, p, sinks, out)
    }
}

fn synthetic(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/synthetic")
        .join(name)
}

const PROMPT: [u32; 6] = [1, 7, 3, 9, 4, 12];

fn logits_on(model: &Model, backend: SharedBackend) -> Vec<f32> {
    let mut s = model.session(32, backend);
    s.eval(&PROMPT, LogitRows::All).expect("eval").to_vec()
}

#[test]
fn every_layer_goes_through_the_backend() {
    let wrapped = Arc::new(Wrapped::new(true, false));
    let model = Model::load_on(synthetic("llama_q4_0.gguf"), &*wrapped).expect("load");
    let n_layer = model.config().n_layer;
    let backend: SharedBackend = wrapped.clone();
    let mut s = model.session(32, backend);
    assert_eq!(wrapped.kv_allocs.load(Ordering::Relaxed), 1);
    s.eval(&PROMPT, LogitRows::Last).expect("prompt");
    s.eval(&[5], LogitRows::Last).expect("one token");
    // Two forward passes: each layer stores its keys and attends once per pass.
    assert_eq!(wrapped.kv_stores.load(Ordering::Relaxed), 2 * n_layer);
    assert_eq!(wrapped.attentions.load(Ordering::Relaxed), 2 * n_layer);
    // Q/K/V, output, gate/up, down per layer, and the head.
    assert!(wrapped.products.load(Ordering::Relaxed) >= 2 * (4 * n_layer + 1));
}

#[test]
fn the_backend_chooses_which_weights_it_prepares() {
    let path = synthetic("llama_q4_0.gguf");
    let default = Model::load(&path).expect("load");
    let expected = logits_on(&default, CpuBackend::shared(2));

    let preparing = Arc::new(Wrapped::new(true, false));
    let model = Model::load_on(&path, &*preparing).expect("load");
    let packed_here = engine::CpuBackend::new(1).prepares(GgmlType::Q4_0, 64, 64);
    assert_eq!(
        preparing.prepared.load(Ordering::Relaxed) > 0,
        packed_here,
        "the CPU prepares Q4_0 matrices exactly where it has packed kernels"
    );
    assert_eq!(logits_on(&model, preparing.clone()), expected);

    // Weights left unprepared are read from the mapping: the same model within rounding
    // (packed and unpacked kernels sum in different orders).
    let mapped = Arc::new(Wrapped::new(false, false));
    let model = Model::load_on(&path, &*mapped).expect("load");
    assert_eq!(mapped.prepared.load(Ordering::Relaxed), 0);
    let got = logits_on(&model, mapped.clone());
    assert_eq!(got.len(), expected.len());
    let diff = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-2, "mapped and prepared weights differ by {diff}");
}

#[test]
fn a_weight_the_backend_cannot_prepare_is_a_load_error_naming_it() {
    let failing = Wrapped::new(true, true);
    match Model::load_on(synthetic("llama_q4_0.gguf"), &failing) {
        Err(EngineError::TensorRead { name, source }) => {
            assert!(name.contains(".weight"), "names the tensor: {name}");
            assert_eq!(source.kind(), std::io::ErrorKind::OutOfMemory);
        }
        Err(other) => panic!("expected a tensor error, got {other}"),
        Ok(_) => panic!("a failed preparation must fail the load"),
    }
}
