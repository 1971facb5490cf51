//! Model names and blob digests, validated when they are parsed.
//!
//! Every name and digest the store ever turns into a path goes through [`ModelName::parse`] or
//! [`Digest::parse`] first (manifests deserialize through them too), so the code that writes
//! files never has to check anything: a validated name can only map to a path inside the store.
//!
//! Grammar (at most [`MAX_NAME_LEN`] bytes, no control characters or whitespace, no `..`, no `\`):
//! - `NAME[:TAG]` — a local or catalog name: `smollm2`, `smollm2:135m`, `gemma3:270m`. `NAME` and
//!   `TAG` are `[a-z0-9][a-z0-9._-]*` (upper case is folded to lower case). Without a tag the
//!   catalog's default tag for that name is used, else `latest`.
//! - `hf.co/ORG/REPO[:QUANT]` — a GGUF repository on Hugging Face (`huggingface.co/` is accepted
//!   as a spelling of `hf.co/`); `QUANT` defaults to [`DEFAULT_HF_QUANT`]. Case is kept.
//! - `hf.co/ORG/REPO/FILE.gguf` — one file of such a repository (no tag).

use crate::StoreError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Longest accepted model name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest accepted single component (name, organisation, repository or tag), in bytes.
pub const MAX_COMPONENT_LEN: usize = 128;
/// The quantization chosen for `hf.co/ORG/REPO` without a tag.
pub const DEFAULT_HF_QUANT: &str = "Q4_K_M";
/// The tag of a local name given without one and unknown to the catalog.
pub const DEFAULT_TAG: &str = "latest";
/// How a Hugging Face name is spelled in canonical form.
pub const HF_HOST: &str = "hf.co";

/// A validated model name: a repository part (`smollm2`, `hf.co/ORG/REPO`) and a tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName {
    repo: String,
    tag: String,
}

