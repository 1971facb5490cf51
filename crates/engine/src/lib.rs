//! hearth's inference engine: synchronous, no I/O beyond the mapped model file.
#![forbid(unsafe_code)]

pub mod arch;
pub mod backend;
pub mod blocks;
pub mod chat;
pub mod config;
pub mod constraint;
pub mod error;
pub mod generate;
pub mod kv_cache;
pub mod model;
pub mod perplexity;
pub mod rope;
pub mod sampler;
pub mod tokenizer;
pub mod weights;

pub use backend::{Backend, CpuBackend, SharedBackend};
pub use blocks::LogitRows;
pub use config::Pooling;
pub use error::EngineError;
pub use model::{Model, Pooler, Session, SessionState};
