//! The worker thread: admits jobs while sequences are free, then steps every running
//! sequence of one model in a single forward pass (a prompt in chunks, the others one token
//! each), so several requests share each read of the weights. Finished sequences keep their
//! KV cache for a while, and a new request that starts with the same tokens (a conversation
//! going on) evaluates only what is new.

use super::fit;
use super::{
    Api, Budget, EmbedInput, Event, Finish, Input, Job, KeepAlive, LoadedModel, PromptInfo, Slot,
    Status, Summary, TokenLogprob, Totals, UsageSink, WorkerConfig,
};
use crate::error::ApiError;
use engine::chat::tools::ToolFormat;
use engine::chat::{reasoning, ChatError, ChatTemplate, Message, Sandbox};
use engine::generate::{Decoding, GenerateOptions, StopReason};
use engine::{Model, Session, SessionState};
use kernels::pool::ThreadPool;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Tokens one step evaluates at most (prompt chunks are cut to fit).
const STEP_TOKENS: usize = engine::model::DEFAULT_BATCH;

/// What the handle and the thread share.
pub struct Shared {
    pub status: Arc<Mutex<Status>>,
    pub waiting: Arc<AtomicUsize>,
}

pub fn run(config: WorkerConfig, rx: Receiver<(Job, Slot)>, shared: Shared) {
    let mut s = Scheduler {
        pool: config.pool,
        parallel: config.parallel.max(1),
        max_loaded: config.max_loaded.max(1),
        default_ctx: config.default_ctx,
        usage: config.usage,
        template_sandbox: config.template_sandbox,
        residents: Vec::new(),
        next: 0,
        totals: Totals::default(),
        shared,
        busy: false,
        logits: Vec::new(),
    };
    loop {
        // Take jobs while a sequence is free; wait for one only when nothing runs.
        while s.active() < s.parallel {
            let job = if s.active() == 0 {
                match s.idle_wait() {
                    Some(wait) => match rx.recv_timeout(wait) {
                        Ok(job) => Some(job),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    },
                    None => match rx.recv() {
                        Ok(job) => Some(job),
                        Err(_) => return,
                    },
                }
            } else {
                match rx.try_recv() {
                    Ok(job) => Some(job),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return,
                }
            };
            let Some((job, slot)) = job else { break };
            s.shared.waiting.fetch_sub(1, Ordering::Relaxed);
            s.guarded(|s| s.admit(job, slot));
            s.publish();
        }
        s.expire();
        s.note_activity();
        if s.active() > 0 {
            s.guarded(|s| s.step());
        }
        s.note_activity();
        s.publish();
    }
}

struct Scheduler {
    pool: Arc<ThreadPool>,
    parallel: usize,
    max_loaded: usize,
    default_ctx: usize,
    usage: Option<Arc<dyn UsageSink>>,
    template_sandbox: Option<Arc<dyn Sandbox>>,
    residents: Vec<Resident>,
    /// Round robin over the residents with work.
    next: usize,
    totals: Totals,
    shared: Shared,
    /// Whether requests were running when the usage sink was last told.
    busy: bool,
    /// Each step's logits, one row per sequence (kept: a step does not allocate them).
    logits: Vec<f32>,
}

/// A model in memory with its sequences.
struct Resident {
    name: String,
    path: PathBuf,
    model: Model,
    weight_bytes: u64,
    load_time: Duration,
    keep_alive: KeepAlive,
    /// When its last sequence ended (None while any runs).
    idle_since: Option<Instant>,
    last_used: Instant,
    active: Vec<Seq>,
    /// Finished sequences' caches, most recently used last, for prefix reuse.
    cache: Vec<Cached>,
}

struct Cached {
    tokens: Vec<u32>,
    state: SessionState,
}