impl ModelName {
    /// Parses and canonicalizes a name; see the module documentation for the grammar.
    pub fn parse(input: &str) -> Result<ModelName, StoreError> {
        let bad = |reason: &str| StoreError::InvalidName {
            name: input.to_owned(),
            reason: reason.to_owned(),
        };
        if input.is_empty() {
            return Err(bad("it is empty"));
        }
        if input.len() > MAX_NAME_LEN {
            return Err(bad(&format!("it is longer than {MAX_NAME_LEN} bytes")));
        }
        if input.chars().any(char::is_control) {
            return Err(bad("it contains a control character"));
        }
        if input.chars().any(char::is_whitespace) {
            return Err(bad("it contains whitespace"));
        }
        if looks_absolute(input) {
            return Err(bad(
                "it is an absolute path, not a model name (and no such file exists)",
            ));
        }
        if input.contains("..") {
            return Err(bad("it contains `..`"));
        }
        if input.contains('\\') {
            return Err(bad("it contains a backslash"));
        }
        if input.matches(':').count() > 1 {
            return Err(bad("it has more than one `:`"));
        }
        let (path, tag) = match input.split_once(':') {
            Some((p, t)) => {
                if t.contains('/') {
                    return Err(bad("`/` may not appear after the `:` that starts the tag"));
                }
                if t.is_empty() {
                    return Err(bad("the tag after `:` is empty"));
                }
                (p, Some(t))
            }
            None => (input, None),
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad(
                "it has an empty path component (`//`, or `/` at the start or end)",
            ));
        }
        let first = parts[0].to_ascii_lowercase();
        let is_hf = first == HF_HOST || first == "huggingface.co";
        match (is_hf, parts.len()) {
            (false, 1) => {
                let repo = parts[0].to_ascii_lowercase();
                check_component(&repo, false).map_err(|r| bad(&format!("the name {r}")))?;
                let tag = match tag {
                    Some(t) => t.to_ascii_lowercase(),
                    None => crate::catalog::default_tag(&repo)
                        .unwrap_or(DEFAULT_TAG)
                        .to_owned(),
                };
                check_component(&tag, false).map_err(|r| bad(&format!("the tag {r}")))?;
                Ok(ModelName { repo, tag })
            }
            (false, _) => Err(bad(
                "`/` is only allowed in hf.co/ORG/REPO[:QUANT] and hf.co/ORG/REPO/FILE.gguf",
            )),
            (true, 3) | (true, 4) => {
                for (what, part) in [("organisation", parts[1]), ("repository", parts[2])] {
                    check_component(part, true).map_err(|r| bad(&format!("the {what} {r}")))?;
                }
                let repo = format!("{HF_HOST}/{}/{}", parts[1], parts[2]);
                let tag = if parts.len() == 4 {
                    if tag.is_some() {
                        return Err(bad("hf.co/ORG/REPO/FILE.gguf takes no `:` tag"));
                    }
                    let file = parts[3];
                    check_component(file, true).map_err(|r| bad(&format!("the file name {r}")))?;
                    if !is_gguf_file_name(file) {
                        return Err(bad("the file in hf.co/ORG/REPO/FILE must end in .gguf"));
                    }
                    file.to_owned()
                } else {
                    let t = tag.unwrap_or(DEFAULT_HF_QUANT);
                    check_component(t, true).map_err(|r| bad(&format!("the quantization {r}")))?;
                    t.to_owned()
                };
                Ok(ModelName { repo, tag })
            }
            (true, _) => Err(bad(
                "a Hugging Face name is hf.co/ORG/REPO[:QUANT] or hf.co/ORG/REPO/FILE.gguf",
            )),
        }
    }

    /// Builds a name from a compiled-in constant (the catalog); checked by the catalog's tests.
    pub(crate) fn from_static(repo: &str, tag: &str) -> ModelName {
        ModelName {
            repo: repo.to_owned(),
            tag: tag.to_owned(),
        }
    }

    /// The repository part: `smollm2` or `hf.co/ORG/REPO`.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The tag: `135m`, a quantization such as `Q4_K_M`, or a `FILE.gguf` of a Hugging Face repo.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// True for `hf.co/…` names.
    pub fn is_hf(&self) -> bool {
        self.repo.starts_with("hf.co/")
    }

    /// `(ORG, REPO)` of a Hugging Face name.
    pub fn hf_repo(&self) -> Option<(&str, &str)> {
        let rest = self.repo.strip_prefix("hf.co/")?;
        rest.split_once('/')
    }

    /// The Hugging Face file named by `hf.co/ORG/REPO/FILE.gguf`, if this is such a name.
    pub fn hf_file(&self) -> Option<&str> {
        (self.is_hf() && is_gguf_file_name(&self.tag)).then_some(self.tag.as_str())
    }

    /// Where this name's manifest lives, relative to the store's `manifests/` directory:
    /// `<repo components…>/<tag>.json`. Only ever built from a validated name.
    pub fn manifest_rel_path(&self) -> PathBuf {
        let mut p = PathBuf::new();
        for part in self.repo.split('/') {
            p.push(part);
        }
        p.push(format!("{}.json", self.tag));
        p
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hf_file().is_some() {
            write!(f, "{}/{}", self.repo, self.tag)
        } else {
            write!(f, "{}:{}", self.repo, self.tag)
        }
    }
}

impl std::str::FromStr for ModelName {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelName::parse(s)
    }
}

impl TryFrom<String> for ModelName {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ModelName::parse(&s)
    }
}

impl From<ModelName> for String {
    fn from(n: ModelName) -> String {
        n.to_string()
    }
}

impl Serialize for ModelName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ModelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ModelName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `/x`, `\x`, `~/x`, `C:\x`, `C:/x`: the shapes of absolute paths on the platforms we know.
fn looks_absolute(s: &str) -> bool {
    let b = s.as_bytes();
    s.starts_with('/')
        || s.starts_with('\\')
        || s.starts_with('~')
        || (b.len() >= 3
            && b[0].is_ascii_alphabetic()
            && b[1] == b':'
            && matches!(b[2], b'/' | b'\\'))
}

