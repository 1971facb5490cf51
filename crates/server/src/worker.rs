//! The inference worker: one thread that owns the loaded model (loaded on first use and kept
//! until another is asked for) and runs jobs from a bounded queue one at a time. Results go
//! back through a tokio channel; a closed channel or a set cancel flag stops generation.

use crate::error::ApiError;
use crate::models::ModelRef;
use axum::http::StatusCode;
use engine::chat::{ChatTemplate, Message};
use engine::generate::{GenerateOptions, Generator, StopReason};
use engine::sampler::SamplerConfig;
use engine::Model;
use kernels::pool::ThreadPool;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What to continue.
#[derive(Debug, Clone)]
pub enum Input {
    /// Rendered with the model's chat template.
    Chat(Vec<Message>),
    /// Tokenized as it is (control-token text is parsed).
    Raw(String),
    /// Only load the model.
    Load,
}

/// How many tokens to generate.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// The client's number: prompt + this over the context is a 400.
    Exactly(usize),
    /// Until the context is full.
    Fill,
    /// A default (the server's or a preset's), shortened to fit the context.
    Default(usize),
}

pub const DEFAULT_MAX_TOKENS: usize = 512;

pub struct Job {
    pub model: ModelRef,
    pub input: Input,
    pub budget: Budget,
    /// The request field that set the budget, for the error that says it does not fit.
    pub budget_param: &'static str,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    pub n_ctx: usize,
    pub events: mpsc::Sender<Event>,
    pub cancel: Arc<AtomicBool>,
    pub queued: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub finish: Finish,
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub completion_tokens: usize,
    pub generation_time: Duration,
    pub load_time: Duration,
    /// From when the request was queued.
    pub total_time: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Finish {
    #[default]
    Stop,
    Length,
    Load,
    Cancelled,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Load => "load",
            Finish::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug)]
pub enum Event {
    /// The prompt was evaluated; pieces follow.
    Started,
    Piece(String),
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

/// The handle the HTTP side holds.
pub struct Worker {
    queue: SyncSender<Job>,
    /// The model now loaded (its name as the client gave it).
    loaded: Arc<Mutex<Option<String>>>,
}

impl Worker {
    /// Starts the worker thread with a queue of `capacity` waiting jobs.
    pub fn start(pool: Arc<ThreadPool>, capacity: usize) -> Worker {
        let (tx, rx) = sync_channel::<Job>(capacity);
        let loaded = Arc::new(Mutex::new(None));
        let shown = Arc::clone(&loaded);
        std::thread::Builder::new()
            .name("hearth-inference".into())
            .spawn(move || {
                let mut state = Loaded::default();
                while let Ok(job) = rx.recv() {
                    if job.cancel.load(Ordering::Relaxed) {
                        continue;
                    }
                    let events = job.events.clone();
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        state.run(job, &pool, &shown)
                    }));
                    if run.is_err() {
                        // Whatever the model held may be broken: load it afresh next time.
                        state = Loaded::default();
                        *shown.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        let _ = events.blocking_send(Event::Error(ApiError::internal(
                            "inference failed (internal error); the model will be reloaded",
                        )));
                    }
                }
            })
            .expect("cannot start the inference thread");
        Worker { queue: tx, loaded }
    }

    /// Queues a job; a full queue is a 503 with Retry-After.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is busy (the request queue is full); try again shortly",
                )
            }),
            Err(TrySendError::Disconnected(_)) => {
                Err(ApiError::internal("the inference worker has stopped"))
            }
        }
    }

    pub fn loaded_model(&self) -> Option<String> {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Default)]
struct Loaded {
    model: Option<(PathBuf, Model)>,
}

