//! Ollama-compatible endpoints: `/api/generate`, `/api/chat` (NDJSON streams by default),
//! `/api/embed`, `/api/embeddings`, `/api/tags`, `/api/ps`, `/api/version`.

use super::tools::{self as tool_api, Parsed};
use super::{collect, output_parser, relay, start, Collected, GenSpec};
use crate::error::{ApiError, OllamaError};
use crate::params::{self, float, int, parse_body, seed, SamplerRequest, Stop};
use crate::worker::{Api, Budget, Event, Input, KeepAlive, Summary};
use crate::AppState;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use engine::chat::tools::ParseEvent;
use engine::chat::Message;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Number, Value};
use std::convert::Infallible;
use std::time::Duration;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/generate", post(generate))
        .route("/api/chat", post(chat))
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/embed", post(embed))
        .route("/api/embeddings", post(embeddings_legacy))
        .route("/api/version", get(version))
}

/// Longest keep_alive accepted (longer: use -1 to keep a model loaded).
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Ollama's `keep_alive`: seconds as a number, or a duration string ("5m", "1h30m", "90s",
/// "-1"); negative keeps the model loaded, 0 unloads it after the request.
fn keep_alive(v: &Option<Value>) -> Result<Option<KeepAlive>, ApiError> {
    let bad = |why: String| ApiError::invalid("keep_alive", format!("keep_alive {why}"));
    let secs = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| bad(format!("must be a number of seconds (got {n})")))?,
        Some(Value::String(s)) => parse_duration(s.trim()).ok_or_else(|| {
            bad(format!(
                "must be a duration such as \"5m\", \"1h\", \"30s\", \"0\" or \"-1\" (got {s:?})"
            ))
        })?,
        Some(other) => return Err(bad(format!("must be a number or a string (got {other})"))),
    };
    if secs < 0.0 {
        return Ok(Some(KeepAlive::Forever));
    }
    if secs > MAX_KEEP_ALIVE.as_secs_f64() {
        return Err(bad(format!(
            "must be at most {} seconds, or -1 to keep the model loaded (got {secs})",
            MAX_KEEP_ALIVE.as_secs()
        )));
    }
    Ok(Some(KeepAlive::For(Duration::from_secs_f64(secs))))
}

/// Seconds of a Go-style duration ("1h30m", "250ms", "-1m") or a bare number of seconds.
fn parse_duration(s: &str) -> Option<f64> {
    if let Ok(x) = s.parse::<f64>() {
        return x.is_finite().then_some(x);
    }
    let (sign, mut rest) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += value * scale;
    }
    total.is_finite().then_some(sign * total)
}

#[derive(Debug, Default, Deserialize)]
struct Options {
    temperature: Option<Number>,
    top_k: Option<Number>,
    top_p: Option<Number>,
    min_p: Option<Number>,
    typical_p: Option<Number>,
    repeat_penalty: Option<Number>,
    repeat_last_n: Option<Number>,
    presence_penalty: Option<Number>,
    frequency_penalty: Option<Number>,
    seed: Option<Number>,
    num_predict: Option<Number>,
    num_ctx: Option<Number>,
    stop: Option<Stop>,
}

#[derive(Debug, Deserialize)]
struct GenerateRequest {
    model: String,
    #[serde(default)]
    prompt: String,
    system: Option<String>,
    suffix: Option<String>,
    template: Option<String>,
    context: Option<Vec<Value>>,
    images: Option<Vec<Value>>,
    #[serde(default)]
    raw: bool,
    stream: Option<bool>,
    format: Option<Value>,
    options: Option<Options>,
    keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    stream: Option<bool>,
    format: Option<Value>,
    tools: Option<Value>,
    /// Thinking models: true shows the reasoning in `message.thinking`, false hides it;
    /// unset leaves the answer as the model wrote it.
    think: Option<Value>,
    options: Option<Options>,
    keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: String,
    images: Option<Vec<Value>>,
    /// An assistant turn's calls: `[{"function": {"name", "arguments": {..}}}]`.
    tool_calls: Option<Value>,
    /// A `tool` turn: the function that answered.
    tool_name: Option<String>,
    tool_call_id: Option<String>,
}

