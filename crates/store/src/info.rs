//! What `list` and `show` say about a model, read from its GGUF metadata.

use crate::StoreError;
use gguf::GgufFile;
use serde::Serialize;
use std::path::Path;

/// A summary of a GGUF file's metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ModelInfo {
    pub architecture: Option<String>,
    /// `general.name`.
    pub model_name: Option<String>,
    /// `general.size_label` (`135M`), as the publisher wrote it.
    pub size_label: Option<String>,
    /// The number of weights: the elements of all tensors.
    pub parameters: u64,
    /// From `general.file_type` (`Q4_K_M`), else the most common tensor type.
    pub quantization: Option<String>,
    pub context_length: Option<u64>,
    pub embedding_length: Option<u64>,
    pub block_count: Option<u64>,
    /// `general.license`.
    pub license: Option<String>,
    /// `tokenizer.ggml.model` (`gpt2`, `llama`, …).
    pub tokenizer: Option<String>,
    pub chat_template: Option<String>,
    pub gguf_version: u32,
    pub tensor_count: usize,
    pub file_size: u64,
}

/// What a model was trained for, which decides whether it can chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Instruction-tuned: answers messages through its chat template.
    Instruct,
    /// Pretrained only: continues text. Its file has no chat template, so hearth does not
    /// chat with it (raw completion works).
    Base,
}

impl ModelKind {
    /// `instruct` or `base`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Instruct => "instruct",
            ModelKind::Base => "base",
        }
    }

    /// The kind of a file: the catalog's word for its bytes when it has one (by sha256, so a
    /// copy or a preset of a catalog model counts), else base exactly when the file has no
    /// chat template (what the engine's chat goes by).
    pub fn of(info: &ModelInfo, digest: Option<&crate::Digest>) -> ModelKind {
        digest
            .and_then(crate::catalog::by_digest)
            .and_then(|e| e.kind)
            .unwrap_or_else(|| info.kind())
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ModelInfo {
    /// The kind the file's metadata says: base when it has no chat template (an empty one
    /// counts as none). [`ModelKind::of`] also asks the catalog.
    pub fn kind(&self) -> ModelKind {
        match self.chat_template.as_deref() {
            Some(t) if !t.trim().is_empty() => ModelKind::Instruct,
            _ => ModelKind::Base,
        }
    }

    /// Reads the metadata of the GGUF file at `path`.
    pub fn read(path: &Path) -> Result<ModelInfo, StoreError> {
        // The reason goes into the message once (an `Io` source would print it again).
        let file = GgufFile::open(path).map_err(|e| StoreError::Refused {
            what: format!("cannot read GGUF metadata of {}", path.display()),
            reason: e.to_string(),
        })?;
        Ok(ModelInfo::of(&file))
    }

    /// The summary of an opened GGUF file.
    pub fn of(file: &GgufFile) -> ModelInfo {
        let s = |k: &str| file.get_str(k).ok().flatten().map(str::to_owned);
        let architecture = s("general.architecture");
        let arch_u64 = |suffix: &str| {
            architecture
                .as_deref()
                .and_then(|a| file.get_u64(&format!("{a}.{suffix}")).ok().flatten())
        };
        let parameters = file
            .tensors()
            .iter()
            .map(|t| t.n_elements())
            .fold(0u64, u64::saturating_add);
        let quantization = file
            .get_u64("general.file_type")
            .ok()
            .flatten()
            .and_then(file_type_name)
            .map(str::to_owned)
            .or_else(|| dominant_tensor_type(file));
        ModelInfo {
            model_name: s("general.name"),
            size_label: s("general.size_label"),
            parameters,
            quantization,
            context_length: arch_u64("context_length"),
            embedding_length: arch_u64("embedding_length"),
            block_count: arch_u64("block_count"),
            license: s("general.license"),
            tokenizer: s("tokenizer.ggml.model"),
            chat_template: s("tokenizer.chat_template"),
            gguf_version: file.version(),
            tensor_count: file.tensors().len(),
            file_size: file.file_size(),
            architecture,
        }
    }

    /// Parameters as people write them: `135M`, `1.5B`.
    pub fn parameters_human(&self) -> String {
        human_count(self.parameters)
    }
}

/// `134515008` → `134.5M`.
pub fn human_count(n: u64) -> String {
    let f = n as f64;
    if n >= 1_000_000_000 {
        format!("{:.1}B", f / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.1}M", f / 1e6)
    } else if n >= 1_000 {
        format!("{:.1}K", f / 1e3)
    } else {
        n.to_string()
    }
}

/// The names llama.cpp gives its `general.file_type` values (the `LLAMA_FTYPE_MOSTLY_*` set).
fn file_type_name(v: u64) -> Option<&'static str> {
    Some(match v {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        _ => return None,
    })
}

