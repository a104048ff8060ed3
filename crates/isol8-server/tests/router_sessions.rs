//! Sessions through the router (driven without a socket): files kept and moved as bytes,
//! idle sessions pruned but never an executing one, and a planted FIFO refused without
//! harming the session.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::router::{call, post, state, KEY};
use serde_json::json;

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn sessions_keep_files_and_move_bytes() {
    let state = state().await;
    let exec = |code: &str| {
        json!({"request": {"runtime": "bash", "code": code}, "sessionId": "s-1"}).to_string()
    };
    let (status, v) = call(
        &state,
        post("/execute", Some(KEY), exec("echo kept > /sandbox/a.txt")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let put =
        json!({"sessionId": "s-1", "path": "/sandbox/b.bin", "content": "AAEC/w=="}).to_string();
    let (status, v) = call(&state, post("/file", Some(KEY), put)).await;
    assert_eq!((status, v), (StatusCode::OK, json!({"ok": true})));
    let (_, v) = call(
        &state,
        post(
            "/execute",
            Some(KEY),
            exec("cat a.txt; od -An -tx1 b.bin | tr -d ' \\n'"),
        ),
    )
    .await;
    assert_eq!(v["stdout"], "kept\n000102ff");
    let get = Request::get("/file?sessionId=s-1&path=/sandbox/a.txt")
        .header("authorization", format!("Bearer {KEY}"));
    let (status, v) = call(&state, get.body(Body::empty()).expect("req")).await;
    assert_eq!(
        (status, v),
        (StatusCode::OK, json!({"content": "a2VwdAo="}))
    );
    let list = Request::get("/sessions").header("authorization", format!("Bearer {KEY}"));
    let (_, v) = call(&state, list.body(Body::empty()).expect("req")).await;
    assert_eq!(v["sessions"][0]["id"], "s-1");
    assert_eq!(v["sessions"][0]["isActive"], false);
    assert!(v["sessions"][0]["lastAccessedAt"].is_string());
    let del = Request::delete("/session/s-1").header("authorization", format!("Bearer {KEY}"));
    let (status, _) = call(&state, del.body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::OK);
    let list = Request::get("/sessions").header("authorization", format!("Bearer {KEY}"));
    let (_, v) = call(&state, list.body(Body::empty()).expect("req")).await;
    assert_eq!(v, json!({"sessions": []}));
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn pruning_removes_idle_sessions_and_never_an_executing_one() {
    let state = state().await;
    let exec = |id: &str, code: &str| {
        json!({"request": {"runtime": "bash", "code": code}, "sessionId": id}).to_string()
    };
    let (status, _) = call(&state, post("/execute", Some(KEY), exec("idle", "echo hi"))).await;
    assert_eq!(status, StatusCode::OK);
    let busy_state = state.clone();
    let busy = tokio::spawn(async move {
        call(
            &busy_state,
            post("/execute", Some(KEY), exec("busy", "sleep 2; echo done")),
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(
        state.prune(std::time::Duration::from_millis(100)).await,
        1,
        "only the idle session goes"
    );
    let list = Request::get("/sessions").header("authorization", format!("Bearer {KEY}"));
    let (_, v) = call(&state, list.body(Body::empty()).expect("req")).await;
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["sessions"][0]["id"], "busy");
    assert_eq!(v["sessions"][0]["isActive"], true);
    let (status, v) = busy.await.expect("join");
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("done\n")),
        "the running execution was disturbed"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        state.prune(std::time::Duration::from_millis(100)).await,
        1,
        "idle now, so pruned"
    );
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_file_written_over_a_planted_fifo_is_refused_and_the_session_stays_usable() {
    let state = state().await;
    let exec = |code: &str| {
        json!({"request": {"runtime": "bash", "code": code}, "sessionId": "s-fifo"}).to_string()
    };
    let (status, v) = call(
        &state,
        post(
            "/execute",
            Some(KEY),
            exec("mkfifo /sandbox/in.txt && echo planted"),
        ),
    )
    .await;
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("planted\n")),
        "{v}"
    );
    let put = json!({"sessionId": "s-fifo", "path": "/sandbox/in.txt", "content": "ZGF0YQ=="})
        .to_string();
    // The timeout only keeps a regression (a request that never returns) from hanging.
    let (status, v) = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        call(&state, post("/file", Some(KEY), put)),
    )
    .await
    .expect("POST /file over a FIFO hung");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a regular file")),
        "{v}"
    );
    // The session's lock was released: the next request on it runs.
    let (status, v) = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        call(
            &state,
            post(
                "/execute",
                Some(KEY),
                exec("test -p /sandbox/in.txt && echo still-here"),
            ),
        ),
    )
    .await
    .expect("the session stays locked");
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("still-here\n")),
        "{v}"
    );
    state.shutdown().await;
}
