//! The web page at `/` through `Router::oneshot`: content types, the security headers, and
//! that the page loads without the API key while the API still needs it.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use server::{app, AppState, Config};
use std::path::PathBuf;
use std::sync::OnceLock;
use tower::ServiceExt;

/// An empty store for the whole test binary.
fn home() -> &'static PathBuf {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        std::env::set_var("HEARTH_HOME", &dir);
        std::env::set_var("HEARTH_OFFLINE", "1");
        dir
    })
}

fn server(api_key: Option<&str>) -> Router {
    home();
    let config = Config {
        threads: Some(1),
        api_key: api_key.map(str::to_string),
        ..Config::default()
    };
    app(AppState::new(
        config,
        Box::new(server::models::StoreModels::new()),
    ))
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

async fn get(app: &Router, uri: &str, key: Option<&str>) -> Reply {
    let mut req = Request::get(uri).header(header::HOST, "127.0.0.1:11434");
    if let Some(k) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

#[tokio::test]
async fn page_is_html_with_a_strict_policy() {
    let app = server(None);
    let r = get(&app, "/", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    assert!(r.body.starts_with("<!doctype html>"), "{}", r.body);
    assert!(r.body.contains(r#"<script type="module" src="/app.js">"#));
    let csp = r.header(header::CONTENT_SECURITY_POLICY);
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(csp.contains("object-src 'none'"), "{csp}");
    assert_eq!(r.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
}

#[tokio::test]
async fn assets_have_their_content_types() {
    let app = server(None);
    for (path, content_type, probe) in [
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            "renderMarkdown",
        ),
        (
            "/markdown.js",
            "text/javascript; charset=utf-8",
            "export function renderMarkdown",
        ),
        (
            "/highlight.js",
            "text/javascript; charset=utf-8",
            "export function highlight",
        ),
        ("/style.css", "text/css; charset=utf-8", ":root"),
        ("/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let r = get(&app, path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.header(header::CONTENT_TYPE), content_type, "{path}");
        assert_eq!(
            r.header(header::X_CONTENT_TYPE_OPTIONS),
            "nosniff",
            "{path}"
        );
        assert!(r.headers.contains_key(header::CONTENT_SECURITY_POLICY));
        assert!(r.body.contains(probe), "{path} lacks {probe:?}");
    }
    assert_eq!(
        get(&app, "/nope.js", None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn page_needs_no_key_but_the_api_does() {
    let app = server(Some("s3cret"));
    for path in [
        "/",
        "/app.js",
        "/markdown.js",
        "/highlight.js",
        "/style.css",
        "/icon.svg",
    ] {
        assert_eq!(get(&app, path, None).await.status, StatusCode::OK, "{path}");
    }
    let r = get(&app, "/api/tags", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header(header::WWW_AUTHENTICATE), "Bearer");
    assert_eq!(
        get(&app, "/api/tags", Some("wrong")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&app, "/api/tags", Some("s3cret")).await.status,
        StatusCode::OK
    );
    // Anything else that is not the page still needs the key.
    assert_eq!(
        get(&app, "/nope.js", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A POST to the page's path is not a page load.
    let req = Request::post("/")
        .header(header::HOST, "127.0.0.1")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn page_still_checks_the_host() {
    let app = server(None);
    let req = Request::get("/")
        .header(header::HOST, "evil.example")
        .body(Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}
