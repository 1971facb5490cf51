//! What a preset adds to a model: a system prompt and sampler options
//! (`hearth create NAME --from MODEL --system TEXT --param KEY=VALUE`).
//!
//! Options are stored in the manifest as a JSON object of numbers (and `stop` strings), checked
//! when the manifest is parsed: an unknown key or a value out of range makes it broken.

use crate::StoreError;
use serde::{Deserialize, Deserializer, Serialize};

/// Longest system prompt a manifest may hold, in bytes (manifests are capped at 64 KiB).
pub const MAX_SYSTEM_BYTES: usize = 16 * 1024;
/// Most `stop` strings, and the longest one in bytes.
pub const MAX_STOPS: usize = 16;
pub const MAX_STOP_BYTES: usize = 256;

/// The option keys a preset may set, with the range each accepts (as messages show it).
pub const KNOWN_PARAMS: &[(&str, &str)] = &[
    ("temperature", "between 0 and 100"),
    ("top_k", "an integer between 0 and 1000000"),
    ("top_p", "between 0 and 1"),
    ("min_p", "between 0 and 1"),
    ("typical_p", "between 0 and 1"),
    ("repeat_penalty", "greater than 0 and at most 100"),
    ("repeat_last_n", "an integer between 0 and 1048576"),
    ("presence_penalty", "between -2 and 2"),
    ("frequency_penalty", "between -2 and 2"),
    ("seed", "an integer between 0 and 18446744073709551615"),
    ("num_predict", "an integer between 1 and 1048576"),
    ("num_ctx", "an integer between 1 and 1048576"),
    (
        "stop",
        "text of 1 to 256 bytes (repeat the key for several, at most 16)",
    ),
];

const MAX_TOKENS: u64 = 1 << 20;

/// Sampler and run options; every one optional (unset: the command's own default applies).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typical_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_last_n: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Tokens to generate at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<u64>,
    /// Context size in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<u64>,
    /// Stop strings; one string is accepted where a list is expected.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub stop: Vec<String>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

fn invalid(key: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidParam {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn range_of(key: &str) -> &'static str {
    KNOWN_PARAMS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("", |(_, r)| r)
}

fn out_of_range(key: &str, got: impl std::fmt::Display) -> StoreError {
    invalid(key, format!("must be {} (got {got})", range_of(key)))
}

fn check_f(key: &str, v: Option<f64>, lo: f64, hi: f64, lo_open: bool) -> Result<(), StoreError> {
    match v {
        Some(x) if !x.is_finite() || x > hi || x < lo || (lo_open && x == lo) => {
            Err(out_of_range(key, x))
        }
        _ => Ok(()),
    }
}

fn check_u(key: &str, v: Option<u64>, lo: u64, hi: u64) -> Result<(), StoreError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) => Err(out_of_range(key, x)),
        _ => Ok(()),
    }
}

impl Params {
    pub fn is_empty(&self) -> bool {
        *self == Params::default()
    }