struct Checked {
    sampler: SamplerRequest,
    budget: Option<Budget>,
    stop: Vec<String>,
    n_ctx: Option<usize>,
}

impl Checked {
    /// The job for `input` with these settings.
    fn spec(
        self,
        model: String,
        input: Input,
        use_preset_system: bool,
        keep_alive: Option<KeepAlive>,
    ) -> GenSpec {
        GenSpec {
            model,
            input,
            budget: self.budget,
            budget_param: "options.num_predict",
            sampler: self.sampler,
            stop: self.stop,
            n_ctx: self.n_ctx,
            use_preset_system,
            logprobs: None,
            grammar: None,
            grammar_param: "",
            keep_alive,
            api: Api::Ollama,
            tools: None,
        }
    }
}

/// What a request with nothing to generate asks: load the model, or with `keep_alive: 0`
/// unload it.
fn load_or_unload(keep_alive: Option<KeepAlive>) -> Input {
    if keep_alive == Some(KeepAlive::For(Duration::ZERO)) {
        Input::Unload
    } else {
        Input::Load
    }
}

fn check_options(o: Option<Options>, server_ctx: usize) -> Result<Checked, ApiError> {
    const MAX: i64 = params::MAX_TOKENS_LIMIT;
    let o = o.unwrap_or_default();
    let sampler = SamplerRequest {
        temperature: float("options.temperature", o.temperature.as_ref(), 0.0, 100.0)?,
        top_k: int("options.top_k", o.top_k.as_ref(), 0, MAX)?.map(|n| n as usize),
        top_p: float("options.top_p", o.top_p.as_ref(), 0.0, 1.0)?,
        min_p: float("options.min_p", o.min_p.as_ref(), 0.0, 1.0)?,
        typical_p: float("options.typical_p", o.typical_p.as_ref(), 0.0, 1.0)?,
        repeat_penalty: float(
            "options.repeat_penalty",
            o.repeat_penalty.as_ref(),
            0.01,
            100.0,
        )?,
        repeat_last_n: int("options.repeat_last_n", o.repeat_last_n.as_ref(), -1, MAX)?,
        presence_penalty: float(
            "options.presence_penalty",
            o.presence_penalty.as_ref(),
            -2.0,
            2.0,
        )?,
        frequency_penalty: float(
            "options.frequency_penalty",
            o.frequency_penalty.as_ref(),
            -2.0,
            2.0,
        )?,
        seed: seed("options.seed", o.seed.as_ref())?,
        logit_bias: Vec::new(),
    };
    // -1 and -2 (Ollama): until the context is full.
    let budget = match int("options.num_predict", o.num_predict.as_ref(), -2, MAX)? {
        None => None,
        Some(-1 | -2) => Some(Budget::Fill),
        Some(0) => {
            return Err(ApiError::invalid(
                "options.num_predict",
                "options.num_predict must be -1 (no limit) or between 1 and 1048576 (got 0)",
            ))
        }
        Some(n) => Some(Budget::Exactly(n as usize)),
    };
    let n_ctx =
        int("options.num_ctx", o.num_ctx.as_ref(), 16, server_ctx as i64)?.map(|n| n as usize);
    Ok(Checked {
        sampler,
        budget,
        stop: params::stop_list("options.stop", o.stop)?,
        n_ctx,
    })
}

fn none_or_empty(field: &str, v: &Option<Vec<Value>>, what: &str) -> Result<(), ApiError> {
    if v.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::invalid(
            field,
            format!("{what} are not supported yet"),
        ));
    }
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The last chunk's fields.
fn final_fields(v: &mut Value, s: &Summary) {
    v["done"] = json!(true);
    v["done_reason"] = json!(s.finish.as_str());
    v["total_duration"] = json!(nanos(s.total_time));
    v["load_duration"] = json!(nanos(s.load_time));
    v["prompt_eval_count"] = json!(s.prompt_tokens);
    v["prompt_eval_duration"] = json!(nanos(s.prompt_time));
    v["eval_count"] = json!(s.completion_tokens);
    v["eval_duration"] = json!(nanos(s.generation_time));
    // hearth's addition: from the request's arrival to its first token (queue and load
    // included), in nanoseconds like the other durations.
    if let Some(t) = s.first_token {
        v["first_token_duration"] = json!(nanos(t));
    }
}

