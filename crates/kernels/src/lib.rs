//! CPU math: quantized block formats with scalar references and SIMD variants picked at run time,
//! matrix multiplication over any format, element-wise ops and the thread pool.
//! This is the only crate of the workspace allowed to use `unsafe`.

pub mod attn;
pub mod matmul;
pub mod membw;
pub mod ops;
pub mod packed;
pub mod par;
pub mod pool;
pub mod quant;
pub mod simd;

pub use ggml_type::GgmlType;
