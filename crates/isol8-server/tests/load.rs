//! Load and faults against a real engine: sessions count against `maxConcurrent` and are
//! capped (429), busy answers carry `Retry-After`, draining refuses the queue at once
//! while running executions finish, and a sandbox killed or frozen mid-run is reported
//! as lost on every route (SSE, WebSocket close 1011, `/execute` 500, `RemoteEngine`),
//! never as an exit code.
//!
//! Split by topic: this file holds capacity (`maxConcurrent`, session caps, draining);
//! sandboxes killed or frozen mid-run are in `load_faults.rs`; shared helpers in
//! `common/load.rs`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::load::{
    bounded, call, connect_ws, drain_ws, execute, get, long_runs, post, serve_state, KEY,
};
use futures_util::{SinkExt, StreamExt};
use isol8::docker::EngineConfig;
use isol8::EngineOptions;
use isol8_server::{AppState, ServerSettings};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Asserts a busy answer: `status` with a positive integer `Retry-After`.
fn assert_busy(
    (status, retry, body): &(StatusCode, Option<String>, Value),
    want: StatusCode,
    says: &str,
) {
    assert_eq!(*status, want, "{body}");
    let secs: u64 = retry
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After on a {status}: {body}"));
    assert!(secs > 0, "{secs}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{body}");
}

