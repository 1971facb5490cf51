//! Ollama's model management (`/api/show`, `/api/pull`, `/api/delete`, `/api/copy`) through
//! `Router::oneshot`, with a temporary store and a local HTTP server that imitates the hub.
//!
//! The store and the hub are set through the environment (HEARTH_HOME, HF_ENDPOINT,
//! HEARTH_SOURCE), as `hearth serve` reads them; the tests take a lock so that the one that
//! switches offline mode on runs alone.

#[path = "../../store/tests/support/mod.rs"]
mod hub;
mod support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use server::{app, AppState, Config};
use std::path::PathBuf;
use std::sync::OnceLock;
use support::{base_model, get, model, post, send};
use tokio::sync::{Mutex, MutexGuard};

/// The hub's file for `hf.co/org/repo/tiny-Q8_0.gguf` and `hf.co/org/repo:Q8_0`.
const FILE: &str = "tiny-Q8_0.gguf";

struct Env {
    home: PathBuf,
    hub: hub::Server,
    bytes: Vec<u8>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let home = tempfile::tempdir().unwrap().keep();
        let bytes = std::fs::read(model()).unwrap();
        let hub = hub::Server::start();
        let listing = json!({
            "id": "org/repo",
            "siblings": [
                {"rfilename": "README.md", "size": 10},
                {"rfilename": FILE, "size": bytes.len(),
                 "lfs": {"sha256": hub::sha256_hex(&bytes), "size": bytes.len()}},
            ],
        });
        hub.add_file(
            "/api/models/org/repo?blobs=true",
            listing.to_string().into_bytes(),
        );
        hub.add_file(&format!("/org/repo/resolve/main/{FILE}"), bytes.clone());
        // About half a second for the whole file: several progress lines.
        hub.set_rate(500_000);
        std::env::set_var("HEARTH_HOME", &home);
        std::env::set_var("HF_ENDPOINT", &hub.base);
        std::env::set_var("HEARTH_SOURCE", "hf");
        std::env::set_var("HEARTH_PYTHON", "/nonexistent/python-for-tests");
        std::env::remove_var("HEARTH_OFFLINE");
        Env { home, hub, bytes }
    })
}

/// Held by every test: they share the process environment.
async fn lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    let guard = LOCK.lock().await;
    env();
    guard
}

fn server() -> Router {
    env();
    let config = Config {
        threads: Some(1),
        ..Config::default()
    };
    app(AppState::new(config, Box::new(support::models_store())))
}

