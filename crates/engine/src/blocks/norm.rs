//! Normalization over rows: RMS norm (llama family) and LayerNorm with an optional bias
//! (GPT-2, StarCoder 2, BERT).

use super::sized;
use crate::error::EngineError;
use crate::weights::TensorLoader;
use kernels::ops;

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

    /// Normalizes each row of `x` into `out`.
    pub fn rows(&self, x: &[f32], out: &mut Vec<f32>) {
        let dim = self.weight.len();
        let out = sized(out, x.len());
        for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            self.row(xr, or);
        }
    }

    /// Normalizes each row of `x` in place (per-head norms have one head per row).
    pub fn rows_inplace(&self, x: &mut [f32]) {
        match self.kind {
            NormKind::Rms => {
                for row in x.chunks_exact_mut(self.weight.len()) {
                    ops::rmsnorm_inplace(row, &self.weight, self.eps);
                }
            }
            NormKind::Layer => {
                for row in x.chunks_exact_mut(self.weight.len()) {
                    ops::layernorm_inplace(row, &self.weight, self.bias.as_deref(), self.eps);
                }
            }
        }
    }

    fn row(&self, x: &[f32], out: &mut [f32]) {
        match self.kind {
            NormKind::Rms => ops::rmsnorm(x, &self.weight, self.eps, out),
            NormKind::Layer => ops::layernorm(x, &self.weight, self.bias.as_deref(), self.eps, out),
        }
    }
}
