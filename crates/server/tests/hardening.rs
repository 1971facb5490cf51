//! What a hostile client or web page can make the server do: read or probe files through
//! model names, drive it from another site's page, or hold its connections.

mod support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use server::models::StoreModels;
use server::{app, AppState, Config};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{base_model, post, send};

fn router(models: StoreModels, config: Config) -> Router {
    support::home();
    let config = Config {
        threads: Some(1),
        ..config
    };
    app(AppState::new(config, Box::new(models)))
}

fn generate(model: &str) -> Value {
    json!({"model": model, "prompt": "Hello", "raw": true, "stream": false, "options": {"num_predict": 2}})
}

/// A file whose first bytes are a secret, and a missing file beside it.
fn secret_and_missing(dir: &Path) -> (String, String) {
    let secret = dir.join("shadow");
    std::fs::write(&secret, b"SECRET-PASSWORD-HASH\n").unwrap();
    let missing = dir.join("no-such-file");
    (
        secret.to_string_lossy().into_owned(),
        missing.to_string_lossy().into_owned(),
    )
}

fn leaks_nothing(body: &str) {
    for needle in ["SECR", "53, 45, 43, 52", "magic"] {
        assert!(!body.contains(needle), "{needle:?} in {body}");
    }
}

// ---- 3. Paths as model names ----

