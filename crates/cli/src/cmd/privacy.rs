//! `hearth privacy [--json]`: every place hearth writes, what each holds, whether anything can
//! use the network with the settings in force now, and how the server binds and authenticates.
//! It only looks: nothing is created or contacted.

use ledger::{Ledger, PriceTable, Settings};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    home: PathBuf,
    /// `HEARTH_HOME` or the platform's data directory.
    home_from: &'static str,
    /// The model store: `HEARTH_MODELS`, else `home`.
    models: PathBuf,
    files: Vec<Place>,
    network: Network,
    server: Server,
}

#[derive(Serialize)]
struct Place {
    path: PathBuf,
    holds: String,
    exists: bool,
    /// Bytes on disk (files, and the files under a directory).
    bytes: Option<u64>,
}

#[derive(Serialize)]
struct Network {
    /// `HEARTH_OFFLINE` is set: no command uses the network.
    offline: bool,
    /// Whether anything can reach the network with these settings.
    possible: bool,
    /// What may, and where to.
    uses: Vec<String>,
    /// Never any telemetry, update checks or other calls home.
    telemetry: &'static str,
    /// Models whose prompts `hearth serve` sends to another machine (`[[upstream]]` in
    /// config.toml; `--upstream` flags are known only to the server they were given to).
    remote_models: Vec<RemoteModel>,
}

#[derive(Serialize)]
struct RemoteModel {
    name: String,
    url: String,
    /// Where the prompts go.
    host: String,
}

#[derive(Serialize)]
struct Server {
    default_bind: String,
    auth: String,
    cors: String,
    host_check: String,
    /// Whether `hearth serve` records usage with the settings in force.
    ledger: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let report = report()?;
    if a.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_human(&report)?;
    }
    Ok(())
}

