//! The HTTP API end to end through `Router::oneshot` (no socket), with a tiny synthetic model
//! (random weights: the text is noise, the shapes and numbers are what is checked).

mod support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use server::Config;
use support::*;
use tower::ServiceExt;

#[tokio::test]
async fn openai_chat_non_streaming() {
    let app = default_server();
    let r = send(
        &app,
        post("/v1/chat/completions", &chat_body(json!({"seed": 7}))),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], model());
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["choices"][0]["message"]["content"].is_string());
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length", "{finish}");
    let u = &v["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(u["completion_tokens"].as_u64().unwrap() <= 8);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    // Greedy is deterministic.
    let again = send(&app, post("/v1/chat/completions", &chat_body(json!({})))).await;
    assert_eq!(
        again.json()["choices"][0]["message"]["content"],
        v["choices"][0]["message"]["content"]
    );
    // /v1/models shows the loaded model (it is a path, not in the store).
    let m = send(&app, get("/v1/models")).await;
    assert_eq!(m.status, StatusCode::OK);
    let m = m.json();
    assert_eq!(m["object"], "list");
    assert!(m["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == model()));
    // One model by id (ids hold slashes: here a path), and a 404 naming the unknown one.
    let one = send(&app, get(&format!("/v1/models/{}", model()))).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["id"], model());
    assert_eq!(one.json()["object"], "model");
    let missing = send(&app, get("/v1/models/no-such-model:7b")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let e = missing.json();
    assert_eq!(e["error"]["code"], "model_not_found", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-model:7b"),
        "{e}"
    );
}

/// `/health` answers, and unknown paths get a JSON 404 in the path's dialect.
#[tokio::test]
async fn health_and_json_404s() {
    let app = default_server();
    let h = send(&app, get("/health")).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.json()["status"], "ok");
    let v1 = send(&app, get("/v1/nothing-here")).await;
    assert_eq!(v1.status, StatusCode::NOT_FOUND);
    assert_eq!(v1.json()["error"]["type"], "invalid_request_error");
    assert!(v1.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/nothing-here"));
    let api = send(&app, get("/api/nothing-here")).await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert!(api.json()["error"]
        .as_str()
        .unwrap()
        .contains("/api/nothing-here"));
}

#[tokio::test]
async fn openai_chat_streaming_with_usage() {
    let app = default_server();
    let body = chat_body(json!({
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": 6,
    }));
    let r = send(&app, post("/v1/chat/completions", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let data = sse_data(&r.text());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() <= 6);
    let finish = &chunks[chunks.len() - 2];
    assert!(finish["choices"][0]["finish_reason"].is_string());
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    // Same text as without streaming.
    let whole = send(
        &app,
        post("/v1/chat/completions", &chat_body(json!({"max_tokens": 6}))),
    )
    .await;
    assert_eq!(whole.json()["choices"][0]["message"]["content"], text);
}

#[tokio::test]
async fn openai_completions_and_stop() {
    let app = default_server();
    let body = json!({"model": model(), "prompt": "abc", "max_tokens": 5, "temperature": 0, "stop": ["zzz", "qq"]});
    let r = send(&app, post("/v1/completions", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].is_string());
    let mut s = body.clone();
    s["stream"] = json!(true);
    s["stop"] = json!("zzz");
    let r = send(&app, post("/v1/completions", &s)).await;
    assert_eq!(r.status, StatusCode::OK);
    let data = sse_data(&r.text());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, v["choices"][0]["text"].as_str().unwrap());
}

#[tokio::test]
async fn ollama_chat_and_generate() {
    let app = default_server();
    let body = json!({
        "model": model(),
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": false,
        "options": {"temperature": 0, "num_predict": 5, "top_k": 10, "seed": 3, "stop": ["xyz"]},
    });
    let r = send(&app, post("/api/chat", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["done"], true);
    assert_eq!(v["message"]["role"], "assistant");
    let whole = v["message"]["content"].as_str().unwrap().to_string();
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(v[k].is_u64(), "{k} in {v}");
    }
    assert!(v["prompt_eval_count"].as_u64().unwrap() > 0);
    assert!(["stop", "length"].contains(&v["done_reason"].as_str().unwrap()));

    // Streaming is the default: NDJSON, the last line done.
    let mut s = body.clone();
    s.as_object_mut().unwrap().remove("stream");
    let r = send(&app, post("/api/chat", &s)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/x-ndjson");
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true);
    assert!(last["eval_count"].is_u64());
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));
    let text: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(text, whole);

    let g = json!({"model": model(), "prompt": "Once", "options": {"num_predict": 4, "temperature": 0}});
    let r = send(&app, post("/api/generate", &g)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["done"], true);
    assert!(lines.last().unwrap()["eval_count"].as_u64().unwrap() <= 4);

    // An empty prompt only loads the model.
    let r = send(
        &app,
        post("/api/generate", &json!({"model": model(), "stream": false})),
    )
    .await;
    assert_eq!(r.json()["done_reason"], "load");
}

