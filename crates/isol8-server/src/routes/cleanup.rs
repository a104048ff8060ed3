//! `POST /cleanup` (master key): stops every session and removes this server's
//! containers (only its own), and with `images` isol8's images.

use std::sync::Arc;

use axum::extract::{Request, State};
use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::extractors::optional_json;
use crate::state::AppState;
use crate::trace::Trace;

/// Body of `POST /cleanup` (optional: an empty body is `{}`).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "Cleanup")]
pub struct CleanupBody {
    /// Also remove isol8's images.
    #[serde(default)]
    pub images: bool,
}

/// Reply of `POST /cleanup`: what was removed.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CleanupReply {
    /// Containers removed (the sessions' included).
    pub containers: usize,
    /// Images removed.
    pub images: usize,
}

/// `POST /cleanup`.
pub async fn cleanup(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    req: Request,
) -> Result<axum::Json<CleanupReply>, ApiError> {
    caller.require_master()?;
    let body: CleanupBody = optional_json(req, &state).await?;
    let engine_error = |e| ApiError::engine(e, &trace);
    let mut containers = 0;
    for s in state.sessions.take_all().await {
        containers += s.engine.live_containers().len();
        s.engine.stop().await.map_err(engine_error)?;
    }
    let removed = state
        .engine()
        .cleanup(body.images)
        .await
        .map_err(engine_error)?;
    Ok(axum::Json(CleanupReply {
        containers: containers + removed.containers,
        images: removed.images,
    }))
}
