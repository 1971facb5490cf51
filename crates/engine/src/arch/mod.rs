//! Model architectures, keyed by `general.architecture`. Adding one is a file here plus a line
//! in `ARCHITECTURES`.

mod bert;
mod decoder;
mod gemma2;
mod gemma3;
mod gpt2;
mod gpt_oss;
mod granite;
mod llama;
mod mistral3;
mod nomic_bert;
mod olmo2;
mod phi3;
mod qwen2;
mod qwen3;
mod smollm3;
mod starcoder2;

use crate::blocks::{LogitRows, Runtime};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::weights::TensorLoader;

/// A loaded architecture: its weights (as handles into the file) and its forward pass.
pub trait Architecture: Send + Sync {
    /// Runs `tokens` (the sequences of `rt.seqs`, one after another; their keys and values
    /// are added to each sequence's cache) and appends the rows asked for to `logits`.
    fn forward(
        &self,
        rt: &mut Runtime,
        tokens: &[u32],
        rows: LogitRows,
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError>;

    /// Vocabulary size of the output head (of the token embedding, for an encoder).
    fn n_vocab(&self) -> usize;

    /// Whether this is an encoder (BERT): every token attends to its whole sequence, so a
    /// sequence must be evaluated in one forward pass, and there is no output head, so the
    /// forward pass gives only hidden states (`LogitRows::Hidden`), for embeddings.
    fn is_encoder(&self) -> bool {
        false
    }
}

/// Resolves an architecture's tensors in a file through a loader (see [`TensorLoader`] for
/// why it may run twice).
pub type LoadFn = fn(&TensorLoader, &ModelConfig) -> Result<Box<dyn Architecture>, EngineError>;

pub struct ArchEntry {
    pub name: &'static str,
    pub load: LoadFn,
}

pub static ARCHITECTURES: &[ArchEntry] = &[
    ArchEntry {
        name: "llama",
        load: llama::load,
    },
    ArchEntry {
        name: "gemma3",
        load: gemma3::load,
    },
    ArchEntry {
        name: "qwen2",
        load: qwen2::load,
    },
    ArchEntry {
        name: "qwen3",
        load: qwen3::load,
    },
    ArchEntry {
        name: "qwen3moe",
        load: qwen3::load,
    },
    ArchEntry {
        name: "phi3",
        load: phi3::load,
    },
    ArchEntry {
        name: "mistral3",
        load: mistral3::load,
    },
    ArchEntry {
        name: "granite",
        load: granite::load,
    },
    ArchEntry {
        name: "smollm3",
        load: smollm3::load,
    },
    ArchEntry {
        name: "starcoder2",
        load: starcoder2::load,
    },
    ArchEntry {
        name: "gemma2",
        load: gemma2::load,
    },
    ArchEntry {
        name: "olmo2",
        load: olmo2::load,
    },
    ArchEntry {
        name: "gpt2",
        load: gpt2::load,
    },
    ArchEntry {
        name: "gpt-oss",
        load: gpt_oss::load,
    },
    ArchEntry {
        name: "bert",
        load: bert::load,
    },
    ArchEntry {
        name: "nomic-bert",
        load: nomic_bert::load,
    },
];

pub fn find(name: &str) -> Result<&'static ArchEntry, EngineError> {
    ARCHITECTURES
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = ARCHITECTURES.iter().map(|a| a.name).collect();
            EngineError::UnsupportedArchitecture(name.to_string(), names.join(", "))
        })
}
