//! The two dialects, and what they share: turning a checked request into a job and reading
//! its events back.

pub mod format;
pub mod llama;
pub mod manage;
pub mod ollama;
pub mod openai;
pub mod responses;
pub mod tools;

use crate::error::ApiError;
use crate::models::ModelRef;
use crate::params::SamplerRequest;
use crate::worker::{
    Api, Budget, CancelOnDrop, EmbedInput, Event, Input, Job, KeepAlive, ModelTask, PromptInfo,
    Summary, TokenLogprob,
};
use crate::AppState;
use engine::chat::reasoning::{OutputParser, ThinkSplitter};
use engine::chat::tools::ToolCallParser;
use engine::constraint::Grammar;
use engine::sampler::SamplerConfig;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// A checked generation request.
pub struct GenSpec {
    pub model: String,
    pub input: Input,
    /// None: the preset's `num_predict`, else the server default, shortened to fit.
    pub budget: Option<Budget>,
    pub budget_param: &'static str,
    pub sampler: SamplerRequest,
    pub stop: Vec<String>,
    pub n_ctx: Option<usize>,
    /// Prepend the preset's system prompt when the chat has none.
    pub use_preset_system: bool,
    /// Report log-probabilities with this many alternatives.
    pub logprobs: Option<usize>,
    /// A grammar the output must follow (JSON mode, a JSON schema, …).
    pub grammar: Option<Grammar>,
    /// The request field that set `grammar` (`response_format`, `format`).
    pub grammar_param: &'static str,
    pub keep_alive: Option<KeepAlive>,
    pub api: Api,
    /// Tools shown to the model (OpenAI's shape); None: none.
    pub tools: Option<Vec<serde_json::Value>>,
}

/// A job that has started (its prompt evaluated): events follow on `rx`. Dropping it cancels
/// the job.
pub struct Running {
    pub model: ModelRef,
    /// What the chat template said about the answer (chat jobs only).
    pub prompt: Option<PromptInfo>,
    pub rx: mpsc::UnboundedReceiver<Event>,
    pub _cancel: CancelOnDrop,
}

/// Resolves the model, queues the job and waits until its prompt is evaluated, so that any
/// error (bad model, prompt too long, full queue) is still an HTTP status.
pub async fn start(state: &AppState, mut spec: GenSpec) -> Result<Running, ApiError> {
    let s = &state.inner;
    let model = resolve(state, &spec.model).await?;
    let n_ctx = spec.n_ctx.unwrap_or(s.config.n_ctx);
    let sampler = sampler(&model.params, &spec.sampler, n_ctx, spec.api)?;
    if spec.use_preset_system {
        if let (Input::Chat(msgs), Some(system)) = (&mut spec.input, &model.system) {
            if !msgs.iter().any(|m| m.role == "system") {
                msgs.insert(0, engine::chat::Message::new("system", system));
            }
        }
    }
    let budget = spec.budget.unwrap_or(Budget::Default(
        model
            .params
            .num_predict
            .map_or(crate::worker::DEFAULT_MAX_TOKENS, |n| n as usize),
    ));
    let (mut rx, guard) = submit(state, |events, cancel| Job {
        model: model.clone(),
        input: spec.input,
        budget,
        budget_param: spec.budget_param,
        sampler,
        stop: spec.stop,
        n_ctx,
        logprobs: spec.logprobs,
        grammar: spec.grammar,
        grammar_param: spec.grammar_param,
        keep_alive: spec.keep_alive,
        api: spec.api,
        tools: spec.tools,
        events,
        cancel,
        queued: Instant::now(),
    })?;
    let mut prompt = None;
    loop {
        match rx.recv().await {
            Some(Event::Prompt(info)) => prompt = Some(info),
            Some(Event::Started) => {
                return Ok(Running {
                    model,
                    prompt,
                    rx,
                    _cancel: guard,
                })
            }
            Some(Event::Error(e)) => return Err(e),
            _ => return Err(ended_early()),
        }
    }
}

/// Starts `specs` together (n choices of one request): each is queued at once, so they
/// generate side by side; the first error fails them all.
pub async fn start_all(state: &AppState, specs: Vec<GenSpec>) -> Result<Vec<Running>, ApiError> {
    futures_util::future::try_join_all(specs.into_iter().map(|s| start(state, s))).await
}

