//! `GET /metrics` in Prometheus' text format: requests by endpoint and status, tokens in and
//! out, their rates, the queue, running sequences and loaded models.

use crate::AppState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Request counters kept by the HTTP side (the worker keeps the token counters).
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

/// Paths counted by name; anything else is counted as "other" (so a scan of random paths
/// cannot grow the table).
const PATHS: &[&str] = &[
    "/",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/embeddings",
    "/api/generate",
    "/api/chat",
    "/api/tags",
    "/api/show",
    "/api/pull",
    "/api/delete",
    "/api/copy",
    "/api/ps",
    "/api/embed",
    "/api/embeddings",
    "/api/version",
    "/metrics",
];

impl Metrics {
    fn count(&self, path: &str, status: u16) {
        let path = PATHS
            .iter()
            .find(|p| **p == path)
            .copied()
            .unwrap_or("other");
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((path, status))
            .or_default() += 1;
    }
}

/// Middleware: counts every answered request.
pub async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    state.inner.metrics.count(&path, resp.status().as_u16());
    resp
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&state),
    )
        .into_response()
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

pub fn render(state: &AppState) -> String {
    let s = &state.inner;
    let status = s.worker.status();
    let t = &status.totals;
    let mut out = String::new();
    family(
        &mut out,
        "hearth_http_requests_total",
        "counter",
        "HTTP requests answered, by path and status.",
    );
    for ((path, code), n) in s
        .metrics
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let _ = writeln!(
            out,
            "hearth_http_requests_total{{path=\"{}\",status=\"{code}\"}} {n}",
            label(path)
        );
    }
    let counters: [(&str, &str, String); 8] = [
        (
            "hearth_generations_total",
            "Generation requests finished.",
            t.requests.to_string(),
        ),
        (
            "hearth_prompt_tokens_total",
            "Prompt tokens of finished requests (cached ones included).",
            t.prompt_tokens.to_string(),
        ),
        (
            "hearth_prompt_tokens_cached_total",
            "Prompt tokens taken from the KV cache of an earlier request.",
            t.cached_tokens.to_string(),
        ),
        (
            "hearth_completion_tokens_total",
            "Tokens generated.",
            t.completion_tokens.to_string(),
        ),
        (
            "hearth_prompt_seconds_total",
            "Time spent evaluating prompts.",
            format!("{:.6}", t.prompt_seconds),
        ),
        (
            "hearth_generation_seconds_total",
            "Time spent generating (per request; batched requests overlap).",
            format!("{:.6}", t.generation_seconds),
        ),
        (
            "hearth_forward_passes_total",
            "Forward passes run (each reads every weight once).",
            t.steps.to_string(),
        ),
        (
            "hearth_batched_steps_total",
            "Forward passes that served more than one request.",
            t.batched_steps.to_string(),
        ),
    ];
    for (name, help, value) in counters {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    let evaluated = t.prompt_tokens.saturating_sub(t.cached_tokens);
    let gauges: [(&str, &str, String); 5] = [
        (
            "hearth_prompt_tokens_per_second",
            "Prompt evaluation rate over all finished requests.",
            format!("{:.3}", rate(evaluated, t.prompt_seconds)),
        ),
        (
            "hearth_generation_tokens_per_second",
            "Generation rate per request over all finished requests.",
            format!("{:.3}", rate(t.completion_tokens, t.generation_seconds)),
        ),
        (
            "hearth_queue_depth",
            "Requests waiting for the inference worker.",
            s.worker.queue_depth().to_string(),
        ),
        (
            "hearth_active_sequences",
            "Requests being evaluated now.",
            status.active.to_string(),
        ),
        (
            "hearth_loaded_models",
            "Models in memory.",
            status.models.len().to_string(),
        ),
    ];
    for (name, help, value) in gauges {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        &mut out,
        "hearth_model_memory_bytes",
        "gauge",
        "Memory of each loaded model: weights plus reserved KV cache.",
    );
    for m in &status.models {
        let _ = writeln!(
            out,
            "hearth_model_memory_bytes{{model=\"{}\"}} {}",
            label(&m.name),
            m.weight_bytes + m.kv_bytes
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_paths_bounded() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let m = Metrics::default();
        m.count("/api/chat", 200);
        m.count("/api/chat", 200);
        m.count("/random/../path", 404);
        m.count("/another", 404);
        let r = m.requests.lock().unwrap();
        assert_eq!(r[&("/api/chat", 200)], 2);
        assert_eq!(r[&("other", 404)], 2);
        assert_eq!(r.len(), 2);
    }
}
