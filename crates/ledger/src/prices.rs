//! Cloud API prices, to show what the tokens run here would have cost there.
//!
//! The crate ships `prices.json`: list prices per million tokens, each entry with the date they
//! were taken and where from. They are reference prices, not live ones: providers change them.
//! A copy in `HEARTH_HOME/prices.json` (same format) replaces the shipped table; `hearth usage
//! --prices` prints the table in effect, a starting point for that copy.

use crate::LedgerError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The user's price table under `HEARTH_HOME`.
pub const PRICES_FILE: &str = "prices.json";

const SHIPPED: &str = include_str!("prices.json");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// What the table is, for people: "reference list prices ...".
    pub note: String,
    /// The currency of every price (the cloud providers bill in USD).
    pub currency: String,
    pub models: Vec<CloudPrice>,
    /// Where the table came from: `shipped` or the user's file. Not part of the file.
    #[serde(skip)]
    pub origin: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudPrice {
    /// The API model, e.g. `gpt-4o-mini`.
    pub model: String,
    pub provider: String,
    /// Price per million prompt (input) tokens.
    pub input_per_million: f64,
    /// Price per million generated (output) tokens.
    pub output_per_million: f64,
    /// When the price was taken, `YYYY-MM-DD`.
    pub as_of: String,
    /// Where it was taken from.
    pub source: String,
}

impl CloudPrice {
    /// The cost of these tokens at this price.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input_per_million
            + completion_tokens as f64 * self.output_per_million)
            / 1e6
    }
}

impl PriceTable {
    /// The table shipped with hearth.
    pub fn shipped() -> PriceTable {
        // Checked by a test: the shipped file always parses.
        let mut t = PriceTable::parse(SHIPPED).unwrap_or_else(|e| {
            unreachable!("the shipped price table is broken: {e}");
        });
        t.origin = "shipped".to_owned();
        t
    }

    /// `home/prices.json`.
    pub fn path_in(home: &Path) -> PathBuf {
        home.join(PRICES_FILE)
    }

    /// The user's table in `home/prices.json` when there is one, else the shipped one.
    pub fn load(home: &Path) -> Result<PriceTable, LedgerError> {
        let path = PriceTable::path_in(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PriceTable::shipped()),
            Err(source) => {
                return Err(LedgerError::Io {
                    what: format!("cannot read {}", path.display()),
                    source,
                })
            }
        };
        let mut t = PriceTable::parse(&text).map_err(|detail| LedgerError::BadFile {
            path: path.clone(),
            detail: format!(
                "{detail} (fix it, or delete it to use the shipped table; `hearth usage --prices` \
                 prints the shipped table in the expected format)"
            ),
        })?;
        t.origin = path.display().to_string();
        Ok(t)
    }

    /// Parses and checks a table: prices finite and not negative, dates `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<PriceTable, String> {
        let t: PriceTable =
            serde_json::from_str(text).map_err(|e| format!("not a price table: {e}"))?;
        for p in &t.models {
            for (what, v) in [
                ("input_per_million", p.input_per_million),
                ("output_per_million", p.output_per_million),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!("{}: {what} = {v} is not a price", p.model));
                }
            }
            if chrono::NaiveDate::parse_from_str(&p.as_of, "%Y-%m-%d").is_err() {
                return Err(format!(
                    "{}: as_of = {:?} is not a date (YYYY-MM-DD)",
                    p.model, p.as_of
                ));
            }
        }
        Ok(t)
    }
}
