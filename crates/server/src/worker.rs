//! The inference worker: one thread that owns the loaded models and runs every request on
//! them. Requests to one model run as parallel sequences decoded together, one forward pass
//! per step for all of them (see `scheduler`). A job holds a [`Slot`] from submission until it
//! ends; there are `parallel + queue` of them (none left: 503), so requests that arrive together
//! while the thread is busy are not refused when sequences are free;
//! results go back through an unbounded channel per request, so a slow reader never stalls
//! the others; a dropped channel or a set cancel flag ends that sequence at the next step.

mod embed;
mod fit;
mod pace;
mod prep;
mod scheduler;

pub(crate) use prep::check_ids;

use crate::error::ApiError;
use crate::models::ModelRef;
use axum::http::StatusCode;
use engine::chat::Message;
use engine::sampler::SamplerConfig;
use engine::SharedBackend;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// What to do.
#[derive(Debug, Clone)]
pub enum Input {
    /// Rendered with the model's chat template; control-token text inside the messages stays
    /// text (only the template's own markup gives control tokens).
    Chat(Vec<Message>),
    /// Tokenized as it is, control-token text parsed as llama.cpp does for a raw prompt
    /// (/v1/completions, /api/generate with `raw`): whoever writes it writes the markup.
    Raw(String),
    /// Only load the model.
    Load,
    /// Unload the model now (Ollama's empty request with `keep_alive: 0`).
    Unload,
    /// A prompt given as token ids, checked against the vocabulary (`param` names the field
    /// in errors: `prompt[1]` gives `prompt[1][3]`).
    Tokens { ids: Vec<u32>, param: String },
    /// Fill-in-the-middle: the model's FIM markers around `prefix` and `suffix` (prefix,
    /// suffix, middle order); a model without them is a 400 naming `suffix`.
    Fim { prefix: String, suffix: String },
    /// Embeddings of each input, pooled as the model says (the mean when it says nothing)
    /// and normalised.
    Embed {
        inputs: Vec<EmbedInput>,
        truncate: bool,
    },
    /// Work on the loaded model that answers for itself (tokenize, detokenize).
    Task(ModelTask),
}

/// One input to embed.
#[derive(Debug, Clone)]
pub enum EmbedInput {
    Text(String),
    /// Token ids, checked against the vocabulary.
    Tokens(Vec<u32>),
}

/// A closure run once on the worker thread with the job's model loaded; it sends its own
/// answer (a load failure drops it unrun, and the job's events carry the error).
#[derive(Clone)]
pub struct ModelTask(Arc<Mutex<Option<ModelFn>>>);

type ModelFn = Box<dyn FnOnce(&engine::Model) + Send>;

impl ModelTask {
    pub fn new(f: impl FnOnce(&engine::Model) + Send + 'static) -> ModelTask {
        ModelTask(Arc::new(Mutex::new(Some(Box::new(f)))))
    }

    /// Runs the closure (at most once).
    pub fn run(&self, model: &engine::Model) {
        let f = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = f {
            f(model);
        }
    }
}

impl std::fmt::Debug for ModelTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModelTask")
    }
}

/// How many tokens to generate.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// The client's number: cut to the room the prompt leaves in the context.
    Exactly(usize),
    /// Until the context is full.
    Fill,
    /// A default (the server's or a preset's), shortened to fit the context.
    Default(usize),
}

pub const DEFAULT_MAX_TOKENS: usize = 512;

/// How long a model stays loaded after its last request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    For(Duration),
    Forever,
}

impl KeepAlive {
    /// Ollama's default: five minutes.
    pub const DEFAULT: KeepAlive = KeepAlive::For(Duration::from_secs(300));
}

/// Which API a request came through (for the usage ledger and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Ollama,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Ollama => "ollama",
        }
    }
}

pub struct Job {
    pub model: ModelRef,
    pub input: Input,
    pub budget: Budget,
    /// The request field that set the budget, for the error that says it does not fit.
    pub budget_param: &'static str,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    pub n_ctx: usize,
    /// Report each token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
    /// A grammar the output must follow, compiled against the model's tokenizer when the
    /// job starts.
    pub grammar: Option<engine::constraint::Grammar>,
    /// The request field that set `grammar`, for the error that says it does not compile.
    pub grammar_param: &'static str,
    /// None: leave the model's setting as it is (the default for a fresh load).
    pub keep_alive: Option<KeepAlive>,
    pub api: Api,
    /// Tools shown to the model (OpenAI's shape), for `Input::Chat`; None: no tools.
    pub tools: Option<Vec<serde_json::Value>>,
    pub events: mpsc::UnboundedSender<Event>,
    pub cancel: Arc<AtomicBool>,
    pub queued: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub finish: Finish,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Of those, how many were already in the cache from an earlier request.
    pub cached_tokens: usize,
    pub prompt_time: Duration,
    pub completion_tokens: usize,
    pub generation_time: Duration,
    pub load_time: Duration,
    /// From the request being queued to its first token.
    pub first_token: Option<Duration>,
    /// From when the request was queued.
    pub total_time: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Finish {
    #[default]
    Stop,
    Length,
    Load,
    Unload,
    Cancelled,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Load => "load",
            Finish::Unload => "unload",
            Finish::Cancelled => "cancelled",
        }
    }
}

/// One generated token's log-probability, with its text.
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    pub text: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// The most likely alternatives: (text, bytes, logprob).
    pub top: Vec<(String, Vec<u8>, f32)>,
}

