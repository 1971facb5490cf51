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
    /// Pass requests for model NAME to another machine's OpenAI-compatible server (vLLM,
    /// llama.cpp's llama-server, …) at URL, its base URL such as http://gpu-box:8000/v1; repeat
    /// for more. Also `[[upstream]]` tables in HEARTH_HOME/config.toml. Prompts for NAME leave
    /// this machine. Served on /v1/chat/completions, /v1/completions and /v1/embeddings; an
    /// upstream wins over a local model of the same name.
    #[arg(long = "upstream", value_name = "NAME=URL")]
    upstreams: Vec<String>,
    /// The API key sent to upstream servers (`Authorization: Bearer KEY`); also read from
    /// HEARTH_UPSTREAM_KEY. Used for every upstream except a config.toml one with its own
    /// `key_env`. Clients' keys for hearth are never passed on.
    #[arg(long = "upstream-key", value_name = "KEY")]
    upstream_key: Option<String>,
    /// A PEM file of CA certificates to trust for https upstreams instead of the built-in
    /// (Mozilla) roots, for servers with a private CA. Used for every https --upstream and
    /// every config.toml one without its own `ca_file`.
    #[arg(long = "upstream-ca", value_name = "FILE")]
    upstream_ca: Option<std::path::PathBuf>,
    /// Seconds an upstream may take to start answering, and the longest pause inside an
    /// answer (then 504).
    #[arg(long = "upstream-timeout", value_name = "SECS", default_value_t = server::upstream::DEFAULT_RESPONSE_TIMEOUT.as_secs())]
    upstream_timeout: u64,
    /// Seconds to connect to an upstream (then 504).
    #[arg(long = "upstream-connect-timeout", value_name = "SECS", default_value_t = server::upstream::DEFAULT_CONNECT_TIMEOUT.as_secs())]
    upstream_connect_timeout: u64,
}

/// The environment variable that may hold the API key.
const API_KEY_ENV: &str = "HEARTH_API_KEY";

/// The environment variable that may hold the key for upstream servers.
const UPSTREAM_KEY_ENV: &str = "HEARTH_UPSTREAM_KEY";

/// The key: the flag's, else the environment's (empty counts as unset, as shells often
/// leave it).
fn api_key(flag: Option<String>) -> anyhow::Result<Option<String>> {
    key_from(flag, API_KEY_ENV)
}

/// `flag`, else the environment variable `var` (empty counts as unset).
fn key_from(flag: Option<String>, var: &str) -> anyhow::Result<Option<String>> {
    if flag.is_some() {
        return Ok(flag);
    }
    match std::env::var(var) {
        Ok(k) if k.is_empty() => Ok(None),
        Ok(k) => Ok(Some(k)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("{var} is not valid UTF-8")
        }
    }
}

/// The upstreams of the command line and of config.toml, checked: a bad one stops the
/// server before it listens.
fn upstreams(a: &Args) -> anyhow::Result<server::upstream::Upstreams> {
    use server::upstream::{TrustedRoots, Upstream, Upstreams};
    let key = key_from(a.upstream_key.clone(), UPSTREAM_KEY_ENV)?;
    let ca = match &a.upstream_ca {
        Some(path) => Some(TrustedRoots::load(path).context("invalid --upstream-ca")?),
        None => None,
    };
    // The flag's CA goes with every https upstream; an http one has nothing to check.
    let with_ca = |u: Upstream, ca: &Option<TrustedRoots>| match ca {
        Some(roots) if u.is_https() => u.with_roots(roots.clone()),
        _ => Ok(u),
    };
    let mut list = Vec::new();
    for spec in &a.upstreams {
        let u = Upstream::parse(spec, key.clone()).context("invalid --upstream")?;
        list.push(with_ca(u, &ca).context("invalid --upstream")?);
    }
    let home = store::Store::default_root()?;
    let settings = ledger::Settings::load(&home)?;
    for u in settings.upstreams {
        let key = match &u.key_env {
            Some(var) => Some(key_from(None, var)?.with_context(|| {
                format!(
                    "upstream {} in {}: key_env names {var}, which is not set",
                    u.name,
                    ledger::Settings::path_in(&home).display()
                )
            })?),
            None => key.clone(),
        };
        let at = || {
            format!(
                "invalid [[upstream]] in {}",
                ledger::Settings::path_in(&home).display()
            )
        };
        let upstream = Upstream::new(&u.name, &u.url, key).with_context(at)?;
        let upstream = match &u.ca_file {
            // A table's own CA file wins over the flag's; relative to HEARTH_HOME.
            Some(file) => {
                let roots = TrustedRoots::load(&home.join(file)).with_context(at)?;
                upstream.with_roots(roots).with_context(at)?
            }
            None => with_ca(upstream, &ca).with_context(at)?,
        };
        list.push(upstream);
    }
    if let Some(path) = &a.upstream_ca {
        if !list.iter().any(|u| u.ca_file() == Some(path.as_path())) {
            eprintln!(
                "warning: --upstream-ca {} is not used: no upstream without its own ca_file uses https://",
                path.display()
            );
        }
    }
    let upstreams = Upstreams::new(
        list,
        std::time::Duration::from_secs(a.upstream_connect_timeout),
        std::time::Duration::from_secs(a.upstream_timeout),
    )
    .context("invalid upstreams (--upstream and [[upstream]] in config.toml)")?;
    // Say which wins when a name is also a local model (a store problem only skips this).
    if let Ok(store) = store::Store::open_default() {
        for u in upstreams.iter() {
            let local = store::ModelName::parse(&u.name)
                .ok()
                .and_then(|n| store.find(&n).ok().flatten());
            if local.is_some() {
                eprintln!(
                    "note: model {} is in the local store too; requests for it go to upstream {}",
                    u.name, u.host
                );
            }
        }
    }
    Ok(upstreams)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let upstreams = upstreams(&a)?;
    if !upstreams.is_empty() && store::offline_from_env() {
        anyhow::bail!(
            "HEARTH_OFFLINE is set, but upstreams are configured (--upstream or [[upstream]] in \
             config.toml), which would send prompts to another machine: unset HEARTH_OFFLINE or \
             remove the upstreams"
        );
    }
    for u in upstreams.iter() {
        eprintln!(
            "model {} is served by {} (its prompts leave this machine)",
            u.name, u.base
        );
    }
    let config = server::Config {
        upstreams,
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
