//! Structured output over the tiny synthetic model (random weights, so whatever it writes is
//! the grammar's doing): OpenAI `response_format`, Ollama `format`, llama.cpp's `grammar` and
//! `json_schema` on `/v1/completions`, `/v1/responses`' `text.format`, a forced tool call, and
//! the 400s for grammars that do not compile. Real clients against a real model are
//! `crates/cli/tests/serve_structured.rs`.

mod support;

use axum::http::StatusCode;
use serde_json::{json, Value};
use support::*;

/// Small enough that a random model always finishes it within the budget.
fn pet_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "kind": {"enum": ["cat", "dog", "fish"]},
            "indoor": {"type": "boolean"},
        },
        "required": ["kind", "indoor"],
        "additionalProperties": false,
    })
}

fn assert_pet(text: &str, what: &str) {
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text:?}"));
    let o = v.as_object().unwrap_or_else(|| panic!("{what}: {v}"));
    assert_eq!(o.len(), 2, "{what}: {v}");
    assert!(
        ["cat", "dog", "fish"].contains(&o["kind"].as_str().unwrap_or("")),
        "{what}: {v}"
    );
    assert!(o["indoor"].is_boolean(), "{what}: {v}");
}

#[tokio::test]
async fn response_format_json_schema_is_followed_for_every_seed() {
    let app = default_server();
    for seed in 0..6 {
        let body = chat_body(json!({
            "temperature": 1.0,
            "seed": seed,
            "max_tokens": 48,
            "response_format": {"type": "json_schema",
                "json_schema": {"name": "pet", "strict": true, "schema": pet_schema()}},
        }));
        let r = send(&app, post("/v1/chat/completions", &body)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
        assert_pet(
            v["choices"][0]["message"]["content"].as_str().unwrap(),
            &format!("seed {seed}"),
        );
    }
}

#[tokio::test]
async fn json_object_is_json_streamed_or_not() {
    let app = default_server();
    let body = chat_body(json!({
        "temperature": 0.7, "seed": 3, "max_tokens": 64,
        "response_format": {"type": "json_object"},
    }));
    let r = send(&app, post("/v1/chat/completions", &body)).await;
    let v = r.json();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    if v["choices"][0]["finish_reason"] == "stop" {
        let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(parsed.is_object(), "{text}");
    } else {
        assert!(text.trim_start().starts_with('{'), "{text}");
    }
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = send(&app, post("/v1/chat/completions", &streamed)).await;
    let mut joined = String::new();
    for d in sse_data(&r.text()) {
        if d == "[DONE]" {
            break;
        }
        let c: Value = serde_json::from_str(&d).unwrap();
        if let Some(s) = c["choices"][0]["delta"]["content"].as_str() {
            joined.push_str(s);
        }
    }
    assert_eq!(
        joined, text,
        "the stream writes what the whole answer holds"
    );
}

#[tokio::test]
async fn ollama_format_schema_and_json() {
    let app = default_server();
    for (uri, body) in [
        (
            "/api/chat",
            json!({"model": model(), "stream": false, "format": pet_schema(),
                "messages": [{"role": "user", "content": "a pet"}],
                "options": {"seed": 5, "temperature": 1.0, "num_predict": 48}}),
        ),
        (
            "/api/generate",
            json!({"model": model(), "stream": false, "format": pet_schema(), "prompt": "a pet",
                "options": {"seed": 6, "temperature": 1.0, "num_predict": 48}}),
        ),
    ] {
        let r = send(&app, post(uri, &body)).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
        let v = r.json();
        let text = v["message"]["content"]
            .as_str()
            .or(v["response"].as_str())
            .unwrap();
        assert_eq!(v["done_reason"], "stop", "{uri}: {v}");
        assert_pet(text, uri);
    }
    let r = send(
        &app,
        post(
            "/api/generate",
            &json!({"model": model(), "stream": false, "format": "json", "prompt": "x",
                "options": {"seed": 1, "num_predict": 64}}),
        ),
    )
    .await;
    let v = r.json();
    let text = v["response"].as_str().unwrap();
    assert!(text.trim_start().starts_with('{'), "{v}");
}

#[tokio::test]
async fn completions_take_gbnf_and_json_schema() {
    let app = default_server();
    let gbnf = "root ::= answer \".\"\nanswer ::= \"yes\" | \"no\" | \"maybe\"\n";
    for seed in 0..4 {
        let r = send(
            &app,
            post(
                "/v1/completions",
                &json!({"model": model(), "prompt": "Is it?", "grammar": gbnf,
                    "temperature": 1.0, "seed": seed, "max_tokens": 16}),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        let text = v["choices"][0]["text"].as_str().unwrap();
        assert!(
            ["yes.", "no.", "maybe."].contains(&text),
            "seed {seed}: {text:?}"
        );
    }
    let r = send(
        &app,
        post(
            "/v1/completions",
            &json!({"model": model(), "prompt": "A pet:", "json_schema": pet_schema(),
                "temperature": 1.0, "seed": 2, "max_tokens": 48}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_pet(
        r.json()["choices"][0]["text"].as_str().unwrap(),
        "json_schema",
    );
}

#[tokio::test]
async fn responses_text_format_is_followed() {
    let app = default_server();
    let r = send(
        &app,
        post(
            "/v1/responses",
            &json!({"model": model(), "input": "a pet", "temperature": 1.0, "seed": 4,
                "max_output_tokens": 48,
                "text": {"format": {"type": "json_schema", "name": "pet", "schema": pet_schema()}}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    let text = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "message")
        .and_then(|o| o["content"][0]["text"].as_str())
        .unwrap_or_else(|| panic!("{v}"));
    assert_pet(text, "responses");
}

#[tokio::test]
async fn grammars_that_do_not_compile_are_400_naming_the_field() {
    let app = default_server();
    let cases = [
        (
            "/v1/completions",
            json!({"model": model(), "prompt": "x", "grammar": "root ::= undefined_rule"}),
            "grammar",
        ),
        (
            "/v1/completions",
            json!({"model": model(), "prompt": "x", "grammar": "root ::= \"a", "max_tokens": 4}),
            "grammar",
        ),
        (
            "/v1/completions",
            json!({"model": model(), "prompt": "x", "grammar": "root ::= \"a\"",
                "json_schema": {"type": "object"}}),
            "grammar",
        ),
        (
            "/v1/completions",
            json!({"model": model(), "prompt": "x", "grammar": 7}),
            "grammar",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}})),
            "response_format",
        ),
        (
            "/v1/chat/completions",
            chat_body(
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 5}}}),
            ),
            "response_format.json_schema.schema",
        ),
        (
            "/api/chat",
            json!({"model": model(), "messages": [{"role": "user", "content": "x"}], "format": "yaml"}),
            "format",
        ),
        (
            "/api/generate",
            json!({"model": model(), "prompt": "x", "format": {"type": "strnig"}}),
            "format",
        ),
    ];
    for (uri, body, param) in cases {
        let r = send(&app, post(uri, &body)).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{uri} {body}: {}",
            r.text()
        );
        let v = r.json();
        let text = v["error"].to_string();
        assert!(
            text.contains(param),
            "{uri} {body}: expected {param}: {text}"
        );
    }
}
