//! Sessions over the fake: tenancy, caps, files, listing, pruning and cleanup.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use super::{
    call, call_full, delete, error_of, execute, get, post, retry_after, server, server_with, KEY,
};
use crate::keys::{self, Keys};
use crate::ServerSettings;

#[tokio::test]
async fn sessions_belong_to_the_tenant_that_created_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = keys::open(dir.path().join("auth.db").to_str().expect("utf-8"))
        .await
        .expect("store");
    let state = server_with(
        Default::default(),
        ServerSettings {
            keys: Some(Keys::new(store, None)),
            ..Default::default()
        },
    )
    .state;
    let mut issued = Vec::new();
    for (name, tenant) in [("a", "alpha"), ("a2", "alpha"), ("b", "beta")] {
        let (status, v) = call(
            &state,
            post(
                "/auth/keys",
                Some(KEY),
                json!({"name": name, "tenant": tenant}).to_string(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        issued.push(v["key"].as_str().expect("key").to_string());
    }
    let (a, a2, b) = (&issued[0], &issued[1], &issued[2]);
    let file = "/file?sessionId=job-1&path=/sandbox/owner";
    let beta_before = call(&state, get(file, b)).await;
    assert_eq!(beta_before.0, StatusCode::NOT_FOUND, "{beta_before:?}");

    let (status, v) = call(
        &state,
        execute(a, "write /sandbox/owner alpha", Some("job-1")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // Beta cannot tell that alpha uses the id: same answer as before.
    assert_eq!(call(&state, get(file, b)).await, beta_before);
    assert_eq!(
        call(&state, get("/sessions", b)).await,
        (StatusCode::OK, json!({"sessions": []}))
    );
    // The master key sees every tenant's sessions, each with its tenant.
    let (_, v) = call(&state, get("/sessions", KEY)).await;
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        (&v["sessions"][0]["id"], &v["sessions"][0]["tenantId"]),
        (&json!("job-1"), &json!("alpha"))
    );
    let (status, _) = call(&state, delete("/session/job-1", b)).await;
    assert_eq!(status, StatusCode::OK);
    // Beta's own job-1 is another session, alpha's file unseen.
    let (_, v) = call(&state, execute(b, "cat /sandbox/owner", Some("job-1"))).await;
    assert_eq!(v["stderr"], "cat: /sandbox/owner: missing\n", "{v}");
    // Every key of the owning tenant shares alpha's.
    let (_, v) = call(&state, execute(a2, "cat /sandbox/owner", Some("job-1"))).await;
    assert_eq!(v["stdout"], "alpha", "{v}");
    for key in [a, a2, b] {
        let (_, v) = call(&state, get("/sessions", key)).await;
        assert_eq!(v["sessions"].as_array().map(Vec::len), Some(1), "{v}");
        assert_eq!(v["sessions"][0]["id"], "job-1");
    }
    // Deleting as alpha leaves beta's session alone.
    let (status, _) = call(&state, delete("/session/job-1", a)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        call(&state, get("/sessions", a)).await,
        (StatusCode::OK, json!({"sessions": []}))
    );
    let (_, v) = call(&state, get("/sessions", b)).await;
    assert_eq!(v["sessions"][0]["id"], "job-1");
}

#[tokio::test]
async fn session_caps_are_429_with_retry_after() {
    let s = server_with(
        Default::default(),
        ServerSettings {
            policy: isol8::config::ServerPolicy {
                max_sessions: Some(3),
                max_sessions_per_tenant: Some(2),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    for id in ["s1", "s2"] {
        let (status, v) = call(&s.state, execute(KEY, "echo", Some(id))).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let (status, headers, v) = call_full(&s.state, execute(KEY, "echo", Some("s3"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(
        error_of(&v).contains("serverPolicy.maxSessionsPerTenant"),
        "{v}"
    );
    assert_eq!(
        retry_after(&headers),
        Some(u64::from(crate::RETRY_AFTER_SESSIONS_SECS))
    );
    // An existing session is still served; a deleted one frees its place.
    assert_eq!(
        call(&s.state, execute(KEY, "echo", Some("s1"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&s.state, delete("/session/s2", KEY)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&s.state, execute(KEY, "echo", Some("s3"))).await.0,
        StatusCode::OK
    );
    assert_eq!(s.fake.sessions().len(), 3);
    assert!(s.fake.sessions()[1].is_stopped(), "s2 was stopped");
}

#[tokio::test]
async fn sessions_keep_files_run_on_the_clients_options_and_are_listed() {
    let s = server();
    let body = json!({
        "request": {"runtime": "bash", "code": "write /sandbox/a.txt kept"},
        "options": {"memoryLimit": "64m"},
        "sessionId": "s-1",
    });
    let (status, v) = call(&s.state, post("/execute", Some(KEY), body.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // The session was made from the client's options (checked by the policy), in
    // persistent mode; its first execution runs on them as they are.
    let session = &s.fake.sessions()[0];
    assert_eq!(session.options().memory_limit.as_deref(), Some("64m"));
    assert_eq!(
        session.options().mode,
        Some(isol8_protocol::options::Mode::Persistent)
    );
    assert_eq!(
        session.seen.lock().expect("lock")[0].1,
        isol8::EngineOptions::default()
    );
    let put = json!({"sessionId": "s-1", "path": "b.txt", "content": "aGk="});
    assert_eq!(
        call(&s.state, post("/file", Some(KEY), put.to_string())).await,
        (StatusCode::OK, json!({"ok": true}))
    );
    let (_, v) = call(&s.state, execute(KEY, "cat /sandbox/b.txt", Some("s-1"))).await;
    assert_eq!(v["stdout"], "hi");
    assert_eq!(
        call(
            &s.state,
            get("/file?sessionId=s-1&path=/sandbox/a.txt", KEY)
        )
        .await,
        (StatusCode::OK, json!({"content": "a2VwdA=="}))
    );
    let bad = json!({"sessionId": "s-1", "path": "/etc/passwd", "content": "aGk="});
    let (status, v) = call(&s.state, post("/file", Some(KEY), bad.to_string())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let bad = json!({"sessionId": "s-1", "path": "x", "content": "not base64!"});
    let (status, v) = call(&s.state, post("/file", Some(KEY), bad.to_string())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_of(&v).starts_with("content is not valid base64"),
        "{v}"
    );

    // Listed while an execution runs in it: active, and never pruned.
    let busy = tokio::spawn({
        let state = s.state.clone();
        async move { call(&state, execute(KEY, "wait\necho done", Some("s-1"))).await }
    });
    super::until("the session runs", || s.state.executing() == 1).await;
    let (_, v) = call(&s.state, get("/sessions", KEY)).await;
    assert_eq!(v["sessions"][0]["id"], "s-1");
    assert_eq!(v["sessions"][0]["isActive"], true);
    let at = v["sessions"][0]["lastAccessedAt"].as_str().expect("time");
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    assert_eq!(
        s.state.prune(Duration::ZERO).await,
        0,
        "an executing session stays"
    );
    s.fake.release();
    let (status, v) = busy.await.expect("join");
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("done\n"))
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(s.state.prune(Duration::ZERO).await, 1, "idle now");
    assert!(session.is_stopped());
    assert_eq!(
        call(&s.state, get("/sessions", KEY)).await,
        (StatusCode::OK, json!({"sessions": []}))
    );
}

#[tokio::test]
async fn cleanup_is_for_the_master_key_and_stops_every_session() {
    let s = server();
    for id in ["c1", "c2"] {
        assert_eq!(
            call(&s.state, execute(KEY, "echo", Some(id))).await.0,
            StatusCode::OK
        );
    }
    // An empty body: the reference's defaults (images too).
    let (status, v) = call(&s.state, post("/cleanup", Some(KEY), "")).await;
    let none = json!({"removed": 0, "failed": 0, "errors": []});
    assert_eq!(
        (status, v),
        (
            StatusCode::OK,
            json!({
                "ok": true,
                "sessions": {"removed": 2, "failed": 0, "errors": []},
                "containers": none,
                "images": {"removed": 2, "failed": 1, "errors": ["isol8:node: image is in use by a running container"]},
            })
        )
    );
    assert!(s.fake.sessions().iter().all(|f| f.is_stopped()));
    let (status, v) = call(
        &s.state,
        post("/cleanup", Some(KEY), r#"{"images": false}"#),
    )
    .await;
    assert_eq!(
        (status, v),
        (
            StatusCode::OK,
            json!({"ok": true, "sessions": none, "containers": none})
        )
    );
    let (status, v) = call(
        &s.state,
        post("/cleanup", Some(KEY), r#"{"images": "yes"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}
