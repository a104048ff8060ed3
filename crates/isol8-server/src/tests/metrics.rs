//! `GET /metrics` over the fake backend: counters move by exactly what the requests did,
//! the route label is the route's template, and the endpoint needs a key unless public.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use isol8_testkit::prometheus::Scrape;
use serde_json::json;
use tower::ServiceExt;

use super::stream::{connect, drain, execute_msg, listen, send};
use super::{call, delete, execute, get, post, server, server_with, KEY};
use crate::{app, AppState, ServerSettings};

/// Scrapes `/metrics` with the master key.
async fn scrape(state: &Arc<AppState>) -> Scrape {
    let resp = app(state.clone())
        .oneshot(get("/metrics", KEY))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let kind = resp.headers()["content-type"].to_str().expect("ascii");
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Scrape::parse(std::str::from_utf8(&bytes).expect("utf-8"))
}

/// Runs `code` on `/execute/stream` to its end.
async fn stream(state: &Arc<AppState>, code: &str) {
    let body = json!({"request": {"runtime": "bash", "code": code}}).to_string();
    let resp = app(state.clone())
        .oneshot(post("/execute/stream", Some(KEY), body))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.expect("body");
}

const EXEC: &str = "isol8_executions_total";
const HTTP: &str = "isol8_http_requests_total";

fn exec(runtime: &'static str, outcome: &'static str) -> [(&'static str, &'static str); 2] {
    [("runtime", runtime), ("outcome", outcome)]
}

fn http(
    route: &'static str,
    method: &'static str,
    status: &'static str,
) -> [(&'static str, &'static str); 3] {
    [("route", route), ("method", method), ("status", status)]
}

