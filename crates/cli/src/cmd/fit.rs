//! `hearth fit MODEL [--ctx N]`: will this model run here? Memory needed (weights, KV cache at
//! the context, compute buffers, the process) against the memory available now, with a verdict
//! and, when it does not fit, a smaller catalog model that does. A model whose architecture
//! hearth cannot run gets that as its verdict, whatever the memory. A model not in the store is
//! sized from its header, read with HTTP range requests from where `pull` would fetch it
//! (the catalog's file size when that cannot be done: offline, or a package-mirror source).

use super::unsupported;
use crate::insight::estimate::{self, Estimate};
use crate::insight::{human, system};
use anyhow::{bail, Context};
use serde::Serialize;
use std::path::{Path, PathBuf};
use store::{catalog, ModelName, Store};

/// `hearth run`'s context unless `--ctx` says otherwise.
const DEFAULT_CTX: u64 = 4096;
/// Below this many positions a model is not worth running: "does not fit".
const MIN_USEFUL_CTX: u64 = 256;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file, or a model name (from the store, else from the catalog's sizes)
    model: String,
    /// Context size in tokens (default 4096, as `hearth run`)
    #[arg(long)]
    ctx: Option<u64>,
    /// Memory to plan for instead of what is available here now, e.g. 8G or 512M (another
    /// machine, or room left for other programs)
    #[arg(long, value_name = "SIZE")]
    mem: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// Use no network: a model not in the store is sized from the catalog's file size only
    /// (also HEARTH_OFFLINE=1). Otherwise its header is read from where `pull` would fetch it.
    #[arg(long)]
    offline: bool,
}

/// `8G`, `512M`, `64K` (powers of 1024, an optional trailing `B` or `iB`) or plain bytes.
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => bail!("--mem {s}: unknown unit {c} (use K, M, G or T)"),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: f64 = num
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .ok_or_else(|| anyhow::anyhow!("--mem {s}: expected a size such as 8G or 512M"))?;
    let bytes = n * (1u64 << shift) as f64;
    if bytes >= u64::MAX as f64 {
        bail!("--mem {s} is too large");
    }
    Ok(bytes as u64)
}

#[derive(Serialize)]
struct Report {
    model: String,
    /// `file` (header read), `store` (header read from the store's blob), `remote` (header
    /// read over HTTP from where `pull` would fetch it) or `catalog` (size only).
    source: &'static str,
    path: Option<PathBuf>,
    /// For `remote`: what was read.
    remote: Option<RemoteRead>,
    ctx_requested: u64,
    estimate: Option<Estimate>,
    /// Catalog fallback: the bytes needed without the KV cache (the header is not at hand).
    min_bytes: Option<u64>,
    available_bytes: Option<u64>,
    total_bytes: Option<u64>,
    /// `fits`, `fits_reduced_ctx`, `does_not_fit`, `unknown` (available memory unknown) or
    /// `unsupported_architecture` (hearth cannot run it, whatever the memory).
    verdict: &'static str,
    /// The model's `general.architecture` (None: not known without the file's header).
    architecture: Option<String>,
    /// Why hearth cannot run the model (its architecture), with the ones it can.
    unsupported: Option<String>,
    /// The largest context that fits (when it is smaller than the one asked for).
    max_ctx: Option<u64>,
    suggestion: Option<Suggestion>,
    notes: Vec<String>,
}

#[derive(Serialize)]
struct RemoteRead {
    url: String,
    file_bytes: u64,
    /// Bytes received: the header, not the weights.
    bytes_read: u64,
    requests: u32,
}

#[derive(Serialize)]
struct Suggestion {
    model: String,
    size_bytes: u64,
    description: String,
}

