//! Mixture-of-experts feed-forward: a router scores every expert for each token, the top k
//! run (each a gated feed-forward, sliced out of 3-D expert tensors) and their outputs are
//! summed with the router's weights; an optional shared expert runs for every token.

use super::ffn::{ffn_rows, Rows};
use super::{linear, sized, Activation, FfnWeights, Linear, Runtime, UpGate};
use crate::config::Hparams;
use crate::error::EngineError;
use crate::weights::TensorLoader;
use kernels::ops;

/// How router scores become expert weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gating {
    /// Softmax over all experts, then the top k (Mixtral, Qwen MoE).
    Softmax,
    /// Sigmoid of each score, then the top k (DeepSeek V3 style).
    Sigmoid,
    /// The top k scores, then a softmax over just those (gpt-oss).
    SoftmaxSelected,
}

#[derive(Debug, Clone, Copy)]
pub struct MoeParams {
    /// Experts each token uses (`expert_used_count`).
    pub n_used: usize,
    pub gating: Gating,
    /// Rescale the chosen experts' weights to sum to 1.
    pub normalize: bool,
    /// Multiplies every expert weight (`expert_weights_scale`; 1 when absent).
    pub weights_scale: f32,
    pub act: Activation,
}

pub struct MoeWeights {
    /// `ffn_gate_inp`: one score per expert.
    pub router: Linear,
    pub experts: Vec<FfnWeights>,
    /// A dense expert every token runs (`*_shexp`), optionally scaled by
    /// sigmoid(`ffn_gate_inp_shexp` · x).
    pub shared: Option<FfnWeights>,
    pub shared_gate: Option<Linear>,
}

impl MoeWeights {
    /// `blk.{layer}.ffn_gate_inp` and the expert tensors `ffn_{gate,up,down}_exps` (with
    /// per-expert biases when the file has them), plus a shared expert when present.
    pub fn load(
        t: &TensorLoader,
        layer: usize,
        n_embd: usize,
        n_ff_exp: usize,
        n_expert: usize,
    ) -> Result<MoeWeights, EngineError> {
        let name = |s: &str| format!("blk.{layer}.{s}");
        let router = Linear::load(t, &name("ffn_gate_inp"), n_expert, n_embd)?;
        let slices = |s: &str, rows: usize, cols: usize| -> Result<Vec<Linear>, EngineError> {
            let mats = t.experts(&name(&format!("{s}.weight")), n_expert, rows, cols)?;
            let bias_name = name(&format!("{s}.bias"));
            let biases = if t.has(&bias_name) {
                let b = t.float_rows(&bias_name, n_expert, rows)?;
                b.chunks_exact(rows).map(|r| Some(r.to_vec())).collect()
            } else {
                vec![None; n_expert]
            };
            Ok(mats
                .into_iter()
                .zip(biases)
                .map(|(w, b)| Linear { w, b })
                .collect())
        };
        let gates = slices("ffn_gate_exps", n_ff_exp, n_embd)?;
        let ups = slices("ffn_up_exps", n_ff_exp, n_embd)?;
        let downs = slices("ffn_down_exps", n_embd, n_ff_exp)?;
        let experts = gates
            .into_iter()
            .zip(ups)
            .zip(downs)
            .map(|((gate, up), down)| FfnWeights {
                up_gate: UpGate::Gated { gate, up },
                down,
            })
            .collect();
        let shared = if t.has(&name("ffn_up_shexp.weight")) {
            let n_ff_sh = t
                .hparams()
                .opt_usize("expert_shared_feed_forward_length")?
                .unwrap_or(n_ff_exp);
            Some(FfnWeights {
                up_gate: UpGate::Gated {
                    gate: Linear::load(t, &name("ffn_gate_shexp"), n_ff_sh, n_embd)?,
                    up: Linear::load(t, &name("ffn_up_shexp"), n_ff_sh, n_embd)?,
                },
                down: Linear::load(t, &name("ffn_down_shexp"), n_embd, n_ff_sh)?,
            })
        } else {
            None
        };
        Ok(MoeWeights {
            router,
            experts,
            shared,
            shared_gate: Linear::opt(t, &name("ffn_gate_inp_shexp"), 1, n_embd)?,
        })
    }
}

