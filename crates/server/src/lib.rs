//! hearth's HTTP server: OpenAI-compatible (`/v1/...`) and Ollama-compatible (`/api/...`)
//! endpoints over the synchronous engine, which runs on a dedicated worker thread.
//!
//! [`app`] builds the router apart from any socket, so tests drive it with
//! `Router::oneshot`; [`serve`] binds and runs it.

pub mod api;
pub mod cross_site;
pub mod error;
pub mod listen;
pub mod metrics;
pub mod models;
pub mod params;
pub mod upstream;
pub mod web;
pub mod worker;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use engine::CpuBackend;
use error::ApiError;
use models::ModelSource;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use worker::{UsageSink, Worker, WorkerConfig};

/// Largest request body accepted (larger: 413).
pub const BODY_LIMIT: usize = 4 << 20;
/// Most sequences decoded together.
pub const MAX_PARALLEL: usize = 64;
/// Jobs that may wait for the worker (more: 503 with Retry-After).
pub const QUEUE_CAPACITY: usize = 8;
/// Context size unless `--ctx` says otherwise.
pub const DEFAULT_CTX: usize = 4096;
/// Sequences decoded together unless `--parallel` says otherwise.
pub const DEFAULT_PARALLEL: usize = 4;
/// Models kept in memory at once (memory permitting).
pub const DEFAULT_MAX_LOADED: usize = 3;

#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub api_key: Option<String>,
    /// Origins allowed by CORS; none: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Inference threads (None: every core).
    pub threads: Option<usize>,
    /// The default context size (Ollama's `options.num_ctx` may ask for another, up to this).
    pub n_ctx: usize,
    pub queue_capacity: usize,
    /// Requests to one model decoded together.
    pub parallel: usize,
    pub max_loaded: usize,
    /// Told of every finished request (the usage ledger).
    pub usage: Usage,
    /// Where the models' own chat templates are rendered (none: in this process).
    pub template_sandbox: TemplateSandbox,
    /// Timeouts and the connection cap.
    pub limits: listen::Limits,
    /// Models served by other machines (`--upstream NAME=URL`).
    pub upstreams: upstream::Upstreams,
}

/// A sandbox for chat templates; none by default.
#[derive(Clone, Default)]
pub struct TemplateSandbox(pub Option<Arc<dyn engine::chat::Sandbox>>);

impl std::fmt::Debug for TemplateSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "TemplateSandbox(on)"
        } else {
            "TemplateSandbox(off)"
        })
    }
}

