//! Extractors: [`ApiJson`] (JSON bodies whose rejections are JSON errors, within the
//! body timeout), [`optional_json`] (a body that may be empty), [`Trace`] (the ids a
//! failure is logged under) and [`Caller`] (who is calling, set by the auth middleware).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::auth::Caller;
use crate::error::{ApiError, AuthError, InputError};
use crate::state::AppState;

/// The header a client may name its request by; failures are logged with it.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The ids a request's failures are logged under: `id`, assigned by the server (the
/// "execution id" a 5xx answer names), and the client's `X-Request-Id`, if it sent a
/// usable one (1-128 visible ASCII characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Server-assigned, unique per request (a UUID).
    pub id: String,
    /// The client's own request id.
    pub request_id: Option<String>,
}

impl Trace {
    /// A new id, with the request id found in `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Trace {
        let request_id = headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string);
        Trace {
            id: uuid::Uuid::new_v4().to_string(),
            request_id,
        }
    }

    /// The request's trace: the one already assigned to it (by the auth middleware or
    /// an earlier extractor), else a new one, remembered for the rest of the request.
    pub fn of(parts: &mut Parts) -> Trace {
        if let Some(t) = parts.extensions.get::<Trace>() {
            return t.clone();
        }
        let t = Trace::from_headers(&parts.headers);
        parts.extensions.insert(t.clone());
        t
    }

    /// [`Trace::of`] for a whole request (in a middleware).
    pub fn of_request(req: &mut Request) -> Trace {
        if let Some(t) = req.extensions().get::<Trace>() {
            return t.clone();
        }
        let t = Trace::from_headers(req.headers());
        req.extensions_mut().insert(t.clone());
        t
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Trace {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Trace::of(parts))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    /// The caller the auth middleware identified; on a route without it (a bug), the
    /// request is refused as unauthenticated.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Auth(AuthError::MissingHeader))
    }
}

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