fn ndjson(stream: impl futures_util::Stream<Item = String> + Send + 'static) -> Response {
    let body = Body::from_stream(stream.map(|mut line| {
        line.push('\n');
        Ok::<_, Infallible>(Bytes::from(line))
    }));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// Runs a job and answers it, streamed or whole. `piece` makes a chunk of text.
async fn answer(
    state: &AppState,
    spec: GenSpec,
    stream: bool,
    piece: fn(&str, &str) -> Value,
) -> Result<Response, OllamaError> {
    let model = spec.model.clone();
    let run = start(state, spec).await?;
    if !stream {
        let Collected { text, summary, .. } = collect(run).await?;
        let mut v = piece(&model, &text);
        final_fields(&mut v, &summary);
        return Ok(Json(v).into_response());
    }
    Ok(ndjson(relay(run, move |ev| match ev {
        Event::Piece(p) => vec![piece(&model, p).to_string()],
        Event::Done(s) => {
            let mut v = piece(&model, "");
            final_fields(&mut v, s);
            vec![v.to_string()]
        }
        Event::Error(e) => vec![json!({"error": e.message}).to_string()],
        Event::Prompt(_) | Event::Started | Event::Logprobs(_) | Event::Embeddings { .. } => {
            Vec::new()
        }
    })))
}

fn generate_chunk(model: &str, text: &str) -> Value {
    json!({"model": model, "created_at": now(), "response": text, "done": false})
}

fn chat_chunk(model: &str, text: &str) -> Value {
    json!({
        "model": model,
        "created_at": now(),
        "message": {"role": "assistant", "content": text},
        "done": false,
    })
}

async fn generate(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let req: GenerateRequest = parse_body(body)?;
    let checked = check_options(req.options, state.inner.config.n_ctx)?;
    let keep = keep_alive(&req.keep_alive)?;
    let grammar = super::format::ollama_format(req.format.as_ref())?;
    none_or_empty("images", &req.images, "images")?;
    none_or_empty("context", &req.context, "context token lists")?;
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "suffix is not supported yet").into());
    }
    if req.template.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("template", "custom templates are not supported yet").into());
    }
    let (input, use_preset_system) = if req.prompt.is_empty() {
        (load_or_unload(keep), false)
    } else if req.raw {
        (Input::Raw(req.prompt), false)
    } else {
        let mut msgs = Vec::new();
        if let Some(s) = &req.system {
            msgs.push(Message::new("system", s));
        }
        msgs.push(Message::new("user", &req.prompt));
        (Input::Chat(msgs), req.system.is_none())
    };
    let mut spec = checked.spec(req.model, input, use_preset_system, keep);
    spec.grammar = grammar;
    spec.grammar_param = "format";
    answer(&state, spec, req.stream.unwrap_or(true), generate_chunk).await
}

/// Ollama's `think`: true or false, or an effort ("high", "medium", "low"), which counts as
/// true.
fn check_think(v: &Option<Value>) -> Result<Option<bool>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if matches!(s.as_str(), "high" | "medium" | "low") => Ok(Some(true)),
        Some(other) => Err(ApiError::invalid(
            "think",
            format!("think must be true, false, \"high\", \"medium\" or \"low\" (got {other})"),
        )),
    }
}

/// The calls of an assistant message: `[{"function": {"name", "arguments": {..}}}]`.
fn ollama_calls(v: &Value, at: &str) -> Result<Vec<engine::chat::ToolCall>, ApiError> {
    let Some(list) = v.as_array() else {
        return Err(ApiError::invalid(at, format!("{at} must be a list")));
    };
    list.iter()
        .enumerate()
        .map(|(j, c)| {
            let at = format!("{at}[{j}]");
            let f = c.get("function").filter(|f| f.is_object()).ok_or_else(|| {
                ApiError::invalid(
                    &format!("{at}.function"),
                    format!("{at}.function must be an object"),
                )
            })?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid(
                        &format!("{at}.function.name"),
                        format!("{at}.function.name must be a string"),
                    )
                })?;
            let arguments =
                tool_api::arguments(f.get("arguments"), &format!("{at}.function.arguments"))?;
            let id = c
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Ok(engine::chat::ToolCall {
                id,
                name: name.to_string(),
                arguments,
            })
        })
        .collect()
}