enum Located {
    File(PathBuf, &'static str),
    /// Not in the store: a catalog model or an `hf.co/…` name.
    Remote(ModelName, Option<catalog::CatalogEntry>),
}

fn locate(arg: &str) -> anyhow::Result<Located> {
    let path = Path::new(arg);
    if path.is_file() {
        return Ok(Located::File(path.to_path_buf(), "file"));
    }
    if path.exists() {
        bail!("{arg} is not a file");
    }
    let looks_like_path = arg.ends_with(".gguf") && !arg.starts_with("hf.co/")
        || arg.starts_with('.')
        || arg.starts_with('/')
        || arg.contains(std::path::MAIN_SEPARATOR) && !arg.starts_with("hf.co/");
    if looks_like_path {
        bail!("no such file: {arg}");
    }
    let name = ModelName::parse(arg)
        .with_context(|| format!("{arg} is neither a file nor a model name"))?;
    let store = Store::open_default()?;
    if let Some((_, blob)) = store.find(&name)? {
        return Ok(Located::File(blob, "store"));
    }
    match catalog::lookup(&name) {
        Some(entry) => Ok(Located::Remote(name, Some(entry))),
        None if name.is_hf() => Ok(Located::Remote(name, None)),
        None => bail!(
            "{arg} is not a file, a model in the store, a catalog model ({}) or an hf.co/ORG/REPO name",
            catalog::known_names()
        ),
    }
}

/// What a model not in the store is sized from.
enum Sized {
    Header(Box<Estimate>, RemoteRead),
    Catalog(catalog::CatalogEntry, String),
}

/// Reads the model's header from its source (unless offline); falls back to the catalog's
/// size, saying why, when that fails.
fn size_remote(
    name: &ModelName,
    entry: Option<catalog::CatalogEntry>,
    ctx: u64,
    offline: bool,
) -> anyhow::Result<Sized> {
    let mut opts = store::PullOptions::from_env()?;
    opts.offline |= offline;
    let why = if opts.offline {
        "offline mode (--offline or HEARTH_OFFLINE) reads nothing over the network".to_owned()
    } else {
        match store::remote_header::remote_header(
            name,
            &opts,
            store::remote_header::MAX_HEADER_BYTES,
        ) {
            Ok(h) => {
                let e = estimate_prefix(&h.prefix, h.file_size, ctx)
                    .with_context(|| format!("cannot size {name} from {}", h.url))?;
                let read = RemoteRead {
                    url: h.url,
                    file_bytes: h.file_size,
                    bytes_read: h.bytes_read,
                    requests: h.requests,
                };
                return Ok(Sized::Header(Box::new(e), read));
            }
            Err(e) => format!("its header could not be read: {e}"),
        }
    };
    match entry {
        Some(entry) => Ok(Sized::Catalog(entry, why)),
        None => bail!("{name} is not in the store and {why}"),
    }
}

/// The estimate for a file known by its first bytes (the whole header) and its size: the
/// bytes go into a sparse temporary file of the full size (the weights read as zeros, and
/// take no disk), which is opened as any GGUF file, every check included.
fn estimate_prefix(prefix: &[u8], file_size: u64, ctx: u64) -> anyhow::Result<Estimate> {
    use std::io::Write;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = std::env::temp_dir().join(format!("hearth-fit-{}-{stamp}.gguf", std::process::id()));
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let _remove = Remove(&path);
    f.write_all(prefix)
        .and_then(|()| f.set_len(file_size.max(prefix.len() as u64)))
        .with_context(|| format!("cannot write {}", path.display()))?;
    drop(f);
    let file = gguf::GgufFile::open(&path).context("the header does not parse")?;
    estimate::estimate(&file, ctx)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let ctx = a.ctx.unwrap_or(DEFAULT_CTX);
    if ctx == 0 {
        bail!("--ctx must be at least 1");
    }
    let available = match &a.mem {
        Some(m) => Some(parse_size(m)?),
        None => system::memory().available_bytes,
    };
    let mut report = Report {
        model: a.model.clone(),
        source: "file",
        path: None,
        remote: None,
        ctx_requested: ctx,
        estimate: None,
        min_bytes: None,
        available_bytes: available,
        total_bytes: None,
        verdict: "unknown",
        architecture: None,
        unsupported: None,
        max_ctx: None,
        suggestion: None,
        notes: Vec::new(),
    };
    let located = match locate(&a.model)? {
        Located::File(path, source) => {
            let file = gguf::GgufFile::open(&path)
                .with_context(|| format!("{} is not a readable GGUF file", path.display()))?;
            let e = estimate::estimate(&file, ctx)
                .with_context(|| format!("cannot size {}", path.display()))?;
            report.source = source;
            report.path = Some(path);
            Ok(e)
        }
        Located::Remote(name, entry) => match size_remote(&name, entry, ctx, a.offline)? {
            Sized::Header(e, read) => {
                report.source = "remote";
                report.notes.push(format!(
                    "{name} is not in the store: sized from its header, read from {} ({} of {} \
                     in {} range request{}; nothing was downloaded)",
                    read.url,
                    human_small(read.bytes_read),
                    human(read.file_bytes),
                    read.requests,
                    if read.requests == 1 { "" } else { "s" }
                ));
                report.remote = Some(read);
                Ok(*e)
            }
            Sized::Catalog(entry, why) => Err((entry, why)),
        },
    };
    let needed = match located {
        Ok(e) => {
            report.architecture = Some(e.arch.clone());
            if e.n_ctx < ctx {
                report.notes.push(format!(
                    "the model was trained for {} positions: hearth caps the context there",
                    e.n_ctx_train
                ));
            }
            let total = e.total_bytes;
            if let Some(avail) = available {
                if total <= avail {
                    report.verdict = "fits";
                } else {
                    let max = e.max_ctx_within(avail);
                    if max >= MIN_USEFUL_CTX.min(e.n_ctx) {
                        report.verdict = "fits_reduced_ctx";
                        // Whole batches of positions.
                        report.max_ctx = Some(if max >= 256 { max / 256 * 256 } else { max });
                    } else {
                        report.verdict = "does_not_fit";
                    }
                }
            }
            report.estimate = Some(e);
            report.total_bytes = Some(total);
            total
        }
        Err((entry, why)) => {
            report.source = "catalog";
            let min = estimate::from_size(entry.size);
            report.min_bytes = Some(min);
            report.notes.push(format!(
                "{} is not in the store and {why}: sized from the catalog's file size ({}), \
                 without the KV cache; `hearth pull` it for a full estimate",
                entry.name,
                human(entry.size)
            ));
            if let Some(avail) = available {
                report.verdict = if min <= avail { "fits" } else { "does_not_fit" };
            }
            report.architecture = entry.architecture.clone();
            min
        }
    };
    // Memory is beside the point for a model hearth cannot run: that is the verdict.
    if let Some(why) = report.architecture.as_deref().and_then(unsupported) {
        report.verdict = "unsupported_architecture";
        report.max_ctx = None;
        report.unsupported = Some(why);
        report.notes.push(
            "the memory figures are what the model would need once hearth supports its \
             architecture"
                .to_owned(),
        );
        report.suggestion = suggest(u64::MAX, available.unwrap_or(0));
    } else if report.verdict == "does_not_fit" {
        report.suggestion = suggest(needed, available.unwrap_or(0));
    }
    if a.mem.is_some() {
        report
            .notes
            .push("available memory as given by --mem".to_owned());
    } else if available.is_none() {
        report
            .notes
            .push("available memory is unknown on this system: no verdict".to_owned());
    }
    if a.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_human(&report)?;
    }
    Ok(())
}