/// How a chat answer is read: `<think>` blocks split off when the template has them and
/// `reasoning` asks for it, tool calls parsed when `tools` were shown. `seed` makes call ids.
pub fn output_parser(run: &Running, tools: bool, reasoning: bool, seed: u64) -> OutputParser {
    let info = run.prompt.unwrap_or_default();
    let think = (reasoning && (info.thinks || info.thinking_open))
        .then(|| ThinkSplitter::new(info.thinking_open));
    let calls = info
        .tool_format
        .filter(|_| tools)
        .map(|f| ToolCallParser::new(f, seed));
    OutputParser::new(think, calls)
}

/// The tool-call format of a model's own chat template (None without one), read from its
/// file: for the grammar that forces a call, which must be known before the job starts.
pub async fn tool_format(
    state: &AppState,
    name: &str,
) -> Result<Option<engine::chat::tools::ToolFormat>, ApiError> {
    let model = resolve(state, name).await?;
    tokio::task::spawn_blocking(move || {
        let file = gguf::GgufFile::open(&model.path)
            .map_err(|e| crate::models::unreadable_model(&model.name, &e))?;
        Ok(engine::chat::model_template(&file).and_then(engine::chat::tools::ToolFormat::detect))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

/// The model a request names (a store lookup: off the async threads).
async fn resolve(state: &AppState, name: &str) -> Result<ModelRef, ApiError> {
    let inner = Arc::clone(&state.inner);
    let name = name.to_string();
    tokio::task::spawn_blocking(move || inner.models.resolve(&name))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
}

/// Queues the job `make` builds around a fresh event channel and cancel flag; returns the
/// events and the guard whose drop cancels the job.
fn submit(
    state: &AppState,
    make: impl FnOnce(mpsc::UnboundedSender<Event>, Arc<AtomicBool>) -> Job,
) -> Result<(mpsc::UnboundedReceiver<Event>, CancelOnDrop), ApiError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(Arc::clone(&cancel));
    state.inner.worker.submit(make(tx, cancel))?;
    Ok((rx, guard))
}

fn ended_early() -> ApiError {
    ApiError::internal("the inference worker ended the request early")
}

/// A whole answer.
pub struct Collected {
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub summary: Summary,
}

/// Reads every event: the whole text, the log-probabilities and the summary.
pub async fn collect(mut run: Running) -> Result<Collected, ApiError> {
    let mut text = String::new();
    let mut logprobs = Vec::new();
    while let Some(ev) = run.rx.recv().await {
        match ev {
            Event::Piece(p) => text.push_str(&p),
            Event::Logprobs(l) => logprobs.extend(l),
            Event::Done(summary) => {
                return Ok(Collected {
                    text,
                    logprobs,
                    summary,
                })
            }
            Event::Error(e) => return Err(e),
            Event::Prompt(_) | Event::Started | Event::Embeddings { .. } => {}
        }
    }
    Err(ended_early())
}

/// Embeddings of `texts` with `model`.
pub async fn embed(
    state: &AppState,
    model: String,
    texts: Vec<String>,
    truncate: bool,
    keep_alive: Option<KeepAlive>,
    api: Api,
) -> Result<(Vec<Vec<f32>>, Summary), ApiError> {
    let inputs = texts.into_iter().map(EmbedInput::Text).collect();
    embed_inputs(state, model, inputs, truncate, keep_alive, api).await
}

/// Embeddings of `inputs` (texts or token ids) with `model`.
pub async fn embed_inputs(
    state: &AppState,
    model: String,
    inputs: Vec<EmbedInput>,
    truncate: bool,
    keep_alive: Option<KeepAlive>,
    api: Api,
) -> Result<(Vec<Vec<f32>>, Summary), ApiError> {
    let model = resolve(state, &model).await?;
    let n_ctx = state.inner.config.n_ctx;
    let (mut rx, _guard) = submit(state, |events, cancel| {
        work_job(
            model,
            Input::Embed { inputs, truncate },
            n_ctx,
            keep_alive,
            api,
            events,
            cancel,
        )
    })?;
    match rx.recv().await {
        Some(Event::Embeddings { vectors, summary }) => Ok((vectors, summary)),
        Some(Event::Error(e)) => Err(e),
        _ => Err(ended_early()),
    }
}

/// A job that generates nothing (embeddings, a task on the model): no sampler, budget,
/// grammar or tools.
fn work_job(
    model: ModelRef,
    input: Input,
    n_ctx: usize,
    keep_alive: Option<KeepAlive>,
    api: Api,
    events: mpsc::UnboundedSender<Event>,
    cancel: Arc<AtomicBool>,
) -> Job {
    Job {
        model,
        input,
        budget: Budget::Default(0),
        budget_param: "",
        sampler: SamplerConfig::default(),
        stop: Vec::new(),
        n_ctx,
        logprobs: None,
        grammar: None,
        grammar_param: "",
        keep_alive,
        api,
        tools: None,
        events,
        cancel,
        queued: Instant::now(),
    }
}

/// Runs `f` on the worker thread with `model` loaded (as a generation would load it), so
/// that work on its tokenizer stays off the async threads and sees the model's own vocabulary.
pub async fn on_model<T: Send + 'static>(
    state: &AppState,
    model: &str,
    f: impl FnOnce(&engine::Model) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let model = resolve(state, model).await?;
    let n_ctx = state.inner.config.n_ctx;
    let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
    let task = ModelTask::new(move |m| {
        let _ = reply_tx.send(f(m));
    });
    let (mut rx, _guard) = submit(state, |events, cancel| {
        work_job(
            model,
            Input::Task(task),
            n_ctx,
            None,
            Api::OpenAi,
            events,
            cancel,
        )
    })?;
    match reply_rx.await {
        Ok(r) => r,
        // Dropped unrun: the model did not load (the events say why).
        Err(_) => match rx.recv().await {
            Some(Event::Error(e)) => Err(e),
            _ => Err(ended_early()),
        },
    }
}

/// The sampler: the request's settings over the preset's over the API's defaults. Ollama's
/// API penalizes repeats by default (1.1 over the last 64 tokens, as Ollama does); OpenAI's
/// has no such setting, so its requests get none unless they ask (`repeat_penalty`).
fn sampler(
    p: &store::Params,
    r: &SamplerRequest,
    n_ctx: usize,
    api: Api,
) -> Result<SamplerConfig, ApiError> {
    let d = match api {
        Api::Ollama => SamplerConfig::chat(),
        Api::OpenAi => SamplerConfig::default(),
    };
    let f = |req: Option<f32>, preset: Option<f64>, default: f32| {
        req.or(preset.map(|x| x as f32)).unwrap_or(default)
    };
    let config = SamplerConfig {
        temperature: f(r.temperature, p.temperature, d.temperature),
        top_k: r.top_k.or(p.top_k.map(|x| x as usize)).unwrap_or(d.top_k),
        top_p: f(r.top_p, p.top_p, d.top_p),
        min_p: f(r.min_p, p.min_p, d.min_p),
        typical_p: f(r.typical_p, p.typical_p, d.typical_p),
        repeat_penalty: f(r.repeat_penalty, p.repeat_penalty, d.repeat_penalty),
        presence_penalty: f(r.presence_penalty, p.presence_penalty, d.presence_penalty),
        frequency_penalty: f(
            r.frequency_penalty,
            p.frequency_penalty,
            d.frequency_penalty,
        ),
        penalty_last_n: match r.repeat_last_n {
            Some(-1) => n_ctx,
            Some(n) => n as usize,
            None => p.repeat_last_n.map_or(d.penalty_last_n, |x| x as usize),
        },
        logit_bias: r.logit_bias.clone(),
        seed: r.seed.or(p.seed).unwrap_or_else(random_seed),
    };
    config
        .validate()
        .map_err(|e| ApiError::invalid(e.option, e.to_string()))?;
    Ok(config)
}

pub(crate) use engine::sampler::random_seed;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A short unique id for responses.
pub fn request_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", random_seed())
}

