//! Passes requests for an upstream model to its server and its answers back.
//!
//! The request goes out through the workspace's HTTP client (ureq over rustls, blocking) on a
//! thread of its own; the answer's bytes come back through a bounded channel and go to the
//! client as they arrive. Each request has its own agent, so that a client that goes away
//! (its response body dropped, or the handler dropped before the answer began) shuts that
//! agent down: the blocked read returns at once and the upstream sees its connection close,
//! which is how vLLM and llama.cpp's server learn to stop generating.

use super::tap::{Cut, Shape, Tap, Tokens};
use super::{Upstream, Upstreams, PROXIED_PATHS};
use crate::error::ApiError;
use crate::worker::{Api, RemoteUsage, UsageSink};
use crate::{AppState, BODY_LIMIT};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Middleware: a POST whose JSON body names an upstream model goes to that upstream (on the
/// proxied paths) or gets a 400 that says where the model is served; everything else goes on
/// untouched.
pub async fn route(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let upstreams = &state.inner.config.upstreams;
    let path = req.uri().path().to_owned();
    let openai = path.starts_with("/v1/");
    if upstreams.is_empty()
        || req.method() != Method::POST
        || !(openai || path.starts_with("/api/"))
    {
        return next.run(req).await;
    }
    let refuse = |e: ApiError| if openai { e.openai() } else { e.ollama() };
    let (parts, body) = req.into_parts();
    let bytes = match http_body_util::Limited::new(body, BODY_LIMIT)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return refuse(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {BODY_LIMIT} bytes"),
            ))
        }
        Err(e) => {
            return refuse(ApiError::bad_request(format!(
                "cannot read the request body: {e}"
            )))
        }
    };
    let Some(up) = named_model(&bytes)
        .and_then(|n| upstreams.find(&n))
        .cloned()
    else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    if !PROXIED_PATHS.contains(&path.as_str()) {
        return refuse(ApiError::bad_request(format!(
            "model '{}' is served by another machine ({}) and only through the OpenAI API: \
             use POST {} (hearth does not translate {path} for remote models)",
            up.name,
            up.host,
            PROXIED_PATHS.join(", ")
        )));
    }
    forward(&state, up, &path, bytes).await
}

/// The model a request body names (`model`, or Ollama's older `name`), if it is a JSON
/// object with one; anything else is for the handler to refuse.
fn named_model(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        model: Option<String>,
        name: Option<String>,
    }
    let n: Named = serde_json::from_slice(body).ok()?;
    n.model.or(n.name)
}

/// What arrives before the body.
struct Head {
    status: StatusCode,
    content_type: Option<HeaderValue>,
}

/// Shuts the request's agent down when the client's side is dropped.
struct ShutdownOnDrop(Option<ureq::Agent>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.shutdown();
        }
    }
}

async fn forward(state: &AppState, up: Upstream, path: &str, body: Bytes) -> Response {
    let (body, asked_usage) = ask_for_usage(path, body);
    let agent = agent(&state.inner.config.upstreams, &up);
    let guard = ShutdownOnDrop(Some(agent.clone()));
    let (head_tx, head_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let call = Call {
        agent,
        url: up.url_for(path),
        key: up.key().map(str::to_owned),
        body,
        asked_usage,
        usage: state.inner.config.usage.0.clone(),
        model: up.name.clone(),
        host: up.host.clone(),
    };
    let spawned = std::thread::Builder::new()
        .name("hearth-upstream".into())
        .spawn(move || call.run(head_tx, tx));
    if let Err(e) = spawned {
        return ApiError::internal(format!("cannot start a thread for the upstream: {e}")).openai();
    }
    let head = match head_rx.await {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => return failure(&up, &state.inner.config.upstreams, e).openai(),
        Err(_) => {
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "upstream {} (model '{}') ended the request early",
                    up.host, up.name
                ),
            )
            .openai()
        }
    };
    // The guard lives as long as the body: dropping the body (the client went away) ends the
    // upstream request.
    let stream = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|chunk| (chunk, (rx, guard)))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = head.status;
    if let Some(ct) = head.content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

