//! The hub's side of `hf.co/ORG/REPO[:QUANT]` and `hf.co/ORG/REPO/FILE.gguf`: the repository's
//! file list (`<HF_ENDPOINT>/api/models/ORG/REPO?blobs=true`), checked in full before anything
//! is written, and the choice of one GGUF file by quantization or by name.
//!
//! The list comes from a server, so every path in it is checked as if typed by a stranger: a
//! list naming `../x`, an absolute path, a backslash or a control character is refused whole.

use crate::name::{Digest, ModelName};
use crate::{http, Progress, PullOptions, StoreError};
use serde::Deserialize;
use std::time::Duration;

/// Most files a listing may name.
pub const MAX_FILES: usize = 20_000;
/// `-00001-of-00002.gguf`.
const SPLIT_SUFFIX_LEN: usize = 20;
/// Longest file path accepted from a listing, in bytes.
pub const MAX_PATH_BYTES: usize = 512;

/// One file of a hub repository, its path checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubFile {
    /// Relative to the repository root, `/`-separated.
    pub path: String,
    /// From `lfs.size`, else `size`, when the hub gives one.
    pub size: Option<u64>,
    /// From `lfs.sha256`, when the hub gives one.
    pub sha256: Option<Digest>,
}

impl HubFile {
    fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    fn is_gguf(&self) -> bool {
        self.path.to_ascii_lowercase().ends_with(".gguf")
    }

    /// Vision projectors (`mmproj-…gguf`) sit beside the language model; never a choice.
    fn is_projector(&self) -> bool {
        self.file_name().to_ascii_lowercase().contains("mmproj")
    }

    /// `(part, parts)` for a file of a split set: `…-00001-of-00003.gguf`.
    fn split_part(&self) -> Option<(u32, u32)> {
        let stem = self
            .file_name()
            .get(..self.file_name().len().checked_sub(5)?)?;
        let (rest, of) = stem.rsplit_once("-of-")?;
        let (_, part) = rest.rsplit_once('-')?;
        let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
        if !(digits(part) && digits(of)) {
            return None;
        }
        Some((part.parse().ok()?, of.parse().ok()?))
    }
}

#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    siblings: Option<Vec<Sibling>>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

/// Why a path from a listing cannot be used, if it cannot.
pub fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("an empty file name".into());
    }
    if p.len() > MAX_PATH_BYTES {
        return Err(format!("a file name longer than {MAX_PATH_BYTES} bytes"));
    }
    if p.chars().any(char::is_control) {
        return Err(format!("{p:?}, with a control character"));
    }
    if p.contains('\\') {
        return Err(format!("{p:?}, with a backslash"));
    }
    let b = p.as_bytes();
    let drive = b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':';
    if p.starts_with('/') || p.starts_with('~') || drive {
        return Err(format!("{p:?}, an absolute path"));
    }
    for part in p.split('/') {
        match part {
            "" => return Err(format!("{p:?}, with an empty path component")),
            "." | ".." => return Err(format!("{p:?}, with a `{part}` component")),
            _ => {}
        }
    }
    Ok(())
}

/// Parses and checks a listing (`repo` is `ORG/REPO`, for messages).
pub fn parse_listing(repo: &str, bytes: &[u8]) -> Result<Vec<HubFile>, StoreError> {
    let bad = |reason: String| StoreError::BadListing {
        repo: repo.to_owned(),
        reason,
    };
    let listing: Listing = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("it is not the JSON the hub's API answers: {e}")))?;
    let siblings = listing
        .siblings
        .ok_or_else(|| bad("it has no `siblings` list".into()))?;
    if siblings.len() > MAX_FILES {
        return Err(bad(format!("it names more than {MAX_FILES} files")));
    }
    siblings
        .into_iter()
        .map(|s| {
            check_path(&s.rfilename).map_err(|why| bad(format!("it names {why}")))?;
            let sha256 = match &s.lfs {
                Some(lfs) => Some(Digest::parse(&format!("sha256:{}", lfs.sha256)).map_err(
                    |_| {
                        bad(format!(
                            "the sha256 it gives for {:?} is not 64 lowercase hex digits",
                            s.rfilename
                        ))
                    },
                )?),
                None => None,
            };
            Ok(HubFile {
                size: s.lfs.as_ref().map(|l| l.size).or(s.size),
                sha256,
                path: s.rfilename,
            })
        })
        .collect()
}

