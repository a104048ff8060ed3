//! Standard input through a real server socket and the real engine: `POST /execute`,
//! server-sent events and a WebSocket without `interactive` give the program the
//! request's `stdin` and then end-of-file (at once without one, though the client keeps
//! the socket open and sends nothing, as the reference's clients do); an interactive
//! WebSocket run reads the request's `stdin`, then `stdin` messages until `eof: true`;
//! `RemoteEngine` does the same on each of its paths; and a program that prints 600 kB
//! before it reads 120 kB of stdin gets all of both on each.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use isol8::{Engine, EngineOptions, ExecutionRequest, RemoteEngine, StreamEvent, StreamEventType};
use isol8_server::AppState;
use isol8_testkit::{assert_big_output, big_input, BIG_IO_CODE, INPUT, STDIN_CASES};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "stdin-test-master-key-0123456789";

/// Serves the API on a loopback port: the state and the base URL.
async fn serve() -> (Arc<AppState>, String) {
    let (state, addr) = common::serve_on_loopback(KEY).await;
    (state, format!("http://{addr}"))
}

fn request(runtime: &str, code: &str, stdin: Option<&str>) -> Value {
    let mut r = json!({"runtime": runtime, "code": code});
    if let Some(s) = stdin {
        r["stdin"] = json!(s);
    }
    r
}

/// Stdout and exit code of JSON events (panics on an error event).
fn stdout_and_exit(events: &[Value]) -> (String, Option<String>) {
    let mut out = String::new();
    let mut exit = None;
    for e in events {
        match e["type"].as_str() {
            Some("stdout") => out.push_str(e["data"].as_str().unwrap_or_default()),
            Some("exit") => exit = e["data"].as_str().map(str::to_string),
            Some("error") => panic!("error event: {e}"),
            _ => {}
        }
    }
    (out, exit)
}

/// `POST /execute/stream`: its events.
async fn sse(base: &str, request: Value) -> Vec<Value> {
    let text = reqwest::Client::new()
        .post(format!("{base}/execute/stream"))
        .bearer_auth(KEY)
        .json(&json!({ "request": request }))
        .send()
        .await
        .expect("stream")
        .text()
        .await
        .expect("body");
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect()
}

/// `POST /execute`: its result.
async fn buffered(base: &str, request: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{base}/execute"))
        .bearer_auth(KEY)
        .json(&json!({ "request": request }))
        .send()
        .await
        .expect("execute")
        .json()
        .await
        .expect("result")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str) -> Ws {
    let url = format!("ws://{}/execute/ws", base.trim_start_matches("http://"));
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

/// Reads events until the server closes (bounded, so a hang fails): the events and the
/// close code. The socket stays open on our side all along.
async fn drain(ws: &mut Ws) -> (Vec<Value>, Option<u16>) {
    let mut events = Vec::new();
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg.expect("message") {
                Message::Text(t) => events.push(serde_json::from_str(&t).expect("event JSON")),
                Message::Close(frame) => {
                    // Reading on sends our close reply, as a client does.
                    let _ = ws.next().await;
                    return frame.map(|f| u16::from(f.code));
                }
                _ => {}
            }
        }
        None
    };
    let code = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the run ended before the drain's bound (stdin left open?)");
    (events, code)
}

/// A WebSocket run without `interactive`: the request only, then nothing from the client.
async fn ws_plain(base: &str, request: Value) -> (Vec<Value>, Option<u16>) {
    let mut ws = connect(base).await;
    send(&mut ws, json!({"type": "execute", "request": request})).await;
    drain(&mut ws).await
}

