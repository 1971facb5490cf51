//! The usage ledger: one row per answered request in `HEARTH_HOME/ledger.db` (SQLite, WAL),
//! holding when, which model, which client, token counts, durations and energy. Never the
//! prompt or the answer: [`UsageRecord`] has no field that could hold text beyond the model's
//! name and the client's kind.
//!
//! - [`Ledger`]: open (schema versioned with `PRAGMA user_version`), [`Ledger::record`] a row,
//!   [`Ledger::groups`] totals per day and model for `hearth usage`.
//! - Token counts may be unknown (an upstream server that sent no `usage`): the row says so
//!   ([`UsageRecord::prompt_tokens`] is `None`), and a group's sums then count only the known
//!   rows, with [`Group::unknown_token_requests`] saying how many were left out.
//! - [`EnergyMeter`]: energy of a request from RAPL counters when readable, else CPU time × a
//!   configured wattage, labelled as an estimate.
//! - [`Settings`]: `HEARTH_HOME/config.toml` (`ledger`, `cpu_watts`, `price_per_kwh`, `currency`).
//! - [`PriceTable`]: cloud API prices to compare with, shipped with dated reference prices and
//!   overridable by `HEARTH_HOME/prices.json`.
//!
//! Durability: every row is its own transaction in WAL mode with `synchronous=NORMAL`: a
//! process killed at any moment leaves every committed row readable (the WAL is in the
//! kernel's hands once written); only a power cut or OS crash may lose the last rows, which
//! spares every answer an fsync (tens of milliseconds on some disks). A write waits
//! at most [`BUSY_TIMEOUT`] for a lock, so a ledger held by someone else fails fast (callers
//! warn and go on: a ledger problem must never stop an answer).

mod energy;
mod error;
mod prices;
mod settings;

pub use energy::{EnergyMeter, EnergyStart, RaplZone};
pub use error::LedgerError;
pub use prices::{CloudPrice, PriceTable, PRICES_FILE};
pub use settings::{Settings, UpstreamSetting, CONFIG_FILE};

use chrono::NaiveDate;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The ledger's file name under `HEARTH_HOME`.
pub const LEDGER_FILE: &str = "ledger.db";
/// How long a write waits for another process's lock before it gives up.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(200);
/// The schema this build writes (`PRAGMA user_version`). Versions 1 (no `remote_host`) and 2
/// (no `tokens_unknown`) are still read as they are, and brought up to date when opened for
/// writing.
pub const SCHEMA_VERSION: i64 = 3;

const SCHEMA_V1: &str = "
CREATE TABLE requests (
    id                INTEGER PRIMARY KEY,
    at_ms             INTEGER NOT NULL,  -- unix time of the answer's end, milliseconds
    model             TEXT    NOT NULL,
    client            TEXT    NOT NULL,  -- cli, openai, ollama, ...
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    load_ms           INTEGER NOT NULL,
    prompt_ms         INTEGER NOT NULL,
    generation_ms     INTEGER NOT NULL,
    energy_joules     REAL,              -- NULL when nothing could be measured or estimated
    energy_source     TEXT               -- measured-rapl | estimated-cpu-time | NULL
);
CREATE INDEX requests_at ON requests (at_ms);
";

/// Answers from another machine (`hearth serve --upstream`): their host; NULL for answers
/// computed here (every row of a version 1 ledger).
const SCHEMA_V2: &str = "ALTER TABLE requests ADD COLUMN remote_host TEXT;";

/// Bits of `tokens_unknown`: which of the row's token counts nobody reported (the column then
/// holds 0, which the sums add as nothing). A bit column rather than NULL counts because
/// version 1 declared the counts NOT NULL, and SQLite cannot drop that without copying the
/// table.
const PROMPT_UNKNOWN: i64 = 1;
const COMPLETION_UNKNOWN: i64 = 2;

/// Version 2 recorded a remote answer without `usage` as 0 prompt and 0 completion tokens.
/// No real answer has a 0-token prompt, so such a row is one whose counts were unknown: this
/// expression says so, both when a version 2 file is migrated and when it is only read, so
/// that the old rows' sums are marked as lower bounds too. The 0s themselves stay.
const V2_TOKENS_UNKNOWN: &str = "CASE WHEN remote_host IS NOT NULL AND prompt_tokens = 0 \
     AND completion_tokens = 0 THEN 3 ELSE 0 END";

const _: () = assert!(
    PROMPT_UNKNOWN | COMPLETION_UNKNOWN == 3,
    "V2_TOKENS_UNKNOWN sets both"
);

