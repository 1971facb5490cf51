//! `--upstream`: requests for a remote model go to an OpenAI-compatible server (here a stub
//! on 127.0.0.1 that the test starts) and come back as they are, streamed as they arrive;
//! the key is forwarded, a client that goes away closes the upstream connection, and an
//! unreachable or silent upstream is a 502 or 504 naming its host.

mod support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use server::upstream::{Upstream, Upstreams};
use server::worker::{Api, RemoteUsage, Summary, UsageSink};
use server::{app, AppState, Config, Usage};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{get, post, send, sse_data};
use tower::ServiceExt;

/// What the stub does with each request.
#[derive(Clone)]
enum Answer {
    /// 200 with this JSON body.
    Json(Value),
    /// 200 with these server-sent events, then the connection closes.
    Events(Vec<Value>),
    /// Events every 20 ms until the client goes away.
    Endless,
    /// Reads the request and never answers.
    Silent,
    /// A chunked stream of these events that breaks off (the connection closes before the
    /// last chunk), after the whole events or, with `mid_event`, inside the next one.
    Cut { events: Vec<Value>, mid_event: bool },
    /// These events in a body delimited by the connection's close, closed without `[DONE]`
    /// (a whole body as HTTP goes: only the missing `[DONE]` tells it broke off).
    Closed(Vec<Value>),
}

/// One request the stub saw.
struct Seen {
    head: String,
    body: Value,
}

/// A tiny OpenAI server on 127.0.0.1: reports each request, and each connection it sees
/// closed by the client.
struct Stub {
    base: String,
    seen: mpsc::Receiver<Seen>,
    closed: mpsc::Receiver<()>,
}

impl Stub {
    fn start(answer: Answer) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let (seen_tx, seen) = mpsc::channel();
        let (closed_tx, closed) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (answer, seen_tx, closed_tx) =
                    (answer.clone(), seen_tx.clone(), closed_tx.clone());
                std::thread::spawn(move || serve_one(conn, answer, seen_tx, closed_tx));
            }
        });
        Stub { base, seen, closed }
    }

    fn next_request(&self) -> Seen {
        self.seen
            .recv_timeout(Duration::from_secs(30))
            .expect("the stub got no request")
    }
}