/// Where finished requests are reported; none by default.
#[derive(Clone, Default)]
pub struct Usage(pub Option<Arc<dyn UsageSink>>);

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Usage(on)"
        } else {
            "Usage(off)"
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 11434,
            api_key: None,
            cors_origins: Vec::new(),
            threads: None,
            n_ctx: DEFAULT_CTX,
            queue_capacity: QUEUE_CAPACITY,
            parallel: DEFAULT_PARALLEL,
            max_loaded: DEFAULT_MAX_LOADED,
            usage: Usage::default(),
            template_sandbox: TemplateSandbox::default(),
            limits: listen::Limits::default(),
            upstreams: upstream::Upstreams::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to listen on {0} without an API key: anyone who can reach it could use it. Give --api-key KEY or set HEARTH_API_KEY (clients then send `Authorization: Bearer KEY`), or listen on 127.0.0.1")]
    PublicWithoutKey(String),
    #[error("--host {0:?} is not an IP address (use 127.0.0.1, ::1, 0.0.0.0 or an address of this machine)")]
    BadHost(String),
    #[error("invalid --cors-origin {0:?}: expected an origin such as http://localhost:3000")]
    BadOrigin(String),
    #[error("the API key (--api-key or HEARTH_API_KEY) must be 1 to 512 printable ASCII characters without spaces")]
    BadKey,
    #[error("--ctx must be between 16 and {max}", max = params::MAX_TOKENS_LIMIT)]
    BadCtx,
    #[error("--parallel must be between 1 and {MAX_PARALLEL}")]
    BadParallel,
    #[error("{0} must be at least 1")]
    BadLimit(&'static str),
    // The reason is the source, not in this text: `{:#}` prints the chain, and would say
    // it twice.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Config {
    /// Checks the settings that make the server unsafe or unusable.
    pub fn validate(&self) -> Result<IpAddr, ServeError> {
        let ip: IpAddr = self
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| ServeError::BadHost(self.host.clone()))?;
        if let Some(k) = &self.api_key {
            if k.is_empty() || k.len() > 512 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ServeError::BadKey);
            }
        }
        if !ip.is_loopback() && self.api_key.is_none() {
            return Err(ServeError::PublicWithoutKey(self.host.clone()));
        }
        for o in &self.cors_origins {
            if HeaderValue::from_str(o).is_err()
                || !(o.starts_with("http://") || o.starts_with("https://") || o == "*")
            {
                return Err(ServeError::BadOrigin(o.clone()));
            }
        }
        if !(16..=params::MAX_TOKENS_LIMIT as usize).contains(&self.n_ctx) {
            return Err(ServeError::BadCtx);
        }
        if !(1..=MAX_PARALLEL).contains(&self.parallel) {
            return Err(ServeError::BadParallel);
        }
        let l = &self.limits;
        if l.header_timeout.is_zero() {
            return Err(ServeError::BadLimit("--header-timeout"));
        }
        if l.body_timeout.is_zero() {
            return Err(ServeError::BadLimit("--body-timeout"));
        }
        if l.max_connections == 0 {
            return Err(ServeError::BadLimit("--max-connections"));
        }
        Ok(ip)
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Inner>,
}

pub struct Inner {
    pub config: Config,
    pub worker: Worker,
    pub models: Box<dyn ModelSource>,
    pub metrics: metrics::Metrics,
    /// Host header values (lower case, without port) accepted besides loopback names.
    allowed_hosts: Vec<String>,
    /// Bound to every address with a key: any Host is accepted (the key guards it).
    any_host: bool,
}

impl AppState {
    /// Starts the inference worker.
    pub fn new(config: Config, models: Box<dyn ModelSource>) -> AppState {
        let threads = config.threads.filter(|&n| n > 0);
        let backend = CpuBackend::shared(threads.unwrap_or_else(CpuBackend::default_threads));
        let worker = Worker::start(WorkerConfig {
            backend,
            queue_capacity: config.queue_capacity.max(1),
            parallel: config.parallel.max(1),
            max_loaded: config.max_loaded.max(1),
            default_ctx: config.n_ctx,
            usage: config.usage.0.clone(),
            template_sandbox: config.template_sandbox.0.clone(),
        });
        let host = config.host.to_ascii_lowercase();
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let any_host =
            config.api_key.is_some() && bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
        let allowed_hosts = vec![bare.clone(), format!("[{bare}]")];
        AppState {
            inner: Arc::new(Inner {
                config,
                worker,
                models,
                metrics: metrics::Metrics::default(),
                allowed_hosts,
                any_host,
            }),
        }
    }
}

/// The router: both APIs behind the Host check, the API key and the body limit.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .merge(api::openai::routes())
        .merge(api::responses::routes())
        .merge(api::ollama::routes())
        .merge(api::manage::routes())
        .merge(api::llama::routes())
        .merge(metrics::routes())
        .merge(web::routes())
        .route("/health", axum::routing::get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Inside the guard: requests for a remote model pass the Host, key and cross-site
        // checks like any other.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            upstream::proxy::route,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard));
    let origins = &state.inner.config.cors_origins;
    if !origins.is_empty() {
        use tower_http::cors::{AllowOrigin, Any, CorsLayer};
        let allow = if origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        };
        router = router.layer(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods(Any)
                .allow_headers(cors_allowed_headers()),
        );
    }
    router.with_state(state)
}

/// Request headers a page may send across origins: those of the OpenAI and Ollama SDKs for
/// JavaScript (the `x-stainless-*` family describes the client and its retries).
pub const CORS_ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "accept",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "idempotency-key",
    "user-agent",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-custom-poll-interval",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-stream-helper",
    "x-stainless-timeout",
];

