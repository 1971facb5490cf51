//! The pre-norm transformer layer most decoders share:
//!   h = x + s · attn(norm₁(x)),   x = h + s · ffn(norm₂(h))
//! with s the residual scale (Granite's multiplier; 1 elsewhere).

use super::{
    attention_block, ffn_block, Activation, AttnParams, AttnShape, AttnWeights, Ffn, FfnWeights,
    Norm, Runtime,
};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::weights::TensorLoader;
use kernels::ops;

pub struct PreNormLayer {
    pub attn_norm: Norm,
    pub attn: AttnWeights,
    pub ffn_norm: Norm,
    pub ffn: Ffn,
}

impl PreNormLayer {
    /// RMS norms `attn_norm` and `ffn_norm`, the attention's projections, and a dense
    /// feed-forward (or experts) with `act`.
    pub fn load_rms(
        t: &TensorLoader,
        l: usize,
        c: &ModelConfig,
        shape: AttnShape,
        act: Activation,
    ) -> Result<PreNormLayer, EngineError> {
        Ok(PreNormLayer {
            attn_norm: Norm::rms(t, &format!("blk.{l}.attn_norm"), c.n_embd, c.rms_eps)?,
            attn: AttnWeights::load(t, l, c.n_embd, shape)?,
            ffn_norm: Norm::rms(t, &format!("blk.{l}.ffn_norm"), c.n_embd, c.rms_eps)?,
            ffn: Ffn::dense_or_experts(t, l, c, act)?,
        })
    }

    /// Runs the layer on `rt.scratch.x` in place.
    pub fn run(&self, rt: &mut Runtime, layer: usize, params: &AttnParams, residual_scale: f32) {
        self.attn_norm
            .rows(rt.backend, &rt.scratch.x, &mut rt.scratch.xn);
        attention_block(rt, layer, &self.attn, params);
        add_residual(rt, residual_scale);
        self.ffn_norm
            .rows(rt.backend, &rt.scratch.x, &mut rt.scratch.xn);
        self.ffn.run(rt);
        add_residual(rt, residual_scale);
    }
}

/// x += scale · proj (the sub-block's output).
pub fn add_residual(rt: &mut Runtime, scale: f32) {
    let s = &mut *rt.scratch;
    if scale == 1.0 {
        ops::add_inplace(&mut s.x, &s.proj);
    } else {
        ops::axpy(&mut s.x, scale, &s.proj);
    }
}

/// Gemma's layer: RMS norms before and after both sub-blocks, a GeGLU feed-forward.
///   h = x + post₁(attn(norm₁(x))),   x = h + post₂(ffn(norm₂(h)))
pub struct SandwichLayer {
    pub attn_norm: Norm,
    pub attn: AttnWeights,
    pub post_attn_norm: Norm,
    pub ffn_norm: Norm,
    pub ffn: FfnWeights,
    pub post_ffw_norm: Norm,
}

impl SandwichLayer {
    /// `attn_norm`, `post_attention_norm`, `ffn_norm`, `post_ffw_norm`, the attention's
    /// projections and a gated feed-forward.
    pub fn load(
        t: &TensorLoader,
        l: usize,
        c: &ModelConfig,
        shape: AttnShape,
    ) -> Result<SandwichLayer, EngineError> {
        let norm = |s: &str| Norm::rms(t, &format!("blk.{l}.{s}"), c.n_embd, c.rms_eps);
        Ok(SandwichLayer {
            attn_norm: norm("attn_norm")?,
            attn: AttnWeights::load(t, l, c.n_embd, shape)?,
            post_attn_norm: norm("post_attention_norm")?,
            ffn_norm: norm("ffn_norm")?,
            ffn: FfnWeights::gated(t, l, c.n_embd, c.n_ff)?,
            post_ffw_norm: norm("post_ffw_norm")?,
        })
    }

    /// Runs the layer on `rt.scratch.x` in place.
    pub fn run(&self, rt: &mut Runtime, layer: usize, params: &AttnParams) {
        self.attn_norm
            .rows(rt.backend, &rt.scratch.x, &mut rt.scratch.xn);
        attention_block(rt, layer, &self.attn, params);
        self.post_attn_norm
            .rows_inplace(rt.backend, &mut rt.scratch.proj);
        add_residual(rt, 1.0);
        self.ffn_norm
            .rows(rt.backend, &rt.scratch.x, &mut rt.scratch.xn);
        ffn_block(rt, &self.ffn, Activation::GeluTanh);
        self.post_ffw_norm
            .rows_inplace(rt.backend, &mut rt.scratch.proj);
        add_residual(rt, 1.0);
    }
}