fn serve_one(conn: TcpStream, answer: Answer, seen: mpsc::Sender<Seen>, closed: mpsc::Sender<()>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).unwrap();
    let _ = seen.send(Seen {
        head,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let mut conn = conn;
    let events_head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
    match answer {
        Answer::Json(v) => {
            let b = v.to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                b.len()
            );
        }
        Answer::Events(events) => {
            let _ = conn.write_all(events_head.as_bytes());
            for e in events {
                let _ = write!(conn, "data: {e}\n\n");
                let _ = conn.flush();
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = conn.write_all(b"data: [DONE]\n\n");
        }
        Answer::Closed(events) => {
            let _ = conn.write_all(events_head.as_bytes());
            for e in events {
                let _ = write!(conn, "data: {e}\n\n");
            }
        }
        Answer::Endless => {
            let _ = conn.write_all(events_head.as_bytes());
            let piece = json!({"choices": [{"index": 0, "delta": {"content": "la"}}]});
            while write!(conn, "data: {piece}\n\n").is_ok() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = closed.send(());
        }
        Answer::Cut { events, mid_event } => {
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            let mut chunks: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
            if mid_event {
                chunks.push("data: {\"choi".to_owned());
            }
            for c in chunks {
                let _ = write!(conn, "{:x}\r\n{c}\r\n", c.len());
                let _ = conn.flush();
                std::thread::sleep(Duration::from_millis(10));
            }
            // No terminating chunk: the answer broke off.
        }
        Answer::Silent => {
            // Until the client closes its side.
            let mut rest = [0u8; 64];
            while matches!(reader.read(&mut rest), Ok(n) if n > 0) {}
            let _ = closed.send(());
        }
    }
}

/// Remote answers as the ledger would get them.
#[derive(Default)]
struct Recorded(Mutex<Vec<RemoteUsage>>);

impl UsageSink for Recorded {
    fn record(&self, _model: &str, _api: Api, _summary: &Summary) {}
    fn record_remote(&self, usage: &RemoteUsage) {
        self.0.lock().unwrap().push(usage.clone());
    }
}

const KEY: &str = "upstream-secret";

fn router(base: &str, timeout: Duration) -> (axum::Router, Arc<Recorded>) {
    support::home();
    let up = Upstream::parse(&format!("big={base}"), Some(KEY.into())).unwrap();
    let upstreams = Upstreams::new(vec![up], Duration::from_secs(5), timeout).unwrap();
    let recorded = Arc::new(Recorded::default());
    let config = Config {
        threads: Some(1),
        api_key: Some("hearth-key".into()),
        usage: Usage(Some(recorded.clone())),
        upstreams,
        ..Config::default()
    };
    (
        app(AppState::new(config, Box::new(support::models_store()))),
        recorded,
    )
}

/// A request with hearth's own key.
fn keyed(mut req: Request<Body>) -> Request<Body> {
    req.headers_mut()
        .insert(header::AUTHORIZATION, "Bearer hearth-key".parse().unwrap());
    req
}

fn chat(extra: Value) -> Value {
    let mut b = json!({"model": "big", "messages": [{"role": "user", "content": "Hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// A streamed chat request for the remote model, answered by a stub doing `answer`: the
/// reply and the usage recorded.
async fn stream_from(answer: Answer) -> (support::Reply, Arc<Recorded>) {
    let stub = Stub::start(answer);
    let (app, recorded) = router(&stub.base, Duration::from_secs(30));
    let r = send(
        &app,
        keyed(post("/v1/chat/completions", &chat(json!({"stream": true})))),
    )
    .await;
    (r, recorded)
}

/// The cut-off error event that ends a stream (the last event): its message.
fn cut_off_message(data: &[String]) -> String {
    let error: Value = serde_json::from_str(data.last().expect("events")).unwrap();
    assert_eq!(error["error"]["code"], "upstream_cut_off", "{error}");
    error["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_whole_answer_passes_through_with_the_upstream_key_and_is_recorded_as_remote() {
    let answer = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "big",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "from afar"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
        "vendor_field": [1, 2],
    });
    let stub = Stub::start(Answer::Json(answer.clone()));
    let (app, recorded) = router(&stub.base, Duration::from_secs(30));
    let r = send(
        &app,
        keyed(post("/v1/chat/completions", &chat(json!({"top_k": 5})))),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), answer, "the answer must pass as it is");
    let seen = stub.next_request();
    assert!(
        seen.head.starts_with("POST /v1/chat/completions HTTP/1.1"),
        "{}",
        seen.head
    );
    let auth: Vec<&str> = seen
        .head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .collect();
    assert_eq!(auth.len(), 1, "{auth:?}");
    assert!(auth[0].ends_with(&format!("Bearer {KEY}")), "{auth:?}");
    assert!(
        !seen.head.contains("hearth-key"),
        "hearth's own key must stay here"
    );
    // Fields hearth does not know go on untouched.
    assert_eq!(seen.body["top_k"], 5);
    let rows = recorded.0.lock().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].model, "big");
    assert_eq!(
        rows[0].host,
        stub.base
            .trim_start_matches("http://")
            .trim_end_matches("/v1")
    );
    assert_eq!(
        (rows[0].prompt_tokens, rows[0].completion_tokens),
        (Some(11), Some(3))
    );
}

#[tokio::test]
async fn a_stream_passes_through_and_its_usage_is_counted_without_showing_it() {
    let events = vec![
        json!({"choices": [{"index": 0, "delta": {"content": "one "}}]}),
        json!({"choices": [{"index": 0, "delta": {"content": "two"}, "finish_reason": "stop"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}),
    ];
    let stub = Stub::start(Answer::Events(events.clone()));
    let (app, recorded) = router(&stub.base, Duration::from_secs(30));
    let r = send(
        &app,
        keyed(post("/v1/chat/completions", &chat(json!({"stream": true})))),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let data = sse_data(&r.text());
    // The usage event hearth asked for (the client did not) is not passed on.
    assert_eq!(
        data,
        [
            events[0].to_string(),
            events[1].to_string(),
            "[DONE]".to_string()
        ]
    );
    let seen = stub.next_request();
    assert_eq!(seen.body["stream_options"]["include_usage"], true);
    let rows = recorded.0.lock().unwrap().clone();
    assert_eq!(
        (rows[0].prompt_tokens, rows[0].completion_tokens),
        (Some(9), Some(2))
    );

    // A client that asked for the usage gets it.
    let r = send(
        &app,
        keyed(post(
            "/v1/completions",
            &json!({"model": "big", "prompt": "x", "stream": true, "stream_options": {"include_usage": true}}),
        )),
    )
    .await;
    assert_eq!(sse_data(&r.text()).len(), 4, "{}", r.text());
    assert!(stub
        .next_request()
        .head
        .starts_with("POST /v1/completions "));
}

#[tokio::test]
async fn an_upstream_that_reports_no_usage_is_recorded_with_unknown_counts() {
    // A whole answer without a `usage` object.
    let answer = json!({
        "id": "chatcmpl-2", "object": "chat.completion", "model": "big",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "no count"}, "finish_reason": "stop"}],
    });
    let stub = Stub::start(Answer::Json(answer.clone()));
    let (app, recorded) = router(&stub.base, Duration::from_secs(30));
    let r = send(&app, keyed(post("/v1/chat/completions", &chat(json!({}))))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), answer);
    let rows = recorded.0.lock().unwrap().clone();
    assert_eq!(rows.len(), 1);
    // Unknown, not 0: a 0 would pass for a count and make the ledger's sums silently short.
    assert_eq!(
        (rows[0].prompt_tokens, rows[0].completion_tokens),
        (None, None)
    );

    // A stream from a server that ignores `stream_options.include_usage` (hearth asked for
    // it) and ends normally without any usage event.
    let events = vec![
        json!({"choices": [{"index": 0, "delta": {"content": "one"}, "finish_reason": "stop"}]}),
    ];
    let stub = Stub::start(Answer::Events(events.clone()));
    let (app, recorded) = router(&stub.base, Duration::from_secs(30));
    let r = send(
        &app,
        keyed(post("/v1/chat/completions", &chat(json!({"stream": true})))),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        sse_data(&r.text()),
        [events[0].to_string(), "[DONE]".to_string()]
    );
    assert_eq!(
        stub.next_request().body["stream_options"]["include_usage"],
        true
    );
    let rows = recorded.0.lock().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].prompt_tokens, rows[0].completion_tokens),
        (None, None)
    );

    // A client that turned the usage off itself: hearth does not override it, and the
    // answer's counts are unknown too.
    let r = send(
        &app,
        keyed(post(
            "/v1/chat/completions",
            &chat(json!({"stream": true, "stream_options": {"include_usage": false}})),
        )),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        stub.next_request().body["stream_options"]["include_usage"],
        false
    );
    let rows = recorded.0.lock().unwrap().clone();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].prompt_tokens, None);
}

