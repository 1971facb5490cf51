//! Rotary position embeddings and the ways models stretch them past their training context:
//! read once from `<arch>.rope.*` metadata (and the factor tensors some files carry), turned
//! into per-pair frequencies that [`kernels::ops::Rope`] applies.

use crate::config::{Hparams, ModelConfig};
use crate::error::EngineError;
use crate::weights::TensorLoader;
use kernels::ops::{Rope, RopeStyle};

/// How rotary frequencies are scaled (`<arch>.rope.scaling.type` and friends).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (every pair).
    Linear {
        factor: f32,
    },
    /// YaRN: high-frequency pairs kept, low-frequency pairs interpolated by `factor`, a ramp
    /// between them, and a magnitude correction.
    Yarn {
        factor: f32,
        orig_ctx: usize,
        beta_fast: f32,
        beta_slow: f32,
        ext_factor: f32,
        /// `rope.scaling.yarn_log_multiplier` (DeepSeek-style mscale_all_dim), 0 when absent.
        log_multiplier: f32,
    },
    /// Per-pair divisors from the file: Llama 3.1's `rope_freqs` tensor.
    Factors {
        factors: Vec<f32>,
    },
    /// Phi-3's LongRoPE: per-pair divisors for short and long contexts; the long ones apply
    /// when a sequence's context is larger than `orig_ctx`.
    LongRope {
        short: Vec<f32>,
        long: Vec<f32>,
        orig_ctx: usize,
    },
}

/// A model's rotary embedding: what a layer needs to rotate queries and keys.
#[derive(Debug, Clone)]
pub struct RopeConfig {
    pub style: RopeStyle,
    pub dims: usize,
    pub base: f32,
    pub scaling: RopeScaling,
    /// `rope.scaling.attn_factor`: an extra magnitude scale (1 when absent).
    pub attn_factor: f32,
    /// `rope.scaling.original_context_length` (the training context when absent): where
    /// LongRoPE switches to its long factors.
    pub orig_ctx: usize,
}

/// The rotations to use: one, or LongRoPE's pair chosen by a sequence's context size.
#[derive(Debug, Clone)]
pub struct RopeSet {
    short: Rope,
    long: Option<(Rope, usize)>,
}

impl RopeSet {
    /// The rotation for a sequence whose cache holds `n_ctx` positions.
    pub fn for_ctx(&self, n_ctx: usize) -> &Rope {
        match &self.long {
            Some((rope, orig)) if n_ctx > *orig => rope,
            _ => &self.short,
        }
    }
}

impl RopeConfig {
    /// A model's rope: the dimensions and base of its shared hyperparameters, and
    /// `<arch>.rope.*` as [`RopeConfig::from_hparams`] reads them.
    pub fn of(
        t: &TensorLoader,
        c: &ModelConfig,
        style: RopeStyle,
    ) -> Result<RopeConfig, EngineError> {
        RopeConfig::from_hparams(&t.hparams(), style, c.rope_dims, c.rope_base, c.n_ctx_train)
    }

