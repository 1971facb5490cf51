//! The CPU backend's KV storage (f16 in host memory) and attention over it.

use super::cpu::host_kv;
use super::KvStorage;
use crate::blocks::{AttnParams, AttnShape, SeqPart, MAX_HEAD_DIM};
use gguf::GgmlType;
use kernels::attn::{self, Right, Start};
use kernels::ops::{self, f16};
use kernels::par::{par_chunks_mut, par_chunks_mut_on};
use kernels::pool::ThreadPool;

/// Bytes per cached element.
const ELEM: usize = 2;

/// Keys and values of every layer as f16 (as llama.cpp stores them by default: half the
/// memory of f32), each KV head's positions one after another: attention reads one KV head
/// at a time, and a stream from memory runs several times faster than a stride through rows
/// of every head (decoding SmolLM2 at 2048 positions spent over half its time reading the
/// cache that way).
///
/// Keys are kept transposed in blocks of [`KEY_BLOCK`] positions: a block holds element 0 of
/// each of its positions, then element 1, and so on. Attention takes keys a block at a time
/// either across SIMD lanes (few queries: a decoding token) or as the rows of a product read
/// with strides (many queries): both read a transposed block as it lies, so the cache is
/// only ever converted in one linear pass. Transposing rows on every read instead ran at a
/// third of the memory's speed and was a fifth of a decode step at 2048 positions.
pub struct HostKv {
    layers: Vec<LayerKv>,
    n_ctx: usize,
    n_head_kv: usize,
    /// Elements of one KV head's key and value rows.
    head_dim: usize,
    head_dim_v: usize,
}

struct LayerKv {
    /// f16 little-endian bytes: element `c` of head `g`'s key at position `p` at
    /// `((g * key_blocks + p / KEY_BLOCK) * head_dim + c) * KEY_BLOCK + p % KEY_BLOCK`.
    k: Vec<u8>,
    /// f16 little-endian bytes: head `g`'s value row of position `p` at
    /// `(g * n_ctx + p) * head_dim_v`.
    v: Vec<u8>,
}

impl KvStorage for HostKv {}

impl HostKv {
    pub const ELEM_TYPE: GgmlType = GgmlType::F16;

    /// Room for `n_ctx` positions of `n_head_kv` heads of `head_dims` (key, value) elements.
    /// Memory is reserved up front but zero pages are not touched until used, so resident
    /// memory grows with the positions actually filled.
    pub fn new(
        n_layer: usize,
        n_ctx: usize,
        n_head_kv: usize,
        head_dims: (usize, usize),
    ) -> HostKv {
        let (head_dim, head_dim_v) = head_dims;
        assert!(
            head_dim <= MAX_HEAD_DIM,
            "KV heads of {head_dim} elements (at most {MAX_HEAD_DIM})"
        );
        let key_positions = n_ctx.next_multiple_of(KEY_BLOCK);
        let (k_row, v_row) = (n_head_kv * head_dim, n_head_kv * head_dim_v);
        let layers = (0..n_layer)
            .map(|_| LayerKv {
                k: vec![0; key_positions * k_row * ELEM],
                v: vec![0; n_ctx * v_row * ELEM],
            })
            .collect();
        HostKv {
            layers,
            n_ctx,
            n_head_kv,
            head_dim,
            head_dim_v,
        }
    }

    /// Stores rows of keys and values (f32, converted to f16; per position, every KV head's
    /// row one after another) starting at position `pos`.
    ///
    /// Panics if the rows run past the cache's `n_ctx` positions.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (n_ctx, n_head_kv) = (self.n_ctx, self.n_head_kv);
        let (head_dim, head_dim_v) = (self.head_dim, self.head_dim_v);
        let key_blocks = self.key_blocks();
        // Past n_ctx a row would land in the next head's positions (the caller checks the
        // context first; this keeps a mistake from corrupting the cache silently).
        let n_rows = k.len() / (n_head_kv * head_dim).max(1);
        assert!(
            pos + n_rows <= n_ctx,
            "KV positions {pos}..{} past the cache's {n_ctx}",
            pos + n_rows
        );
        let l = &mut self.layers[layer];
        let mut half = [0u8; 2 * MAX_HEAD_DIM];
        let half = &mut half[..head_dim * ELEM];
        for (i, r) in k.chunks_exact(n_head_kv * head_dim).enumerate() {
            let p = pos + i;
            for (g, h) in r.chunks_exact(head_dim).enumerate() {
                f16::from_f32(h, half);
                let block = (g * key_blocks + p / KEY_BLOCK) * head_dim;
                for (c, x) in half.chunks_exact(ELEM).enumerate() {
                    let at = ((block + c) * KEY_BLOCK + p % KEY_BLOCK) * ELEM;
                    l.k[at..at + ELEM].copy_from_slice(x);
                }
            }
        }
        for (i, r) in v.chunks_exact(n_head_kv * head_dim_v).enumerate() {
            for (g, h) in r.chunks_exact(head_dim_v).enumerate() {
                let at = ((g * n_ctx + pos + i) * head_dim_v) * ELEM;
                f16::from_f32(h, &mut l.v[at..at + head_dim_v * ELEM]);
            }
        }
    }

    fn key_blocks(&self) -> usize {
        self.n_ctx.div_ceil(KEY_BLOCK)
    }

    /// Key bytes of KV head `g` in `layer` for the positions of block `b` (`b * KEY_BLOCK..`):
    /// `head_dim` rows of [`KEY_BLOCK`] f16 values, row `c` holding element `c` of each
    /// position's key. Positions not stored yet hold zeros or an earlier sequence's keys.
    pub fn key_block(&self, layer: usize, g: usize, b: usize) -> &[u8] {
        let len = self.head_dim * KEY_BLOCK * ELEM;
        let at = (g * self.key_blocks() + b) * len;
        &self.layers[layer].k[at..at + len]
    }

    /// Value bytes of KV head `g` in `layer` for positions `0..len`, one row of `head_dim_v`
    /// f16 values per position.
    pub fn values(&self, layer: usize, g: usize, len: usize) -> &[u8] {
        let row = self.head_dim_v * ELEM;
        let at = g * self.n_ctx * row;
        &self.layers[layer].v[at..at + len * row]
    }
}

