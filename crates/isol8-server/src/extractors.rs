//! Extractors of request bodies: [`ApiJson`] (JSON bodies whose rejections are JSON
//! errors, within the body timeout) and [`optional_json`] (a body that may be empty).
//! The request's ids are [`crate::trace::Trace`] and its caller [`crate::caller::Caller`].

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, InputError};
use crate::state::AppState;

/// `Json` whose rejections (malformed JSON, wrong types, missing fields, too large) are
/// JSON errors with the right status; a body not received within the server's body
/// timeout is a 408.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// The status of a rejected JSON body: 413 and 415 as they are, everything else 400.
fn rejected(rejection: JsonRejection) -> ApiError {
    let status = match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    InputError::Rejected {
        status,
        message: rejection.body_text(),
    }
    .into()
}

impl<T> FromRequest<Arc<AppState>> for ApiJson<T>
where
    axum::Json<T>: FromRequest<Arc<AppState>, Rejection = JsonRejection>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let limit = state.body_timeout();
        let parsed = tokio::time::timeout(limit, axum::Json::<T>::from_request(req, state))
            .await
            .map_err(|_| InputError::BodyTimeout(limit))?;
        parsed.map(|axum::Json(v)| ApiJson(v)).map_err(rejected)
    }
}

/// A JSON body that may be left out: an empty (or all-whitespace) body is `T::default()`
/// (`{}`), whatever its content type; otherwise it must parse as `T`. Read within the
/// server's body timeout.
pub async fn optional_json<T: DeserializeOwned + Default>(
    req: Request,
    state: &Arc<AppState>,
) -> Result<T, ApiError> {
    let limit = state.body_timeout();
    let bytes = tokio::time::timeout(limit, axum::body::Bytes::from_request(req, state))
        .await
        .map_err(|_| InputError::BodyTimeout(limit))?
        .map_err(|e| InputError::Rejected {
            status: e.status(),
            message: e.body_text(),
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        InputError::Rejected {
            status: StatusCode::BAD_REQUEST,
            message: e.to_string(),
        }
        .into()
    })
}
