//! GGUF v2/v3: a reader over an mmap that checks every count, length, shape and offset before
//! trusting it, and a writer used by tests and tools to make small synthetic models.
//! This crate knows nothing of inference.
//!
//! ```
//! use gguf::{GgmlType, GgufFile, GgufWriter};
//!
//! let mut w = GgufWriter::new();
//! w.add("general.architecture", "llama");
//! w.add_tensor("norm.weight", &[2], GgmlType::F32, vec![0; 8])?;
//! let file = GgufFile::from_bytes(w.to_bytes())?;
//! assert_eq!(file.get_str("general.architecture")?, Some("llama"));
//! let t = file.tensor("norm.weight").expect("written above");
//! assert_eq!(file.tensor_data(t).len(), 8);
//! # Ok::<(), gguf::GgufError>(())
//! ```
//!
//! The only `unsafe` in this crate is the one call that maps a file (see `file.rs`); memmap2
//! offers no safe way to do it.
#![deny(unsafe_code)]

mod error;
mod file;
mod reader;
mod value;
mod writer;

pub use error::GgufError;
pub use file::{GgufFile, TensorInfo};
pub use ggml_type::GgmlType;
pub use reader::header_size;
pub use value::Value;
pub use writer::GgufWriter;

/// The alignment of the data section and of each tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// At most this many dimensions per tensor (as in ggml).
pub const MAX_DIMS: u32 = 4;
/// Arrays may nest at most this deep (an array of scalars has depth 1).
pub const MAX_ARRAY_DEPTH: usize = 8;