/// See [`super::Backend::attention`]. Causal: keys up to the token's position; otherwise every
/// position the sequence has after this batch.
///
/// With SIMD lane kernels every token goes through [`tiled`], whose result for a query does
/// not depend on the other queries of its tile: so a sequence's tokens come out bit for bit the
/// same whether it runs alone or batched with others, and whatever size of chunks the
/// scheduler cuts its prompt into (a fixed seed gives the same text either way). Without them
/// (AArch64 today, or HEARTH_FORCE_SCALAR) every token goes through [`per_query`], whose f16
/// dot products have NEON kernels.
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
    let job = Job {
        seqs,
        token_seq,
        layer,
        q,
        p,
        sinks,
    };
    if attn::Variant::selected() == attn::Variant::Scalar {
        per_query(pool, &job, out);
        return;
    }
    // About 64 lanes a tile (query-key products of 64 × 64 per key block), fewer tokens when
    // that would leave threads without (tile, KV head) jobs.
    let n_kv = p.shape.n_head_kv;
    let group = p.shape.n_head / n_kv;
    let by_lanes = (64 / group).max(1);
    let tiles_wanted = (2 * pool.n_threads()).div_ceil(n_kv);
    let by_threads = token_seq.len().div_ceil(tiles_wanted).max(1);
    tiled(pool, &job, by_lanes.min(by_threads), out);
}

/// The arguments of [`attention`], for its two paths.
struct Job<'a, 'k> {
    seqs: &'a [SeqPart<'k>],
    token_seq: &'a [(usize, usize)],
    layer: usize,
    q: &'a [f32],
    p: &'a AttnParams<'a>,
    sinks: Option<&'a [f32]>,
}

impl Job<'_, '_> {
    /// The keys token `t` attends to: `first..=last`.
    fn key_range(&self, t: usize) -> (usize, usize) {
        let (seq, pos) = self.token_seq[t];
        let part = &self.seqs[seq];
        let last = if self.p.causal {
            pos
        } else {
            part.pos0 + part.n_tokens - 1
        };
        let first = self.p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        (first, last)
    }
}

/// A query as both paths take it: rounded to f16 like the cached keys (as llama.cpp's flash
/// attention does), then scaled.
fn scaled_query(q: &[f32], scale: f32, out: &mut [f32]) {
    let mut half = [0u8; 2 * MAX_HEAD_DIM];
    let half = &mut half[..2 * q.len()];
    f16::from_f32(q, half);
    f16::to_f32(half, out);
    out.iter_mut().for_each(|x| *x *= scale);
}

/// Parallel over (token, head) pairs, with an online softmax over tiles of positions.
fn per_query(pool: &ThreadPool, job: &Job, out: &mut [f32]) {
    let AttnShape {
        n_head,
        n_head_kv,
        head_dim,
        head_dim_v,
    } = job.p.shape;
    let (scale, softcap) = (job.p.scale, job.p.softcap);
    let group = n_head / n_head_kv;
    let v_row = head_dim_v * ELEM;
    let out = &mut out[..job.token_seq.len() * n_head * head_dim_v];
    par_chunks_mut(pool, out, head_dim_v, &|idx, acc| {
        let (t, h) = (idx / n_head, idx % n_head);
        let g = h / group;
        let (first, last) = job.key_range(t);
        let kv = host_kv(job.seqs[job.token_seq[t].0].kv);
        let values = kv.values(job.layer, g, last + 1);
        let mut qs = [0f32; MAX_HEAD_DIM];
        let qs = &mut qs[..head_dim];
        scaled_query(&job.q[(t * n_head + h) * head_dim..][..head_dim], scale, qs);
        // Online softmax over tiles of positions (within blocks of the key cache): scores of a
        // tile, one rescale of the accumulator when the running max grows, then the tile's
        // values in one pass. A sink starts the softmax as a logit with no value.
        acc.fill(0.0);
        let (mut max, mut sum) = match job.sinks {
            Some(s) => (s[h], 1.0f32),
            None => (f32::NEG_INFINITY, 0.0f32),
        };
        let mut scores = [0f32; KEY_BLOCK];
        let mut p0 = first;
        while p0 <= last {
            let (block, j0) = (p0 / KEY_BLOCK, p0 % KEY_BLOCK);
            let n = (last + 1 - p0).min(KEY_BLOCK - j0);
            let scores = &mut scores[..n];
            // Row c of a block holds element c of its keys: the scores are a weighted sum of
            // the rows, weighted by the query.
            scores.fill(0.0);
            let keys = kv.key_block(job.layer, g, block);
            f16::weighted_sum(scores, qs, &keys[j0 * ELEM..], KEY_BLOCK * ELEM);
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
            f16::weighted_sum(acc, scores, &values[p0 * v_row..], v_row);
            p0 += n;
        }
        if sum > 0.0 {
            ops::scale_inplace(acc, 1.0 / sum);
        }
    });
}

