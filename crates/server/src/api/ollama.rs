//! Ollama-compatible endpoints: `/api/generate`, `/api/chat` (NDJSON streams by default),
//! `/api/tags`, `/api/version`.

use super::{collect, relay, start, GenSpec};
use crate::error::{ApiError, OllamaError};
use crate::params::{self, float, int, parse_body, seed, SamplerRequest, Stop};
use crate::worker::{Budget, Event, Input, Summary};
use crate::AppState;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
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
        .route("/api/version", get(version))
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
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    stream: Option<bool>,
    format: Option<Value>,
    tools: Option<Vec<Value>>,
    options: Option<Options>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: String,
    images: Option<Vec<Value>>,
}

struct Checked {
    sampler: SamplerRequest,
    budget: Option<Budget>,
    stop: Vec<String>,
    n_ctx: Option<usize>,
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

fn check_format(format: &Option<Value>) -> Result<(), ApiError> {
    match format {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.is_empty() => Ok(()),
        Some(_) => Err(ApiError::invalid(
            "format",
            "structured output (format) is not supported yet",
        )),
    }
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
        let (text, summary) = collect(run).await?;
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
        Event::Started => Vec::new(),
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
    check_format(&req.format)?;
    none_or_empty("images", &req.images, "images")?;
    none_or_empty("context", &req.context, "context token lists")?;
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "suffix is not supported yet").into());
    }
    if req.template.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("template", "custom templates are not supported yet").into());
    }
    let (input, use_preset_system) = if req.prompt.is_empty() {
        (Input::Load, false)
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
    let spec = GenSpec {
        model: req.model,
        input,
        budget: checked.budget,
        budget_param: "options.num_predict",
        sampler: checked.sampler,
        stop: checked.stop,
        n_ctx: checked.n_ctx,
        use_preset_system,
    };
    answer(&state, spec, req.stream.unwrap_or(true), generate_chunk).await
}

async fn chat(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let req: ChatRequest = parse_body(body)?;
    let checked = check_options(req.options, state.inner.config.n_ctx)?;
    check_format(&req.format)?;
    none_or_empty("tools", &req.tools, "tools")?;
    let mut msgs = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        none_or_empty(&format!("messages[{i}].images"), &m.images, "images")?;
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
            return Err(ApiError::invalid(
                &format!("messages[{i}].role"),
                format!("unknown role {:?}", m.role),
            )
            .into());
        }
        msgs.push(Message {
            role: m.role,
            content: m.content,
        });
    }
    let input = if msgs.is_empty() {
        Input::Load
    } else {
        Input::Chat(msgs)
    };
    let spec = GenSpec {
        model: req.model,
        input,
        budget: checked.budget,
        budget_param: "options.num_predict",
        sampler: checked.sampler,
        stop: checked.stop,
        n_ctx: checked.n_ctx,
        use_preset_system: true,
    };
    answer(&state, spec, req.stream.unwrap_or(true), chat_chunk).await
}

async fn tags(State(state): State<AppState>) -> Result<Response, OllamaError> {
    let inner = std::sync::Arc::clone(&state.inner);
    let list = tokio::task::spawn_blocking(move || inner.models.list())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let models: Vec<Value> = list
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "model": m.name,
                "modified_at": m.modified,
                "size": m.size,
                "digest": m.digest.strip_prefix("sha256:").unwrap_or(&m.digest),
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "",
                    "families": null,
                    "parameter_size": "",
                    "quantization_level": "",
                },
            })
        })
        .collect();
    Ok(Json(json!({ "models": models })).into_response())
}

async fn version() -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}
