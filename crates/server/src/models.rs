//! Where models come from: a small trait so the server does not care whether a name is a
//! file or a store entry. Generation never pulls (a missing model is a 404); only
//! `/api/pull` does, through [`ModelSource::pull`].

use crate::error::ApiError;
use axum::http::StatusCode;
use std::path::{Path, PathBuf};

/// A model ready to load, with what a preset adds.
#[derive(Debug, Clone)]
pub struct ModelRef {
    /// The name the client used.
    pub name: String,
    pub path: PathBuf,
    /// A preset's system prompt, used when a chat has none.
    pub system: Option<String>,
    pub params: store::Params,
}

/// One row of `/api/tags` and `/v1/models`.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub name: String,
    pub size: u64,
    pub digest: String,
    /// RFC 3339.
    pub modified: String,
}

/// What `/api/show` needs to know about a model besides its GGUF metadata.
#[derive(Debug, Clone)]
pub struct ModelShow {
    /// The canonical name (`smollm2:135m`), or the path for a model given by path.
    pub name: String,
    /// The GGUF file.
    pub path: PathBuf,
    /// `sha256:…`, for a store model.
    pub digest: Option<String>,
    /// RFC 3339.
    pub modified: String,
    pub license: Option<String>,
    /// A preset's system prompt.
    pub system: Option<String>,
    /// A preset's options.
    pub params: store::Params,
    /// For a preset: the model it was made from.
    pub base: Option<String>,
}

/// What a finished pull gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The canonical name (`smollm2` → `smollm2:135m`).
    pub name: String,
    /// `sha256:…`.
    pub digest: String,
    pub size: u64,
    /// False when the store already had it.
    pub downloaded: bool,
}

/// Progress of a pull, as the `/api/pull` stream reports it. Called from the pulling thread.
pub trait PullProgress: Send + Sync {
    /// A transfer began: `what` names it, `digest` (`sha256:…`) when known in advance,
    /// `total` bytes when known.
    fn begin(&self, what: &str, digest: Option<&str>, total: Option<u64>);
    /// Bytes done so far in the current transfer.
    fn advance_to(&self, done: u64);
    /// A line for the user (a retry, a fallback to another source, a wait for a lock).
    fn note(&self, message: &str);
    /// The current transfer ended.
    fn finish(&self);
    /// A flag that stops the pull when set (its client went away); None: it runs to its end.
    fn cancel(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        None
    }
}

/// Where `/api/create` takes the model's bytes from.
#[derive(Debug, Clone)]
pub enum CreateFrom {
    /// A blob the client uploaded (`files: {"x.gguf": "sha256:…"}`).
    Blob(store::Digest),
    /// A GGUF file on this machine, by absolute path, owned by the server's user.
    File(PathBuf),
    /// Another model: the new one is a preset of it.
    Model(String),
}

/// A checked `/api/create` request.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub name: String,
    pub from: CreateFrom,
    pub system: Option<String>,
    pub params: store::Params,
    pub license: Option<String>,
}

pub trait ModelSource: Send + Sync + 'static {
    fn resolve(&self, name: &str) -> Result<ModelRef, ApiError>;
    fn list(&self) -> Result<Vec<ModelEntry>, ApiError>;
    /// What `/api/show` reports (404 when there is no such model, 400 for a bad name).
    fn show(&self, name: &str) -> Result<ModelShow, ApiError>;
    /// Removes a model by name (404 when absent).
    fn delete(&self, name: &str) -> Result<(), ApiError>;
    /// Gives `source` a second name, replacing any model called `destination` (as Ollama
    /// does); 404 when `source` is absent.
    fn copy(&self, source: &str, destination: &str) -> Result<(), ApiError>;
    /// Downloads a model (blocking); `progress` hears about each transfer.
    fn pull(&self, name: &str, progress: &dyn PullProgress) -> Result<Pulled, ApiError>;
    /// Whether the store holds a blob.
    fn has_blob(&self, digest: &store::Digest) -> Result<bool, ApiError>;
    /// Starts receiving a blob, with the bytes the store's disk can take (None: unknown).
    fn receive_blob(
        &self,
        digest: &store::Digest,
    ) -> Result<(store::BlobUpload, Option<u64>), ApiError>;
    /// Makes a model (replacing one of the same name, as Ollama does); returns its canonical
    /// name and digest.
    fn create(&self, spec: CreateSpec) -> Result<(String, String), ApiError>;
}

/// Models by store name (`HEARTH_HOME`) and, only when the operator named models
/// directories (`hearth serve --models-dir`), GGUF files inside them.
///
/// Why not any path: a request naming `/etc/shadow` would otherwise make the server open
/// it, and the answer (its first bytes in the error, or a different error when it is
/// missing) would read or probe files on behalf of anyone who can reach the port.
#[derive(Debug, Clone, Default)]
pub struct StoreModels {
    /// Canonical directories whose GGUF files may be named by path.
    dirs: Vec<PathBuf>,
    /// The store is shared and must not change (replicas reading one model store): pull,
    /// create, copy, delete and blob uploads are refused before they touch it.
    read_only: bool,
}

