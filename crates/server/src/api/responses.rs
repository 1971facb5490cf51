//! `POST /v1/responses`: OpenAI's Responses API over the chat machinery. Input is a string or
//! a list of items (messages, `function_call`, `function_call_output`); output is a list of
//! items (`message` with `output_text`, `function_call`). Streaming sends typed SSE events
//! (`event: response.output_text.delta` …), each with `type` and `sequence_number`, as the
//! official clients read them. Responses are not stored: `previous_response_id` is refused.

use super::tools::{self as tool_api, Parsed};
use super::{collect, output_parser, relay, request_id, start, unix_now, GenSpec};
use crate::error::{ApiError, OpenAiError};
use crate::params::{self, float, int, parse_body, seed, SamplerRequest};
use crate::worker::{Api, Budget, Event, Input, Summary};
use crate::AppState;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use engine::chat::tools::{tool_call_grammar, ParseEvent, ToolChoice};
use engine::chat::{Message, ToolCall};
use engine::constraint::Grammar;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/responses", post(create))
}

#[derive(Debug, Deserialize)]
struct ResponsesRequest {
    model: String,
    input: Value,
    instructions: Option<String>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    max_output_tokens: Option<Value>,
    temperature: Option<Value>,
    top_p: Option<Value>,
    seed: Option<Value>,
    stream: Option<bool>,
    text: Option<Value>,
    previous_response_id: Option<Value>,
    metadata: Option<Value>,
}

/// The conversation the input describes.
fn input_messages(input: &Value, instructions: Option<&str>) -> Result<Vec<Message>, ApiError> {
    let mut out: Vec<Message> = Vec::new();
    if let Some(i) = instructions.filter(|i| !i.is_empty()) {
        out.push(Message::new("system", i));
    }
    let items = match input {
        Value::String(s) => {
            out.push(Message::new("user", s));
            return Ok(out);
        }
        Value::Array(items) if !items.is_empty() => items,
        _ => {
            return Err(ApiError::invalid(
                "input",
                "input must be a string or a non-empty list of items",
            ))
        }
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                let role = match item.get("role").and_then(Value::as_str) {
                    Some("developer") | Some("system") => "system",
                    Some("user") => "user",
                    Some("assistant") => "assistant",
                    _ => {
                        return Err(ApiError::invalid(
                            &format!("{at}.role"),
                            format!("{at}.role must be user, assistant, system or developer"),
                        ))
                    }
                };
                let content = match item.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => {
                        let mut text = String::new();
                        for (j, p) in parts.iter().enumerate() {
                            let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
                            match (kind, p.get("text").and_then(Value::as_str)) {
                                ("input_text" | "output_text" | "text", Some(t)) => {
                                    text.push_str(t)
                                }
                                _ => {
                                    return Err(ApiError::invalid(
                                        &format!("{at}.content[{j}]"),
                                        format!("content parts of type {kind:?} are not supported"),
                                    ))
                                }
                            }
                        }
                        text
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            &format!("{at}.content"),
                            format!("{at}.content must be a string or a list of parts"),
                        ))
                    }
                };
                out.push(Message::new(role, &content));
            }
            "function_call" => {
                let text = |k: &str| -> Result<String, ApiError> {
                    item.get(k)
                        .and_then(Value::as_str)
                        .map(String::from)
                        .ok_or_else(|| {
                            ApiError::invalid(
                                &format!("{at}.{k}"),
                                format!("{at}.{k} must be a string"),
                            )
                        })
                };
                let call = ToolCall {
                    id: text("call_id")?,
                    name: text("name")?,
                    arguments: tool_api::arguments(
                        item.get("arguments"),
                        &format!("{at}.arguments"),
                    )?,
                };
                // Calls in a row are one assistant turn.
                match out.last_mut() {
                    Some(m) if m.role == "assistant" && !m.tool_calls.is_empty() => {
                        m.tool_calls.push(call)
                    }
                    _ => {
                        let mut m = Message::new("assistant", "");
                        m.tool_calls.push(call);
                        out.push(m);
                    }
                }
            }
            "function_call_output" => {
                let Some(id) = item.get("call_id").and_then(Value::as_str) else {
                    return Err(ApiError::invalid(
                        &format!("{at}.call_id"),
                        format!("{at}.call_id must be a string"),
                    ));
                };
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) if !v.is_null() => v.to_string(),
                    _ => {
                        return Err(ApiError::invalid(
                            &format!("{at}.output"),
                            format!("{at}.output must be a string"),
                        ))
                    }
                };
                let mut m = Message::new("tool", &output);
                m.name = out
                    .iter()
                    .flat_map(|p| &p.tool_calls)
                    .find(|c| c.id == id)
                    .map(|c| c.name.clone());
                m.tool_call_id = Some(id.to_string());
                out.push(m);
            }
            other => {
                return Err(ApiError::invalid(
                    &format!("{at}.type"),
                    format!("input items of type {other:?} are not supported"),
                ))
            }
        }
    }
    Ok(out)
}

