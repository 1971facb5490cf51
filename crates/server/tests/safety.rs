//! The server's safety promises, as issue #6 states them: `Host: evil.example` gets 403; a
//! 100 MB body gets 413 without being read whole; `-1`, `0`, NaN, 1e308 and i64::MAX in every
//! numeric field of every endpoint get a 400 naming the field unless the value is in that
//! field's documented range (then the request is served: never a 5xx); and `/api/version`
//! still answers afterwards.

mod support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use server::Config;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::{get, model, send, server};

/// The hostile numbers (NaN is sent separately: it is not JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum H {
    MinusOne,
    Zero,
    Huge,
    I64Max,
}

use H::*;

const HOSTILE: [H; 4] = [MinusOne, Zero, Huge, I64Max];

impl H {
    fn token(self) -> &'static str {
        match self {
            MinusOne => "-1",
            Zero => "0",
            Huge => "1e308",
            I64Max => "9223372036854775807",
        }
    }
}

/// Where a field lives.
#[derive(Clone, Copy, Debug)]
enum Endpoint {
    OpenAiChat,
    OpenAiCompletions,
    OpenAiEmbeddings,
    OllamaGenerate,
    OllamaChat,
    OllamaEmbed,
    OllamaEmbeddingsLegacy,
}

use Endpoint::*;

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            OpenAiChat => "/v1/chat/completions",
            OpenAiCompletions => "/v1/completions",
            OpenAiEmbeddings => "/v1/embeddings",
            OllamaGenerate => "/api/generate",
            OllamaChat => "/api/chat",
            OllamaEmbed => "/api/embed",
            OllamaEmbeddingsLegacy => "/api/embeddings",
        }
    }

    fn openai(self) -> bool {
        matches!(self, OpenAiChat | OpenAiCompletions | OpenAiEmbeddings)
    }

    /// A small valid request (two tokens at most, greedy).
    fn base(self) -> Value {
        let m = model();
        let msgs = json!([{"role": "user", "content": "Hi"}]);
        match self {
            OpenAiChat => json!({"model": m, "messages": msgs, "max_tokens": 2, "temperature": 0}),
            OpenAiCompletions => {
                json!({"model": m, "prompt": "Hi", "max_tokens": 2, "temperature": 0})
            }
            OpenAiEmbeddings => json!({"model": m, "input": "Hi"}),
            OllamaGenerate => json!({"model": m, "prompt": "Hi", "stream": false,
                                     "options": {"num_predict": 2, "temperature": 0}}),
            OllamaChat => json!({"model": m, "messages": msgs, "stream": false,
                                 "options": {"num_predict": 2, "temperature": 0}}),
            OllamaEmbed => json!({"model": m, "input": "Hi"}),
            OllamaEmbeddingsLegacy => json!({"model": m, "prompt": "Hi"}),
        }
    }
}

/// One numeric field: where it is (`options.top_k`; `logit_bias.1` is the value for token
/// 1), what else the request needs for it to count, and which hostile values are in its
/// documented range (those must be served, the others refused with a 400 naming the field).
struct Row {
    endpoint: Endpoint,
    field: &'static str,
    extra: Option<fn() -> Value>,
    accepts: &'static [H],
    /// The range, for people reading failures.
    range: &'static str,
}

const fn row(
    endpoint: Endpoint,
    field: &'static str,
    accepts: &'static [H],
    range: &'static str,
) -> Row {
    Row {
        endpoint,
        field,
        extra: None,
        accepts,
        range,
    }
}

/// Fields whose handling is still being written: their rows are listed but skipped. Remove
/// a name to enable its rows.
const PENDING: &[&str] = &[];

fn logprobs_on() -> Value {
    json!({"logprobs": true})
}