/// For a streamed completion, asks the upstream to end with its token usage
/// (`stream_options.include_usage`) when the client did not; returns the body and whether it
/// was asked (then the usage event is not passed on).
fn ask_for_usage(path: &str, body: Bytes) -> (Bytes, bool) {
    if path == "/v1/embeddings" {
        return (body, false);
    }
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (body, false);
    };
    let streams = v.get("stream").and_then(|s| s.as_bool()) == Some(true);
    let has = v.pointer("/stream_options/include_usage").is_some();
    if !streams || has {
        return (body, false);
    }
    match v.get_mut("stream_options") {
        Some(serde_json::Value::Object(o)) => {
            o.insert("include_usage".into(), true.into());
        }
        Some(_) => return (body, false),
        None => {
            v["stream_options"] = serde_json::json!({"include_usage": true});
        }
    }
    match serde_json::to_vec(&v) {
        Ok(b) => (Bytes::from(b), true),
        Err(_) => (body, false),
    }
}

/// A fresh agent per request (see the module's note): no proxy from the environment (an
/// upstream is a machine the user named), no redirects followed (a POST is not replayed
/// elsewhere), statuses passed on as they are, the upstream's own CA where it has one.
fn agent(u: &Upstreams, up: &Upstream) -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(up.tls_config())
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_resolve(Some(u.connect_timeout))
        .timeout_connect(Some(u.connect_timeout))
        .timeout_recv_response(Some(u.response_timeout))
        .timeout_per_read(Some(u.response_timeout))
        .user_agent(concat!("hearth/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// 504 when the upstream was too slow, 502 when it could not be reached or spoke nonsense;
/// both name the host.
fn failure(up: &Upstream, u: &Upstreams, e: ureq::Error) -> ApiError {
    let timed_out = match &e {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::TimedOut,
        _ => false,
    };
    if timed_out {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "upstream {} (model '{}') did not answer in time ({e}; connect timeout {} s, \
                 response timeout {} s)",
                up.host,
                up.name,
                u.connect_timeout.as_secs(),
                u.response_timeout.as_secs()
            ),
        )
        .with_code("upstream_timeout")
    } else if let Some(why) = certificate_problem(&e) {
        let hint = match up.ca_file() {
            Some(path) => format!("only the CAs in {} are trusted for it", path.display()),
            None => "hearth trusts the public (Mozilla) CAs; for a private CA, give its \
                     certificate with --upstream-ca FILE (or ca_file in config.toml)"
                .to_owned(),
        };
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "upstream {} for model '{}' failed the TLS check: {why}; {hint}",
                up.host, up.name
            ),
        )
        .with_code("upstream_tls")
    } else {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "cannot reach upstream {} for model '{}': {e}",
                up.host, up.name
            ),
        )
        .with_code("upstream_unreachable")
    }
}

/// The certificate check that failed, in words, when that is why the connection did.
fn certificate_problem(e: &ureq::Error) -> Option<String> {
    let tls = match e {
        ureq::Error::Rustls(t) => t,
        // rustls errors reach ureq wrapped in io::Error when the handshake runs inside a read.
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        _ => return None,
    };
    use rustls::CertificateError as C;
    Some(match tls {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "its certificate is signed by an unknown CA".to_owned()
        }
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => {
            "its certificate is for another host name".to_owned()
        }
        rustls::Error::InvalidCertificate(C::Expired)
        | rustls::Error::InvalidCertificate(C::ExpiredContext { .. }) => {
            "its certificate has expired".to_owned()
        }
        rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_) => tls.to_string(),
        _ => return None,
    })
}

/// The server-sent event that ends a stream the upstream cut off: an `error` object, as
/// OpenAI's API sends one mid-stream, that names the host.
fn cut_off_event(host: &str, model: &str, e: &std::io::Error) -> String {
    let error = serde_json::json!({"error": {
        "message": format!("upstream {host} (model '{model}') cut the answer off: {e}"),
        "type": "upstream_error",
        "code": "upstream_cut_off",
    }});
    format!("data: {error}\n\n")
}

/// One request to an upstream, run on its own thread.
struct Call {
    agent: ureq::Agent,
    url: String,
    key: Option<String>,
    body: Bytes,
    asked_usage: bool,
    usage: Option<Arc<dyn UsageSink>>,
    model: String,
    host: String,
}

