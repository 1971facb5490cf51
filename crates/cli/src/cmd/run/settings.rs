//! What a chat answers with: sampler options (as a preset's `Params`: the ones set, each
//! range-checked when set), the system prompt and whether to print timings. Flags, presets,
//! `/set` and saved conversations all go through [`Settings::set`], so they accept and refuse
//! the same values with the same messages.

use engine::generate::GenerateOptions;
use engine::sampler::SamplerConfig;
use serde::{Deserialize, Serialize};
use store::preset::{check_system, KNOWN_PARAMS};
use store::Params;

/// Tokens generated per answer unless `num_predict` says otherwise.
pub const DEFAULT_NUM_PREDICT: usize = 512;
/// Context size unless `--ctx` or a preset's `num_ctx` says otherwise.
pub const DEFAULT_CTX: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Options that were set; the others take the defaults of [`SamplerConfig`].
    #[serde(default)]
    pub params: Params,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Not saved: how a session looks, not what the conversation is.
    #[serde(skip)]
    pub verbose: bool,
    /// `--logit-bias` (token id, bias). Saved with the conversation, whose model name says
    /// whose token ids they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "bias_list")]
    pub logit_bias: Vec<(u32, f32)>,
}

/// A refused value: which option, and why (its range).
#[derive(Debug)]
pub struct SettingError {
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

fn refused(key: &str, reason: impl Into<String>) -> SettingError {
    SettingError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl std::error::Error for SettingError {}

impl Settings {
    /// Sets option `key` (`top_p`; `top-p` is accepted too) from text. `stop` adds a string.
    /// A refused value leaves the settings as they were.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SettingError> {
        let key = key.replace('-', "_");
        let mut next = self.params.clone();
        next.set(&key, value).map_err(|e| match e {
            store::StoreError::InvalidParam { key, reason } => refused(&key, reason),
            other => refused(&key, other.to_string()),
        })?;
        let candidate = Settings {
            params: next,
            ..self.clone()
        };
        candidate.check_sampler()?;
        self.params = candidate.params;
        Ok(())
    }

    pub fn set_system(&mut self, text: Option<&str>) -> Result<(), SettingError> {
        if let Some(t) = text {
            check_system(t).map_err(|reason| refused("system", reason))?;
        }
        self.system = text.map(str::to_owned);
        Ok(())
    }

    /// Whether `key` names an option.
    pub fn is_option(key: &str) -> bool {
        let key = key.replace('-', "_");
        KNOWN_PARAMS.iter().any(|(k, _)| *k == key)
    }

    /// The engine's own checks too (they should never refuse what the store accepted).
    pub fn check_sampler(&self) -> Result<(), SettingError> {
        self.sampler()
            .validate()
            .map_err(|e| refused(e.option, format!("must be {} (got {})", e.range, e.got)))
    }

    /// The sampler in force. Without a `seed` each call draws a fresh one, so every answer
    /// differs (a fixed default made every run give the same answer).
    pub fn sampler(&self) -> SamplerConfig {
        let d = SamplerConfig::chat();
        let p = &self.params;
        let f = |v: Option<f64>, default: f32| v.map_or(default, |x| x as f32);
        let u = |v: Option<u64>, default: usize| v.map_or(default, |x| x as usize);
        SamplerConfig {
            temperature: f(p.temperature, d.temperature),
            top_k: u(p.top_k, d.top_k),
            top_p: f(p.top_p, d.top_p),
            min_p: f(p.min_p, d.min_p),
            typical_p: f(p.typical_p, d.typical_p),
            repeat_penalty: f(p.repeat_penalty, d.repeat_penalty),
            presence_penalty: f(p.presence_penalty, d.presence_penalty),
            frequency_penalty: f(p.frequency_penalty, d.frequency_penalty),
            penalty_last_n: u(p.repeat_last_n, d.penalty_last_n),
            logit_bias: self.logit_bias.clone(),
            seed: p.seed.unwrap_or_else(engine::sampler::random_seed),
        }
    }

    pub fn num_predict(&self) -> usize {
        self.params
            .num_predict
            .map_or(DEFAULT_NUM_PREDICT, |n| n as usize)
    }

    pub fn num_ctx(&self) -> usize {
        self.params.num_ctx.map_or(DEFAULT_CTX, |n| n as usize)
    }

    pub fn generate_options(&self) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.num_predict(),
            sampler: self.sampler(),
            stop: self.params.stop.clone(),
            ..GenerateOptions::default()
        }
    }

    /// Every option with the value in force, for `/show parameters`.
    pub fn describe(&self) -> String {
        let s = self.sampler();
        let set = |on: bool| if on { "" } else { "  (default)" };
        let p = &self.params;
        let rows: Vec<(&str, String, bool)> = vec![
            (
                "temperature",
                s.temperature.to_string(),
                p.temperature.is_some(),
            ),
            ("top_k", s.top_k.to_string(), p.top_k.is_some()),
            ("top_p", s.top_p.to_string(), p.top_p.is_some()),
            ("min_p", s.min_p.to_string(), p.min_p.is_some()),
            ("typical_p", s.typical_p.to_string(), p.typical_p.is_some()),
            (
                "repeat_penalty",
                s.repeat_penalty.to_string(),
                p.repeat_penalty.is_some(),
            ),
            (
                "repeat_last_n",
                s.penalty_last_n.to_string(),
                p.repeat_last_n.is_some(),
            ),
            (
                "presence_penalty",
                s.presence_penalty.to_string(),
                p.presence_penalty.is_some(),
            ),
            (
                "frequency_penalty",
                s.frequency_penalty.to_string(),
                p.frequency_penalty.is_some(),
            ),
            (
                "seed",
                p.seed.map_or("random".to_string(), |n| n.to_string()),
                p.seed.is_some(),
            ),
            (
                "num_predict",
                self.num_predict().to_string(),
                p.num_predict.is_some(),
            ),
            ("num_ctx", self.num_ctx().to_string(), p.num_ctx.is_some()),
            ("stop", format!("{:?}", p.stop), !p.stop.is_empty()),
        ];
        let mut out = String::new();
        for (k, v, on) in rows {
            out.push_str(&format!("{k:<18} {v}{}\n", set(on)));
        }
        let system = self
            .system
            .as_deref()
            .map_or("(none)".into(), |s| format!("{s:?}"));
        out.push_str(&format!("{:<18} {system}\n", "system"));
        out.push_str(&format!("{:<18} {}\n", "verbose", self.verbose));
        out
    }
}

