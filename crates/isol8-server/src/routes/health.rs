//! `GET /health` and `GET /openapi.json`: the two routes that need no key.

use serde::Serialize;

/// Server version reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The reply of `GET /health`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
    /// The server's version.
    pub version: &'static str,
}

/// `GET /health`: liveness and version.
pub async fn health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok",
        version: VERSION,
    })
}

/// `GET /openapi.json`: the OpenAPI document ([`crate::openapi::document`]).
pub async fn openapi() -> axum::Json<serde_json::Value> {
    axum::Json(crate::openapi::document().clone())
}
