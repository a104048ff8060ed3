//! Load and faults against a real engine: sessions count against `maxConcurrent` and are
//! capped (429), busy answers carry `Retry-After`, draining refuses the queue at once
//! while running executions finish, and a sandbox killed or frozen mid-run is reported
//! as lost on every route (SSE, WebSocket close 1011, `/execute` 500, `RemoteEngine`),
//! never as an exit code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use isol8::docker::EngineConfig;
use isol8::{DockerEngine, Engine, EngineOptions, RemoteEngine, StreamEventType};
use isol8_server::{app, AppState, ServerSettings};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceExt;

const KEY: &str = "load-test-master-key-0123456789";

/// A shared engine bounded to `max` concurrent executions.
async fn bounded(max: usize) -> DockerEngine {
    isol8_testkit::engine_with(EngineConfig {
        max_concurrent: Some(max),
        ..Default::default()
    })
    .await
}

/// Server state whose operator allows runs of up to 120 s (these tests ask for long
/// timeouts so that only what they test ends a run; the server's own default, 30 s, is
/// otherwise the cap).
fn long_runs(engine: DockerEngine) -> Arc<AppState> {
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
async fn call(state: &Arc<AppState>, req: Request<Body>) -> (StatusCode, Option<String>, Value) {
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

fn post(path: &str, key: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::from(body.to_string()))
        .expect("request")
}

fn get(path: &str, key: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request")
}

/// `POST /execute` of bash `code` (in session `session`, if any) with `timeout_ms`.
fn execute(code: &str, session: Option<&str>, timeout_ms: u64) -> Request<Body> {
    let mut body = json!({"request": {"runtime": "bash", "code": code, "timeoutMs": timeout_ms}});
    if let Some(id) = session {
        body["sessionId"] = json!(id);
    }
    post("/execute", KEY, body)
}

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
    assert!(
        a_text
            .trim_end()
            .ends_with(r#"data: {"type":"exit","data":"0"}"#),
        "{a_text}"
    );
    state.shutdown().await;
}

/// Serves `state` on a loopback port.
async fn serve_state(state: Arc<AppState>) -> (String, tokio::task::JoinHandle<()>) {
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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_ws(addr: &str) -> Ws {
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
async fn drain_ws(ws: &mut Ws) -> (Vec<Value>, Option<u16>) {
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

/// Asserts a stream's events end with a `sandbox lost: …` error and hold no exit event.
fn assert_lost(events: &[Value]) {
    let last = events.last().expect("events");
    assert_eq!(last["type"], "error", "{events:?}");
    assert!(
        last["data"]
            .as_str()
            .is_some_and(|d| d.starts_with("sandbox lost: ")),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e["type"] == "exit"),
        "no exit code is made up: {events:?}"
    );
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_sandbox_killed_mid_run_is_reported_lost_on_every_route() {
    let engine = isol8_testkit::engine_with(EngineConfig::default()).await;
    let state = long_runs(engine.clone());
    let (addr, _server) = serve_state(state.clone()).await;
    let run =
        |code: &str| json!({"request": {"runtime": "bash", "code": code, "timeoutMs": 30000}});

    // Server-sent events: the stream ends after the error, with no exit event.
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

    // WebSocket: the same events, then close 1011 (not a normal 1000).
    let mut ws = connect_ws(&addr).await;
    let mut msg = run("echo started; sleep 72");
    msg["type"] = json!("execute");
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .expect("send");
    kill(&engine, &container_running(&engine, "sleep 72").await).await;
    let (events, close) = drain_ws(&mut ws).await;
    assert_lost(&events);
    assert_eq!(close, Some(1011), "{events:?}");

    // Buffered: 500 saying the sandbox was lost.
    let buffered = tokio::spawn({
        let state = state.clone();
        async move { call(&state, post("/execute", KEY, run("sleep 73"))).await }
    });
    kill(&engine, &container_running(&engine, "sleep 73").await).await;
    let (status, _, v) = buffered.await.expect("join");
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("sandbox lost: ")),
        "{v}"
    );

    // RemoteEngine, over the WebSocket: the stream ends with the error, no exit; and
    // buffered, a typed error.
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
    let err = buffered
        .await
        .expect("join")
        .expect_err("a lost sandbox is an error");
    assert!(matches!(err, isol8::Error::SandboxLost(_)), "{err:?}");
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