/// Parallel over (KV head, tile of `tile_tokens` consecutive tokens) jobs; within a job the
/// queries of the tile's tokens and of the heads sharing that KV head form one set of lanes
/// (see `kernels::attn`), which meets each block of keys and values once, converted to f32
/// once. Jobs write to a buffer ordered by KV head, copied to `out` at the end.
///
/// Each lane takes its keys in spans of [`SPAN`] positions, merged in ascending order. When
/// there are fewer (KV head, tile) jobs than threads and more than one span (decoding at a
/// long context: one tile per sequence, and models with one to three KV heads) the spans run
/// as jobs of their own and are merged afterwards, with the same operations as one thread
/// taking them in turn, so the result does not depend on which way was taken.
fn tiled(pool: &ThreadPool, job: &Job, tile_tokens: usize, out: &mut [f32]) {
    let AttnShape {
        n_head,
        n_head_kv,
        head_dim,
        head_dim_v,
    } = job.p.shape;
    let group = n_head / n_head_kv;
    let n_tokens = job.token_seq.len();
    let n_tiles = n_tokens.div_ceil(tile_tokens);
    // by_kv[((g * n_tiles + tile) * tile_tokens + t) * group + h][..head_dim_v]
    let job_len = tile_tokens * group * head_dim_v;
    // The spans any token of the batch reaches.
    let (mut first, mut last) = (usize::MAX, 0);
    for t in 0..n_tokens {
        let (lo, hi) = job.key_range(t);
        (first, last) = (first.min(lo), last.max(hi));
    }
    let span0 = first.min(last) / SPAN;
    let n_spans = last / SPAN + 1 - span0;
    let tile_lanes = tile_tokens * group;
    let partial_len = tile_lanes * (head_dim_v + 2);
    let few_jobs = pool.n_threads() > 1 && n_head_kv * n_tiles < 2 * pool.n_threads();
    let split =
        few_jobs && n_spans > 1 && n_head_kv * n_tiles * n_spans * partial_len <= SPLIT_MAX_FLOATS;
    TILED.with(|buffers| {
        let TiledBuffers {
            by_kv,
            partials,
            running,
            scratch,
        } = &mut *buffers.borrow_mut();
        let by_kv = resized(by_kv, n_head_kv * n_tiles * job_len, 0.0);
        // Every thread's scratch sized here, on the calling thread: a thread that takes its
        // first job later then does not allocate (decoding allocates nothing).
        if scratch.len() < pool.n_threads() {
            scratch.resize_with(pool.n_threads(), Default::default);
        }
        let lanes = tile_lanes.next_multiple_of(attn::LANES);
        for sc in scratch.iter_mut() {
            sc.get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .reserve(lanes, head_dim, head_dim_v);
        }
        if few_jobs {
            // Room for the spans of the sequences' whole contexts, made before the first
            // split: a decode loop then does not allocate when it reaches a new span.
            let ctx_spans = job.seqs.iter().map(|s| s.kv.n_ctx()).max().unwrap_or(0) / SPAN + 1;
            let room = n_head_kv * n_tiles * ctx_spans.max(n_spans) * partial_len;
            partials.reserve(room.min(SPLIT_MAX_FLOATS).saturating_sub(partials.len()));
            running.reserve(tile_lanes, head_dim_v);
        }
        let scratch = &scratch[..];
        let token_out = group * head_dim_v;
        // Calls `f(tokens, offset)` for each run of one sequence in tile `tile` (a tile's
        // tokens may belong to several), `offset` being the run's first lane in the tile.
        let runs = |tile: usize, f: &mut dyn FnMut(std::ops::Range<usize>, usize)| {
            let t0 = tile * tile_tokens;
            let t1 = (t0 + tile_tokens).min(n_tokens);
            let mut a = t0;
            while a < t1 {
                let seq = job.token_seq[a].0;
                let b = (a + 1..t1)
                    .find(|&b| job.token_seq[b].0 != seq)
                    .unwrap_or(t1);
                f(a..b, (a - t0) * group);
                a = b;
            }
        };
        if split {
            // partials[((g * n_tiles + tile) * n_spans + span) * partial_len..]: each lane's
            // weighted values, then the lanes' maxima, then their sums.
            let partials = resized(partials, n_head_kv * n_tiles * n_spans * partial_len, 0.0);
            par_chunks_mut_on(pool, partials, partial_len, &|thread, idx, part| {
                let (g, tile, span) = (
                    idx / (n_tiles * n_spans),
                    idx / n_spans % n_tiles,
                    span0 + idx % n_spans,
                );
                let sc = &mut *scratch[thread].lock().unwrap_or_else(|e| e.into_inner());
                let (acc, state) = part.split_at_mut(tile_lanes * head_dim_v);
                let (max, sum) = state.split_at_mut(tile_lanes);
                max.fill(f32::NEG_INFINITY);
                runs(tile, &mut |tokens, lane0| {
                    let l = prepare(job, sc, tokens.clone(), g);
                    if run_span(job, sc, &l, g, span) {
                        for i in 0..l.lanes {
                            let (m, s, from, stride) = l.span_lane(sc, i);
                            let to = &mut acc[(lane0 + i) * head_dim_v..][..head_dim_v];
                            for (c, x) in to.iter_mut().enumerate() {
                                *x = from[c * stride];
                            }
                            (max[lane0 + i], sum[lane0 + i]) = (m, s);
                        }
                    }
                });
            });
            for (idx, chunk) in by_kv.chunks_exact_mut(job_len).enumerate() {
                let (g, tile) = (idx / n_tiles, idx % n_tiles);
                let n = ((tile + 1) * tile_tokens).min(n_tokens) - tile * tile_tokens;
                let lanes = n * group;
                running.start(job, g, lanes);
                for span in 0..n_spans {
                    let part = &partials[(idx * n_spans + span) * partial_len..][..partial_len];
                    let (acc, rest) = part.split_at(tile_lanes * head_dim_v);
                    let (max, sum) = rest.split_at(tile_lanes);
                    for i in 0..lanes {
                        running.merge(i, max[i], sum[i], &acc[i * head_dim_v..], 1);
                    }
                }
                running.finish(&mut chunk[..lanes * head_dim_v]);
            }
        } else {
            par_chunks_mut_on(pool, by_kv, job_len, &|thread, idx, chunk| {
                let (g, tile) = (idx / n_tiles, idx % n_tiles);
                let sc = &mut *scratch[thread].lock().unwrap_or_else(|e| e.into_inner());
                runs(tile, &mut |tokens, lane0| {
                    let n = tokens.len();
                    let run_out = &mut chunk[lane0 * head_dim_v..][..n * token_out];
                    tile_spans(job, sc, tokens, g, run_out);
                });
            });
        }
        let out = &mut out[..n_tokens * n_head * head_dim_v];
        for (t, token) in out.chunks_exact_mut(n_head * head_dim_v).enumerate() {
            let (tile, i) = (t / tile_tokens, t % tile_tokens);
            for (g, heads) in token.chunks_exact_mut(group * head_dim_v).enumerate() {
                let from = (g * n_tiles + tile) * job_len + i * group * head_dim_v;
                heads.copy_from_slice(&by_kv[from..from + group * head_dim_v]);
            }
        }
    });
}