fn cors_allowed_headers() -> Vec<header::HeaderName> {
    CORS_ALLOWED_HEADERS
        .iter()
        .map(|h| header::HeaderName::from_static(h))
        .collect()
}

/// `GET /health`: the server answers (llama-server's shape), for load balancers and scripts.
/// `GET` or `HEAD /health`: answered without the API key (it tells only that the server is up).
fn is_health_check(req: &Request) -> bool {
    (req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD)
        && req.uri().path() == "/health"
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Any other path: a JSON 404 in the dialect of the path (OpenAI's under /v1, Ollama's
/// elsewhere), never an empty body.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    let e = error::ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    );
    if uri.path().starts_with("/v1/") {
        e.openai()
    } else {
        e.ollama()
    }
}

/// The Host header's name without its port, lower case.
fn host_name(value: &str) -> String {
    let v = value.trim().to_ascii_lowercase();
    if v.starts_with('[') {
        return match v.find(']') {
            Some(end) => v[..=end].to_string(),
            None => v,
        };
    }
    match v.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => v,
    }
}

fn is_loopback_name(name: &str) -> bool {
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Constant-time comparison (the key's length is not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Rejects requests whose Host is not ours (DNS rebinding: 403) and, with a key, requests
/// without it (401), except those for the web page and its assets.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let s = &state.inner;
    let openai = req.uri().path().starts_with("/v1");
    let refuse = |e: ApiError| if openai { e.openai() } else { e.ollama() };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_name);
    let host_ok = s.any_host
        || host
            .as_deref()
            .is_some_and(|h| is_loopback_name(h) || s.allowed_hosts.iter().any(|a| a == h));
    if !host_ok {
        return refuse(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Host {:?} is not allowed: hearth answers only to localhost, 127.0.0.1, [::1] or the address it listens on",
                host.unwrap_or_default()
            ),
        ));
    }
    // The page and its assets hold no secrets: a browser must load them before it can ask
    // for the key. Nor does /health, which load balancers and Kubernetes probes ask without
    // one.
    if web::is_public(req.method(), req.uri().path()) || is_health_check(&req) {
        return next.run(req).await;
    }
    if let Some(key) = &s.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| same(g.as_bytes(), key.as_bytes())) {
            let mut resp = refuse(
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong API key: send `Authorization: Bearer KEY`",
                )
                .with_code("invalid_api_key"),
            );
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    if cross_site::is_unsafe(req.method()) {
        let checked = cross_site::check_origin(&s.config.cors_origins, req.headers())
            .and_then(|()| cross_site::check_content_type(req.uri().path(), req.headers()));
        if let Err(e) = checked {
            return refuse(e);
        }
    }
    next.run(req).await
}

/// Binds and serves until Ctrl-C. `on_listen` is told the address actually bound (useful
/// with port 0).
pub async fn serve(
    config: Config,
    models: Box<dyn ModelSource>,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let ip = config.validate()?;
    let addr = SocketAddr::new(ip, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    on_listen(listener.local_addr()?);
    let limits = config.limits;
    let state = AppState::new(config, models);
    listen::run(listener, app(state), limits, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}

/// [`serve`] on a runtime of its own, for callers without one.
pub fn serve_blocking(
    config: Config,
    models: Box<dyn ModelSource>,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    config.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(config, models, on_listen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(host_name("LocalHost:11434"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert!(is_loopback_name("127.0.0.2"));
        assert!(!is_loopback_name("evil.example"));
        assert!(!is_loopback_name("localhost.evil.example"));
    }

    #[test]
    fn public_host_needs_a_key() {
        let c = Config {
            host: "0.0.0.0".into(),
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ServeError::PublicWithoutKey(_))));
        let c = Config {
            api_key: Some("secret".into()),
            ..c
        };
        assert!(c.validate().is_ok());
        assert!(Config::default().validate().is_ok());
        let c = Config {
            host: "example.com".into(),
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ServeError::BadHost(_))));
    }
}
