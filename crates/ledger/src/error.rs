use std::path::PathBuf;

/// What went wrong with the ledger, its settings or its price table. Every message names the
/// file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the ledger {} is locked by another process (waited {} ms); this request is not recorded", path.display(), crate::BUSY_TIMEOUT.as_millis())]
    Locked { path: PathBuf },
    #[error("the ledger {} is damaged or not a ledger ({detail}); move it aside and hearth starts a new one", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("the ledger {} cannot be used: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the ledger {} has schema version {found}, newer than this hearth understands ({supported}); update hearth", path.display())]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("{}: {detail}", path.display())]
    BadFile { path: PathBuf, detail: String },
}

impl LedgerError {
    /// Sorts SQLite's errors into locked, damaged and the rest.
    pub(crate) fn sqlite(path: &std::path::Path, source: rusqlite::Error) -> LedgerError {
        use rusqlite::ErrorCode as C;
        let path = path.to_path_buf();
        match source.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked) => LedgerError::Locked { path },
            Some(C::NotADatabase | C::DatabaseCorrupt) => LedgerError::Corrupt {
                path,
                detail: source.to_string(),
            },
            _ => LedgerError::Sqlite { path, source },
        }
    }
}