fn report() -> anyhow::Result<Report> {
    let home = store::home_dir()?;
    let models = store::Store::default_root()?;
    let home_from = if std::env::var_os("HEARTH_HOME").is_some_and(|h| !h.is_empty()) {
        "HEARTH_HOME"
    } else {
        "the platform's data directory (set HEARTH_HOME to move it)"
    };
    // A broken config.toml is reported, not fatal: this command must always answer.
    let (settings, settings_note) = match Settings::load(&home) {
        Ok(s) => (Some(s), String::new()),
        Err(e) => (
            None,
            format!(" (cannot be read now: {e}; nothing is recorded)"),
        ),
    };
    let recording = settings.as_ref().is_some_and(|s| s.ledger);
    let ledger_state = match &settings {
        Some(s) if s.ledger => "recording is on (`ledger = false` in config.toml or --no-ledger \
                                turns it off)"
            .to_owned(),
        Some(_) => "recording is off (`ledger = false` in config.toml)".to_owned(),
        None => format!("recording is off{settings_note}"),
    };
    let ledger_path = Ledger::path_in(&home);
    let wal = |suffix: &str| {
        let mut p = ledger_path.clone().into_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    let mut files = vec![
        place(
            models.join("manifests"),
            "model names and the blob each points to; presets (system prompt, sampling options)",
        ),
        place(
            models.join("blobs"),
            "model weights (GGUF files named by their sha256); `.partial`: downloads in progress, kept for resuming",
        ),
        place(
            models.join("locks"),
            "empty lock files, held while the store changes",
        ),
        place(
            models.join("tmp"),
            "scratch space of pulls from the package mirror and of imports (removed when done)",
        ),
        place(
            ledger_path.clone(),
            &format!(
                "the usage ledger: per answer the time, model name, client (cli, openai, \
                 ollama), token counts, durations and energy; never a prompt or an answer; \
                 {ledger_state}"
            ),
        ),
        place(
            wal("-wal"),
            "the ledger's write-ahead log (rows not yet folded into ledger.db)",
        ),
        place(wal("-shm"), "the ledger's shared-memory index for the log"),
        place(
            Settings::path_in(&home),
            &format!(
                "your settings: ledger on/off, cpu_watts, price_per_kwh, currency{settings_note}"
            ),
        ),
        place(
            PriceTable::path_in(&home),
            "your cloud price table for `hearth usage` (optional; the shipped table is used without it)",
        ),
    ];
    files.push(Place {
        path: PathBuf::from("(none)"),
        holds: "chat history: not written. The interactive chat keeps its line history in \
                memory only; `/save FILE` writes a conversation (messages and settings) only \
                to the file you name"
            .to_owned(),
        exists: false,
        bytes: None,
    });
    let opts = store::PullOptions::from_env();
    let offline = store::offline_from_env();
    let uses = if offline {
        Vec::new()
    } else {
        let (endpoint, python, token) = match &opts {
            Ok(o) => (
                o.hf_endpoint.clone(),
                o.python.clone(),
                o.hf_token.is_some(),
            ),
            Err(_) => (
                store::DEFAULT_HF_ENDPOINT.to_owned(),
                "python3".to_owned(),
                false,
            ),
        };
        vec![
            format!(
                "downloading a model: `hearth pull`; `run` and `create` when the named model is \
                 not in the store; the server's /api/pull. Sources: {endpoint} (HF_ENDPOINT{}) and the \
                 Python package index through `{python} -m pip` (PIP_INDEX_URL / pip.conf); \
                 HEARTH_SOURCE picks between them",
                if token {
                    "; HF_TOKEN is set and is sent there only"
                } else {
                    ""
                }
            ),
            "`hearth fit NAME` for a model not in the store reads the file's header from the \
             same source with HTTP range requests"
                .to_owned(),
        ]
    };
    let mut uses = uses;
    uses.push(
        "`hearth ps` asks a running hearth server (HEARTH_HOST, default 127.0.0.1:11434); \
         `hearth serve` listens for requests (below) and contacts nothing, except the \
         upstream servers it is given (`--upstream NAME=URL`, `[[upstream]]` in config.toml): \
         prompts and answers for those models leave this machine"
            .to_owned(),
    );
    let remote_models: Vec<RemoteModel> = settings
        .as_ref()
        .map(|s| {
            s.upstreams
                .iter()
                .map(|u| RemoteModel {
                    name: u.name.clone(),
                    url: u.url.clone(),
                    host: server::upstream::Upstream::new(&u.name, &u.url, None)
                        .map_or_else(|e| format!("(invalid: {e})"), |up| up.host),
                })
                .collect()
        })
        .unwrap_or_default();
    for m in &remote_models {
        let plain = m.url.trim().to_ascii_lowercase().starts_with("http://");
        uses.push(format!(
            "`hearth serve` sends every prompt for model {} to {} ({}), from [[upstream]] in \
             config.toml: those prompts leave this machine{}{}",
            m.name,
            m.host,
            m.url,
            if plain {
                ", unencrypted (http://): anyone on the network between can read them"
            } else {
                ""
            },
            if offline {
                " (HEARTH_OFFLINE is set: `hearth serve` refuses to start with it)"
            } else {
                ""
            }
        ));
    }
    let network = Network {
        offline,
        possible: !offline,
        uses,
        telemetry: "none: no telemetry, update checks or other calls home, ever",
        remote_models,
    };
    let server = Server {
        default_bind: "127.0.0.1:11434 (loopback only; `hearth serve --host/--port`)".to_owned(),
        auth: "no key needed on loopback; `--api-key KEY` requires `Authorization: Bearer KEY` \
               on every request but /health and the web page's files, and binding any other \
               address is refused without one"
            .to_owned(),
        cors: "off: no browser page from another origin may call it unless named with \
               --cors-origin"
            .to_owned(),
        host_check: "requests whose Host header is neither a loopback name nor the address \
                     bound are refused (DNS rebinding)"
            .to_owned(),
        ledger: recording,
    };
    Ok(Report {
        home,
        home_from,
        models,
        files,
        network,
        server,
    })
}

fn place(path: PathBuf, holds: &str) -> Place {
    let meta = std::fs::symlink_metadata(&path).ok();
    let bytes = meta.as_ref().map(|m| {
        if m.is_dir() {
            dir_bytes(&path, 0)
        } else {
            m.len()
        }
    });
    Place {
        exists: meta.is_some(),
        path,
        holds: holds.to_owned(),
        bytes,
    }
}

/// Bytes of the files under `dir` (links not followed; depth capped).
fn dir_bytes(dir: &Path, depth: usize) -> u64 {
    if depth > 16 {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path(), depth + 1),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

/// Bytes for people: B, KiB, then MiB/GiB.
fn size(b: u64) -> String {
    if b < 1024 {
        format!("{b} B")
    } else if b < 1 << 20 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        crate::insight::human(b)
    }
}

fn print_human(r: &Report) -> anyhow::Result<()> {
    let mut out = String::new();
    out.push_str(&format!(
        "home       {} ({})\n",
        r.home.display(),
        r.home_from
    ));
    if r.models != r.home {
        out.push_str(&format!(
            "models     {} (HEARTH_MODELS)\n",
            r.models.display()
        ));
    }
    out.push_str("\nfiles hearth writes\n");
    for f in &r.files {
        let state = match (f.exists, f.bytes) {
            (true, Some(b)) => size(b),
            (true, None) => "present".to_owned(),
            (false, _) if f.path == Path::new("(none)") => "nothing written".to_owned(),
            (false, _) => "absent".to_owned(),
        };
        out.push_str(&format!(
            "  {}  ({state})\n      {}\n",
            f.path.display(),
            f.holds
        ));
    }
    out.push_str("\nnetwork\n");
    if r.network.offline {
        out.push_str("  none possible: HEARTH_OFFLINE is set, every download is refused\n");
    } else if r.network.remote_models.is_empty() {
        out.push_str(
            "  possible only to download models (HEARTH_OFFLINE=1 or --offline forbids it):\n",
        );
    } else {
        out.push_str(
            "  possible to download models and, from `hearth serve`, to send the prompts of \
             remote models to their servers (HEARTH_OFFLINE=1 forbids both):\n",
        );
    }
    for u in &r.network.uses {
        out.push_str(&format!("  - {u}\n"));
    }
    out.push_str(&format!("  telemetry: {}\n", r.network.telemetry));
    out.push_str("\nserver (hearth serve)\n");
    out.push_str(&format!("  bind       {}\n", r.server.default_bind));
    out.push_str(&format!("  auth       {}\n", r.server.auth));
    out.push_str(&format!("  CORS       {}\n", r.server.cors));
    out.push_str(&format!("  Host       {}\n", r.server.host_check));
    crate::outln!("{}", out.trim_end())?;
    Ok(())
}
