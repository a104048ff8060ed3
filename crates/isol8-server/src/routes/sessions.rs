//! `GET /sessions` (the caller's tenant's sessions) and `DELETE /session/{id}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde::Serialize;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::routes::Done;
use crate::state::AppState;
use crate::trace::Trace;

/// One entry of `GET /sessions`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// The session's id.
    pub id: String,
    /// True while an execution runs in it.
    pub is_active: bool,
    /// Last use, RFC 3339 with milliseconds, UTC.
    pub last_accessed_at: String,
}

/// Reply of `GET /sessions`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SessionList {
    /// The caller's tenant's sessions, by id.
    pub sessions: Vec<SessionInfo>,
}

/// `GET /sessions`.
pub async fn list_sessions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> axum::Json<SessionList> {
    let sessions = state
        .sessions
        .list(&caller.tenant)
        .await
        .into_iter()
        .map(|s| SessionInfo {
            id: s.id,
            is_active: s.is_active,
            last_accessed_at: s
                .last_accessed
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
        .collect();
    axum::Json(SessionList { sessions })
}

/// `DELETE /session/{id}`: stops the caller's session; idempotent (deleting a session
/// that does not exist is fine).
pub async fn delete_session(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    Path(id): Path<String>,
) -> Result<axum::Json<Done>, ApiError> {
    if let Some(s) = state.sessions.remove(&caller.tenant, &id).await {
        s.engine
            .stop()
            .await
            .map_err(|e| ApiError::engine(e, &trace))?;
    }
    Ok(Done::reply())
}