fn delete(body: &Value) -> Request<Body> {
    Request::delete("/api/delete")
        .header(header::HOST, "localhost:11434")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

async fn tags(app: &Router) -> Vec<String> {
    let r = send(app, get("/api/tags")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

/// Deletes every model, so that the next pull downloads again.
async fn clear_store(app: &Router) {
    for name in tags(app).await {
        let r = send(app, delete(&json!({ "model": name }))).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text());
    }
}

/// Pulls `name` (not streamed) and checks it worked.
async fn pull_quietly(app: &Router, name: &str) -> Value {
    let r = send(
        app,
        post("/api/pull", &json!({"model": name, "stream": false})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "success", "{v}");
    v
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hub::sha256_hex(bytes))
}

#[tokio::test]
async fn pull_streams_monotonic_progress_then_success() {
    let _g = lock().await;
    let app = server();
    let e = env();
    let name = format!("hf.co/org/repo/{FILE}");
    clear_store(&app).await;
    let t = std::time::Instant::now();
    let r = send(&app, post("/api/pull", &json!({"model": name}))).await;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.headers[header::CONTENT_TYPE].to_str().unwrap(),
        "application/x-ndjson"
    );
    let lines = ndjson(&r.text());
    assert_eq!(lines[0], json!({"status": "pulling manifest"}), "{lines:?}");
    let progress: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("completed").is_some())
        .collect();
    assert!(progress.len() >= 3, "several progress lines: {lines:#?}");
    let total = e.bytes.len() as u64;
    let mut last = 0;
    for p in &progress {
        assert_eq!(p["total"], total, "{p}");
        assert!(p["status"].as_str().unwrap().starts_with("pulling "), "{p}");
        let done = p["completed"].as_u64().unwrap();
        assert!(done >= last, "completed goes backwards: {lines:#?}");
        assert!(done <= total);
        last = done;
    }
    assert_eq!(last, total, "the last progress line is the whole file");
    // At most ten lines a second (plus the first and the last).
    let most = (secs * 10.0).ceil() as usize + 2;
    assert!(
        progress.len() <= most,
        "{} lines in {secs:.2} s",
        progress.len()
    );
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    let tail = &statuses[statuses.len() - 3..];
    assert_eq!(
        tail,
        ["verifying sha256 digest", "writing manifest", "success"],
        "{lines:#?}"
    );
    assert_eq!(lines[lines.len() - 3]["digest"], digest_of(&e.bytes));
    assert!(lines.iter().all(|l| l.get("error").is_none()), "{lines:#?}");
    assert!(tags(&app).await.contains(&name));
    // Its details come from the file's header.
    let r = send(&app, get("/api/tags")).await.json();
    let entry = r["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name.as_str())
        .unwrap()
        .clone();
    let d = &entry["details"];
    assert_eq!(d["format"], "gguf");
    assert!(!d["family"].as_str().unwrap().is_empty(), "{entry}");
    assert!(
        !d["quantization_level"].as_str().unwrap().is_empty(),
        "{entry}"
    );
    assert!(!d["parameter_size"].as_str().unwrap().is_empty(), "{entry}");
    // The file has a chat template: it chats.
    assert_eq!(d["kind"], "instruct", "{entry}");

    // Again: already there, nothing downloaded, still a success.
    e.hub.clear_log();
    let again = pull_quietly(&app, &name).await;
    assert_eq!(again["digest"], digest_of(&e.bytes));
    assert!(
        e.hub
            .requests()
            .iter()
            .all(|r| !r.path.contains("/resolve/")),
        "{:?}",
        e.hub.requests()
    );
    // Legacy `name`, and a name by quantization.
    let r = send(
        &app,
        post(
            "/api/pull",
            &json!({"name": "hf.co/org/repo:Q8_0", "stream": false}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(tags(&app)
        .await
        .contains(&"hf.co/org/repo:Q8_0".to_string()));
}

#[tokio::test]
async fn pull_errors_keep_their_status_before_the_stream_starts() {
    let _g = lock().await;
    let app = server();
    for (body, status, words) in [
        (json!({"model": "../x"}), 400, "`..`"),
        (json!({"model": "a:b:c"}), 400, "more than one `:`"),
        (json!({}), 400, "model is required"),
        (json!({"model": 7}), 400, "model"),
        (
            json!({"model": "nosuchmodel"}),
            404,
            "not a model hearth knows",
        ),
        (
            json!({"model": "hf.co/org/missing/x.gguf"}),
            502,
            "org/missing",
        ),
        (
            json!({"model": "hf.co/org/repo/other.gguf", "stream": false}),
            404,
            "other.gguf",
        ),
    ] {
        let r = send(&app, post("/api/pull", &body)).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text());
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(words), "{body}: {msg}");
    }
    // Offline: a clear refusal, and the hub is not asked.
    let e = env();
    e.hub.clear_log();
    std::env::set_var("HEARTH_OFFLINE", "1");
    let r = send(
        &app,
        post("/api/pull", &json!({"model": "hf.co/org/repo:F16"})),
    )
    .await;
    std::env::remove_var("HEARTH_OFFLINE");
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("offline") && msg.contains("HEARTH_OFFLINE"),
        "{msg}"
    );
    assert!(e.hub.requests().is_empty(), "{:?}", e.hub.requests());
}

#[tokio::test]
async fn show_describes_store_models_and_files() {
    let _g = lock().await;
    let app = server();
    let name = "hf.co/org/repo:Q8_0";
    pull_quietly(&app, name).await;
    let r = send(&app, post("/api/show", &json!({"model": name}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    for k in [
        "license",
        "modelfile",
        "parameters",
        "template",
        "system",
        "modified_at",
    ] {
        assert!(v[k].is_string(), "{k} in {v:#}");
    }
    assert_eq!(v["details"]["format"], "gguf");
    assert_eq!(v["details"]["family"], "llama");
    assert_eq!(v["details"]["families"], json!(["llama"]));
    assert_eq!(v["details"]["quantization_level"], "Q8_0");
    assert!(!v["details"]["parameter_size"].as_str().unwrap().is_empty());
    assert_eq!(v["capabilities"], json!(["completion"]));
    let info = &v["model_info"];
    assert_eq!(info["general.architecture"], "llama");
    assert!(info["general.parameter_count"].as_u64().unwrap() > 0);
    assert!(info["llama.block_count"].as_u64().unwrap() > 0);
    // The vocabulary (272 tokens) is elided, as Ollama does, unless verbose.
    assert!(
        info.get("tokenizer.ggml.tokens")
            .is_some_and(Value::is_null),
        "{info:#}"
    );
    assert!(v.get("tensors").is_none());
    assert!(v["modelfile"].as_str().unwrap().contains("FROM "));
    let r = send(
        &app,
        post("/api/show", &json!({"name": name, "verbose": true})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(
        v["model_info"]["tokenizer.ggml.tokens"]
            .as_array()
            .unwrap()
            .len(),
        272
    );
    assert!(!v["tensors"].as_array().unwrap().is_empty());

    // A GGUF given by path (as generation accepts).
    let r = send(&app, post("/api/show", &json!({"model": model()}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["details"]["family"], "llama");
    assert_eq!(r.json()["details"]["kind"], "instruct");
    // Without a chat template it is a base model.
    let r = send(&app, post("/api/show", &json!({"model": base_model()}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["details"]["kind"], "base");

    for (body, status) in [
        (json!({"model": "nosuch:latest"}), 404),
        (json!({"model": "../etc/passwd"}), 400),
        (json!({"model": ""}), 400),
        (json!({}), 400),
    ] {
        let r = send(&app, post("/api/show", &body)).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }
    // Not JSON at all.
    let mut req = post("/api/show", &json!({}));
    *req.body_mut() = Body::from("{\"model\": NaN}");
    assert_eq!(send(&app, req).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn copy_and_delete() {
    let _g = lock().await;
    let app = server();
    let src = format!("hf.co/org/repo/{FILE}");
    pull_quietly(&app, &src).await;
    let home = &env().home;

    let r = send(
        &app,
        post(
            "/api/copy",
            &json!({"source": src, "destination": "mine:v1"}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(tags(&app).await.contains(&"mine:v1".to_string()));
    let shown = send(&app, post("/api/show", &json!({"model": "mine:v1"}))).await;
    assert_eq!(shown.status, StatusCode::OK);
    // Copying onto an existing name replaces it, as Ollama does.
    let r = send(
        &app,
        post(
            "/api/copy",
            &json!({"source": src, "destination": "mine:v1"}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    for (body, status, words) in [
        (
            json!({"source": "nosuch:1", "destination": "x:1"}),
            404,
            "nosuch",
        ),
        (
            json!({"source": src, "destination": "../x"}),
            400,
            "destination",
        ),
        (
            json!({"source": "a:b:c", "destination": "x:1"}),
            400,
            "source",
        ),
        (json!({"source": src}), 400, "destination"),
        (
            json!({"source": src, "destination": src}),
            400,
            "onto itself",
        ),
    ] {
        let r = send(&app, post("/api/copy", &body)).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text());
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(words), "{body}: {msg}");
    }
    assert!(
        !home.join("x").exists(),
        "nothing written for refused names"
    );

    let r = send(&app, delete(&json!({"model": "mine:v1"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(!tags(&app).await.contains(&"mine:v1".to_string()));
    let r = send(&app, delete(&json!({"model": "mine:v1"}))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("mine:v1"));
    let r = send(&app, delete(&json!({"name": "../x"}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    // The original still works after its copy is gone (the blob is shared).
    let r = send(&app, post("/api/show", &json!({"model": src}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // POST is not DELETE.
    let r = send(&app, post("/api/delete", &json!({"model": src}))).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// A client that goes away mid-pull stops the pull (as Ollama does), and the store stays
/// whole: the model is complete or absent (a partial file at most), and the next pull
/// finishes it.
#[tokio::test]
async fn a_client_leaving_mid_pull_stops_it_and_leaves_the_store_whole() {
    let _g = lock().await;
    let app = server();
    let name = "hf.co/org/repo:Q8_0";
    clear_store(&app).await;
    let req = post("/api/pull", &json!({"model": name}));
    let resp = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp); // before reading a single line
    let r = send(&app, post("/api/show", &json!({"model": name}))).await;
    assert!(
        [StatusCode::OK, StatusCode::NOT_FOUND].contains(&r.status),
        "{}",
        r.text()
    );
    // The next pull waits for the stopped one, then completes the model.
    pull_quietly(&app, name).await;
    let r = send(&app, post("/api/show", &json!({"model": name}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let blobs: Vec<String> = std::fs::read_dir(env().home.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(blobs.iter().all(|b| !b.ends_with(".partial")), "{blobs:?}");
}

/// A failure after the stream began (here: the hub sends wrong bytes every time) ends it
/// with an `{"error": …}` line; nothing enters the store.
#[tokio::test]
async fn a_failure_mid_stream_is_an_error_line() {
    let _g = lock().await;
    let app = server();
    let e = env();
    clear_store(&app).await;
    e.hub.set_fault_prefix("/org/repo/resolve/");
    e.hub.set_always(Some(hub::Fault::Corrupt));
    let r = send(
        &app,
        post("/api/pull", &json!({"model": "hf.co/org/repo:Q8_0"})),
    )
    .await;
    e.hub.set_always(None);
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let lines = ndjson(&r.text());
    assert_eq!(lines[0]["status"], "pulling manifest");
    let last = lines.last().unwrap();
    let msg = last["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(msg.contains("sha256"), "{msg}");
    assert!(lines.iter().all(|l| l["status"] != "success"), "{lines:#?}");
    assert!(tags(&app).await.is_empty());
    // The next pull, with good bytes, works.
    pull_quietly(&app, "hf.co/org/repo:Q8_0").await;
}

/// A preset's system prompt and options appear as Ollama shows them.
#[tokio::test]
async fn show_reports_a_presets_system_prompt_and_parameters() {
    let _g = lock().await;
    let app = server();
    let base = "hf.co/org/repo:Q8_0";
    pull_quietly(&app, base).await;
    let store = store::Store::open(&env().home);
    let mut params = store::Params::default();
    params.set("temperature", "0.25").unwrap();
    params.set("stop", "<end>").unwrap();
    let opts = store::CreateOptions {
        system: Some("You are terse.".into()),
        params,
        replace: true,
    };
    let name = store::ModelName::parse("terse:1").unwrap();
    store
        .create_preset(&name, &store::ModelName::parse(base).unwrap(), &opts)
        .unwrap();
    let r = send(&app, post("/api/show", &json!({"model": "terse:1"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["system"], "You are terse.");
    let params = v["parameters"].as_str().unwrap();
    assert!(
        params
            .lines()
            .any(|l| l.starts_with("temperature ") && l.ends_with(" 0.25")),
        "{params}"
    );
    assert!(
        params
            .lines()
            .any(|l| l.starts_with("stop ") && l.contains("\"<end>\"")),
        "{params}"
    );
    assert_eq!(v["details"]["parent_model"], base);
    let mf = v["modelfile"].as_str().unwrap();
    assert!(mf.contains("SYSTEM \"\"\"You are terse.\"\"\""), "{mf}");
    assert!(mf.contains("PARAMETER temperature"), "{mf}");
}
