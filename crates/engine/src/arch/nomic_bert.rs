//! nomic-bert (nomic-embed-text): BERT's post-norm [`Encoder`] with rotary positions instead of
//! learned ones (neox style, `nomic-bert.rope.freq_base`), Q, K and V fused in one `attn_qkv`,
//! and a SwiGLU feed-forward:
//!   x = LN_embd(tok_embd[t] + token_types[0])
//!   h = LN_attn_out(x + Wo · attn(rope(Wq · x), rope(Wk · x), Wv · x))   (no causal mask)
//!   x = LN_layer_out(h + Wdown · (silu(Wgate · h) * Wup · h))

use super::bert::{Encoder, Positions};
use super::Architecture;
use crate::blocks::{Activation, FfnWeights};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::rope::RopeConfig;
use crate::weights::TensorLoader;
use kernels::ops::RopeStyle;

pub fn load(t: &TensorLoader, c: &ModelConfig) -> Result<Box<dyn Architecture>, EngineError> {
    let rope = RopeConfig::of(t, c, RopeStyle::Neox)?.build();
    let ffn = |l| FfnWeights::gated(t, l, c.n_embd, c.n_ff);
    let enc = Encoder::load(t, c, Positions::Rope(rope), ffn, Activation::Silu)?;
    Ok(Box::new(enc))
}