/// What the response object repeats of the request.
struct Echo {
    id: String,
    created_at: u64,
    model: String,
    instructions: Option<String>,
    tools: Vec<Value>,
    tool_choice: Value,
    parallel_tool_calls: bool,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_output_tokens: Option<i64>,
    text: Value,
    metadata: Value,
}

impl Echo {
    fn response(&self, status: &str, output: Vec<Value>, summary: Option<&Summary>) -> Value {
        let incomplete = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": output,
            "error": null,
            "incomplete_details": incomplete,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "parallel_tool_calls": self.parallel_tool_calls,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "tool_choice": self.tool_choice,
            // Flat, as the Responses API writes them.
            "tools": self.tools.iter().map(|t| {
                let f = &t["function"];
                json!({"type": "function", "name": f["name"], "description": f.get("description"),
                       "parameters": f.get("parameters"), "strict": false})
            }).collect::<Vec<_>>(),
            "text": self.text,
            "metadata": self.metadata,
            "store": false,
            "usage": summary.map(|s| json!({
                "input_tokens": s.prompt_tokens,
                "input_tokens_details": {"cached_tokens": s.cached_tokens},
                "output_tokens": s.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": s.prompt_tokens + s.completion_tokens,
            })),
        })
    }
}

fn status_of(s: &Summary) -> &'static str {
    if s.finish.as_str() == "length" {
        "incomplete"
    } else {
        "completed"
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    })
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "type": "function_call",
        "id": id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    })
}