impl StoreModels {
    /// Store names only: the server's default.
    pub fn new() -> StoreModels {
        StoreModels::default()
    }

    /// Store names, and paths to files inside `dirs` (absolute, or relative to a directory).
    /// Each directory must exist; it is canonicalized once, here.
    pub fn with_models_dirs(dirs: &[PathBuf]) -> std::io::Result<StoreModels> {
        let dirs = dirs
            .iter()
            .map(|d| {
                let c = std::fs::canonicalize(d).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("models directory {}: {e}", d.display()))
                })?;
                if !c.is_dir() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("models directory {} is not a directory", d.display()),
                    ));
                }
                Ok(c)
            })
            .collect::<std::io::Result<_>>()?;
        Ok(StoreModels {
            dirs,
            read_only: false,
        })
    }

    /// Refuses every change to the store (`hearth serve --read-only-store`). Without it a
    /// store the server cannot write still serves; changes fail with the file system's error.
    pub fn read_only(mut self, read_only: bool) -> StoreModels {
        self.read_only = read_only;
        self
    }

    /// 403 when the store is read-only; `what` names the change refused.
    fn writable(&self, what: &str) -> Result<(), ApiError> {
        match self.read_only {
            true => Err(read_only_refusal(what)),
            false => Ok(()),
        }
    }

    /// The file `name` names inside a models directory, canonical (symbolic links followed,
    /// so a link out of the directory does not count). None when there is no such file, or
    /// it lies elsewhere: callers answer both the same way.
    fn file_in_dirs(&self, name: &str) -> Option<PathBuf> {
        if self.dirs.is_empty() || climbs(name) {
            return None;
        }
        let given = Path::new(name);
        let candidates: Vec<PathBuf> = if given.is_absolute() {
            vec![given.to_path_buf()]
        } else {
            self.dirs.iter().map(|d| d.join(given)).collect()
        };
        candidates.into_iter().find_map(|c| {
            let c = std::fs::canonicalize(c).ok()?;
            (self.dirs.iter().any(|d| c.starts_with(d)) && c.is_file()).then_some(c)
        })
    }

    /// What a name that is not in the store means: a file inside a models directory, or
    /// an answer that says nothing about the file system. `parsed` is the store parser's
    /// verdict, for the message about a name that is neither.
    fn by_path(
        &self,
        name: &str,
        parsed: &Result<store::ModelName, store::StoreError>,
    ) -> Result<PathBuf, ApiError> {
        if let Some(p) = self.file_in_dirs(name) {
            return Ok(p);
        }
        match parsed {
            // Refused for its text, like any other bad name.
            _ if climbs(name) => Err(ApiError::invalid(
                "model",
                "model: a relative path may not contain `..`",
            )),
            Ok(_) if !looks_like_path(name) => Err(not_found(name, "not in the store")),
            Err(e) if !looks_like_path(name) => Err(not_found(name, e)),
            // Decided from the text alone, so existence cannot be probed.
            _ if self.dirs.is_empty() => Err(ApiError::invalid(
                "model",
                "model must be the name of a model in the store (see `hearth list`); paths \
                 to files are not accepted over HTTP unless the server is started with \
                 --models-dir DIR, and then only files inside DIR",
            )),
            // The same answer for a missing file and for one outside the directories.
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "model {name:?} not found: a path must name a GGUF file inside the \
                     server's models directory"
                ),
            )
            .with_code("model_not_found")),
        }
    }
}

/// What a server with a read-only store answers to a change (403).
fn read_only_refusal(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "cannot {what}: this server's model store is read-only (hearth serve \
             --read-only-store); change models where the store is writable, for example \
             `hearth pull NAME` with the same HEARTH_MODELS"
        ),
    )
    .with_code("read_only_store")
}

/// Whether a relative path goes up a directory (`..`): out of any models directory. (An
/// absolute path is judged once canonical.)
fn climbs(name: &str) -> bool {
    let p = Path::new(name);
    !p.is_absolute()
        && p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// Whether a name is meant as a file path rather than a store name.
fn looks_like_path(name: &str) -> bool {
    name.starts_with(['/', '.', '~'])
        || name.contains('\\')
        || name.contains("..")
        || Path::new(name).is_absolute()
        || name.to_ascii_lowercase().ends_with(".gguf")
}

/// A model file that cannot be read as GGUF, as an answer: the details (which may quote
/// the file's first bytes) stay out of it.
pub fn unreadable_model(name: &str, e: &gguf::GgufError) -> ApiError {
    let why = match e {
        gguf::GgufError::Io { .. } => "cannot be read",
        _ => "is not a valid GGUF file",
    };
    ApiError::internal(format!(
        "the file of model {name:?} {why}; `hearth show` on the server's machine says more"
    ))
}

fn not_found(name: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("model {name:?} not found ({why}); pull it first with `hearth pull {name}`"),
    )
    .with_code("model_not_found")
}