/// A call in Ollama's shape (arguments an object).
fn ollama_call(index: usize, c: &tool_api::Call) -> Value {
    json!({
        "id": c.id,
        "function": {"index": index, "name": c.name, "arguments": tool_api::args_value(&c.arguments)},
    })
}

/// The message of a chat chunk: content, `thinking` when shown, `tool_calls` when any.
fn chat_message(content: &str, thinking: &str, calls: &[(usize, &tool_api::Call)]) -> Value {
    let mut m = json!({"role": "assistant", "content": content});
    if !thinking.is_empty() {
        m["thinking"] = json!(thinking);
    }
    if !calls.is_empty() {
        m["tool_calls"] = calls.iter().map(|(i, c)| ollama_call(*i, c)).collect();
    }
    m
}

async fn chat(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let req: ChatRequest = parse_body(body)?;
    let checked = check_options(req.options, state.inner.config.n_ctx)?;
    let keep = keep_alive(&req.keep_alive)?;
    let grammar = super::format::ollama_format(req.format.as_ref())?;
    let tools = tool_api::check_tools("tools", req.tools.as_ref(), false)?;
    let think = check_think(&req.think)?;
    let mut msgs: Vec<Message> = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        none_or_empty(&format!("messages[{i}].images"), &m.images, "images")?;
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
            return Err(ApiError::invalid(
                &format!("messages[{i}].role"),
                format!("unknown role {:?}", m.role),
            )
            .into());
        }
        let mut msg = Message {
            role: m.role,
            content: m.content,
            ..Message::default()
        };
        if let Some(calls) = m.tool_calls.as_ref().filter(|v| !v.is_null()) {
            if msg.role != "assistant" {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].tool_calls"),
                    "only assistant messages carry tool_calls",
                )
                .into());
            }
            msg.tool_calls = ollama_calls(calls, &format!("messages[{i}].tool_calls"))?;
        }
        if msg.role == "tool" {
            msg.name = m.tool_name;
            msg.tool_call_id = m.tool_call_id.or_else(|| {
                // The latest call to that function, for templates that show ids.
                let name = msg.name.as_deref()?;
                msgs.iter()
                    .rev()
                    .flat_map(|p| p.tool_calls.iter().rev())
                    .find(|c| c.name == name && !c.id.is_empty())
                    .map(|c| c.id.clone())
            });
        }
        msgs.push(msg);
    }
    let use_tools = !tools.is_empty();
    let input = if msgs.is_empty() {
        load_or_unload(keep)
    } else {
        Input::Chat(msgs)
    };
    let chatting = matches!(input, Input::Chat(_));
    let mut spec = checked.spec(req.model, input, true, keep);
    spec.tools = (use_tools && chatting).then_some(tools);
    spec.grammar = grammar;
    spec.grammar_param = "format";
    let stream = req.stream.unwrap_or(true);
    let model = spec.model.clone();
    let run = start(&state, spec).await?;
    let mut parser = output_parser(&run, use_tools, think.is_some(), super::random_seed());
    let show_thinking = think == Some(true);
    if !stream {
        let Collected { text, summary, .. } = collect(run).await?;
        let parsed = Parsed::of(&text, &mut parser);
        let thinking = if show_thinking {
            parsed.reasoning.as_str()
        } else {
            ""
        };
        let calls: Vec<_> = parsed.calls.iter().enumerate().collect();
        let mut v = json!({
            "model": model,
            "created_at": now(),
            "message": chat_message(&parsed.content, thinking, &calls),
            "done": false,
        });
        final_fields(&mut v, &summary);
        return Ok(Json(v).into_response());
    }
    // Calls are sent whole, each in its own chunk, as Ollama does.
    let mut open: Vec<tool_api::Call> = Vec::new();
    let model_name = model.clone();
    let chunk = move |message: Value| json!({"model": model, "created_at": now(), "message": message, "done": false});
    let lines = move |events: Vec<ParseEvent>, open: &mut Vec<tool_api::Call>| {
        let mut out = Vec::new();
        for e in events {
            match e {
                ParseEvent::Content(t) => out.push(chunk(chat_message(&t, "", &[])).to_string()),
                ParseEvent::Reasoning(t) if show_thinking => {
                    out.push(chunk(chat_message("", &t, &[])).to_string())
                }
                ParseEvent::Reasoning(_) => {}
                ParseEvent::ToolCallStart { index, id, name } => {
                    if index >= open.len() {
                        open.resize_with(index + 1, tool_api::Call::default);
                    }
                    open[index] = tool_api::Call {
                        id,
                        name,
                        arguments: String::new(),
                    };
                }
                ParseEvent::ToolCallArgs { index, delta } => {
                    if let Some(c) = open.get_mut(index) {
                        c.arguments.push_str(&delta);
                        let call = c.clone();
                        out.push(chunk(chat_message("", "", &[(index, &call)])).to_string());
                    }
                }
            }
        }
        out
    };
    Ok(ndjson(relay(run, move |ev| match ev {
        Event::Piece(p) => lines(parser.push(p), &mut open),
        Event::Done(s) => {
            let mut out = lines(parser.finish(), &mut open);
            let mut v = chat_chunk(&model_name, "");
            final_fields(&mut v, s);
            out.push(v.to_string());
            out
        }
        Event::Error(e) => vec![json!({"error": e.message}).to_string()],
        Event::Prompt(_) | Event::Started | Event::Logprobs(_) | Event::Embeddings { .. } => {
            Vec::new()
        }
    })))
}

