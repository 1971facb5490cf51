//! Ollama's `/api/create` (from an uploaded blob, a GGUF path or another model) and
//! `HEAD`/`POST /api/blobs/{digest}`, through `Router::oneshot` with a temporary store.

mod support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use support::{default_server, home, model, post, send};

/// Held by every test: they share the store, and one counts what is left in its `tmp/`.
async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn blob(method: &str, digest: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(format!("/api/blobs/{digest}"))
        .header(header::HOST, "localhost:11434")
        .body(body)
        .unwrap()
}

/// Uploads left in the store's scratch directory.
fn leftovers() -> Vec<String> {
    std::fs::read_dir(home().join("tmp"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("upload-"))
                .collect()
        })
        .unwrap_or_default()
}

async fn status_of(app: &Router, req: Request<Body>) -> StatusCode {
    send(app, req).await.status
}

fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn upload(app: &Router, bytes: &[u8]) -> String {
    let d = digest_of(bytes);
    let r = send(app, blob("POST", &d, Body::from(bytes.to_vec()))).await;
    assert!(
        r.status == StatusCode::CREATED || r.status == StatusCode::OK,
        "{} {}",
        r.status,
        r.text()
    );
    d
}

#[tokio::test]
async fn blobs_are_verified_and_never_left_partial() {
    let _guard = lock().await;
    let app = default_server();
    let bytes = b"hello blob".to_vec();
    let d = digest_of(&bytes);
    assert_eq!(
        status_of(&app, blob("HEAD", &d, Body::empty())).await,
        StatusCode::NOT_FOUND
    );
    // Bad digests: 400, for both methods.
    for bad in [
        "sha256:xyz",
        "md5:0123",
        &format!("sha256:{}", "A".repeat(64)),
        &format!("sha256-{}", "a".repeat(64)),
    ] {
        for m in ["HEAD", "POST"] {
            let r = send(&app, blob(m, bad, Body::from("x"))).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{m} {bad}");
        }
    }
    // Wrong bytes: 400, nothing kept.
    let r = send(&app, blob("POST", &d, Body::from("other bytes"))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("sha256"));
    assert_eq!(
        status_of(&app, blob("HEAD", &d, Body::empty())).await,
        StatusCode::NOT_FOUND
    );
    assert!(leftovers().is_empty(), "{:?}", leftovers());
    // A body cut short: an error, nothing kept.
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"hello")),
        Err(std::io::Error::other("connection reset")),
    ];
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let r = send(&app, blob("POST", &d, body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(leftovers().is_empty(), "{:?}", leftovers());
    assert_eq!(
        status_of(&app, blob("HEAD", &d, Body::empty())).await,
        StatusCode::NOT_FOUND
    );
    // The right bytes: 201, then present; again: 200.
    assert_eq!(
        status_of(&app, blob("POST", &d, Body::from(bytes.clone()))).await,
        StatusCode::CREATED
    );
    assert_eq!(
        status_of(&app, blob("HEAD", &d, Body::empty())).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&app, blob("POST", &d, Body::from(bytes.clone()))).await,
        StatusCode::OK
    );
    assert!(leftovers().is_empty(), "{:?}", leftovers());
    // Another site's page may not upload.
    let req = Request::post(format!("/api/blobs/{}", digest_of(b"x")))
        .header(header::HOST, "localhost:11434")
        .header(header::ORIGIN, "https://evil.example")
        .body(Body::from("x"))
        .unwrap();
    assert_eq!(status_of(&app, req).await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn create_from_an_uploaded_blob_then_show_and_chat() {
    let _guard = lock().await;
    let app = default_server();
    let bytes = std::fs::read(model()).unwrap();
    let d = upload(&app, &bytes).await;
    let body = json!({
        "model": "mine:test",
        "files": {"tiny.gguf": d},
        "system": "You are terse.",
        "parameters": {"temperature": 0.25, "num_ctx": 256, "stop": ["<end>", "###"]},
        "license": ["MIT", "extra terms"],
    });
    let r = send(&app, post("/api/create", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let lines = ndjson(&r.text());
    assert!(
        lines[0]["status"].as_str().unwrap().contains(&d),
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap()["status"], "success");
    let s = send(&app, post("/api/show", &json!({"model": "mine:test"}))).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text());
    let s = s.json();
    assert_eq!(s["system"], "You are terse.");
    let params = s["parameters"].as_str().unwrap();
    assert!(
        params.contains("temperature") && params.contains("0.25"),
        "{params}"
    );
    assert!(
        params.contains("num_ctx") && params.contains("<end>"),
        "{params}"
    );
    assert!(s["license"].as_str().unwrap().contains("extra terms"));
    let r = send(
        &app,
        post(
            "/api/chat",
            &json!({"model": "mine:test", "stream": false,
                    "messages": [{"role": "user", "content": "Hi"}],
                    "options": {"num_predict": 3}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["done"], true);
    // A preset of it, not streamed: one object.
    let r = send(
        &app,
        post(
            "/api/create",
            &json!({"model": "mine:preset", "from": "mine:test", "system": "Be loud.",
                    "stream": false}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!({"status": "success"}));
    let s = send(&app, post("/api/show", &json!({"model": "mine:preset"}))).await;
    assert_eq!(s.json()["system"], "Be loud.");
    assert!(s.json()["parameters"].as_str().unwrap().contains("0.25"));
    // From a GGUF path this user owns (copied into the store).
    let r = send(
        &app,
        post(
            "/api/create",
            &json!({"model": "mine:file", "from": model(), "stream": false}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let tags = send(&app, support::get("/api/tags")).await.json();
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for n in ["mine:test", "mine:preset", "mine:file"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
}

#[tokio::test]
async fn create_refuses_what_it_cannot_do_naming_the_field() {
    let _guard = lock().await;
    let app = default_server();
    let bytes = std::fs::read(model()).unwrap();
    let d = upload(&app, &bytes).await;
    let not_gguf = upload(&app, b"not a model").await;
    let absent = digest_of(b"never uploaded");
    let cases = [
        (
            json!({"model": "x:y", "files": {"a.gguf": d}, "quantize": "q4_K_M"}),
            "quantize",
        ),
        (
            json!({"model": "x:y", "files": {"a.gguf": d}, "template": "{{ .Prompt }}"}),
            "template",
        ),
        (json!({"model": "x:y", "modelfile": "FROM x"}), "modelfile"),
        (json!({"model": "x:y"}), "from"),
        (
            json!({"model": "x:y", "from": "a:b", "files": {"a.gguf": d}}),
            "files",
        ),
        (
            json!({"model": "x:y", "files": {"a.gguf": "sha256:123"}}),
            "files.a.gguf",
        ),
        (json!({"model": "x:y", "files": {"a.bin": d}}), "files"),
        (
            json!({"model": "x:y", "files": {"a.gguf": d, "b.gguf": d}}),
            "files",
        ),
        (
            json!({"model": "x:y", "files": {"a.gguf": absent}}),
            "not in the store",
        ),
        (
            json!({"model": "x:y", "files": {"a.gguf": not_gguf}}),
            "GGUF",
        ),
        (
            json!({"model": "x:y", "files": {"a.gguf": d}, "parameters": {"temperature": "hot"}}),
            "parameters.temperature",
        ),
        (
            json!({"model": "x:y", "files": {"a.gguf": d}, "parameters": {"top_k": -1}}),
            "parameters.top_k",
        ),
        (
            json!({"model": "x:y", "files": {"a.gguf": d}, "parameters": {"bogus": 1}}),
            "parameters.bogus",
        ),
        (
            json!({"model": "x:y", "files": {"a.gguf": d}, "parameters": {"seed": [1]}}),
            "parameters.seed",
        ),
        (json!({"model": "../x", "files": {"a.gguf": d}}), "model"),
        (
            json!({"model": "x:y", "from": "relative/file.gguf"}),
            "from",
        ),
        (
            json!({"model": "x:y", "from": "/nonexistent/file.gguf"}),
            "/nonexistent/file.gguf",
        ),
        (
            json!({"model": "x:y", "adapters": {"l.gguf": d}, "files": {"a.gguf": d}}),
            "adapters",
        ),
    ];
    for (body, needle) in cases {
        let r = send(&app, post("/api/create", &body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(needle), "{body}: {e}");
    }
    let r = send(
        &app,
        post(
            "/api/create",
            &json!({"model": "x:y", "from": "no-such:model"}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let tags = send(&app, support::get("/api/tags")).await.json();
    assert!(
        !tags.to_string().contains("x:y"),
        "nothing was made: {tags}"
    );
}
