//! Hyperparameters read from a model's `<arch>.*` metadata.

use crate::error::EngineError;
use gguf::GgufFile;

/// What every architecture shares. Architecture files read their own extras.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: String,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Dimension of each query/key head.
    pub head_dim: usize,
    /// Dimension of each value head.
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub rope_dims: usize,
    pub sliding_window: Option<usize>,
    /// `<arch>.attention.layer_norm_epsilon` (LayerNorm models), when present.
    pub norm_eps: Option<f32>,
    /// How an embedding is made from the final hidden states (`<arch>.pooling_type`).
    pub pooling: Pooling,
}

/// How a sequence's final hidden states become one embedding: llama.cpp's
/// `llama_pooling_type`, the values of `<arch>.pooling_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// 0: not specified by the model (hearth then takes the mean, as for decoders).
    None,
    /// 1: the mean over the tokens.
    Mean,
    /// 2: the first token's state ([CLS]).
    Cls,
    /// 3: the last token's state.
    Last,
}

impl Pooling {
    fn from_type(key: String, v: Option<u64>) -> Result<Pooling, EngineError> {
        match v {
            None | Some(0) => Ok(Pooling::None),
            Some(1) => Ok(Pooling::Mean),
            Some(2) => Ok(Pooling::Cls),
            Some(3) => Ok(Pooling::Last),
            Some(4) => Err(EngineError::BadHyperparameter {
                key,
                value: "4 (rank)".into(),
                why: "reranking models (a classifier head on the pooled state) are not supported"
                    .into(),
            }),
            Some(v) => Err(EngineError::BadHyperparameter {
                key,
                value: v.to_string(),
                why: "pooling types are 0 (none), 1 (mean), 2 (cls), 3 (last) and 4 (rank)".into(),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pooling::None => "none",
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        }
    }
}

/// Typed access to `<arch>.<key>` with errors that name the key.
pub struct Hparams<'a> {
    file: &'a GgufFile,
    arch: &'a str,
}

/// Upper bound on any size hyperparameter: far beyond real models, low enough that products
/// of two of them cannot overflow or allocate absurdly.
const MAX_DIM: u64 = 1 << 20;

impl<'a> Hparams<'a> {
    pub fn new(file: &'a GgufFile, arch: &'a str) -> Self {
        Hparams { file, arch }
    }

    /// The full metadata key `<arch>.<name>`.
    pub fn key(&self, name: &str) -> String {
        format!("{}.{}", self.arch, name)
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<String>, EngineError> {
        Ok(self.file.get_str(&self.key(name))?.map(str::to_string))
    }

    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, EngineError> {
        Ok(self.file.get_bool(&self.key(name))?)
    }

    /// A count that may be 0 (expert counts, layer steps), bounded like the sizes.
    pub fn opt_count(&self, name: &str) -> Result<Option<usize>, EngineError> {
        let key = self.key(name);
        match self.file.get_u64(&key)? {
            Some(v) if v > MAX_DIM => Err(EngineError::BadHyperparameter {
                key,
                value: v.to_string(),
                why: format!("must be at most {MAX_DIM}"),
            }),
            other => Ok(other.map(|v| v as usize)),
        }
    }

    /// A positive finite scale (multipliers, caps), when present.
    pub fn opt_positive(&self, name: &str) -> Result<Option<f32>, EngineError> {
        match self.opt_f32(name)? {
            Some(v) if v <= 0.0 => Err(EngineError::BadHyperparameter {
                key: self.key(name),
                value: v.to_string(),
                why: "must be positive".into(),
            }),
            other => Ok(other),
        }
    }

    pub fn opt_usize(&self, name: &str) -> Result<Option<usize>, EngineError> {
        let key = self.key(name);
        match self.file.get_u64(&key)? {
            None => Ok(None),
            Some(v) if v == 0 || v > MAX_DIM => Err(EngineError::BadHyperparameter {
                key,
                value: v.to_string(),
                why: format!("must be between 1 and {MAX_DIM}"),
            }),
            Some(v) => Ok(Some(v as usize)),
        }
    }

    pub fn usize(&self, name: &str) -> Result<usize, EngineError> {
        self.opt_usize(name)?
            .ok_or_else(|| EngineError::MissingHyperparameter {
                arch: self.arch.to_string(),
                key: self.key(name),
            })
    }

    pub fn opt_f32(&self, name: &str) -> Result<Option<f32>, EngineError> {
        let key = self.key(name);
        match self.file.get_f32(&key)? {
            Some(v) if !v.is_finite() => Err(EngineError::BadHyperparameter {
                key,
                value: v.to_string(),
                why: "must be a finite number".into(),
            }),
            other => Ok(other),
        }
    }

    pub fn f32(&self, name: &str) -> Result<f32, EngineError> {
        self.opt_f32(name)?
            .ok_or_else(|| EngineError::MissingHyperparameter {
                arch: self.arch.to_string(),
                key: self.key(name),
            })
    }
}

impl ModelConfig {
    /// Reads the hyperparameters every architecture has, with llama.cpp's defaults where a
    /// key is optional.
    pub fn from_gguf(file: &GgufFile, arch: &str) -> Result<ModelConfig, EngineError> {
        let hp = Hparams::new(file, arch);
        let n_embd = hp.usize("embedding_length")?;
        let n_head = hp.usize("attention.head_count")?;
        let n_head_kv = hp.opt_usize("attention.head_count_kv")?.unwrap_or(n_head);
        let head_dim = match hp.opt_usize("attention.key_length")? {
            Some(d) => d,
            None => {
                if n_embd % n_head != 0 {
                    return Err(bad(
                        &format!("{arch}.attention.head_count"),
                        n_head,
                        "embedding_length must be a multiple of head_count",
                    ));
                }
                n_embd / n_head
            }
        };
        let head_dim_v = hp.opt_usize("attention.value_length")?.unwrap_or(head_dim);
        let max = crate::blocks::MAX_HEAD_DIM;
        if head_dim > max || head_dim_v > max {
            return Err(bad(
                &format!("{arch}.attention.key_length"),
                head_dim.max(head_dim_v),
                &format!("head dimensions above {max} are not supported"),
            ));
        }
        if n_head % n_head_kv != 0 {
            return Err(bad(
                &format!("{arch}.attention.head_count_kv"),
                n_head_kv,
                "head_count must be a multiple of head_count_kv",
            ));
        }
        let rope_dims = hp.opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(bad(
                &format!("{arch}.rope.dimension_count"),
                rope_dims,
                "must be even and at most the head dimension",
            ));
        }
        let rms_eps = hp
            .opt_f32("attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-5);
        Ok(ModelConfig {
            arch: arch.to_string(),
            n_embd,
            n_layer: hp.usize("block_count")?,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_ff: hp.usize("feed_forward_length")?,
            n_ctx_train: hp.opt_usize("context_length")?.unwrap_or(2048),
            rms_eps,
            rope_base: hp.opt_f32("rope.freq_base")?.unwrap_or(10000.0),
            rope_dims,
            sliding_window: hp.opt_usize("attention.sliding_window")?,
            norm_eps: hp.opt_f32("attention.layer_norm_epsilon")?,
            pooling: Pooling::from_type(
                hp.key("pooling_type"),
                file.get_u64(&hp.key("pooling_type"))?,
            )?,
        })
    }
}

fn bad(key: &str, value: usize, why: &str) -> EngineError {
    EngineError::BadHyperparameter {
        key: key.to_string(),
        value: value.to_string(),
        why: why.to_string(),
    }
}
