//! OpenAI-compatible endpoints: `/v1/chat/completions`, `/v1/completions`, `/v1/models`,
//! `/v1/embeddings`.

use super::tools::{self as tool_api, Parsed};
use super::{
    collect, output_parser, relay, relay_many, request_id, start, start_all, unix_now, GenSpec,
    Relayed,
};
use crate::error::{ApiError, OpenAiError};
use crate::params::{self, float, int, parse_body, seed, SamplerRequest, Stop};
use crate::worker::{Api, Budget, EmbedInput, Event, Input, Summary, TokenLogprob};
use crate::AppState;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use engine::chat::tools::{tool_call_grammar, ParseEvent, ToolChoice};
use engine::chat::Message;
use engine::constraint::Grammar;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Number, Value};
use std::convert::Infallible;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(retrieve_model))
        .route("/v1/embeddings", post(embeddings))
}

/// Which shape log-probabilities take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogprobStyle {
    /// `/v1/chat/completions`: `logprobs: true`, `top_logprobs: 0..=20`.
    Chat,
    /// `/v1/completions`: `logprobs: 0..=5` (the legacy shape).
    Completion,
}

/// Settings both endpoints take.
#[derive(Debug, Deserialize)]
struct Common {
    model: String,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    stop: Option<Stop>,
    seed: Option<Value>,
    max_tokens: Option<Value>,
    temperature: Option<Value>,
    top_p: Option<Value>,
    n: Option<Value>,
    presence_penalty: Option<Value>,
    frequency_penalty: Option<Value>,
    // llama.cpp's extensions.
    top_k: Option<Value>,
    min_p: Option<Value>,
    typical_p: Option<Value>,
    repeat_penalty: Option<Value>,
    repeat_last_n: Option<Value>,
    logprobs: Option<Value>,
    logit_bias: Option<Value>,
    top_logprobs: Option<Value>,
    response_format: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    max_completion_tokens: Option<Value>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
    /// An assistant turn's calls: `[{"id", "type": "function", "function": {"name",
    /// "arguments": "<JSON text>"}}]`.
    tool_calls: Option<Value>,
    /// A `tool` turn: the call it answers.
    tool_call_id: Option<String>,
    name: Option<String>,
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
    prompt: Value,
    echo: Option<bool>,
    suffix: Option<String>,
    best_of: Option<Number>,
    /// llama.cpp's: a GBNF grammar the completion follows.
    grammar: Option<Value>,
    /// llama.cpp's: a JSON schema the completion follows.
    json_schema: Option<Value>,
    #[serde(flatten)]
    common: Common,
}

/// What the common settings come to.
struct Checked {
    /// Alternatives per token when log-probabilities were asked for.
    logprobs: Option<usize>,
    sampler: SamplerRequest,
    budget: Option<Budget>,
    budget_param: &'static str,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
    /// What `response_format` asks the output to follow.
    grammar: Option<Grammar>,
    grammar_param: &'static str,
}

impl Checked {
    /// The job for `input` with these settings.
    fn spec(&self, model: String, input: Input, use_preset_system: bool) -> GenSpec {
        GenSpec {
            model,
            input,
            budget: self.budget,
            budget_param: self.budget_param,
            sampler: self.sampler.clone(),
            stop: self.stop.clone(),
            n_ctx: None,
            use_preset_system,
            logprobs: self.logprobs,
            grammar: self.grammar.clone(),
            grammar_param: self.grammar_param,
            keep_alive: None,
            api: Api::OpenAi,
            tools: None,
        }
    }
}

fn check_common(
    c: &Common,
    max_completion_tokens: Option<&Value>,
    style: LogprobStyle,
) -> Result<Checked, ApiError> {
    const MAX: i64 = params::MAX_TOKENS_LIMIT;
    if let Some(n) = int("n", c.n.as_ref(), 1, 1)? {
        debug_assert_eq!(n, 1);
    }
    let grammar =
        super::format::openai_response_format("response_format", c.response_format.as_ref())?;
    let logprobs = check_logprobs(c, style)?;
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
        logit_bias: params::logit_bias("logit_bias", c.logit_bias.as_ref())?,
    };
    Ok(Checked {
        logprobs,
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
        grammar,
        grammar_param: "response_format",
    })
}

