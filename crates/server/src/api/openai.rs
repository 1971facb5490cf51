//! OpenAI-compatible endpoints: `/v1/chat/completions`, `/v1/completions`, `/v1/models`.

use super::{collect, relay, request_id, start, unix_now, GenSpec};
use crate::error::{ApiError, OpenAiError};
use crate::params::{self, float, int, parse_body, seed, SamplerRequest, Stop};
use crate::worker::{Budget, Event, Input, Summary};
use crate::AppState;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use engine::chat::Message;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Number, Value};
use std::convert::Infallible;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(list_models))
}

/// Settings both endpoints take.
#[derive(Debug, Deserialize)]
struct Common {
    model: String,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    stop: Option<Stop>,
    seed: Option<Number>,
    max_tokens: Option<Number>,
    temperature: Option<Number>,
    top_p: Option<Number>,
    n: Option<Number>,
    presence_penalty: Option<Number>,
    frequency_penalty: Option<Number>,
    // llama.cpp's extensions.
    top_k: Option<Number>,
    min_p: Option<Number>,
    typical_p: Option<Number>,
    repeat_penalty: Option<Number>,
    repeat_last_n: Option<Number>,
    logprobs: Option<Value>,
    top_logprobs: Option<Number>,
    response_format: Option<ResponseFormat>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    max_completion_tokens: Option<Number>,
    tools: Option<Vec<Value>>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    prompt: Prompt,
    echo: Option<bool>,
    suffix: Option<String>,
    best_of: Option<Number>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// What the common settings come to.
struct Checked {
    sampler: SamplerRequest,
    budget: Option<Budget>,
    budget_param: &'static str,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
}

fn check_common(c: &Common, max_completion_tokens: Option<&Number>) -> Result<Checked, ApiError> {
    const MAX: i64 = params::MAX_TOKENS_LIMIT;
    if let Some(n) = int("n", c.n.as_ref(), 1, 1)? {
        debug_assert_eq!(n, 1);
    }
    if let Some(f) = &c.response_format {
        if f.kind != "text" {
            return Err(ApiError::invalid(
                "response_format",
                format!(
                    "response_format {:?} is not supported yet: only \"text\"",
                    f.kind
                ),
            ));
        }
    }
    if c.logprobs
        .as_ref()
        .is_some_and(|v| v != &json!(false) && !v.is_null())
        || c.top_logprobs.is_some()
    {
        return Err(ApiError::invalid(
            "logprobs",
            "logprobs are not supported yet",
        ));
    }
    let (budget_param, budget) = match (max_completion_tokens, c.max_tokens.as_ref()) {
        (Some(n), _) => ("max_completion_tokens", Some(n)),
        (None, n) => ("max_tokens", n),
    };
    let budget = int(budget_param, budget, 1, MAX)?.map(|n| Budget::Exactly(n as usize));
    let sampler = SamplerRequest {
        temperature: float("temperature", c.temperature.as_ref(), 0.0, 2.0)?,
        top_p: float("top_p", c.top_p.as_ref(), 0.0, 1.0)?,
        presence_penalty: float("presence_penalty", c.presence_penalty.as_ref(), -2.0, 2.0)?,
        frequency_penalty: float("frequency_penalty", c.frequency_penalty.as_ref(), -2.0, 2.0)?,
        top_k: int("top_k", c.top_k.as_ref(), 0, MAX)?.map(|n| n as usize),
        min_p: float("min_p", c.min_p.as_ref(), 0.0, 1.0)?,
        typical_p: float("typical_p", c.typical_p.as_ref(), 0.0, 1.0)?,
        repeat_penalty: float("repeat_penalty", c.repeat_penalty.as_ref(), 0.01, 100.0)?,
        repeat_last_n: int("repeat_last_n", c.repeat_last_n.as_ref(), -1, MAX)?,
        seed: seed("seed", c.seed.as_ref())?,
    };
    Ok(Checked {
        sampler,
        budget,
        budget_param,
        stop: params::stop_list("stop", c.stop.clone())?,
        stream: c.stream.unwrap_or(false),
        include_usage: c
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

fn finish_reason(s: &Summary) -> &'static str {
    match s.finish.as_str() {
        "length" => "length",
        "cancelled" => "cancelled",
        _ => "stop",
    }
}

fn usage(s: &Summary) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": s.prompt_tokens + s.completion_tokens,
    })
}

fn messages(list: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if list.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "developer" => "system".to_string(),
                "system" | "user" | "assistant" | "tool" => m.role,
                other => {
                    return Err(ApiError::invalid(
                        &format!("messages[{i}].role"),
                        format!("unknown role {other:?}"),
                    ))
                }
            };
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    &format!("messages[{i}].content"),
                                    format!("content parts of type {kind:?} are not supported"),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            Ok(Message { role, content })
        })
        .collect()
}

fn sse(stream: impl futures_util::Stream<Item = String> + Send + 'static) -> Response {
    Sse::new(stream.map(|data| Ok::<_, Infallible>(SseEvent::default().data(data)))).into_response()
}