/// Keys per span of the tiled path (a multiple of [`KEY_BLOCK`]).
const SPAN: usize = 256;

/// Most floats of span results [`tiled`] keeps to run the spans of a batch on several threads
/// (it takes them in turn otherwise).
const SPLIT_MAX_FLOATS: usize = 1 << 22;

/// The lanes of a tile over the spans merged so far: each lane's maximum and sum of weights,
/// and its weighted values (`head_dim_v` per lane).
#[derive(Default)]
struct Running {
    state: Vec<(f32, f32)>,
    acc: Vec<f32>,
    head_dim_v: usize,
}

impl Running {
    /// Room for `lanes` lanes, so that [`Running::start`] does not allocate.
    fn reserve(&mut self, lanes: usize, head_dim_v: usize) {
        self.state.reserve(lanes.saturating_sub(self.state.len()));
        self.acc
            .reserve((lanes * head_dim_v).saturating_sub(self.acc.len()));
    }

    /// The states of `lanes` lanes of KV head `g` before their first span: an attention sink
    /// is a logit with no value, else nothing yet.
    fn start(&mut self, job: &Job, g: usize, lanes: usize) {
        let group = job.p.shape.n_head / job.p.shape.n_head_kv;
        self.head_dim_v = job.p.shape.head_dim_v;
        self.state.clear();
        self.state.extend((0..lanes).map(|i| match job.sinks {
            Some(sinks) => (sinks[g * group + i % group], 1.0),
            None => (f32::NEG_INFINITY, 0.0),
        }));
        self.acc.clear();
        self.acc.resize(lanes * self.head_dim_v, 0.0);
    }

    /// Merges a span's result for lane `i` (`max`, `sum`, weighted values `from[c * stride]`).
    /// A span that held none of the lane's keys changes nothing; the first that does is taken
    /// as it is.
    fn merge(&mut self, i: usize, max: f32, sum: f32, from: &[f32], stride: usize) {
        if max == f32::NEG_INFINITY {
            return;
        }
        let st = &mut self.state[i];
        let acc = &mut self.acc[i * self.head_dim_v..][..self.head_dim_v];
        if st.0 == f32::NEG_INFINITY {
            *st = (max, sum);
            for (c, x) in acc.iter_mut().enumerate() {
                *x = from[c * stride];
            }
            return;
        }
        let m = st.0.max(max);
        let (c_run, c_span) = ((st.0 - m).exp(), (max - m).exp());
        *st = (m, st.1 * c_run + sum * c_span);
        for (c, x) in acc.iter_mut().enumerate() {
            *x = *x * c_run + from[c * stride] * c_span;
        }
    }

    /// The lanes' outputs: their weighted values over their sums.
    fn finish(&self, out: &mut [f32]) {
        let dv = self.head_dim_v;
        for (i, &(_, sum)) in self.state.iter().enumerate() {
            let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
            for (x, a) in out[i * dv..][..dv].iter_mut().zip(&self.acc[i * dv..]) {
                *x = a * inv;
            }
        }
    }
}

/// Positions per block of the key cache's transposed layout, and keys (and values) per block
/// of both attention paths; blocks start at multiples of it.
const KEY_BLOCK: usize = 64;

