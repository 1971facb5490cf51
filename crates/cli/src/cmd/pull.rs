//! `hearth pull NAME`: fetch a model into the store, with a progress bar on stderr. Also the
//! store side of resolving a model argument (`resolve`), and display helpers shared by the
//! other store commands.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use store::{
    catalog, ModelInfo, ModelName, Progress, PullOptions, PullOutcome, PullReport, Resolved, Store,
};

#[derive(clap::Args)]
pub struct Args {
    /// Model name: smollm2 (= smollm2:135m), gemma3:270m (a base model), qwen2.5-coder:0.5b,
    /// hf.co/ORG/REPO[:QUANT] (Q4_K_M when left out), hf.co/ORG/REPO/FILE.gguf
    name: String,
    /// Use no network at all: succeed only when the model is already in the store
    /// (also HEARTH_OFFLINE=1).
    #[arg(long)]
    offline: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let name = ModelName::parse(&a.name)?;
    let store = Store::open_default()?;
    // A catalog model's architecture is known before the download: say at once when hearth
    // cannot run it (the pull goes on: the file is kept for a hearth that can).
    let known_arch = catalog::lookup(&name).and_then(|e| e.architecture);
    if let Some(why) = known_arch.as_deref().and_then(super::unsupported) {
        eprintln!("note: hearth cannot run {name} yet: {why}; pulling it anyway");
    }
    let cancel = stop_on_signals()?;
    let report = match pull_cancellable(&store, &name, a.offline, Some(cancel)) {
        Err(e) if is_cancelled(&e) => {
            eprintln!("pull stopped; `hearth pull {name}` again goes on from what was kept");
            std::process::exit(130);
        }
        r => r?,
    };
    if known_arch.is_none() {
        let arch = ModelInfo::read(&report.path)
            .ok()
            .and_then(|i| i.architecture);
        if let Some(why) = arch.as_deref().and_then(super::unsupported) {
            eprintln!(
                "note: hearth cannot run {} yet: {why}",
                report.manifest.name
            );
        }
    }
    let m = &report.manifest;
    match &report.outcome {
        PullOutcome::AlreadyPresent => emit(&format!(
            "{} is up to date ({}, {})\n",
            m.name,
            human_bytes(m.size),
            m.digest
        )),
        PullOutcome::Downloaded { source } => emit(&format!(
            "pulled {} ({}, {}) from {}\n",
            m.name,
            human_bytes(m.size),
            m.digest,
            clean(source)
        )),
    }
}

/// Writes to stdout; a closed pipe (`hearth list | head`) ends the output quietly.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Pulls `name` into `store`, showing progress on stderr. The environment's settings apply
/// (HEARTH_OFFLINE, HEARTH_SOURCE, HF_ENDPOINT, HF_TOKEN, HEARTH_PYTHON); `offline` adds to them.
///
/// For the pulls inside other commands (`run`'s first use, `create`): SIGTERM stops the pull
/// and its pip, then ends hearth (status 143), and once the pull is over a SIGTERM ends hearth
/// at once, as it did before. (Ctrl-C reaches pip by itself: the terminal signals the whole
/// foreground group; the commands keep their own Ctrl-C handling.)
pub fn pull_with_progress(
    store: &Store,
    name: &ModelName,
    offline: bool,
) -> anyhow::Result<PullReport> {
    use signal_hook::consts::SIGTERM;
    let cancel = Arc::new(AtomicBool::new(false));
    // Registered first, so that it sees the flag before this signal sets it.
    signal_hook::flag::register_conditional_shutdown(SIGTERM, 143, Arc::clone(&cancel))
        .context("cannot handle signals")?;
    signal_hook::flag::register(SIGTERM, Arc::clone(&cancel)).context("cannot handle signals")?;
    let result = pull_cancellable(store, name, offline, Some(Arc::clone(&cancel)));
    // From now on the flag is set, so the next SIGTERM ends the process at once.
    cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    match result {
        Err(e) if is_cancelled(&e) => {
            eprintln!("pull stopped; `hearth pull {name}` goes on from what was kept");
            std::process::exit(143);
        }
        r => r,
    }
}

/// [`pull_with_progress`] that stops (killing pip) once `cancel` is set.
fn pull_cancellable(
    store: &Store,
    name: &ModelName,
    offline: bool,
    cancel: Option<Arc<AtomicBool>>,
) -> anyhow::Result<PullReport> {
    let mut opts = PullOptions::from_env()?;
    opts.offline |= offline;
    opts.cancel = cancel;
    // pip shows its own bar (bytes, rate, ETA) when a person is watching.
    opts.show_pip_output = std::io::stderr().is_terminal();
    let bar = Bar::default();
    let result = store.pull(name, &opts, &bar);
    bar.finish();
    Ok(result?)
}

