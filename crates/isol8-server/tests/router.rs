//! The router driven without a socket (`tower::ServiceExt::oneshot`): auth, validation
//! and error shapes, plus real executions on the shared engine.
//!
//! Split by topic: this file holds health, validation, executions, streaming, OpenAPI and
//! the server policy; sessions are in `router_sessions.rs`, keys, login and tenancy in
//! `router_keys.rs`; shared helpers in `common/router.rs`.

mod common;

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
        events.last(),
        Some(&json!({"type": "exit", "data": "3", "phase": "code"}))
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