    /// Reads `<arch>.rope.*`: the scaling type (linear unless named), factor, original context
    /// and YaRN parameters. Factor tensors are added by [`RopeConfig::with_factor_tensors`].
    pub fn from_hparams(
        hp: &Hparams,
        style: RopeStyle,
        dims: usize,
        base: f32,
        n_ctx_train: usize,
    ) -> Result<RopeConfig, EngineError> {
        let factor = hp
            .opt_f32("rope.scaling.factor")?
            .or(hp.opt_f32("rope.scale_linear")?)
            .filter(|&f| f != 0.0);
        if let Some(f) = factor {
            if f < 0.0 {
                return Err(EngineError::BadHyperparameter {
                    key: hp.key("rope.scaling.factor"),
                    value: f.to_string(),
                    why: "must be positive".into(),
                });
            }
        }
        let orig_ctx = hp
            .opt_usize("rope.scaling.original_context_length")?
            .unwrap_or(n_ctx_train);
        let kind = hp.opt_str("rope.scaling.type")?;
        let scaling = match (kind.as_deref().unwrap_or("linear"), factor) {
            ("none", _) | ("linear", None) => RopeScaling::None,
            ("linear", Some(factor)) => RopeScaling::Linear { factor },
            ("yarn", factor) => RopeScaling::Yarn {
                factor: factor.unwrap_or(1.0),
                orig_ctx,
                beta_fast: hp.opt_f32("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0),
                beta_slow: hp.opt_f32("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0),
                ext_factor: hp.opt_f32("rope.scaling.yarn_ext_factor")?.unwrap_or(1.0),
                log_multiplier: hp
                    .opt_f32("rope.scaling.yarn_log_multiplier")?
                    .unwrap_or(0.0),
            },
            // LongRoPE's factors are tensors; the caller adds them.
            ("longrope", _) => RopeScaling::None,
            (other, _) => {
                return Err(EngineError::BadHyperparameter {
                    key: hp.key("rope.scaling.type"),
                    value: other.to_string(),
                    why: "hearth knows none, linear, yarn and longrope".into(),
                })
            }
        };
        Ok(RopeConfig {
            style,
            dims,
            base,
            scaling,
            attn_factor: hp.opt_f32("rope.scaling.attn_factor")?.unwrap_or(1.0),
            orig_ctx,
        })
    }

    /// Picks up the factor tensors a file may carry: `rope_freqs.weight` (Llama 3.1 and others:
    /// per-pair divisors that replace any other scaling, as llama.cpp does) or
    /// `rope_factors_long/short.weight` (LongRoPE, used with `orig_ctx`).
    pub fn with_factor_tensors(mut self, t: &TensorLoader) -> Result<RopeConfig, EngineError> {
        let half = self.dims / 2;
        if let Some(factors) = t.opt_vector("rope_freqs.weight", half)? {
            check_factors("rope_freqs.weight", &factors)?;
            // Linear or YaRN scaling still applies on top of the divisors in llama.cpp; only
            // plain files are expected here, so divisors replace "none".
            if self.scaling == RopeScaling::None {
                self.scaling = RopeScaling::Factors { factors };
            } else {
                return Err(EngineError::BadHyperparameter {
                    key: "rope_freqs.weight".into(),
                    value: format!("{:?}", self.scaling),
                    why: "rope frequency factors together with another rope scaling are not supported".into(),
                });
            }
        }
        let long = t.opt_vector("rope_factors_long.weight", half)?;
        let short = t.opt_vector("rope_factors_short.weight", half)?;
        match (long, short) {
            (None, None) => {}
            (Some(long), Some(short)) => {
                check_factors("rope_factors_long.weight", &long)?;
                check_factors("rope_factors_short.weight", &short)?;
                self.scaling = RopeScaling::LongRope {
                    short,
                    long,
                    orig_ctx: self.orig_ctx,
                };
            }
            _ => {
                return Err(EngineError::MissingTensor {
                    arch: t.arch().to_string(),
                    name:
                        "rope_factors_long.weight and rope_factors_short.weight (both or neither)"
                            .into(),
                })
            }
        }
        Ok(self)
    }

    /// The rotations this configuration makes, for a layer whose base may differ (sliding
    /// layers of some models use their own base).
    pub fn build(&self) -> RopeSet {
        self.build_with_base(self.base)
    }

    pub fn build_with_base(&self, base: f32) -> RopeSet {
        let plain = Rope::base_freqs(self.dims, base);
        let divided = |div: &[f32]| -> Vec<f32> {
            plain
                .iter()
                .zip(div)
                .map(|(f, d)| f / d)
                .collect::<Vec<f32>>()
        };
        let rope = |freqs: Vec<f32>, mscale: f32| Rope::with_freqs(self.style, freqs, mscale);
        let af = self.attn_factor;
        match &self.scaling {
            RopeScaling::None => RopeSet {
                short: rope(plain, af),
                long: None,
            },
            RopeScaling::Linear { factor } => RopeSet {
                short: rope(plain.iter().map(|f| f / factor).collect(), af),
                long: None,
            },
            RopeScaling::Factors { factors } => RopeSet {
                short: rope(divided(factors), af),
                long: None,
            },
            RopeScaling::LongRope {
                short,
                long,
                orig_ctx,
            } => RopeSet {
                short: rope(divided(short), af),
                long: Some((rope(divided(long), af), *orig_ctx)),
            },
            RopeScaling::Yarn {
                factor,
                orig_ctx,
                beta_fast,
                beta_slow,
                ext_factor,
                log_multiplier,
            } => {
                let (freqs, mscale) = yarn(
                    &plain,
                    self.dims,
                    base,
                    *factor,
                    *orig_ctx,
                    (*beta_fast, *beta_slow),
                    *ext_factor,
                    *log_multiplier,
                );
                RopeSet {
                    short: rope(freqs, mscale * af),
                    long: None,
                }
            }
        }
    }
}

/// YaRN's per-pair frequencies and magnitude scale. Pairs that turn more than `beta_fast`
/// times over the original context keep their frequency, pairs turning fewer than `beta_slow`
/// times are interpolated by `factor`, with a linear ramp between (weighted by `ext_factor`).
#[allow(clippy::too_many_arguments)]
fn yarn(
    plain: &[f32],
    dims: usize,
    base: f32,
    factor: f32,
    orig_ctx: usize,
    (beta_fast, beta_slow): (f32, f32),
    ext_factor: f32,
    log_multiplier: f32,
) -> (Vec<f32>, f32) {
    if factor <= 1.0 {
        return (plain.to_vec(), 1.0);
    }
    let corr_dim = |rotations: f32| {
        dims as f32 * (orig_ctx as f32 / (rotations * 2.0 * std::f32::consts::PI)).ln()
            / (2.0 * base.ln())
    };
    let low = corr_dim(beta_fast).floor().max(0.0);
    let high = corr_dim(beta_slow).ceil().min(dims as f32 - 1.0);
    let freqs = plain
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            let y = (i as f32 - low) / (high - low).max(0.001);
            let keep = (1.0 - y.clamp(0.0, 1.0)) * ext_factor;
            f / factor * (1.0 - keep) + f * keep
        })
        .collect();
    let mscale_of = |m: f32| 0.1 * m * factor.ln() + 1.0;
    let mscale = if ext_factor == 0.0 {
        1.0
    } else if log_multiplier != 0.0 {
        mscale_of(1.0) / mscale_of(log_multiplier)
    } else {
        mscale_of(1.0)
    };
    (freqs, mscale)
}

fn check_factors(name: &str, factors: &[f32]) -> Result<(), EngineError> {
    match factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
        None => Ok(()),
        Some(bad) => Err(EngineError::BadHyperparameter {
            key: name.to_string(),
            value: bad.to_string(),
            why: "rope frequency factors must be finite and positive".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yarn_keeps_fast_pairs_and_interpolates_slow_ones() {
        let plain = Rope::base_freqs(64, 10000.0);
        let (f, mscale) = yarn(&plain, 64, 10000.0, 4.0, 64, (32.0, 1.0), 1.0, 0.0);
        assert_eq!(f[0], plain[0]);
        let last = plain.len() - 1;
        assert!((f[last] - plain[last] / 4.0).abs() < 1e-9);
        assert!((mscale - (1.0 + 0.1 * 4f32.ln())).abs() < 1e-6);
    }

    #[test]
    fn yarn_without_stretch_is_plain() {
        let plain = Rope::base_freqs(16, 10000.0);
        assert_eq!(
            yarn(&plain, 16, 1e4, 1.0, 32, (32.0, 1.0), 1.0, 0.0).0,
            plain
        );
    }
}