/// The largest catalog model smaller than `needed` whose weights fit in `available`, among
/// those hearth can run and chat with.
fn suggest(needed: u64, available: u64) -> Option<Suggestion> {
    catalog::entries()
        .into_iter()
        .filter(|e| {
            e.architecture
                .as_deref()
                .is_some_and(|a| unsupported(a).is_none())
        })
        .filter(|e| e.kind == Some(store::ModelKind::Instruct))
        .filter(|e| estimate::from_size(e.size) < needed)
        .filter(|e| estimate::from_size(e.size) <= available)
        .max_by_key(|e| e.size)
        .map(|e| Suggestion {
            model: e.name.to_string(),
            size_bytes: e.size,
            description: e.description,
        })
}

fn print_human(r: &Report) -> anyhow::Result<()> {
    let mut out = String::new();
    out.push_str(&format!("model      {}\n", r.model));
    if let Some(p) = r.path.as_ref().filter(|_| r.source == "store") {
        out.push_str(&format!("file       {}\n", p.display()));
    }
    if let Some(e) = &r.estimate {
        out.push_str(&format!(
            "           {} · {} layers · vocabulary {} · trained context {}\n",
            e.arch, e.n_layer, e.n_vocab, e.n_ctx_train
        ));
        out.push_str(&format!("context    {}\n", e.n_ctx));
        out.push_str(&format!("weights    {}\n", human(e.weights_bytes)));
        out.push_str(&format!(
            "KV cache   {} ({} per token, f16)\n",
            human(e.kv_bytes),
            human_small(e.kv_bytes_per_token)
        ));
        out.push_str(&format!("compute    {}\n", human(e.compute_bytes)));
        out.push_str(&format!("process    {}\n", human(e.overhead_bytes)));
        out.push_str(&format!("total      {}\n", human(e.total_bytes)));
    }
    if let Some(min) = r.min_bytes {
        out.push_str(&format!(
            "needs      at least {} (weights and process; KV cache not counted)\n",
            human(min)
        ));
    }
    match r.available_bytes {
        Some(b) => out.push_str(&format!("available  {}\n", human(b))),
        None => out.push_str("available  unknown\n"),
    }
    let verdict = match (r.verdict, r.max_ctx, &r.unsupported) {
        (_, _, Some(why)) => format!("cannot run here: {why}"),
        ("fits", _, _) => "fits".to_owned(),
        ("fits_reduced_ctx", Some(x), _) => format!("fits up to context {x}"),
        ("does_not_fit", _, _) => "does not fit".to_owned(),
        _ => "unknown".to_owned(),
    };
    out.push_str(&format!("verdict    {verdict}\n"));
    if let Some(s) = &r.suggestion {
        out.push_str(&format!(
            "suggestion {} ({}, {})\n",
            s.model,
            human(s.size_bytes),
            s.description
        ));
    }
    for n in &r.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    crate::outln!("{}", out.trim_end())?;
    Ok(())
}

fn human_small(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        human(bytes)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However much memory there is, the suggestion is a model hearth can run and chat with:
    /// never a catalog model of an unsupported architecture, never a base model.
    #[test]
    fn suggestions_run_here_and_chat() {
        for (needed, available) in [
            (u64::MAX, u64::MAX),
            (u64::MAX, 1 << 40),
            (1 << 40, 1 << 30),
        ] {
            let s = suggest(needed, available).expect("a suggestion");
            let e = catalog::lookup(&ModelName::parse(&s.model).unwrap()).unwrap();
            let arch = e.architecture.as_deref().unwrap();
            assert!(unsupported(arch).is_none(), "{} ({arch})", s.model);
            assert_eq!(e.kind, Some(store::ModelKind::Instruct), "{}", s.model);
        }
        // Nothing fits in a kilobyte.
        assert!(suggest(u64::MAX, 1024).is_none());
    }

    #[test]
    fn unsupported_names_the_architectures_that_run() {
        assert!(unsupported("llama").is_none());
        let why = unsupported("qwen2-moe-9000").unwrap();
        assert!(
            why.contains("qwen2-moe-9000") && why.contains("llama"),
            "{why}"
        );
    }
}
