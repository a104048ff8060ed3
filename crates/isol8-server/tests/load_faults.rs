//! Faults under a real engine: a sandbox killed or frozen mid-run is reported as lost
//! (or unresponsive) on every route (SSE, WebSocket close 1011, `/execute` 500,
//! `RemoteEngine`), never as an exit code.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::load::{call, connect_ws, drain_ws, execute, long_runs, post, serve_state, KEY};
use futures_util::{SinkExt, StreamExt};
use isol8::docker::EngineConfig;
use isol8::{DockerEngine, Engine, EngineOptions, RemoteEngine, StreamEventType};
use isol8_server::AppState;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The live container of `engine` whose processes include one with `needle` in its
/// command line (at most 30 s).
async fn container_running(engine: &DockerEngine, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for id in engine.live_containers() {
            let top = engine
                .docker()
                .top_processes(&id, None::<bollard::query_parameters::TopOptions>)
                .await;
            let found = top
                .ok()
                .and_then(|t| t.processes)
                .is_some_and(|ps| ps.iter().any(|p| p.iter().any(|col| col.contains(needle))));
            if found {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "`{needle}` never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn kill(engine: &DockerEngine, id: &str) {
    engine
        .docker()
        .kill_container(id, None::<bollard::query_parameters::KillContainerOptions>)
        .await
        .expect("kill");
}

/// Asserts a stream's events end with a `sandbox lost: …` error (no engine internals),
/// then the `exit` of the killed program (137: its sandbox's end killed it) with exit
/// reason `sandboxLost`.
fn assert_lost(events: &[Value]) {
    let [.., error, exit] = events else {
        panic!("at least two events: {events:?}");
    };
    assert_eq!(error["type"], "error", "{events:?}");
    let data = error["data"].as_str().unwrap_or_default();
    assert!(data.starts_with("sandbox lost: "), "{events:?}");
    assert!(!data.contains("/var/lib/docker"), "{events:?}");
    assert_eq!(
        (&exit["type"], &exit["data"], &exit["exitReason"]),
        (&json!("exit"), &json!("137"), &json!("sandboxLost")),
        "{events:?}"
    );
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_sandbox_killed_mid_run_is_reported_lost_on_every_route() {
    let engine = isol8_testkit::engine_with(EngineConfig::default()).await;
    let state = long_runs(engine.clone());
    let (addr, _server) = serve_state(state.clone()).await;
    let run =
        |code: &str| json!({"request": {"runtime": "bash", "code": code, "timeoutMs": 30000}});

    // Server-sent events: the error, then the exit saying the sandbox was lost.
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/execute/stream"))
        .bearer_auth(KEY)
        .json(&run("echo started; sleep 71"))
        .send()
        .await
        .expect("stream");
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("started") {
        let chunk = body.next().await.expect("output").expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    kill(&engine, &container_running(&engine, "sleep 71").await).await;
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        }
    })
    .await
    .expect("the stream must end");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect();
    assert_lost(&events);

    // WebSocket: the same events, then the normal close (the run has a result).
    let mut ws = connect_ws(&addr).await;
    let mut msg = run("echo started; sleep 72");
    msg["type"] = json!("execute");
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .expect("send");
    kill(&engine, &container_running(&engine, "sleep 72").await).await;
    let (events, close) = drain_ws(&mut ws).await;
    assert_lost(&events);
    assert_eq!(close, Some(1000), "{events:?}");

    // Buffered: a result saying the sandbox was lost.
    let buffered = tokio::spawn({
        let state = state.clone();
        async move { call(&state, post("/execute", KEY, run("sleep 73"))).await }
    });
    kill(&engine, &container_running(&engine, "sleep 73").await).await;
    let (status, _, v) = buffered.await.expect("join");
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["exitCode"], &v["exitReason"]),
        (&json!(137), &json!("sandboxLost")),
        "{v}"
    );

    // RemoteEngine, over the WebSocket: the error then the exit; and buffered, a result
    // with the reason.
    let remote = RemoteEngine::new(
        &format!("http://{addr}"),
        KEY,
        None,
        EngineOptions::default(),
    )
    .expect("client");
    let req = |code: &str| -> isol8::ExecutionRequest {
        serde_json::from_value(json!({"runtime": "bash", "code": code, "timeoutMs": 30000}))
            .expect("request")
    };
    let mut events = remote
        .execute_stream(req("echo started; sleep 74"))
        .await
        .expect("stream");
    let first = events.next().await.expect("an event");
    assert_eq!(first.kind, StreamEventType::Stdout, "{first:?}");
    kill(&engine, &container_running(&engine, "sleep 74").await).await;
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(60), events.collect())
        .await
        .expect("the stream must end");
    let rest: Vec<Value> = rest
        .iter()
        .map(|e| serde_json::to_value(e).expect("json"))
        .collect();
    assert_lost(&rest);
    let buffered = tokio::spawn({
        let remote = remote.clone();
        async move { remote.execute(req("sleep 75")).await }
    });
    kill(&engine, &container_running(&engine, "sleep 75").await).await;
    let result = buffered
        .await
        .expect("join")
        .expect("a sandbox lost under the program is a result");
    assert_eq!(
        (result.exit_code, result.exit_reason),
        (137, Some(isol8::ExitReason::SandboxLost))
    );
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_sandbox_paused_mid_run_is_a_5xx_sandbox_unresponsive_not_a_timeout() {
    let engine = isol8_testkit::engine_with(EngineConfig::default()).await;
    let state = AppState::new(engine.clone(), EngineOptions::default(), KEY.into());
    let buffered = tokio::spawn({
        let state = state.clone();
        async move { call(&state, execute("sleep 76", None, 3_000)).await }
    });
    let id = container_running(&engine, "sleep 76").await;
    engine.docker().pause_container(&id).await.expect("pause");
    let (status, _, v) = tokio::time::timeout(Duration::from_secs(60), buffered)
        .await
        .expect("no hang")
        .expect("join");
    assert!(status.is_server_error(), "{status} {v}");
    let message = v["error"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("sandbox unresponsive: ") && !message.contains("TIMED OUT"),
        "{v}"
    );
    state.shutdown().await;
    assert!(
        engine.live_containers().is_empty(),
        "the paused container is removed"
    );
}
