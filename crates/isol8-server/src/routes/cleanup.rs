//! `POST /cleanup` (master key): stops every session, removes this server's leftover
//! containers (only its own, not other isol8 processes' on the same daemon) and, unless
//! the body says `"images": false`, isol8's images — the reference's default. Whatever
//! cannot be removed is counted and reported; the sweep goes on.

use std::sync::Arc;

use axum::extract::{Request, State};
use serde::{Deserialize, Serialize};

use crate::backend::Tally;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::extractors::optional_json;
use crate::state::AppState;
use crate::trace::Trace;

/// Body of `POST /cleanup` (optional: an empty body is `{}`).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "Cleanup")]
pub struct CleanupBody {
    /// Also remove isol8's images (the runtime images included: `isol8 setup` builds
    /// them again). Default `true`, as in the reference.
    #[serde(default)]
    pub images: Option<bool>,
}

/// Reply of `POST /cleanup`: what was removed, what could not be, and why.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CleanupReply {
    /// Always `true` (a sweep that could not run at all is an error answer).
    pub ok: bool,
    /// Sessions stopped (their containers with them).
    pub sessions: Tally,
    /// This server's other containers (its warm pool, leftovers) removed.
    pub containers: Tally,
    /// isol8's images removed; absent when the body said `"images": false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Tally>,
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
    let mut sessions = Tally::default();
    for ((tenant, id), s) in state.sessions.take_all_keyed().await {
        let what = if tenant == crate::caller::MASTER_TENANT {
            id
        } else {
            format!("{tenant}/{id}")
        };
        let outcome = s.engine.stop().await.map_err(|e| {
            let e = ApiError::engine(e, &trace);
            e.log();
            e.client_message()
        });
        sessions.count(&what, outcome);
    }
    let cleaned = state
        .engine()
        .cleanup(body.images.unwrap_or(true))
        .await
        .map_err(|e| ApiError::engine(e, &trace))?;
    Ok(axum::Json(CleanupReply {
        ok: true,
        sessions,
        containers: cleaned.containers,
        images: cleaned.images,
    }))
}