/// A flag that SIGINT and SIGTERM set, for the rest of the process (`hearth pull` ends with
/// its pull): the pull then stops and kills pip, which would otherwise go on downloading
/// after hearth died. A second signal ends the process at once.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so that it sees the flag before this signal sets it.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))
            .context("cannot handle signals")?;
        signal_hook::flag::register(sig, Arc::clone(&flag)).context("cannot handle signals")?;
    }
    Ok(flag)
}

fn is_cancelled(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<store::StoreError>(),
            Some(store::StoreError::Cancelled)
        )
    })
}

/// The GGUF file for a store name, pulled first when it is absent (unless offline).
/// `arg` is what the user typed; the caller has already checked that it is not a file.
pub fn resolve(arg: &str, offline: bool) -> anyhow::Result<PathBuf> {
    resolve_store(arg, offline).map(|r| r.path)
}

/// A store model with what its manifest adds (a preset's system prompt and sampler options,
/// for `run` and the server to apply unless the user overrides them), pulled first when it
/// is absent (unless offline). The caller has already checked that `arg` is not a file.
pub fn resolve_store(arg: &str, offline: bool) -> anyhow::Result<Resolved> {
    let looks_like_file = arg.to_ascii_lowercase().ends_with(".gguf")
        && !arg.starts_with("hf.co/")
        && !arg.starts_with("huggingface.co/");
    if looks_like_file {
        bail!("cannot open model {arg}: no such file");
    }
    let name = ModelName::parse(arg)?;
    let store = Store::open_default()?;
    // A broken manifest is repaired by pulling again.
    if let Ok(Some(resolved)) = store.resolve(&name) {
        return Ok(resolved);
    }
    // Every caller loads the model next: do not download one whose architecture hearth cannot
    // run only to fail then.
    let arch = catalog::lookup(&name).and_then(|e| e.architecture);
    if let Some(why) = arch.as_deref().and_then(super::unsupported) {
        bail!(
            "cannot run {name}: {why}. Nothing was downloaded; `hearth pull {name}` keeps it \
             for a hearth that can run it"
        );
    }
    // A name nothing can be pulled for is refused before any "pulling it".
    if catalog::lookup(&name).is_none() && !name.is_hf() {
        bail!(store::StoreError::UnknownModel {
            name: name.to_string(),
            known: catalog::unknown_hint(&name),
        });
    }
    if !offline && !store::offline_from_env() {
        eprintln!("{name} is not in the store yet; pulling it");
    }
    let report = pull_with_progress(&store, &name, offline)
        .with_context(|| format!("cannot get model {name}"))?;
    Ok(Resolved::new(report.manifest, report.path))
}

/// Progress on stderr with indicatif: a bar with bytes, rate and ETA, or a spinner when the
/// size is unknown. Hidden when stderr is not a terminal; notes are always printed.
#[derive(Default)]
struct Bar {
    current: RefCell<Option<(ProgressBar, bool)>>,
}

impl Progress for Bar {
    fn begin(&self, label: &str, total: Option<u64>) {
        self.finish();
        let (pb, is_bar) = match total {
            Some(t) => {
                let style = ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                (ProgressBar::new(t).with_style(style), true)
            }
            None => {
                let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let pb = ProgressBar::new_spinner().with_style(style);
                pb.enable_steady_tick(Duration::from_millis(120));
                (pb, false)
            }
        };
        pb.set_message(clean(label));
        *self.current.borrow_mut() = Some((pb, is_bar));
    }

    fn advance_to(&self, done: u64) {
        if let Some((pb, _)) = self.current.borrow().as_ref() {
            pb.set_position(done);
        }
    }

    fn note(&self, message: &str) {
        let message = clean(message);
        match self.current.borrow().as_ref() {
            Some((pb, _)) => pb.suspend(|| eprintln!("{message}")),
            None => eprintln!("{message}"),
        }
    }

    fn finish(&self) {
        if let Some((pb, is_bar)) = self.current.borrow_mut().take() {
            // A bar that moved stays on screen as it is (full, or where a failed source
            // stopped); an empty bar or a spinner goes away.
            if is_bar && pb.position() > 0 {
                pb.abandon();
            } else {
                pb.finish_and_clear();
            }
        }
    }
}

/// `98362432` → `98.4 MB`.
pub fn human_bytes(n: u64) -> String {
    let f = n as f64;
    if n >= 1_000_000_000 {
        format!("{:.1} GB", f / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.1} MB", f / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} kB", f / 1e3)
    } else {
        format!("{n} B")
    }
}

/// Text from files or servers made safe for a terminal: control characters other than
/// newline and tab are shown escaped.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