/// Every numeric field of every endpoint, with its documented range.
fn table() -> Vec<Row> {
    let mut rows = Vec::new();
    for e in [OpenAiChat, OpenAiCompletions] {
        rows.extend([
            row(e, "max_tokens", &[], "1..=1048576"),
            row(e, "temperature", &[Zero], "0..=2"),
            row(e, "top_p", &[Zero], "0..=1"),
            row(e, "seed", &[MinusOne, Zero, I64Max], "any 64-bit integer"),
            row(e, "n", &[], "1 (one choice per request)"),
            row(e, "presence_penalty", &[MinusOne, Zero], "-2..=2"),
            row(e, "frequency_penalty", &[MinusOne, Zero], "-2..=2"),
            // llama.cpp's extensions.
            row(e, "top_k", &[Zero], "0..=1048576 (0: off)"),
            row(e, "min_p", &[Zero], "0..=1"),
            row(e, "typical_p", &[Zero], "0..=1"),
            row(e, "repeat_penalty", &[], "0.01..=100"),
            row(
                e,
                "repeat_last_n",
                &[MinusOne, Zero],
                "-1 (whole context)..=1048576",
            ),
            row(e, "logit_bias.1", &[MinusOne, Zero], "-100..=100"),
        ]);
    }
    rows.extend([
        row(OpenAiChat, "max_completion_tokens", &[], "1..=1048576"),
        Row {
            extra: Some(logprobs_on),
            ..row(OpenAiChat, "top_logprobs", &[Zero], "0..=20")
        },
        row(OpenAiCompletions, "logprobs", &[Zero], "0..=5"),
        row(OpenAiCompletions, "best_of", &[], "1"),
        row(OpenAiEmbeddings, "dimensions", &[], "not settable"),
    ]);
    for e in [OllamaGenerate, OllamaChat] {
        rows.extend([
            row(
                e,
                "options.num_predict",
                &[MinusOne],
                "-2, -1 (no limit) or 1..=1048576",
            ),
            row(
                e,
                "options.num_ctx",
                &[],
                "16..=the server's --ctx (64 here)",
            ),
            row(e, "options.temperature", &[Zero], "0..=100"),
            row(e, "options.top_k", &[Zero], "0..=1048576"),
            row(e, "options.top_p", &[Zero], "0..=1"),
            row(e, "options.min_p", &[Zero], "0..=1"),
            row(e, "options.typical_p", &[Zero], "0..=1"),
            row(e, "options.repeat_penalty", &[], "0.01..=100"),
            row(
                e,
                "options.repeat_last_n",
                &[MinusOne, Zero],
                "-1..=1048576",
            ),
            row(e, "options.presence_penalty", &[MinusOne, Zero], "-2..=2"),
            row(e, "options.frequency_penalty", &[MinusOne, Zero], "-2..=2"),
            row(
                e,
                "options.seed",
                &[MinusOne, Zero, I64Max],
                "any 64-bit integer",
            ),
            row(
                e,
                "keep_alive",
                &[MinusOne, Zero],
                "seconds up to a year; negative: forever",
            ),
        ]);
    }
    for e in [OllamaEmbed, OllamaEmbeddingsLegacy] {
        rows.extend([
            row(e, "options.num_ctx", &[], "16..=64"),
            row(e, "options.top_k", &[Zero], "0..=1048576"),
            row(e, "options.temperature", &[Zero], "0..=100"),
            row(
                e,
                "options.seed",
                &[MinusOne, Zero, I64Max],
                "any 64-bit integer",
            ),
            row(
                e,
                "keep_alive",
                &[MinusOne, Zero],
                "seconds up to a year; negative: forever",
            ),
        ]);
    }
    rows
}

/// The field's top-level name, for the PENDING list.
fn top(field: &str) -> &str {
    field.split('.').next().unwrap_or(field)
}

/// The request body with `raw` (any JSON text, or not JSON at all) at the field's place.
fn body_with(row: &Row, raw: &str) -> String {
    const MARK: &str = "@@HOSTILE@@";
    let mut v = row.endpoint.base();
    if let Some(extra) = row.extra {
        for (k, x) in extra().as_object().unwrap() {
            v[k] = x.clone();
        }
    }
    let mut at = &mut v;
    let parts: Vec<&str> = row.field.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        if at.get(*p).is_none() {
            at[*p] = json!({});
        }
        at = &mut at[*p];
    }
    at[parts[parts.len() - 1]] = json!(MARK);
    v.to_string().replace(&format!("\"{MARK}\""), raw)
}