/// A running request.
struct Seq {
    job: Job,
    /// Its place in the worker, freed when the sequence is dropped.
    _slot: Option<Slot>,
    /// Lent to the batch during a step.
    state: Option<SessionState>,
    /// Tokens the cache holds, in order.
    tokens: Vec<u32>,
    prompt: Vec<u32>,
    /// How much of the prompt the cache holds.
    prompt_done: usize,
    cached: usize,
    /// A chosen token that must be evaluated before the next choice.
    pending: Option<u32>,
    decoding: Decoding,
    prompt_started: Option<Instant>,
    load_time: Duration,
    n_ctx: usize,
}

impl Seq {
    fn send(&self, e: Event) {
        if self.job.events.send(e).is_err() {
            self.job.cancel.store(true, Ordering::Relaxed);
        }
    }

    fn cancelled(&self) -> bool {
        self.job.cancel.load(Ordering::Relaxed)
    }
}

impl Scheduler {
    fn active(&self) -> usize {
        self.residents.iter().map(|r| r.active.len()).sum()
    }

    /// Tells the usage sink when the worker starts or stops running requests.
    fn note_activity(&mut self) {
        let busy = self.active() > 0;
        if busy != self.busy {
            self.busy = busy;
            if let Some(sink) = &self.usage {
                sink.activity(busy);
            }
        }
    }

    /// Runs `f`; a panic inside drops every model (whatever they held may be broken) and
    /// fails their requests, instead of killing the thread.
    fn guarded(&mut self, f: impl FnOnce(&mut Scheduler)) {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if run.is_err() {
            for r in self.residents.drain(..) {
                for seq in r.active {
                    seq.send(Event::Error(ApiError::internal(
                        "inference failed (internal error); the model will be reloaded",
                    )));
                }
            }
        }
    }

    /// How long until the next model expires (None: none will).
    fn idle_wait(&self) -> Option<Duration> {
        self.residents
            .iter()
            .filter_map(|r| expiry(r).map(|at| at.saturating_duration_since(Instant::now())))
            .min()
    }

    /// Unloads models whose keep-alive has run out.
    fn expire(&mut self) {
        let now = Instant::now();
        self.residents
            .retain(|r| !r.active.is_empty() || expiry(r).is_none_or(|at| at > now));
    }

    fn publish(&self) {
        let models = self
            .residents
            .iter()
            .map(|r| {
                let states = r
                    .cache
                    .iter()
                    .map(|c| &c.state)
                    .chain(r.active.iter().filter_map(|s| s.state.as_ref()));
                let (kv, ctx) = states.fold((0u64, 0usize), |(kv, ctx), s| {
                    (kv + s.kv_bytes() as u64, ctx.max(s.n_ctx()))
                });
                LoadedModel {
                    name: r.name.clone(),
                    path: r.path.clone(),
                    weight_bytes: r.weight_bytes,
                    kv_bytes: kv,
                    n_ctx: if ctx == 0 { self.default_ctx } else { ctx },
                    expires_at: expiry(r)
                        .map(|at| SystemTime::now() + at.saturating_duration_since(Instant::now())),
                    active: r.active.len(),
                    load_time: r.load_time,
                }
            })
            .collect();
        let mut st = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        st.models = models;
        st.active = self.active();
        st.totals = self.totals.clone();
    }

    /// The resident for `job`'s model, loading it (and making room) when needed. Returns its
    /// index and the load time (zero when it was loaded already).
    fn resident(&mut self, job: &Job) -> Result<(usize, Duration), ApiError> {
        if let Some(i) = self.residents.iter().position(|r| r.path == job.model.path) {
            return Ok((i, Duration::ZERO));
        }
        let weight_bytes = std::fs::metadata(&job.model.path).map_or(0, |m| m.len());
        self.make_room(weight_bytes);
        let t = Instant::now();
        let model = Model::load(&job.model.path).map_err(|e| load_error(&job.model.name, e))?;
        let load_time = t.elapsed();
        self.residents.push(Resident {
            name: job.model.name.clone(),
            path: job.model.path.clone(),
            model,
            weight_bytes,
            load_time,
            keep_alive: KeepAlive::DEFAULT,
            idle_since: Some(Instant::now()),
            last_used: Instant::now(),
            active: Vec::new(),
            cache: Vec::new(),
        });
        Ok((self.residents.len() - 1, load_time))
    }