async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let req: ChatRequest = parse_body(body)?;
    let checked = check_common(&req.common, req.max_completion_tokens.as_ref())?;
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid("tools", "tools are not supported yet").into());
    }
    let model_name = req.common.model.clone();
    let run = start(
        &state,
        GenSpec {
            model: model_name.clone(),
            input: Input::Chat(messages(req.messages)?),
            budget: checked.budget,
            budget_param: checked.budget_param,
            sampler: checked.sampler,
            stop: checked.stop,
            n_ctx: None,
            use_preset_system: true,
        },
    )
    .await?;
    let id = request_id("chatcmpl");
    let created = unix_now();
    if !checked.stream {
        let (text, summary) = collect(run).await?;
        return Ok(Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model_name,
            "system_fingerprint": "hearth",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish_reason(&summary),
            }],
            "usage": usage(&summary),
        }))
        .into_response());
    }
    let include_usage = checked.include_usage;
    let chunk = move |delta: Value, finish: Option<&str>| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model_name,
            "system_fingerprint": "hearth",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut first = true;
    let stream = relay(run, move |ev| {
        let mut out = Vec::new();
        if first {
            first = false;
            out.push(chunk(json!({"role": "assistant", "content": ""}), None).to_string());
        }
        match ev {
            Event::Piece(p) => out.push(chunk(json!({"content": p}), None).to_string()),
            Event::Done(s) => {
                out.push(chunk(json!({}), Some(finish_reason(s))).to_string());
                if include_usage {
                    let mut u = chunk(json!({}), None);
                    u["choices"] = json!([]);
                    u["usage"] = usage(s);
                    out.push(u.to_string());
                }
                out.push("[DONE]".into());
            }
            Event::Error(e) => out.push(error_chunk(e)),
            Event::Started => {}
        }
        out
    });
    Ok(sse(stream))
}

fn error_chunk(e: &ApiError) -> String {
    json!({"error": {"message": e.message, "type": "server_error", "param": e.param, "code": e.code}})
        .to_string()
}

async fn completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let req: CompletionRequest = parse_body(body)?;
    let checked = check_common(&req.common, None)?;
    let prompt = match req.prompt {
        Prompt::One(p) => p,
        Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
        Prompt::Many(_) => {
            return Err(ApiError::invalid("prompt", "prompt must be one string").into())
        }
    };
    if req.echo == Some(true) {
        return Err(ApiError::invalid("echo", "echo is not supported yet").into());
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "suffix is not supported yet").into());
    }
    int("best_of", req.best_of.as_ref(), 1, 1)?;
    let model_name = req.common.model.clone();
    let run = start(
        &state,
        GenSpec {
            model: model_name.clone(),
            input: Input::Raw(prompt),
            budget: checked.budget,
            budget_param: checked.budget_param,
            sampler: checked.sampler,
            stop: checked.stop,
            n_ctx: None,
            use_preset_system: false,
        },
    )
    .await?;
    let id = request_id("cmpl");
    let created = unix_now();
    let include_usage = checked.include_usage;
    let chunk = move |text: &str, finish: Option<&str>| {
        let mut c = json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model_name,
            "system_fingerprint": "hearth",
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    if !checked.stream {
        let (text, summary) = collect(run).await?;
        let mut body = chunk(&text, Some(finish_reason(&summary)));
        body["usage"] = usage(&summary);
        return Ok(Json(body).into_response());
    }
    let stream = relay(run, move |ev| match ev {
        Event::Piece(p) => vec![chunk(p, None).to_string()],
        Event::Done(s) => {
            let mut out = vec![chunk("", Some(finish_reason(s))).to_string()];
            if include_usage {
                let mut u = chunk("", None);
                u["choices"] = json!([]);
                u["usage"] = usage(s);
                out.push(u.to_string());
            }
            out.push("[DONE]".into());
            out
        }
        Event::Error(e) => vec![error_chunk(e)],
        Event::Started => Vec::new(),
    });
    Ok(sse(stream))
}

async fn list_models(State(state): State<AppState>) -> Result<Response, OpenAiError> {
    let inner = std::sync::Arc::clone(&state.inner);
    let list = tokio::task::spawn_blocking(move || inner.models.list())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let mut data: Vec<Value> = list
        .iter()
        .map(|m| {
            json!({
                "id": m.name,
                "object": "model",
                "created": humantime_secs(&m.modified),
                "owned_by": "hearth",
            })
        })
        .collect();
    if let Some(loaded) = state.inner.worker.loaded_model() {
        if !list.iter().any(|m| m.name == loaded) {
            data.push(json!({"id": loaded, "object": "model", "created": unix_now(), "owned_by": "hearth"}));
        }
    }
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

/// Unix seconds of an RFC 3339 time (0 when it does not parse).
fn humantime_secs(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t).map_or(0, |d| d.timestamp())
}