/// Version 3: which token counts are unknown (bits above); 0 for every row written before,
/// except version 2's remote rows that [`V2_TOKENS_UNKNOWN`] recognises.
fn schema_v3() -> String {
    format!(
        "ALTER TABLE requests ADD COLUMN tokens_unknown INTEGER NOT NULL DEFAULT 0;\n\
         UPDATE requests SET tokens_unknown = {V2_TOKENS_UNKNOWN};"
    )
}

/// Where the energy figure of a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnergySource {
    /// RAPL counters of the CPU package(s): measured, but for the whole package, so other
    /// programs running at the same time are counted too.
    MeasuredRapl,
    /// CPU time of this process × the configured CPU wattage: an estimate.
    EstimatedCpuTime,
}

impl EnergySource {
    pub fn as_str(self) -> &'static str {
        match self {
            EnergySource::MeasuredRapl => "measured-rapl",
            EnergySource::EstimatedCpuTime => "estimated-cpu-time",
        }
    }

    fn parse(s: &str) -> Option<EnergySource> {
        match s {
            "measured-rapl" => Some(EnergySource::MeasuredRapl),
            "estimated-cpu-time" => Some(EnergySource::EstimatedCpuTime),
            _ => None,
        }
    }
}

/// The energy of one request.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Energy {
    pub joules: f64,
    pub source: EnergySource,
}

/// One answered request. There is deliberately no field for the prompt or the answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UsageRecord {
    /// Unix time in milliseconds (see [`now_ms`]).
    pub at_ms: i64,
    /// The model's name as the user gave it (store name or file path).
    pub model: String,
    /// Who asked: `cli`, `openai`, `ollama`, ...
    pub client: String,
    /// All the prompt's tokens, including those reused from a cache (what an API bills).
    /// None: unknown (an upstream server that did not report its usage); never guessed, so
    /// that sums can say they are lower bounds instead of being silently short.
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Time spent loading the model for this request (0 when it was already loaded).
    pub load_ms: u64,
    pub prompt_ms: u64,
    pub generation_ms: u64,
    pub energy: Option<Energy>,
    /// The upstream server (`host:port`) that answered; None: this machine did.
    pub remote: Option<String>,
}

/// Unix time now, in milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Totals of one model on one day (local time), as [`Ledger::groups`] returns them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Group {
    /// `YYYY-MM-DD`, local time.
    pub day: String,
    pub model: String,
    pub requests: u64,
    /// Sums over the rows whose counts are known: lower bounds when
    /// `unknown_token_requests` > 0.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Requests with a token count unknown (prompt, completion or both), which the sums
    /// above leave out.
    pub unknown_token_requests: u64,
    pub load_ms: u64,
    pub prompt_ms: u64,
    pub generation_ms: u64,
    /// Energy from RAPL counters.
    pub measured_joules: f64,
    /// Energy estimated from CPU time.
    pub estimated_joules: f64,
    /// Requests with no energy figure at all.
    pub unmetered_requests: u64,
    /// The upstream server that answered these (None: this machine did).
    pub remote: Option<String>,
}

/// An open ledger. One connection; not shared between threads (open one per thread, or wrap
/// it in a `Mutex`).
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    /// The file's schema version: [`SCHEMA_VERSION`] once opened for writing (migrated); an
    /// older ledger opened to read keeps its own, and the queries make up for the columns
    /// it lacks.
    version: i64,
}

impl Ledger {
    /// `home/ledger.db`.
    pub fn path_in(home: &Path) -> PathBuf {
        home.join(LEDGER_FILE)
    }

    /// Opens (creating it and `home` when absent) the ledger in `home`, in WAL mode, and
    /// brings its schema up to date. A file that is not a ledger, one written by a newer
    /// hearth, or one locked for longer than [`BUSY_TIMEOUT`] is an error.
    pub fn open(home: &Path) -> Result<Ledger, LedgerError> {
        std::fs::create_dir_all(home).map_err(|source| LedgerError::Io {
            what: format!("cannot create {}", home.display()),
            source,
        })?;
        Ledger::open_file(&Ledger::path_in(home), true)
    }

    /// Opens an existing ledger for reading only (no file is created; `Ok(None)` when there
    /// is none). `hearth usage` uses this so that looking never writes.
    pub fn open_existing(home: &Path) -> Result<Option<Ledger>, LedgerError> {
        let path = Ledger::path_in(home);
        if !path.exists() {
            return Ok(None);
        }
        Ledger::open_file(&path, false).map(Some)
    }

