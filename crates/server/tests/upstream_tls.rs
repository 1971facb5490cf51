//! `--upstream` over https: a stub OpenAI server on 127.0.0.1 behind TLS, its certificate
//! issued by a private CA made here. With that CA given (`--upstream-ca`, `ca_file`) the
//! answer passes; without it, or with another CA, the request is a 502 that says the TLS
//! check failed and what to do; CA files that hold no certificate are refused at startup.

mod support;

use axum::http::{header, Request, StatusCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use server::upstream::{TrustedRoots, Upstream, UpstreamError, Upstreams};
use server::{app, AppState, Config};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use support::{post, send, sse_data};

/// A CA and a server certificate for 127.0.0.1 and localhost that it issued.
struct Pki {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

fn make_pki(ca_name: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_chain: vec![server_cert.der().clone()],
        server_key: server_key.serialize_der(),
    }
}

/// An https OpenAI stub answering every request with a two-piece event stream; its base URL.
fn tls_stub(pki: &Pki) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            pki.server_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("https://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                // A client that refuses the certificate ends the handshake here.
                if !read_request(&mut tls) {
                    return;
                }
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
                );
                for e in [
                    json!({"choices": [{"index": 0, "delta": {"content": "sealed "}}]}),
                    json!({"choices": [{"index": 0, "delta": {"content": "reply"}, "finish_reason": "stop"}]}),
                    json!({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}),
                ] {
                    let _ = write!(tls, "data: {e}\n\n");
                }
                let _ = tls.write_all(b"data: [DONE]\n\n");
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    base
}

/// Reads one request's head and body; false when the connection ends first.
fn read_request(stream: &mut impl Read) -> bool {
    let mut reader = BufReader::new(stream);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).is_ok()
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The upstream `big` at `base`, trusting only the CAs in the file `ca`.
fn trusting(base: &str, ca: &Path) -> Upstream {
    Upstream::parse(&format!("big={base}"), None)
        .unwrap()
        .with_roots(TrustedRoots::load(ca).unwrap())
        .unwrap()
}

fn router(up: Upstream) -> axum::Router {
    support::home();
    let upstreams =
        Upstreams::new(vec![up], Duration::from_secs(5), Duration::from_secs(30)).unwrap();
    let config = Config {
        threads: Some(1),
        upstreams,
        ..Config::default()
    };
    app(AppState::new(config, Box::new(support::models_store())))
}

fn chat_request() -> Request<axum::body::Body> {
    let body =
        json!({"model": "big", "stream": true, "messages": [{"role": "user", "content": "Hi"}]});
    let mut req = post("/v1/chat/completions", &body);
    req.headers_mut()
        .insert(header::ACCEPT, "text/event-stream".parse().unwrap());
    req
}

#[tokio::test]
async fn an_https_upstream_with_a_private_ca_answers_when_the_ca_is_given() {
    let pki = make_pki("hearth test CA");
    let base = tls_stub(&pki);
    let dir = tempfile::tempdir().unwrap();
    let ca = write_file(dir.path(), "ca.pem", &pki.ca_pem);
    let up = trusting(&base, &ca);
    assert_eq!(up.ca_file(), Some(ca.as_path()));
    let r = send(&router(up), chat_request()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let text: String = sse_data(&r.text())
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "sealed reply");
}

/// A chat request to `up` that must fail the certificate check: the error's message.
async fn tls_failure(up: Upstream) -> String {
    let r = send(&router(up), chat_request()).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], "upstream_tls", "{v}");
    let msg = v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    println!("{msg}");
    assert!(msg.contains("failed the TLS check"), "{msg}");
    msg
}

#[tokio::test]
async fn without_the_ca_the_tls_check_fails_with_a_502_that_says_what_to_do() {
    let pki = make_pki("hearth test CA");
    let base = tls_stub(&pki);
    let up = Upstream::parse(&format!("big={base}"), None).unwrap();
    let msg = tls_failure(up).await;
    assert!(msg.contains("--upstream-ca"), "{msg}");
    assert!(msg.contains("127.0.0.1"), "{msg}");

    // Another CA's certificate does not vouch for this server either; the message names the
    // file that was trusted.
    let other = make_pki("some other CA");
    let dir = tempfile::tempdir().unwrap();
    let ca = write_file(dir.path(), "other-ca.pem", &other.ca_pem);
    let up = trusting(&base, &ca);
    let msg = tls_failure(up).await;
    assert!(msg.contains("other-ca.pem"), "{msg}");
}

#[test]
fn ca_files_without_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |path: &Path| match TrustedRoots::load(path) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e.to_string(),
    };
    let e = refused(&dir.path().join("missing.pem"));
    assert!(
        e.contains("missing.pem") && e.contains("cannot read"),
        "{e}"
    );
    let e = refused(&write_file(dir.path(), "empty.pem", ""));
    assert!(e.contains("no certificate"), "{e}");
    let e = refused(&write_file(dir.path(), "text.pem", "hello, I am not PEM\n"));
    println!("{e}");
    assert!(e.contains("text.pem"), "{e}");
    let key_only = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let e = refused(&write_file(dir.path(), "key.pem", &key_only));
    assert!(e.contains("no certificate"), "{e}");
    let e = refused(&write_file(
        dir.path(),
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    ));
    assert!(e.contains("broken.pem"), "{e}");

    // A CA file means nothing to a plain-http upstream: refused rather than ignored.
    let pki = make_pki("hearth test CA");
    let ca = write_file(dir.path(), "ca.pem", &pki.ca_pem);
    let roots = TrustedRoots::load(&ca).unwrap();
    let err = Upstream::parse("big=http://gpu-box:8000/v1", None)
        .unwrap()
        .with_roots(roots)
        .unwrap_err();
    assert_eq!(err, UpstreamError::CaWithoutTls("big".into()));
}