/// Below this many queries a tile puts a block's keys across the SIMD lanes instead of its
/// queries: a decoding token's few heads would leave most of each vector empty. Both ways do
/// the same arithmetic for every (query, key) pair in the same order, so the choice changes
/// the speed, never the result.
const KEYS_IN_LANES_BELOW: usize = 8;

thread_local! {
    /// [`tiled`]'s buffers, kept by the thread that calls it between calls.
    static TILED: std::cell::RefCell<TiledBuffers> = std::cell::RefCell::new(TiledBuffers::default());
}

#[derive(Default)]
struct TiledBuffers {
    /// The outputs of the jobs, ordered by KV head.
    by_kv: Vec<f32>,
    /// The spans' results when they run as jobs of their own.
    partials: Vec<f32>,
    /// A tile's lanes while its spans' results are merged.
    running: Running,
    /// One per thread of the pool (locked by that thread only, so never contended).
    scratch: Vec<std::sync::Mutex<TileScratch>>,
}

/// Buffers of one tile, kept per thread between calls.
#[derive(Default)]
struct TileScratch {
    /// Queries, transposed: `qt[c * nq + i]` (keys in lanes: `qt[i * head_dim + c]`).
    qt: Vec<f32>,
    /// Scores, then weights, of a key block: `s[j * nq + i]`.
    s: Vec<f32>,
    /// Keys in lanes: the scores of a key block by query, `s_by_query[i * nk + j]` (`nk`: the
    /// block's keys padded to whole vectors).
    s_by_query: Vec<f32>,
    /// Weighted values, transposed: `acc[c * nq + i]` (keys in lanes: `acc[i * dv_lanes + c]`).
    acc: Vec<f32>,
    /// A key block: `keys[j * head_dim + c]` (keys in lanes: `keys[c * nk + j]`).
    keys: Vec<f32>,
    /// A value block: `values[j * head_dim_v + c]` (keys in lanes: rows of `dv_lanes`).
    values: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
    corr: Vec<f32>,
    /// The keys each lane sees: `first..=last`.
    range: Vec<(usize, usize)>,
    /// The lanes over the spans taken so far.
    running: Running,
}

impl TileScratch {
    /// Room for tiles of up to `nq` lanes, in either layout, without allocating.
    fn reserve(&mut self, nq: usize, head_dim: usize, head_dim_v: usize) {
        fn room<T>(v: &mut Vec<T>, n: usize) {
            v.reserve(n.saturating_sub(v.len()));
        }
        let dv_lanes = head_dim_v.next_multiple_of(attn::LANES);
        room(&mut self.qt, head_dim * nq);
        room(&mut self.s, KEY_BLOCK * nq);
        room(&mut self.s_by_query, KEY_BLOCK * KEYS_IN_LANES_BELOW);
        room(&mut self.acc, dv_lanes * nq);
        room(&mut self.keys, KEY_BLOCK * head_dim);
        room(&mut self.values, KEY_BLOCK * dv_lanes);
        for v in [&mut self.max, &mut self.sum, &mut self.corr] {
            room(v, nq);
        }
        room(&mut self.range, nq);
        self.running.reserve(nq, head_dim_v);
    }
}

/// The first `len` elements of `v`, which keep what they held (zeros where `v` grew).
fn grown(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

fn resized(v: &mut Vec<f32>, len: usize, fill: f32) -> &mut [f32] {
    v.clear();
    v.resize(len, fill);
    v
}

/// A tile's lanes as [`prepare`] set them up.
struct Lanes {
    /// Lanes in use: the tile's tokens times the heads of the KV head.
    lanes: usize,
    /// Query lanes as the kernels take them.
    nq: usize,
    keys_in_lanes: bool,
    dv_lanes: usize,
    /// The keys any lane sees: `first..=last`.
    first: usize,
    last: usize,
    /// The tile's sequence.
    seq: usize,
}

impl Lanes {
    /// Lane `i`'s state after [`run_span`]: its maximum, its sum, and its weighted values as
    /// `from[c * stride]`.
    fn span_lane<'a>(&self, sc: &'a TileScratch, i: usize) -> (f32, f32, &'a [f32], usize) {
        if self.keys_in_lanes {
            (sc.max[i], sc.sum[i], &sc.acc[i * self.dv_lanes..], 1)
        } else {
            (sc.max[i], sc.sum[i], &sc.acc[i..], self.nq)
        }
    }
}

/// Attention of the tokens `tokens` (one sequence) for the query heads of KV head `g`, its
/// spans taken in turn; `out` holds, token by token, the outputs of those heads.
fn tile_spans(
    job: &Job,
    scratch: &mut TileScratch,
    tokens: std::ops::Range<usize>,
    g: usize,
    out: &mut [f32],
) {
    let l = prepare(job, scratch, tokens, g);
    // Out of the scratch while `run_span` fills the rest of it.
    let mut running = std::mem::take(&mut scratch.running);
    running.start(job, g, l.lanes);
    for span in l.first / SPAN..=l.last / SPAN {
        if run_span(job, scratch, &l, g, span) {
            for i in 0..l.lanes {
                let (m, s, from, stride) = l.span_lane(scratch, i);
                running.merge(i, m, s, from, stride);
            }
        }
    }
    running.finish(out);
    scratch.running = running;
}

