//! `RemoteEngine` against a real server socket: streaming over WebSocket, the SSE
//! fallback when the upgrade is refused, and refused requests reported as errors.

use std::sync::Arc;

use futures_util::StreamExt;
use isol8::remote::StreamTransport;
use isol8::{Engine, EngineOptions, ExecutionRequest, RemoteEngine, StreamEvent};
use isol8::{Error, StreamEventType};
use isol8_server::{app, AppState};

const KEY: &str = "remote-test-master-key-0123456789";

/// Serves the API; with `refuse_ws`, a proxy-like layer answers upgrade requests on
/// `/execute/ws` with 400 as a proxy without WebSocket support would.
async fn serve(refuse_ws: bool) -> (Arc<AppState>, String) {
    let engine = isol8_testkit::engine(EngineOptions::default()).await;
    let state = AppState::new(engine, EngineOptions::default(), KEY.into());
    let mut router = app(state.clone());
    if refuse_ws {
        router = router.layer(axum::middleware::from_fn(
            |req: axum::extract::Request, next: axum::middleware::Next| async move {
                if req.uri().path() == "/execute/ws" {
                    return axum::response::IntoResponse::into_response((
                        axum::http::StatusCode::BAD_REQUEST,
                        "no websockets here",
                    ));
                }
                next.run(req).await
            },
        ));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (state, format!("http://{addr}"))
}

fn request(code: &str) -> ExecutionRequest {
    serde_json::from_value(serde_json::json!({"runtime": "bash", "code": code})).expect("request")
}

async fn collect(engine: &RemoteEngine, code: &str) -> Vec<StreamEvent> {
    engine
        .execute_stream(request(code))
        .await
        .expect("stream")
        .collect()
        .await
}

fn output(events: &[StreamEvent]) -> (String, String, Option<String>) {
    let mut out = String::new();
    let mut err = String::new();
    let mut exit = None;
    for e in events {
        match e.kind {
            StreamEventType::Stdout => out.push_str(&e.data),
            StreamEventType::Stderr => err.push_str(&e.data),
            StreamEventType::Exit => exit = Some(e.data.clone()),
            StreamEventType::Error => panic!("error event: {}", e.data),
        }
    }
    (out, err, exit)
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn execute_stream_goes_over_websocket() {
    let (state, base) = serve(false).await;
    let engine = RemoteEngine::new(&base, KEY, None, EngineOptions::default()).expect("client");
    assert_eq!(engine.last_stream_transport(), None);
    let events = collect(
        &engine,
        "echo one; echo two >&2; sleep 0.2; echo three; exit 3",
    )
    .await;
    assert_eq!(
        engine.last_stream_transport(),
        Some(StreamTransport::WebSocket)
    );
    assert_eq!(
        output(&events),
        ("one\nthree\n".into(), "two\n".into(), Some("3".into()))
    );
    assert_eq!(events.last().map(|e| e.kind), Some(StreamEventType::Exit));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == StreamEventType::Exit)
            .count(),
        1
    );

    // A request the server refuses is an error before anything runs, as with SSE.
    let bad: ExecutionRequest = serde_json::from_value(
        serde_json::json!({"runtime": "bash", "code": "true", "timeoutMs": 0}),
    )
    .expect("request");
    let refused = engine.execute_stream(bad).await;
    assert!(
        matches!(refused, Err(Error::InvalidRequest(_))),
        "{:?}",
        refused.map(|_| ())
    );

    // Sessions work over WebSocket too.
    let session = RemoteEngine::new(&base, KEY, Some("ws-s".into()), EngineOptions::default())
        .expect("client");
    output(&collect(&session, "echo kept > /sandbox/k").await);
    let (out, _, exit) = output(&collect(&session, "cat /sandbox/k").await);
    assert_eq!((out.as_str(), exit.as_deref()), ("kept\n", Some("0")));
    assert_eq!(
        session.last_stream_transport(),
        Some(StreamTransport::WebSocket)
    );
    session.stop().await.expect("stop session");

    // A wrong key is still a clear error (the upgrade fails, the SSE fallback says why).
    let wrong =
        RemoteEngine::new(&base, "wrong-key", None, EngineOptions::default()).expect("client");
    match wrong.execute_stream(request("true")).await {
        Err(Error::Remote {
            status: 403,
            message,
        }) => assert_eq!(message, "Invalid API key"),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn execute_stream_falls_back_to_sse_when_the_upgrade_fails() {
    let (state, base) = serve(true).await;
    let engine = RemoteEngine::new(&base, KEY, None, EngineOptions::default()).expect("client");
    let events = collect(&engine, "echo via-sse; exit 2").await;
    assert_eq!(
        engine.last_stream_transport(),
        Some(StreamTransport::ServerSentEvents)
    );
    assert_eq!(
        output(&events),
        ("via-sse\n".into(), String::new(), Some("2".into()))
    );
    // The request's stdin, then end-of-file, over server-sent events too.
    let mut req = request("cat; echo end");
    req.stdin = Some("piped\n".into());
    let events: Vec<StreamEvent> = engine
        .execute_stream(req)
        .await
        .expect("stream")
        .collect()
        .await;
    assert_eq!(
        output(&events),
        ("piped\nend\n".into(), String::new(), Some("0".into()))
    );
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn interactive_input_end_of_file_and_signals_reach_the_program_over_the_websocket() {
    use isol8::control::Control;
    let (state, base) = serve(false).await;
    let remote = RemoteEngine::new(&base, KEY, None, EngineOptions::default()).expect("client");
    // `cat` copies its input and ends only at end-of-file.
    let (events, controller) = remote
        .execute_interactive(request("cat; echo end"), &EngineOptions::default())
        .await
        .expect("start");
    assert!(controller.send(Control::Stdin(b"one\n".to_vec())).await);
    assert!(controller.send(Control::Stdin(b"two\n".to_vec())).await);
    assert!(controller.send(Control::CloseStdin).await);
    let events: Vec<StreamEvent> = events.collect().await;
    let (out, _, exit) = output(&events);
    assert_eq!(out, "one\ntwo\nend\n", "{events:?}");
    assert_eq!(exit.as_deref(), Some("0"), "{events:?}");

    // A signal reaches the program's process group.
    let (mut events, controller) = remote
        .execute_interactive(
            request("trap 'echo caught; exit 3' INT; echo ready; while :; do sleep 0.1; done"),
            &EngineOptions::default(),
        )
        .await
        .expect("start");
    let first = events.next().await.expect("an event");
    assert_eq!(first.data, "ready\n", "{first:?}");
    assert!(controller.send(Control::Signal(2)).await);
    let rest: Vec<StreamEvent> = events.collect().await;
    let (out, _, exit) = output(&rest);
    assert_eq!(out, "caught\n", "{rest:?}");
    assert_eq!(exit.as_deref(), Some("3"), "{rest:?}");
    state.shutdown().await;

    // Without a WebSocket, interactive input is refused before anything runs.
    let (state, base) = serve(true).await;
    let remote = RemoteEngine::new(&base, KEY, None, EngineOptions::default()).expect("client");
    let err = remote
        .execute_interactive(request("cat"), &EngineOptions::default())
        .await
        .err()
        .expect("no WebSocket, no interactive run");
    assert!(
        matches!(err, Error::NotSupported(_)) && err.to_string().contains("WebSocket"),
        "{err:?}"
    );
    let err = remote
        .execute_interactive_buffered(request("cat"), &EngineOptions::default())
        .await
        .err()
        .expect("no WebSocket, no interactive run");
    assert!(matches!(err, Error::NotSupported(_)), "{err:?}");
    state.shutdown().await;
}
