//! `hearth serve`: the OpenAI- and Ollama-compatible HTTP server (crate `server`).

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on. Anything but loopback requires --api-key.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the address is printed on stderr).
    #[arg(long, default_value_t = 11434)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every request.
    #[arg(long)]
    api_key: Option<String>,
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
    /// Record nothing in the usage ledger (also `ledger = false` in HEARTH_HOME/config.toml).
    #[arg(long)]
    no_ledger: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let config = server::Config {
        host: a.host,
        port: a.port,
        api_key: a.api_key,
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
        template_sandbox: server::TemplateSandbox(
            crate::template_sandbox::ProcessSandbox::new()
                .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn engine::chat::Sandbox>),
        ),
    };
    server::serve_blocking(config, Box::new(server::models::StoreModels), |addr| {
        eprintln!("hearth listening on http://{addr}");
    })
    .context("the server stopped")
}