    /// Unloads idle models, least recently used first, while too many are loaded or memory
    /// is short for `need` more bytes.
    fn make_room(&mut self, need: u64) {
        loop {
            let short = available_memory().is_some_and(|a| a < need.saturating_add(need / 4));
            if self.residents.len() < self.max_loaded && !short {
                return;
            }
            let victim = self
                .residents
                .iter()
                .enumerate()
                .filter(|(_, r)| r.active.is_empty())
                .min_by_key(|(_, r)| r.last_used)
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    self.residents.remove(i);
                }
                None => return,
            }
        }
    }

    /// Starts `job`; `slot` is freed when it ends (kept by its sequence, if it runs one).
    fn admit(&mut self, job: Job, slot: Slot) {
        if job.cancel.load(Ordering::Relaxed) {
            return;
        }
        let fail = |job: &Job, e: ApiError| {
            let _ = job.events.send(Event::Error(e));
        };
        if matches!(job.input, Input::Unload) {
            return self.unload(job);
        }
        let (ri, load_time) = match self.resident(&job) {
            Ok(r) => r,
            Err(e) => return fail(&job, e),
        };
        let parallel = self.parallel;
        let pool = Arc::clone(&self.pool);
        let sandbox = self.template_sandbox.clone();
        let r = &mut self.residents[ri];
        r.last_used = Instant::now();
        if let Some(k) = job.keep_alive {
            r.keep_alive = k;
        }
        match &job.input {
            Input::Load => {
                if r.active.is_empty() {
                    r.idle_since = Some(Instant::now());
                }
                // Shown loaded (by /api/ps) before the client hears so.
                self.publish();
                let _ = job.events.send(Event::Started);
                let summary = Summary {
                    finish: Finish::Load,
                    load_time,
                    total_time: job.queued.elapsed(),
                    ..Summary::default()
                };
                let _ = job.events.send(Event::Done(summary));
                return;
            }
            Input::Task(task) => task.run(&r.model),
            Input::Embed { inputs, truncate } => {
                match embed(&r.model, &pool, &job, inputs, *truncate, load_time) {
                    Ok(ev) => {
                        let _ = job.events.send(ev);
                    }
                    Err(e) => fail(&job, e),
                }
            }
            Input::Chat(_) | Input::Raw(_) | Input::Tokens { .. } | Input::Fim { .. } => {
                match prepare(r, job, parallel, &pool, sandbox.as_ref(), load_time) {
                    Ok(mut seq) => {
                        r.idle_since = None;
                        seq._slot = Some(slot);
                        r.active.push(*seq);
                    }
                    Err((job, e)) => fail(&job, e),
                }
            }
            Input::Unload => {}
        }
        if r.active.is_empty() {
            r.idle_since = Some(Instant::now());
        }
    }

    fn unload(&mut self, job: Job) {
        if let Some(i) = self.residents.iter().position(|r| r.path == job.model.path) {
            if self.residents[i].active.is_empty() {
                self.residents.remove(i);
            } else {
                // Unloaded when its running requests end.
                self.residents[i].keep_alive = KeepAlive::For(Duration::ZERO);
            }
        }
        self.publish();
        let _ = job.events.send(Event::Started);
        let _ = job.events.send(Event::Done(Summary {
            finish: Finish::Unload,
            total_time: job.queued.elapsed(),
            ..Summary::default()
        }));
    }

    /// One forward pass for the running sequences of the next model that has any.
    fn step(&mut self) {
        let n = self.residents.len();
        let Some(ri) = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|&i| !self.residents[i].active.is_empty())
        else {
            return;
        };
        self.next = (ri + 1) % n.max(1);
        let pool = Arc::clone(&self.pool);
        let r = &mut self.residents[ri];
        let mut ended: Vec<Seq> = Vec::new();
        // Sequences whose client went away end now.
        let mut i = 0;
        while i < r.active.len() {
            if r.active[i].cancelled() {
                let mut seq = r.active.remove(i);
                seq.decoding.stop(StopReason::Cancelled);
                ended.push(seq);
            } else {
                i += 1;
            }
        }
        // Each sequence's tokens for this step: its pending token, or a chunk of its prompt.
        let decoding = r.active.iter().filter(|s| s.pending.is_some()).count();
        let mut room = STEP_TOKENS.saturating_sub(decoding).max(1);
        let mut parts: Vec<(usize, Vec<u32>)> = Vec::new();
        for (i, seq) in r.active.iter().enumerate() {
            if let Some(t) = seq.pending {
                parts.push((i, vec![t]));
            } else if seq.prompt_done < seq.prompt.len() && room > 0 {
                let end = (seq.prompt_done + room).min(seq.prompt.len());
                room -= end - seq.prompt_done;
                parts.push((i, seq.prompt[seq.prompt_done..end].to_vec()));
            }
        }
        let logits = &mut self.logits;
        let mut result = Ok(());
        let mut elapsed = Duration::ZERO;
        if !parts.is_empty() {
            for &(i, _) in &parts {
                r.active[i].prompt_started.get_or_insert_with(Instant::now);
            }
            let model = &r.model;
            let mut sessions: Vec<Session> = parts
                .iter()
                .map(|&(i, _)| {
                    let state = r.active[i].state.take().expect("a sequence's cache");
                    model.resume(state, Arc::clone(&pool))
                })
                .collect();
            let tokens: Vec<&[u32]> = parts.iter().map(|(_, t)| t.as_slice()).collect();
            let t = Instant::now();
            {
                let mut refs: Vec<&mut Session> = sessions.iter_mut().collect();
                result = Session::eval_together(&mut refs, &tokens, logits);
            }
            elapsed = t.elapsed();
            for (&(i, _), session) in parts.iter().zip(sessions) {
                r.active[i].state = Some(session.into_state());
            }
            self.totals.steps += 1;
            if parts.len() > 1 {
                self.totals.batched_steps += 1;
            }
        }
        let n_vocab = r.model.n_vocab();
        let tokenizer = r.model.tokenizer();
        match result {
            Err(e) => {
                for &(i, _) in &parts {
                    r.active[i].send(Event::Error(ApiError::internal(format!(
                        "evaluation failed: {e}"
                    ))));
                    r.active[i].job.cancel.store(true, Ordering::Relaxed);
                }
            }
            Ok(()) => {
                for (k, (i, toks)) in parts.into_iter().enumerate() {
                    let row = &logits[k * n_vocab..(k + 1) * n_vocab];
                    let seq = &mut r.active[i];
                    seq.tokens.extend_from_slice(&toks);
                    if seq.pending.take().is_some() {
                        seq.decoding.add_generation_time(elapsed);
                    } else {
                        seq.prompt_done += toks.len();
                        if seq.prompt_done < seq.prompt.len() {
                            continue;
                        }
                        let started = seq.prompt_started.unwrap_or_else(Instant::now);
                        seq.decoding
                            .prompt_done(seq.prompt.len() - seq.cached, started.elapsed());
                        seq.send(Event::Started);
                    }
                    choose(seq, tokenizer, row);
                }
            }
        }
        // Sequences that have stopped leave the batch.
        let mut i = 0;
        while i < r.active.len() {
            let s = &r.active[i];
            if s.decoding.stop_reason().is_some() && s.pending.is_none() || s.cancelled() {
                ended.push(r.active.remove(i));
            } else {
                i += 1;
            }
        }
        let done: Vec<(Seq, Summary)> = ended.into_iter().map(|seq| self.finish(ri, seq)).collect();
        let r = &mut self.residents[ri];
        if r.active.is_empty() {
            r.idle_since = Some(Instant::now());
            r.last_used = Instant::now();
        }
        // What /api/ps shows is up to date before a client hears that its request ended.
        self.expire();
        self.publish();
        for (seq, summary) in done {
            seq.send(Event::Done(summary));
        }
    }

    /// Sends a sequence's last text, counts it and keeps its cache; returns the summary to
    /// send once the status is published.
    fn finish(&mut self, ri: usize, mut seq: Seq) -> (Seq, Summary) {
        let rest = seq.decoding.finish();
        if !rest.is_empty() {
            seq.send(Event::Piece(rest));
        }
        let t = seq.decoding.timings().clone();
        let finish = match seq.decoding.stop_reason() {
            Some(StopReason::MaxTokens | StopReason::ContextFull) => Finish::Length,
            Some(StopReason::Cancelled) => Finish::Cancelled,
            _ if seq.cancelled() => Finish::Cancelled,
            _ => Finish::Stop,
        };
        let summary = Summary {
            finish,
            prompt_tokens: seq.prompt.len(),
            cached_tokens: seq.cached,
            prompt_time: t.prompt_time,
            completion_tokens: t.generated_tokens,
            generation_time: t.generation_time,
            load_time: seq.load_time,
            first_token: t.first_token,
            total_time: seq.job.queued.elapsed(),
        };
        let tot = &mut self.totals;
        tot.requests += 1;
        tot.prompt_tokens += summary.prompt_tokens as u64;
        tot.cached_tokens += summary.cached_tokens as u64;
        tot.completion_tokens += summary.completion_tokens as u64;
        tot.prompt_seconds += summary.prompt_time.as_secs_f64();
        tot.generation_seconds += summary.generation_time.as_secs_f64();
        let r = &mut self.residents[ri];
        if let Some(sink) = &self.usage {
            sink.record(&r.name, seq.job.api, &summary);
        }
        if let Some(mut state) = seq.state.take() {
            // The cache holds exactly `tokens`; keep it for a request that continues them.
            state.truncate(seq.tokens.len());
            r.cache.push(Cached {
                tokens: std::mem::take(&mut seq.tokens),
                state,
            });
            let keep = self.parallel;
            if r.cache.len() > keep {
                r.cache.remove(0);
            }
        }
        (seq, summary)
    }
}