/// A store name, or 400 naming `param` with the parser's reason.
fn parse_name(param: &str, name: &str) -> Result<store::ModelName, ApiError> {
    if name.is_empty() {
        return Err(ApiError::invalid(param, format!("{param} is required")));
    }
    store::ModelName::parse(name).map_err(|e| ApiError::invalid(param, format!("{param}: {e}")))
}

fn open_store() -> Result<store::Store, ApiError> {
    store::Store::open_default().map_err(|e| ApiError::internal(e.to_string()))
}

/// A store error as an HTTP status: the client's mistakes are 4xx, the hub's or mirror's
/// failures 502, the store's own trouble 500.
pub fn store_error(e: store::StoreError) -> ApiError {
    use store::StoreError as E;
    let status = match &e {
        E::InvalidName { .. }
        | E::InvalidDigest { .. }
        | E::Refused { .. }
        | E::InvalidParam { .. }
        | E::Unsupported { .. } => StatusCode::BAD_REQUEST,
        E::NotFound { .. } | E::UnknownModel { .. } | E::NoHubFile { .. } => StatusCode::NOT_FOUND,
        E::AlreadyExists { .. } => StatusCode::CONFLICT,
        E::Offline { .. } => StatusCode::FORBIDDEN,
        // Nobody reads it: its client has gone away.
        E::Cancelled => StatusCode::REQUEST_TIMEOUT,
        E::BadListing { .. }
        | E::Http { .. }
        | E::Unreachable { .. }
        | E::SizeMismatch { .. }
        | E::HashMismatch { .. }
        | E::Pip { .. }
        | E::Wheel { .. }
        | E::AllSourcesFailed { .. } => StatusCode::BAD_GATEWAY,
        E::BadManifest { .. } | E::NoHome | E::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut message = e.to_string();
    if matches!(e, E::Offline { .. }) {
        message.push_str(
            "; this server runs with HEARTH_OFFLINE set: restart it without, or pull with \
             `hearth pull` where the network is allowed",
        );
    }
    let err = ApiError::new(status, message);
    match status {
        StatusCode::NOT_FOUND => err.with_code("model_not_found"),
        _ => err,
    }
}

/// File modification time, RFC 3339 (empty when unknown).
fn file_modified(path: &Path) -> String {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_default()
}

/// The store's progress reports passed on, with the digest a catalog entry names.
struct StoreProgress<'a> {
    out: &'a dyn PullProgress,
    digest: Option<String>,
}

impl store::Progress for StoreProgress<'_> {
    fn begin(&self, label: &str, total: Option<u64>) {
        self.out.begin(label, self.digest.as_deref(), total);
    }
    fn advance_to(&self, done: u64) {
        self.out.advance_to(done);
    }
    fn note(&self, message: &str) {
        self.out.note(message);
    }
    fn finish(&self) {
        self.out.finish();
    }
}

impl ModelSource for StoreModels {
    fn resolve(&self, name: &str) -> Result<ModelRef, ApiError> {
        if name.is_empty() {
            return Err(ApiError::invalid("model", "model is required"));
        }
        let parsed = store::ModelName::parse(name);
        if let Ok(n) = &parsed {
            let store = open_store()?;
            match store.resolve(n) {
                Ok(Some(r)) => {
                    return Ok(ModelRef {
                        name: name.to_string(),
                        path: r.path,
                        system: r.system,
                        params: r.params,
                    })
                }
                Ok(None) => {}
                Err(e) => return Err(not_found(name, e)),
            }
        }
        let path = self.by_path(name, &parsed)?;
        Ok(ModelRef {
            name: name.to_string(),
            path,
            system: None,
            params: store::Params::default(),
        })
    }