fn is_gguf_file_name(s: &str) -> bool {
    s.len() > 5 && s.to_ascii_lowercase().ends_with(".gguf")
}

/// One path component: `[A-Za-z0-9_][A-Za-z0-9._-]*`, at most [`MAX_COMPONENT_LEN`] bytes;
/// upper case only when `mixed_case`. Returns the reason it was refused.
fn check_component(s: &str, mixed_case: bool) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > MAX_COMPONENT_LEN {
        return Err(format!("is longer than {MAX_COMPONENT_LEN} bytes"));
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return Err(format!("{s:?} must start with a letter, digit or `_`"));
    }
    for c in s.chars() {
        let ok = c.is_ascii_digit()
            || c.is_ascii_lowercase()
            || (mixed_case && c.is_ascii_uppercase())
            || matches!(c, '.' | '_' | '-');
        if !ok {
            return Err(format!(
                "{s:?} may only hold letters, digits, `.`, `_` and `-` (found {c:?})"
            ));
        }
    }
    Ok(())
}

/// A validated blob digest: `sha256:` followed by 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest, StoreError> {
        let bad = || StoreError::InvalidDigest {
            digest: s.chars().take(100).collect(),
        };
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        Ok(Digest {
            hex: hex.to_owned(),
        })
    }

    /// A digest from 32 raw bytes (a finished hasher).
    pub fn from_bytes(bytes: &[u8; 32]) -> Digest {
        use std::fmt::Write as _;
        let mut hex = String::with_capacity(64);
        for b in bytes {
            let _ = write!(hex, "{b:02x}");
        }
        Digest { hex }
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The blob's file name in the store: `sha256-<hex>`.
    pub fn file_name(&self) -> String {
        format!("sha256-{}", self.hex)
    }

    /// Parses a blob file name (`sha256-<hex>`) back into a digest.
    pub fn from_file_name(name: &str) -> Option<Digest> {
        let hex = name.strip_prefix("sha256-")?;
        Digest::parse(&format!("sha256:{hex}")).ok()
    }

    /// The first 12 hex digits, as `list` shows them.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl std::str::FromStr for Digest {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        match ModelName::parse(s) {
            Ok(n) => n.to_string(),
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn rejected(s: &str, why: &str) {
        match ModelName::parse(s) {
            Ok(n) => panic!("{s:?} should be rejected, parsed as {n}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(why), "{s:?}: expected {why:?} in {msg:?}");
            }
        }
    }

    #[test]
    fn catalog_names_and_defaults() {
        assert_eq!(ok("smollm2"), "smollm2:135m");
        assert_eq!(ok("smollm2:135m"), "smollm2:135m");
        assert_eq!(ok("SmolLM2:135M"), "smollm2:135m");
        assert_eq!(ok("gemma3:270m"), "gemma3:270m");
        assert_eq!(ok("gemma3"), "gemma3:270m");
        assert_eq!(ok("mine"), "mine:latest");
        assert_eq!(ok("my-model_v1.2:q4_k_m"), "my-model_v1.2:q4_k_m");
    }

    #[test]
    fn hf_names() {
        let n = ModelName::parse("hf.co/bartowski/SmolLM2-135M-Instruct-GGUF").unwrap();
        assert_eq!(
            n.to_string(),
            "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M"
        );
        assert_eq!(
            n.hf_repo(),
            Some(("bartowski", "SmolLM2-135M-Instruct-GGUF"))
        );
        assert_eq!(n.hf_file(), None);
        assert_eq!(ok("huggingface.co/org/repo:Q8_0"), "hf.co/org/repo:Q8_0");
        let f = ModelName::parse("hf.co/org/repo/Model-Q4_K_M.gguf").unwrap();
        assert_eq!(f.hf_file(), Some("Model-Q4_K_M.gguf"));
        assert_eq!(f.to_string(), "hf.co/org/repo/Model-Q4_K_M.gguf");
        assert_eq!(
            f.manifest_rel_path(),
            PathBuf::from("hf.co/org/repo/Model-Q4_K_M.gguf.json")
        );
        // Canonical forms parse back to themselves.
        for s in [
            "hf.co/org/repo:Q8_0",
            "hf.co/org/repo/x.gguf",
            "smollm2:135m",
        ] {
            assert_eq!(ok(&ok(s)), ok(s));
        }
    }

    #[test]
    fn rejects_dot_dot() {
        rejected("..", "`..`");
        rejected("../x", "`..`");
        rejected("a..b", "`..`");
        rejected("smollm2:..", "`..`");
        rejected("hf.co/org/../x", "`..`");
        rejected("hf.co/org/repo/..%2f.gguf", "`..`");
    }

    #[test]
    fn rejects_absolute_paths() {
        rejected("/etc/passwd", "absolute");
        rejected("/nonexistent/model.gguf", "absolute");
        rejected("\\\\server\\share", "absolute");
        rejected("C:\\models\\x.gguf", "absolute");
        rejected("c:/models/x.gguf", "absolute");
        rejected("~/model.gguf", "absolute");
    }

    #[test]
    fn rejects_control_characters() {
        rejected("smol\0lm2", "control");
        rejected("smollm2\n", "control");
        rejected("smol\x1b[31mlm", "control");
        rejected("smol\x7flm", "control");
        rejected("smol\u{85}lm", "control");
        rejected("smol lm", "whitespace");
        rejected("", "empty");
    }

    #[test]
    fn rejects_long_names() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        rejected(&long, "longer than 256 bytes");
        // Exactly 256 bytes passes the total check but each component is capped as well.
        let comp = "a".repeat(MAX_COMPONENT_LEN + 1);
        rejected(&comp, "longer than 128 bytes");
        let org = "o".repeat(100);
        let repo = "r".repeat(100);
        let name = format!("hf.co/{org}/{repo}:{}", "q".repeat(48));
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert_eq!(ok(&name), name);
    }

    #[test]
    fn rejects_wrong_slashes_and_colons() {
        rejected("org/repo", "`/` is only allowed");
        rejected("a/b/c/d", "`/` is only allowed");
        rejected("smollm2/", "empty path component");
        rejected("hf.co//repo", "empty path component");
        rejected("hf.co/org", "hf.co/ORG/REPO");
        rejected("hf.co/org/repo/sub/file.gguf", "hf.co/ORG/REPO");
        rejected("hf.co/org/repo/file.bin", "must end in .gguf");
        rejected("hf.co/org/repo/file.gguf:Q4_0", "takes no `:` tag");
        rejected("smollm2:135m/x", "`/` may not appear after");
        rejected("a:b:c", "more than one `:`");
        rejected("smollm2:", "tag after `:` is empty");
        rejected("smol\\lm2", "backslash");
        rejected(".hidden", "must start with");
        rejected("-rf", "must start with");
        rejected("smollm2:-x", "must start with");
        rejected("smöllm2", "may only hold");
        rejected("hf.co/org/re%po", "may only hold");
    }

    #[test]
    fn digests() {
        let hex = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(d.hex(), hex);
        assert_eq!(d.file_name(), format!("sha256-{hex}"));
        assert_eq!(Digest::from_file_name(&d.file_name()), Some(d.clone()));
        assert_eq!(d.short(), "b179c9523d0e");
        for bad in [
            hex.to_owned(),                           // no algorithm
            format!("sha256:{}", &hex[..63]),         // short
            format!("sha256:{hex}0"),                 // long
            format!("sha256:{}", hex.to_uppercase()), // upper case
            format!("sha512:{hex}"),                  // other algorithm
            format!("sha256:{}g", &hex[..63]),        // not hex
            format!("sha256:../../{}", &hex[..58]),   // path
            format!("SHA256:{hex}"),                  // prefix case
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(Digest::from_file_name("sha256-abc"), None);
        assert_eq!(
            Digest::from_file_name(&format!("sha256-{hex}.partial")),
            None
        );
    }
}
