//! How much memory `hearth run` needs for a model at a context size, from the GGUF header
//! alone (no tensor is read), matching what the engine allocates:
//!
//! - weights: matrices the packed kernels serve are copied into memory at load (the same bytes
//!   as the file, except Q4_K, Q5_K and Q6_K: 1184, 1440 and 1680 bytes per 8 × 256 elements,
//!   +2.8 % for Q4_K and +2.3 % for Q5_K; IQ4_XS 138 bytes per row and 256 elements instead
//!   of 136; MXFP4 20 bytes per row and 32 elements instead of 17, +17.6 %, for its f32
//!   scales); other matrices are read through the mapping, so
//!   their pages become resident; the embedding table is mapped and only the rows of tokens
//!   seen are touched, unless it is also the output head (no `output.weight`), which is then
//!   packed or read whole;
//! - KV cache: f16 keys and values for every layer and position (`engine::backend::HostKv`, sliding
//!   window layers included), reserved up front and resident as positions fill;
//! - compute buffers: the engine's scratch for a batch of 256 tokens (`engine::blocks::Scratch`)
//!   plus one row of logits;
//! - the process: the binary, the tokenizer's tables (grow with the vocabulary) and the
//!   allocator's slack, calibrated against measured peak RSS.

use gguf::{GgmlType, GgufFile};
use serde::Serialize;

/// The prompt batch `engine::Session` evaluates at once.
const BATCH: u64 = 256;
/// Process overhead that does not depend on the model: binary, thread stacks, allocator.
const BASE_OVERHEAD: u64 = 4 << 20;
/// Tokenizer tables per vocabulary entry (strings, id maps, merge ranks), measured.
const PER_VOCAB_ENTRY: u64 = 200;
/// BPE merge tables per merge rule, measured.
const PER_MERGE: u64 = 120;

#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub arch: String,
    pub n_layer: u64,
    pub n_embd: u64,
    pub n_vocab: u64,
    pub n_ctx_train: u64,
    /// The context asked for, capped at the training context as `engine::Model::session` does.
    pub n_ctx: u64,
    pub file_bytes: u64,
    /// Weights resident while generating.
    pub weights_bytes: u64,
    /// Weights one generated token reads: all of them but the token embedding table (one row
    /// of it, unless it is also the output head), and of a mixture of experts only the share
    /// of the experts a token uses. Memory bandwidth divided by this bounds tokens/s.
    pub decode_read_bytes: u64,
    /// KV cache bytes per position.
    pub kv_bytes_per_token: u64,
    /// KV cache at `n_ctx` positions (full).
    pub kv_bytes: u64,
    pub compute_bytes: u64,
    pub overhead_bytes: u64,
    /// Weights, compute and process: resident from the first token on. The KV cache's pages
    /// become resident as positions fill, so a short run peaks near this.
    pub fixed_bytes: u64,
    /// Everything above: the peak when the whole context is filled.
    pub total_bytes: u64,
}

impl Estimate {
    /// The same model at another context size.
    pub fn at_ctx(&self, n_ctx: u64) -> Estimate {
        let n_ctx = n_ctx.clamp(1, self.n_ctx_train.max(1));
        let kv_bytes = n_ctx * self.kv_bytes_per_token;
        Estimate {
            n_ctx,
            kv_bytes,
            fixed_bytes: self.fixed_bytes(),
            total_bytes: self.fixed_bytes() + kv_bytes,
            ..self.clone()
        }
    }

    /// Everything but the KV cache.
    pub fn fixed_bytes(&self) -> u64 {
        self.weights_bytes + self.compute_bytes + self.overhead_bytes
    }

    /// The largest context whose total fits in `budget` bytes (0 when not even the weights do).
    pub fn max_ctx_within(&self, budget: u64) -> u64 {
        let room = budget.saturating_sub(self.fixed_bytes());
        (room / self.kv_bytes_per_token.max(1)).min(self.n_ctx_train)
    }
}

