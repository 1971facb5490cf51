//! The compute backend seam: what the forward pass asks of the hardware it runs on.
//!
//! The architectures and shared blocks decide *what* to compute; a [`Backend`] decides *how*:
//! it prepares weight matrices at load time (into its own buffers), runs the matrix products,
//! norms, rotary embeddings and attention, and owns the storage of the KV cache. Today's only
//! implementation is [`CpuBackend`] (the thread pool and the `kernels` crate); a device backend
//! (CUDA, Vulkan) would implement the same trait with device buffers behind the handles
//! ([`PreparedWeight`], [`KvStorage`]). The forward pass calls through `&dyn Backend`: a few
//! dozen calls per layer, each doing thousands of times more work than the indirect call.
//!
//! Activations are host slices in this version of the seam, so a device backend working op by
//! op would copy them each time; the plan for layer groups that stay on a device (activations
//! cross once per group) is in `docs/ARCHITECTURE.md`, "Compute backends".

mod cpu;
mod cpu_attention;

pub use cpu::CpuBackend;
pub use cpu_attention::HostKv;
/// For background threads (model loads, request preparation) beside a running forward pass:
/// they take the cores only when the compute threads leave them idle.
pub use kernels::pool::lower_thread_priority;

use crate::blocks::{ActCache, Activation, AttnParams, Norm, SeqPart};
use crate::kv_cache::KvCache;
use crate::weights::Mat;
use gguf::{GgmlType, GgufFile};
use kernels::ops::Rope;
use std::any::Any;
use std::sync::Arc;

/// A backend shared by every session that runs on it.
pub type SharedBackend = Arc<dyn Backend>;

/// A weight matrix as a backend holds it after [`Backend::prepare_weights`] (a repacked host
/// copy, a device buffer). Only the backend that made it knows its type.
#[derive(Clone)]
pub struct PreparedWeight(Arc<dyn Any + Send + Sync>);

impl PreparedWeight {
    pub fn new<T: Any + Send + Sync>(buffer: T) -> PreparedWeight {
        PreparedWeight(Arc::new(buffer))
    }

    /// The buffer, if it is a `T` (a backend asks for its own type).
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for PreparedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreparedWeight")
    }
}

/// One matrix to prepare: `rows × cols` elements of type `ty`, whose source rows the loader
/// reads on request (rows of an expert slice are counted from the slice's first row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightJob {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
}

/// Reads whole source rows of job `m` from `first_row` on into the buffer (its length is a
/// whole number of rows).
pub type ReadRows<'a> = dyn Fn(usize, usize, &mut [u8]) -> Result<(), std::io::Error> + Sync + 'a;

/// The storage of a KV cache, made by [`Backend::alloc_kv`]: host memory for the CPU, device
/// memory for a GPU. Only the backend that made it reads or writes it.
pub trait KvStorage: Any + Send + Sync {}

/// What the forward pass needs from the hardware. Activations are `f32` host slices; weights
/// and the KV cache are the backend's own buffers.
pub trait Backend: Send + Sync {
    /// A short name for logs and `bench` ("cpu").
    fn name(&self) -> &'static str;

    /// Host threads the backend computes on.
    fn threads(&self) -> usize;

    /// Whether [`Backend::prepare_weights`] makes its own copy of such a matrix; if not, the
    /// products read it from the mapped file.
    fn prepares(&self, ty: GgmlType, rows: usize, cols: usize) -> bool;

    /// Prepares the matrices (all in one pass, so a backend can spread the work or batch the
    /// uploads). Returns one entry per job, `None` where the mapped bytes serve as they are.
    /// An error carries the index of the job whose read failed.
    fn prepare_weights(
        &self,
        jobs: &[WeightJob],
        read: &ReadRows,
    ) -> Result<Vec<Option<PreparedWeight>>, (usize, std::io::Error)>;

    /// out (`n_tokens × w.rows`) = x (`n_tokens × w.cols`) · wᵀ. `acts` caches the input in the
    /// forms the products read it in (invalidated by the caller when the input changes);
    /// `file` holds the weights that were not prepared.
    fn matmul(
        &self,
        file: &GgufFile,
        acts: &mut ActCache,
        w: &Mat,
        x: &[f32],
        n_tokens: usize,
        out: &mut [f32],
    );

    /// Several products of the same input, `outs[m] = x · ws[m]ᵀ` (Q/K/V, gate/up): one
    /// dispatch where the backend can.
    fn matmul_many(
        &self,
        file: &GgufFile,
        acts: &mut ActCache,
        ws: &[&Mat],
        x: &[f32],
        n_tokens: usize,
        outs: &mut [&mut [f32]],
    );

    /// Normalizes each row of `x` into `out` (same length).
    fn norm(&self, norm: &Norm, x: &[f32], out: &mut [f32]);

    /// Normalizes each row of `x` in place.
    fn norm_inplace(&self, norm: &Norm, x: &mut [f32]);

    /// Rotates the heads (`head_dim` each) of `n_tokens` consecutive tokens of one sequence,
    /// at positions `pos0..`: their rows of queries `q` and of keys `k`.
    fn rope(
        &self,
        rope: &Rope,
        q: &mut [f32],
        k: &mut [f32],
        n_tokens: usize,
        head_dim: usize,
        pos0: usize,
    );

    /// The feed-forward nonlinearity in place: `hidden` = act(`hidden`) · `up` for a gated
    /// block, act(`hidden`) where there is no gate (`up` is `None`).
    fn activation(&self, act: Activation, hidden: &mut [f32], up: Option<&[f32]>);

    /// An empty cache of `n_ctx` positions for `n_layer` layers of `n_head_kv` KV heads, each
    /// of `head_dims` (key, value) elements; a position's row of keys (values) holds the
    /// heads one after another. The storage may keep them in any order.
    fn alloc_kv(
        &self,
        n_layer: usize,
        n_ctx: usize,
        n_head_kv: usize,
        head_dims: (usize, usize),
    ) -> KvCache;

    /// Stores rows of keys and values of `layer` from position `pos` on.
    fn store_kv(&self, kv: &mut KvCache, layer: usize, pos: usize, k: &[f32], v: &[f32]);

    /// Attention of each token's query (`q`: `n_tokens × n_head × head_dim`) over the cached
    /// keys and values of its own sequence in `layer` (this batch's already stored);
    /// `token_seq` gives each token's sequence and position. Writes
    /// `n_tokens × n_head × head_dim_v` into `out`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        seqs: &[SeqPart],
        token_seq: &[(usize, usize)],
        layer: usize,
        q: &[f32],
        p: &AttnParams,
        sinks: Option<&[f32]>,
        out: &mut [f32],
    );
}