    fn open_file(path: &Path, write: bool) -> Result<Ledger, LedgerError> {
        let sql = |source| LedgerError::sqlite(path, source);
        let flags = if write {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sql)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        let mut ledger = Ledger {
            conn,
            path: path.to_path_buf(),
            version: 0,
        };
        let version: i64 = ledger
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        if version > SCHEMA_VERSION {
            return Err(LedgerError::NewerSchema {
                path: path.to_path_buf(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if write {
            ledger
                .conn
                .pragma_update(None, "journal_mode", "WAL")
                .map_err(sql)?;
            ledger
                .conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(sql)?;
            if version < SCHEMA_VERSION {
                ledger.migrate()?;
            }
        } else if version == 0 && ledger.has_no_tables()? {
            // An empty file: a ledger that never got its schema. Nothing to read.
        } else if version < 1 {
            return Err(LedgerError::Corrupt {
                path: path.to_path_buf(),
                detail: "a SQLite file, but not a hearth ledger (no schema version)".to_owned(),
            });
        }
        ledger.version = if write { SCHEMA_VERSION } else { version };
        Ok(ledger)
    }

    fn has_no_tables(&self) -> Result<bool, LedgerError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| LedgerError::sqlite(&self.path, e))?;
        Ok(n == 0)
    }

    /// Creates the schema (version 0 is a new, empty file) or brings an older one up to
    /// date, keeping every row. One transaction: a migration cut off halfway leaves the file
    /// as it was.
    fn migrate(&self) -> Result<(), LedgerError> {
        let sql = |source| LedgerError::sqlite(&self.path, source);
        // IMMEDIATE: two processes creating the same new ledger do not both run the DDL.
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )
        .map_err(sql)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        // Another process may have migrated it meanwhile: start from what the file says now,
        // under the lock, and take each step it has not had.
        if version > SCHEMA_VERSION {
            return Err(LedgerError::NewerSchema {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < SCHEMA_VERSION {
            if version < 1 {
                tx.execute_batch(SCHEMA_V1).map_err(sql)?;
            }
            if version < 2 {
                tx.execute_batch(SCHEMA_V2).map_err(sql)?;
            }
            if version < 3 {
                tx.execute_batch(&schema_v3()).map_err(sql)?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(sql)?;
        }
        tx.commit().map_err(sql)
    }

    /// The ledger's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one row, committed (durable) when this returns `Ok`.
    pub fn record(&self, r: &UsageRecord) -> Result<(), LedgerError> {
        let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let unknown = if r.prompt_tokens.is_none() {
            PROMPT_UNKNOWN
        } else {
            0
        } | if r.completion_tokens.is_none() {
            COMPLETION_UNKNOWN
        } else {
            0
        };
        let (joules, source) = match r.energy {
            Some(e) if e.joules.is_finite() && e.joules >= 0.0 => {
                (Some(e.joules), Some(e.source.as_str()))
            }
            _ => (None, None),
        };
        self.conn
            .execute(
                "INSERT INTO requests (at_ms, model, client, prompt_tokens, completion_tokens, \
                 load_ms, prompt_ms, generation_ms, energy_joules, energy_source, remote_host, \
                 tokens_unknown) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    r.at_ms,
                    r.model,
                    r.client,
                    i(r.prompt_tokens.unwrap_or(0)),
                    i(r.completion_tokens.unwrap_or(0)),
                    i(r.load_ms),
                    i(r.prompt_ms),
                    i(r.generation_ms),
                    joules,
                    source,
                    r.remote,
                    unknown
                ],
            )
            .map_err(|e| LedgerError::sqlite(&self.path, e))?;
        Ok(())
    }

    /// Every row from `since` (a local date, inclusive) on, oldest first.
    pub fn records(&self, since: Option<NaiveDate>) -> Result<Vec<UsageRecord>, LedgerError> {
        if self.has_no_tables()? {
            return Ok(Vec::new());
        }
        let sql = |source| LedgerError::sqlite(&self.path, source);
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT at_ms, model, client, prompt_tokens, completion_tokens, load_ms, \
                 prompt_ms, generation_ms, energy_joules, energy_source, {}, {} FROM requests \
                 WHERE ?1 IS NULL OR date(at_ms / 1000, 'unixepoch', 'localtime') >= ?1 \
                 ORDER BY at_ms, id",
                self.remote_column(),
                self.unknown_column()
            ))
            .map_err(sql)?;
        let since = since.map(|d| d.format("%Y-%m-%d").to_string());
        let rows = stmt
            .query_map(params![since], |row| {
                let u = |i| row.get::<_, i64>(i).map(|v| v.max(0) as u64);
                let joules: Option<f64> = row.get(8)?;
                let source: Option<String> = row.get(9)?;
                let unknown: i64 = row.get(11)?;
                let count = |i, bit| {
                    if unknown & bit != 0 {
                        Ok(None)
                    } else {
                        u(i).map(Some)
                    }
                };
                let energy = match (joules, source.as_deref().and_then(EnergySource::parse)) {
                    (Some(joules), Some(source)) => Some(Energy { joules, source }),
                    _ => None,
                };
                Ok(UsageRecord {
                    at_ms: row.get(0)?,
                    model: row.get(1)?,
                    client: row.get(2)?,
                    prompt_tokens: count(3, PROMPT_UNKNOWN)?,
                    completion_tokens: count(4, COMPLETION_UNKNOWN)?,
                    load_ms: u(5)?,
                    prompt_ms: u(6)?,
                    generation_ms: u(7)?,
                    energy,
                    remote: row.get(10)?,
                })
            })
            .map_err(sql)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql)
    }

    /// Totals per (local) day and model from `since` on, ordered by day then model.
    pub fn groups(&self, since: Option<NaiveDate>) -> Result<Vec<Group>, LedgerError> {
        if self.has_no_tables()? {
            return Ok(Vec::new());
        }
        let sql = |source| LedgerError::sqlite(&self.path, source);
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT date(at_ms / 1000, 'unixepoch', 'localtime') AS day, model, count(*), \
                 sum(prompt_tokens), sum(completion_tokens), sum(load_ms), sum(prompt_ms), \
                 sum(generation_ms), \
                 total(CASE WHEN energy_source = 'measured-rapl' THEN energy_joules END), \
                 total(CASE WHEN energy_source = 'estimated-cpu-time' THEN energy_joules END), \
                 sum(energy_joules IS NULL OR energy_source IS NULL), {} AS remote, \
                 sum(({}) != 0) \
                 FROM requests WHERE ?1 IS NULL OR day >= ?1 \
                 GROUP BY day, model, remote ORDER BY day, model, remote",
                self.remote_column(),
                self.unknown_column()
            ))
            .map_err(sql)?;
        let since = since.map(|d| d.format("%Y-%m-%d").to_string());
        let rows = stmt
            .query_map(params![since], |row| {
                let u = |i| {
                    row.get::<_, Option<i64>>(i)
                        .map(|v| v.unwrap_or(0).max(0) as u64)
                };
                Ok(Group {
                    day: row.get(0)?,
                    model: row.get(1)?,
                    requests: u(2)?,
                    prompt_tokens: u(3)?,
                    completion_tokens: u(4)?,
                    load_ms: u(5)?,
                    prompt_ms: u(6)?,
                    generation_ms: u(7)?,
                    measured_joules: row.get(8)?,
                    estimated_joules: row.get(9)?,
                    unmetered_requests: u(10)?,
                    remote: row.get(11)?,
                    unknown_token_requests: u(12)?,
                })
            })
            .map_err(sql)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql)
    }

    /// The `remote_host` column, or NULL in a version 1 ledger opened to read.
    fn remote_column(&self) -> &'static str {
        if self.version >= 2 {
            "remote_host"
        } else {
            "NULL"
        }
    }

    /// The `tokens_unknown` bits, or what a migration would put there for a version 2 or 1
    /// ledger opened to read (version 1 had no remote answers: every count is known).
    fn unknown_column(&self) -> &'static str {
        match self.version {
            3.. => "tokens_unknown",
            2 => V2_TOKENS_UNKNOWN,
            _ => "0",
        }
    }

    /// How many rows the ledger holds.
    pub fn count(&self) -> Result<u64, LedgerError> {
        if self.has_no_tables()? {
            return Ok(0);
        }
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
            .map_err(|e| LedgerError::sqlite(&self.path, e))?;
        Ok(n.max(0) as u64)
    }

    /// SQLite's own consistency check: `Ok(())` when the file is sound.
    pub fn check_integrity(&self) -> Result<(), LedgerError> {
        let msg: Option<String> = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .optional()
            .map_err(|e| LedgerError::sqlite(&self.path, e))?;
        match msg.as_deref() {
            Some("ok") => Ok(()),
            other => Err(LedgerError::Corrupt {
                path: self.path.clone(),
                detail: other.unwrap_or("no answer").to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
