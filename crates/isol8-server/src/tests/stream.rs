//! Server-sent events and WebSocket framing over the fake: events out, stdin and
//! signals in, close codes, and a lost sandbox said without internals.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceExt;

use super::{post, server, KEY};
use crate::{app, AppState};

/// The `data:` events of an SSE answer, and its content type.
async fn sse(state: &Arc<AppState>, code: &str) -> (StatusCode, String, Vec<Value>) {
    let body = json!({"request": {"runtime": "bash", "code": code}}).to_string();
    let resp = app(state.clone())
        .oneshot(post("/execute/stream", Some(KEY), body))
        .await
        .expect("response");
    let status = resp.status();
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
    let events = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect();
    (status, kind, events)
}

#[tokio::test]
async fn execute_stream_sends_one_data_line_per_event_ending_with_exit() {
    let s = server();
    let (status, kind, events) = sse(&s.state, "echo one\nerr two\nexit 3").await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::OK, "text/event-stream")
    );
    assert_eq!(
        events,
        [
            json!({"type": "stdout", "data": "one\n", "phase": "code"}),
            json!({"type": "stderr", "data": "two\n", "phase": "code"}),
            json!({"type": "exit", "data": "3", "phase": "code"}),
        ]
    );
}

#[tokio::test]
async fn a_lost_sandbox_ends_the_stream_with_an_error_and_no_exit_or_internals() {
    let s = server();
    let (status, _, events) = sse(&s.state, "echo partial\nlose").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events.len(), 2, "{events:?}");
    let last = &events[1];
    assert_eq!(last["type"], "error");
    let data = last["data"].as_str().expect("data");
    assert!(data.starts_with("sandbox lost: "), "{data}");
    assert!(data.contains("(execution "), "{data}");
    assert!(
        !data.contains("4f2a9c") && !data.contains("/var/lib"),
        "{data}"
    );
    assert!(events.iter().all(|e| e["type"] != "exit"));
}

/// The router on a loopback socket; its WebSocket URL.
async fn listen(state: &Arc<AppState>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = app(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("ws://{addr}/execute/ws")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {KEY}").parse().expect("header"),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .expect("connect")
        .0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// Reads events until the server closes; returns them and the close code.
async fn drain(ws: &mut Ws) -> (Vec<Value>, Option<u16>) {
    let mut events = Vec::new();
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg.expect("message") {
                Message::Text(t) => events.push(serde_json::from_str(&t).expect("event JSON")),
                Message::Close(frame) => return frame.map(|f| u16::from(f.code)),
                _ => {}
            }
        }
        None
    };
    let code = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the server closes");
    (events, code)
}

fn execute_msg(code: &str) -> Value {
    json!({"type": "execute", "request": {"runtime": "bash", "code": code}})
}

#[tokio::test]
async fn websocket_stdin_and_signals_flow_and_the_socket_closes_with_1000() {
    let s = server();
    let url = listen(&s.state).await;
    let mut ws = connect(&url).await;
    send(&mut ws, execute_msg("read\nexit 0")).await;
    send(&mut ws, json!({"type": "stdin", "data": "shout\n"})).await;
    let (events, code) = drain(&mut ws).await;
    assert_eq!(
        events,
        [
            json!({"type": "stdout", "data": "SHOUT\n", "phase": "code"}),
            json!({"type": "exit", "data": "0", "phase": "code"}),
        ]
    );
    assert_eq!(code, Some(1000));

    let mut ws = connect(&url).await;
    send(&mut ws, execute_msg("echo ready\ntrap")).await;
    let first = ws.next().await.expect("event").expect("message");
    assert!(
        first.to_text().expect("text").contains("ready"),
        "{first:?}"
    );
    send(&mut ws, json!({"type": "signal", "signal": "SIGINT"})).await;
    let (events, code) = drain(&mut ws).await;
    assert_eq!(
        events.last(),
        Some(&json!({"type": "exit", "data": "130", "phase": "code"}))
    );
    assert_eq!(code, Some(1000));
    super::until("sockets counted closed", || s.state.open_websockets() == 0).await;
}

#[tokio::test]
async fn websocket_invalid_input_is_an_error_frame_and_close_1003() {
    let s = server();
    let url = listen(&s.state).await;
    for (first, second, says) in [
        (Some("{this is not json"), None, "invalid message"),
        (
            Some(r#"{"type": "stdin", "data": "x"}"#),
            None,
            "first message must be",
        ),
        (
            Some(r#"{"type": "execute", "request": {"runtime": "cobol", "code": "x"}}"#),
            None,
            "cobol",
        ),
        (
            Some(r#"{"type": "execute", "request": {"runtime": "bash", "code": "trap"}}"#),
            Some(r#"{"type": "signal", "signal": "SIGNOPE"}"#),
            "unknown signal",
        ),
    ] {
        let mut ws = connect(&url).await;
        for m in [first, second].into_iter().flatten() {
            ws.send(Message::Text(m.into())).await.expect("send");
        }
        let (events, code) = drain(&mut ws).await;
        assert_eq!(code, Some(1003), "{events:?}");
        let last = events.last().expect("an error frame");
        assert_eq!(last["type"], "error");
        assert!(
            last["data"].as_str().expect("data").contains(says),
            "{last}"
        );
    }
}

#[tokio::test]
async fn websocket_lost_sandbox_closes_1011_and_busy_closes_1013() {
    let s = server();
    let url = listen(&s.state).await;
    let mut ws = connect(&url).await;
    send(&mut ws, execute_msg("echo partial\nlose")).await;
    let (events, code) = drain(&mut ws).await;
    assert_eq!(code, Some(1011));
    let data = events.last().expect("error")["data"]
        .as_str()
        .expect("data");
    assert!(
        data.starts_with("sandbox lost: ") && !data.contains("4f2a9c"),
        "{data}"
    );

    // Slots closed (as while draining, with the state not yet refusing requests):
    // the engine says it is stopped: try again later.
    crate::backend::Backend::close_slots(s.state.engine());
    let mut ws = connect(&url).await;
    send(&mut ws, execute_msg("echo hi")).await;
    let (events, code) = drain(&mut ws).await;
    assert_eq!(code, Some(1013), "{events:?}");
}

#[tokio::test]
async fn a_disconnect_kills_the_websocket_execution() {
    let s = server();
    let url = listen(&s.state).await;
    let mut ws = connect(&url).await;
    send(&mut ws, execute_msg("echo started\nwait")).await;
    let first = ws.next().await.expect("event").expect("message");
    assert!(first.to_text().expect("text").contains("started"));
    assert_eq!(s.state.executing(), 1);
    drop(ws);
    super::until("the execution ends", || s.state.executing() == 0).await;
    super::until("the socket is counted closed", || {
        s.state.open_websockets() == 0
    })
    .await;
}