/// Bytes of a packed copy of a `rows × cols` matrix of type `ty`, or `None` where hearth does
/// not pack it on this CPU.
fn packed_bytes(ty: GgmlType, rows: u64, cols: u64) -> Option<u64> {
    // As engine::weights: HEARTH_NO_PACK (other than 0) turns packing off.
    let no_pack = std::env::var_os("HEARTH_NO_PACK").is_some_and(|v| !v.is_empty() && v != "0");
    if no_pack {
        return None;
    }
    let len = kernels::packed::PackedMatrix::packed_len(
        ty,
        usize::try_from(rows).ok()?,
        usize::try_from(cols).ok()?,
    )?;
    Some(len as u64)
}

/// The estimate for `file` at `n_ctx` positions.
pub fn estimate(file: &GgufFile, n_ctx: u64) -> anyhow::Result<Estimate> {
    let arch = file
        .get_str("general.architecture")?
        .ok_or_else(|| anyhow::anyhow!("the model has no general.architecture"))?
        .to_owned();
    // The engine's own reading of the hyperparameters (checked as it checks them).
    let c = engine::config::ModelConfig::from_gguf(file, &arch)?;
    let [n_embd, n_layer, n_head, n_head_kv, n_ff, head_dim, head_dim_v, n_ctx_train] = [
        c.n_embd,
        c.n_layer,
        c.n_head,
        c.n_head_kv,
        c.n_ff,
        c.head_dim,
        c.head_dim_v,
        c.n_ctx_train,
    ]
    .map(|v| v as u64);
    let tied = file.tensor("output.weight").is_none();
    // A token reads `used` of the `count` experts' matrices of each layer.
    let experts = |key: &str| file.get_u64(&format!("{arch}.{key}")).ok().flatten();
    let (expert_used, expert_count) = match (experts("expert_used_count"), experts("expert_count"))
    {
        (Some(u), Some(n)) if u > 0 && u <= n => (u, n),
        _ => (1, 1),
    };
    let mut n_vocab = 0;
    let mut weights_bytes = 0u64;
    let mut decode_read_bytes = 0u64;
    for t in file.tensors() {
        let rows: u64 = t.dims.iter().skip(1).product();
        let cols = t.dims.first().copied().unwrap_or(1);
        if t.name == "token_embd.weight" {
            n_vocab = rows;
            if !tied {
                // Only the rows of tokens seen are read: a few pages per thousand tokens.
                continue;
            }
        }
        let bytes = if t.dims.iter().filter(|&&d| d > 1).count() < 2 {
            // Norms and biases: dequantized to f32.
            t.n_elements() * 4
        } else {
            packed_bytes(t.ty, rows, cols).unwrap_or(t.n_bytes)
        };
        weights_bytes += bytes;
        decode_read_bytes += if t.name.contains("_exps") {
            bytes / expert_count * expert_used
        } else {
            bytes
        };
    }

    // Scratch of one batch (f32): x, xn, q, k, v, attention output, projection, gate, up; the
    // quantized activations; and the logits of the last token (projection and result).
    let q_row = n_head * head_dim;
    let kv_row = n_head_kv * (head_dim + head_dim_v);
    let scratch = BATCH * (2 * n_embd + 2 * q_row + kv_row + n_embd + 2 * n_ff) * 4;
    let acts = BATCH * n_ff * 2;
    let logits = 2 * n_vocab * 4;
    let compute_bytes = scratch + acts + logits;

    let n_merges = file
        .get_array("tokenizer.ggml.merges")
        .ok()
        .flatten()
        .map_or(0, |m| m.len() as u64);
    let overhead_bytes = BASE_OVERHEAD + n_vocab * PER_VOCAB_ENTRY + n_merges * PER_MERGE;
    let kv_bytes_per_token = 2 * n_layer * kv_row;
    let base = Estimate {
        arch,
        n_layer,
        n_embd,
        n_vocab,
        n_ctx_train,
        n_ctx: 0,
        file_bytes: file.file_size(),
        weights_bytes,
        decode_read_bytes,
        kv_bytes_per_token,
        kv_bytes: 0,
        compute_bytes,
        overhead_bytes,
        fixed_bytes: 0,
        total_bytes: 0,
    };
    Ok(base.at_ctx(n_ctx))
}

