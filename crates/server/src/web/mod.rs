//! The web chat page served at `/`, its assets embedded in the binary.

use crate::AppState;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new().route("/", axum::routing::get(|| async { "hearth is running" }))
}
