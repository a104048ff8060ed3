//! Server-sent events and WebSocket framing over the fake: events out, the request's
//! stdin then end-of-file (and, for interactive WebSocket runs, stdin and signals in),
//! close codes and reasons, and a lost sandbox said without internals.

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
    sse_request(state, json!({"runtime": "bash", "code": code})).await
}

/// [`sse`] for a whole request.
async fn sse_request(state: &Arc<AppState>, request: Value) -> (StatusCode, String, Vec<Value>) {
    let body = json!({ "request": request }).to_string();
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
async fn execute_stream_gives_the_program_the_request_stdin_then_end_of_file() {
    let s = server();
    // Two lines of input, a third `read` at end-of-file ends the run with 1.
    let request =
        json!({"runtime": "bash", "code": "read\nread\nread\necho never", "stdin": "a\nb\n"});
    let (_, _, events) = sse_request(&s.state, request).await;
    assert_eq!(
        events,
        [
            json!({"type": "stdout", "data": "A\n", "phase": "code"}),
            json!({"type": "stdout", "data": "B\n", "phase": "code"}),
            json!({"type": "exit", "data": "1", "phase": "code"}),
        ]
    );
    // Without `stdin`: end-of-file at once.
    let (_, _, events) = sse(&s.state, "read\necho never").await;
    assert_eq!(
        events,
        [json!({"type": "exit", "data": "1", "phase": "code"})]
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
pub(super) async fn listen(state: &Arc<AppState>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = app(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("ws://{addr}/execute/ws")
}

pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(super) async fn connect(url: &str) -> Ws {
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

pub(super) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// Reads events until the server closes; returns them and the close code.
pub(super) async fn drain(ws: &mut Ws) -> (Vec<Value>, Option<u16>) {
    let (events, close) = drain_close(ws).await;
    (events, close.map(|(code, _)| code))
}

/// [`drain`] with the close reason.
pub(super) async fn drain_close(ws: &mut Ws) -> (Vec<Value>, Option<(u16, String)>) {
    let mut events = Vec::new();
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg.expect("message") {
                Message::Text(t) => events.push(serde_json::from_str(&t).expect("event JSON")),
                Message::Close(frame) => {
                    // Reading on sends our close reply, as a client does.
                    let _ = ws.next().await;
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                _ => {}
            }
        }
        None
    };
    let close = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the server closes");
    (events, close)
}

pub(super) fn execute_msg(code: &str) -> Value {
    json!({"type": "execute", "request": {"runtime": "bash", "code": code}})
}

/// An `execute` message asking for an interactive run.
fn interactive_msg(code: &str) -> Value {
    json!({"type": "execute", "request": {"runtime": "bash", "code": code}, "interactive": true})
}

#[tokio::test]
async fn websocket_interactive_stdin_and_signals_flow_and_the_socket_closes_with_1000() {
    let s = server();
    let url = listen(&s.state).await;
    let mut ws = connect(&url).await;
    send(&mut ws, interactive_msg("read\nread\nread\necho never")).await;
    send(&mut ws, json!({"type": "stdin", "data": "shout\n"})).await;
    send(
        &mut ws,
        json!({"type": "stdin", "data": "more\n", "eof": true}),
    )
    .await;
    let (events, close) = drain_close(&mut ws).await;
    assert_eq!(
        events,
        [
            json!({"type": "stdout", "data": "SHOUT\n", "phase": "code"}),
            json!({"type": "stdout", "data": "MORE\n", "phase": "code"}),
            // The third `read` met the end-of-file.
            json!({"type": "exit", "data": "1", "phase": "code"}),
        ]
    );
    assert_eq!(close, Some((1000, "Execution complete".to_string())));

    // The request's stdin comes first, then the messages.
    let mut ws = connect(&url).await;
    let mut first = interactive_msg("read\nread\nexit 0");
    first["request"]["stdin"] = json!("first\n");
    send(&mut ws, first).await;
    send(&mut ws, json!({"type": "stdin", "data": "second\n"})).await;
    let (events, _) = drain(&mut ws).await;
    assert_eq!(
        events,
        [
            json!({"type": "stdout", "data": "FIRST\n", "phase": "code"}),
            json!({"type": "stdout", "data": "SECOND\n", "phase": "code"}),
            json!({"type": "exit", "data": "0", "phase": "code"}),
        ]
    );

    let mut ws = connect(&url).await;
    send(&mut ws, interactive_msg("echo ready\ntrap")).await;
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
        (Some("{this is not json"), None, "Invalid JSON"),
        (
            Some(r#"{"type": "execute", "request": {"runtime": "bash"}, "options": 5}"#),
            None,
            "invalid message",
        ),
        (
            Some(r#"{"type": "execute", "request": {"runtime": "cobol", "code": "x"}}"#),
            None,
            "cobol",
        ),
        (
            Some(
                r#"{"type": "execute", "request": {"runtime": "bash", "code": "trap"}, "interactive": true}"#,
            ),
            Some(r#"{"type": "signal", "signal": "SIGNOPE"}"#),
            "unknown signal",
        ),
        (
            Some(
                r#"{"type": "execute", "request": {"runtime": "bash", "code": "trap"}, "interactive": true}"#,
            ),
            Some(r#"{"type": "execute", "request": {"runtime": "bash", "code": "echo"}}"#),
            "already running",
        ),
    ] {
        let mut ws = connect(&url).await;
        for m in [first, second].into_iter().flatten() {
            ws.send(Message::Text(m.into())).await.expect("send");
        }
        let (events, close) = drain_close(&mut ws).await;
        let (code, reason) = close.expect("a close frame");
        assert_eq!(code, 1003, "{events:?}");
        let want = match says {
            "Invalid JSON" => "Invalid JSON",
            "cobol" => "Request refused",
            _ => "Invalid message",
        };
        assert_eq!(reason, want, "{says}");
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
    let (events, close) = drain_close(&mut ws).await;
    assert_eq!(close, Some((1011, "Sandbox lost".to_string())));
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
    let (events, close) = drain_close(&mut ws).await;
    assert_eq!(
        close,
        Some((1013, "Busy, try again later".to_string())),
        "{events:?}"
    );
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

#[tokio::test]
async fn websocket_without_interactive_reads_the_request_stdin_then_end_of_file() {
    let s = server();
    let url = listen(&s.state).await;
    // As a reference client does: the request's stdin, then nothing more. Stdin and
    // signal messages after `execute` are ignored, not fed or delivered.
    let mut ws = connect(&url).await;
    let mut msg = execute_msg("read\nread\nread\necho never");
    msg["request"]["stdin"] = json!("a\nb\n");
    send(&mut ws, msg).await;
    send(&mut ws, json!({"type": "stdin", "data": "ignored\n"})).await;
    send(&mut ws, json!({"type": "signal", "signal": "SIGINT"})).await;
    let (events, close) = drain_close(&mut ws).await;
    assert_eq!(
        events,
        [
            json!({"type": "stdout", "data": "A\n", "phase": "code"}),
            json!({"type": "stdout", "data": "B\n", "phase": "code"}),
            json!({"type": "exit", "data": "1", "phase": "code"}),
        ]
    );
    assert_eq!(close, Some((1000, "Execution complete".to_string())));

    // Without `stdin`: end-of-file at once, though the client sends nothing and keeps the
    // socket open.
    let mut ws = connect(&url).await;
    send(&mut ws, execute_msg("read\necho never")).await;
    let (events, _) = drain(&mut ws).await;
    assert_eq!(
        events,
        [json!({"type": "exit", "data": "1", "phase": "code"})]
    );
}

#[tokio::test]
async fn websocket_ignores_stdin_and_signals_before_execute_and_answers_unknown_types() {
    let s = server();
    let url = listen(&s.state).await;
    let mut ws = connect(&url).await;
    send(&mut ws, json!({"type": "stdin", "data": "early\n"})).await;
    send(&mut ws, json!({"type": "stdin", "data": 5})).await;
    send(&mut ws, json!({"type": "signal", "signal": "SIGINT"})).await;
    send(&mut ws, json!({"type": "resize", "rows": 24})).await;
    send(&mut ws, json!({"no": "type"})).await;
    let mut run = execute_msg("read\nwait\necho done");
    run["request"]["stdin"] = json!("in\n");
    send(&mut ws, run).await;
    let first = ws.next().await.expect("event").expect("message");
    let first: Value = serde_json::from_str(first.to_text().expect("text")).expect("JSON");
    assert_eq!(first["type"], "error");
    assert!(
        first["data"]
            .as_str()
            .expect("data")
            .contains("Unknown message type: resize"),
        "{first}"
    );
    let second = ws.next().await.expect("event").expect("message");
    let second: Value = serde_json::from_str(second.to_text().expect("text")).expect("JSON");
    assert_eq!(second["type"], "error");
    assert!(
        second["data"].as_str().expect("data").contains("`type`"),
        "{second}"
    );
    // The early input did not reach the program: it reads the request's.
    let third = ws.next().await.expect("event").expect("message");
    assert_eq!(
        serde_json::from_str::<Value>(third.to_text().expect("text")).expect("JSON"),
        json!({"type": "stdout", "data": "IN\n", "phase": "code"})
    );
    // An unknown type mid-run: an error event, and the run goes on.
    send(&mut ws, json!({"type": "bogus"})).await;
    let (events, close) = {
        let next = ws.next().await.expect("event").expect("message");
        let ev: Value = serde_json::from_str(next.to_text().expect("text")).expect("JSON");
        assert_eq!(ev["type"], "error", "{ev}");
        s.fake.release();
        drain_close(&mut ws).await
    };
    assert_eq!(
        events,
        [
            json!({"type": "stdout", "data": "done\n", "phase": "code"}),
            json!({"type": "exit", "data": "0", "phase": "code"}),
        ]
    );
    assert_eq!(close, Some((1000, "Execution complete".to_string())));
}

#[tokio::test]
async fn the_websocket_messages_are_documented_with_interactive_and_eof() {
    let s = server();
    let (_, doc) = super::call(
        &s.state,
        axum::http::Request::get("/openapi.json")
            .body(axum::body::Body::empty())
            .expect("req"),
    )
    .await;
    let text = doc["paths"]["/execute/ws"]["get"].to_string();
    assert!(text.contains("interactive"), "{text}");
    let schemas = doc["components"]["schemas"].to_string();
    let ws_in = &doc["components"]["schemas"]["WsIn"];
    let variants = ws_in["oneOf"].as_array().expect("WsIn variants");
    let execute = variants
        .iter()
        .find(|v| v["properties"]["type"].to_string().contains("execute"))
        .expect("the execute message");
    assert_eq!(
        execute["properties"]["interactive"]["type"], "boolean",
        "{schemas}"
    );
    assert!(!execute["required"].to_string().contains("interactive"));
    let stdin = variants
        .iter()
        .find(|v| v["properties"]["type"].to_string().contains("stdin"))
        .expect("the stdin message");
    assert_eq!(stdin["properties"]["eof"]["type"], "boolean");
}

/// The `resourceUsage` the fake's `usage 12.5 3.25 4 100 20` line reports.
fn fake_usage() -> Value {
    json!({"cpuPercent": 12.5, "memoryMB": 3.25, "peakMemoryMB": 4.0,
           "networkBytesIn": 100, "networkBytesOut": 20})
}

#[tokio::test]
async fn results_and_exit_events_carry_resource_usage_and_exit_reason() {
    let s = server();
    let code = "usage 12.5 3.25 4 100 20\necho hi";
    // Buffered.
    let body = json!({"request": {"runtime": "bash", "code": code}}).to_string();
    let (status, v) = super::call(&s.state, post("/execute", Some(KEY), body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["resourceUsage"], fake_usage());
    assert_eq!(v["exitReason"], "exited");
    // Server-sent events: on the final exit event.
    let (_, _, events) = sse(&s.state, code).await;
    assert_eq!(
        events.last(),
        Some(&json!({"type": "exit", "data": "0", "phase": "code",
                     "resourceUsage": fake_usage(), "exitReason": "exited"}))
    );
    // WebSocket: the same exit event, then the normal close.
    let url = listen(&s.state).await;
    let mut ws = connect(&url).await;
    send(&mut ws, execute_msg(code)).await;
    let (events, close) = drain(&mut ws).await;
    assert_eq!(
        events.last(),
        Some(&json!({"type": "exit", "data": "0", "phase": "code",
                     "resourceUsage": fake_usage(), "exitReason": "exited"}))
    );
    assert_eq!(close, Some(1000));
}

#[tokio::test]
async fn a_non_normal_reason_is_announced_by_an_error_event_before_the_exit() {
    let s = server();
    let code = "usage 12.5 3.25 4 100 20\necho partial\noom";
    let (_, _, events) = sse(&s.state, code).await;
    assert_eq!(
        events,
        [
            json!({"type": "stdout", "data": "partial\n", "phase": "code"}),
            json!({"type": "error", "data": "MEMORY LIMIT EXCEEDED", "phase": "code"}),
            json!({"type": "exit", "data": "137", "phase": "code",
                   "resourceUsage": fake_usage(), "exitReason": "memoryLimit"}),
        ]
    );
    let url = listen(&s.state).await;
    let mut ws = connect(&url).await;
    send(&mut ws, execute_msg(code)).await;
    let (ws_events, close) = drain(&mut ws).await;
    assert_eq!(ws_events, events);
    assert_eq!(close, Some(1000));
    let body = json!({"request": {"runtime": "bash", "code": code}}).to_string();
    let (status, v) = super::call(&s.state, post("/execute", Some(KEY), body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["exitCode"].clone(), v["exitReason"].clone()),
        (json!(137), json!("memoryLimit"))
    );
}

#[tokio::test]
async fn a_sandbox_lost_under_the_program_is_a_result_said_without_internals() {
    let s = server();
    let code = "echo partial\ndied";
    let (status, _, events) = sse(&s.state, code).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events.len(), 3, "{events:?}");
    let data = events[1]["data"].as_str().expect("data");
    assert!(
        data.starts_with("sandbox lost: ") && data.contains("(execution "),
        "{data}"
    );
    assert!(
        !data.contains("4f2a9c") && !data.contains("/var/lib"),
        "{data}"
    );
    assert_eq!(
        events[2],
        json!({"type": "exit", "data": "137", "phase": "code", "exitReason": "sandboxLost"})
    );
    // Buffered: a result with the output that arrived, not a 500.
    let body = json!({"request": {"runtime": "bash", "code": code}}).to_string();
    let (status, v) = super::call(&s.state, post("/execute", Some(KEY), body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["exitReason"], "sandboxLost");
    assert_eq!(v["stdout"], "partial\n");
    assert!(!v.to_string().contains("4f2a9c"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_remote_client_reads_usage_and_reason_back() {
    use isol8::{Engine, ExecutionRequest, ExitReason, RemoteEngine};
    let s = server();
    let ws = listen(&s.state).await;
    let base = ws
        .replace("ws://", "http://")
        .trim_end_matches("/execute/ws")
        .to_string();
    let engine =
        RemoteEngine::new(&base, KEY, None, isol8::EngineOptions::default()).expect("client");
    let req = |code: &str| ExecutionRequest {
        runtime: "bash".into(),
        code: Some(code.into()),
        ..Default::default()
    };
    let want = isol8::ResourceUsage {
        cpu_percent: 12.5,
        memory_mb: 3.25,
        peak_memory_mb: 4.0,
        network_bytes_in: 100,
        network_bytes_out: 20,
    };
    // Buffered (POST /execute).
    let result = engine
        .execute(req("usage 12.5 3.25 4 100 20\noom"))
        .await
        .expect("result");
    assert_eq!(result.resource_usage.as_ref(), Some(&want));
    assert_eq!(result.exit_reason, Some(ExitReason::MemoryLimit));
    // Streamed (WebSocket).
    let events: Vec<_> = engine
        .execute_stream(req("usage 12.5 3.25 4 100 20\necho hi"))
        .await
        .expect("stream")
        .collect()
        .await;
    let last = events.last().expect("events");
    assert_eq!(last.resource_usage.as_ref(), Some(&want));
    assert_eq!(last.exit_reason, Some(ExitReason::Exited));
    // Interactive buffered (collected from the WebSocket stream).
    let (pending, _controller) = engine
        .execute_interactive_buffered(req("usage 12.5 3.25 4 100 20\ndied"), &Default::default())
        .await
        .expect("run");
    let result = pending.await.expect("a result");
    assert_eq!(result.exit_reason, Some(ExitReason::SandboxLost));
    assert_eq!(result.resource_usage, Some(want));
}
