//! The web chat page served at `/`, its assets embedded in the binary.
//!
//! Plain HTML, CSS and JavaScript with no build step and nothing fetched from elsewhere: the
//! page works offline. It talks to the Ollama-compatible API (`/api/tags`, `/api/chat`).
//! Every answer carries a strict Content-Security-Policy (no inline script, nothing but
//! this server), so even a rendering bug could not run a model's output as script; the page
//! itself only ever builds text nodes from model and user text.

use crate::AppState;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const MARKDOWN_JS: &str = include_str!("markdown.js");
const HIGHLIGHT_JS: &str = include_str!("highlight.js");
const STYLE_CSS: &str = include_str!("style.css");
const ICON_SVG: &str = include_str!("icon.svg");

/// The page's policy: its own scripts, styles and API only; no plugins, frames or forms
/// posting elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Paths of the page and its assets, with their content types.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", INDEX_HTML),
    ("/app.js", "text/javascript; charset=utf-8", APP_JS),
    (
        "/markdown.js",
        "text/javascript; charset=utf-8",
        MARKDOWN_JS,
    ),
    (
        "/highlight.js",
        "text/javascript; charset=utf-8",
        HIGHLIGHT_JS,
    ),
    ("/style.css", "text/css; charset=utf-8", STYLE_CSS),
    ("/icon.svg", "image/svg+xml", ICON_SVG),
];

/// Whether a request is for the page or one of its assets. These hold no secrets, so they
/// are served without the API key (the Host check still applies); the page then asks for
/// the key itself when the API answers 401.
pub fn is_public(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && ASSETS.iter().any(|(p, _, _)| *p == path)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // The assets change with the binary; revalidate rather than keep a stale page.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, body).into_response()
}

pub fn routes() -> Router<AppState> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths_are_only_the_assets() {
        assert!(is_public(&Method::GET, "/"));
        assert!(is_public(&Method::HEAD, "/app.js"));
        assert!(!is_public(&Method::POST, "/"));
        assert!(!is_public(&Method::GET, "/api/tags"));
        assert!(!is_public(&Method::GET, "/v1/models"));
        assert!(!is_public(&Method::GET, "/app.js/../api/tags"));
    }

    #[test]
    fn assets_reference_only_themselves() {
        // No CDN and no inline script, style or event handler: the CSP would block them.
        for needle in ["http://", "https://", "<script>", "style="] {
            assert!(
                !INDEX_HTML.contains(needle),
                "index.html contains {needle:?}"
            );
        }
        let handler = INDEX_HTML
            .split(|c: char| c.is_whitespace() || c == '<')
            .find(|word| word.starts_with("on") && word.contains('='));
        assert_eq!(handler, None, "index.html has an inline event handler");
        for js in [APP_JS, MARKDOWN_JS, HIGHLIGHT_JS] {
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!js.contains(banned), "the scripts must not use {banned}");
            }
        }
    }
}