    /// Checks every value against its range; the error names the key and the range.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_f("temperature", self.temperature, 0.0, 100.0, false)?;
        check_u("top_k", self.top_k, 0, 1_000_000)?;
        check_f("top_p", self.top_p, 0.0, 1.0, false)?;
        check_f("min_p", self.min_p, 0.0, 1.0, false)?;
        check_f("typical_p", self.typical_p, 0.0, 1.0, false)?;
        check_f("repeat_penalty", self.repeat_penalty, 0.0, 100.0, true)?;
        check_u("repeat_last_n", self.repeat_last_n, 0, MAX_TOKENS)?;
        check_f("presence_penalty", self.presence_penalty, -2.0, 2.0, false)?;
        check_f(
            "frequency_penalty",
            self.frequency_penalty,
            -2.0,
            2.0,
            false,
        )?;
        check_u("num_predict", self.num_predict, 1, MAX_TOKENS)?;
        check_u("num_ctx", self.num_ctx, 1, MAX_TOKENS)?;
        if self.stop.len() > MAX_STOPS {
            return Err(out_of_range("stop", format!("{} strings", self.stop.len())));
        }
        for s in &self.stop {
            // Newlines and tabs are common stop strings; other control characters are not.
            let bad_char = s
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'));
            if s.is_empty() || s.len() > MAX_STOP_BYTES || bad_char {
                return Err(invalid(
                    "stop",
                    format!(
                        "{s:?} must be {} without control characters",
                        range_of("stop")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Sets one option from its text (`--param KEY=VALUE`); `stop` adds a string. The value
    /// is range-checked.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        let v = value.trim();
        let float = || -> Result<Option<f64>, StoreError> {
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(invalid(
                    key,
                    format!("{value:?} is not a number; it must be {}", range_of(key)),
                )),
            }
        };
        let int = || -> Result<Option<u64>, StoreError> {
            v.parse::<u64>().map(Some).map_err(|_| {
                invalid(
                    key,
                    format!(
                        "{value:?} is not a whole number; it must be {}",
                        range_of(key)
                    ),
                )
            })
        };
        // Changed on a copy: a refused value leaves `self` as it was.
        let mut next = self.clone();
        match key {
            "temperature" => next.temperature = float()?,
            "top_k" => next.top_k = int()?,
            "top_p" => next.top_p = float()?,
            "min_p" => next.min_p = float()?,
            "typical_p" => next.typical_p = float()?,
            "repeat_penalty" => next.repeat_penalty = float()?,
            "repeat_last_n" => next.repeat_last_n = int()?,
            "presence_penalty" => next.presence_penalty = float()?,
            "frequency_penalty" => next.frequency_penalty = float()?,
            "seed" => next.seed = int()?,
            "num_predict" => next.num_predict = int()?,
            "num_ctx" => next.num_ctx = int()?,
            // Stop strings are kept as typed: surrounding spaces may matter.
            "stop" => next.stop.push(value.to_owned()),
            _ => {
                let known: Vec<&str> = KNOWN_PARAMS.iter().map(|(k, _)| *k).collect();
                return Err(invalid(
                    key,
                    format!("unknown option; known options: {}", known.join(", ")),
                ));
            }
        }
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// `self` with every option `over` sets replacing its own (`stop` as a whole).
    pub fn merged(&self, over: &Params) -> Params {
        let pick_f = |a: Option<f64>, b: Option<f64>| b.or(a);
        let pick_u = |a: Option<u64>, b: Option<u64>| b.or(a);
        Params {
            temperature: pick_f(self.temperature, over.temperature),
            top_k: pick_u(self.top_k, over.top_k),
            top_p: pick_f(self.top_p, over.top_p),
            min_p: pick_f(self.min_p, over.min_p),
            typical_p: pick_f(self.typical_p, over.typical_p),
            repeat_penalty: pick_f(self.repeat_penalty, over.repeat_penalty),
            repeat_last_n: pick_u(self.repeat_last_n, over.repeat_last_n),
            presence_penalty: pick_f(self.presence_penalty, over.presence_penalty),
            frequency_penalty: pick_f(self.frequency_penalty, over.frequency_penalty),
            seed: pick_u(self.seed, over.seed),
            num_predict: pick_u(self.num_predict, over.num_predict),
            num_ctx: pick_u(self.num_ctx, over.num_ctx),
            stop: if over.stop.is_empty() {
                self.stop.clone()
            } else {
                over.stop.clone()
            },
        }
    }

    /// The options set, as `key=value` in [`KNOWN_PARAMS`] order (stop strings quoted).
    pub fn entries(&self) -> Vec<String> {
        let f = |k: &str, v: Option<f64>| v.map(|x| format!("{k}={x}"));
        let u = |k: &str, v: Option<u64>| v.map(|x| format!("{k}={x}"));
        let mut out: Vec<String> = [
            f("temperature", self.temperature),
            u("top_k", self.top_k),
            f("top_p", self.top_p),
            f("min_p", self.min_p),
            f("typical_p", self.typical_p),
            f("repeat_penalty", self.repeat_penalty),
            u("repeat_last_n", self.repeat_last_n),
            f("presence_penalty", self.presence_penalty),
            f("frequency_penalty", self.frequency_penalty),
            u("seed", self.seed),
            u("num_predict", self.num_predict),
            u("num_ctx", self.num_ctx),
        ]
        .into_iter()
        .flatten()
        .collect();
        out.extend(self.stop.iter().map(|s| format!("stop={s:?}")));
        out
    }
}

/// Checks a system prompt: at most [`MAX_SYSTEM_BYTES`], no control characters but newline,
/// tab and carriage return (it is shown on terminals).
pub fn check_system(text: &str) -> Result<(), String> {
    if text.len() > MAX_SYSTEM_BYTES {
        return Err(format!(
            "the system prompt has {} bytes; at most {MAX_SYSTEM_BYTES} are allowed",
            text.len()
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
    {
        return Err(format!(
            "the system prompt holds the control character {c:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(key: &str, value: &str) -> String {
        Params::default()
            .set(key, value)
            .expect_err(&format!("{key}={value} must be refused"))
            .to_string()
    }

    #[test]
    fn sets_and_checks_every_key() {
        let mut p = Params::default();
        for (k, v) in [
            ("temperature", "0.2"),
            ("top_k", "20"),
            ("top_p", "0.9"),
            ("min_p", "0"),
            ("typical_p", "1"),
            ("repeat_penalty", "1.1"),
            ("repeat_last_n", "64"),
            ("presence_penalty", "-2"),
            ("frequency_penalty", "2"),
            ("seed", "18446744073709551615"),
            ("num_predict", "128"),
            ("num_ctx", "2048"),
            ("stop", "<|im_end|>"),
            ("stop", "\n\n"),
        ] {
            p.set(k, v).unwrap_or_else(|e| panic!("{k}={v}: {e}"));
        }
        assert_eq!(p.entries().len(), 14);
        assert_eq!(p.temperature, Some(0.2));
        assert_eq!(p.stop, ["<|im_end|>", "\n\n"]);
        for (key, _) in KNOWN_PARAMS {
            assert!(
                p.entries()
                    .iter()
                    .any(|e| e.starts_with(&format!("{key}="))),
                "{key}"
            );
        }
        // Through JSON and back.
        let json = serde_json::to_string(&p).unwrap();
        let back: Params = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        let one: Params = serde_json::from_str(r#"{"stop": "x", "top_k": 3}"#).unwrap();
        assert_eq!(one.stop, ["x"]);
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values_naming_the_key_and_range() {
        let e = err("temprature", "1");
        assert!(
            e.contains("temprature") && e.contains("known options: temperature"),
            "{e}"
        );
        for (k, v, needle) in [
            (
                "temperature",
                "-0.1",
                "temperature: must be between 0 and 100 (got -0.1)",
            ),
            ("temperature", "NaN", "is not a number"),
            ("temperature", "inf", "is not a number"),
            (
                "temperature",
                "hot",
                "is not a number; it must be between 0 and 100",
            ),
            ("top_p", "1.5", "top_p: must be between 0 and 1"),
            ("min_p", "-1", "min_p: must be between 0 and 1"),
            ("typical_p", "2", "typical_p: must be between 0 and 1"),
            (
                "repeat_penalty",
                "0",
                "repeat_penalty: must be greater than 0",
            ),
            ("presence_penalty", "2.5", "between -2 and 2"),
            ("frequency_penalty", "-3", "between -2 and 2"),
            ("top_k", "1.5", "top_k: \"1.5\" is not a whole number"),
            ("top_k", "-1", "not a whole number"),
            (
                "top_k",
                "1000001",
                "top_k: must be an integer between 0 and 1000000",
            ),
            (
                "num_ctx",
                "0",
                "num_ctx: must be an integer between 1 and 1048576",
            ),
            ("num_predict", "99999999", "num_predict"),
            ("repeat_last_n", "2000000", "repeat_last_n"),
            ("seed", "18446744073709551616", "seed"),
            ("stop", "", "stop"),
            ("stop", "a\u{1b}[2J", "control"),
        ] {
            let e = err(k, v);
            assert!(e.contains(needle), "{k}={v}: {e}");
        }
        let long = "x".repeat(MAX_STOP_BYTES + 1);
        assert!(err("stop", &long).contains("1 to 256 bytes"));
        let mut p = Params::default();
        for i in 0..MAX_STOPS {
            p.set("stop", &format!("s{i}")).unwrap();
        }
        assert!(p.set("stop", "one more").is_err());
        // Parsed manifests are checked the same way.
        let p: Params = serde_json::from_str(r#"{"top_p": 7}"#).unwrap();
        assert!(p.validate().unwrap_err().to_string().contains("top_p"));
        let e = serde_json::from_str::<Params>(r#"{"mirostat": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `mirostat`"), "{e}");
    }

    #[test]
    fn merging_overrides_what_is_set() {
        let mut base = Params::default();
        base.set("temperature", "0.5").unwrap();
        base.set("top_k", "10").unwrap();
        base.set("stop", "a").unwrap();
        let mut over = Params::default();
        over.set("temperature", "0").unwrap();
        let m = base.merged(&over);
        assert_eq!(m.temperature, Some(0.0));
        assert_eq!(m.top_k, Some(10));
        assert_eq!(m.stop, ["a"]);
    }

    #[test]
    fn system_prompts() {
        assert!(check_system("Be brief.\nAnswer in French.\t").is_ok());
        assert!(check_system("a\u{1b}[31m").unwrap_err().contains("control"));
        assert!(check_system("a\0b").unwrap_err().contains("control"));
        assert!(check_system(&"x".repeat(MAX_SYSTEM_BYTES + 1))
            .unwrap_err()
            .contains("at most 16384"));
    }
}
