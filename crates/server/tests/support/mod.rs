//! What the API tests share: a router over the tiny synthetic model with an empty store, and
//! small request helpers.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use server::{app, AppState, Config};
use std::path::PathBuf;
use std::sync::OnceLock;
use tower::ServiceExt;

/// The tiny synthetic model as it is: no chat template, so a base model to the server.
pub fn base_model() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/synthetic/llama_q8_0.gguf")
        .to_string_lossy()
        .into_owned()
}

/// The tiny synthetic model with ChatML as its chat template (written once per test binary),
/// so that it chats.
pub fn model() -> String {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let f = gguf::GgufFile::open(base_model()).unwrap();
        let mut w = gguf::GgufWriter::from_file(&f).unwrap();
        w.add("tokenizer.chat_template", engine::chat::CHATML_TEMPLATE);
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("llama_q8_0_chatml.gguf");
        w.write(&path).unwrap();
        path.to_string_lossy().into_owned()
    })
    .clone()
}

/// An empty store for the whole test binary.
pub fn home() -> &'static PathBuf {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        std::env::set_var("HEARTH_HOME", &dir);
        std::env::set_var("HEARTH_OFFLINE", "1");
        dir
    })
}

pub fn server(config: Config) -> Router {
    home();
    let config = Config {
        threads: Some(1),
        ..config
    };
    app(AppState::new(config, Box::new(models_store())))
}

/// Store names, and the files the tests name by path: the synthetic models, those written
/// to temporary directories and the real ones in the test-model cache.
pub fn models_store() -> server::models::StoreModels {
    let dirs = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/synthetic"),
        std::env::temp_dir(),
        testutil::cache_dir(),
    ];
    server::models::StoreModels::with_models_dirs(&dirs).expect("models dirs")
}

pub fn default_server() -> Router {
    server(Config::default())
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn post(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header(header::HOST, "localhost:11434")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, "127.0.0.1:11434")
        .body(Body::empty())
        .unwrap()
}

pub fn chat_body(extra: Value) -> Value {
    let mut b = json!({
        "model": model(),
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 8,
        "temperature": 0,
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect()
}

/// A Prometheus sample from `/metrics` text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}
