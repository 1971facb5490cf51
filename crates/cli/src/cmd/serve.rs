//! `hearth serve`: the OpenAI- and Ollama-compatible HTTP server (crate `server`).

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on. Anything but loopback requires an API key.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the address is printed on stderr).
    #[arg(long, default_value_t = 11434)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every request but /health (and the web
    /// page's files, which hold no secret). Also read from the
    /// HEARTH_API_KEY environment variable, which keeps the key out of the process list;
    /// the flag wins when both are set.
    #[arg(long)]
    api_key: Option<String>,
    /// Let requests name GGUF files inside DIR by path (absolute, or relative to DIR);
    /// repeat for more. Without it only models in the store can be named over HTTP.
    #[arg(long = "models-dir", value_name = "DIR")]
    models_dirs: Vec<std::path::PathBuf>,
    /// Allow browser pages from this origin (CORS); repeat for more. None: no CORS headers.
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// Inference threads (default: every core).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Context size in tokens (requests may ask for less).
    #[arg(long = "ctx", default_value_t = server::DEFAULT_CTX)]
    ctx: usize,
    /// Requests to one model decoded together in each forward pass.
    #[arg(long, default_value_t = server::DEFAULT_PARALLEL)]
    parallel: usize,
    /// Requests that may wait for a free sequence; more get 503 with Retry-After.
    #[arg(long = "queue", default_value_t = server::QUEUE_CAPACITY)]
    queue: usize,
    /// Models kept in memory at once (fewer when memory is short).
    #[arg(long = "max-loaded", default_value_t = server::DEFAULT_MAX_LOADED)]
    max_loaded: usize,
    /// Seconds a client has to send a request's headers, counted from when it connects or
    /// its previous response ends (so also how long an idle connection stays open).
    #[arg(long = "header-timeout", value_name = "SECS", default_value_t = server::listen::DEFAULT_HEADER_TIMEOUT.as_secs())]
    header_timeout: u64,
    /// Longest pause, in seconds, while a request body is being sent.
    #[arg(long = "body-timeout", value_name = "SECS", default_value_t = server::listen::DEFAULT_BODY_TIMEOUT.as_secs())]
    body_timeout: u64,
    /// Connections held at once; one more closes the longest idle one (or is closed itself
    /// when all are busy).
    #[arg(long = "max-connections", value_name = "N", default_value_t = server::listen::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Never change the model store (HEARTH_MODELS, else HEARTH_HOME): refuse pull of an
    /// absent model, create, copy, delete and blob uploads with 403. For replicas sharing
    /// one store; the ledger stays in each server's own HEARTH_HOME.
    #[arg(long)]
    read_only_store: bool,
    /// Record nothing in the usage ledger (also `ledger = false` in HEARTH_HOME/config.toml).
    #[arg(long)]
    no_ledger: bool,
}

/// The environment variable that may hold the API key.
const API_KEY_ENV: &str = "HEARTH_API_KEY";

/// The key: the flag's, else the environment's (empty counts as unset, as shells often
/// leave it).
fn api_key(flag: Option<String>) -> anyhow::Result<Option<String>> {
    if flag.is_some() {
        return Ok(flag);
    }
    match std::env::var(API_KEY_ENV) {
        Ok(k) if k.is_empty() => Ok(None),
        Ok(k) => Ok(Some(k)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("{API_KEY_ENV} is not valid UTF-8")
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let config = server::Config {
        host: a.host,
        port: a.port,
        api_key: api_key(a.api_key)?,
        cors_origins: a.cors_origins,
        threads: a.threads,
        n_ctx: a.ctx,
        queue_capacity: a.queue.max(1),
        parallel: a.parallel,
        max_loaded: a.max_loaded.max(1),
        usage: server::Usage(
            crate::insight::server_usage::ServerUsage::open(a.no_ledger)
                .map(|u| std::sync::Arc::new(u) as std::sync::Arc<dyn server::worker::UsageSink>),
        ),
        limits: server::listen::Limits {
            header_timeout: std::time::Duration::from_secs(a.header_timeout),
            body_timeout: std::time::Duration::from_secs(a.body_timeout),
            max_connections: a.max_connections,
        },
        template_sandbox: server::TemplateSandbox(
            crate::template_sandbox::ProcessSandbox::new()
                .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn engine::chat::Sandbox>),
        ),
    };
    let models = server::models::StoreModels::with_models_dirs(&a.models_dirs)
        .context("cannot use --models-dir")?
        .read_only(a.read_only_store);
    server::serve_blocking(config, Box::new(models), |addr| {
        eprintln!("hearth listening on http://{addr}");
    })
    .context("the server stopped")
}