fn raw_post(path: &str, body: String) -> Request<Body> {
    Request::post(path)
        .header(header::HOST, "localhost:11434")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// The error message and, for OpenAI, the `param`.
fn error_of(endpoint: Endpoint, v: &Value) -> (String, Option<String>) {
    if endpoint.openai() {
        let e = &v["error"];
        (
            e["message"].as_str().unwrap_or_default().to_string(),
            e["param"].as_str().map(str::to_owned),
        )
    } else {
        (v["error"].as_str().unwrap_or_default().to_string(), None)
    }
}

fn matrix_server() -> Router {
    server(Config {
        n_ctx: 64,
        ..Config::default()
    })
}

#[tokio::test]
async fn every_numeric_field_refuses_hostile_values_with_a_400_naming_it() {
    let app = matrix_server();
    let mut failures = Vec::new();
    let mut checked = 0;
    for row in table() {
        if PENDING.contains(&top(row.field)) {
            eprintln!("skipped (pending): {} {}", row.endpoint.path(), row.field);
            continue;
        }
        let name = row.field;
        let mut cases: Vec<(String, bool)> = HOSTILE
            .iter()
            .map(|h| (h.token().to_string(), row.accepts.contains(h)))
            .collect();
        cases.push(("NaN".into(), false)); // not JSON
        cases.push(("\"NaN\"".into(), false)); // a string where a number goes
        for (raw, accepted) in cases {
            checked += 1;
            let r = send(&app, raw_post(row.endpoint.path(), body_with(&row, &raw))).await;
            let what = format!(
                "{} {name}={raw} (range {}): {} {}",
                row.endpoint.path(),
                row.range,
                r.status,
                r.text()
            );
            if r.status.is_server_error() {
                failures.push(format!("5xx: {what}"));
                continue;
            }
            if accepted {
                if r.status != StatusCode::OK {
                    failures.push(format!("an in-range value was refused: {what}"));
                }
                continue;
            }
            if r.status != StatusCode::BAD_REQUEST {
                failures.push(format!("expected 400: {what}"));
                continue;
            }
            if raw == "NaN" {
                continue; // unparsable JSON: a 400 is all that can be said
            }
            let v: Value = match serde_json::from_slice(&r.body) {
                Ok(v) => v,
                Err(_) => {
                    failures.push(format!("the 400 is not JSON: {what}"));
                    continue;
                }
            };
            let (message, param) = error_of(row.endpoint, &v);
            // `logit_bias.1` is named as `logit_bias…`; options by their full path.
            let named = top(name) == "logit_bias" && message.contains("logit_bias")
                || message.contains(name);
            if !named {
                failures.push(format!("the 400 does not name the field: {what}"));
            }
            if let Some(p) = param {
                if !(p == name || p.starts_with(top(name))) {
                    failures.push(format!("OpenAI param is {p:?}: {what}"));
                }
            }
        }
    }
    assert!(checked > 300, "the matrix ran ({checked} requests)");
    assert!(
        failures.is_empty(),
        "{} of {checked} requests were mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let r = send(&app, get("/api/version")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["version"].is_string());
}

#[tokio::test]
async fn a_foreign_host_is_refused_with_403() {
    let app = default_app();
    for (method, path) in [
        ("GET", "/api/version"),
        ("GET", "/api/tags"),
        ("GET", "/v1/models"),
        ("POST", "/api/pull"),
        ("POST", "/api/show"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/copy"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/api/chat"),
    ] {
        for host in [
            "evil.example",
            "evil.example:11434",
            "localhost.evil.example",
        ] {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, host)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"model":"smollm2"}"#))
                .unwrap();
            let r = send(&app, req).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{method} {path} Host {host}"
            );
        }
    }
    // No Host at all is refused too.
    let req = Request::get("/api/version").body(Body::empty()).unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::FORBIDDEN);
    assert_eq!(send(&app, get("/api/version")).await.status, StatusCode::OK);
}

fn default_app() -> Router {
    server(Config::default())
}

/// A 100 MB body in 64 KiB chunks, counting what the server pulled from it.
fn huge_body(read: Arc<AtomicUsize>) -> Body {
    const CHUNK: usize = 64 * 1024;
    let chunks = (100 << 20) / CHUNK;
    let stream = futures_util::stream::iter(0..chunks).map(move |i| {
        read.fetch_add(CHUNK, Ordering::Relaxed);
        let mut b = vec![b' '; CHUNK];
        if i == 0 {
            b[..14].copy_from_slice(b"{\"model\": \"x\",");
        }
        Ok::<_, Infallible>(Bytes::from(b))
    });
    Body::from_stream(stream)
}

use futures_util::StreamExt;

