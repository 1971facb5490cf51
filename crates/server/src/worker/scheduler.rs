//! The worker thread: admits jobs while sequences are free, then steps every running
//! sequence of one model in a single forward pass (a prompt in chunks, the others one token
//! each), so several requests share each read of the weights. Finished sequences keep their
//! KV cache for a while, and a new request that starts with the same tokens (a conversation
//! going on) evaluates only what is new.
//!
//! Nothing slow runs on this thread between two steps: models load on a loader thread, and a
//! job's template, tokens and grammar are prepared on a thread of its own (see `prep`), while
//! the running streams go on; an embedding job runs a chunk per step (see `embed`).

use super::embed::{EmbedTask, Progress};
use super::pace::Pace;
use super::prep::{self, Plan, Ready};
use super::{
    Event, Finish, Input, Job, KeepAlive, LoadedModel, Slot, Status, Summary, TokenLogprob, Totals,
    UsageSink, WorkerConfig,
};
use crate::error::ApiError;
use engine::chat::Sandbox;
use engine::generate::{Decoding, GenerateOptions, StopReason};
use engine::SharedBackend;
use engine::{Model, Session, SessionState};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Tokens one step evaluates at most (prompt chunks are cut to fit).
const STEP_TOKENS: usize = engine::model::DEFAULT_BATCH;

/// How often the thread looks for finished loads and preparations when it has nothing to step.
const POLL: Duration = Duration::from_millis(2);

/// What the handle and the thread share.
pub struct Shared {
    pub status: Arc<Mutex<Status>>,
    pub waiting: Arc<AtomicUsize>,
}

/// Slow work finished beside the decode thread.
enum Done {
    Loaded {
        path: PathBuf,
        /// None: the loader panicked.
        result: Result<Box<(Model, Duration)>, Option<engine::EngineError>>,
    },
    /// None: the preparation panicked (its job's client hears that the worker failed).
    Prepared {
        path: PathBuf,
        result: Option<Box<Ready>>,
    },
}

/// A model being loaded, with the jobs that wait for it.
struct Loading {
    path: PathBuf,
    jobs: Vec<(Job, Slot)>,
}

