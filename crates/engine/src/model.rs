//! A loaded model (file, hyperparameters, architecture, tokenizer) and sessions that run it.

use crate::arch::{self, Architecture};
use crate::backend::{Backend, CpuBackend, SharedBackend};
use crate::blocks::{LogitRows, Runtime, Scratch, SeqPart};
use crate::config::{ModelConfig, Pooling};
use crate::error::EngineError;
use crate::kv_cache::KvCache;
use crate::tokenizer::Tokenizer;
use crate::weights::TensorLoader;
use gguf::GgufFile;
use std::path::Path;
use std::sync::Arc;

impl ModelConfig {
    /// Elements of one position's keys (every KV head), and of its values.
    fn kv_row(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
    fn kv_row_v(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }

    /// An empty cache of `n_ctx` positions for this model, in the backend's memory.
    fn new_cache(&self, backend: &dyn Backend, n_ctx: usize) -> KvCache {
        let head_dims = (self.head_dim, self.head_dim_v);
        backend.alloc_kv(self.n_layer, n_ctx, self.n_head_kv, head_dims)
    }
}

/// Tokens evaluated per forward pass when a prompt is longer (bounds scratch memory).
pub const DEFAULT_BATCH: usize = 256;

pub struct Model {
    file: GgufFile,
    config: ModelConfig,
    arch: Box<dyn Architecture>,
    tokenizer: Tokenizer,
}

impl Model {
    /// Maps the file and checks everything the forward pass will rely on; weights are
    /// prepared for the CPU backend.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, EngineError> {
        Model::from_file(GgufFile::open(path)?)
    }

    pub fn from_file(file: GgufFile) -> Result<Model, EngineError> {
        // Preparing weights for the CPU uses no pool (packing runs on every core once).
        Model::from_file_on(file, &CpuBackend::new(1))
    }

    /// Like [`Model::load`], with weights prepared for `backend`: sessions of this model must
    /// run on a backend of the same kind.
    pub fn load_on(path: impl AsRef<Path>, backend: &dyn Backend) -> Result<Model, EngineError> {
        Model::from_file_on(GgufFile::open(path)?, backend)
    }

    pub fn from_file_on(file: GgufFile, backend: &dyn Backend) -> Result<Model, EngineError> {
        let arch_name = file
            .get_str("general.architecture")?
            .ok_or(EngineError::NoArchitecture)?
            .to_string();
        let entry = arch::find(&arch_name)?;
        let config = ModelConfig::from_gguf(&file, &arch_name)?;
        // The tokenizer (tens of milliseconds of hashing for a large vocabulary) is built
        // while the weights are packed.
        let (arch, tokenizer) = std::thread::scope(|scope| {
            let tokenizer = scope.spawn(|| Tokenizer::from_gguf(&file));
            let arch = load_arch(entry.load, &file, &config, backend);
            let tokenizer = tokenizer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            Ok::<_, EngineError>((arch?, tokenizer?))
        })?;
        if tokenizer.n_vocab() > arch.n_vocab() {
            return Err(EngineError::BadHyperparameter {
                key: "tokenizer.ggml.tokens".into(),
                value: tokenizer.n_vocab().to_string(),
                why: format!(
                    "the tokenizer has more tokens than the output head has rows ({})",
                    arch.n_vocab()
                ),
            });
        }
        Ok(Model {
            file,
            config,
            arch,
            tokenizer,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    pub fn n_vocab(&self) -> usize {
        self.arch.n_vocab()
    }

    /// Whether the model only makes embeddings (an encoder such as BERT: no output head, so
    /// it cannot generate text).
    pub fn is_embedding_only(&self) -> bool {
        self.arch.is_encoder()
    }

    /// How [`Session::embed`] pools the final hidden states (`<arch>.pooling_type`).
    pub fn pooling(&self) -> Pooling {
        self.config.pooling
    }

    /// A fresh sequence with room for `n_ctx` positions (capped at the training context),
    /// computed on `backend` (which also holds its cache).
    pub fn session(&self, n_ctx: usize, backend: SharedBackend) -> Session<'_> {
        let c = &self.config;
        let n_ctx = n_ctx.clamp(1, c.n_ctx_train.max(1));
        Session {
            model: self,
            kv: c.new_cache(&*backend, n_ctx),
            scratch: Scratch::default(),
            backend,
            pos: 0,
            logits: Vec::new(),
            batch: DEFAULT_BATCH,
        }
    }
}

/// Runs an architecture's load twice: once to learn which matrices the backend prepares, then,
/// after preparing all of them in one pass, for real.
fn load_arch(
    load: arch::LoadFn,
    file: &GgufFile,
    config: &ModelConfig,
    backend: &dyn Backend,
) -> Result<Box<dyn Architecture>, EngineError> {
    let loader = TensorLoader::recording(file, &config.arch, backend);
    drop(load(&loader, config)?);
    loader.prepare_recorded()?;
    let arch = load(&loader, config)?;
    loader.check_all_claimed()?;
    Ok(arch)
}

/// A session without the borrow of its model: what a server keeps between requests (the
/// cache and its position) to resume, or to reuse a conversation's prefix.
pub struct SessionState {
    kv: KvCache,
    scratch: Scratch,
    pos: usize,
    batch: usize,
}

impl SessionState {
    /// Positions filled.
    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx()
    }

    /// Bytes the cache takes when full.
    pub fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }

