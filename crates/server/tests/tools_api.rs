//! Tools, n choices and /v1/responses over the tiny synthetic model: request checks (400s
//! that name the field) and the shapes of whole and streamed answers. Whether a real model's
//! calls come back parsed is `crates/cli/tests/serve_clients.rs`'s job (Qwen2.5-Coder).

mod support;

use axum::http::StatusCode;
use serde_json::{json, Value};
use std::sync::OnceLock;
use support::*;

/// A short Hermes-style template (tools, calls and tool results shown; `<tool_call>` marks
/// calls): the synthetic model's context is too small for a real model's tool prompt.
const TOOL_TEMPLATE: &str = "{%- if tools %}T:{% for t in tools %}{{ t.function.name }} {% endfor %}\n{% endif %}\
{%- for m in messages %}{{ m.role[0] }}:\
{%- if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function.name }}{{ c.function.arguments | tojson }}</tool_call>{% endfor %}\
{%- elif m.role == 'tool' %}{{ m.name }}={{ m.content }}\
{%- else %}{{ m.content }}{% endif %}\n{% endfor %}\
{%- if add_generation_prompt %}a:{% endif %}";

/// The synthetic model with [`TOOL_TEMPLATE`].
fn tool_model() -> String {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let f = gguf::GgufFile::open(base_model()).unwrap();
        let mut w = gguf::GgufWriter::from_file(&f).unwrap();
        w.add("tokenizer.chat_template", TOOL_TEMPLATE);
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("llama_q8_0_tools.gguf");
        w.write(&path).unwrap();
        path.to_string_lossy().into_owned()
    })
    .clone()
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }})
}

async fn bad(app: &axum::Router, uri: &str, body: Value, param: &str) {
    let r = send(app, post(uri, &body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
    let j = r.json();
    let got = j["error"]["param"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| j["error"].to_string());
    assert!(
        got.contains(param),
        "{body}: expected {param}, got {}",
        r.text()
    );
}

#[tokio::test]
async fn bad_tools_and_tool_messages_are_400_naming_the_field() {
    let app = default_server();
    let m = tool_model();
    let chat = |extra: Value| {
        let mut b = chat_body(extra);
        b["model"] = json!(m);
        b
    };
    let cases = [
        (
            json!({"tools": [weather_tool(), {"type": "function", "function": {"name": "bad name!"}}]}),
            "tools[1].function.name",
        ),
        (json!({"tools": [{"type": "retrieval"}]}), "tools[0].type"),
        (
            json!({"tools": [{"type": "function"}]}),
            "tools[0].function",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"tools": [weather_tool(), weather_tool()]}),
            "tools[1].function.name",
        ),
        (json!({"tools": {"a": 1}}), "tools"),
        (
            json!({"tools": [weather_tool()], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice.function.name",
        ),
        (
            json!({"tools": [weather_tool()], "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{not json"}}]},
            ]}),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]},
            ]}),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]},
            ]}),
            "messages[1].tool_calls[0].function",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi", "tool_calls": []}]}),
            "messages[0].tool_calls",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "18C"}]}),
            "messages[1].tool_call_id",
        ),
        (json!({"n": 9}), "n"),
        (json!({"n": 0}), "n"),
    ];
    for (extra, param) in cases {
        bad(&app, "/v1/chat/completions", chat(extra), param).await;
    }
    // A model whose template has no tool calls cannot be given tools.
    bad(
        &app,
        "/v1/chat/completions",
        chat_body(json!({"tools": [weather_tool()]})),
        "tools",
    )
    .await;
}