/// Sets up the lanes of the tokens `tokens` (one sequence) for the query heads of KV head `g`:
/// the queries in `scratch.qt` and each lane's keys in `scratch.range`.
fn prepare(
    job: &Job,
    scratch: &mut TileScratch,
    tokens: std::ops::Range<usize>,
    g: usize,
) -> Lanes {
    let AttnShape {
        n_head,
        n_head_kv,
        head_dim,
        head_dim_v,
    } = job.p.shape;
    let group = n_head / n_head_kv;
    let lanes = tokens.len() * group;
    let keys_in_lanes = lanes < KEYS_IN_LANES_BELOW;
    // Query lanes as the kernels take them: keys in lanes leaves only the softmax in lanes of
    // queries.
    let nq = if keys_in_lanes {
        lanes.next_multiple_of(attn::SOFTMAX_LANES)
    } else {
        lanes.next_multiple_of(attn::LANES)
    };
    // Where query lane i's element c sits.
    let (q_lane, q_elem) = if keys_in_lanes {
        (head_dim, 1)
    } else {
        (1, nq)
    };
    // Lane i is token tokens.start + i / group, head g * group + i % group. Padding lanes
    // have zero queries and see every key: harmless, and never read back.
    let qt = resized(&mut scratch.qt, head_dim * nq, 0.0);
    let range = &mut scratch.range;
    range.clear();
    let mut qs = [0f32; MAX_HEAD_DIM];
    let qs = &mut qs[..head_dim];
    for i in 0..lanes {
        let t = tokens.start + i / group;
        let h = g * group + i % group;
        scaled_query(
            &job.q[(t * n_head + h) * head_dim..][..head_dim],
            job.p.scale,
            qs,
        );
        for (c, x) in qs.iter().enumerate() {
            qt[c * q_elem + i * q_lane] = *x;
        }
        range.push(job.key_range(t));
    }
    Lanes {
        lanes,
        nq,
        keys_in_lanes,
        dv_lanes: head_dim_v.next_multiple_of(attn::LANES),
        first: range.iter().map(|r| r.0).min().unwrap_or(0),
        last: range.iter().map(|r| r.1).max().unwrap_or(0),
        seq: job.token_seq[tokens.start].0,
    }
}

