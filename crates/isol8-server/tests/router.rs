//! The router driven without a socket (`tower::ServiceExt::oneshot`): auth, validation
//! and error shapes, plus real executions on the shared engine.
//!
//! Split by topic: this file holds health, validation, executions, streaming, OpenAPI and
//! the server policy; sessions are in `router_sessions.rs`, keys, login and tenancy in
//! `router_keys.rs`; shared helpers in `common/router.rs`.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::router::{call, post, state, KEY};
use http_body_util::BodyExt;
use isol8::{DockerEngine, EngineOptions};
use isol8_server::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn health_needs_no_key_and_everything_else_does() {
    let state = state().await;
    let (status, body) = call(
        &state,
        Request::get("/health").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert!(body["version"].is_string());

    let req = json!({"request": {"runtime": "python", "code": "print(1)"}}).to_string();
    let (status, body) = call(&state, post("/execute", None, req.clone())).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "Missing Authorization header"})
        )
    );
    let (status, body) = call(&state, post("/execute", Some("wrong-key"), req.clone())).await;
    assert_eq!(
        (status, body),
        (StatusCode::FORBIDDEN, json!({"error": "Invalid API key"}))
    );
    let (status, _) = call(
        &state,
        Request::get("/sessions").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn bad_bodies_get_json_errors_with_the_right_status() {
    let state = state().await;
    let cases: Vec<(Body, StatusCode, &str)> = vec![
        (Body::from("{not json"), StatusCode::BAD_REQUEST, ""),
        (Body::from(json!({"request": {"code": "x"}}).to_string()), StatusCode::BAD_REQUEST, "runtime"),
        (Body::from(json!({"request": {"runtime": 5, "code": "x"}}).to_string()), StatusCode::BAD_REQUEST, "runtime"),
        (Body::from(json!({"request": {"runtime": "cobol", "code": "x"}}).to_string()), StatusCode::BAD_REQUEST, "available runtimes"),
        (Body::from(json!({"request": {"runtime": "bash"}}).to_string()), StatusCode::BAD_REQUEST, "`code` or `cmd`"),
        (
            Body::from(json!({"request": {"runtime": "bash", "code": "true"}, "options": {"memoryLimit": "12q"}}).to_string()),
            StatusCode::BAD_REQUEST,
            "memoryLimit",
        ),
        (
            Body::from(json!({"request": {"runtime": "bash", "code": "true"}, "options": {"network": "bridge"}}).to_string()),
            StatusCode::BAD_REQUEST,
            "network",
        ),
        (Body::from(vec![b' '; isol8_server::MAX_BODY_BYTES + 10]), StatusCode::PAYLOAD_TOO_LARGE, ""),
    ];
    for (body, want, needle) in cases {
        let (status, v) = call(&state, post("/execute", Some(KEY), body)).await;
        assert_eq!(status, want, "{v}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("not a JSON error: {v}"));
        assert!(msg.contains(needle), "{msg}");
    }
    let (status, v) = call(
        &state,
        Request::get("/no/such/route")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(
        (status, v),
        (StatusCode::NOT_FOUND, json!({"error": "Not found"}))
    );
    let get = Request::get("/file?sessionId=nope&path=/sandbox/x")
        .header("authorization", format!("Bearer {KEY}"));
    let (status, v) = call(&state, get.body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let del = Request::delete("/session/nope").header("authorization", format!("Bearer {KEY}"));
    let (status, v) = call(&state, del.body(Body::empty()).expect("req")).await;
    assert_eq!(
        (status, v),
        (StatusCode::OK, json!({"ok": true})),
        "delete is idempotent"
    );
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn execute_runs_on_the_shared_warm_pool() {
    let state = state().await;
    let req = json!({"request": {"runtime": "python", "code": "print(6*7)"}}).to_string();
    let (status, a) = call(&state, post("/execute", Some(KEY), req.clone())).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["stdout"], "42\n");
    assert_eq!(a["exitCode"], 0);
    let (_, b) = call(&state, post("/execute", Some(KEY), req)).await;
    assert_eq!(
        a["containerId"], b["containerId"],
        "the second request must reuse the warm container"
    );
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn execute_stream_sends_server_sent_events_ending_with_exit() {
    let state = state().await;
    let body = json!({"request": {"runtime": "bash", "code": "echo one; echo two >&2; exit 3"}})
        .to_string();
    let resp = app(state.clone())
        .oneshot(post("/execute/stream", Some(KEY), body))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf-8");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect();
    assert!(
        events.contains(&json!({"type": "stdout", "data": "one\n", "phase": "code"})),
        "{events:?}"
    );
    assert!(
        events.contains(&json!({"type": "stderr", "data": "two\n", "phase": "code"})),
        "{events:?}"
    );
    assert_eq!(
        events.last().cloned().map(common::without_usage),
        Some(json!({"type": "exit", "data": "3", "phase": "code", "exitReason": "exited"}))
    );
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn openapi_describes_every_route() {
    let state = state().await;
    let (status, v) = call(
        &state,
        Request::get("/openapi.json")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/health",
        "/execute",
        "/execute/stream",
        "/execute/ws",
        "/file",
        "/sessions",
        "/session/{id}",
        "/cleanup",
        "/auth/keys",
        "/auth/keys/{id}",
        "/auth/login",
    ] {
        assert!(v["paths"][path].is_object(), "{path} missing");
    }
    assert!(v["paths"]["/auth/keys"]["post"].is_object());
    assert!(v["paths"]["/auth/keys"]["get"].is_object());
    assert!(v["paths"]["/auth/keys/{id}"]["delete"].is_object());
    assert!(v["components"]["schemas"]["Login"]["properties"]["ttlMs"].is_object());
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn the_server_policy_caps_what_clients_ask_for() {
    let policy = isol8::config::ServerPolicy {
        max_timeout_ms: Some(2000),
        ..Default::default()
    };
    // As `isol8 serve` does: defaults above a cap are lowered to it.
    let mut options = EngineOptions::default();
    isol8_server::policy::bound_defaults(&policy, &mut options).expect("valid policy");
    let engine = DockerEngine::connect(options.clone())
        .await
        .expect("engine");
    let state = AppState::with_policy(engine, options, KEY.into(), policy);
    let cases = [
        (
            json!({"request": {"runtime": "bash", "code": "true", "timeoutMs": 60000}}),
            "request.timeoutMs 60000 exceeds the server's limit of 2000 ms",
        ),
        (
            json!({"request": {"runtime": "bash", "code": "true"}, "options": {"network": "host"}}),
            "options.network `host` is not allowed",
        ),
        (
            json!({"request": {"runtime": "bash", "code": "true"}, "options": {"image": "alpine"}}),
            "custom images",
        ),
        (
            json!({"request": {"runtime": "bash", "code": "true"}, "options": {"security": {"seccomp": "unconfined"}}}),
            "seccomp",
        ),
    ];
    for (body, want) in cases {
        let (status, v) = call(&state, post("/execute", Some(KEY), body.to_string())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains(want)), "{v}");
    }
    let ok = json!({"request": {"runtime": "bash", "code": "echo fine", "timeoutMs": 1500}});
    let (status, v) = call(&state, post("/execute", Some(KEY), ok.to_string())).await;
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("fine\n")),
        "{v}"
    );
    state.shutdown().await;
}

/// Samples of a Prometheus text scrape, keyed `name{a="x",b="y"}` with sorted labels.
fn samples(text: &str) -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let mut labels: Vec<&str> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
            .collect();
        labels.sort_unstable();
        out.insert(
            format!("{name}{{{}}}", labels.join(",")),
            value.parse().expect("value"),
        );
    }
    out
}

/// One sample (0 when the series was not touched yet).
fn sample(s: &std::collections::HashMap<String, f64>, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(0.0)
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn metrics_count_three_real_executions_their_sandboxes_and_containers() {
    let metrics = Arc::new(isol8_server::metrics::Metrics::new());
    let engine = isol8_testkit::engine_with(isol8::docker::EngineConfig {
        observer: Some(metrics.clone()),
        ..Default::default()
    })
    .await;
    let state = AppState::with_settings(
        engine,
        EngineOptions::default(),
        KEY.into(),
        isol8_server::ServerSettings {
            metrics: metrics.clone(),
            ..Default::default()
        },
    );
    let scrape = || async {
        let (status, v) = call(&state, common::router::get("/metrics", KEY)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        samples(v["raw"].as_str().expect("text"))
    };
    let before = scrape().await;
    for (code, exit) in [("echo one", 0), ("exit 3", 3), ("echo three", 0)] {
        let body = json!({"request": {"runtime": "bash", "code": code}}).to_string();
        let (status, v) = call(&state, post("/execute", Some(KEY), body)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["exitCode"], exit, "{v}");
    }
    // The used sandbox goes back to the pool after its reset, in the background.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let after = loop {
        let s = scrape().await;
        if sample(&s, "isol8_pool_sandboxes{state=\"clean\"}") >= 1.0 {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pool never showed a clean sandbox"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let moved = |key: &str| sample(&after, key) - sample(&before, key);
    assert_eq!(
        moved("isol8_executions_total{outcome=\"ok\",runtime=\"bash\"}"),
        2.0
    );
    assert_eq!(
        moved("isol8_executions_total{outcome=\"nonzero_exit\",runtime=\"bash\"}"),
        1.0
    );
    let hits = moved("isol8_pool_acquires_total{result=\"hit\"}");
    let misses = moved("isol8_pool_acquires_total{result=\"miss\"}");
    assert_eq!(hits + misses, 3.0, "one sandbox per execution");
    assert!(
        hits >= 1.0,
        "later runs reuse the reset sandbox: {hits} hits"
    );
    assert_eq!(moved("isol8_run_seconds_count{runtime=\"bash\"}"), 3.0);
    assert_eq!(moved("isol8_queue_wait_seconds_count{}"), 3.0);
    assert!(moved("isol8_containers_created_total{}") >= 1.0);
    assert_eq!(
        moved("isol8_http_requests_total{method=\"POST\",route=\"/execute\",status=\"200\"}"),
        3.0
    );
    let created = sample(&after, "isol8_containers_created_total{}");
    state.shutdown().await;
    // Every container the engine made is removed by the shutdown, and counted.
    let last = samples(&metrics.encode().expect("encode"));
    assert_eq!(
        sample(&last, "isol8_containers_destroyed_total{}"),
        sample(&last, "isol8_containers_created_total{}"),
    );
    assert!(sample(&last, "isol8_containers_created_total{}") >= created);
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn metrics_count_what_the_egress_proxy_of_a_real_sandbox_blocks() {
    let metrics = Arc::new(isol8_server::metrics::Metrics::new());
    let options = EngineOptions {
        network: Some(isol8_protocol::NetworkMode::Filtered),
        ..Default::default()
    };
    let engine = isol8_testkit::engine_with(isol8::docker::EngineConfig {
        options: options.clone(),
        observer: Some(metrics.clone()),
        ..Default::default()
    })
    .await;
    let state = AppState::with_settings(
        engine,
        options,
        KEY.into(),
        isol8_server::ServerSettings {
            metrics: metrics.clone(),
            ..Default::default()
        },
    );
    // Two requests the proxy refuses before dialling anything (a private address and the
    // metadata endpoint); traffic goes only to the sandbox's loopback proxy.
    let code = "import socket\n\
        for head in ['CONNECT 10.0.0.1:443 HTTP/1.1\\r\\n\\r\\n', 'CONNECT 169.254.169.254:80 HTTP/1.1\\r\\n\\r\\n']:\n    \
            s = socket.create_connection(('127.0.0.1', 3128), timeout=20)\n    \
            s.sendall(head.encode())\n    \
            print(s.recv(200).split(b'\\r\\n')[0].decode())\n    \
            s.close()\n";
    let body = json!({"request": {"runtime": "python", "code": code}}).to_string();
    let (status, v) = call(&state, post("/execute", Some(KEY), body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["stdout"]
            .as_str()
            .expect("stdout")
            .matches(" 403")
            .count(),
        2,
        "{v}"
    );
    let s = samples(&metrics.encode().expect("encode"));
    assert_eq!(
        sample(&s, "isol8_egress_requests_total{action=\"block\"}"),
        2.0
    );
    assert_eq!(
        sample(&s, "isol8_egress_requests_total{action=\"allow\"}"),
        0.0
    );
    state.shutdown().await;
}