/// The tensor type holding the most weights, for files without `general.file_type`.
fn dominant_tensor_type(file: &GgufFile) -> Option<String> {
    let mut by_type: Vec<(&'static str, u64)> = Vec::new();
    for t in file.tensors() {
        let name = t.ty.name();
        match by_type.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += t.n_elements(),
            None => by_type.push((name, t.n_elements())),
        }
    }
    by_type
        .into_iter()
        .max_by_key(|&(_, c)| c)
        .map(|(n, _)| n.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf::{GgmlType, GgufWriter};

    #[test]
    fn reads_synthetic_metadata() {
        let mut w = GgufWriter::new();
        w.add("general.architecture", "llama");
        w.add("general.name", "Tiny");
        w.add("general.license", "mit");
        w.add("general.file_type", 15u32);
        w.add("llama.context_length", 2048u32);
        w.add("tokenizer.chat_template", "{{ x }}");
        w.add_tensor("a", &[4, 2], GgmlType::F32, vec![0; 32])
            .unwrap();
        w.add_tensor("b", &[8], GgmlType::F32, vec![0; 32]).unwrap();
        let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
        let info = ModelInfo::of(&f);
        assert_eq!(info.architecture.as_deref(), Some("llama"));
        assert_eq!(info.quantization.as_deref(), Some("Q4_K_M"));
        assert_eq!(info.context_length, Some(2048));
        assert_eq!(info.parameters, 16);
        assert_eq!(info.chat_template.as_deref(), Some("{{ x }}"));
        assert_eq!(info.license.as_deref(), Some("mit"));
        assert_eq!(info.tensor_count, 2);
    }

    #[test]
    fn kind_follows_the_chat_template() {
        let info = |template: Option<&str>| ModelInfo {
            chat_template: template.map(str::to_owned),
            ..ModelInfo::default()
        };
        assert_eq!(info(Some("{{ x }}")).kind(), ModelKind::Instruct);
        assert_eq!(info(None).kind(), ModelKind::Base);
        assert_eq!(info(Some(" \n")).kind(), ModelKind::Base);
        // The catalog's word wins for its own bytes; other files go by their template.
        let gemma =
            crate::catalog::lookup(&crate::ModelName::parse("gemma3:270m").unwrap()).unwrap();
        assert_eq!(
            ModelKind::of(&info(Some("{{ x }}")), Some(&gemma.digest)),
            ModelKind::Base
        );
        let other = crate::Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        assert_eq!(ModelKind::of(&info(None), Some(&other)), ModelKind::Base);
        assert_eq!(
            ModelKind::of(&info(Some("{{ x }}")), Some(&other)),
            ModelKind::Instruct
        );
        assert_eq!(ModelKind::of(&info(Some("t")), None), ModelKind::Instruct);
        assert_eq!(serde_json::to_string(&ModelKind::Base).unwrap(), "\"base\"");
    }

    #[test]
    fn counts() {
        assert_eq!(human_count(134_515_008), "134.5M");
        assert_eq!(human_count(268_098_176), "268.1M");
        assert_eq!(human_count(1_500_000_000), "1.5B");
        assert_eq!(human_count(999), "999");
    }
}