/// Fetches and checks the file list of `ORG/REPO`, retrying transient failures.
pub fn fetch_listing(
    agent: &ureq::Agent,
    opts: &PullOptions,
    org: &str,
    repo: &str,
    progress: &dyn Progress,
) -> Result<Vec<HubFile>, StoreError> {
    let url = format!(
        "{}/api/models/{org}/{repo}?blobs=true",
        opts.hf_endpoint.trim_end_matches('/')
    );
    let what = format!("the file list of {org}/{repo}");
    let mut failures = 0;
    loop {
        match http::get_small(agent, &url, opts.hf_token.as_deref(), &what) {
            Ok(bytes) => return parse_listing(&format!("{org}/{repo}"), &bytes),
            Err(
                e @ StoreError::Http {
                    retryable: true, ..
                },
            ) if failures < opts.retries => {
                failures += 1;
                progress.note(&format!("{e}; retrying ({failures}/{})", opts.retries));
                std::thread::sleep(Duration::from_millis(200 << failures.min(5)));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The quantization a GGUF file name shows (`Model-Q4_K_M.gguf` → `Q4_K_M`), upper-cased.
pub fn quant_label(file_name: &str) -> Option<String> {
    let stem = file_name.get(..file_name.len().checked_sub(5)?)?;
    stem.split(['-', '.'])
        .rev()
        .map(str::to_ascii_uppercase)
        .find(|t| {
            let b = t.as_bytes();
            let after = |n: usize| b.get(n).is_some_and(u8::is_ascii_digit);
            matches!(t.as_str(), "F16" | "F32" | "BF16" | "F64")
                || (b.first() == Some(&b'Q') && after(1))
                || ((t.starts_with("IQ") || t.starts_with("TQ")) && after(2))
        })
}

/// True when `quant` occurs in `name` (both lower-cased) with no letter, digit or `_` on
/// either side: `q4_k` is in `m-q4_k.gguf`, not in `m-q4_k_m.gguf` nor `m-iq4_k.gguf`.
fn bounded_match(name: &str, quant: &str) -> bool {
    let inner = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    name.match_indices(quant).any(|(i, m)| {
        !inner(name[..i].chars().next_back()) && !inner(name[i + m.len()..].chars().next())
    })
}

/// The file a name stands for: `hf.co/ORG/REPO/FILE.gguf` that file, `hf.co/ORG/REPO:QUANT`
/// the one GGUF file whose name holds QUANT (case-insensitive; a match on its own, not inside
/// a longer quantization, is preferred). Split sets (`-00001-of-0000N.gguf`) and vision
/// projectors are never chosen. None or several: an error listing what there is.
pub fn choose(name: &ModelName, files: &[HubFile]) -> Result<HubFile, StoreError> {
    let (org, repo) = name.hf_repo().unwrap_or_default();
    let err = |reason: String| StoreError::NoHubFile {
        name: name.to_string(),
        reason,
    };
    let ggufs: Vec<&HubFile> = files
        .iter()
        .filter(|f| f.is_gguf() && !f.is_projector())
        .collect();
    let available = || available_quants(&ggufs);
    if let Some(wanted) = name.hf_file() {
        return files
            .iter()
            .find(|f| f.path == wanted)
            .cloned()
            .ok_or_else(|| {
                err(format!(
                    "{org}/{repo} has no file {wanted}; {}",
                    available()
                ))
            });
    }
    let quant = name.tag().to_ascii_lowercase();
    let (singles, splits): (Vec<&HubFile>, Vec<&HubFile>) =
        ggufs.iter().partition(|f| f.split_part().is_none());
    let lower = |f: &HubFile| f.file_name().to_ascii_lowercase();
    let bounded: Vec<&HubFile> = singles
        .iter()
        .copied()
        .filter(|f| bounded_match(&lower(f), &quant))
        .collect();
    let matches = if bounded.is_empty() {
        singles
            .iter()
            .copied()
            .filter(|f| lower(f).contains(&quant))
            .collect()
    } else {
        bounded
    };
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let split: Vec<&&HubFile> = splits
                .iter()
                .filter(|f| lower(f).contains(&quant) && f.split_part().is_some_and(|p| p.0 == 1))
                .collect();
            if let Some(first) = split.first() {
                let parts = first.split_part().map_or(0, |p| p.1);
                return Err(err(format!(
                    "{org}/{repo} has {} only as a split GGUF ({parts} parts, {}), which \
                     hearth cannot load; {}",
                    name.tag(),
                    first.path,
                    available()
                )));
            }
            Err(err(format!(
                "{org}/{repo} has no GGUF file for the quantization {}; {}",
                name.tag(),
                available()
            )))
        }
        several => {
            let names: Vec<&str> = several.iter().map(|f| f.path.as_str()).collect();
            Err(err(format!(
                "the quantization {} matches several files of {org}/{repo}: {}; name one \
                 with hf.co/{org}/{repo}/FILE.gguf or a longer quantization",
                name.tag(),
                names.join(", ")
            )))
        }
    }
}

/// `available quantizations: Q4_K_M, Q8_0 (split, not loadable)`, or that there are none.
fn available_quants(ggufs: &[&HubFile]) -> String {
    let mut labels: Vec<String> = Vec::new();
    for f in ggufs {
        let label = match f.split_part() {
            Some((1, _)) => {
                // `M-Q6_K-00001-of-00002.gguf` → `M-Q6_K.gguf`.
                let n = f.file_name();
                let head = n
                    .get(..n.len().saturating_sub(SPLIT_SUFFIX_LEN))
                    .unwrap_or(n);
                quant_label(&format!("{head}.gguf")).map(|q| format!("{q} (split, not loadable)"))
            }
            Some(_) => continue,
            None => quant_label(f.file_name()).or_else(|| Some(f.path.clone())),
        };
        if let Some(l) = label.filter(|l| !labels.contains(l)) {
            labels.push(l);
        }
    }
    if labels.is_empty() {
        return "it has no GGUF files".to_owned();
    }
    labels.sort();
    format!("available quantizations: {}", labels.join(", "))
}

/// A checked listing path as a URL path: each component percent-encoded.
pub fn url_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<HubFile> {
        names
            .iter()
            .map(|n| HubFile {
                path: (*n).to_owned(),
                size: None,
                sha256: None,
            })
            .collect()
    }

    fn pick(name: &str, names: &[&str]) -> Result<String, String> {
        let n = ModelName::parse(name).unwrap();
        choose(&n, &files(names))
            .map(|f| f.path)
            .map_err(|e| e.to_string())
    }

    const REPO: &[&str] = &[
        ".gitattributes",
        "README.md",
        "Model-IQ4_XS.gguf",
        "Model-Q4_K_M.gguf",
        "Model-Q4_K_S.gguf",
        "Model-Q8_0.gguf",
        "Model.f16.gguf",
        "mmproj-Model-f16.gguf",
        "Q6_K/Model-Q6_K-00001-of-00002.gguf",
        "Q6_K/Model-Q6_K-00002-of-00002.gguf",
    ];

    #[test]
    fn picks_by_quantization() {
        assert_eq!(pick("hf.co/o/r", REPO).unwrap(), "Model-Q4_K_M.gguf");
        assert_eq!(pick("hf.co/o/r:q8_0", REPO).unwrap(), "Model-Q8_0.gguf");
        assert_eq!(pick("hf.co/o/r:F16", REPO).unwrap(), "Model.f16.gguf");
        // Q4_XS is inside IQ4_XS only: the loose match takes it, as there is nothing better.
        assert_eq!(pick("hf.co/o/r:Q4_XS", REPO).unwrap(), "Model-IQ4_XS.gguf");
        assert_eq!(pick("hf.co/o/r:IQ4_XS", REPO).unwrap(), "Model-IQ4_XS.gguf");
        assert_eq!(
            pick("hf.co/o/r/Model-Q8_0.gguf", REPO).unwrap(),
            "Model-Q8_0.gguf"
        );
    }

    #[test]
    fn explains_missing_and_ambiguous_quantizations() {
        let e = pick("hf.co/o/r:Q2_K", REPO).unwrap_err();
        assert!(
            e.contains("o/r has no GGUF file for the quantization Q2_K; available quantizations: F16, IQ4_XS, Q4_K_M, Q4_K_S, Q6_K (split, not loadable), Q8_0"),
            "{e}"
        );
        let e = pick("hf.co/o/r:Q4_K", REPO).unwrap_err();
        assert!(
            e.contains("matches several files of o/r: Model-Q4_K_M.gguf, Model-Q4_K_S.gguf"),
            "{e}"
        );
        let e = pick("hf.co/o/r:Q6_K", REPO).unwrap_err();
        assert!(
            e.contains("Q6_K only as a split GGUF (2 parts, Q6_K/Model-Q6_K-00001-of-00002.gguf)"),
            "{e}"
        );
        let e = pick("hf.co/o/r/Nope.gguf", REPO).unwrap_err();
        assert!(e.contains("o/r has no file Nope.gguf; available"), "{e}");
        let e = pick("hf.co/o/r", &[".gitattributes"]).unwrap_err();
        assert!(e.contains("it has no GGUF files"), "{e}");
        // Two files with the same quantization in different folders.
        let e = pick("hf.co/o/r:Q8_0", &["a/m-Q8_0.gguf", "b/m-Q8_0.gguf"]).unwrap_err();
        assert!(e.contains("several"), "{e}");
    }

    #[test]
    fn listings_with_dangerous_paths_are_refused_whole() {
        let ok =
            br#"{"siblings": [{"rfilename": "a.gguf"}, {"rfilename": "sub/b.gguf", "size": 5}]}"#;
        let fs = parse_listing("o/r", ok).unwrap();
        assert_eq!(fs[1].path, "sub/b.gguf");
        assert_eq!(fs[1].size, Some(5));
        for (bad, why) in [
            ("../x.gguf", "`..` component"),
            ("a/../../x.gguf", "`..` component"),
            ("./x.gguf", "`.` component"),
            ("/etc/passwd", "absolute path"),
            ("C:/x.gguf", "absolute path"),
            ("~/x.gguf", "absolute path"),
            ("a\\\\b.gguf", "backslash"),
            ("a\\u0000.gguf", "control character"),
            ("a\\n.gguf", "control character"),
            ("a\\u001b[2J.gguf", "control character"),
            ("a//b.gguf", "empty path component"),
            ("x/", "empty path component"),
            ("", "empty file name"),
        ] {
            let json = format!(
                r#"{{"siblings": [{{"rfilename": "ok.gguf"}}, {{"rfilename": "{bad}"}}]}}"#
            );
            let e = parse_listing("o/r", json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("refused, and nothing was downloaded") && e.contains(why),
                "{bad}: {e}"
            );
        }
        let long = format!(
            r#"{{"siblings": [{{"rfilename": "{}"}}]}}"#,
            "a".repeat(600)
        );
        assert!(parse_listing("o/r", long.as_bytes()).is_err());
        for (json, why) in [
            (r#"{"id": "o/r"}"#, "no `siblings`"),
            ("\"x\"", "not the JSON"),
            (
                r#"{"siblings": [{"rfilename": "a.gguf", "lfs": {"sha256": "../../x", "size": 1}}]}"#,
                "not 64 lowercase hex",
            ),
        ] {
            let e = parse_listing("o/r", json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{json}: {e}");
        }
    }

    #[test]
    fn labels_and_urls() {
        assert_eq!(quant_label("Model-Q4_K_M.gguf").as_deref(), Some("Q4_K_M"));
        assert_eq!(quant_label("model.q8_0.gguf").as_deref(), Some("Q8_0"));
        assert_eq!(quant_label("x-UD-IQ2_XXS.gguf").as_deref(), Some("IQ2_XXS"));
        assert_eq!(
            quant_label("Llama-3.2-1B-bf16.gguf").as_deref(),
            Some("BF16")
        );
        assert_eq!(quant_label("weights.gguf"), None);
        assert_eq!(url_path("sub dir/a+b.gguf"), "sub%20dir/a%2Bb.gguf");
        assert_eq!(url_path("ä.gguf"), "%C3%A4.gguf");
    }
}
