//! Helpers of the load and fault tests: bounded engines, a server that allows long runs,
//! requests through the router with their `Retry-After`, and a server on a loopback port
//! with WebSocket clients.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use isol8::docker::EngineConfig;
use isol8::{DockerEngine, EngineOptions};
use isol8_server::{app, AppState, ServerSettings};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceExt;

pub const KEY: &str = "load-test-master-key-0123456789";

/// A shared engine bounded to `max` concurrent executions.
pub async fn bounded(max: usize) -> DockerEngine {
    isol8_testkit::engine_with(EngineConfig {
        max_concurrent: Some(max),
        ..Default::default()
    })
    .await
}

/// Server state whose operator allows runs of up to 120 s (these tests ask for long
/// timeouts so that only what they test ends a run; the server's own default, 30 s, is
/// otherwise the cap).
pub fn long_runs(engine: DockerEngine) -> Arc<AppState> {
    AppState::with_settings(
        engine,
        EngineOptions::default(),
        KEY.into(),
        ServerSettings {
            policy: isol8::config::ServerPolicy {
                max_timeout_ms: Some(120_000),
                ..Default::default()
            },
            ..Default::default()
        },
    )
}

/// Status, `Retry-After` and JSON body of a request through the router.
pub async fn call(
    state: &Arc<AppState>,
    req: Request<Body>,
) -> (StatusCode, Option<String>, Value) {
    let resp = app(state.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, retry, value)
}

pub fn post(path: &str, key: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::from(body.to_string()))
        .expect("request")
}

pub fn get(path: &str, key: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request")
}

/// `POST /execute` of bash `code` (in session `session`, if any) with `timeout_ms`.
pub fn execute(code: &str, session: Option<&str>, timeout_ms: u64) -> Request<Body> {
    let mut body = json!({"request": {"runtime": "bash", "code": code, "timeoutMs": timeout_ms}});
    if let Some(id) = session {
        body["sessionId"] = json!(id);
    }
    post("/execute", KEY, body)
}

/// Serves `state` on a loopback port.
pub async fn serve_state(state: Arc<AppState>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let router = app(state);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, task)
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect_ws(addr: &str) -> Ws {
    let mut req = format!("ws://{addr}/execute/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {KEY}").parse().expect("header"),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .expect("connect")
        .0
}

/// Reads events until the server closes (at most 60 s); returns them and the close code.
pub async fn drain_ws(ws: &mut Ws) -> (Vec<Value>, Option<u16>) {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut events = Vec::new();
        while let Some(msg) = ws.next().await {
            match msg.expect("message") {
                Message::Text(t) => events.push(serde_json::from_str(&t).expect("event JSON")),
                Message::Close(frame) => return (events, frame.map(|f| u16::from(f.code))),
                _ => {}
            }
        }
        (events, None)
    })
    .await
    .expect("the socket must close, not hang")
}
