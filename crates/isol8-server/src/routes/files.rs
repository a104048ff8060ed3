//! `POST /file` and `GET /file`: moving bytes into and out of a session's sandbox
//! (base64 in JSON). Paths lie below `/sandbox`, `/tmp` or `/dev/shm` (relative ones
//! are taken from `/sandbox`); the engine and the sandbox's agent refuse `..` escapes,
//! symlinks and FIFOs.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::error::{ApiError, InputError};
use crate::extractors::ApiJson;
use crate::routes::Done;
use crate::state::AppState;
use crate::trace::Trace;

/// Body of `POST /file`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "PutFile")]
pub struct PutFileBody {
    /// The session to write into (it must exist).
    pub session_id: String,
    /// Where: below `/sandbox`, `/tmp` or `/dev/shm`.
    pub path: String,
    /// The file's bytes, base64.
    #[schemars(extend("format" = "byte"))]
    pub content: String,
    /// The session's tenant (see `tenantId` of `POST /execute`).
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// Query of `GET /file`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetFileQuery {
    /// The session to read from (required: without it, 400 `Missing sessionId or path`).
    #[serde(default)]
    pub session_id: Option<String>,
    /// Which file: below `/sandbox`, `/tmp` or `/dev/shm` (required, as `sessionId`).
    #[serde(default)]
    pub path: Option<String>,
    /// The session's tenant (see `tenantId` of `POST /execute`).
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// Reply of `GET /file`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct FileContent {
    /// The file's bytes, base64.
    #[schemars(extend("format" = "byte"))]
    pub content: String,
}

/// `POST /file`: writes a file into the caller's session.
pub async fn put_file(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    ApiJson(body): ApiJson<PutFileBody>,
) -> Result<axum::Json<Done>, ApiError> {
    let content = base64::engine::general_purpose::STANDARD
        .decode(&body.content)
        .map_err(InputError::Base64)?;
    let (engine, _) = state
        .session(
            &caller,
            &body.session_id,
            body.tenant_id.as_deref(),
            None,
            &trace,
        )
        .await?;
    engine
        .put_file(&body.path, &content)
        .await
        .map_err(|e| ApiError::engine(e, &trace))?;
    Ok(Done::reply())
}

/// `GET /file`: reads a file from the caller's session.
pub async fn get_file(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    query: Result<Query<GetFileQuery>, QueryRejection>,
) -> Result<axum::Json<FileContent>, ApiError> {
    let Query(q) = query.map_err(|e| InputError::Rejected {
        status: StatusCode::BAD_REQUEST,
        message: e.body_text(),
    })?;
    let (Some(session_id), Some(path)) = (&q.session_id, &q.path) else {
        return Err(InputError::Rejected {
            status: StatusCode::BAD_REQUEST,
            message: "Missing sessionId or path".into(),
        }
        .into());
    };
    let (engine, _) = state
        .session(&caller, session_id, q.tenant_id.as_deref(), None, &trace)
        .await?;
    let bytes = engine
        .get_file(path)
        .await
        .map_err(|e| ApiError::engine(e, &trace))?;
    Ok(axum::Json(FileContent {
        content: base64::engine::general_purpose::STANDARD.encode(bytes),
    }))
}