/// The allowed range of every option, for `/help`.
pub fn ranges() -> String {
    KNOWN_PARAMS
        .iter()
        .map(|(k, r)| format!("  {k:<18} {r}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_checks_ranges_and_keeps_old_values() {
        let mut s = Settings::default();
        s.set("temperature", "0.3").unwrap();
        s.set("top-p", "0.5").unwrap();
        assert_eq!(s.sampler().temperature, 0.3);
        assert_eq!(s.sampler().top_p, 0.5);
        let e = s.set("top_p", "2").unwrap_err().to_string();
        assert!(e.contains("top_p") && e.contains("between 0 and 1"), "{e}");
        assert_eq!(s.sampler().top_p, 0.5);
        for (k, v) in [
            ("temperature", "-1"),
            ("temperature", "NaN"),
            ("top_k", "-1"),
            ("min_p", "1.5"),
            ("typical_p", "x"),
            ("repeat_penalty", "0"),
            ("repeat_last_n", "-3"),
            ("presence_penalty", "3"),
            ("frequency_penalty", "-2.5"),
            ("seed", "-1"),
            ("num_predict", "0"),
            ("num_predict", "-5"),
            ("num_ctx", "0"),
            ("stop", ""),
            ("bogus", "1"),
        ] {
            let e = s.set(k, v).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
        assert_eq!(s.sampler().temperature, 0.3);
    }

    #[test]
    fn describe_shows_values_in_force() {
        let mut s = Settings::default();
        s.set("temperature", "0.3").unwrap();
        s.set("stop", "END").unwrap();
        let d = s.describe();
        assert!(d.contains("temperature        0.3\n"), "{d}");
        assert!(d.contains("top_k              40  (default)"), "{d}");
        assert!(d.contains("[\"END\"]"), "{d}");
    }

    #[test]
    fn seed_is_random_unless_set() {
        let mut s = Settings::default();
        assert_ne!(s.sampler().seed, s.sampler().seed);
        assert!(s
            .describe()
            .contains("seed               random  (default)"));
        s.set("seed", "42").unwrap();
        assert_eq!(s.sampler().seed, 42);
        assert_eq!(s.sampler().seed, 42);
    }

    #[test]
    fn chat_defaults_penalize_repeats_like_ollama() {
        let s = Settings::default().sampler();
        assert_eq!(s.repeat_penalty, 1.1);
        assert_eq!(s.penalty_last_n, 64);
    }

    #[test]
    fn round_trips_through_json() {
        let mut s = Settings::default();
        s.set("top_k", "7").unwrap();
        s.set_system(Some("Be brief.")).unwrap();
        let text = serde_json::to_string(&s).unwrap();
        let back: Settings = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }
}

/// The logit bias as JSON: `[[id, bias], ...]`, with `"-inf"` for a banned token (JSON has no
/// infinity). Read back with the same checks as the flag.
mod bias_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Most biased tokens in a saved conversation.
    const MAX: usize = 4096;

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Bias {
        Number(f32),
        Text(String),
    }

    pub fn serialize<S: Serializer>(v: &[(u32, f32)], s: S) -> Result<S::Ok, S::Error> {
        let list: Vec<(u32, Bias)> = v
            .iter()
            .map(|&(id, b)| {
                let b = if b.is_infinite() {
                    Bias::Text(if b < 0.0 { "-inf" } else { "inf" }.into())
                } else {
                    Bias::Number(b)
                };
                (id, b)
            })
            .collect();
        list.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u32, f32)>, D::Error> {
        use serde::de::Error;
        let list = Vec::<(u32, Bias)>::deserialize(d)?;
        if list.len() > MAX {
            return Err(D::Error::custom(format!(
                "logit_bias has {} entries; at most {MAX}",
                list.len()
            )));
        }
        list.into_iter()
            .map(|(id, b)| {
                let bias = match b {
                    Bias::Number(x) => x,
                    Bias::Text(t) => match t.as_str() {
                        "-inf" => f32::NEG_INFINITY,
                        "inf" | "+inf" => f32::INFINITY,
                        _ => {
                            return Err(D::Error::custom(format!(
                                "logit_bias: {t:?} is not a number or ±inf"
                            )))
                        }
                    },
                };
                if bias.is_nan() {
                    return Err(D::Error::custom("logit_bias: NaN is not a bias"));
                }
                Ok((id, bias))
            })
            .collect()
    }
}
