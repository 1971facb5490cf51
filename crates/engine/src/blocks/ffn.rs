//! Feed-forward sub-blocks: gated (SwiGLU, GeGLU; gate and up separate or fused in one
//! matrix) and plain (GELU MLP of GPT-2, StarCoder 2 and BERT), each projection with an
//! optional bias.

use super::{linear, linear_many, sized, Linear, Runtime, Scratch};
use crate::backend::Backend;
use crate::error::EngineError;
use crate::weights::TensorLoader;
use gguf::GgufFile;

/// The nonlinearity: on the gate of a gated block, or on the up projection of a plain one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Silu,
    GeluTanh,
    /// gpt-oss: the gate clamped from above and the linear part to ±limit,
    /// gate * sigmoid(alpha * gate) * (up + 1).
    SwigluClamped {
        alpha: f32,
        limit: f32,
    },
}

/// Where the up and gate projections come from.
pub enum UpGate {
    /// `ffn_gate` and `ffn_up`: down(act(gate(x)) * up(x)).
    Gated { gate: Linear, up: Linear },
    /// One `ffn_up` of 2·n_ff rows, the gate's rows first (Phi-3).
    Fused(Linear),
    /// `ffn_up` alone: down(act(up(x))).
    Plain(Linear),
}

pub struct FfnWeights {
    pub up_gate: UpGate,
    pub down: Linear,
}

impl FfnWeights {
    /// `ffn_gate`, `ffn_up`, `ffn_down` (with biases when present).
    pub fn gated(
        t: &TensorLoader,
        layer: usize,
        n_embd: usize,
        n_ff: usize,
    ) -> Result<FfnWeights, EngineError> {
        let name = |s: &str| format!("blk.{layer}.{s}");
        Ok(FfnWeights {
            up_gate: UpGate::Gated {
                gate: Linear::load(t, &name("ffn_gate"), n_ff, n_embd)?,
                up: Linear::load(t, &name("ffn_up"), n_ff, n_embd)?,
            },
            down: Linear::load(t, &name("ffn_down"), n_embd, n_ff)?,
        })
    }

    /// Gated, with gate and up fused in `ffn_up` when the file has no `ffn_gate`.
    pub fn gated_or_fused(
        t: &TensorLoader,
        layer: usize,
        n_embd: usize,
        n_ff: usize,
    ) -> Result<FfnWeights, EngineError> {
        if t.has(&format!("blk.{layer}.ffn_gate.weight")) {
            return FfnWeights::gated(t, layer, n_embd, n_ff);
        }
        let name = |s: &str| format!("blk.{layer}.{s}");
        Ok(FfnWeights {
            up_gate: UpGate::Fused(Linear::load(t, &name("ffn_up"), 2 * n_ff, n_embd)?),
            down: Linear::load(t, &name("ffn_down"), n_embd, n_ff)?,
        })
    }

    /// `ffn_up` and `ffn_down` with no gate.
    pub fn plain(
        t: &TensorLoader,
        layer: usize,
        n_embd: usize,
        n_ff: usize,
    ) -> Result<FfnWeights, EngineError> {
        let name = |s: &str| format!("blk.{layer}.{s}");
        Ok(FfnWeights {
            up_gate: UpGate::Plain(Linear::load(t, &name("ffn_up"), n_ff, n_embd)?),
            down: Linear::load(t, &name("ffn_down"), n_embd, n_ff)?,
        })
    }
}

/// Feed-forward over `scratch.xn`; the output lands in `scratch.proj`.
pub fn ffn_block(rt: &mut Runtime, w: &FfnWeights, act: Activation) {
    let n_tokens = rt.scratch.token_seq.len();
    let s = &mut *rt.scratch;
    ffn_rows(rt.backend, rt.file, s, w, act, Rows::Normed, n_tokens);
}

/// Which scratch buffer a feed-forward reads.
#[derive(Clone, Copy)]
pub(super) enum Rows {
    /// `xn`, the normalized layer input; output to `proj`.
    Normed,
    /// `moe_x`, rows gathered for one expert; output to `moe_y`.
    Expert,
}

/// The feed-forward of `n_tokens` rows of the chosen input buffer.
pub(super) fn ffn_rows(
    be: &dyn Backend,
    file: &GgufFile,
    s: &mut Scratch,
    w: &FfnWeights,
    act: Activation,
    rows: Rows,
    n_tokens: usize,
) {
    let (x, out) = match rows {
        Rows::Normed => (&s.xn, &mut s.proj),
        Rows::Expert => (&s.moe_x, &mut s.moe_y),
    };
    s.acts.invalidate();
    match &w.up_gate {
        UpGate::Gated { gate, up } => linear_many(
            be,
            file,
            &mut s.acts,
            &[gate, up],
            x,
            n_tokens,
            &mut [&mut s.gate, &mut s.up],
        ),
        UpGate::Fused(fused) => {
            linear(be, file, &mut s.acts, fused, x, n_tokens, &mut s.up);
            let n_ff = fused.rows() / 2;
            let gate = sized(&mut s.gate, n_tokens * n_ff);
            // Rows of [gate | up] become a gate buffer and, compacted in place, an up buffer.
            for t in 0..n_tokens {
                gate[t * n_ff..][..n_ff].copy_from_slice(&s.up[2 * t * n_ff..][..n_ff]);
                s.up.copy_within((2 * t + 1) * n_ff..(2 * t + 2) * n_ff, t * n_ff);
            }
        }
        UpGate::Plain(up) => linear(be, file, &mut s.acts, up, x, n_tokens, &mut s.gate),
    }
    let n = n_tokens * w.down.w.cols;
    let hidden = &mut s.gate[..n];
    let up = match &w.up_gate {
        UpGate::Plain(_) => None,
        UpGate::Gated { .. } | UpGate::Fused(_) => Some(&s.up[..n]),
    };
    be.activation(act, hidden, up);
    s.acts.invalidate();
    linear(be, file, &mut s.acts, &w.down, &s.gate[..n], n_tokens, out);
}