/// `logprobs` and `top_logprobs` as each endpoint takes them.
fn check_logprobs(c: &Common, style: LogprobStyle) -> Result<Option<usize>, ApiError> {
    let top = int("top_logprobs", c.top_logprobs.as_ref(), 0, 20)?;
    match style {
        LogprobStyle::Chat => {
            let on = match &c.logprobs {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(ApiError::invalid(
                        "logprobs",
                        format!("logprobs must be true or false (got {other})"),
                    ))
                }
            };
            if top.is_some() && !on {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "top_logprobs needs logprobs: true",
                ));
            }
            Ok(on.then(|| top.unwrap_or(0) as usize))
        }
        LogprobStyle::Completion => match &c.logprobs {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(int("logprobs", Some(n), 0, 5)?.map(|n| n as usize)),
            Some(other) => Err(ApiError::invalid(
                "logprobs",
                format!("logprobs must be an integer between 0 and 5 (got {other})"),
            )),
        },
    }
}

/// Chat log-probabilities: `{"content": [{token, logprob, bytes, top_logprobs}]}`.
fn chat_logprobs(list: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = list
        .iter()
        .map(|t| {
            json!({
                "token": t.text,
                "logprob": t.logprob,
                "bytes": t.bytes,
                "top_logprobs": t.top.iter().map(|(text, bytes, lp)| {
                    json!({"token": text, "logprob": lp, "bytes": bytes})
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "content": content })
}

/// Legacy completion log-probabilities; `offset` is where the first token's text starts.
fn completion_logprobs(list: &[TokenLogprob], offset: usize) -> Value {
    let mut at = offset;
    let mut offsets = Vec::with_capacity(list.len());
    for t in list {
        offsets.push(at);
        at += t.text.len();
    }
    json!({
        "tokens": list.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(),
        "token_logprobs": list.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": list.iter().map(|t| {
            t.top.iter().map(|(text, _, lp)| (text.clone(), json!(lp))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
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
        "prompt_tokens_details": {"cached_tokens": s.cached_tokens},
    })
}

/// hearth's own timing fields (llama.cpp's server has a similar `timings` object).
fn timings(s: &Summary) -> Value {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let rate = |n: usize, d: std::time::Duration| {
        if d.is_zero() {
            0.0
        } else {
            n as f64 / d.as_secs_f64()
        }
    };
    json!({
        "load_ms": ms(s.load_time),
        "time_to_first_token_ms": s.first_token.map(ms),
        "prompt_n": s.prompt_tokens,
        "prompt_cached": s.cached_tokens,
        "prompt_ms": ms(s.prompt_time),
        "prompt_per_second": rate(s.prompt_tokens - s.cached_tokens, s.prompt_time),
        "predicted_n": s.completion_tokens,
        "predicted_ms": ms(s.generation_time),
        "predicted_per_second": rate(s.completion_tokens, s.generation_time),
        "total_ms": ms(s.total_time),
    })
}

fn messages(list: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if list.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    let mut out: Vec<Message> = Vec::with_capacity(list.len());
    for (i, m) in list.into_iter().enumerate() {
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
        let mut msg = Message {
            role,
            content,
            ..Message::default()
        };
        match m.tool_calls {
            None | Some(Value::Null) => {}
            Some(_) if msg.role != "assistant" => {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].tool_calls"),
                    "only assistant messages carry tool_calls",
                ))
            }
            Some(Value::Array(calls)) => {
                for (j, c) in calls.iter().enumerate() {
                    msg.tool_calls
                        .push(openai_call(c, &format!("messages[{i}].tool_calls[{j}]"))?);
                }
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].tool_calls"),
                    format!("messages[{i}].tool_calls must be a list"),
                ))
            }
        }
        if msg.role == "tool" {
            let Some(id) = m.tool_call_id else {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].tool_call_id"),
                    "a tool message needs the tool_call_id of the call it answers",
                ));
            };
            // The function's name, from the call it answers (some templates show it).
            msg.name = m.name.or_else(|| {
                out.iter()
                    .flat_map(|p| &p.tool_calls)
                    .find(|c| c.id == id)
                    .map(|c| c.name.clone())
            });
            msg.tool_call_id = Some(id);
        }
        out.push(msg);
    }
    Ok(out)
}