#[tokio::test]
async fn a_stream_the_upstream_cuts_off_ends_with_an_error_naming_it() {
    let events = vec![json!({"choices": [{"index": 0, "delta": {"content": "half an"}}]})];
    let (r, recorded) = stream_from(Answer::Cut {
        events: events.clone(),
        mid_event: false,
    })
    .await;
    let data = sse_data(&r.text());
    assert_eq!(data.len(), 2, "{}", r.text());
    assert_eq!(data[0], events[0].to_string());
    // No [DONE]: an error event that OpenAI's clients raise, naming the upstream.
    let message = cut_off_message(&data);
    assert!(
        message.contains("127.0.0.1") && message.contains("'big'"),
        "{message}"
    );
    // The request is in the ledger, without a count the upstream never sent.
    let rows = recorded.0.lock().unwrap().clone();
    assert_eq!((rows.len(), rows[0].prompt_tokens), (1, None));

    // Closed without [DONE] in a close-delimited body: the same error event.
    let (r, _) = stream_from(Answer::Closed(events.clone())).await;
    let data = sse_data(&r.text());
    assert_eq!(data.len(), 2, "{}", r.text());
    let message = cut_off_message(&data);
    assert!(message.contains("without [DONE]"), "{message}");

    // Cut inside an event the client already has part of (it asked for the usage itself, so
    // every byte passes at once): the connection is cut instead, so the half event is not
    // taken for a whole one.
    let stub = Stub::start(Answer::Cut {
        events,
        mid_event: true,
    });
    let (app, _) = router(&stub.base, Duration::from_secs(30));
    let resp = app
        .oneshot(keyed(post(
            "/v1/chat/completions",
            &chat(json!({"stream": true, "stream_options": {"include_usage": true}})),
        )))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await;
    assert!(body.is_err(), "the client's body must end in an error");
}

#[tokio::test]
async fn a_client_that_goes_away_closes_the_upstream_connection() {
    let stub = Stub::start(Answer::Endless);
    let (app, _) = router(&stub.base, Duration::from_secs(30));
    let resp = app
        .oneshot(keyed(post(
            "/v1/chat/completions",
            &chat(json!({"stream": true})),
        )))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a first piece").unwrap();
    assert!(String::from_utf8_lossy(first.data_ref().unwrap()).contains("\"la\""));
    drop(body);
    stub.closed
        .recv_timeout(Duration::from_secs(30))
        .expect("the upstream connection must close when the client goes away");
}