async fn tags(State(state): State<AppState>) -> Result<Response, OllamaError> {
    let inner = std::sync::Arc::clone(&state.inner);
    let models = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, ApiError> {
        let list = inner.models.list()?;
        Ok(list
            .iter()
            .map(|m| {
                // Details from the file's header (empty when it cannot be read).
                let info = inner
                    .models
                    .resolve(&m.name)
                    .ok()
                    .and_then(|r| gguf::GgufFile::open(&r.path).ok())
                    .map(|f| store::ModelInfo::of(&f));
                let family = info.as_ref().and_then(|i| i.architecture.clone());
                json!({
                    "name": m.name,
                    "model": m.name,
                    "modified_at": m.modified,
                    "size": m.size,
                    "digest": m.digest.strip_prefix("sha256:").unwrap_or(&m.digest),
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": family.clone().unwrap_or_default(),
                        "families": family.map(|f| vec![f]),
                        "parameter_size": info.as_ref().map_or(String::new(), |i| {
                            i.size_label.clone().unwrap_or_else(|| i.parameters_human())
                        }),
                        "quantization_level": info
                            .as_ref()
                            .and_then(|i| i.quantization.clone())
                            .unwrap_or_default(),
                        // hearth's own: `base` models continue text and refuse chat (null
                        // when the file cannot be read).
                        "kind": info
                            .as_ref()
                            .map(|i| super::manage::model_kind(i, Some(&m.digest))),
                    },
                })
            })
            .collect())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    // Models on other machines: in place of a local model of the same name (requests for
    // that name go to the upstream), marked `remote` with their host.
    let upstreams = &state.inner.config.upstreams;
    let mut models = models;
    models.retain(|m| {
        m["name"]
            .as_str()
            .is_none_or(|n| upstreams.find(n).is_none())
    });
    for u in upstreams.iter() {
        models.push(json!({
            "name": u.name,
            "model": u.name,
            "modified_at": "",
            "size": 0,
            "digest": "",
            "details": {
                "parent_model": "",
                "format": "remote",
                "family": "",
                "families": null,
                "parameter_size": "",
                "quantization_level": "",
                "kind": "remote",
                "remote": u.host,
            },
        }));
    }
    Ok(Json(json!({ "models": models })).into_response())
}

