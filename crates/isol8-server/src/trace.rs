//! [`Trace`]: the ids a request's failures are logged under (the server's own id, and
//! the client's `X-Request-Id`), assigned once per request and kept in its extensions;
//! and the `request` span ([`in_request_span`]) every request is served in.
//!
//! The `request` span (target `isol8_server::request`) has the fields `method`, `route`
//! (the matched route template, e.g. `/session/{id}`), `request_id` (the server's id: the
//! execution id a 5xx answer names, and the id of the execution the request runs),
//! `client_request_id` (the client's `X-Request-Id`, if any), `tenant` (recorded once the
//! key is checked) and `status` (recorded when the answer is ready). An execution's span
//! (`isol8::trace`) is its child.

use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

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

/// The middleware that serves every request inside its `request` span (see the module
/// docs) and logs one `request answered` line (info) with its status and duration.
pub async fn in_request_span(mut req: Request, next: Next) -> Response {
    let trace = Trace::of_request(&mut req);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str());
    let span = tracing::info_span!(
        target: "isol8_server::request",
        "request",
        method = %req.method(),
        route = %route,
        request_id = %trace.id,
        client_request_id = tracing::field::Empty,
        tenant = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    if let Some(id) = &trace.request_id {
        span.record("client_request_id", tracing::field::display(id));
    }
    let started = std::time::Instant::now();
    async move {
        let response = next.run(req).await;
        let status = response.status().as_u16();
        tracing::Span::current().record("status", status);
        tracing::info!(
            target: "isol8_server::request",
            status,
            duration_ms = started.elapsed().as_millis() as u64,
            "request answered"
        );
        response
    }
    .instrument(span)
    .await
}

/// Records the caller's tenant on the current `request` span.
pub(crate) fn record_tenant(tenant: &str) {
    tracing::Span::current().record("tenant", tracing::field::display(tenant));
}