/// The online softmax of the lanes `l` (set up by [`prepare`] for the tile's sequence) over
/// the keys of span `span` (positions `span * SPAN..`), from a fresh state: each lane's
/// maximum, sum and weighted values are left in `scratch` (read them with
/// [`Lanes::span_lane`]). False when the span holds none of the lanes' keys (nothing is
/// computed).
fn run_span(job: &Job, scratch: &mut TileScratch, l: &Lanes, g: usize, span: usize) -> bool {
    let AttnShape {
        head_dim,
        head_dim_v,
        ..
    } = job.p.shape;
    let (lo, hi) = (span * SPAN, (span + 1) * SPAN);
    if hi <= l.first || lo > l.last {
        return false;
    }
    let (lanes, nq, keys_in_lanes, dv_lanes) = (l.lanes, l.nq, l.keys_in_lanes, l.dv_lanes);
    // The row of a value block.
    let v_ld = if keys_in_lanes { dv_lanes } else { head_dim_v };
    let TileScratch {
        qt,
        s,
        s_by_query,
        acc,
        keys,
        values,
        max,
        sum,
        corr,
        range,
        ..
    } = scratch;
    let max = resized(max, nq, f32::NEG_INFINITY);
    let sum = resized(sum, nq, 0.0);
    let corr = resized(corr, nq, 1.0);

    let part = &job.seqs[l.seq];
    let kv = host_kv(part.kv);
    let end = hi.min(l.last + 1);
    let all_values = kv.values(job.layer, g, end);
    let v_row = head_dim_v * ELEM;
    // Every block writes what it reads of these first: no need to clear them for each span.
    let s = grown(s, KEY_BLOCK * nq);
    let s_by_query = grown(
        s_by_query,
        if keys_in_lanes { lanes * KEY_BLOCK } else { 0 },
    );
    let keys = grown(keys, KEY_BLOCK * head_dim);
    let values = grown(values, KEY_BLOCK * v_ld);
    let acc = resized(acc, dv_lanes * nq, 0.0);
    // Blocks at multiples of KEY_BLOCK whatever the tile: a lane's keys then meet the online
    // softmax in the same blocks in any tile (the masked rest of a block adds exact zeros).
    let mut p0 = lo.max(l.first - l.first % KEY_BLOCK);
    while p0 < end {
        let n = (end - p0).min(KEY_BLOCK);
        // The next block on its way to L2 while this one is worked on: the hardware's
        // prefetchers alone left a decode step at 2048 positions 10-20% slower.
        let next = p0 + n;
        if next < end {
            let more = (end - next).min(KEY_BLOCK);
            kernels::simd::prefetch_l2(kv.key_block(job.layer, g, next / KEY_BLOCK));
            kernels::simd::prefetch_l2(&all_values[next * v_row..(next + more) * v_row]);
        }
        let nk = n.next_multiple_of(attn::LANES);
        let block_keys = kv.key_block(job.layer, g, p0 / KEY_BLOCK);
        if keys_in_lanes {
            // The block's keys as the cache holds them (`[c * KEY_BLOCK + j]`), read in place,
            // in lanes of whole vectors: lanes n..nk hold keys not stored yet (zeros, or an
            // earlier sequence's), whose scores are never read.
            let keys = Right::F16 {
                bytes: block_keys,
                ld: KEY_BLOCK,
            };
            let s_by_query = &mut s_by_query[..lanes * nk];
            attn::lane_products(
                s_by_query,
                lanes,
                nk,
                qt,
                head_dim,
                1,
                keys,
                head_dim,
                Start::Zero,
            );
            for (i, row) in s_by_query.chunks_exact(nk).enumerate() {
                for (j, x) in row[..n].iter().enumerate() {
                    s[j * nq + i] = *x;
                }
            }
        } else {
            // The same transposed block in f32 (`keys[c * nk + j]`), read as rows with strides.
            if nk == KEY_BLOCK {
                f16::to_f32(block_keys, &mut keys[..head_dim * KEY_BLOCK]);
            } else {
                let row = KEY_BLOCK * ELEM;
                for c in 0..head_dim {
                    let from = &block_keys[c * row..][..nk * ELEM];
                    f16::to_f32(from, &mut keys[c * nk..(c + 1) * nk]);
                }
            }
            attn::lane_products(s, n, nq, keys, 1, nk, Right::F32(qt), head_dim, Start::Zero);
        }
        if let Some(cap) = job.p.softcap {
            ops::softcap_inplace(&mut s[..n * nq], cap);
        }
        for (i, &(lo, hi)) in range.iter().enumerate() {
            let masked_below = lo.saturating_sub(p0).min(n);
            let masked_from = (hi + 1).saturating_sub(p0).min(n);
            for j in (0..masked_below).chain(masked_from..n) {
                s[j * nq + i] = f32::NEG_INFINITY;
            }
        }
        attn::softmax_block(s, n, nq, max, sum, corr);
        let block_values = &all_values[p0 * v_row..(p0 + n) * v_row];
        if keys_in_lanes && dv_lanes == head_dim_v {
            // Value rows in lanes as the cache holds them, read in place.
            let values = Right::F16 {
                bytes: block_values,
                ld: head_dim_v,
            };
            let scaled = Start::ScaledRows(corr);
            attn::lane_products(acc, lanes, dv_lanes, s, 1, nq, values, n, scaled);
        } else if keys_in_lanes {
            // Value rows narrower than their lanes: copied into rows of `dv_lanes`.
            for j in 0..n {
                let v = &block_values[j * v_row..][..v_row];
                f16::to_f32(v, &mut values[j * v_ld..j * v_ld + head_dim_v]);
            }
            let scaled = Start::ScaledRows(corr);
            let values = Right::F32(values);
            attn::lane_products(acc, lanes, dv_lanes, s, 1, nq, values, n, scaled);
        } else {
            f16::to_f32(block_values, &mut values[..n * head_dim_v]);
            let scaled = Start::Scaled(corr);
            let s = Right::F32(s);
            attn::lane_products(acc, head_dim_v, nq, values, 1, head_dim_v, s, n, scaled);
        }
        p0 += n;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::KvCache;

    /// A small deterministic generator, uniform in [-1, 1).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.next()).collect()
        }
    }

    struct Case {
        shape: AttnShape,
        window: Option<usize>,
        softcap: Option<f32>,
        causal: bool,
        sinks: bool,
        /// (first position in the batch, tokens in the batch) of each sequence.
        seqs: Vec<(usize, usize)>,
    }

    /// The tiled path against the per-query one, which the engine's llama.cpp comparisons pin
    /// down; and the tiled path against itself, bit for bit, with other tile sizes (so tiles
    /// straddle sequences), each sequence alone and each token alone.
    fn check(case: Case) {
        let AttnShape {
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
        } = case.shape;
        let mut rng = Rng(42);
        let (k_row, v_row) = (n_head_kv * head_dim, n_head_kv * head_dim_v);
        let n_ctx = case
            .seqs
            .iter()
            .map(|&(pos0, n)| pos0 + n)
            .max()
            .unwrap_or(0);
        let mut caches: Vec<KvCache> = case
            .seqs
            .iter()
            .map(|&(pos0, n)| {
                let mut kv = HostKv::new(1, n_ctx, n_head_kv, (head_dim, head_dim_v));
                for pos in 0..pos0 + n {
                    let (k, v) = (rng.vec(k_row), rng.vec(v_row));
                    kv.store(0, pos, &k, &v);
                }
                KvCache::new(Box::new(kv), HostKv::ELEM_TYPE, 1, n_ctx, k_row, v_row)
            })
            .collect();
        let token_seq: Vec<(usize, usize)> = case
            .seqs
            .iter()
            .enumerate()
            .flat_map(|(s, &(pos0, n))| (pos0..pos0 + n).map(move |p| (s, p)))
            .collect();
        let seqs: Vec<SeqPart> = caches
            .iter_mut()
            .zip(&case.seqs)
            .map(|(kv, &(pos0, n_tokens))| SeqPart { kv, pos0, n_tokens })
            .collect();
        let q: Vec<f32> = rng.vec(token_seq.len() * n_head * head_dim);
        let sinks = case.sinks.then(|| rng.vec(n_head));
        let p = AttnParams {
            shape: case.shape,
            rope: None,
            scale: 0.7,
            window: case.window,
            softcap: case.softcap,
            causal: case.causal,
            q_temperature: None,
        };
        let job = Job {
            seqs: &seqs,
            token_seq: &token_seq,
            layer: 0,
            q: &q,
            p: &p,
            sinks: sinks.as_deref(),
        };
        let pool = ThreadPool::new(2);
        let n_out = token_seq.len() * n_head * head_dim_v;
        let mut want = vec![f32::NAN; n_out];
        per_query(&pool, &job, &mut want);
        let mut base = vec![f32::NAN; n_out];
        tiled(&pool, &job, 1, &mut base);
        for (i, (g, w)) in base.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "output {i}: {g} tiled against {w} one query at a time"
            );
        }
        // Bit for bit the same in any tile, on any number of threads (with few tiles, more
        // threads than jobs run the spans of a tile at once)...
        for tile_tokens in [1, 2, 3, 16, 64] {
            for threads in [1, 2, 4] {
                let mut got = vec![f32::NAN; n_out];
                tiled(&ThreadPool::new(threads), &job, tile_tokens, &mut got);
                let differs = got
                    .iter()
                    .zip(&base)
                    .position(|(g, b)| g.to_bits() != b.to_bits());
                assert_eq!(
                    differs, None,
                    "tiles of {tile_tokens} on {threads} threads against tiles of 1"
                );
            }
        }
        let mut full = vec![f32::NAN; n_out];
        attention(
            &pool,
            &seqs,
            &token_seq,
            0,
            &q,
            &p,
            sinks.as_deref(),
            &mut full,
        );
        // ...and with a sequence alone, or its tokens one at a time (as decoding, or a prompt
        // cut into chunks of one, computes them), through the engine's entry point.
        let token_out = n_head * head_dim_v;
        let mut first_token = 0;
        for (s, &(pos0, n)) in case.seqs.iter().enumerate() {
            let rows = &full[first_token * token_out..(first_token + n) * token_out];
            let q_seq = &q[first_token * n_head * head_dim..(first_token + n) * n_head * head_dim];
            let kv = &mut caches[s];
            let mut got = vec![f32::NAN; n * token_out];
            let alone = [SeqPart {
                kv,
                pos0,
                n_tokens: n,
            }];
            let ts: Vec<(usize, usize)> = (pos0..pos0 + n).map(|p| (0, p)).collect();
            attention(&pool, &alone, &ts, 0, q_seq, &p, sinks.as_deref(), &mut got);
            assert!(
                got.iter()
                    .zip(rows)
                    .all(|(g, b)| g.to_bits() == b.to_bits()),
                "sequence {s} alone"
            );
            if case.causal {
                for i in 0..n {
                    let one = [SeqPart {
                        kv: &mut *alone[0].kv,
                        pos0: pos0 + i,
                        n_tokens: 1,
                    }];
                    let q_one = &q_seq[i * n_head * head_dim..(i + 1) * n_head * head_dim];
                    let got = &mut got[..token_out];
                    attention(
                        &pool,
                        &one,
                        &[(0, pos0 + i)],
                        0,
                        q_one,
                        &p,
                        sinks.as_deref(),
                        got,
                    );
                    let want = &rows[i * token_out..(i + 1) * token_out];
                    assert!(
                        got.iter()
                            .zip(want)
                            .all(|(g, b)| g.to_bits() == b.to_bits()),
                        "sequence {s}, token {i} alone"
                    );
                }
            }
            first_token += n;
        }
    }

    fn shape(n_head: usize, n_head_kv: usize, head_dim: usize, head_dim_v: usize) -> AttnShape {
        AttnShape {
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
        }
    }

    #[test]
    fn rows_past_the_context_are_refused() {
        let mut kv = HostKv::new(1, 10, 2, (4, 4));
        let rows = vec![0.5f32; 2 * 2 * 4];
        kv.store(0, 8, &rows, &rows);
        let past = std::panic::catch_unwind(move || kv.store(0, 9, &rows, &rows));
        assert!(past.is_err(), "positions 9..11 stored in a cache of 10");
    }

    #[test]
    fn tiles_agree_with_one_query_at_a_time() {
        // Two prompts, the second after 5 cached positions, and a decoding sequence.
        check(Case {
            shape: shape(6, 2, 32, 32),
            window: None,
            softcap: None,
            causal: true,
            sinks: false,
            seqs: vec![(0, 70), (5, 9), (40, 1)],
        });
        // A sliding window shorter than a tile, soft-capped scores, sinks, values narrower
        // than keys.
        check(Case {
            shape: shape(4, 1, 40, 24),
            window: Some(7),
            softcap: Some(2.0),
            causal: true,
            sinks: true,
            seqs: vec![(3, 30), (0, 5)],
        });
        // A window that slides across the 64-key blocks, and a prompt longer than a block.
        check(Case {
            shape: shape(4, 2, 32, 32),
            window: Some(40),
            softcap: None,
            causal: true,
            sinks: false,
            seqs: vec![(10, 110), (60, 3)],
        });
        // Contexts of several spans: a prompt across span edges, and decoding sequences deep
        // in the context, with sinks and a window that starts inside a span.
        check(Case {
            shape: shape(6, 2, 32, 32),
            window: None,
            softcap: None,
            causal: true,
            sinks: true,
            seqs: vec![(200, 90), (700, 1)],
        });
        check(Case {
            shape: shape(4, 1, 64, 64),
            window: Some(300),
            softcap: Some(3.0),
            causal: true,
            sinks: false,
            seqs: vec![(900, 1)],
        });
        check(Case {
            shape: shape(9, 3, 64, 64),
            window: None,
            softcap: None,
            causal: true,
            sinks: false,
            seqs: vec![(1030, 1), (515, 2)],
        });
        // Bidirectional (an embedding model): every token sees its whole sequence; one KV
        // head per query head.
        check(Case {
            shape: shape(3, 3, 16, 16),
            window: None,
            softcap: None,
            causal: false,
            sinks: false,
            seqs: vec![(0, 12), (0, 20)],
        });
    }
}