    /// Drops positions from `pos` on, keeping the prefix before it.
    pub fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }
}

impl Model {
    /// Picks up a session put aside with [`Session::into_state`]. A state of another shape
    /// (another model) is dropped and a fresh session of its context size made instead.
    /// The state must come from a session on a backend of the same kind (its cache is that
    /// backend's memory).
    pub fn resume(&self, state: SessionState, backend: SharedBackend) -> Session<'_> {
        let c = &self.config;
        if !state.kv.has_shape(c.n_layer, c.kv_row(), c.kv_row_v()) {
            return self.session(state.kv.n_ctx(), backend);
        }
        Session {
            model: self,
            kv: state.kv,
            scratch: state.scratch,
            backend,
            pos: state.pos,
            logits: Vec::new(),
            batch: state.batch,
        }
    }
}

/// One sequence being evaluated: its KV cache, position and scratch memory.
pub struct Session<'m> {
    model: &'m Model,
    kv: KvCache,
    scratch: Scratch,
    backend: SharedBackend,
    pos: usize,
    logits: Vec<f32>,
    batch: usize,
}

impl<'m> Session<'m> {
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Positions filled so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx()
    }

    pub fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }

    /// The backend the session computes on.
    pub fn backend(&self) -> &SharedBackend {
        &self.backend
    }

    /// Gives the session a fresh cache of `n_ctx` positions (capped at the training context);
    /// the sequence is forgotten.
    pub fn resize(&mut self, n_ctx: usize) {
        let c = &self.model.config;
        let n_ctx = n_ctx.clamp(1, c.n_ctx_train.max(1));
        // The old cache goes first so both are never held at once.
        self.kv = c.new_cache(&*self.backend, 0);
        self.kv = c.new_cache(&*self.backend, n_ctx);
        self.pos = 0;
    }

    /// Puts the session aside (see [`Model::resume`]).
    pub fn into_state(self) -> SessionState {
        SessionState {
            kv: self.kv,
            scratch: self.scratch,
            pos: self.pos,
            batch: self.batch,
        }
    }

    /// Forgets the sequence (the cache is overwritten from position 0).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Drops positions from `pos` on, keeping the prefix before it.
    pub fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }

    /// How many tokens one forward pass takes.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Sets how many tokens one forward pass takes (prompts are split into such batches).
    pub fn set_batch(&mut self, batch: usize) {
        self.batch = batch.max(1);
    }

    /// Appends `tokens` to the sequence. Returns the logits of the last token (`Last`) or of
    /// every token (`All`, `tokens.len() × n_vocab`, row-major), or the final hidden states
    /// (`Hidden`, `tokens.len() × n_embd`). An encoder (see [`Model::is_embedding_only`]) gives
    /// only hidden states, and takes all of `tokens` in one forward pass, since each token
    /// attends to the ones after it too.
    pub fn eval(&mut self, tokens: &[u32], rows: LogitRows) -> Result<&[f32], EngineError> {
        self.logits.clear();
        let encoder = self.model.is_embedding_only();
        if encoder && rows != LogitRows::Hidden {
            return Err(EngineError::NoOutputHead);
        }
        if tokens.is_empty() {
            return Ok(&self.logits);
        }
        if self.pos + tokens.len() > self.kv.n_ctx() {
            return Err(EngineError::ContextFull {
                needed: self.pos + tokens.len(),
                ctx: self.kv.n_ctx(),
            });
        }
        let batch = if encoder { tokens.len() } else { self.batch };
        let n_chunks = tokens.len().div_ceil(batch);
        for (i, chunk) in tokens.chunks(batch).enumerate() {
            let chunk_rows = match rows {
                LogitRows::All | LogitRows::Hidden => Some(rows),
                LogitRows::Last if i + 1 == n_chunks => Some(LogitRows::Last),
                LogitRows::Last => None,
            };
            let mut seqs = [SeqPart {
                kv: &mut self.kv,
                pos0: self.pos,
                n_tokens: chunk.len(),
            }];
            let mut rt = Runtime {
                file: &self.model.file,
                backend: &*self.backend,
                seqs: &mut seqs,
                scratch: &mut self.scratch,
            };
            let mut sink = Vec::new();
            let out = if chunk_rows.is_some() {
                &mut self.logits
            } else {
                &mut sink
            };
            self.model
                .arch
                .forward(&mut rt, chunk, chunk_rows.unwrap_or(LogitRows::Last), out)?;
            self.pos += chunk.len();
        }
        Ok(&self.logits)
    }

    /// A sentence embedding of `tokens` (a fresh sequence: the session is reset first): the
    /// final hidden states pooled as the model says ([`Model::pooling`]; the mean when it says
    /// nothing), scaled to unit length. An embedding model reads the whole input at once, so an
    /// input longer than the context is refused.
    pub fn embed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        self.reset();
        if self.model.is_embedding_only() && tokens.len() > self.kv.n_ctx() {
            return Err(EngineError::InputTooLong {
                tokens: tokens.len(),
                ctx: self.kv.n_ctx(),
            });
        }
        let mut pooler = Pooler::new(self.model);
        let hidden = self.eval(tokens, LogitRows::Hidden)?;
        pooler.add(hidden);
        Ok(pooler.finish())
    }

    /// Appends `tokens[i]` to `sessions[i]` for every i in one forward pass (the weights are
    /// read once for all of them) and puts each session's last-token logits in `logits`
    /// (replacing what it held; one `n_vocab` row per session: a buffer the caller keeps, so
    /// a decode loop does not allocate it every step). A session may take several tokens (a
    /// prompt) while others take one. The sessions must come from the same model.
    pub fn eval_together(
        sessions: &mut [&mut Session<'m>],
        tokens: &[&[u32]],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        logits.clear();
        let Some(first) = sessions.first() else {
            return Ok(());
        };
        let model = first.model;
        if model.is_embedding_only() {
            return Err(EngineError::NoOutputHead);
        }
        let backend = Arc::clone(&first.backend);
        if sessions.iter().any(|s| !std::ptr::eq(s.model, model)) {
            return Err(EngineError::MixedBatch);
        }
        if tokens.len() != sessions.len() || tokens.iter().any(|t| t.is_empty()) {
            return Err(EngineError::BatchMismatch {
                tokens: tokens.len(),
                parts: sessions.len(),
            });
        }
        for (s, t) in sessions.iter().zip(tokens) {
            if s.pos + t.len() > s.kv.n_ctx() {
                return Err(EngineError::ContextFull {
                    needed: s.pos + t.len(),
                    ctx: s.kv.n_ctx(),
                });
            }
        }
        // One scratch serves the batch: the first session's, lent and given back.
        let mut scratch = std::mem::take(&mut sessions[0].scratch);
        let flat: Vec<u32> = tokens.iter().flat_map(|t| t.iter().copied()).collect();
        let mut seqs: Vec<SeqPart> = sessions
            .iter_mut()
            .zip(tokens)
            .map(|(s, t)| SeqPart {
                kv: &mut s.kv,
                pos0: s.pos,
                n_tokens: t.len(),
            })
            .collect();
        let mut rt = Runtime {
            file: &model.file,
            backend: &*backend,
            seqs: &mut seqs,
            scratch: &mut scratch,
        };
        let result = model.arch.forward(&mut rt, &flat, LogitRows::Last, logits);
        drop(seqs);
        sessions[0].scratch = scratch;
        result?;
        for (s, t) in sessions.iter_mut().zip(tokens) {
            s.pos += t.len();
        }
        Ok(())
    }
}