/// When a resident's keep-alive runs out (None: never, or it is busy).
fn expiry(r: &Resident) -> Option<Instant> {
    match (r.idle_since, r.keep_alive) {
        (Some(since), KeepAlive::For(d)) if r.active.is_empty() => Some(since + d),
        _ => None,
    }
}

/// Picks the sequence's next token from `row` and sends what it releases.
fn choose(seq: &mut Seq, tokenizer: &engine::tokenizer::Tokenizer, row: &[f32]) {
    let Some(chosen) = seq.decoding.choose(tokenizer, row) else {
        return;
    };
    let lps = seq.decoding.take_logprobs();
    if !lps.is_empty() {
        let text = |id: u32| {
            let bytes = tokenizer.token_bytes(id, false);
            (String::from_utf8_lossy(&bytes).into_owned(), bytes)
        };
        let out = lps
            .into_iter()
            .map(|lp| {
                let (t, b) = text(lp.token);
                TokenLogprob {
                    text: t,
                    bytes: b,
                    logprob: lp.logprob,
                    top: lp
                        .top
                        .into_iter()
                        .map(|(id, l)| {
                            let (t, b) = text(id);
                            (t, b, l)
                        })
                        .collect(),
                }
            })
            .collect();
        seq.send(Event::Logprobs(out));
    }
    if !chosen.text.is_empty() {
        seq.send(Event::Piece(chosen.text));
    }
    if chosen.more {
        let pos = seq.state.as_ref().map_or(0, |s| s.pos());
        if pos >= seq.n_ctx {
            seq.decoding.stop(StopReason::ContextFull);
        } else {
            seq.pending = Some(chosen.token);
        }
    } else if seq.decoding.stop_reason().is_none() {
        seq.decoding.stop(StopReason::MaxTokens);
    }
}