#[tokio::test]
async fn tools_and_tool_history_render_and_answer() {
    let app = default_server();
    let body = json!({
        "model": tool_model(),
        "max_tokens": 6,
        "temperature": 0,
        "tools": [weather_tool()],
        "tool_choice": "auto",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
        ],
    });
    let r = send(&app, post("/v1/chat/completions", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    let choice = &j["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    // Random weights write no call: the text comes back as content.
    assert!(choice["message"]["content"].is_string(), "{j}");
    assert!(choice["message"].get("tool_calls").is_none(), "{j}");
    assert!(matches!(
        choice["finish_reason"].as_str(),
        Some("stop" | "length")
    ));
    // The tools are in the prompt: it is longer than without them.
    let mut without = body.clone();
    without.as_object_mut().unwrap().remove("tools");
    without.as_object_mut().unwrap().remove("tool_choice");
    let r2 = send(&app, post("/v1/chat/completions", &without)).await;
    assert_eq!(r2.status, StatusCode::OK, "{}", r2.text());
    assert!(
        j["usage"]["prompt_tokens"].as_u64() > r2.json()["usage"]["prompt_tokens"].as_u64(),
        "{j}"
    );
    // tool_choice "none" shows no tools either.
    let mut none = body.clone();
    none["tool_choice"] = json!("none");
    let r3 = send(&app, post("/v1/chat/completions", &none)).await;
    assert_eq!(
        r3.json()["usage"]["prompt_tokens"],
        r2.json()["usage"]["prompt_tokens"]
    );
    // Ollama's shape of the same conversation.
    let body = json!({
        "model": tool_model(),
        "stream": false,
        "think": true,
        "options": {"num_predict": 4, "temperature": 0},
        "tools": [weather_tool()],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "tool_name": "get_weather", "content": "18C"},
        ],
    });
    let r = send(&app, post("/api/chat", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["message"]["content"].is_string());
    let mut b = body.clone();
    b["tools"] = json!([{"type": "function", "function": {"name": ""}}]);
    bad(&app, "/api/chat", b, "tools[0].function.name").await;
    let mut b = body.clone();
    b["messages"][1]["tool_calls"][0]["function"]["arguments"] = json!("{oops");
    bad(
        &app,
        "/api/chat",
        b,
        "messages[1].tool_calls[0].function.arguments",
    )
    .await;
    let mut b = body;
    b["think"] = json!("very");
    bad(&app, "/api/chat", b, "think").await;
}

#[tokio::test]
async fn n_choices_whole_and_streamed() {
    let app = default_server();
    let body = chat_body(json!({"n": 3, "max_tokens": 5, "temperature": 1.0, "seed": 42}));
    let r = send(&app, post("/v1/chat/completions", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    let choices = j["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert!(c["message"]["content"].is_string());
    }
    assert_eq!(
        j["usage"]["total_tokens"].as_u64().unwrap(),
        j["usage"]["prompt_tokens"].as_u64().unwrap()
            + j["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert!(j["usage"]["completion_tokens"].as_u64().unwrap() >= 3);
    // Choice i is the answer a single request with seed 42 + i gives.
    for i in 0..3 {
        let one = chat_body(json!({"max_tokens": 5, "temperature": 1.0, "seed": 42 + i}));
        let r = send(&app, post("/v1/chat/completions", &one)).await;
        assert_eq!(
            r.json()["choices"][0]["message"]["content"],
            choices[i as usize]["message"]["content"],
            "choice {i}"
        );
    }
    // Streamed: every chunk names its choice; each choice ends once; usage covers all.
    let mut body = body;
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = send(&app, post("/v1/chat/completions", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let data = sse_data(&r.text());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let mut texts = vec![String::new(); 3];
    let mut finishes = [0; 3];
    for c in &chunks[..chunks.len() - 1] {
        let ch = &c["choices"][0];
        let i = ch["index"].as_u64().unwrap() as usize;
        if let Some(t) = ch["delta"]["content"].as_str() {
            texts[i].push_str(t);
        }
        if ch["finish_reason"].is_string() {
            finishes[i] += 1;
        }
    }
    assert_eq!(finishes, [1, 1, 1]);
    for i in 0..3 {
        assert_eq!(texts[i], choices[i]["message"]["content"], "choice {i}");
    }
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage["usage"][k], j["usage"][k], "{k}");
    }
}

#[tokio::test]
async fn responses_whole_and_streamed() {
    let app = default_server();
    let body = json!({"model": model(), "input": "Hello", "instructions": "Be brief.",
                      "max_output_tokens": 5, "temperature": 0});
    let r = send(&app, post("/v1/responses", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    assert_eq!(j["object"], "response");
    assert!(j["id"].as_str().unwrap().starts_with("resp"));
    assert!(matches!(
        j["status"].as_str(),
        Some("completed" | "incomplete")
    ));
    let item = &j["output"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["content"][0]["type"], "output_text");
    let text = item["content"][0]["text"].as_str().unwrap().to_string();
    let u = &j["usage"];
    assert!(u["output_tokens"].as_u64().unwrap() <= 5);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
    );
    if j["status"] == "incomplete" {
        assert_eq!(j["incomplete_details"]["reason"], "max_output_tokens");
    }

    let mut s = body.clone();
    s["stream"] = json!(true);
    let r = send(&app, post("/v1/responses", &s)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body_text = r.text();
    let names: Vec<&str> = body_text
        .lines()
        .filter_map(|l| l.strip_prefix("event:"))
        .map(str::trim)
        .collect();
    let events: Vec<Value> = sse_data(&body_text)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(names.len(), events.len());
    for (i, (n, e)) in names.iter().zip(&events).enumerate() {
        assert_eq!(e["type"], *n);
        assert_eq!(e["sequence_number"], i);
    }
    assert_eq!(names[0], "response.created");
    assert_eq!(names[1], "response.in_progress");
    assert_eq!(names[2], "response.output_item.added");
    assert_eq!(names[3], "response.content_part.added");
    let last = events.last().unwrap();
    assert!(matches!(
        names.last().copied(),
        Some("response.completed" | "response.incomplete")
    ));
    let streamed: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, text);
    let done = events
        .iter()
        .find(|e| e["type"] == "response.output_text.done")
        .unwrap();
    assert_eq!(done["text"], text);
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], text);
    assert!(names.contains(&"response.output_item.done"));

    // Items: a call and its output go back to the model.
    let items = json!({"model": tool_model(), "max_output_tokens": 3,
    "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "3C"},
    ]});
    let r = send(&app, post("/v1/responses", &items)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["tools"][0]["name"], "get_weather");

    let mut b = body.clone();
    b["previous_response_id"] = json!("resp_1");
    bad(&app, "/v1/responses", b, "previous_response_id").await;
    let mut b = items.clone();
    b["input"][1]["arguments"] = json!("{");
    bad(&app, "/v1/responses", b, "input[1].arguments").await;
    let mut b = items.clone();
    b["input"][0] = json!({"type": "image", "url": "x"});
    bad(&app, "/v1/responses", b, "input[0].type").await;
    let mut b = items.clone();
    b["tools"][0]["name"] = json!("has space");
    bad(&app, "/v1/responses", b, "tools[0].name").await;
    let mut b = items;
    b["tool_choice"] = json!({"type": "function", "name": "other"});
    bad(&app, "/v1/responses", b, "tool_choice.name").await;
    let mut b = body.clone();
    b["text"] = json!({"format": {"type": "json_schema", "schema": 3}});
    bad(&app, "/v1/responses", b, "text.format.schema").await;
    let mut b = body;
    b["input"] = json!([]);
    bad(&app, "/v1/responses", b, "input").await;
}

/// `required` and a named `tool_choice` force a call whose arguments follow the tool's
/// parameters, even from a model with random weights.
#[tokio::test]
async fn required_and_named_tool_choice_force_a_parsed_call() {
    let app = default_server();
    let unit_tool = json!({"type": "function", "function": {
        "name": "set_unit",
        "parameters": {"type": "object",
            "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["unit"], "additionalProperties": false},
    }});
    let light_tool = json!({"type": "function", "function": {
        "name": "lights",
        "parameters": {"type": "object",
            "properties": {"on": {"type": "boolean"}},
            "required": ["on"], "additionalProperties": false},
    }});
    let choices = [
        (json!("required"), None),
        (
            json!({"type": "function", "function": {"name": "lights"}}),
            Some("lights"),
        ),
    ];
    for (choice, want) in choices {
        for seed in 0..3 {
            let mut b = chat_body(json!({
                "tools": [unit_tool.clone(), light_tool.clone()],
                "tool_choice": choice.clone(),
                "parallel_tool_calls": false,
                "temperature": 1.0,
                "seed": seed,
                // The synthetic vocabulary spells one character per token.
                "max_tokens": 160,
            }));
            b["model"] = json!(tool_model());
            let r = send(&app, post("/v1/chat/completions", &b)).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            let v = r.json();
            let c = &v["choices"][0];
            assert_eq!(
                c["finish_reason"], "tool_calls",
                "{choice} seed {seed}: {v}"
            );
            let calls = c["message"]["tool_calls"].as_array().unwrap();
            assert_eq!(calls.len(), 1, "{v}");
            let f = &calls[0]["function"];
            let name = f["name"].as_str().unwrap();
            if let Some(want) = want {
                assert_eq!(name, want, "{v}");
            }
            let args: Value = serde_json::from_str(f["arguments"].as_str().unwrap()).unwrap();
            match name {
                "set_unit" => assert!(
                    ["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap_or("")),
                    "{args}"
                ),
                "lights" => assert!(args["on"].is_boolean(), "{args}"),
                other => panic!("a call to {other}: {v}"),
            }
        }
    }
}
