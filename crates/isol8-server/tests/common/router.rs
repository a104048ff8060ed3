//! The router driven without a socket (`tower::ServiceExt::oneshot`): a server state on
//! the shared engine, and requests with or without the master key.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use isol8::EngineOptions;
use isol8_server::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

pub const KEY: &str = "test-master-key-0123456789";

pub async fn state() -> Arc<AppState> {
    let engine = isol8_testkit::engine(EngineOptions::default()).await;
    AppState::new(engine, EngineOptions::default(), KEY.into())
}

pub async fn call(state: &Arc<AppState>, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app(state.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, value)
}

pub fn post(path: &str, key: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post(path).header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(body.into()).expect("request")
}

pub fn get(path: &str, key: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request")
}

pub fn delete(path: &str, key: &str) -> Request<Body> {
    Request::delete(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request")
}