impl Loaded {
    fn run(&mut self, job: Job, pool: &Arc<ThreadPool>, shown: &Mutex<Option<String>>) {
        let send = |e: Event| {
            if job.events.blocking_send(e).is_err() {
                job.cancel.store(true, Ordering::Relaxed);
            }
        };
        let mut load_time = Duration::ZERO;
        if self.model.as_ref().map(|(p, _)| p) != Some(&job.model.path) {
            self.model = None;
            *shown.lock().unwrap_or_else(|e| e.into_inner()) = None;
            let t = Instant::now();
            match Model::load(&job.model.path) {
                Ok(m) => self.model = Some((job.model.path.clone(), m)),
                Err(e) => {
                    return send(Event::Error(ApiError::internal(format!(
                        "cannot load model {}: {e}",
                        job.model.name
                    ))))
                }
            }
            load_time = t.elapsed();
            *shown.lock().unwrap_or_else(|e| e.into_inner()) = Some(job.model.name.clone());
        }
        let Some((_, model)) = self.model.as_ref() else {
            return;
        };
        match generate(model, &job, pool, load_time, &send) {
            Ok(summary) => send(Event::Done(summary)),
            Err(e) => send(Event::Error(e)),
        }
    }
}

fn generate(
    model: &Model,
    job: &Job,
    pool: &Arc<ThreadPool>,
    load_time: Duration,
    send: &dyn Fn(Event),
) -> Result<Summary, ApiError> {
    let tok = model.tokenizer();
    let tokens = match &job.input {
        Input::Load => {
            send(Event::Started);
            return Ok(Summary {
                finish: Finish::Load,
                load_time,
                total_time: job.queued.elapsed(),
                ..Summary::default()
            });
        }
        Input::Raw(text) => tok.encode(text, true, true),
        Input::Chat(messages) => {
            let text = template(model)
                .render(messages, true)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let bos_text = tok.bos().and_then(|b| tok.token_text(b)).unwrap_or("");
            // A template that writes BOS itself must not get a second one.
            let add_bos = bos_text.is_empty() || !text.starts_with(bos_text);
            tok.encode(&text, add_bos, true)
        }
    };
    let n_ctx = job.n_ctx.min(model.config().n_ctx_train.max(1));
    let prompt_param = match job.input {
        Input::Chat(_) => "messages",
        _ => "prompt",
    };
    if tokens.len() >= n_ctx {
        return Err(ApiError::invalid(
            prompt_param,
            format!(
                "the prompt has {} tokens but the context holds {n_ctx}",
                tokens.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let room = n_ctx - tokens.len();
    let max_tokens = match job.budget {
        Budget::Exactly(n) if n > room => {
            return Err(ApiError::invalid(
                job.budget_param,
                format!(
                "the prompt ({} tokens) plus {} = {n} tokens exceeds the context of {n_ctx} tokens",
                tokens.len(),
                job.budget_param
            ),
            )
            .with_code("context_length_exceeded"))
        }
        Budget::Exactly(n) => n,
        Budget::Fill => room,
        Budget::Default(n) => n.min(room),
    };
    let opts = GenerateOptions {
        max_tokens,
        sampler: job.sampler.clone(),
        stop: job.stop.clone(),
        cancel: Some(Arc::clone(&job.cancel)),
        ..GenerateOptions::default()
    };
    let mut session = model.session(n_ctx, Arc::clone(pool));
    let mut gen = Generator::new(&mut session, &tokens, opts)
        .map_err(|e| ApiError::internal(format!("prompt evaluation failed: {e}")))?;
    send(Event::Started);
    for piece in gen.by_ref() {
        match piece {
            Ok(p) => send(Event::Piece(p)),
            Err(e) => return Err(ApiError::internal(format!("generation failed: {e}"))),
        }
    }
    let t = gen.timings().clone();
    let finish = match gen.stop_reason() {
        Some(StopReason::MaxTokens | StopReason::ContextFull) => Finish::Length,
        Some(StopReason::Cancelled) => Finish::Cancelled,
        _ => Finish::Stop,
    };
    Ok(Summary {
        finish,
        prompt_tokens: tokens.len(),
        prompt_time: t.prompt_time,
        completion_tokens: t.generated_tokens,
        generation_time: t.generation_time,
        load_time,
        total_time: job.queued.elapsed(),
    })
}

/// The model's chat template, or a built-in one when the file has none.
fn template(model: &Model) -> ChatTemplate {
    let tok = model.tokenizer();
    let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or("").to_string();
    let source = model
        .file()
        .get_str("tokenizer.chat_template")
        .ok()
        .flatten();
    ChatTemplate::new(
        source,
        &model.config().arch,
        &text(tok.bos()),
        &text(tok.eos()),
    )
}
