//! The route handlers, one module per route group; the router module puts them together.

pub mod cleanup;
pub mod execute;
pub mod files;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod sessions;

use serde::Serialize;

/// Largest request body accepted (files travel base64 inside JSON).
pub const MAX_BODY_BYTES: usize = 48 << 20;

/// `{"ok": true}`: the reply of routes that only succeed.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Done {
    /// Always `true`.
    pub ok: bool,
}

impl Done {
    /// `{"ok": true}`.
    pub fn reply() -> axum::Json<Done> {
        axum::Json(Done { ok: true })
    }
}