#[tokio::test]
async fn executions_and_http_requests_move_the_counters_by_exactly_what_was_done() {
    let s = server();
    let before = scrape(&s.state).await;

    // Buffered: ok, nonzero exit, timeout, lost sandbox (500), a sandbox lost under the
    // program (a result, still the sandbox layer failing: an error), refused twice (a
    // runtime nobody has: 400, counted as `other`; a timeout above the policy's cap: 400).
    for (code, status) in [
        ("echo hi", StatusCode::OK),
        ("exit 3", StatusCode::OK),
        ("timeout", StatusCode::OK),
        ("lose", StatusCode::INTERNAL_SERVER_ERROR),
        ("died", StatusCode::OK),
        ("oom", StatusCode::OK),
    ] {
        let (got, v) = call(&s.state, execute(KEY, code, None)).await;
        assert_eq!(got, status, "{code}: {v}");
    }
    let cobol = json!({"request": {"runtime": "cobol", "code": "echo hi"}}).to_string();
    let (got, _) = call(&s.state, post("/execute", Some(KEY), cobol)).await;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    let too_long = json!({"request": {"runtime": "bash", "code": "echo hi"}, "options": {"timeoutMs": 3_600_000}}).to_string();
    let (got, v) = call(&s.state, post("/execute", Some(KEY), too_long)).await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{v}");

    // Streamed: ok, timeout, lost (no exit event), lost under the program (sandboxLost).
    stream(&s.state, "echo hi").await;
    stream(&s.state, "timeout").await;
    stream(&s.state, "lose").await;
    stream(&s.state, "died").await;
    stream(&s.state, "oom").await;

    // WebSocket: a nonzero exit.
    let url = listen(&s.state).await;
    let mut ws = connect(&url).await;
    send(&mut ws, execute_msg("exit 4")).await;
    let (_, close) = drain(&mut ws).await;
    assert_eq!(close, Some(1000));

    // A session: one execution in it, then it is deleted.
    let (got, _) = call(&s.state, execute(KEY, "echo in", Some("job-1"))).await;
    assert_eq!(got, StatusCode::OK);
    let during = scrape(&s.state).await;
    assert_eq!(during.get("isol8_sessions_live", &[]), 1.0);
    let (got, _) = call(&s.state, delete("/session/job-1", KEY)).await;
    assert_eq!(got, StatusCode::OK);

    // A path no route has; a request without a key.
    let (got, _) = call(&s.state, get("/no/such/route", KEY)).await;
    assert_eq!(got, StatusCode::NOT_FOUND);
    let (got, _) = call(&s.state, post("/execute", None, "{}")).await;
    assert_eq!(got, StatusCode::UNAUTHORIZED);

    // The WebSocket's run is counted when its socket closes, after the close frame.
    super::until("the WebSocket execution is counted", || {
        s.state
            .metrics()
            .encode()
            .map(|t| Scrape::parse(&t).get(EXEC, &exec("bash", "nonzero_exit")) >= 2.0)
            .unwrap_or(false)
    })
    .await;
    let after = scrape(&s.state).await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);

    assert_eq!(
        moved(EXEC, &exec("bash", "ok")),
        3.0,
        "buffered, streamed, session"
    );
    assert_eq!(
        moved(EXEC, &exec("bash", "nonzero_exit")),
        2.0,
        "buffered, WebSocket"
    );
    assert_eq!(
        moved(EXEC, &exec("bash", "timeout")),
        2.0,
        "buffered, streamed"
    );
    assert_eq!(
        moved(EXEC, &exec("bash", "memory_limit")),
        2.0,
        "buffered, streamed: not a nonzero exit"
    );
    assert_eq!(
        moved(EXEC, &exec("bash", "error")),
        4.0,
        "buffered and streamed, lost with and without a result"
    );
    assert_eq!(moved(EXEC, &exec("bash", "refused")), 1.0, "the policy cap");
    assert_eq!(
        moved(EXEC, &exec("other", "refused")),
        1.0,
        "an unknown runtime"
    );
    assert_eq!(after.get("isol8_sessions_live", &[]), 0.0);

    // 6 + 1 + 2 answered 200/500/400 on /execute (the session's one included).
    assert_eq!(moved(HTTP, &http("/execute", "POST", "200")), 6.0);
    assert_eq!(moved(HTTP, &http("/execute", "POST", "500")), 1.0);
    assert_eq!(moved(HTTP, &http("/execute", "POST", "400")), 2.0);
    assert_eq!(moved(HTTP, &http("/execute", "POST", "401")), 1.0);
    assert_eq!(moved(HTTP, &http("/execute/stream", "POST", "200")), 5.0);
    assert_eq!(moved(HTTP, &http("/execute/ws", "GET", "101")), 1.0);
    assert_eq!(moved(HTTP, &http("/session/{id}", "DELETE", "200")), 1.0);
    assert_eq!(moved(HTTP, &http("unmatched", "GET", "404")), 1.0);
    // The scrapes themselves are counted too (the one in between and the first one).
    assert_eq!(moved(HTTP, &http("/metrics", "GET", "200")), 2.0);
    // No raw path ever becomes a label.
    assert!(
        !after
            .series()
            .any(|k| k.contains("job-1") || k.contains("/no/such")),
        "{:?}",
        after.series().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn metrics_need_a_key_unless_the_operator_made_them_public() {
    let s = server();
    let anonymous = || {
        Request::get("/metrics")
            .body(Body::empty())
            .expect("request")
    };
    let (status, _) = call(&s.state, anonymous()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&s.state, get("/metrics", "not-the-key")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let open = server_with(
        isol8::EngineOptions::default(),
        ServerSettings {
            metrics_public: true,
            ..Default::default()
        },
    );
    let (status, v) = call(&open.state, anonymous()).await;
    assert_eq!(status, StatusCode::OK);
    let text = v["raw"].as_str().expect("text");
    assert!(
        text.contains("# TYPE isol8_containers_created_total counter"),
        "{text}"
    );
    // Only /metrics is opened: executing still needs a key.
    let (status, _) = call(&open.state, post("/execute", None, "{}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[test]
fn the_engine_observer_feeds_the_pool_container_egress_and_time_series() {
    use isol8::stats::EngineObserver;
    let m = crate::metrics::Metrics::new();
    let o: &dyn EngineObserver = &m;
    o.queue_wait(std::time::Duration::from_millis(3));
    o.sandbox_acquired("python", std::time::Duration::from_millis(2), true);
    o.sandbox_acquired("python", std::time::Duration::from_millis(900), false);
    o.run_finished("python", std::time::Duration::from_millis(40));
    o.container_created();
    o.container_created();
    o.container_destroyed();
    o.reset_failed();
    o.egress(true);
    o.egress(false);
    o.egress(false);
    m.set_gauges(
        crate::backend::PoolSizes {
            clean: 2,
            dirty: 1,
            busy: 3,
            starting: 0,
        },
        5,
    );
    let s = Scrape::parse(&m.encode().expect("encode"));
    assert_eq!(s.get("isol8_queue_wait_seconds_count", &[]), 1.0);
    assert_eq!(
        s.get("isol8_pool_acquires_total", &[("result", "hit")]),
        1.0
    );
    assert_eq!(
        s.get("isol8_pool_acquires_total", &[("result", "miss")]),
        1.0
    );
    assert_eq!(
        s.get("isol8_sandbox_acquire_seconds_count", &[("pool", "miss")]),
        1.0
    );
    assert_eq!(
        s.get(
            "isol8_sandbox_acquire_seconds_bucket",
            &[("pool", "miss"), ("le", "0.5")]
        ),
        0.0,
        "900 ms is above the 0.5 s bucket"
    );
    assert_eq!(
        s.get(
            "isol8_sandbox_acquire_seconds_bucket",
            &[("pool", "miss"), ("le", "1")]
        ),
        1.0
    );
    assert_eq!(
        s.get("isol8_run_seconds_count", &[("runtime", "python")]),
        1.0
    );
    assert_eq!(s.get("isol8_containers_created_total", &[]), 2.0);
    assert_eq!(s.get("isol8_containers_destroyed_total", &[]), 1.0);
    assert_eq!(s.get("isol8_sandbox_reset_failures_total", &[]), 1.0);
    assert_eq!(
        s.get("isol8_egress_requests_total", &[("action", "allow")]),
        1.0
    );
    assert_eq!(
        s.get("isol8_egress_requests_total", &[("action", "block")]),
        2.0
    );
    assert_eq!(s.get("isol8_pool_sandboxes", &[("state", "clean")]), 2.0);
    assert_eq!(s.get("isol8_pool_sandboxes", &[("state", "dirty")]), 1.0);
    assert_eq!(s.get("isol8_pool_sandboxes", &[("state", "busy")]), 3.0);
    assert_eq!(s.get("isol8_sessions_live", &[]), 5.0);
}
