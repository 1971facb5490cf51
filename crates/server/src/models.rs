//! Where models come from: a small trait so the server does not care whether a name is a
//! file or a store entry. The server never pulls: a missing model is a 404.

use crate::error::ApiError;
use axum::http::StatusCode;
use std::path::{Path, PathBuf};

/// A model ready to load, with what a preset adds.
#[derive(Debug, Clone)]
pub struct ModelRef {
    /// The name the client used.
    pub name: String,
    pub path: PathBuf,
    /// A preset's system prompt, used when a chat has none.
    pub system: Option<String>,
    pub params: store::Params,
}

/// One row of `/api/tags` and `/v1/models`.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub name: String,
    pub size: u64,
    pub digest: String,
    /// RFC 3339.
    pub modified: String,
}

pub trait ModelSource: Send + Sync + 'static {
    fn resolve(&self, name: &str) -> Result<ModelRef, ApiError>;
    fn list(&self) -> Result<Vec<ModelEntry>, ApiError>;
}

/// Models by store name (`HEARTH_HOME`), or a GGUF file by path.
pub struct StoreModels;

fn not_found(name: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("model {name:?} not found ({why}); pull it first with `hearth pull {name}`"),
    )
    .with_code("model_not_found")
}

impl ModelSource for StoreModels {
    fn resolve(&self, name: &str) -> Result<ModelRef, ApiError> {
        if name.is_empty() {
            return Err(ApiError::invalid("model", "model is required"));
        }
        if Path::new(name).is_file() {
            return Ok(ModelRef {
                name: name.to_string(),
                path: PathBuf::from(name),
                system: None,
                params: store::Params::default(),
            });
        }
        let parsed = store::ModelName::parse(name).map_err(|e| not_found(name, e))?;
        let store = store::Store::open_default().map_err(|e| ApiError::internal(e.to_string()))?;
        match store.resolve(&parsed) {
            Ok(Some(r)) => Ok(ModelRef {
                name: name.to_string(),
                path: r.path,
                system: r.system,
                params: r.params,
            }),
            Ok(None) => Err(not_found(name, "not in the store")),
            Err(e) => Err(not_found(name, e)),
        }
    }

    fn list(&self) -> Result<Vec<ModelEntry>, ApiError> {
        let store = store::Store::open_default().map_err(|e| ApiError::internal(e.to_string()))?;
        let entries = store
            .list()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                let (m, _) = e.model.ok()?;
                Some(ModelEntry {
                    name: m.name.to_string(),
                    size: m.size,
                    digest: m.digest.to_string(),
                    modified: m.modified,
                })
            })
            .collect())
    }
}