/// Without --models-dir a path is refused with the same 400 whether the file exists or not,
/// on every route that takes a model, and nothing of the file shows.
#[tokio::test]
async fn paths_are_refused_alike_whether_the_file_exists_or_not() {
    let app = router(StoreModels::new(), Config::default());
    let dir = tempfile::tempdir().unwrap();
    let (secret, missing) = secret_and_missing(dir.path());
    for (uri, body) in [
        ("/api/generate", generate as fn(&str) -> Value),
        ("/api/show", |m: &str| json!({ "model": m })),
        (
            "/v1/chat/completions",
            |m: &str| json!({"model": m, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
        ),
        ("/api/embed", |m: &str| json!({"model": m, "input": "hi"})),
    ] {
        let a = send(&app, post(uri, &body(&secret))).await;
        let b = send(&app, post(uri, &body(&missing))).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}: {}", a.text());
        assert_eq!((a.status, a.text()), (b.status, b.text()), "{uri}");
        assert!(a.text().contains("--models-dir"), "{uri}: {}", a.text());
        leaks_nothing(&a.text());
    }
    // The synthetic model, a real GGUF, is refused the same way.
    let r = send(&app, post("/api/generate", &generate(&base_model()))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
}

/// A copy of the synthetic model in a fresh directory.
fn models_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    std::fs::copy(base_model(), &model).unwrap();
    (dir, model)
}

/// With --models-dir, files inside it load by absolute or relative path; anything outside
/// (directly or through a symbolic link) is "not found", like a missing file; `..` is a 400.
#[tokio::test]
async fn a_models_dir_admits_only_files_inside_it() {
    let (dir, model) = models_dir();
    let app = router(
        StoreModels::with_models_dirs(&[dir.path().to_path_buf()]).unwrap(),
        Config::default(),
    );
    for name in [model.to_string_lossy().into_owned(), "tiny.gguf".into()] {
        let r = send(&app, post("/api/generate", &generate(&name))).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text());
    }
    let outside = tempfile::tempdir().unwrap();
    let (secret, missing) = secret_and_missing(outside.path());
    #[cfg(unix)]
    std::os::unix::fs::symlink(&secret, dir.path().join("link.gguf")).unwrap();
    let escape = format!(
        "../{}/shadow",
        outside.path().file_name().unwrap().to_string_lossy()
    );
    // A name that climbs out is refused for its text.
    let r = send(&app, post("/api/generate", &generate(&escape))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{escape}: {}", r.text());
    leaks_nothing(&r.text());
    let names = [
        secret.clone(),
        base_model(),
        "link.gguf".into(),
        "/etc/passwd".into(),
    ];
    let expected = send(&app, post("/api/generate", &generate(&missing))).await;
    assert_eq!(
        expected.status,
        StatusCode::NOT_FOUND,
        "{}",
        expected.text()
    );
    for name in names {
        let r = send(&app, post("/api/generate", &generate(&name))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{name}: {}", r.text());
        let shown = r.text().replace(&name, "NAME");
        assert_eq!(
            shown,
            expected.text().replace(&missing, "NAME"),
            "{name}: the answer must not differ from a missing file's"
        );
        leaks_nothing(&r.text());
    }
}

/// Loading errors are sorted by cause: a model hearth cannot run is the client's 400 with
/// the reason; a file that is not GGUF is a 500 that quotes none of its bytes.
#[tokio::test]
async fn load_errors_are_sorted_by_cause_and_quote_no_file() {
    let (dir, _) = models_dir();
    let f = gguf::GgufFile::open(base_model()).unwrap();
    let mut w = gguf::GgufWriter::from_file(&f).unwrap();
    w.add("general.architecture", "mamba9");
    w.write(dir.path().join("mamba.gguf")).unwrap();
    std::fs::write(dir.path().join("junk.gguf"), b"SECRET-PASSWORD-HASH\n").unwrap();
    let app = router(
        StoreModels::with_models_dirs(&[dir.path().to_path_buf()]).unwrap(),
        Config::default(),
    );
    let r = send(&app, post("/api/generate", &generate("mamba.gguf"))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("mamba9"), "{}", r.text());
    for uri in ["/api/generate", "/api/show"] {
        let r = send(&app, post(uri, &generate("junk.gguf"))).await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text());
        assert!(r.text().contains("not a valid GGUF"), "{}", r.text());
        leaks_nothing(&r.text());
    }
}

// ---- 4. Cross-site requests ----

fn request(
    uri: &str,
    content_type: Option<&str>,
    origin: Option<&str>,
    body: &Value,
) -> Request<Body> {
    let mut b = Request::post(uri).header(header::HOST, "localhost:11434");
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

/// Another site's page cannot generate, load, pin or unload a model, whatever it sends;
/// hearth's own page (same origin) and origins named by --cors-origin can.
#[tokio::test]
async fn another_sites_page_cannot_generate_or_load_models() {
    let model = base_model();
    let app = router(support::models_store(), Config::default());
    let chat = json!({"model": support::model(), "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let cases = [
        ("/api/generate", generate(&model)),
        ("/api/generate", json!({"model": model, "keep_alive": -1})),
        ("/api/generate", json!({"model": model, "keep_alive": 0})),
        (
            "/api/chat",
            json!({"model": model, "messages": [], "keep_alive": -1}),
        ),
        ("/v1/chat/completions", chat.clone()),
        (
            "/v1/completions",
            json!({"model": model, "prompt": "hi", "max_tokens": 2}),
        ),
        ("/v1/embeddings", json!({"model": model, "input": "hi"})),
        ("/api/embed", json!({"model": model, "input": "hi"})),
        (
            "/v1/responses",
            json!({"model": model, "input": "hi", "max_output_tokens": 2}),
        ),
        ("/tokenize", json!({"model": model, "content": "hi"})),
    ];
    for (uri, body) in &cases {
        for ct in ["text/plain", "application/json"] {
            for origin in ["https://evil.example", "null"] {
                let r = send(&app, request(uri, Some(ct), Some(origin), body)).await;
                assert_eq!(
                    r.status,
                    StatusCode::FORBIDDEN,
                    "{uri} {ct} {origin}: {}",
                    r.text()
                );
                assert!(r.text().contains("--cors-origin"), "{}", r.text());
            }
        }
    }
    assert!(
        send(&app, support::get("/api/ps")).await.json()["models"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was loaded"
    );
    let own = send(
        &app,
        request(
            "/api/generate",
            Some("application/json"),
            Some("http://localhost:11434"),
            &generate(&model),
        ),
    )
    .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text());
    let app = router(
        support::models_store(),
        Config {
            cors_origins: vec!["http://localhost:3000".into()],
            ..Config::default()
        },
    );
    let r = send(
        &app,
        request(
            "/v1/chat/completions",
            Some("application/json"),
            Some("http://localhost:3000"),
            &chat,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// JSON routes refuse bodies declared as something else (415, in each API's shape), and
/// take JSON, no content type, and curl -d's form type.
#[tokio::test]
async fn json_routes_refuse_other_content_types() {
    let model = base_model();
    let app = router(support::models_store(), Config::default());
    for ct in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "multipart/form-data; boundary=x",
        "application/xml",
    ] {
        let r = send(
            &app,
            request("/api/generate", Some(ct), None, &generate(&model)),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{ct}: {}",
            r.text()
        );
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{}",
            r.text()
        );
        let r = send(
            &app,
            request(
                "/v1/completions",
                Some(ct),
                None,
                &json!({"model": model, "prompt": "hi"}),
            ),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{ct}: {}",
            r.text()
        );
        assert_eq!(
            r.json()["error"]["type"],
            "invalid_request_error",
            "{}",
            r.text()
        );
    }
    for ct in [
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        None,
        Some("application/x-www-form-urlencoded"),
    ] {
        let r = send(&app, request("/api/generate", ct, None, &generate(&model))).await;
        assert_eq!(r.status, StatusCode::OK, "{ct:?}: {}", r.text());
    }
}

// ---- 5. Slow or idle connections ----

/// The real server on 127.0.0.1 with `limits`; stops when the test's runtime ends.
async fn listening(limits: server::listen::Limits) -> SocketAddr {
    let app = router(support::models_store(), Config::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::listen::run(
        listener,
        app,
        limits,
        std::future::pending(),
    ));
    addr
}

fn limits(header_secs: u64, max_connections: usize) -> server::listen::Limits {
    server::listen::Limits {
        header_timeout: Duration::from_secs(header_secs),
        body_timeout: Duration::from_secs(1),
        max_connections,
    }
}

/// Whether the server closed `s` (EOF or reset) within `within`; bytes it sent are
/// returned too.
fn closed_within(s: &mut TcpStream, within: Duration) -> (bool, String) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (true, String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (true, String::from_utf8_lossy(&got).into_owned())
            }
            Err(_) => return (false, String::from_utf8_lossy(&got).into_owned()),
        }
        if start.elapsed() > within {
            return (false, String::from_utf8_lossy(&got).into_owned());
        }
    }
}

/// One whole request on a fresh connection: the status line.
fn real_request(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (_, text) = closed_within(&mut s, Duration::from_secs(10));
    text.lines().next().unwrap_or_default().to_string()
}

/// A client that sends its headers a byte at a time is closed once the header timeout
/// has passed, and so is one that stays idle after a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_closed_after_the_header_timeout() {
    let addr = listening(limits(1, 64)).await;
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut closed = false;
        for b in b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
        {
            if slow.write_all(&[*b]).is_err() || slow.read(&mut [0u8; 64]).is_ok_and(|n| n == 0) {
                closed = true;
                break;
            }
            if start.elapsed() > Duration::from_secs(8) {
                break;
            }
        }
        assert!(closed, "a slow client was held {:?}", start.elapsed());
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );

        let mut idle = TcpStream::connect(addr).unwrap();
        idle.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let (closed, text) = closed_within(&mut idle, Duration::from_secs(4));
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(closed, "an idle keep-alive connection was held");
    })
    .await
    .unwrap();
}