/// What the chat template says about the answer to come: how it writes tool calls, and
/// whether it thinks in `<think>` blocks (and the prompt opened one already).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptInfo {
    pub tool_format: Option<engine::chat::tools::ToolFormat>,
    pub thinks: bool,
    pub thinking_open: bool,
}

#[derive(Debug)]
pub enum Event {
    /// A chat's prompt was rendered (sent before `Started`).
    Prompt(PromptInfo),
    /// The prompt was evaluated; pieces follow.
    Started,
    Piece(String),
    /// Log-probabilities of the tokens whose text the next piece carries.
    Logprobs(Vec<TokenLogprob>),
    /// The answer to an `Input::Embed` job (the summary counts the tokens embedded).
    Embeddings {
        vectors: Vec<Vec<f32>>,
        summary: Summary,
    },
    Done(Summary),
    Error(ApiError),
}

/// Sets the flag when dropped: held by whatever reads a job's events, so a client that goes
/// away (its response dropped) stops the job.
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A request passed to an upstream server, as the ledger sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUsage {
    pub model: String,
    /// `host:port` of the upstream.
    pub host: String,
    pub api: Api,
    /// None: the upstream reported no usage.
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// From sending the request to the answer's end.
    pub elapsed: Duration,
}

/// Told of every finished request (the usage ledger): never the text.
pub trait UsageSink: Send + Sync {
    fn record(&self, model: &str, api: Api, summary: &Summary);

    /// An answer from another machine (`--upstream`): its tokens are not this machine's
    /// work, so they are recorded as remote.
    fn record_remote(&self, usage: &RemoteUsage);

    /// The worker started (true) or stopped (false) running requests: energy counted
    /// between requests would belong to none of them.
    fn activity(&self, _busy: bool) {}
}

/// A model in memory, as `/api/ps` and `/metrics` show it.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub name: String,
    pub path: PathBuf,
    /// The model file's size.
    pub weight_bytes: u64,
    /// The KV caches held for its sequences (reserved; resident as they fill).
    pub kv_bytes: u64,
    /// The largest context among its sequences (or the server's default).
    pub n_ctx: usize,
    /// None: kept until the server stops.
    pub expires_at: Option<SystemTime>,
    /// Sequences running now.
    pub active: usize,
    pub load_time: Duration,
}

/// Counters since the server started.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub prompt_seconds: f64,
    pub generation_seconds: f64,
    /// Forward passes that decoded more than one sequence at once.
    pub batched_steps: u64,
    pub steps: u64,
}

/// What the worker is doing, published after every step.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub models: Vec<LoadedModel>,
    pub active: usize,
    pub totals: Totals,
}

/// How the worker runs.
pub struct WorkerConfig {
    pub backend: SharedBackend,
    /// Jobs that may wait when every sequence is taken (more: 503).
    pub queue_capacity: usize,
    /// Sequences decoded together.
    pub parallel: usize,
    /// Models kept in memory at once (memory permitting).
    pub max_loaded: usize,
    /// The context given to the status when no sequence says otherwise.
    pub default_ctx: usize,
    pub usage: Option<Arc<dyn UsageSink>>,
    /// Where the models' own chat templates are rendered (None: in this process).
    pub template_sandbox: Option<Arc<dyn engine::chat::Sandbox>>,
}

/// The handle the HTTP side holds.
pub struct Worker {
    queue: SyncSender<(Job, Slot)>,
    status: Arc<Mutex<Status>>,
    /// Jobs submitted and not yet taken by the worker.
    waiting: Arc<AtomicUsize>,
    /// Jobs submitted and not yet ended (waiting, being admitted or running).
    held: Arc<AtomicUsize>,
    /// Free sequences plus queue places: how many jobs may be held at once.
    capacity: usize,
}

/// A job's place in the worker, from submission until it ends (dropped with its sequence, or
/// when the worker is done with a job that runs no sequence). Counting these, not the jobs
/// in the channel, is what makes admission exact: the thread drains the channel only between
/// forward passes, so a channel as deep as the queue refused requests while sequences were free.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Worker {
    /// Starts the worker thread.
    pub fn start(config: WorkerConfig) -> Worker {
        let capacity = config.parallel.max(1) + config.queue_capacity.max(1);
        // Never full while slots are left: the slots bound it.
        let (tx, rx) = sync_channel::<(Job, Slot)>(capacity);
        let status = Arc::new(Mutex::new(Status::default()));
        let waiting = Arc::new(AtomicUsize::new(0));
        let shared = scheduler::Shared {
            status: Arc::clone(&status),
            waiting: Arc::clone(&waiting),
        };
        std::thread::Builder::new()
            .name("hearth-inference".into())
            .spawn(move || scheduler::run(config, rx, shared))
            .expect("cannot start the inference thread");
        Worker {
            queue: tx,
            status,
            waiting,
            held: Arc::new(AtomicUsize::new(0)),
            capacity,
        }
    }

    /// Queues a job; with every sequence and queue place taken, a 503 with Retry-After.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        let busy = || ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is busy (every sequence and queue place is taken); try again shortly",
            )
        };
        if self.held.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.held.fetch_sub(1, Ordering::AcqRel);
            return Err(busy());
        }
        let slot = Slot(Arc::clone(&self.held));
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let refused = match self.queue.try_send((job, slot)) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(_)) => busy(),
            Err(TrySendError::Disconnected(_)) => {
                ApiError::internal("the inference worker has stopped")
            }
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        Err(refused)
    }

    /// Jobs waiting for the worker.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Names of the models in memory.
    pub fn loaded_models(&self) -> Vec<String> {
        self.status().models.into_iter().map(|m| m.name).collect()
    }
}
