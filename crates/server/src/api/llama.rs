//! llama.cpp server's tokenizer endpoints, with a `model` field (hearth serves many):
//! `POST /tokenize` and `POST /detokenize`. Both run on the inference thread with the model
//! loaded, as a generation would load it.

use super::on_model;
use crate::error::{ApiError, OpenAiError};
use crate::params::{parse_body, token_ids};
use crate::worker::check_ids;
use crate::AppState;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
}

#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    model: String,
    content: String,
    /// Add the model's BOS (and EOS when it asks for one), as a prompt gets them.
    #[serde(default)]
    add_special: bool,
    /// Read control-token text (`<|im_start|>`) as those tokens.
    #[serde(default = "yes")]
    parse_special: bool,
    /// Each id with its text.
    #[serde(default)]
    with_pieces: bool,
}

fn yes() -> bool {
    true
}

/// `POST /tokenize`: `{tokens: [ids]}`, or with `with_pieces`, `{tokens: [{id, piece}]}`
/// where a piece that is not whole UTF-8 (a byte of a longer character) is a list of bytes.
async fn tokenize(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let req: TokenizeRequest = parse_body(body)?;
    let TokenizeRequest {
        model,
        content,
        add_special,
        parse_special,
        with_pieces,
    } = req;
    let tokens = on_model(&state, &model, move |m| {
        let tok = m.tokenizer();
        let ids = tok.encode(&content, add_special, parse_special);
        Ok(if with_pieces {
            ids.iter()
                .map(|&id| {
                    let bytes = tok.token_bytes(id, true);
                    let piece = match String::from_utf8(bytes) {
                        Ok(s) => json!(s),
                        Err(e) => json!(e.into_bytes()),
                    };
                    json!({"id": id, "piece": piece})
                })
                .collect::<Vec<Value>>()
        } else {
            ids.into_iter().map(Value::from).collect()
        })
    })
    .await?;
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

#[derive(Debug, Deserialize)]
struct DetokenizeRequest {
    model: String,
    tokens: Vec<Value>,
}

/// `POST /detokenize`: `{content}`, the ids' text (control tokens written out).
async fn detokenize(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let req: DetokenizeRequest = parse_body(body)?;
    let ids = token_ids("tokens", &req.tokens)?;
    let content = on_model(&state, &req.model, move |m| {
        check_ids(m, &ids, "tokens")?;
        Ok::<_, ApiError>(m.tokenizer().decode(&ids, true))
    })
    .await?;
    Ok(Json(json!({ "content": content })).into_response())
}
