//! The router's tests without Docker: the whole server ([`crate::app`] over
//! [`AppState`]) on an in-memory fake backend ([`fake`]), driven with
//! `tower::ServiceExt::oneshot` or, for WebSockets, over a loopback socket. They run
//! (not skip) on a machine with no Docker daemon.

mod audit;
mod auth;
mod compat;
mod errors;
mod fake;
mod metrics;
mod openapi;
mod policy;
mod router;
mod sessions;
mod stream;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use isol8::EngineOptions;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{app, AppState, ServerSettings};
use fake::{Fake, FakeRef};

/// The fake servers' master key.
pub(crate) const KEY: &str = "fake-master-key-0123456789";

/// A server over a fake backend, and the fake.
pub(crate) struct Server {
    pub(crate) state: Arc<AppState>,
    pub(crate) fake: Arc<Fake>,
}

/// A server with default options and settings.
pub(crate) fn server() -> Server {
    server_with(EngineOptions::default(), ServerSettings::default())
}

/// A server whose operator options are `options`.
pub(crate) fn server_with(options: EngineOptions, settings: ServerSettings) -> Server {
    let fake = Fake::new(options.clone());
    let state = AppState::with_backend(
        Arc::new(FakeRef(fake.clone())),
        options,
        KEY.into(),
        settings,
    );
    Server { state, fake }
}

/// Sends `req` through the router: status, headers and the body as JSON (or
/// `{"raw": text}`).
pub(crate) async fn call_full(
    state: &Arc<AppState>,
    req: Request<Body>,
) -> (StatusCode, HeaderMap, Value) {
    let resp = app(state.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, headers, value)
}

/// [`call_full`] without the headers.
pub(crate) async fn call(state: &Arc<AppState>, req: Request<Body>) -> (StatusCode, Value) {
    let (status, _, value) = call_full(state, req).await;
    (status, value)
}

/// A JSON `POST`, with a key when given.
pub(crate) fn post(path: &str, key: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post(path).header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(body.into()).expect("request")
}

/// A `GET` with a key.
pub(crate) fn get(path: &str, key: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request")
}

/// A `DELETE` with a key.
pub(crate) fn delete(path: &str, key: &str) -> Request<Body> {
    Request::delete(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request")
}

/// `POST /execute` of a bash script (the fake's language), in a session if given.
pub(crate) fn execute(key: &str, code: &str, session: Option<&str>) -> Request<Body> {
    let mut body = json!({"request": {"runtime": "bash", "code": code}});
    if let Some(s) = session {
        body["sessionId"] = json!(s);
    }
    post("/execute", Some(key), body.to_string())
}

/// The `error` of a JSON error answer.
pub(crate) fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {v}"))
}

/// The `Retry-After` seconds of an answer.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Waits (bounded) until `f` holds.
pub(crate) async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