    fn list(&self) -> Result<Vec<ModelEntry>, ApiError> {
        let store = store::Store::open_default().map_err(|e| ApiError::internal(e.to_string()))?;
        let entries = store
            .list()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                let (m, _) = e.model.ok()?;
                Some(ModelEntry {
                    name: m.name.to_string(),
                    size: m.size,
                    digest: m.digest.to_string(),
                    modified: m.modified,
                })
            })
            .collect())
    }

    fn show(&self, name: &str) -> Result<ModelShow, ApiError> {
        if name.is_empty() {
            return Err(ApiError::invalid("model", "model is required"));
        }
        let parsed = store::ModelName::parse(name);
        if let Err(e) = &parsed {
            if self.dirs.is_empty() && !looks_like_path(name) {
                return Err(ApiError::invalid("model", format!("model: {e}")));
            }
        }
        let found = match &parsed {
            Ok(n) => open_store()?.find(n).map_err(store_error)?,
            Err(_) => None,
        };
        let Some((m, path)) = found else {
            let path = self.by_path(name, &parsed)?;
            return Ok(ModelShow {
                name: name.to_string(),
                modified: file_modified(&path),
                path,
                digest: None,
                license: None,
                system: None,
                params: store::Params::default(),
                base: None,
            });
        };
        Ok(ModelShow {
            name: m.name.to_string(),
            path,
            digest: Some(m.digest.to_string()),
            modified: m.modified,
            license: m.license,
            system: m.system,
            params: m.params,
            base: m.base.map(|b| b.to_string()),
        })
    }

    fn delete(&self, name: &str) -> Result<(), ApiError> {
        let parsed = parse_name("model", name)?;
        self.writable("delete a model")?;
        open_store()?
            .remove(&parsed)
            .map(|_| ())
            .map_err(store_error)
    }

    fn copy(&self, source: &str, destination: &str) -> Result<(), ApiError> {
        let src = parse_name("source", source)?;
        let dst = parse_name("destination", destination)?;
        self.writable("copy a model")?;
        match open_store()?.copy(&src, &dst, true) {
            Ok(_) => Ok(()),
            Err(store::StoreError::NotFound { .. }) => Err(not_found(source, "not in the store")),
            Err(e) => Err(store_error(e)),
        }
    }

    fn has_blob(&self, digest: &store::Digest) -> Result<bool, ApiError> {
        Ok(open_store()?.has_blob(digest))
    }

    fn receive_blob(
        &self,
        digest: &store::Digest,
    ) -> Result<(store::BlobUpload, Option<u64>), ApiError> {
        self.writable("receive a blob")?;
        let store = open_store()?;
        let room = store.free_space();
        Ok((store.receive_blob(digest).map_err(store_error)?, room))
    }

    fn create(&self, spec: CreateSpec) -> Result<(String, String), ApiError> {
        let name = parse_name("model", &spec.name)?;
        self.writable("create a model")?;
        let store = open_store()?;
        let opts = store::CreateOptions {
            system: spec.system,
            params: spec.params,
            replace: true,
        };
        let made = match &spec.from {
            CreateFrom::Blob(d) => store.create_from_blob(&name, d, spec.license, &opts),
            // As for generation: only files inside a models directory, and one answer for
            // a file elsewhere and a missing one.
            CreateFrom::File(p) => match self.file_in_dirs(&p.to_string_lossy()) {
                Some(inside) => store.create_from_own_file(&name, &inside, &opts),
                None => {
                    return Err(ApiError::invalid(
                        "from",
                        format!(
                            "from {:?}: a path must name a GGUF file inside a directory the \
                             server was started with (--models-dir DIR)",
                            p.display().to_string()
                        ),
                    ))
                }
            },
            CreateFrom::Model(base) => {
                let base_name = parse_name("from", base)?;
                match store.create_preset(&name, &base_name, &opts) {
                    Err(store::StoreError::NotFound { .. }) => {
                        return Err(not_found(base, "not in the store"))
                    }
                    r => r,
                }
            }
        };
        let m = made.map_err(store_error)?;
        Ok((m.name.to_string(), m.digest.to_string()))
    }

    fn pull(&self, name: &str, progress: &dyn PullProgress) -> Result<Pulled, ApiError> {
        let parsed = parse_name("model", name)?;
        if self.read_only {
            // Clients pull to make sure a model is there: one that is needs no write.
            return match open_store()?.find(&parsed).map_err(store_error)? {
                Some((m, _)) => Ok(Pulled {
                    name: m.name.to_string(),
                    digest: m.digest.to_string(),
                    size: m.size,
                    downloaded: false,
                }),
                None => Err(read_only_refusal(&format!(
                    "pull {name:?}, which is not in the store"
                ))),
            };
        }
        let mut opts = store::PullOptions::from_env().map_err(|e| {
            ApiError::internal(format!("the server's pull settings are invalid: {e}"))
        })?;
        // pip's own output would go to the server's terminal, not to the client.
        opts.show_pip_output = false;
        opts.cancel = progress.cancel();
        let store = open_store()?;
        let adapter = StoreProgress {
            out: progress,
            digest: store::catalog::lookup(&parsed).map(|e| e.digest.to_string()),
        };
        let report = store.pull(&parsed, &opts, &adapter).map_err(store_error)?;
        Ok(Pulled {
            name: report.manifest.name.to_string(),
            digest: report.manifest.digest.to_string(),
            size: report.manifest.size,
            downloaded: matches!(report.outcome, store::PullOutcome::Downloaded { .. }),
        })
    }
}