#[tokio::test]
async fn a_100_mb_body_gets_413_without_being_buffered() {
    let app = default_app();
    for (method, path) in [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("POST", "/api/generate"),
        ("POST", "/api/chat"),
        ("POST", "/api/embed"),
        ("POST", "/api/embeddings"),
        ("POST", "/api/pull"),
        ("POST", "/api/show"),
        ("POST", "/api/copy"),
        ("DELETE", "/api/delete"),
    ] {
        // Streamed, with no length announced: refused once the limit is passed.
        let read = Arc::new(AtomicUsize::new(0));
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .body(huge_body(Arc::clone(&read)))
            .unwrap();
        let r = send(&app, req).await;
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{path}: {}",
            r.text()
        );
        let n = read.load(Ordering::Relaxed);
        assert!(
            n <= server::BODY_LIMIT + (1 << 20),
            "{path}: read {n} bytes of the body before refusing it"
        );
        // Announced: refused before any of it is read.
        let read = Arc::new(AtomicUsize::new(0));
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, (100u64 << 20).to_string())
            .body(huge_body(Arc::clone(&read)))
            .unwrap();
        let r = send(&app, req).await;
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{path} (Content-Length)"
        );
        assert!(read.load(Ordering::Relaxed) <= server::BODY_LIMIT + (1 << 20));
    }
    let r = send(&app, get("/api/version")).await;
    assert_eq!(r.status, StatusCode::OK);
}

/// `logit_bias` is applied, not just checked: a +100 bias makes greedy decoding pick that
/// token every time.
#[tokio::test]
async fn logit_bias_is_applied() {
    let app = matrix_server();
    let body = |bias: Value| {
        json!({"model": model(), "prompt": "Hi", "max_tokens": 4, "temperature": 0,
               "logprobs": 0, "logit_bias": bias})
    };
    let tokens = |v: &Value| -> Vec<String> {
        v["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    let plain = send(&app, support::post("/v1/completions", &body(json!({})))).await;
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.text());
    // Token 200 is one of the byte tokens of the synthetic vocabulary.
    let biased = send(
        &app,
        support::post("/v1/completions", &body(json!({"200": 100}))),
    )
    .await;
    assert_eq!(biased.status, StatusCode::OK, "{}", biased.text());
    let t = tokens(&biased.json());
    assert_eq!(t.len(), 4, "{t:?}");
    assert!(t.iter().all(|x| *x == t[0]), "{t:?}");
    assert_ne!(tokens(&plain.json()), t, "the bias changed the answer");
    for bad in [json!({"x": 1}), json!([1]), json!({"1": "a"})] {
        let r = send(&app, support::post("/v1/completions", &body(bad.clone()))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text());
        assert_eq!(
            r.json()["error"]["param"]
                .as_str()
                .map(|p| p.starts_with("logit_bias")),
            Some(true)
        );
    }
}

/// A page on another site cannot change the store: a `text/plain` POST needs no CORS
/// preflight, so `Origin` is checked on pull, copy and delete.
#[tokio::test]
async fn another_sites_page_cannot_pull_copy_or_delete() {
    let app = default_app();
    let request = |method: &str, path: &str, origin: Option<&str>, host: &str| {
        // The refused pages try the simple request that needs no preflight; the others send
        // JSON, as text/plain is refused from anyone (415).
        let allowed = ["http://localhost:11434", "http://localhost:3000"];
        let content_type = match origin {
            Some(o) if !allowed.contains(&o) => "text/plain",
            _ => "application/json",
        };
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        let body = r#"{"model": "nosuch:1", "source": "nosuch:1", "destination": "x:1"}"#;
        b.body(Body::from(body)).unwrap()
    };
    for (method, path) in [
        ("POST", "/api/pull"),
        ("POST", "/api/copy"),
        ("DELETE", "/api/delete"),
    ] {
        for origin in ["http://evil.example", "null", "http://localhost:8080"] {
            let r = send(&app, request(method, path, Some(origin), "localhost:11434")).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{path} from {origin}: {}",
                r.text()
            );
            assert!(r.json()["error"]
                .as_str()
                .unwrap()
                .contains("--cors-origin"));
        }
        // hearth's own page (same origin), and clients without Origin, get through to the
        // store (which does not have the model; this test binary runs offline).
        for origin in [Some("http://localhost:11434"), None] {
            let r = send(&app, request(method, path, origin, "localhost:11434")).await;
            let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
            assert!(
                !msg.contains("--cors-origin")
                    && (r.status == StatusCode::NOT_FOUND || msg.contains("offline")),
                "{path} from {origin:?}: {} {msg}",
                r.status
            );
        }
    }
    // An origin named with --cors-origin is allowed.
    let app = server(Config {
        cors_origins: vec!["http://localhost:3000".into()],
        ..Config::default()
    });
    let r = send(
        &app,
        request(
            "POST",
            "/api/copy",
            Some("http://localhost:3000"),
            "localhost:11434",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
}