/// Tokenizes a generation job, checks it fits, and gives it a cache: the finished sequence
/// sharing the longest prefix with its prompt, else a fresh one.
#[allow(clippy::result_large_err)]
fn prepare(
    r: &mut Resident,
    job: Job,
    parallel: usize,
    pool: &Arc<ThreadPool>,
    sandbox: Option<&Arc<dyn Sandbox>>,
    load_time: Duration,
) -> Result<Box<Seq>, (Job, ApiError)> {
    let model = &r.model;
    if model.is_embedding_only() {
        let e = ApiError::bad_request(format!(
            "model `{}` is an embedding model: it cannot generate text (use /v1/embeddings or /api/embed)",
            job.model.name
        ));
        return Err((job, e));
    }
    let n_ctx = job.n_ctx.min(model.config().n_ctx_train.max(1));
    let tokens = match tokenize(model, &job, sandbox, n_ctx) {
        Ok(t) => t,
        Err(e) => return Err((job, e)),
    };
    let constraint = match &job.grammar {
        None => None,
        Some(g) => match engine::constraint::Constraint::new(model.tokenizer(), g) {
            Ok(c) => Some(c),
            Err(e) => {
                let e = ApiError::invalid(job.grammar_param, format!("{}: {e}", job.grammar_param));
                return Err((job, e));
            }
        },
    };
    let prompt_param = match &job.input {
        Input::Chat(_) => "messages",
        Input::Tokens { param, .. } => param.as_str(),
        _ => "prompt",
    }
    .to_string();
    let prompt_param = prompt_param.as_str();
    if tokens.is_empty() {
        return Err((job, ApiError::invalid(prompt_param, "the prompt is empty")));
    }
    if tokens.len() >= n_ctx {
        let e = ApiError::invalid(
            prompt_param,
            format!(
                "the prompt has {} tokens but the context holds {n_ctx}",
                tokens.len()
            ),
        )
        .with_code("context_length_exceeded");
        return Err((job, e));
    }
    // A budget past the context is cut to the room left; the answer then ends with
    // finish_reason "length", as llama.cpp and Ollama end it.
    let room = n_ctx - tokens.len();
    let max_tokens = match job.budget {
        Budget::Exactly(n) | Budget::Default(n) => n.min(room),
        Budget::Fill => room,
    };
    // The cached sequence with the longest common prefix (of the same context size).
    let best = r
        .cache
        .iter()
        .enumerate()
        .filter(|(_, c)| c.state.n_ctx() == n_ctx)
        .map(|(i, c)| (i, common_prefix(&c.tokens, &tokens)))
        .max_by_key(|&(i, n)| (n, i));
    let (mut state, mut kept) = match best {
        Some((i, n)) if n > 0 => {
            let c = r.cache.remove(i);
            (c.state, c.tokens)
        }
        // No shared prefix: reuse the oldest cache's memory once enough are kept.
        Some(_) if r.cache.len() >= parallel => {
            let i = r
                .cache
                .iter()
                .position(|c| c.state.n_ctx() == n_ctx)
                .unwrap_or(0);
            let c = r.cache.remove(i);
            (c.state, c.tokens)
        }
        _ => (
            model.session(n_ctx, Arc::clone(pool)).into_state(),
            Vec::new(),
        ),
    };
    // At least one prompt token is evaluated: its logits choose the first new token.
    let reuse = common_prefix(&kept, &tokens).min(tokens.len() - 1);
    state.truncate(reuse);
    kept.truncate(reuse);
    let opts = GenerateOptions {
        max_tokens,
        sampler: job.sampler.clone(),
        stop: job.stop.clone(),
        cancel: Some(Arc::clone(&job.cancel)),
        logprobs: job.logprobs,
        constraint,
        ..GenerateOptions::default()
    };
    // Timed from the queue: the first token's wait includes the queue and the load.
    let decoding = Decoding::new(opts, &tokens, job.queued);
    Ok(Box::new(Seq {
        job,
        _slot: None,
        state: Some(state),
        tokens: kept,
        prompt_done: reuse,
        cached: reuse,
        prompt: tokens,
        pending: None,
        decoding,
        prompt_started: None,
        load_time,
        n_ctx,
    }))
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The prompt's tokens. Ollama's routes cut a prompt too long for `n_ctx` (see `fit`).
fn tokenize(
    model: &Model,
    job: &Job,
    sandbox: Option<&Arc<dyn Sandbox>>,
    n_ctx: usize,
) -> Result<Vec<u32>, ApiError> {
    let tok = model.tokenizer();
    let cut = job.api == Api::Ollama;
    let limit = fit::prompt_limit(n_ctx, job.budget);
    Ok(match &job.input {
        Input::Raw(text) if cut => fit::keep_tail(tok.encode(text, true, true), limit, tok.bos()),
        Input::Raw(text) => tok.encode(text, true, true),
        Input::Chat(messages) => {
            let mut template = ChatTemplate::for_model(model).map_err(|e| match e {
                ChatError::BaseModel => base_model_refusal(&job.model.name),
                e => ApiError::bad_request(e.to_string()),
            })?;
            if let Some(sandbox) = sandbox {
                template = template.with_sandbox(Arc::clone(sandbox));
            }
            let tool_format = ToolFormat::detect(template.source());
            if job.tools.is_some() && tool_format.is_none() {
                return Err(ApiError::invalid(
                    "tools",
                    format!(
                        "{}'s chat template has no tool calls: this model cannot be given tools",
                        job.model.name
                    ),
                ));
            }
            // Messages' text stays text: `<|im_end|>` typed by a user is not the control token.
            let encode = |messages: &[Message]| {
                let prompt = template
                    .render_prompt(tok, messages, job.tools.as_deref(), true)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                let ids = prompt.encode(tok);
                Ok::<_, ApiError>((prompt, ids))
            };
            let (prompt, ids) = if cut {
                fit::fit_chat(messages, limit, encode)?
            } else {
                encode(messages)?
            };
            let _ = job.events.send(Event::Prompt(PromptInfo {
                tool_format,
                thinks: reasoning::template_thinks(template.source()),
                thinking_open: reasoning::prompt_opens_thinking(&prompt.text),
            }));
            ids
        }
        Input::Tokens { ids, param } => {
            check_ids(model, ids, param)?;
            ids.clone()
        }
        Input::Fim { prefix, suffix } => fim_prompt(tok, prefix, suffix).ok_or_else(|| {
            ApiError::invalid(
                "suffix",
                format!(
                    "suffix asks for fill-in-the-middle, but model `{}` has no FIM tokens \
                         (tokenizer.ggml.fim_pre_token_id or <|fim_prefix|>, <|fim_suffix|>, \
                         <|fim_middle|>): use a code model made for it, or leave suffix out",
                    job.model.name
                ),
            )
        })?,
        _ => Vec::new(),
    })
}

/// Refuses ids the model does not have, naming the first: `{param}[{i}]`.
pub(crate) fn check_ids(model: &Model, ids: &[u32], param: &str) -> Result<(), ApiError> {
    let limit = model.tokenizer().n_vocab().min(model.n_vocab());
    match ids.iter().position(|&id| id as usize >= limit) {
        None => Ok(()),
        Some(i) => Err(ApiError::invalid(
            &format!("{param}[{i}]"),
            format!(
                "{param}[{i}] is token id {} but the model's vocabulary has ids 0 to {}",
                ids[i],
                limit.saturating_sub(1)
            ),
        )),
    }
}

/// The fill-in-the-middle prompt: BOS when the model adds one, then the prefix marker and
/// the prefix, the suffix marker and the suffix, and the middle marker, after which the model
/// writes what goes between. The texts are plain text: marker-like text in them is not
/// parsed as control tokens. None when the model has no FIM tokens.
pub(crate) fn fim_prompt(
    tok: &engine::tokenizer::Tokenizer,
    prefix: &str,
    suffix: &str,
) -> Option<Vec<u32>> {
    let (pre, suf, mid) = tok.fim()?;
    let mut out = Vec::new();
    if tok.add_bos() {
        out.extend(tok.bos());
    }
    out.push(pre);
    out.extend(tok.encode(prefix, false, false));
    out.push(suf);
    out.extend(tok.encode(suffix, false, false));
    out.push(mid);
    Some(out)
}

/// Why a chat (or a templated generate) with a base model is refused, and what works instead.
fn base_model_refusal(name: &str) -> ApiError {
    ApiError::invalid(
        "model",
        format!(
            "{name} is a base model: its file has no chat template, so it continues text rather \
             than answering messages. Send the text to continue to /api/generate with \
             \"raw\": true or to /v1/completions, or chat with an instruct model."
        ),
    )
    .with_code("base_model")
}

/// Embeds each text (all must fit the context unless `truncate`, which cuts them).
fn embed(
    model: &Model,
    pool: &Arc<ThreadPool>,
    job: &Job,
    inputs: &[EmbedInput],
    truncate: bool,
    load_time: Duration,
) -> Result<Event, ApiError> {
    let n_ctx = job.n_ctx.min(model.config().n_ctx_train.max(1));
    let mut session = model.session(n_ctx, Arc::clone(pool));
    let t = Instant::now();
    let mut vectors = Vec::with_capacity(inputs.len());
    let mut total = 0;
    for (i, input) in inputs.iter().enumerate() {
        if job.cancel.load(Ordering::Relaxed) {
            return Err(ApiError::internal("cancelled"));
        }
        let mut tokens = match input {
            EmbedInput::Text(text) => model.tokenizer().encode(text, true, true),
            EmbedInput::Tokens(ids) => {
                check_ids(model, ids, &format!("input[{i}]"))?;
                ids.clone()
            }
        };
        if tokens.len() > n_ctx {
            if !truncate {
                return Err(ApiError::invalid(
                    "input",
                    format!(
                        "input[{i}] has {} tokens but the context holds {n_ctx} (set truncate: true to cut it)",
                        tokens.len()
                    ),
                )
                .with_code("context_length_exceeded"));
            }
            // An encoder's input keeps its closing [SEP].
            let sep = model
                .tokenizer()
                .sep()
                .filter(|_| model.is_embedding_only());
            let closing = sep.filter(|&s| tokens.last() == Some(&s));
            tokens.truncate(n_ctx - usize::from(closing.is_some()));
            tokens.extend(closing);
        }
        if tokens.is_empty() {
            return Err(ApiError::invalid("input", format!("input[{i}] is empty")));
        }
        total += tokens.len();
        vectors.push(
            session
                .embed(&tokens)
                .map_err(|e| ApiError::internal(format!("embedding failed: {e}")))?,
        );
    }
    Ok(Event::Embeddings {
        vectors,
        summary: Summary {
            prompt_tokens: total,
            prompt_time: t.elapsed(),
            load_time,
            total_time: job.queued.elapsed(),
            ..Summary::default()
        },
    })
}

/// Memory the system could give us now (Linux: MemAvailable), if known.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Why a model did not load, as an answer: a model hearth cannot run is the client's choice
/// (400, with the reason); a file that is not valid GGUF is the server's trouble (500), and
/// its details stay out, since they may quote the file's bytes.
fn load_error(name: &str, e: engine::EngineError) -> ApiError {
    use engine::EngineError as E;
    match e {
        E::Gguf(g) => crate::models::unreadable_model(name, &g),
        E::UnsupportedArchitecture(..)
        | E::NoArchitecture
        | E::UnsupportedTensorType { .. }
        | E::UnclaimedTensors { .. } => {
            ApiError::bad_request(format!("cannot load model {name:?}: {e}"))
        }
        e => ApiError::internal(format!("cannot load model {name:?}: {e}")),
    }
}