async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let req: ResponsesRequest = parse_body(body)?;
    if req
        .previous_response_id
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::invalid(
            "previous_response_id",
            "responses are not stored, so previous_response_id cannot be used: send the whole \
             conversation in input",
        )
        .into());
    }
    let tools = tool_api::check_tools("tools", req.tools.as_ref(), true)?;
    let choice = tool_api::check_choice("tool_choice", req.tool_choice.as_ref(), &tools, true)?;
    let parallel = req.parallel_tool_calls.unwrap_or(true);
    let use_tools = !tools.is_empty() && choice != ToolChoice::None;
    let format_grammar = super::format::responses_text_format(
        "text.format",
        req.text.as_ref().and_then(|t| t.get("format")),
    )?;
    let sampler = SamplerRequest {
        temperature: float("temperature", req.temperature.as_ref(), 0.0, 2.0)?,
        top_p: float("top_p", req.top_p.as_ref(), 0.0, 1.0)?,
        seed: seed("seed", req.seed.as_ref())?,
        ..SamplerRequest::default()
    };
    let max_output_tokens = int(
        "max_output_tokens",
        req.max_output_tokens.as_ref(),
        1,
        params::MAX_TOKENS_LIMIT,
    )?;
    let messages = input_messages(&req.input, req.instructions.as_deref())?;
    let call_grammar = if matches!(choice, ToolChoice::Required | ToolChoice::Function(_)) {
        match super::tool_format(&state, &req.model).await? {
            Some(format) => tool_call_grammar(format, &tools, &choice, parallel),
            None => {
                return Err(ApiError::invalid(
                    "tools",
                    format!(
                        "{}'s chat template has no tool calls: this model cannot be given tools",
                        req.model
                    ),
                )
                .into())
            }
        }
    } else {
        None
    };
    let grammar_param = if call_grammar.is_some() {
        "tool_choice"
    } else {
        "text.format"
    };
    let grammar: Option<Grammar> = call_grammar.or(format_grammar);
    let spec = GenSpec {
        model: req.model.clone(),
        input: Input::Chat(messages),
        budget: max_output_tokens.map(|n| Budget::Exactly(n as usize)),
        budget_param: "max_output_tokens",
        sampler: sampler.clone(),
        stop: Vec::new(),
        n_ctx: None,
        use_preset_system: true,
        logprobs: None,
        grammar,
        grammar_param,
        keep_alive: None,
        api: Api::OpenAi,
        tools: use_tools.then(|| tools.clone()),
    };
    let run = start(&state, spec).await?;
    let mut parser = output_parser(&run, use_tools, true, super::random_seed());
    let echo = Echo {
        id: request_id("resp"),
        created_at: unix_now(),
        model: req.model,
        instructions: req.instructions,
        tools,
        tool_choice: req.tool_choice.unwrap_or(json!("auto")),
        parallel_tool_calls: parallel,
        temperature: sampler.temperature,
        top_p: sampler.top_p,
        max_output_tokens,
        text: req.text.unwrap_or(json!({"format": {"type": "text"}})),
        metadata: req.metadata.unwrap_or(json!({})),
    };
    if !req.stream.unwrap_or(false) {
        let answer = collect(run).await?;
        let parsed = Parsed::of(&answer.text, &mut parser);
        let status = status_of(&answer.summary);
        let mut output = Vec::new();
        if !parsed.content.is_empty() || parsed.calls.is_empty() {
            output.push(message_item(&request_id("msg"), &parsed.content, status));
        }
        for c in &parsed.calls {
            output.push(call_item(
                &request_id("fc"),
                &c.id,
                &c.name,
                &c.arguments,
                "completed",
            ));
        }
        return Ok(Json(echo.response(status, output, Some(&answer.summary))).into_response());
    }
    let mut s = Streamer {
        echo,
        seq: 0,
        done: Vec::new(),
        open: None,
    };
    let first = vec![
        s.event(
            "response.created",
            json!({"response": s.echo.response("in_progress", Vec::new(), None)}),
        ),
        s.event(
            "response.in_progress",
            json!({"response": s.echo.response("in_progress", Vec::new(), None)}),
        ),
    ];
    let stream = relay(run, move |ev| match ev {
        Event::Piece(p) => s.parsed(parser.push(p)),
        Event::Done(summary) => {
            let mut out = s.parsed(parser.finish());
            out.extend(s.close());
            let status = status_of(summary);
            if s.done.is_empty() {
                // An empty answer is still one (empty) message.
                let id = request_id("msg");
                out.extend(s.open_message(&id));
                out.extend(s.close());
            }
            let kind = if status == "completed" {
                "response.completed"
            } else {
                "response.incomplete"
            };
            let response = s.echo.response(status, s.done.clone(), Some(summary));
            out.push(s.event(kind, json!({"response": response})));
            out
        }
        Event::Error(e) => vec![s.event(
            "error",
            json!({"code": e.code, "message": e.message, "param": e.param}),
        )],
        _ => Vec::new(),
    });
    let all = futures_util::stream::iter(first).chain(stream);
    Ok(Sse::new(all.map(|line| {
        let (name, data) = line.split_once('\n').unwrap_or(("message", line.as_str()));
        Ok::<_, Infallible>(SseEvent::default().event(name).data(data))
    }))
    .into_response())
}