/// One call of an assistant message: `{"id", "type": "function", "function": {"name",
/// "arguments": "<JSON text>"}}`; `at` names it in errors.
fn openai_call(c: &Value, at: &str) -> Result<engine::chat::ToolCall, ApiError> {
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
    let arguments = tool_api::arguments(f.get("arguments"), &format!("{at}.function.arguments"))?;
    let id = match c.get("id") {
        Some(Value::String(id)) => id.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => {
            return Err(ApiError::invalid(
                &format!("{at}.id"),
                format!("{at}.id must be a string"),
            ))
        }
    };
    Ok(engine::chat::ToolCall {
        id,
        name: name.to_string(),
        arguments,
    })
}

fn sse(stream: impl futures_util::Stream<Item = String> + Send + 'static) -> Response {
    Sse::new(stream.map(|data| Ok::<_, Infallible>(SseEvent::default().data(data)))).into_response()
}

/// Most choices one chat request may ask for (`n`).
const MAX_CHAT_CHOICES: i64 = 8;

/// The chat message of a parsed answer: `content` None when the answer is only calls,
/// `reasoning_content` when the model thought aloud, `tool_calls` with arguments as JSON text.
fn chat_message(p: &Parsed) -> Value {
    let content = if p.content.is_empty() && !p.calls.is_empty() {
        Value::Null
    } else {
        json!(p.content)
    };
    let mut m = json!({"role": "assistant", "content": content});
    if !p.reasoning.is_empty() {
        m["reasoning_content"] = json!(p.reasoning);
    }
    if !p.calls.is_empty() {
        m["tool_calls"] = p
            .calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                })
            })
            .collect();
    }
    m
}

/// `tool_calls` when the answer ended by calling, else why it ended.
fn chat_finish(s: &Summary, calls: usize) -> &'static str {
    match finish_reason(s) {
        "stop" if calls > 0 => "tool_calls",
        other => other,
    }
}

/// Usage of n choices: the prompt once (it is the same), the completions summed.
fn usage_of(summaries: &[Summary]) -> Value {
    let Some(first) = summaries.first() else {
        return json!({});
    };
    let completion: usize = summaries.iter().map(|s| s.completion_tokens).sum();
    json!({
        "prompt_tokens": first.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": first.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": first.cached_tokens},
    })
}

/// The streamed delta of one parser event.
fn chat_delta(e: ParseEvent) -> Value {
    match e {
        ParseEvent::Content(t) => json!({"content": t}),
        ParseEvent::Reasoning(t) => json!({"reasoning_content": t}),
        ParseEvent::ToolCallStart { index, id, name } => json!({"tool_calls": [{
            "index": index,
            "id": id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }]}),
        ParseEvent::ToolCallArgs { index, delta } => {
            json!({"tool_calls": [{"index": index, "function": {"arguments": delta}}]})
        }
    }
}