/// Past the cap, a new connection closes the longest idle one (a half-open flood cannot
/// lock real clients out); when every held connection is busy, the new one is closed at
/// once. A body that stalls fails its request after the body timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_keeps_room_for_real_requests() {
    let addr = listening(limits(30, 4)).await;
    tokio::task::spawn_blocking(move || {
        let mut flood: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /health HTTP/1.1\r\nHost: loc").unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..3 {
            assert_eq!(real_request(addr), "HTTP/1.1 200 OK");
        }
        // The oldest half-open connections made room.
        let (closed, _) = closed_within(&mut flood[0], Duration::from_secs(2));
        assert!(closed, "the oldest half-open connection is still held");
        drop(flood);

        // Four busy requests (bodies that stall) fill the cap: one more is closed at once.
        std::thread::sleep(Duration::from_millis(200));
        let busy: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(
                    b"POST /api/show HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mo",
                )
                .unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut extra = TcpStream::connect(addr).unwrap();
        let _ = extra.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let start = Instant::now();
        let (closed, text) = closed_within(&mut extra, Duration::from_secs(3));
        assert!(closed && text.is_empty(), "{text}");
        assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
        // The stalled bodies fail after the body timeout (1 s), with an answer.
        for mut s in busy {
            let (_, text) = closed_within(&mut s, Duration::from_secs(4));
            assert!(text.starts_with("HTTP/1.1 4"), "{text}");
        }
        assert_eq!(real_request(addr), "HTTP/1.1 200 OK");
    })
    .await
    .unwrap();
}