/// The item being written.
enum Open {
    Message { id: String, text: String },
    Call(tool_api::Call, String),
}

/// The state of a streamed response: the items done, the one open, the event count.
struct Streamer {
    echo: Echo,
    seq: u64,
    done: Vec<Value>,
    open: Option<Open>,
}

impl Streamer {
    /// One SSE event as `name\ndata`.
    fn event(&mut self, kind: &str, mut data: Value) -> String {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        format!("{kind}\n{data}")
    }

    fn index(&self) -> usize {
        self.done.len()
    }

    fn open_message(&mut self, id: &str) -> Vec<String> {
        let index = self.index();
        self.open = Some(Open::Message {
            id: id.to_string(),
            text: String::new(),
        });
        let mut item = message_item(id, "", "in_progress");
        item["content"] = json!([]);
        vec![
            self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ),
            self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            ),
        ]
    }

    /// Ends the open item.
    fn close(&mut self) -> Vec<String> {
        let index = self.index();
        match self.open.take() {
            None => Vec::new(),
            Some(Open::Message { id, text }) => {
                let item = message_item(&id, &text, "completed");
                let part = item["content"][0].clone();
                let out = vec![
                    self.event(
                        "response.output_text.done",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                               "text": text, "logprobs": []}),
                    ),
                    self.event(
                        "response.content_part.done",
                        json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                    ),
                    self.event(
                        "response.output_item.done",
                        json!({"output_index": index, "item": item}),
                    ),
                ];
                self.done.push(message_item(&id, &text, "completed"));
                out
            }
            Some(Open::Call(c, id)) => {
                let item = call_item(&id, &c.id, &c.name, &c.arguments, "completed");
                let out = vec![
                    self.event(
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": index, "name": c.name,
                               "arguments": c.arguments}),
                    ),
                    self.event(
                        "response.output_item.done",
                        json!({"output_index": index, "item": item}),
                    ),
                ];
                self.done.push(item);
                out
            }
        }
    }

    fn parsed(&mut self, events: Vec<ParseEvent>) -> Vec<String> {
        let mut out = Vec::new();
        for e in events {
            match e {
                ParseEvent::Content(t) => {
                    if !matches!(self.open, Some(Open::Message { .. })) {
                        out.extend(self.close());
                        let id = request_id("msg");
                        out.extend(self.open_message(&id));
                    }
                    let index = self.index();
                    if let Some(Open::Message { id, text }) = &mut self.open {
                        text.push_str(&t);
                        let id = id.clone();
                        out.push(self.event(
                            "response.output_text.delta",
                            json!({"item_id": id, "output_index": index, "content_index": 0,
                                   "delta": t, "logprobs": []}),
                        ));
                    }
                }
                // Reasoning is not part of this API's output here.
                ParseEvent::Reasoning(_) => {}
                ParseEvent::ToolCallStart { id, name, .. } => {
                    out.extend(self.close());
                    let index = self.index();
                    let item_id = request_id("fc");
                    let item = call_item(&item_id, &id, &name, "", "in_progress");
                    self.open = Some(Open::Call(
                        tool_api::Call {
                            id,
                            name,
                            arguments: String::new(),
                        },
                        item_id,
                    ));
                    out.push(self.event(
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    ));
                }
                ParseEvent::ToolCallArgs { delta, .. } => {
                    let index = self.index();
                    if let Some(Open::Call(c, item_id)) = &mut self.open {
                        c.arguments.push_str(&delta);
                        let item_id = item_id.clone();
                        out.push(self.event(
                            "response.function_call_arguments.delta",
                            json!({"item_id": item_id, "output_index": index, "delta": delta}),
                        ));
                    }
                }
            }
        }
        out
    }
}