/// An interactive WebSocket run: the request, then `rest` in `stdin` messages of at most
/// 64 KiB, then `eof: true`, while the events are read.
async fn ws_interactive(base: &str, request: Value, rest: &str) -> (Vec<Value>, Option<u16>) {
    let ws = connect(base).await;
    let (mut sink, mut stream) = ws.split();
    let execute = json!({"type": "execute", "request": request, "interactive": true});
    sink.send(Message::Text(execute.to_string().into()))
        .await
        .expect("send");
    let rest = rest.to_string();
    let writer = async move {
        let bytes = rest.as_bytes();
        for chunk in bytes.chunks(64 << 10) {
            let data = std::str::from_utf8(chunk).expect("ASCII input");
            let msg = json!({"type": "stdin", "data": data});
            sink.send(Message::Text(msg.to_string().into()))
                .await
                .expect("send");
        }
        let eof = json!({"type": "stdin", "eof": true});
        sink.send(Message::Text(eof.to_string().into()))
            .await
            .expect("send");
        sink
    };
    let reader = async {
        let mut events = Vec::new();
        while let Some(msg) = stream.next().await {
            match msg.expect("message") {
                Message::Text(t) => events.push(serde_json::from_str(&t).expect("event JSON")),
                Message::Close(frame) => return (events, frame.map(|f| u16::from(f.code))),
                _ => {}
            }
        }
        (events, None)
    };
    let (_sink, got) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("the run ended before the bound");
    got
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn every_route_gives_the_request_stdin_then_end_of_file() {
    let (state, base) = serve().await;
    for case in STDIN_CASES {
        for (stdin, want) in [(Some(INPUT), case.with_input), (None, case.without_input)] {
            let req = request(case.runtime, case.code, stdin);
            let what = format!("{}, stdin {stdin:?}", case.name);
            let r = buffered(&base, req.clone()).await;
            assert_eq!(
                (r["stdout"].as_str(), r["exitCode"].as_i64()),
                (Some(want), Some(0)),
                "POST /execute, {what}: {r}"
            );
            let events = sse(&base, req.clone()).await;
            assert_eq!(
                stdout_and_exit(&events),
                (want.to_string(), Some("0".into())),
                "SSE, {what}"
            );
            // As a reference client: nothing after `execute`, the socket left open.
            let (events, code) = ws_plain(&base, req).await;
            assert_eq!(
                stdout_and_exit(&events),
                (want.to_string(), Some("0".into())),
                "WebSocket, {what}"
            );
            assert_eq!(code, Some(1000));
        }
    }
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn an_interactive_websocket_reads_the_request_stdin_then_messages_until_eof() {
    let (state, base) = serve().await;
    let (first, rest) = INPUT.split_at(INPUT.find('\n').expect("two lines") + 1);
    for case in STDIN_CASES {
        let (events, code) =
            ws_interactive(&base, request(case.runtime, case.code, Some(first)), rest).await;
        assert_eq!(
            stdout_and_exit(&events),
            (case.with_input.to_string(), Some("0".into())),
            "{}",
            case.name
        );
        assert_eq!(code, Some(1000));
    }
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_program_printing_600_kb_before_reading_120_kb_gets_all_of_both_on_every_route() {
    let (state, base) = serve().await;
    let input = big_input();
    let req = request("python", BIG_IO_CODE, Some(&input));
    let r = buffered(&base, req.clone()).await;
    assert_eq!(r["exitCode"], 0, "{}", r["stderr"]);
    assert_big_output(r["stdout"].as_str().expect("stdout"), "POST /execute");
    let (out, exit) = stdout_and_exit(&sse(&base, req.clone()).await);
    assert_eq!(exit.as_deref(), Some("0"));
    assert_big_output(&out, "SSE");
    let (events, _) = ws_plain(&base, req).await;
    let (out, exit) = stdout_and_exit(&events);
    assert_eq!(exit.as_deref(), Some("0"));
    assert_big_output(&out, "WebSocket");
    let (events, _) = ws_interactive(&base, request("python", BIG_IO_CODE, None), &input).await;
    let (out, exit) = stdout_and_exit(&events);
    assert_eq!(exit.as_deref(), Some("0"));
    assert_big_output(&out, "interactive WebSocket");
    state.shutdown().await;
}

fn lib_request(runtime: &str, code: &str, stdin: Option<&str>) -> ExecutionRequest {
    serde_json::from_value(request(runtime, code, stdin)).expect("request")
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn remote_engine_gives_the_same_stdin_on_each_of_its_paths() {
    let (state, base) = serve().await;
    let remote = RemoteEngine::new(&base, KEY, None, EngineOptions::default()).expect("client");
    let (first, rest) = INPUT.split_at(INPUT.find('\n').expect("two lines") + 1);
    for case in STDIN_CASES {
        for (stdin, want) in [(Some(INPUT), case.with_input), (None, case.without_input)] {
            let req = lib_request(case.runtime, case.code, stdin);
            let what = format!("{}, stdin {stdin:?}", case.name);
            let r = remote.execute(req.clone()).await.expect("execute");
            assert_eq!(
                (r.stdout.as_str(), r.exit_code),
                (want, 0),
                "buffered, {what}"
            );
            let events: Vec<StreamEvent> = remote
                .execute_stream(req)
                .await
                .expect("stream")
                .collect()
                .await;
            assert_eq!(
                remote.last_stream_transport(),
                Some(isol8::remote::StreamTransport::WebSocket)
            );
            assert_eq!(
                isol8_testkit::stdout_and_exit(&events),
                (want.to_string(), Some("0".into())),
                "streamed, {what}"
            );
        }
        let req = lib_request(case.runtime, case.code, Some(first));
        let (streamed, r) = isol8_testkit::interactive_both(&remote, req, rest).await;
        assert_eq!(
            streamed,
            (case.with_input.to_string(), Some("0".into())),
            "interactive, {}",
            case.name
        );
        assert_eq!(
            (r.stdout.as_str(), r.exit_code, r.runtime.as_str()),
            (case.with_input, 0, case.runtime),
            "interactive buffered, {}",
            case.name
        );
    }

    // 600 kB out before 120 kB in: the request's stdin, and the controller's.
    let input = big_input();
    let events: Vec<StreamEvent> = remote
        .execute_stream(lib_request("python", BIG_IO_CODE, Some(&input)))
        .await
        .expect("stream")
        .collect()
        .await;
    let (out, exit) = isol8_testkit::stdout_and_exit(&events);
    assert_eq!(exit.as_deref(), Some("0"));
    assert_big_output(&out, "RemoteEngine streamed");
    let (events, controller) = remote
        .execute_interactive(
            lib_request("python", BIG_IO_CODE, None),
            &EngineOptions::default(),
        )
        .await
        .expect("start");
    let (events, ()) = tokio::join!(
        events.collect::<Vec<_>>(),
        isol8_testkit::feed(&controller, &input)
    );
    let (out, exit) = isol8_testkit::stdout_and_exit(&events);
    assert_eq!(exit.as_deref(), Some("0"));
    assert_big_output(&out, "RemoteEngine interactive");
    assert!(events.iter().all(|e| e.kind != StreamEventType::Error));
    state.shutdown().await;
}
