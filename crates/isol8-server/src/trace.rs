//! [`Trace`]: the ids a request's failures are logged under (the server's own id, and
//! the client's `X-Request-Id`), assigned once per request and kept in its extensions.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;

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