/// A rough estimate from a file size alone (a catalog model not yet in the store): the weights
/// taken as the file, no KV cache (its size needs the header).
pub fn from_size(size: u64) -> u64 {
    size + BASE_OVERHEAD + (size / 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed sizes are the kernels' record sizes: where this CPU packs a matrix, the
    /// estimate counts its records, else the file's bytes (mapped).
    #[test]
    fn packed_sizes_count_the_records() {
        for (ty, rows, cols, file_bytes, packed) in [
            (GgmlType::MXFP4, 64u64, 2048u64, 64 * 64 * 17, 64 * 64 * 17),
            (GgmlType::IQ4_XS, 16, 512, 16 * 2 * 136, 16 * 2 * 138),
            (GgmlType::Q4_K, 16, 512, 16 * 2 * 144, 16 * 2 * 144),
            (GgmlType::Q5_K, 16, 512, 16 * 2 * 176, 16 * 2 * 176),
            (GgmlType::Q6_K, 16, 512, 16 * 2 * 210, 16 * 2 * 210),
            (GgmlType::Q3_K, 16, 512, 16 * 2 * 110, 16 * 2 * 114),
            (GgmlType::Q2_K, 16, 512, 16 * 2 * 84, 16 * 2 * 84),
            (GgmlType::IQ4_NL, 16, 512, 16 * 16 * 18, 16 * 16 * 18),
        ] {
            assert_eq!(ty.bytes_for(rows * cols), Some(file_bytes), "{ty}");
            let want = kernels::packed::PackedMatrix::supported(ty, rows as usize, cols as usize)
                .then_some(packed);
            if std::env::var_os("HEARTH_NO_PACK").is_none() {
                assert_eq!(packed_bytes(ty, rows, cols), want, "{ty}");
            }
        }
        // Rows that do not fill a record are not packed (the file's bytes count).
        assert_eq!(packed_bytes(GgmlType::MXFP4, 12, 64), None);
    }
}

#[cfg(test)]
mod decode_read_tests {
    use super::*;

    fn open(rel: &str) -> GgufFile {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data")
            .join(rel);
        GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A dense model's token reads every resident weight; one of a mixture of experts reads
    /// only the used share of the expert matrices.
    #[test]
    fn a_token_reads_the_used_share_of_the_experts() {
        let dense = estimate(&open("arch/qwen2.gguf"), 64).unwrap();
        assert_eq!(dense.decode_read_bytes, dense.weights_bytes);
        let file = open("arch/qwen3moe.gguf");
        let moe = estimate(&file, 64).unwrap();
        let key = |k: &str| file.get_u64(&format!("qwen3moe.{k}")).unwrap().unwrap();
        let (used, count) = (key("expert_used_count"), key("expert_count"));
        assert!(used < count, "{used} of {count}");
        let experts: u64 = file
            .tensors()
            .iter()
            .filter(|t| t.name.contains("_exps"))
            .map(|t| {
                let rows: u64 = t.dims.iter().skip(1).product();
                packed_bytes(t.ty, rows, t.dims[0]).unwrap_or(t.n_bytes)
            })
            .sum();
        assert!(experts > 0);
        let unread = experts - experts / count * used;
        // Per tensor the share rounds down, so within a byte per expert tensor.
        let diff = moe.weights_bytes - moe.decode_read_bytes;
        assert!(diff.abs_diff(unread) <= 64, "{diff} vs {unread}");
    }
}