async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let mut req: ChatRequest = parse_body(body)?;
    // n is the chat endpoint's own (checked here, not with the settings completions share).
    let n = int("n", req.common.n.take().as_ref(), 1, MAX_CHAT_CHOICES)?.unwrap_or(1) as usize;
    let checked = check_common(
        &req.common,
        req.max_completion_tokens.as_ref(),
        LogprobStyle::Chat,
    )?;
    let tools = tool_api::check_tools("tools", req.tools.as_ref(), false)?;
    let choice = tool_api::check_choice("tool_choice", req.tool_choice.as_ref(), &tools, false)?;
    let parallel = req.parallel_tool_calls.unwrap_or(true);
    // tool_choice "none": the tools are not shown and the answer is not read for calls.
    let use_tools = !tools.is_empty() && choice != ToolChoice::None;
    let model_name = req.common.model.clone();
    let msgs = messages(req.messages)?;
    let grammar = forced_call_grammar(&state, &model_name, &tools, &choice, parallel).await?;
    if grammar.is_some() && checked.grammar.is_some() {
        return Err(ApiError::invalid(
            "response_format",
            "response_format cannot be combined with a required or named tool_choice: the \
             answer is the tool call",
        )
        .into());
    }
    let base_seed = match (checked.sampler.seed, n) {
        (Some(s), _) => Some(s),
        (None, 1) => None,
        (None, _) => Some(super::random_seed()),
    };
    let specs = (0..n)
        .map(|i| {
            let mut spec = checked.spec(model_name.clone(), Input::Chat(msgs.clone()), true);
            spec.tools = use_tools.then(|| tools.clone());
            if grammar.is_some() {
                spec.grammar = grammar.clone();
                spec.grammar_param = "tool_choice";
            }
            if let Some(s) = base_seed {
                spec.sampler.seed = Some(s.wrapping_add(i as u64));
            }
            spec
        })
        .collect();
    let runs = start_all(&state, specs).await?;
    let ids_seed = super::random_seed();
    let mut parsers: Vec<_> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| output_parser(r, use_tools, true, ids_seed.wrapping_add(i as u64)))
        .collect();
    let want_logprobs = checked.logprobs.is_some();
    let id = request_id("chatcmpl");
    let created = unix_now();
    if !checked.stream {
        let answers = futures_util::future::try_join_all(runs.into_iter().map(collect)).await?;
        let mut choices = Vec::with_capacity(answers.len());
        let mut summaries = Vec::with_capacity(answers.len());
        for (i, (a, parser)) in answers.into_iter().zip(&mut parsers).enumerate() {
            let parsed = Parsed::of(&a.text, parser);
            choices.push(json!({
                "index": i,
                "message": chat_message(&parsed),
                "logprobs": if want_logprobs { chat_logprobs(&a.logprobs) } else { Value::Null },
                "finish_reason": chat_finish(&a.summary, parsed.calls.len()),
            }));
            summaries.push(a.summary);
        }
        return Ok(Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model_name,
            "system_fingerprint": "hearth",
            "choices": choices,
            "usage": usage_of(&summaries),
            "timings": timings(&summaries[0]),
        }))
        .into_response());
    }
    let include_usage = checked.include_usage;
    let chunk = move |index: usize, delta: Value, finish: Option<&str>| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model_name,
            "system_fingerprint": "hearth",
            "choices": [{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut started = vec![false; n];
    let mut summaries: Vec<Option<Summary>> = vec![None; n];
    // Log-probabilities arrive just before the piece whose text they cover; they go with the
    // next chunk of their choice.
    let mut pending: Vec<Vec<TokenLogprob>> = vec![Vec::new(); n];
    let stream = relay_many(runs, move |r| {
        let mut out = Vec::new();
        let (i, ev) = match r {
            Relayed::Event(i, ev) => (i, ev),
            Relayed::End => {
                if include_usage {
                    let done: Vec<Summary> = summaries.iter().flatten().cloned().collect();
                    let mut u = chunk(0, json!({}), None);
                    u["choices"] = json!([]);
                    u["usage"] = usage_of(&done);
                    out.push(u.to_string());
                }
                out.push("[DONE]".into());
                return out;
            }
        };
        if !started[i] {
            started[i] = true;
            out.push(chunk(i, json!({"role": "assistant", "content": ""}), None).to_string());
        }
        let mut emit = |mut c: Value, pending: &mut Vec<TokenLogprob>| {
            if want_logprobs && !pending.is_empty() {
                c["choices"][0]["logprobs"] = chat_logprobs(pending);
                pending.clear();
            }
            out.push(c.to_string());
        };
        match ev {
            Event::Logprobs(l) => pending[i].extend(l.iter().cloned()),
            Event::Piece(p) => {
                for e in parsers[i].push(p) {
                    emit(chunk(i, chat_delta(e), None), &mut pending[i]);
                }
            }
            Event::Done(s) => {
                for e in parsers[i].finish() {
                    emit(chunk(i, chat_delta(e), None), &mut pending[i]);
                }
                let mut last = chunk(i, json!({}), Some(chat_finish(s, parsers[i].calls())));
                last["timings"] = timings(s);
                emit(last, &mut pending[i]);
                summaries[i] = Some(s.clone());
            }
            Event::Error(e) => out.push(error_chunk(e)),
            Event::Prompt(_) | Event::Started | Event::Embeddings { .. } => {}
        }
        out
    });
    Ok(sse(stream))
}

/// The grammar that forces the call a `required` or named `tool_choice` asks for, in the
/// model's own format (None for `auto` and `none`). A model whose template has no tool calls
/// cannot be given tools.
async fn forced_call_grammar(
    state: &AppState,
    model: &str,
    tools: &[Value],
    choice: &ToolChoice,
    parallel: bool,
) -> Result<Option<Grammar>, ApiError> {
    if !matches!(choice, ToolChoice::Required | ToolChoice::Function(_)) {
        return Ok(None);
    }
    match super::tool_format(state, model).await? {
        Some(format) => Ok(tool_call_grammar(format, tools, choice, parallel)),
        None => Err(ApiError::invalid(
            "tools",
            format!("{model}'s chat template has no tool calls: this model cannot be given tools"),
        )),
    }
}

fn error_chunk(e: &ApiError) -> String {
    json!({"error": {"message": e.message, "type": "server_error", "param": e.param, "code": e.code}})
        .to_string()
}

/// Most choices one `/v1/completions` request may ask for (prompts × `n`).
pub const MAX_CHOICES: usize = 64;
/// Most sequences per prompt (`n`).
pub const MAX_N: i64 = 8;

/// One prompt of a completion request.
enum PromptItem {
    Text(String),
    Tokens(Vec<u32>),
}

/// `prompt`: a string, a list of strings (one prompt each), a list of token ids, or a list of
/// lists of token ids.
fn prompt_items(v: &Value) -> Result<Vec<PromptItem>, ApiError> {
    match v {
        Value::String(s) => Ok(vec![PromptItem::Text(s.clone())]),
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_string) => Ok(a
            .iter()
            .map(|s| PromptItem::Text(s.as_str().unwrap_or_default().to_string()))
            .collect()),
        Value::Array(a) => Ok(token_inputs("prompt", a)?
            .into_iter()
            .map(PromptItem::Tokens)
            .collect()),
        other => Err(ApiError::invalid(
            "prompt",
            format!(
                "prompt must be a string, a list of strings, a list of token ids or a list of \
                 lists of token ids (got {})",
                json_kind(other)
            ),
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The summaries of several sequences as one: tokens summed, times the longest (they ran
/// side by side), the finish of the first that stopped for length, else the first's.
fn combined(list: &[Summary]) -> Summary {
    let mut out = Summary::default();
    for s in list {
        out.prompt_tokens += s.prompt_tokens;
        out.cached_tokens += s.cached_tokens;
        out.completion_tokens += s.completion_tokens;
        out.prompt_time = out.prompt_time.max(s.prompt_time);
        out.generation_time = out.generation_time.max(s.generation_time);
        out.load_time = out.load_time.max(s.load_time);
        out.total_time = out.total_time.max(s.total_time);
        out.first_token = match (out.first_token, s.first_token) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    out.finish = list.first().map(|s| s.finish).unwrap_or_default();
    out
}

/// `POST /v1/completions`: every prompt gets `n` sequences (seeds `seed + i`), all decoded
/// side by side by the worker; choice `prompt_index * n + i`. `echo` puts the prompt's text
/// before each choice's (log-probabilities then still cover only the generated tokens, whose
/// `text_offset` counts from the start of the echoed prompt). A `suffix` asks for
/// fill-in-the-middle with the model's FIM tokens.
async fn completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let mut req: CompletionRequest = parse_body(body)?;
    // `n` is read here: the shared checks allow only one choice.
    let n = int("n", req.common.n.take().as_ref(), 1, MAX_N)?.unwrap_or(1) as usize;
    let mut checked = check_common(&req.common, None, LogprobStyle::Completion)?;
    if let Some((param, grammar)) = super::format::completion_grammar(
        req.grammar.as_ref(),
        req.json_schema.as_ref(),
        checked.grammar.take(),
    )? {
        checked.grammar = Some(grammar);
        checked.grammar_param = param;
    }
    let items = prompt_items(&req.prompt)?;
    if items.len() > MAX_CHOICES {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "prompt may hold at most {MAX_CHOICES} prompts (got {})",
                items.len()
            ),
        )
        .into());
    }
    if items.len() * n > MAX_CHOICES {
        return Err(ApiError::invalid(
            "n",
            format!(
                "{} prompts × n = {n} asks for {} choices; at most {MAX_CHOICES} per request",
                items.len(),
                items.len() * n
            ),
        )
        .into());
    }
    let echo = req.echo.unwrap_or(false);
    let suffix = req.suffix.take().filter(|s| !s.is_empty());
    if suffix.is_some() {
        if echo {
            return Err(ApiError::invalid("echo", "echo cannot be combined with suffix").into());
        }
        if items.iter().any(|p| matches!(p, PromptItem::Tokens(_))) {
            return Err(ApiError::invalid(
                "suffix",
                "suffix (fill-in-the-middle) needs the prompt as text, not token ids",
            )
            .into());
        }
    }
    int("best_of", req.best_of.as_ref(), 1, 1)?;
    let model_name = req.common.model.clone();
    // The text each prompt's choices echo.
    let mut echoes = Vec::with_capacity(items.len());
    if echo {
        for (k, item) in items.iter().enumerate() {
            echoes.push(match item {
                PromptItem::Text(t) => t.clone(),
                PromptItem::Tokens(ids) => {
                    let ids = ids.clone();
                    let param = format!("prompt[{k}]");
                    super::on_model(&state, &model_name, move |m| {
                        crate::worker::check_ids(m, &ids, &param)?;
                        Ok(m.tokenizer().decode(&ids, true))
                    })
                    .await?
                }
            });
        }
    } else {
        echoes.resize(items.len(), String::new());
    }
    let flat = is_flat_id_list(&req.prompt);
    let mut runs = Vec::with_capacity(items.len() * n);
    for (k, item) in items.into_iter().enumerate() {
        let input = match (item, &suffix) {
            (PromptItem::Text(prefix), Some(suffix)) => Input::Fim {
                prefix,
                suffix: suffix.clone(),
            },
            (PromptItem::Text(t), None) => Input::Raw(t),
            (PromptItem::Tokens(ids), _) => Input::Tokens {
                ids,
                // A lone list of ids is `prompt` itself.
                param: if flat {
                    "prompt".into()
                } else {
                    format!("prompt[{k}]")
                },
            },
        };
        for i in 0..n {
            let mut spec = checked.spec(model_name.clone(), input.clone(), false);
            if let Some(s) = spec.sampler.seed {
                spec.sampler.seed = Some(s.wrapping_add(i as u64));
            }
            // One at a time: each waits until its prompt is in (so a request never fills the
            // queue by itself), while the ones before it already generate.
            runs.push(start(&state, spec).await?);
        }
    }
    let want_logprobs = checked.logprobs.is_some();
    let id = request_id("cmpl");
    let created = unix_now();
    let include_usage = checked.include_usage;
    let chunk = move |index: usize, text: &str, finish: Option<&str>| {
        let mut c = json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model_name,
            "system_fingerprint": "hearth",
            "choices": [{"text": text, "index": index, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let echo_of = |index: usize| echoes[index / n].clone();
    if !checked.stream {
        let done = futures_util::future::try_join_all(runs.into_iter().map(collect)).await?;
        let summaries: Vec<Summary> = done.iter().map(|c| c.summary.clone()).collect();
        let choices: Vec<Value> = done
            .into_iter()
            .enumerate()
            .map(|(index, c)| {
                let echoed = echo_of(index);
                let mut choice = chunk(
                    index,
                    &format!("{echoed}{}", c.text),
                    Some(finish_reason(&c.summary)),
                )["choices"][0]
                    .take();
                if want_logprobs {
                    choice["logprobs"] = completion_logprobs(&c.logprobs, echoed.len());
                }
                choice
            })
            .collect();
        let total = combined(&summaries);
        let mut body = chunk(0, "", None);
        body["choices"] = Value::Array(choices);
        body["usage"] = usage(&total);
        body["timings"] = timings(&total);
        return Ok(Json(body).into_response());
    }
    let summaries = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Summary>::new()));
    let streams = runs.into_iter().enumerate().map(|(index, run)| {
        let chunk = chunk.clone();
        let summaries = std::sync::Arc::clone(&summaries);
        let mut echoed = Some(echo_of(index)).filter(|e| !e.is_empty());
        let mut offset = echoed.as_ref().map_or(0, String::len);
        let mut pending: Vec<TokenLogprob> = Vec::new();
        relay(run, move |ev| {
            let mut out = Vec::new();
            if let Some(e) = echoed.take() {
                out.push(chunk(index, &e, None).to_string());
            }
            let mut with_logprobs = |mut c: Value, text_len: usize| {
                if want_logprobs && !pending.is_empty() {
                    c["choices"][0]["logprobs"] = completion_logprobs(&pending, offset);
                    pending.clear();
                }
                offset += text_len;
                c.to_string()
            };
            match ev {
                Event::Logprobs(l) => pending.extend(l.iter().cloned()),
                Event::Piece(p) => out.push(with_logprobs(chunk(index, p, None), p.len())),
                Event::Done(s) => {
                    let mut last = chunk(index, "", Some(finish_reason(s)));
                    last["timings"] = timings(s);
                    out.push(with_logprobs(last, 0));
                    summaries
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(s.clone());
                }
                Event::Error(e) => out.push(error_chunk(e)),
                Event::Prompt(_) | Event::Started | Event::Embeddings { .. } => {}
            }
            out
        })
    });
    let merged = futures_util::stream::select_all(streams.map(Box::pin));
    let end = futures_util::stream::once(async move {
        let mut out = Vec::new();
        if include_usage {
            let list = summaries.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut u = chunk(0, "", None);
            u["choices"] = json!([]);
            u["usage"] = usage(&combined(&list));
            out.push(u.to_string());
        }
        out.push("[DONE]".to_string());
        futures_util::stream::iter(out)
    })
    .flatten();
    Ok(sse(merged.chain(end)))
}

/// Whether `prompt` is one flat list of token ids (then it is named `prompt`, not
/// `prompt[0]`).
fn is_flat_id_list(prompt: &Value) -> bool {
    prompt
        .as_array()
        .is_some_and(|a| !a.is_empty() && !a.iter().any(Value::is_array))
}

/// The models a client may name: those in the store, then loaded ones that are not (paths).
async fn model_objects(state: &AppState) -> Result<Vec<Value>, ApiError> {
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
    let upstreams = &state.inner.config.upstreams;
    for loaded in state.inner.worker.loaded_models() {
        if !list.iter().any(|m| m.name == loaded) && upstreams.find(&loaded).is_none() {
            data.push(json!({"id": loaded, "object": "model", "created": unix_now(), "owned_by": "hearth"}));
        }
    }
    // Models on other machines: marked, and in place of a local model of the same name
    // (requests for that name go to the upstream).
    data.retain(|m| {
        m["id"]
            .as_str()
            .is_none_or(|id| upstreams.find(id).is_none())
    });
    for u in upstreams.iter() {
        data.push(json!({
            "id": u.name,
            "object": "model",
            "created": 0,
            "owned_by": "remote",
            "remote": {"host": u.host},
        }));
    }
    Ok(data)
}

async fn list_models(State(state): State<AppState>) -> Result<Response, OpenAiError> {
    let data = model_objects(&state).await?;
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

/// `GET /v1/models/{id}`: one model, or 404 `model_not_found` (ids may hold slashes and
/// colons: `hf.co/org/repo:Q4_K_M`).
async fn retrieve_model(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, OpenAiError> {
    let data = model_objects(&state).await?;
    match data.into_iter().find(|m| m["id"] == id.as_str()) {
        Some(m) => Ok(Json(m).into_response()),
        None => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("model '{id}' not found: GET /v1/models lists the models this server has"),
        )
        .with_code("model_not_found")
        .into()),
    }
}

/// Unix seconds of an RFC 3339 time (0 when it does not parse).
fn humantime_secs(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t).map_or(0, |d| d.timestamp())
}

#[derive(Debug, Deserialize)]
struct EmbeddingRequest {
    model: String,
    input: EmbeddingInput,
    encoding_format: Option<String>,
    dimensions: Option<Number>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    /// Token ids of the model's vocabulary: one list, or a list of lists.
    Tokens(Vec<Value>),
}

/// Most inputs in one embeddings request.
pub const MAX_EMBED_INPUTS: usize = 256;

async fn embeddings(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let req: EmbeddingRequest = parse_body(body)?;
    let inputs = match req.input {
        EmbeddingInput::One(t) => vec![EmbedInput::Text(t)],
        EmbeddingInput::Many(v) => v.into_iter().map(EmbedInput::Text).collect(),
        EmbeddingInput::Tokens(v) => token_inputs("input", &v)?
            .into_iter()
            .map(EmbedInput::Tokens)
            .collect(),
    };
    if inputs.is_empty() || inputs.len() > MAX_EMBED_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!("input must hold 1 to {MAX_EMBED_INPUTS} strings or lists of token ids"),
        )
        .into());
    }
    // The official Python client asks for base64 (little-endian f32) by default.
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format must be \"float\" or \"base64\" (got {other:?})"),
            )
            .into())
        }
    };
    if req.dimensions.is_some() {
        return Err(ApiError::invalid(
            "dimensions",
            "dimensions cannot be changed: vectors have the model's hidden size",
        )
        .into());
    }
    let (vectors, summary) =
        super::embed_inputs(&state, req.model.clone(), inputs, false, None, Api::OpenAi).await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                use base64::Engine;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": summary.prompt_tokens, "total_tokens": summary.prompt_tokens},
    }))
    .into_response())
}

/// Token-id input (`prompt`, `input`): one list of ids, or a list of lists. The first id that
/// is not an integer from 0 to 2^32 - 1 is named (`input[1][3]`); the vocabulary is checked
/// where the model is loaded. An empty list is refused, naming it.
fn token_inputs(param: &str, v: &[Value]) -> Result<Vec<Vec<u32>>, ApiError> {
    if v.is_empty() {
        return Err(ApiError::invalid(
            param,
            format!("{param} must not be empty"),
        ));
    }
    if v.iter().all(Value::is_array) {
        v.iter()
            .enumerate()
            .map(|(i, inner)| {
                let field = format!("{param}[{i}]");
                let list = inner.as_array().map_or(&[][..], |a| a.as_slice());
                if list.is_empty() {
                    return Err(ApiError::invalid(&field, format!("{field} is empty")));
                }
                params::token_ids(&field, list)
            })
            .collect()
    } else if v.iter().any(Value::is_array) || v.iter().any(Value::is_string) {
        Err(ApiError::invalid(
            param,
            format!(
                "{param} must be a string, a list of strings, a list of token ids or a list \
                 of lists of token ids (not a mix)"
            ),
        ))
    } else {
        Ok(vec![params::token_ids(param, v)?])
    }
}