pub fn run(config: WorkerConfig, rx: Receiver<(Job, Slot)>, shared: Shared) {
    let (done_tx, done_rx) = channel();
    let loads = start_loader(done_tx.clone());
    let mut s = Scheduler {
        backend: config.backend,
        parallel: config.parallel.max(1),
        max_loaded: config.max_loaded.max(1),
        default_ctx: config.default_ctx,
        usage: config.usage,
        template_sandbox: config.template_sandbox,
        residents: Vec::new(),
        loading: Vec::new(),
        loads,
        done_tx,
        done_rx,
        next: 0,
        totals: Totals::default(),
        shared,
        busy: false,
        logits: Vec::new(),
    };
    loop {
        s.collect_done();
        // Take jobs while a sequence is free; wait for one only when nothing runs.
        while s.taken() < s.parallel {
            let job = if s.runnable() == 0 {
                let wait = match (s.idle_wait(), s.in_flight() > 0) {
                    (w, true) => Some(w.map_or(POLL, |w| w.min(POLL))),
                    (w, false) => w,
                };
                match wait {
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
            s.guarded(|s| s.admit(job, slot, Duration::ZERO));
            s.publish();
        }
        s.collect_done();
        s.expire();
        s.note_activity();
        if s.runnable() > 0 {
            s.guarded(|s| s.step());
        } else if s.in_flight() > 0 {
            if let Ok(done) = s.done_rx.recv_timeout(POLL) {
                s.guarded(|s| s.on_done(done));
            }
        }
        s.note_activity();
        s.publish();
    }
}

/// The thread that loads models, one at a time, in the order asked.
fn start_loader(done: Sender<Done>) -> Sender<PathBuf> {
    let (tx, rx) = channel::<PathBuf>();
    let spawned = std::thread::Builder::new()
        .name("hearth-loader".into())
        .spawn(move || {
            // A load (and the threads packing its weights) yields the cores to the streams.
            engine::backend::lower_thread_priority();
            for path in rx {
                let t = Instant::now();
                let result = match std::panic::catch_unwind(|| Model::load(&path)) {
                    Ok(Ok(model)) => Ok(Box::new((model, t.elapsed()))),
                    Ok(Err(e)) => Err(Some(e)),
                    Err(_) => Err(None),
                };
                if done.send(Done::Loaded { path, result }).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("hearth: cannot start the model loader thread: {e}");
    }
    tx
}

struct Scheduler {
    backend: SharedBackend,
    parallel: usize,
    max_loaded: usize,
    default_ctx: usize,
    usage: Option<Arc<dyn UsageSink>>,
    template_sandbox: Option<Arc<dyn Sandbox>>,
    residents: Vec<Resident>,
    loading: Vec<Loading>,
    /// To the loader thread.
    loads: Sender<PathBuf>,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
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
    model: Arc<Model>,
    weight_bytes: u64,
    load_time: Duration,
    keep_alive: KeepAlive,
    /// When its last sequence ended (None while any runs).
    idle_since: Option<Instant>,
    last_used: Instant,
    active: Vec<Seq>,
    /// Embedding jobs, run in order, a chunk per step.
    embeds: Vec<EmbedTask>,
    /// The speed of its prompt chunks (their size while other sequences decode).
    prompt_pace: Pace,
    /// Jobs being prepared beside the decode thread.
    preparing: usize,
    /// Finished sequences' caches, most recently used last, for prefix reuse.
    cache: Vec<Cached>,
}

impl Resident {
    /// Whether anything runs or waits on it (it may not be unloaded).
    fn in_use(&self) -> bool {
        !self.active.is_empty() || !self.embeds.is_empty() || self.preparing > 0
    }
}

struct Cached {
    tokens: Vec<u32>,
    state: SessionState,
}

/// A running request.
struct Seq {
    job: Job,
    /// Its place in the worker, freed when the sequence is dropped.
    _slot: Slot,
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
    /// Sequences and embedding jobs that a step would advance.
    fn runnable(&self) -> usize {
        self.residents
            .iter()
            .map(|r| r.active.len() + r.embeds.len())
            .sum()
    }

    /// Jobs being prepared or waiting for their model to load.
    fn in_flight(&self) -> usize {
        let preparing: usize = self.residents.iter().map(|r| r.preparing).sum();
        preparing + self.loading.iter().map(|l| l.jobs.len()).sum::<usize>()
    }

    /// Jobs taken from the queue and not finished: they hold a sequence.
    fn taken(&self) -> usize {
        self.runnable() + self.in_flight()
    }

    /// Tells the usage sink when the worker starts or stops running requests.
    fn note_activity(&mut self) {
        let busy = self.taken() > 0;
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
            let failed =
                ApiError::internal("inference failed (internal error); the model will be reloaded");
            for r in self.residents.drain(..) {
                for seq in r.active {
                    seq.send(Event::Error(failed.clone()));
                }
                for task in r.embeds {
                    task.fail(failed.clone());
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
            .retain(|r| r.in_use() || expiry(r).is_none_or(|at| at > now));
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
                    .chain(r.active.iter().filter_map(|s| s.state.as_ref()))
                    .chain(r.embeds.iter().filter_map(EmbedTask::state));
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
                    active: r.active.len() + r.embeds.len(),
                    load_time: r.load_time,
                }
            })
            .collect();
        let mut st = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        st.models = models;
        st.active = self.runnable();
        st.totals = self.totals.clone();
    }

    /// Starts loading `job`'s model on the loader thread (making room first); the job waits
    /// for it with any others that come meanwhile.
    fn start_load(&mut self, job: Job, slot: Slot) {
        if let Some(l) = self.loading.iter_mut().find(|l| l.path == job.model.path) {
            l.jobs.push((job, slot));
            return;
        }
        let weight_bytes = std::fs::metadata(&job.model.path).map_or(0, |m| m.len());
        self.make_room(weight_bytes);
        if self.loads.send(job.model.path.clone()).is_err() {
            let e = ApiError::internal("the model loader has stopped");
            let _ = job.events.send(Event::Error(e));
            return;
        }
        self.loading.push(Loading {
            path: job.model.path.clone(),
            jobs: vec![(job, slot)],
        });
    }

    /// Unloads idle models, least recently used first, while too many are loaded (or being
    /// loaded) or memory is short for `need` more bytes.
    fn make_room(&mut self, need: u64) {
        loop {
            let short = available_memory().is_some_and(|a| a < need.saturating_add(need / 4));
            if self.residents.len() + self.loading.len() < self.max_loaded && !short {
                return;
            }
            let victim = self
                .residents
                .iter()
                .enumerate()
                .filter(|(_, r)| !r.in_use())
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

    /// Takes a job: answered at once (load, unload), handed to a preparation thread when
    /// its model is in memory, or made to wait for its model's load.
    /// `slot` is freed when the job ends (kept by its sequence, if it runs one).
    fn admit(&mut self, job: Job, slot: Slot, load_time: Duration) {
        if job.cancel.load(Ordering::Relaxed) {
            return;
        }
        let loading = self.loading.iter().any(|l| l.path == job.model.path);
        let Some(ri) = self
            .residents
            .iter()
            .position(|r| r.path == job.model.path)
            .filter(|_| !loading)
        else {
            return match job.input {
                Input::Unload if !loading => self.unload(job),
                _ => self.start_load(job, slot),
            };
        };
        if matches!(job.input, Input::Unload) {
            return self.unload(job);
        }
        let r = &mut self.residents[ri];
        r.last_used = Instant::now();
        if let Some(k) = job.keep_alive {
            r.keep_alive = k;
        }
        if let Input::Load = job.input {
            if !r.in_use() {
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
        r.preparing += 1;
        r.idle_since = None;
        let model = Arc::clone(&r.model);
        let path = r.path.clone();
        let sandbox = self.template_sandbox.clone();
        let done = self.done_tx.clone();
        let work = move || {
            engine::backend::lower_thread_priority();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Box::new(prep::prepare(
                    &model,
                    job,
                    slot,
                    sandbox.as_ref(),
                    load_time,
                ))
            }))
            .ok();
            let _ = done.send(Done::Prepared { path, result });
        };
        if let Err(e) = std::thread::Builder::new()
            .name("hearth-prepare".into())
            .spawn(work)
        {
            // The job went with the closure; its client hears the worker failed.
            eprintln!("hearth: cannot start a thread to prepare a request: {e}");
            self.residents[ri].preparing -= 1;
        }
    }

    /// Takes the slow work that finished, without waiting.
    fn collect_done(&mut self) {
        while let Ok(done) = self.done_rx.try_recv() {
            self.guarded(|s| s.on_done(done));
        }
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Loaded { path, result } => {
                let Some(i) = self.loading.iter().position(|l| l.path == path) else {
                    return;
                };
                let jobs = self.loading.remove(i).jobs;
                let Some((first, _)) = jobs.first() else {
                    return;
                };
                let name = first.model.name.clone();
                match result {
                    Ok(loaded) => {
                        let (model, load_time) = *loaded;
                        let weight_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
                        self.residents.push(Resident {
                            name,
                            path,
                            model: Arc::new(model),
                            weight_bytes,
                            load_time,
                            keep_alive: KeepAlive::DEFAULT,
                            idle_since: Some(Instant::now()),
                            last_used: Instant::now(),
                            active: Vec::new(),
                            embeds: Vec::new(),
                            prompt_pace: Pace::default(),
                            preparing: 0,
                            cache: Vec::new(),
                        });
                        for (job, slot) in jobs {
                            self.admit(job, slot, load_time);
                        }
                    }
                    Err(e) => {
                        let e = load_error(&name, e);
                        for (job, _) in jobs {
                            let _ = job.events.send(Event::Error(e.clone()));
                        }
                    }
                }
            }
            Done::Prepared { path, result } => {
                let ri = self.residents.iter().position(|r| r.path == path);
                if let Some(ri) = ri {
                    let r = &mut self.residents[ri];
                    r.preparing = r.preparing.saturating_sub(1);
                }
                match (result.map(|r| *r), ri) {
                    (Some(Ready::Answered), _) | (None, _) => {}
                    (Some(Ready::Failed(job, e)), _) => {
                        let _ = job.events.send(Event::Error(e));
                    }
                    (Some(Ready::Generate(plan, job, slot)), Some(ri)) => {
                        if !job.cancel.load(Ordering::Relaxed) {
                            let r = &mut self.residents[ri];
                            let seq = start(r, *job, slot, *plan, self.parallel, &self.backend);
                            r.active.push(seq);
                        }
                    }
                    (Some(Ready::Embed(plan, job, slot)), Some(ri)) => {
                        let r = &mut self.residents[ri];
                        let task = EmbedTask::new(&r.model, *job, slot, *plan, &self.backend);
                        r.embeds.push(task);
                    }
                    // The model was dropped meanwhile (after a panic).
                    (Some(Ready::Generate(_, job, _) | Ready::Embed(_, job, _)), None) => {
                        let e = ApiError::internal("the model was unloaded; try again");
                        let _ = job.events.send(Event::Error(e));
                    }
                }
                if let Some(r) = ri.map(|i| &mut self.residents[i]) {
                    if !r.in_use() {
                        r.idle_since = Some(Instant::now());
                    }
                }
            }
        }
    }

    fn unload(&mut self, job: Job) {
        if let Some(i) = self.residents.iter().position(|r| r.path == job.model.path) {
            if self.residents[i].in_use() {
                // Unloaded when its running requests end.
                self.residents[i].keep_alive = KeepAlive::For(Duration::ZERO);
            } else {
                self.residents.remove(i);
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
        let Some(ri) = (0..n).map(|k| (self.next + k) % n).find(|&i| {
            let r = &self.residents[i];
            !r.active.is_empty() || !r.embeds.is_empty()
        }) else {
            return;
        };
        self.next = (ri + 1) % n.max(1);
        let backend = Arc::clone(&self.backend);
        let others_running: usize = (0..n)
            .filter(|&i| i != ri)
            .map(|i| self.residents[i].active.len())
            .sum();
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
        // While sequences wait for their next token, a prompt gets only a short chunk.
        let decoding = r.active.iter().filter(|s| s.pending.is_some()).count();
        let shared = decoding + others_running > 0;
        let mut room = r
            .prompt_pace
            .chunk(STEP_TOKENS.saturating_sub(decoding).max(1), shared);
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
                    model.resume(state, Arc::clone(&backend))
                })
                .collect();
            let tokens: Vec<&[u32]> = parts.iter().map(|(_, t)| t.as_slice()).collect();
            let t = Instant::now();
            {
                let mut refs: Vec<&mut Session> = sessions.iter_mut().collect();
                result = Session::eval_together(&mut refs, &tokens, logits);
            }
            elapsed = t.elapsed();
            // Decode-only steps are slower per token than prompt chunks: they teach nothing.
            if parts.iter().any(|&(i, _)| r.active[i].pending.is_none()) {
                r.prompt_pace
                    .record(tokens.iter().map(|t| t.len()).sum(), elapsed);
            }
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
        // An embedding job's next chunk, kept short while streams wait for their next token.
        if !r.embeds.is_empty() {
            let shared = r.active.len() + others_running > 0;
            let model = Arc::clone(&r.model);
            if let Progress::Ended = r.embeds[0].step(&model, &backend, STEP_TOKENS, shared) {
                r.embeds.remove(0);
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
        if !r.in_use() {
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
        (Some(since), KeepAlive::For(d)) if !r.in_use() => Some(since + d),
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

/// Gives a prepared job a cache, the finished sequence sharing the longest prefix with its
/// prompt, else a fresh one, and makes it a running sequence.
fn start(
    r: &mut Resident,
    job: Job,
    slot: Slot,
    plan: Plan,
    parallel: usize,
    backend: &SharedBackend,
) -> Seq {
    let Plan {
        tokens,
        constraint,
        n_ctx,
        max_tokens,
        load_time,
    } = plan;
    // The cached sequence with the longest common prefix (of the same context size), taken
    // only when the prompt goes on with at least half of what it holds: a conversation's
    // next turn, or a long shared system prompt. One that shares just a head (the template's
    // first tokens) is another conversation, whose next turn would find its cache gone:
    // while there is room, this prompt gets a fresh cache instead.
    let best = r
        .cache
        .iter()
        .enumerate()
        .filter(|(_, c)| c.state.n_ctx() == n_ctx)
        .map(|(i, c)| (i, common_prefix(&c.tokens, &tokens)))
        .max_by_key(|&(i, n)| (n, i));
    let (mut state, mut kept) = match best {
        Some((i, n)) if n > 0 && 2 * n >= r.cache[i].tokens.len() => {
            let c = r.cache.remove(i);
            (c.state, c.tokens)
        }
        // No room: reuse the memory of the least recently used cache (whatever prefix it
        // shares with the prompt is still reused below).
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
            r.model.session(n_ctx, Arc::clone(backend)).into_state(),
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
    r.idle_since = None;
    Seq {
        job,
        _slot: slot,
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
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Why a model did not load, as an answer to every request that waited for it: a model
/// hearth cannot run is the client's choice (400, with the reason); a file that is not valid
/// GGUF is the server's trouble (500), and its details stay out, since they may quote the
/// file's bytes.
fn load_error(name: &str, e: Option<engine::EngineError>) -> ApiError {
    use engine::EngineError as E;
    let Some(e) = e else {
        return ApiError::internal(format!(
            "cannot load model {name:?}: the loader failed (internal error)"
        ));
    };
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

/// Memory the system could give us now (Linux: MemAvailable), if known.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
