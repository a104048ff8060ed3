//! `GET /sessions` and `DELETE /session/{id}`: a database key sees and deletes its
//! tenant's sessions, the master key every tenant's (see [`crate::sessions`]).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::error::{ApiError, InputError};
use crate::routes::Done;
use crate::state::AppState;
use crate::trace::Trace;

/// One entry of `GET /sessions`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// The session's id.
    pub id: String,
    /// The tenant it belongs to (an isol8 addition; the master key sees every tenant's).
    pub tenant_id: String,
    /// True while an execution runs in it.
    pub is_active: bool,
    /// Last use, RFC 3339 with milliseconds, UTC.
    pub last_accessed_at: String,
}

/// Reply of `GET /sessions`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SessionList {
    /// The sessions the caller sees, by tenant and id.
    pub sessions: Vec<SessionInfo>,
}

/// Query of `DELETE /session/{id}`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionQuery {
    /// The session's tenant (see `tenantId` of `POST /execute`).
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// `GET /sessions`.
pub async fn list_sessions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> axum::Json<SessionList> {
    let sessions = state
        .sessions
        .list(&caller)
        .await
        .into_iter()
        .map(|s| SessionInfo {
            id: s.id,
            tenant_id: s.tenant,
            is_active: s.is_active,
            last_accessed_at: s
                .last_accessed
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
        .collect();
    axum::Json(SessionList { sessions })
}

/// `DELETE /session/{id}`: stops the session the caller addresses; idempotent
/// (deleting a session that does not exist is fine).
pub async fn delete_session(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    Path(id): Path<String>,
    query: Result<Query<SessionQuery>, QueryRejection>,
) -> Result<axum::Json<Done>, ApiError> {
    let Query(q) = query.map_err(|e| InputError::Rejected {
        status: StatusCode::BAD_REQUEST,
        message: e.body_text(),
    })?;
    let removed = state
        .sessions
        .remove(&caller, &id, q.tenant_id.as_deref())
        .await?;
    if let Some(s) = removed {
        s.engine
            .stop()
            .await
            .map_err(|e| ApiError::engine(e, &trace))?;
    }
    Ok(Done::reply())
}