#[tokio::test]
async fn a_silent_upstream_is_a_504_naming_its_host() {
    let stub = Stub::start(Answer::Silent);
    let (app, _) = router(&stub.base, Duration::from_secs(1));
    let r = send(&app, keyed(post("/v1/chat/completions", &chat(json!({}))))).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    let host = stub
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/v1");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains(host), "{msg}");
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");
    // The request was given up: the stub sees its connection close.
    stub.closed.recv_timeout(Duration::from_secs(30)).unwrap();
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_naming_its_host() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (app, recorded) = router(
        &format!("http://127.0.0.1:{port}/v1"),
        Duration::from_secs(5),
    );
    let r = send(
        &app,
        keyed(post(
            "/v1/embeddings",
            &json!({"model": "big", "input": "x"}),
        )),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert_eq!(r.json()["error"]["code"], "upstream_unreachable");
    assert!(recorded.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn embeddings_pass_through() {
    let answer = json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}], "usage": {"prompt_tokens": 2, "total_tokens": 2}});
    let stub = Stub::start(Answer::Json(answer.clone()));
    let (app, recorded) = router(&stub.base, Duration::from_secs(30));
    let r = send(
        &app,
        keyed(post(
            "/v1/embeddings",
            &json!({"model": "big", "input": "x"}),
        )),
    )
    .await;
    assert_eq!(r.json(), answer);
    assert!(stub.next_request().head.starts_with("POST /v1/embeddings "));
    assert_eq!(recorded.0.lock().unwrap()[0].prompt_tokens, Some(2));
}

#[tokio::test]
async fn remote_models_are_listed_as_remote() {
    let stub = Stub::start(Answer::Silent);
    let (app, _) = router(&stub.base, Duration::from_secs(30));
    let host = stub
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/v1");
    let models = send(&app, keyed(get("/v1/models"))).await.json();
    let big = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "big")
        .expect("big in /v1/models")
        .clone();
    assert_eq!(big["owned_by"], "remote");
    assert_eq!(big["remote"]["host"], host);
    let one = send(&app, keyed(get("/v1/models/big"))).await;
    assert_eq!(one.json()["owned_by"], "remote");
    let tags = send(&app, keyed(get("/api/tags"))).await.json();
    let big = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "big")
        .expect("big in /api/tags")
        .clone();
    assert_eq!(big["details"]["remote"], host);
    assert_eq!(big["details"]["kind"], "remote");
}

#[tokio::test]
async fn ollama_endpoints_refuse_a_remote_model_and_say_where_it_is_served() {
    let stub = Stub::start(Answer::Silent);
    let (app, _) = router(&stub.base, Duration::from_secs(30));
    for path in ["/api/chat", "/api/generate", "/v1/responses"] {
        let r = send(
            &app,
            keyed(post(
                path,
                &json!({"model": "big", "messages": [], "prompt": "x", "input": "x"}),
            )),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text());
        assert!(
            r.text().contains("/v1/chat/completions"),
            "{path}: {}",
            r.text()
        );
    }
    // Other models still reach their handlers.
    let r = send(
        &app,
        keyed(post(
            "/api/chat",
            &json!({"model": "no-such-model", "messages": []}),
        )),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
}

#[tokio::test]
async fn without_hearths_key_nothing_reaches_the_upstream() {
    let stub = Stub::start(Answer::Json(json!({})));
    let (app, _) = router(&stub.base, Duration::from_secs(30));
    let r = send(&app, post("/v1/chat/completions", &chat(json!({})))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(stub.seen.recv_timeout(Duration::from_millis(300)).is_err());
}

#[tokio::test]
async fn a_client_that_goes_away_before_the_answer_begins_closes_the_upstream_connection() {
    let stub = Stub::start(Answer::Silent);
    let (app, _) = router(&stub.base, Duration::from_secs(300));
    let pending = tokio::spawn(app.oneshot(keyed(post("/v1/chat/completions", &chat(json!({}))))));
    let seen = tokio::task::spawn_blocking(move || {
        let s = stub.next_request();
        (s, stub)
    })
    .await
    .unwrap();
    let (_, stub) = seen;
    // The handler is dropped while it waits for the upstream's first byte.
    pending.abort();
    tokio::task::spawn_blocking(move || stub.closed.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the upstream connection must close when the client goes away");
}
