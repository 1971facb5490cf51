//! `HEARTH_HOME/config.toml`: the ledger's settings. Every key is optional; keys this crate
//! does not know are left for other parts of hearth.
//!
//! ```toml
//! ledger = true          # record usage (false: nothing is written)
//! cpu_watts = 65.0       # the CPU's power at full load, for the estimate without RAPL
//! price_per_kwh = 0.30   # what electricity costs you
//! currency = "USD"       # the unit of price_per_kwh (the cloud table is in USD)
//!
//! # A model served by another machine (`hearth serve` passes requests for it on; repeat
//! # the table for more). The key, if the server wants one, is read from the environment
//! # variable `key_env` names, so that it is kept out of this file.
//! [[upstream]]
//! name = "llama-405b"
//! url = "http://gpu-box:8000/v1"
//! key_env = "VLLM_API_KEY"
//! ca_file = "gpu-box-ca.pem"   # https with a private CA (relative to HEARTH_HOME)
//! ```

use crate::LedgerError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The settings file's name under `HEARTH_HOME`.
pub const CONFIG_FILE: &str = "config.toml";

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settings {
    /// Record usage in the ledger.
    pub ledger: bool,
    /// The CPU's power at full load in watts (its TDP), used when RAPL is unreadable.
    pub cpu_watts: f64,
    /// The price of a kWh of electricity, in `currency`.
    pub price_per_kwh: f64,
    pub currency: String,
    /// Models served by other machines (`[[upstream]]` tables), checked further by
    /// `hearth serve`.
    pub upstreams: Vec<UpstreamSetting>,
    /// Whether the values came from a file (`false`: the defaults).
    pub from_file: bool,
}

/// One `[[upstream]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSetting {
    /// The model name clients use.
    pub name: String,
    /// The server's OpenAI base URL, e.g. `http://gpu-box:8000/v1`.
    pub url: String,
    /// The environment variable holding the server's API key.
    pub key_env: Option<String>,
    /// A PEM file of the CA certificates to trust for an https URL instead of the built-in
    /// roots (a private CA); relative paths are taken from `HEARTH_HOME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ledger: true,
            cpu_watts: 65.0,
            price_per_kwh: 0.30,
            currency: "USD".to_owned(),
            upstreams: Vec::new(),
            from_file: false,
        }
    }
}

#[derive(Deserialize)]
struct Raw {
    ledger: Option<bool>,
    cpu_watts: Option<f64>,
    price_per_kwh: Option<f64>,
    currency: Option<String>,
    upstream: Option<Vec<UpstreamSetting>>,
}

impl Settings {
    /// `home/config.toml`.
    pub fn path_in(home: &Path) -> PathBuf {
        home.join(CONFIG_FILE)
    }

    /// The settings in `home/config.toml`, the defaults where it is absent or leaves a key
    /// out. A file that cannot be read or parsed, or a value out of range, is an error naming
    /// the file and the key.
    pub fn load(home: &Path) -> Result<Settings, LedgerError> {
        let path = Settings::path_in(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(source) => {
                return Err(LedgerError::Io {
                    what: format!("cannot read {}", path.display()),
                    source,
                })
            }
        };
        Settings::parse(&text).map_err(|detail| LedgerError::BadFile { path, detail })
    }

    /// Parses the text of a settings file.
    pub fn parse(text: &str) -> Result<Settings, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| format!("not valid TOML: {e}"))?;
        let mut s = Settings {
            from_file: true,
            ..Settings::default()
        };
        if let Some(l) = raw.ledger {
            s.ledger = l;
        }
        if let Some(w) = raw.cpu_watts {
            if !(w.is_finite() && w > 0.0 && w <= 10_000.0) {
                return Err(format!(
                    "cpu_watts = {w}: give the CPU's power in watts, above 0 and at most 10000"
                ));
            }
            s.cpu_watts = w;
        }
        if let Some(p) = raw.price_per_kwh {
            if !(p.is_finite() && (0.0..=1000.0).contains(&p)) {
                return Err(format!(
                    "price_per_kwh = {p}: give the price of a kWh, 0 to 1000"
                ));
            }
            s.price_per_kwh = p;
        }
        if let Some(c) = raw.currency {
            let c = c.trim();
            if c.is_empty() || c.len() > 8 || c.chars().any(char::is_control) {
                return Err(format!(
                    "currency = {c:?}: give a short unit such as \"USD\" or \"EUR\""
                ));
            }
            s.currency = c.to_owned();
        }
        for (i, u) in raw.upstream.unwrap_or_default().into_iter().enumerate() {
            let at = format!("[[upstream]] number {} (name = {:?})", i + 1, u.name);
            if u.name.trim().is_empty() || u.url.trim().is_empty() {
                return Err(format!("{at}: both name and url must be given"));
            }
            if let Some(var) = &u.key_env {
                let ok = !var.is_empty()
                    && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !var.as_bytes()[0].is_ascii_digit();
                if !ok {
                    return Err(format!(
                        "{at}: key_env = {var:?} must name an environment variable \
                         (letters, digits and _), e.g. \"VLLM_API_KEY\""
                    ));
                }
            }
            s.upstreams.push(u);
        }
        Ok(s)
    }
}