/// The models in memory, Ollama's shape plus `context_length`.
async fn ps(State(state): State<AppState>) -> Result<Response, OllamaError> {
    let loaded = state.inner.worker.status().models;
    let inner = std::sync::Arc::clone(&state.inner);
    // Digests come from the store's list (a model given by path has none).
    let list = tokio::task::spawn_blocking(move || inner.models.list())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .unwrap_or_default();
    let models: Vec<Value> = loaded
        .iter()
        .map(|m| {
            let digest = list.iter().find(|e| e.name == m.name).map_or("", |e| {
                e.digest.strip_prefix("sha256:").unwrap_or(&e.digest)
            });
            // Far in the future for a model kept loaded, as Ollama reports it.
            let expires = m.expires_at.map_or_else(
                || "2318-01-01T00:00:00Z".to_string(),
                |t| {
                    chrono::DateTime::<chrono::Utc>::from(t)
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                },
            );
            json!({
                "name": m.name,
                "model": m.name,
                "size": m.weight_bytes + m.kv_bytes,
                "digest": digest,
                "details": {"format": "gguf"},
                "expires_at": expires,
                "size_vram": 0,
                "context_length": m.n_ctx,
                "running_requests": m.active,
                "load_duration": nanos(m.load_time),
            })
        })
        .collect();
    Ok(Json(json!({ "models": models })).into_response())
}

#[derive(Debug, Deserialize)]
struct EmbedRequest {
    model: String,
    input: EmbedInput,
    truncate: Option<bool>,
    options: Option<Options>,
    keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

async fn embed(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let req: EmbedRequest = parse_body(body)?;
    check_options(req.options, state.inner.config.n_ctx)?;
    let keep = keep_alive(&req.keep_alive)?;
    let texts = match req.input {
        EmbedInput::One(t) => vec![t],
        EmbedInput::Many(v) => v,
    };
    let max = super::openai::MAX_EMBED_INPUTS;
    if texts.is_empty() || texts.len() > max {
        return Err(
            ApiError::invalid("input", format!("input must hold 1 to {max} strings")).into(),
        );
    }
    let (vectors, s) = super::embed(
        &state,
        req.model.clone(),
        texts,
        req.truncate.unwrap_or(true),
        keep,
        Api::Ollama,
    )
    .await?;
    Ok(Json(json!({
        "model": req.model,
        "embeddings": vectors,
        "total_duration": nanos(s.total_time),
        "load_duration": nanos(s.load_time),
        "prompt_eval_count": s.prompt_tokens,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct LegacyEmbedRequest {
    model: String,
    prompt: String,
    options: Option<Options>,
    keep_alive: Option<Value>,
}

/// The older single-text endpoint (`{"embedding": [...]}`).
async fn embeddings_legacy(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let req: LegacyEmbedRequest = parse_body(body)?;
    check_options(req.options, state.inner.config.n_ctx)?;
    let keep = keep_alive(&req.keep_alive)?;
    let (mut vectors, _) =
        super::embed(&state, req.model, vec![req.prompt], true, keep, Api::Ollama).await?;
    Ok(Json(json!({ "embedding": vectors.pop().unwrap_or_default() })).into_response())
}

async fn version() -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_values() {
        let k = |v: Value| keep_alive(&Some(v));
        assert_eq!(
            k(json!("5m")).unwrap(),
            Some(KeepAlive::For(Duration::from_secs(300)))
        );
        assert_eq!(
            k(json!("1h30m")).unwrap(),
            Some(KeepAlive::For(Duration::from_secs(5400)))
        );
        assert_eq!(
            k(json!("250ms")).unwrap(),
            Some(KeepAlive::For(Duration::from_millis(250)))
        );
        assert_eq!(k(json!(0)).unwrap(), Some(KeepAlive::For(Duration::ZERO)));
        assert_eq!(k(json!("0")).unwrap(), Some(KeepAlive::For(Duration::ZERO)));
        assert_eq!(k(json!(-1)).unwrap(), Some(KeepAlive::Forever));
        assert_eq!(k(json!("-1m")).unwrap(), Some(KeepAlive::Forever));
        assert_eq!(
            k(json!(30)).unwrap(),
            Some(KeepAlive::For(Duration::from_secs(30)))
        );
        assert_eq!(keep_alive(&None).unwrap(), None);
        for bad in [
            json!("5 minutes"),
            json!("m"),
            json!(""),
            json!(1e308),
            json!(i64::MAX),
            json!([1]),
            json!("NaN"),
        ] {
            let e = k(bad.clone()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("keep_alive"), "{bad}");
        }
    }
}
