//! `GET /execute/ws` over a real socket: events out, stdin and signals in for an
//! interactive run, invalid messages closed with 1003, and a disconnect kills the
//! execution. (Standard input without `interactive` is in `stdin.rs`.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use isol8_server::AppState;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "ws-test-master-key-0123456789";

async fn serve() -> (Arc<AppState>, String) {
    let (state, addr) = common::serve_on_loopback(KEY).await;
    (state, format!("ws://{addr}/execute/ws"))
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

/// Reads events until the server closes; returns them and the close code.
async fn drain(ws: &mut Ws) -> (Vec<Value>, Option<u16>) {
    let mut events = Vec::new();
    while let Some(msg) = ws.next().await {
        match msg.expect("message") {
            Message::Text(t) => events.push(serde_json::from_str(&t).expect("event JSON")),
            Message::Close(frame) => return (events, frame.map(|f| u16::from(f.code))),
            _ => {}
        }
    }
    (events, None)
}

/// All stdout data of `events`, in order (chunking is not part of the contract).
fn stdout(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "stdout")
        .filter_map(|e| e["data"].as_str())
        .collect()
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn interactive_stdin_and_signals_flow_and_the_socket_closes_with_1000() {
    let (state, url) = serve().await;
    let mut ws = connect(&url).await;
    send(&mut ws, json!({"type": "execute", "request": {"runtime": "python", "code": "print(input().upper(), flush=True)"}, "interactive": true})).await;
    send(&mut ws, json!({"type": "stdin", "data": "shout\n"})).await;
    let (events, code) = drain(&mut ws).await;
    assert_eq!(stdout(&events), "SHOUT\n", "{events:?}");
    assert_eq!(
        events.last().cloned().map(common::without_usage),
        Some(json!({"type": "exit", "data": "0", "phase": "code", "exitReason": "exited"}))
    );
    assert_eq!(code, Some(1000));

    let mut ws = connect(&url).await;
    let code = "trap 'echo interrupted; exit 7' INT; echo ready; while true; do sleep 0.05; done";
    send(
        &mut ws,
        json!({"type": "execute", "request": {"runtime": "bash", "code": code}, "interactive": true}),
    )
    .await;
    let first = ws.next().await.expect("event").expect("message");
    assert!(
        first.to_text().expect("text").contains("ready"),
        "{first:?}"
    );
    send(&mut ws, json!({"type": "signal", "signal": "SIGINT"})).await;
    let (events, code) = drain(&mut ws).await;
    assert!(stdout(&events).contains("interrupted\n"), "{events:?}");
    assert_eq!(
        events.last().cloned().map(common::without_usage),
        Some(json!({"type": "exit", "data": "7", "phase": "code", "exitReason": "exited"}))
    );
    assert_eq!(code, Some(1000));
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn invalid_json_gets_an_error_frame_and_close_1003() {
    let (state, url) = serve().await;
    let mut ws = connect(&url).await;
    ws.send(Message::Text("{this is not json".into()))
        .await
        .expect("send");
    let (events, code) = drain(&mut ws).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "error");
    assert_eq!(code, Some(1003));
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_disconnect_kills_the_execution_and_reclaims_its_container() {
    let (state, url) = serve().await;
    let mut ws = connect(&url).await;
    send(&mut ws, json!({"type": "execute", "request": {"runtime": "bash", "code": "echo started; sleep 60"}})).await;
    let first = ws.next().await.expect("event").expect("message");
    assert!(first.to_text().expect("text").contains("started"));
    assert_eq!(state.engine().live_containers().len(), 1);
    drop(ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !state.engine().live_containers().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the container was not reclaimed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    state.shutdown().await;
}