/// The most executions whose `[start, end]` intervals overlap at any instant.
fn max_overlap(intervals: &[(u128, u128)]) -> usize {
    let mut points: Vec<(u128, i32)> = intervals
        .iter()
        .flat_map(|&(s, e)| [(s, 1), (e, -1)])
        .collect();
    // At equal instants, an end comes before a start.
    points.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in points {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn executions_in_sessions_share_the_servers_max_concurrent() {
    let engine = bounded(2).await;
    let state = long_runs(engine);
    // Four new sessions and two ephemeral requests at once; each reports when it ran
    // (host clock, read inside the sandbox).
    let code = "date +%s%N; sleep 2; date +%s%N";
    let sessions = ["s1", "s2", "s3", "s4"];
    let requests = sessions
        .iter()
        .map(|s| Some(*s))
        .chain([None, None])
        .map(|s| {
            let state = state.clone();
            tokio::spawn(async move { call(&state, execute(code, s, 30_000)).await })
        });
    let mut intervals = Vec::new();
    for r in futures_util::future::join_all(requests).await {
        let (status, _, v) = r.expect("join");
        assert_eq!(status, StatusCode::OK, "{v}");
        let times: Vec<u128> = v["stdout"]
            .as_str()
            .expect("stdout")
            .lines()
            .map(|l| l.parse().expect("nanoseconds"))
            .collect();
        assert_eq!(times.len(), 2, "{v}");
        intervals.push((times[0], times[1]));
    }
    let most = max_overlap(&intervals);
    assert!(
        most <= 2,
        "{most} executions ran at once with maxConcurrent 2: {intervals:?}"
    );
    // The session containers are live (idle) and the slots are free again.
    assert_eq!(state.executing(), 0);
    state.shutdown().await;
}

/// State with a SQLite key store in `dir` and `policy`.
async fn keyed_state(dir: &std::path::Path, policy: isol8::config::ServerPolicy) -> Arc<AppState> {
    let engine = isol8_testkit::engine_with(EngineConfig::default()).await;
    let store = isol8_server::keys::open(dir.join("auth.db").to_str().expect("utf-8"))
        .await
        .expect("key store");
    AppState::with_settings(
        engine,
        EngineOptions::default(),
        KEY.into(),
        ServerSettings {
            policy,
            keys: Some(isol8_server::keys::Keys::new(store, None)),
            ..Default::default()
        },
    )
}

async fn key_for(state: &Arc<AppState>, tenant: &str) -> String {
    let (status, _, v) = call(
        state,
        post("/auth/keys", KEY, json!({"name": tenant, "tenant": tenant})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["key"].as_str().expect("key").to_string()
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn session_caps_answer_429_with_retry_after_in_total_and_per_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = isol8::config::ServerPolicy {
        max_sessions: Some(3),
        max_sessions_per_tenant: Some(2),
        ..Default::default()
    };
    let state = keyed_state(dir.path(), policy).await;
    let alpha = key_for(&state, "alpha").await;
    let beta = key_for(&state, "beta").await;
    let in_session = |key: &str, id: &str| {
        post(
            "/execute",
            key,
            json!({"request": {"runtime": "bash", "code": "echo here"}, "sessionId": id}),
        )
    };
    for id in ["a1", "a2"] {
        let (status, _, v) = call(&state, in_session(&alpha, id)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    // A third session for alpha: over the per-tenant cap. Nothing is created.
    let refused = call(&state, in_session(&alpha, "a3")).await;
    assert_busy(
        &refused,
        StatusCode::TOO_MANY_REQUESTS,
        "maxSessionsPerTenant",
    );
    // Beta takes the last place on the server; then the total cap holds for beta too.
    let (status, _, v) = call(&state, in_session(&beta, "b1")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let refused = call(&state, in_session(&beta, "b2")).await;
    assert_busy(&refused, StatusCode::TOO_MANY_REQUESTS, "maxSessions");
    // Existing sessions still work at the cap.
    let (status, _, v) = call(&state, in_session(&alpha, "a1")).await;
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("here\n"))
    );
    // Deleting one makes room again.
    let del = Request::delete("/session/a1")
        .header("authorization", format!("Bearer {alpha}"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(call(&state, del).await.0, StatusCode::OK);
    let (status, _, v) = call(&state, in_session(&alpha, "a3")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_burst_of_first_uses_makes_one_session_per_id_and_the_list_answers_meanwhile() {
    let engine = isol8_testkit::engine_with(EngineConfig::default()).await;
    let state = long_runs(engine);
    // Eight concurrent first uses of one id: one session, one container.
    let same = (0..8).map(|_| {
        let state = state.clone();
        tokio::spawn(async move { call(&state, execute("echo $$", Some("same"), 30_000)).await })
    });
    let mut containers = std::collections::HashSet::new();
    for r in futures_util::future::join_all(same).await {
        let (status, _, v) = r.expect("join");
        assert_eq!(status, StatusCode::OK, "{v}");
        containers.insert(v["containerId"].as_str().expect("containerId").to_string());
    }
    assert_eq!(containers.len(), 1, "one session container: {containers:?}");

    // While new sessions start their containers and run, the list answers and shows
    // them active.
    let burst: Vec<_> = (0..4)
        .map(|i| {
            let state = state.clone();
            tokio::spawn(async move {
                call(&state, execute("sleep 3", Some(&format!("b{i}")), 30_000)).await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _, v) = call(&state, get("/sessions", KEY)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let active = v["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .filter(|s| s["id"].as_str().is_some_and(|id| id.starts_with('b')))
            .filter(|s| s["isActive"] == true)
            .count();
        if active == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the burst never showed up: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        burst.iter().all(|t| !t.is_finished()),
        "the list was only answered after the burst"
    );
    for r in futures_util::future::join_all(burst).await {
        let (status, _, v) = r.expect("join");
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn busy_answers_carry_retry_after_and_draining_refuses_the_queue_while_running_ones_finish() {
    let engine = bounded(1).await;
    let state = long_runs(engine);
    let (addr, _server) = serve_state(state.clone()).await;
    // A holds the only slot.
    let client = reqwest::Client::new();
    let a = client
        .post(format!("http://{addr}/execute/stream"))
        .bearer_auth(KEY)
        .json(&json!({"request": {"runtime": "bash", "code": "echo started; sleep 3; echo done", "timeoutMs": 30000}}))
        .send()
        .await
        .expect("stream");
    assert_eq!(a.status(), 200);
    let mut a_body = a.bytes_stream();
    let mut a_text = String::new();
    while !a_text.contains("started") {
        let chunk = a_body.next().await.expect("A's output").expect("chunk");
        a_text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // B cannot get a slot within its 500 ms: 503 with Retry-After, buffered and streamed.
    let b = call(&state, execute("echo b", None, 500)).await;
    assert_busy(
        &b,
        StatusCode::SERVICE_UNAVAILABLE,
        "no execution slot became free",
    );
    let b_stream = post(
        "/execute/stream",
        KEY,
        json!({"request": {"runtime": "bash", "code": "echo b", "timeoutMs": 500}}),
    );
    assert_busy(
        &call(&state, b_stream).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "no execution slot",
    );
    // Over the WebSocket: an error event and close 1013 (try again later).
    let mut ws = connect_ws(&addr).await;
    ws.send(Message::Text(
        json!({"type": "execute", "request": {"runtime": "bash", "code": "echo b", "timeoutMs": 500}})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let (events, close) = drain_ws(&mut ws).await;
    assert_eq!(close, Some(1013), "{events:?}");
    assert!(events.iter().all(|e| e["type"] == "error"), "{events:?}");

    // C queues for the slot; draining refuses it at once while A runs on.
    let c = tokio::spawn({
        let state = state.clone();
        async move { call(&state, execute("echo c", None, 30_000)).await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while state.engine().running() < 2 {
        assert!(Instant::now() < deadline, "C never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    state.drain();
    let c = tokio::time::timeout(Duration::from_secs(30), c)
        .await
        .expect("C must be answered at once, not after A")
        .expect("join");
    assert_busy(&c, StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    assert_eq!(state.executing(), 1, "A still runs while C is refused");
    for req in [
        get("/sessions", KEY),
        Request::get("/health").body(Body::empty()).expect("req"),
    ] {
        assert_busy(
            &call(&state, req).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
        );
    }
    // A finishes normally.
    while let Some(chunk) = a_body.next().await {
        a_text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    assert!(a_text.contains(r#""data":"done\n""#), "{a_text}");
    let last = a_text
        .trim_end()
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("data: "))
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .map(common::without_usage);
    assert_eq!(
        last,
        Some(
            serde_json::json!({"type": "exit", "data": "0", "phase": "code", "exitReason": "exited"})
        ),
        "{a_text}"
    );
    state.shutdown().await;
}