/// Mixture-of-experts over `scratch.xn`; the output lands in `scratch.proj`.
pub fn moe_block(rt: &mut Runtime, w: &MoeWeights, p: &MoeParams) {
    let (file, be) = (rt.file, rt.backend);
    let s = &mut *rt.scratch;
    let n_tokens = s.token_seq.len();
    let n_expert = w.experts.len();
    let dim = w.router.w.cols;
    let k = p.n_used.min(n_expert);

    s.acts.invalidate();
    linear(
        be,
        file,
        &mut s.acts,
        &w.router,
        &s.xn,
        n_tokens,
        &mut s.router,
    );
    s.routes.clear();
    for scores in s.router.chunks_exact_mut(n_expert).take(n_tokens) {
        route(scores, k, p, &mut s.routes);
    }

    // The shared expert (or zeros) first, then each routed expert's rows added in.
    match &w.shared {
        Some(shared) => {
            ffn_rows(be, file, s, shared, p.act, Rows::Normed, n_tokens);
            if let Some(gate) = &w.shared_gate {
                s.acts.invalidate();
                linear(be, file, &mut s.acts, gate, &s.xn, n_tokens, &mut s.router);
                for (row, &g) in s.proj.chunks_exact_mut(dim).zip(&s.router[..n_tokens]) {
                    ops::scale_inplace(row, ops::sigmoid(g));
                }
            }
        }
        None => sized(&mut s.proj, n_tokens * dim).fill(0.0),
    }
    for (e, expert) in w.experts.iter().enumerate() {
        let chosen = |(t, &(ex, _)): (usize, &(usize, f32))| (ex == e).then_some(t / k);
        let m = s.routes.iter().enumerate().filter_map(chosen).count();
        if m == 0 {
            continue;
        }
        let xe = sized(&mut s.moe_x, m * dim);
        for (i, t) in s.routes.iter().enumerate().filter_map(chosen).enumerate() {
            xe[i * dim..][..dim].copy_from_slice(&s.xn[t * dim..][..dim]);
        }
        ffn_rows(be, file, s, expert, p.act, Rows::Expert, m);
        let weighted = s
            .routes
            .iter()
            .enumerate()
            .filter(|(_, &(ex, _))| ex == e)
            .map(|(r, &(_, wt))| (r / k, wt));
        for (i, (t, wt)) in weighted.enumerate() {
            ops::axpy(
                &mut s.proj[t * dim..][..dim],
                wt,
                &s.moe_y[i * dim..][..dim],
            );
        }
    }
}

/// Appends one token's `k` chosen experts and their weights to `routes`.
fn route(scores: &mut [f32], k: usize, p: &MoeParams, routes: &mut Vec<(usize, f32)>) {
    match p.gating {
        Gating::Softmax => ops::softmax(scores),
        Gating::Sigmoid => scores.iter_mut().for_each(|v| *v = ops::sigmoid(*v)),
        Gating::SoftmaxSelected => {}
    }
    let start = routes.len();
    for _ in 0..k {
        // Highest score not yet taken (k is small: a scan per pick beats sorting).
        let best = (0..scores.len())
            .filter(|e| !routes[start..].iter().any(|&(c, _)| c == *e))
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        if let Some(e) = best {
            routes.push((e, scores[e]));
        }
    }
    let chosen = &mut routes[start..];
    if p.gating == Gating::SoftmaxSelected {
        let max = chosen.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        chosen.iter_mut().for_each(|c| c.1 = (c.1 - max).exp());
    }
    let sum: f32 = chosen.iter().map(|c| c.1).sum();
    let normalize = p.normalize || p.gating == Gating::SoftmaxSelected;
    let norm = if normalize && sum > 0.0 {
        1.0 / sum
    } else {
        1.0
    };
    chosen
        .iter_mut()
        .for_each(|c| c.1 *= norm * p.weights_scale);
}

/// `<arch>.expert_used_count`, checked against the `n_expert` experts there are.
pub fn experts_used(hp: &Hparams, n_expert: usize) -> Result<usize, EngineError> {
    let n_used = hp.usize("expert_used_count")?;
    if n_used > n_expert {
        return Err(EngineError::BadHyperparameter {
            key: hp.key("expert_used_count"),
            value: n_used.to_string(),
            why: format!("more than the {n_expert} experts"),
        });
    }
    Ok(n_used)
}

