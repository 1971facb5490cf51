use thiserror::Error;

/// Errors from loading or running a model. Messages say what was wrong, where, and what to do.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("cannot read tensor `{name}` from the model file: {source}")]
    TensorRead {
        name: String,
        source: std::io::Error,
    },
    #[error("the model's metadata has no `{key}`; it is required for the `{arch}` architecture (is the GGUF complete?)")]
    MissingHyperparameter { arch: String, key: String },
    #[error("hyperparameter `{key}` = {value} is invalid: {why}")]
    BadHyperparameter {
        key: String,
        value: String,
        why: String,
    },
    #[error("the model file has no tensor `{name}`, which the `{arch}` architecture needs (the GGUF is incomplete or of another architecture)")]
    MissingTensor { arch: String, name: String },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    BadTensorShape {
        name: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("tensor `{name}` has type {ty}, which hearth cannot compute with yet")]
    UnsupportedTensorType { name: String, ty: gguf::GgmlType },
    #[error("the model file has tensors that hearth's `{arch}` architecture does not use: {names}; running without them would give wrong answers (the file needs a feature hearth lacks, or is of another architecture)")]
    UnclaimedTensors { arch: String, names: String },
    #[error("architecture `{0}` is not supported (supported: {1})")]
    UnsupportedArchitecture(String, String),
    #[error(
        "the model has no `general.architecture` key; it is not a model GGUF (a vocab-only file?)"
    )]
    NoArchitecture,
    #[error("token id {id} is out of range: the vocabulary has {n_vocab} tokens")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("a batch of {tokens} tokens does not match its sequences' {parts} tokens")]
    BatchMismatch { tokens: usize, parts: usize },
    #[error("sessions of different models cannot be evaluated in one batch")]
    MixedBatch,
    #[error("context is full: {needed} positions needed but the context holds {ctx} (use a larger --ctx)")]
    ContextFull { needed: usize, ctx: usize },
    #[error("this is an embedding model: it has no output head to generate text with; use it for embeddings (/v1/embeddings, /api/embed)")]
    NoOutputHead,
    #[error("the input of {tokens} tokens is longer than the embedding model's context of {ctx}: an embedding model reads its whole input at once; shorten the input")]
    InputTooLong { tokens: usize, ctx: usize },
}
