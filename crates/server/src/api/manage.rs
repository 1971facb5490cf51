//! Ollama's model-management endpoints: show, pull, delete, copy.

use crate::AppState;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new()
}
