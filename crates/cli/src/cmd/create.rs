//! `hearth create NAME --from FILE.gguf|MODEL [--system TEXT] [--param KEY=VALUE]… [--force]`:
//! a model from a local GGUF file (imported into the store), or a preset of a model in the
//! store (its blob, with a system prompt and sampler options of its own).

use super::pull::{clean, emit, human_bytes, pull_with_progress};
use anyhow::{bail, Context};
use std::path::Path;
use store::{CreateOptions, Manifest, ModelName, Params, Store};

#[derive(clap::Args)]
pub struct Args {
    /// The new model's name.
    name: String,
    /// A GGUF file to import, or a model name to make a preset of (pulled when absent).
    #[arg(long, value_name = "FILE.gguf|MODEL")]
    from: String,
    /// The system prompt `run` uses unless it is given another.
    #[arg(long)]
    system: Option<String>,
    /// A sampler option as KEY=VALUE (repeatable): temperature, top_k, top_p, min_p,
    /// typical_p, repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty, seed,
    /// num_predict, num_ctx, stop.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Replace a model of the same name.
    #[arg(long)]
    force: bool,
    /// Use no network: a base model that is absent is an error (also HEARTH_OFFLINE=1).
    #[arg(long)]
    offline: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let name = ModelName::parse(&a.name)?;
    let mut params = Params::default();
    for p in &a.params {
        let Some((key, value)) = p.split_once('=') else {
            bail!("--param takes KEY=VALUE (for example temperature=0.2), got {p:?}");
        };
        params.set(key.trim(), value)?;
    }
    let opts = CreateOptions {
        system: a.system.clone(),
        params,
        replace: a.force,
    };
    let store = Store::open_default()?;
    let file = Path::new(&a.from);
    if file.is_file() {
        let m = store.create_from_file(&name, file, &opts)?;
        return emit(&format!(
            "created {} from {} ({}, {}){}\n",
            m.name,
            clean(&file.display().to_string()),
            human_bytes(m.size),
            m.digest,
            extras(&m)
        ));
    }
    let lower = a.from.to_ascii_lowercase();
    if lower.ends_with(".gguf")
        && !lower.starts_with("hf.co/")
        && !lower.starts_with("huggingface.co/")
    {
        bail!("cannot import {}: no such file", clean(&a.from));
    }
    let base = ModelName::parse(&a.from)?;
    if store.find(&base)?.is_none() {
        if !a.offline && !store::offline_from_env() {
            eprintln!("{base} is not in the store yet; pulling it");
        }
        pull_with_progress(&store, &base, a.offline)
            .with_context(|| format!("cannot get the base model {base}"))?;
    }
    let m = store.create_preset(&name, &base, &opts)?;
    emit(&format!(
        "created {}, a preset of {base} ({}){}\n",
        m.name,
        m.digest,
        extras(&m)
    ))
}

/// `: system prompt, temperature=0.2` — what the manifest adds, if anything.
fn extras(m: &Manifest) -> String {
    let mut parts = Vec::new();
    if m.system.is_some() {
        parts.push("system prompt".to_owned());
    }
    parts.extend(m.params.entries().iter().map(|e| clean(e)));
    if parts.is_empty() {
        String::new()
    } else {
        format!(" with {}", parts.join(", "))
    }
}
