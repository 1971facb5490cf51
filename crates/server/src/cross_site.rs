//! Requests that another site's page makes through the user's browser. A page may POST to
//! `http://localhost:11434` without any CORS preflight when the request is "simple" (a form,
//! or `fetch` with `text/plain`, form or multipart content, or no content type at all), and
//! the Host check alone cannot tell it apart: such a page could load, pin (`keep_alive: -1`)
//! or evict models, burn the CPU, or pull and delete models.
//!
//! Two rules, for every request that changes state or costs work (any method but GET, HEAD
//! and OPTIONS):
//! - **Origin.** Browsers send `Origin` on every cross-origin request of those methods; only
//!   hearth's own page (same origin), the origins named by `--cors-origin` and desktop apps'
//!   web views (`vscode-webview://…`, as Ollama allows) may. Clients that are not browsers
//!   (curl, the SDKs) send none, and are unaffected.
//! - **Content type.** A JSON body must not come as `text/plain`, `multipart/form-data` or
//!   another non-JSON type (415), in case a browser or a proxy drops `Origin`. Accepted: JSON
//!   types; no `Content-Type` at all (scripts and some clients send none, and a browser
//!   request without one still carries `Origin`); and `application/x-www-form-urlencoded`,
//!   which `curl -d` sends and every Ollama example uses (an HTML form percent-encodes its
//!   fields, so it can never send a JSON body that way). The official OpenAI and Ollama
//!   clients (Python and JavaScript) send `application/json`.

use crate::error::ApiError;
use axum::http::{header, HeaderMap, Method, StatusCode};

/// Whether a request of `method` may change state or cost work.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Routes whose body is not JSON (a model's bytes).
fn takes_raw_bytes(path: &str) -> bool {
    path.starts_with("/api/blobs/")
}

/// Origins of desktop apps' web views (editor extensions, Tauri and Electron apps), which
/// Ollama also allows by default: no web page can send them.
const APP_SCHEMES: &[&str] = &["app://", "tauri://", "vscode-webview://", "vscode-file://"];

/// Refuses a request from another site's page (403) unless `--cors-origin` allows it.
pub fn check_origin(allowed: &[String], headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    if allowed
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(&origin))
        || APP_SCHEMES
            .iter()
            .any(|s| origin.to_ascii_lowercase().starts_with(s))
    {
        return Ok(());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    if origin_host.is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host)) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "a web page from {origin:?} may not use this server (generate, load, pull, copy \
             or delete models); start the server with --cors-origin {origin} to allow that \
             page"
        ),
    ))
}

/// Refuses a body that is declared as something other than JSON (415).
pub fn check_content_type(path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    if takes_raw_bytes(path) {
        return Ok(());
    }
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json || essence == "application/x-www-form-urlencoded" {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "Content-Type {:?} is not accepted: send the JSON body with `Content-Type: \
             application/json`",
            text.chars().take(100).collect::<String>()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn content_types() {
        let ok =
            |ct: &str| check_content_type("/api/chat", &headers(&[(header::CONTENT_TYPE, ct)]));
        assert!(ok("application/json").is_ok());
        assert!(ok("Application/JSON; charset=utf-8").is_ok());
        assert!(ok("application/vnd.api+json").is_ok());
        assert!(ok("application/x-www-form-urlencoded").is_ok());
        assert!(check_content_type("/api/chat", &HeaderMap::new()).is_ok());
        for bad in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "multipart/form-data; boundary=x",
            "text/json+x",
        ] {
            assert_eq!(
                ok(bad).unwrap_err().status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{bad}"
            );
        }
        let blob = headers(&[(header::CONTENT_TYPE, "application/octet-stream")]);
        assert!(check_content_type("/api/blobs/sha256:00", &blob).is_ok());
    }

    #[test]
    fn origins() {
        let own = headers(&[
            (header::HOST, "localhost:11434"),
            (header::ORIGIN, "http://localhost:11434"),
        ]);
        assert!(check_origin(&[], &own).is_ok());
        let other = headers(&[
            (header::HOST, "localhost:11434"),
            (header::ORIGIN, "https://evil.example"),
        ]);
        assert_eq!(
            check_origin(&[], &other).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(check_origin(&["https://evil.example".into()], &other).is_ok());
        let null = headers(&[(header::HOST, "localhost:11434"), (header::ORIGIN, "null")]);
        assert!(check_origin(&[], &null).is_err());
        let app = headers(&[
            (header::HOST, "localhost:11434"),
            (header::ORIGIN, "vscode-webview://1abc"),
        ]);
        assert!(check_origin(&[], &app).is_ok());
    }
}
