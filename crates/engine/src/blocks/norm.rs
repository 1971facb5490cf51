//! Normalization over rows: RMS norm (llama family) and LayerNorm with an optional bias
//! (GPT-2, StarCoder 2, BERT).

use super::sized;
use crate::backend::Backend;
use crate::error::EngineError;
use crate::weights::TensorLoader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    Rms,
    Layer,
}

/// A norm's learned scale (and shift), applied to each `weight.len()`-sized row.
pub struct Norm {
    pub kind: NormKind,
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub eps: f32,
}

impl Norm {
    /// An RMS norm from `{name}.weight`.
    pub fn rms(t: &TensorLoader, name: &str, len: usize, eps: f32) -> Result<Norm, EngineError> {
        Ok(Norm {
            kind: NormKind::Rms,
            weight: t.vector(&format!("{name}.weight"), len)?,
            bias: None,
            eps,
        })
    }

    /// An RMS norm, or `None` when the file has no `{name}.weight`.
    pub fn opt_rms(
        t: &TensorLoader,
        name: &str,
        len: usize,
        eps: f32,
    ) -> Result<Option<Norm>, EngineError> {
        if t.has(&format!("{name}.weight")) {
            Norm::rms(t, name, len, eps).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A LayerNorm from `{name}.weight` and, when present, `{name}.bias`.
    pub fn layer(t: &TensorLoader, name: &str, len: usize, eps: f32) -> Result<Norm, EngineError> {
        Ok(Norm {
            kind: NormKind::Layer,
            weight: t.vector(&format!("{name}.weight"), len)?,
            bias: t.opt_vector(&format!("{name}.bias"), len)?,
            eps,
        })
    }

    /// Normalizes each row of `x` into `out` on the backend.
    pub fn rows(&self, be: &dyn Backend, x: &[f32], out: &mut Vec<f32>) {
        be.norm(self, x, sized(out, x.len()));
    }

    /// Normalizes each row of `x` in place (per-head norms have one head per row).
    pub fn rows_inplace(&self, be: &dyn Backend, x: &mut [f32]) {
        be.norm_inplace(self, x);
    }
}
