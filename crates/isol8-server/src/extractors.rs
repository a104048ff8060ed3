//! Extractors of request bodies: [`ApiJson`] (a JSON body, whatever its content type,
//! whose rejections are JSON errors, within the body timeout) and [`optional_json`] (a
//! body that may be empty). The request's ids are [`crate::trace::Trace`] and its caller
//! [`crate::caller::Caller`].

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, InputError};
use crate::state::AppState;

/// A JSON body, read as the reference server reads it: whatever the `Content-Type` (a
/// client that sends none, or `text/plain`, is served). Malformed JSON and wrong or
/// missing fields are 400 (naming the field's path), a body over the size limit 413,
/// and a body not received within the server's body timeout 408.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The whole body, within the server's body timeout and size limit.
async fn read_body(req: Request, state: &Arc<AppState>) -> Result<axum::body::Bytes, ApiError> {
    let limit = state.body_timeout();
    let bytes = tokio::time::timeout(limit, axum::body::Bytes::from_request(req, state))
        .await
        .map_err(|_| InputError::BodyTimeout(limit))?
        .map_err(|e| InputError::Rejected {
            status: match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            },
            message: e.body_text(),
        })?;
    Ok(bytes)
}

/// `bytes` as a `T`: 400 with the parser's reason, prefixed by the path of the field it
/// concerns (`request.runtime: invalid type…`).
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let rejected = |message: String| -> ApiError {
        InputError::Rejected {
            status: StatusCode::BAD_REQUEST,
            message,
        }
        .into()
    };
    let not_json = |e: serde_json::Error| format!("the request body is not valid JSON: {e}");
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        rejected(match inner.classify() {
            serde_json::error::Category::Data if path != "." => format!("{path}: {inner}"),
            serde_json::error::Category::Data => inner.to_string(),
            _ => not_json(inner),
        })
    })?;
    // Trailing characters after the value.
    de.end().map_err(|e| rejected(not_json(e)))?;
    Ok(value)
}

/// A JSON body that may be left out: an empty (or all-whitespace) body is `T::default()`
/// (`{}`), whatever its content type; otherwise it must parse as `T`. Read within the
/// server's body timeout.
pub async fn optional_json<T: DeserializeOwned + Default>(
    req: Request,
    state: &Arc<AppState>,
) -> Result<T, ApiError> {
    let bytes = read_body(req, state).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&bytes)
}