#[tokio::test]
async fn tags_and_version() {
    let app = default_server();
    let r = send(&app, get("/api/tags")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["models"], json!([]));
    let r = send(&app, get("/api/version")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["version"].is_string());
}

#[tokio::test]
async fn bad_numbers_are_400_naming_the_field() {
    let app = default_server();
    let big = json!(i64::MAX);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/chat/completions",
            chat_body(json!({"max_tokens": -1})),
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"max_tokens": 0})),
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"max_tokens": big})),
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"max_tokens": 1e308})),
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"max_completion_tokens": 0})),
            "max_completion_tokens",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"temperature": -1})),
            "temperature",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"temperature": 1e308})),
            "temperature",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"top_p": 1.5})),
            "top_p",
        ),
        ("/v1/chat/completions", chat_body(json!({"n": 9})), "n"),
        ("/v1/chat/completions", chat_body(json!({"n": 0})), "n"),
        (
            "/v1/chat/completions",
            chat_body(json!({"seed": 1.5})),
            "seed",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"presence_penalty": big})),
            "presence_penalty",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"response_format": {"type": "xml"}})),
            "response_format",
        ),
        // (Prompt + max_tokens over the context is served, capped: prompt_and_admission.rs.)
        (
            "/v1/completions",
            json!({"model": model(), "prompt": "x", "max_tokens": -1}),
            "max_tokens",
        ),
        (
            "/api/chat",
            json!({"model": model(), "messages": [], "options": {"top_k": -1}}),
            "top_k",
        ),
        (
            "/api/chat",
            json!({"model": model(), "messages": [], "options": {"num_predict": big}}),
            "num_predict",
        ),
        (
            "/api/generate",
            json!({"model": model(), "prompt": "x", "options": {"temperature": 1e308}}),
            "temperature",
        ),
        (
            "/api/generate",
            json!({"model": model(), "prompt": "x", "options": {"repeat_last_n": -5}}),
            "repeat_last_n",
        ),
        (
            "/api/generate",
            json!({"model": model(), "prompt": "x", "options": {"num_ctx": 0}}),
            "num_ctx",
        ),
        (
            "/api/generate",
            json!({"model": model(), "prompt": "x", "options": {"num_predict": 0}}),
            "num_predict",
        ),
        (
            "/api/generate",
            json!({"model": model(), "prompt": "x", "options": {"min_p": -0.5}}),
            "min_p",
        ),
        (
            "/api/generate",
            json!({"model": model(), "prompt": "x", "options": {"repeat_penalty": 0}}),
            "repeat_penalty",
        ),
        (
            "/api/generate",
            json!({"model": model(), "prompt": "x", "options": {"seed": 1e308}}),
            "seed",
        ),
    ];
    for (uri, body, field) in cases {
        let r = send(&app, post(uri, &body)).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{uri} {body}: {}",
            r.text()
        );
        let v = r.json();
        let msg = if uri.starts_with("/v1") {
            assert_eq!(v["error"]["type"], "invalid_request_error");
            v["error"]["message"].as_str().unwrap().to_string()
        } else {
            v["error"].as_str().unwrap().to_string()
        };
        assert!(
            msg.contains(field),
            "{uri} {body}: {msg:?} should name {field}"
        );
    }
    // Not JSON at all, and NaN (not JSON either).
    for raw in ["{", "{\"model\": \"m\", \"temperature\": NaN}"] {
        let req = Request::post("/v1/chat/completions")
            .header(header::HOST, "localhost")
            .body(Body::from(raw))
            .unwrap();
        assert_eq!(send(&app, req).await.status, StatusCode::BAD_REQUEST);
    }
    // A missing model is a 404 in each dialect's shape.
    let r = send(
        &app,
        post(
            "/v1/chat/completions",
            &json!({"model": "nosuch", "messages": [{"role": "user", "content": "x"}]}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    // The server still answers.
    let r = send(&app, get("/api/version")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(
        &app,
        post("/v1/chat/completions", &chat_body(json!({"max_tokens": 2}))),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn foreign_host_is_403() {
    let app = default_server();
    for host in [
        "evil.example",
        "evil.example:11434",
        "localhost.evil.example",
    ] {
        let req = Request::get("/api/version")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let r = send(&app, req).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{host}");
    }
    for host in ["localhost", "localhost:1234", "127.0.0.1:11434", "[::1]:80"] {
        let req = Request::get("/api/version")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, req).await.status, StatusCode::OK, "{host}");
    }
    // No CORS headers unless origins are named.
    let req = Request::get("/api/version")
        .header(header::HOST, "localhost")
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::empty())
        .unwrap();
    let r = send(&app, req).await;
    assert!(r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    let app = server(Config {
        cors_origins: vec!["http://localhost:3000".into()],
        ..Config::default()
    });
    let req = Request::get("/api/version")
        .header(header::HOST, "localhost")
        .header(header::ORIGIN, "http://localhost:3000")
        .body(Body::empty())
        .unwrap();
    let r = send(&app, req).await;
    assert_eq!(
        r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://localhost:3000"
    );
}

#[tokio::test]
async fn huge_body_is_413() {
    let app = default_server();
    let body = vec![b' '; 100 << 20];
    let req = Request::post("/v1/chat/completions")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .unwrap();
    let r = send(&app, req).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert!(r.json()["error"]["message"].is_string());
    // Without a length header too (a streamed body).
    let stream = futures_util::stream::iter(
        (0..100).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1 << 20]))),
    );
    let req = Request::post("/api/chat")
        .header(header::HOST, "localhost")
        .body(Body::from_stream(stream))
        .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn api_key_is_required_when_set() {
    let app = server(Config {
        api_key: Some("s3cret".into()),
        ..Config::default()
    });
    let r = send(&app, get("/api/version")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Health checks (load balancers, Kubernetes probes) need no key; nothing else does.
    let r = send(&app, get("/health")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(&app, get("/metrics")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let req = Request::get("/v1/models")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, "Bearer wrong")
        .body(Body::empty())
        .unwrap();
    let r = send(&app, req).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let req = Request::get("/api/version")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_dropped_stream_stops_generation() {
    let app = default_server();
    let body = chat_body(json!({"stream": true, "max_tokens": 200, "temperature": 1.0}));
    let resp = app
        .clone()
        .oneshot(post("/v1/chat/completions", &body))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    // The worker is free again soon: a short request completes.
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        send(
            &app,
            post("/v1/chat/completions", &chat_body(json!({"max_tokens": 2}))),
        ),
    )
    .await
    .expect("the worker should be free");
    assert_eq!(r.status, StatusCode::OK);
}

/// A model without a chat template is a base model: every request that would go through a
/// template is refused with 400 saying so and what works instead; raw completion works.
#[tokio::test]
async fn base_models_complete_text_but_do_not_chat() {
    let app = default_server();
    let m = base_model();
    let msgs = json!([{"role": "user", "content": "Hi"}]);
    for (uri, body) in [
        (
            "/v1/chat/completions",
            json!({"model": m, "messages": msgs, "max_tokens": 2}),
        ),
        (
            "/api/chat",
            json!({"model": m, "messages": msgs, "stream": false}),
        ),
        // Streaming too: the refusal comes before the stream starts.
        ("/api/chat", json!({"model": m, "messages": msgs})),
        (
            "/api/generate",
            json!({"model": m, "prompt": "Hi", "stream": false}),
        ),
    ] {
        let r = send(&app, post(uri, &body)).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{uri} {body}: {}",
            r.text()
        );
        let v = r.json();
        let msg = v["error"]
            .as_str()
            .or_else(|| v["error"]["message"].as_str())
            .unwrap_or_else(|| panic!("{uri}: {v}"))
            .to_string();
        assert!(msg.contains("is a base model"), "{uri}: {msg}");
        assert!(msg.contains("no chat template"), "{uri}: {msg}");
        assert!(msg.contains("\"raw\": true"), "{uri}: {msg}");
        assert!(msg.contains("/v1/completions"), "{uri}: {msg}");
        if uri.starts_with("/v1/") {
            assert_eq!(v["error"]["code"], "base_model", "{v}");
        }
    }
    for (uri, body) in [
        (
            "/api/generate",
            json!({"model": m, "prompt": "Once", "raw": true, "stream": false,
                   "options": {"num_predict": 2, "temperature": 0}}),
        ),
        (
            "/v1/completions",
            json!({"model": m, "prompt": "Once", "max_tokens": 2, "temperature": 0}),
        ),
    ] {
        let r = send(&app, post(uri, &body)).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
    }
}