/// Streams a running job: `format` turns each event into the chunks to send (already
/// serialized). A client that goes away closes the channel, which ends the task and with it
/// the job.
pub fn relay<F>(run: Running, mut format: F) -> impl futures_util::Stream<Item = String>
where
    F: FnMut(&Event) -> Vec<String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<String>(16);
    tokio::spawn(async move {
        // The whole job (its cancel guard included) lives as long as this task.
        let mut run = run;
        loop {
            let ev = tokio::select! {
                ev = run.rx.recv() => ev,
                _ = tx.closed() => return,
            };
            let ev = ev.unwrap_or_else(|| Event::Error(ended_early()));
            let last = matches!(ev, Event::Done(_) | Event::Error(_));
            for out in format(&ev) {
                if tx.send(out).await.is_err() {
                    return;
                }
            }
            if last {
                return;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// What [`relay_many`] hands its formatter.
pub enum Relayed<'a> {
    /// An event of choice `index`.
    Event(usize, &'a Event),
    /// Every choice has finished.
    End,
}

/// [`relay`] for several jobs at once (the n choices of one request): events come tagged
/// with their job's index as they arrive; `End` follows the last `Done`. An error ends the
/// stream (and with it every job).
pub fn relay_many<F>(runs: Vec<Running>, mut format: F) -> impl futures_util::Stream<Item = String>
where
    F: FnMut(Relayed<'_>) -> Vec<String> + Send + 'static,
{
    use futures_util::StreamExt;
    let (tx, rx) = mpsc::channel::<String>(16);
    tokio::spawn(async move {
        let mut open = runs.len();
        let mut guards = Vec::new();
        let streams = runs.into_iter().enumerate().map(|(i, run)| {
            let Running { rx, _cancel, .. } = run;
            guards.push(_cancel);
            // Each job's events up to and including its last.
            futures_util::stream::unfold(Some(rx), |rx| async move {
                let mut rx = rx?;
                let ev = rx
                    .recv()
                    .await
                    .unwrap_or_else(|| Event::Error(ended_early()));
                let last = matches!(ev, Event::Done(_) | Event::Error(_));
                Some((ev, (!last).then_some(rx)))
            })
            .map(move |ev| (i, ev))
            .boxed()
        });
        let mut all = futures_util::stream::select_all(streams);
        while open > 0 {
            let next = tokio::select! {
                next = all.next() => next,
                _ = tx.closed() => return,
            };
            let Some((i, ev)) = next else { return };
            let error = matches!(ev, Event::Error(_));
            if matches!(ev, Event::Done(_)) {
                open -= 1;
            }
            for out in format(Relayed::Event(i, &ev)) {
                if tx.send(out).await.is_err() {
                    return;
                }
            }
            if error {
                return;
            }
        }
        for out in format(Relayed::End) {
            if tx.send(out).await.is_err() {
                return;
            }
        }
        drop(guards);
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_penalizes_repeats_by_default_and_openai_does_not() {
        let none = SamplerRequest::default();
        let p = store::Params::default();
        let ollama = sampler(&p, &none, 4096, Api::Ollama).unwrap();
        assert_eq!((ollama.repeat_penalty, ollama.penalty_last_n), (1.1, 64));
        let openai = sampler(&p, &none, 4096, Api::OpenAi).unwrap();
        assert_eq!(openai.repeat_penalty, 1.0);
        // A preset's value and a request's win over the API's default.
        let preset = store::Params {
            repeat_penalty: Some(1.3),
            ..store::Params::default()
        };
        assert_eq!(
            sampler(&preset, &none, 4096, Api::Ollama)
                .unwrap()
                .repeat_penalty,
            1.3
        );
        let asked = SamplerRequest {
            repeat_penalty: Some(1.0),
            ..SamplerRequest::default()
        };
        assert_eq!(
            sampler(&preset, &asked, 4096, Api::Ollama)
                .unwrap()
                .repeat_penalty,
            1.0
        );
    }

    #[test]
    fn a_request_without_seed_is_random_and_one_with_seed_is_not() {
        let p = store::Params::default();
        let none = SamplerRequest::default();
        for api in [Api::Ollama, Api::OpenAi] {
            let a = sampler(&p, &none, 4096, api).unwrap().seed;
            let b = sampler(&p, &none, 4096, api).unwrap().seed;
            assert_ne!(a, b);
        }
        let seeded = SamplerRequest {
            seed: Some(7),
            ..SamplerRequest::default()
        };
        assert_eq!(sampler(&p, &seeded, 4096, Api::Ollama).unwrap().seed, 7);
    }
}