/// Pools the final hidden states of one input into its embedding, chunk by chunk, so that a
/// long input can be evaluated in pieces between other work (a decoder's hidden states do not
/// depend on what comes after them). Feed it each chunk's `LogitRows::Hidden` rows in order.
pub struct Pooler {
    dim: usize,
    pooling: Pooling,
    sum: Vec<f64>,
    rows: usize,
}

impl Pooler {
    pub fn new(model: &Model) -> Pooler {
        let dim = model.config.n_embd;
        Pooler {
            dim,
            pooling: model.config.pooling,
            sum: vec![0f64; dim],
            rows: 0,
        }
    }

    /// Takes the next rows of hidden states (`n × n_embd`).
    pub fn add(&mut self, hidden: &[f32]) {
        let mut rows = hidden.chunks_exact(self.dim);
        let row = match self.pooling {
            Pooling::Cls if self.rows == 0 => rows.next(),
            Pooling::Cls => None,
            Pooling::Last => rows.next_back(),
            Pooling::Mean | Pooling::None => {
                for row in rows {
                    for (s, &v) in self.sum.iter_mut().zip(row) {
                        *s += f64::from(v);
                    }
                }
                None
            }
        };
        if let Some(row) = row {
            for (s, &v) in self.sum.iter_mut().zip(row) {
                *s = f64::from(v);
            }
        }
        self.rows += hidden.len() / self.dim.max(1);
    }

    /// The pooled vector scaled to unit length (the mean's division is absorbed by it).
    pub fn finish(self) -> Vec<f32> {
        let norm = self.sum.iter().map(|v| v * v).sum::<f64>().sqrt();
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        self.sum.iter().map(|v| (v * scale) as f32).collect()
    }
}
