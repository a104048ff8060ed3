//! The router ([`app`]), separate from any socket so tests drive it with
//! `tower::ServiceExt::oneshot`, and one module per route group.

pub mod cleanup;
pub mod execute;
pub mod files;
pub mod health;
pub mod keys;
pub mod sessions;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::Serialize;

use crate::auth::require_key;
use crate::error::ApiError;
use crate::state::AppState;

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

/// The router of the isol8 API.
pub fn app(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/execute", post(execute::execute))
        .route("/execute/stream", post(execute::execute_stream))
        .route("/execute/ws", get(execute::execute_ws))
        .route("/file", post(files::put_file).get(files::get_file))
        .route("/sessions", get(sessions::list_sessions))
        .route("/session/{id}", delete(sessions::delete_session))
        .route("/cleanup", post(cleanup::cleanup))
        .route("/auth/keys", post(keys::create_key).get(keys::list_keys))
        .route("/auth/keys/{id}", delete(keys::revoke_key))
        .route("/auth/login", post(keys::login))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/health", get(health::health))
        .route("/openapi.json", get(health::openapi))
        .merge(protected)
        .fallback(|| async { ApiError::NoRoute })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_when_draining,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// While the server drains for shutdown, every request (health checks included, so load
/// balancers move away) gets 503 with `Retry-After`.
async fn refuse_when_draining(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if state.is_draining() {
        return ApiError::ShuttingDown.into_response();
    }
    next.run(req).await
}
