//! `GET /health`: liveness and version, without a key (as is `GET /openapi.json`,
//! served by the OpenAPI module).

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