/// `<arch>.expert_weights_scale`, 1 when absent or 0 (as llama.cpp reads it).
pub fn expert_weights_scale(hp: &Hparams) -> Result<f32, EngineError> {
    Ok(hp
        .opt_f32("expert_weights_scale")?
        .filter(|&s| s != 0.0)
        .unwrap_or(1.0))
}

/// A layer's feed-forward: dense, or a mixture of experts.
// One per layer, made at load: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Ffn {
    Dense(FfnWeights, Activation),
    Experts(MoeWeights, MoeParams),
}

impl Ffn {
    /// A gated dense feed-forward, or experts when `<arch>.expert_count` > 0, with the
    /// gating the file names (`expert_gating_func`: 1 softmax, 2 sigmoid, 3 softmax over
    /// the chosen), softmax by default, and the chosen weights renormalized unless
    /// `expert_weights_norm` says otherwise.
    pub fn dense_or_experts(
        t: &TensorLoader,
        layer: usize,
        c: &crate::config::ModelConfig,
        act: Activation,
    ) -> Result<Ffn, EngineError> {
        let hp = t.hparams();
        let n_expert = hp.opt_count("expert_count")?.unwrap_or(0);
        if n_expert == 0 {
            return Ok(Ffn::Dense(
                FfnWeights::gated(t, layer, c.n_embd, c.n_ff)?,
                act,
            ));
        }
        let n_used = experts_used(&hp, n_expert)?;
        let gating = match hp.opt_count("expert_gating_func")? {
            None | Some(0) | Some(1) => Gating::Softmax,
            Some(2) => Gating::Sigmoid,
            Some(3) => Gating::SoftmaxSelected,
            Some(other) => {
                return Err(EngineError::BadHyperparameter {
                    key: hp.key("expert_gating_func"),
                    value: other.to_string(),
                    why: "hearth knows 1 (softmax), 2 (sigmoid) and 3 (softmax of the chosen)"
                        .into(),
                })
            }
        };
        let n_ff_exp = hp
            .opt_usize("expert_feed_forward_length")?
            .unwrap_or(c.n_ff);
        let params = MoeParams {
            n_used,
            gating,
            normalize: hp.opt_bool("expert_weights_norm")?.unwrap_or(true),
            weights_scale: expert_weights_scale(&hp)?,
            act,
        };
        Ok(Ffn::Experts(
            MoeWeights::load(t, layer, c.n_embd, n_ff_exp, n_expert)?,
            params,
        ))
    }

    /// Runs over `scratch.xn`; the output lands in `scratch.proj`.
    pub fn run(&self, rt: &mut Runtime) {
        match self {
            Ffn::Dense(w, act) => super::ffn_block(rt, w, *act),
            Ffn::Experts(w, p) => moe_block(rt, w, p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(gating: Gating, normalize: bool) -> MoeParams {
        MoeParams {
            n_used: 2,
            gating,
            normalize,
            weights_scale: 1.0,
            act: Activation::Silu,
        }
    }

    #[test]
    fn softmax_routing_picks_the_top_two_and_renormalizes() {
        let mut routes = Vec::new();
        route(
            &mut [0.0, 2.0, 1.0, -1.0],
            2,
            &params(Gating::Softmax, true),
            &mut routes,
        );
        assert_eq!(routes.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
        let w1 = 1.0 / (1.0 + (-1f32).exp());
        assert!((routes[0].1 - w1).abs() < 1e-6);
        assert!((routes[0].1 + routes[1].1 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn selected_softmax_weights_only_the_chosen() {
        let mut routes = Vec::new();
        route(
            &mut [3.0, 0.0, 2.0, 5.0],
            2,
            &params(Gating::SoftmaxSelected, false),
            &mut routes,
        );
        assert_eq!(routes[0].0, 3);
        assert_eq!(routes[1].0, 0);
        let w = 1.0 / (1.0 + (-2f32).exp());
        assert!((routes[0].1 - w).abs() < 1e-6);
    }
}
