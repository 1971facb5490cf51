//! Request bodies and the range checks every number goes through. Numbers are read as JSON
//! numbers of any kind and checked here, so `-1`, `1e308` or `9223372036854775807` in any
//! field is a 400 naming that field, never a panic or a silent wrap.

use crate::error::ApiError;
use axum::extract::rejection::BytesRejection;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Number, Value};

/// Parses a JSON body; errors name the field (`options.top_k: invalid type: …`).
pub fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "the request has no body: expected JSON",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::invalid(&path, format!("{path}: {inner}"))
        }
    })
}

/// A request field that should hold a number: a JSON number, or any JSON value when the
/// field is read as such (fields of a `#[serde(flatten)]`ed struct are, so that a string
/// where a number goes is still refused with the field's name, which serde's own error
/// would lose).
pub trait NumberField {
    /// The number, or the value as it was written.
    fn number(&self) -> Result<&Number, String>;
}

impl NumberField for Number {
    fn number(&self) -> Result<&Number, String> {
        Ok(self)
    }
}

impl NumberField for Value {
    fn number(&self) -> Result<&Number, String> {
        match self {
            Value::Number(n) => Ok(n),
            other => Err(other.to_string()),
        }
    }
}

/// A float in `lo..=hi`.
pub fn float<N: NumberField + ?Sized>(
    param: &str,
    v: Option<&N>,
    lo: f64,
    hi: f64,
) -> Result<Option<f32>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let range = || format!("{param} must be a number between {lo} and {hi}");
    let n = v
        .number()
        .map_err(|got| ApiError::invalid(param, format!("{} (got {got})", range())))?;
    match n.as_f64() {
        Some(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(Some(x as f32)),
        _ => Err(ApiError::invalid(
            param,
            format!("{param} must be a number between {lo} and {hi} (got {n})"),
        )),
    }
}

/// An integer in `lo..=hi` (a float with no fraction is accepted).
pub fn int<N: NumberField + ?Sized>(
    param: &str,
    v: Option<&N>,
    lo: i64,
    hi: i64,
) -> Result<Option<i64>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let n = v.number().map_err(|got| {
        ApiError::invalid(
            param,
            format!("{param} must be an integer between {lo} and {hi} (got {got})"),
        )
    })?;
    let got = if let Some(i) = n.as_i64() {
        Some(i)
    } else if n.is_u64() {
        None
    } else {
        n.as_f64()
            .filter(|x| x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15)
            .map(|x| x as i64)
    };
    match got {
        Some(i) if (lo..=hi).contains(&i) => Ok(Some(i)),
        _ => Err(ApiError::invalid(
            param,
            format!("{param} must be an integer between {lo} and {hi} (got {n})"),
        )),
    }
}

/// A seed: any integer that fits 64 bits (negative ones are taken as their bits).
pub fn seed<N: NumberField + ?Sized>(param: &str, v: Option<&N>) -> Result<Option<u64>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let n = v.number().map_err(|got| {
        ApiError::invalid(param, format!("{param} must be an integer (got {got})"))
    })?;
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    if let Some(i) = n.as_i64() {
        return Ok(Some(i as u64));
    }
    Err(ApiError::invalid(
        param,
        format!("{param} must be an integer (got {n})"),
    ))
}

/// Most entries in a `logit_bias` map.
pub const MAX_LOGIT_BIAS: usize = 1024;

/// OpenAI's `logit_bias`: an object from token ids (strings of digits) to a bias between
/// -100 and 100, added to that token's logit.
pub fn logit_bias(param: &str, v: Option<&Value>) -> Result<Vec<(u32, f32)>, ApiError> {
    let map = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(ApiError::invalid(
                param,
                format!("{param} must be an object from token ids to numbers (got {other})"),
            ))
        }
    };
    if map.len() > MAX_LOGIT_BIAS {
        return Err(ApiError::invalid(
            param,
            format!(
                "{param} may hold at most {MAX_LOGIT_BIAS} tokens (got {})",
                map.len()
            ),
        ));
    }
    map.iter()
        .map(|(k, v)| {
            let id = k.parse::<u32>().map_err(|_| {
                ApiError::invalid(
                    param,
                    format!("{param} keys must be token ids such as \"1234\" (got {k:?})"),
                )
            })?;
            let field = format!("{param}[{k:?}]");
            let bias = float(&field, Some(v), -100.0, 100.0)?.unwrap_or(0.0);
            Ok((id, bias))
        })
        .collect()
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

pub const MAX_STOP: usize = 16;
const MAX_STOP_BYTES: usize = 1024;

pub fn stop_list(param: &str, stop: Option<Stop>) -> Result<Vec<String>, ApiError> {
    let list = match stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if list.len() > MAX_STOP {
        return Err(ApiError::invalid(
            param,
            format!(
                "{param} may hold at most {MAX_STOP} strings (got {})",
                list.len()
            ),
        ));
    }
    if list.iter().any(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::invalid(
            param,
            format!("each {param} string must be at most {MAX_STOP_BYTES} bytes"),
        ));
    }
    Ok(list.into_iter().filter(|s| !s.is_empty()).collect())
}

/// Sampler settings as a request states them (unset ones keep the model's preset or the
/// engine's default).
#[derive(Debug, Clone, Default)]
pub struct SamplerRequest {
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub typical_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    /// -1 (Ollama) means the whole context.
    pub repeat_last_n: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<u64>,
    /// Token id → bias added to its logit (OpenAI's `logit_bias`).
    pub logit_bias: Vec<(u32, f32)>,
}

/// The largest token count any request may name (context, predictions, penalties window).
pub const MAX_TOKENS_LIMIT: i64 = 1 << 20;

/// A list of token ids: each an integer from 0 to 2^32 - 1 (the model's vocabulary is
/// checked where the model is loaded); the first bad one is named `param[i]`.
pub fn token_ids(param: &str, list: &[Value]) -> Result<Vec<u32>, ApiError> {
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let field = format!("{param}[{i}]");
            let id = int(&field, Some(v), 0, i64::from(u32::MAX))?.unwrap_or(0);
            Ok(id as u32)
        })
        .collect()
}