impl Call {
    fn run(
        self,
        head_tx: oneshot::Sender<Result<Head, ureq::Error>>,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) {
        let started = Instant::now();
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(k) = &self.key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let resp = match req.send(&self.body[..]) {
            Ok(r) => r,
            Err(e) => {
                let _ = head_tx.send(Err(e));
                return;
            }
        };
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let events = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        let head = Head {
            status,
            content_type,
        };
        if head_tx.send(Ok(head)).is_err() {
            return;
        }
        let mut tap = Tap::new(if events {
            Shape::Events {
                drop_usage_event: self.asked_usage,
            }
        } else {
            Shape::Json
        });
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 16 << 10];
        let tokens = loop {
            match reader.read(&mut buf) {
                Ok(0) => {
                    // A close-delimited stream ends the same way whole or broken off: only
                    // its `[DONE]` (or a finish reason) tells.
                    if let Some(cut) = tap.unfinished() {
                        let tokens = tap.tokens();
                        let e = std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the stream ended without [DONE] or a finish reason",
                        );
                        match cut {
                            Cut::Clean => {
                                let event = cut_off_event(&self.host, &self.model, &e);
                                let _ = tx.blocking_send(Ok(Bytes::from(event)));
                            }
                            Cut::MidEvent => {
                                let _ = tx.blocking_send(Err(e));
                            }
                        }
                        break tokens;
                    }
                    let (rest, tokens) = tap.finish();
                    if !rest.is_empty() {
                        let _ = tx.blocking_send(Ok(Bytes::from(rest)));
                    }
                    break tokens;
                }
                Ok(n) => {
                    let out = tap.feed(&buf[..n]);
                    if !out.is_empty() && tx.blocking_send(Ok(Bytes::from(out))).is_err() {
                        // The client went away: what was counted so far.
                        break tap.finish().1;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Cut off mid-answer. A stream between two events ends with an error
                    // event (OpenAI's clients raise it, with the message); otherwise the
                    // client's connection is cut too, so that it does not take a part for
                    // the whole.
                    let tokens = tap.tokens();
                    match tap.cut_off() {
                        Some(Cut::Clean) => {
                            let event = cut_off_event(&self.host, &self.model, &e);
                            let _ = tx.blocking_send(Ok(Bytes::from(event)));
                        }
                        _ => {
                            let _ = tx.blocking_send(Err(e));
                        }
                    }
                    break tokens;
                }
            }
        };
        if status.is_success() {
            self.record(tokens, started);
        }
    }

    fn record(&self, tokens: Option<Tokens>, started: Instant) {
        if let Some(sink) = &self.usage {
            sink.record_remote(&RemoteUsage {
                model: self.model.clone(),
                host: self.host.clone(),
                api: Api::OpenAi,
                prompt_tokens: tokens.map(|t| t.prompt),
                completion_tokens: tokens.map(|t| t.completion),
                elapsed: started.elapsed(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_completion_asks_for_usage_unless_the_client_did() {
        let b = |v: serde_json::Value| Bytes::from(v.to_string());
        let (body, asked) = ask_for_usage(
            "/v1/chat/completions",
            b(serde_json::json!({"model": "m", "stream": true})),
        );
        assert!(asked);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        for (path, v) in [
            (
                "/v1/chat/completions",
                serde_json::json!({"stream": true, "stream_options": {"include_usage": false}}),
            ),
            ("/v1/completions", serde_json::json!({"stream": false})),
            ("/v1/embeddings", serde_json::json!({"stream": true})),
        ] {
            let (body, asked) = ask_for_usage(path, b(v.clone()));
            assert!(!asked, "{v}");
            assert_eq!(body, b(v));
        }
    }

    #[test]
    fn the_named_model_is_read_from_either_field() {
        assert_eq!(named_model(br#"{"model":"a"}"#).as_deref(), Some("a"));
        assert_eq!(named_model(br#"{"name":"b"}"#).as_deref(), Some("b"));
        assert_eq!(named_model(br#"{"model":3}"#), None);
        assert_eq!(named_model(b"not json"), None);
    }
}
