//! The router driven without a socket (`tower::ServiceExt::oneshot`): auth, validation
//! and error shapes, plus real executions on the shared engine.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use isol8::{DockerEngine, EngineOptions};
use isol8_server::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

const KEY: &str = "test-master-key-0123456789";

async fn state() -> Arc<AppState> {
    let engine = isol8_testkit::engine(EngineOptions::default()).await;
    AppState::new(engine, EngineOptions::default(), KEY.into())
}

async fn call(state: &Arc<AppState>, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app(state.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, value)
}

fn post(path: &str, key: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post(path).header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(body.into()).expect("request")
}

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
    assert_eq!(events.last(), Some(&json!({"type": "exit", "data": "3"})));
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

/// State with a SQLite key store in `dir` (`default_ttl` for keys created without one).
async fn keyed_state(
    dir: &std::path::Path,
    default_ttl: Option<std::time::Duration>,
) -> Arc<AppState> {
    let engine = isol8_testkit::engine(EngineOptions::default()).await;
    let path = dir.join("auth.db");
    let store = isol8_server::keys::open(path.to_str().expect("utf-8"))
        .await
        .expect("key store");
    AppState::with_settings(
        engine,
        EngineOptions::default(),
        KEY.into(),
        isol8_server::ServerSettings {
            keys: Some(isol8_server::keys::Keys::new(store, default_ttl)),
            ..Default::default()
        },
    )
}

fn get(path: &str, key: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request")
}

fn delete(path: &str, key: &str) -> Request<Body> {
    Request::delete(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request")
}

/// Creates a key with the master key; returns (key, id).
async fn new_key(state: &Arc<AppState>, body: Value) -> (String, String) {
    let (status, v) = call(state, post("/auth/keys", Some(KEY), body.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    (
        v["key"].as_str().expect("key").to_string(),
        v["id"].as_str().expect("id").to_string(),
    )
}

fn invalid() -> (StatusCode, Value) {
    (StatusCode::FORBIDDEN, json!({"error": "Invalid API key"}))
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn database_keys_are_managed_with_the_master_key_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = keyed_state(dir.path(), None).await;

    let (status, v) = call(
        &state,
        post(
            "/auth/keys",
            Some(KEY),
            json!({"name": "ci", "tenant": "alpha", "ttlMs": 60_000}).to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let key = v["key"].as_str().expect("key").to_string();
    let id = v["id"].as_str().expect("id").to_string();
    assert!(isol8_server::keys::is_key_shaped(&key), "{key}");
    assert_eq!(
        (v["name"].as_str(), v["tenant"].as_str()),
        (Some("ci"), Some("alpha"))
    );
    assert_eq!(v["revoked"], false);
    let created = chrono::DateTime::parse_from_rfc3339(v["createdAt"].as_str().expect("createdAt"))
        .expect("rfc3339");
    let expires = chrono::DateTime::parse_from_rfc3339(v["expiresAt"].as_str().expect("expiresAt"))
        .expect("rfc3339");
    assert_eq!((expires - created).num_milliseconds(), 60_000);

    // The list shows metadata, never a key or a hash.
    let (status, list) = call(&state, get("/auth/keys", KEY)).await;
    assert_eq!(status, StatusCode::OK);
    let text = list.to_string();
    assert!(!text.contains(&key), "{text}");
    assert!(
        !text.contains(&isol8_server::keys::hash_key(&key)),
        "{text}"
    );
    assert!(!text.contains("\"key\""), "{text}");
    let listed = list["keys"].as_array().expect("keys");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());

    // The database key works on ordinary routes but not on master-only ones.
    let (status, v) = call(&state, get("/sessions", &key)).await;
    assert_eq!((status, v), (StatusCode::OK, json!({"sessions": []})));
    for req in [
        get("/auth/keys", &key),
        post("/auth/keys", Some(&key), json!({"name": "x"}).to_string()),
        post("/auth/login", Some(&key), "{}"),
        post("/cleanup", Some(&key), "{}"),
    ] {
        let (status, v) = call(&state, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert!(
            v["error"].as_str().expect("error").contains("master key"),
            "{v}"
        );
    }

    // Bad bodies name the field.
    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "n", "tenant": "a\nb"}), "tenant"),
        (json!({"name": "n", "ttlMs": 0}), "ttlMs"),
        (json!({"name": "n", "bogus": 1}), "bogus"),
    ] {
        let (status, v) = call(&state, post("/auth/keys", Some(KEY), body.to_string())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["error"].as_str().expect("error").contains(field),
            "{body}: {v}"
        );
    }

    // Another key cannot revoke it; the master can, idempotently; then it is refused.
    let (other, other_id) = new_key(&state, json!({"name": "other", "tenant": "beta"})).await;
    let (status, _) = call(&state, delete(&format!("/auth/keys/{id}"), &other)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&state, get("/sessions", &key)).await;
    assert_eq!(status, StatusCode::OK, "still valid");
    for _ in 0..2 {
        let (status, v) = call(&state, delete(&format!("/auth/keys/{id}"), KEY)).await;
        assert_eq!((status, v), (StatusCode::OK, json!({"ok": true})));
    }
    assert_eq!(call(&state, get("/sessions", &key)).await, invalid());
    let (status, _) = call(&state, delete("/auth/keys/no-such-id", KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = call(&state, get("/auth/keys", KEY)).await;
    assert_eq!(
        list["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["id"] == id.as_str())
            .expect("revoked key still listed")["revoked"],
        true
    );

    // A key may revoke itself (what `isol8 logout` does).
    let (status, _) = call(&state, delete(&format!("/auth/keys/{other_id}"), &other)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(call(&state, get("/sessions", &other)).await, invalid());

    // Expired and unknown keys get the same answer as revoked ones.
    let (short, _) = new_key(&state, json!({"name": "short", "ttlMs": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(call(&state, get("/sessions", &short)).await, invalid());
    let unknown = isol8_server::keys::generate_key().expect("key");
    assert_eq!(call(&state, get("/sessions", &unknown)).await, invalid());
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn login_issues_an_expiring_key_acting_as_the_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ttl = std::time::Duration::from_secs(600);
    let state = keyed_state(dir.path(), Some(ttl)).await;
    // An empty body is `{}`: name `login`, the master's tenant, auth.defaultTtlMs.
    let (status, v) = call(&state, post("/auth/login", Some(KEY), "")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["name"].as_str(), v["tenant"].as_str()),
        (Some("login"), Some("master"))
    );
    let created = chrono::DateTime::parse_from_rfc3339(v["createdAt"].as_str().expect("createdAt"))
        .expect("rfc3339");
    let expires = chrono::DateTime::parse_from_rfc3339(v["expiresAt"].as_str().expect("expiresAt"))
        .expect("rfc3339");
    assert_eq!((expires - created).num_milliseconds(), 600_000);
    let key = v["key"].as_str().expect("key").to_string();
    let (status, _) = call(&state, get("/sessions", &key)).await;
    assert_eq!(status, StatusCode::OK);

    let (status, v) = call(
        &state,
        post(
            "/auth/login",
            Some(KEY),
            json!({"name": "laptop", "tenant": "t1", "ttlMs": 5000}).to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["tenant"], "t1");
    let (status, v) = call(&state, post("/auth/login", Some(KEY), "{\"ttl\": 1}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn without_a_key_store_auth_routes_say_so_and_db_shaped_keys_are_refused() {
    let state = state().await;
    let (status, v) = call(&state, get("/auth/keys", KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        v["error"].as_str().expect("error").contains("--auth-db"),
        "{v}"
    );
    let key = isol8_server::keys::generate_key().expect("key");
    assert_eq!(call(&state, get("/sessions", &key)).await, invalid());
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn sessions_belong_to_the_tenant_that_created_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = keyed_state(dir.path(), None).await;
    let (a, _) = new_key(&state, json!({"name": "a", "tenant": "alpha"})).await;
    let (a2, _) = new_key(&state, json!({"name": "a2", "tenant": "alpha"})).await;
    let (b, _) = new_key(&state, json!({"name": "b", "tenant": "beta"})).await;

    let run = |key: &str, code: &str| {
        post(
            "/execute",
            Some(key),
            json!({"request": {"runtime": "bash", "code": code}, "sessionId": "job-1"}).to_string(),
        )
    };
    let file = "/file?sessionId=job-1&path=/sandbox/owner";
    // Before alpha has the id, beta's view of it; it must not change once alpha has it.
    let beta_before = call(&state, get(file, &b)).await;
    assert_eq!(beta_before.0, StatusCode::NOT_FOUND, "{beta_before:?}");

    let (status, v) = call(&state, run(&a, "echo alpha > /sandbox/owner")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let alpha_container = v["containerId"].clone();

    // Beta cannot tell that alpha uses the id: same answer as before.
    assert_eq!(call(&state, get(file, &b)).await, beta_before);
    assert_eq!(
        call(&state, get("/sessions", &b)).await,
        (StatusCode::OK, json!({"sessions": []}))
    );
    assert_eq!(
        call(&state, get("/sessions", KEY)).await,
        (StatusCode::OK, json!({"sessions": []})),
        "the master key is a tenant of its own"
    );
    // Deleting "job-1" as beta touches only beta's namespace.
    let (status, _) = call(&state, delete("/session/job-1", &b)).await;
    assert_eq!(status, StatusCode::OK);

    // Beta may use the same id: its own session, in its own container, alpha's unseen.
    let (status, v) = call(
        &state,
        run(
            &b,
            "cat /sandbox/owner 2>/dev/null || echo none; echo beta > /sandbox/owner",
        ),
    )
    .await;
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("none\n")),
        "{v}"
    );
    assert_ne!(v["containerId"], alpha_container);
    let (_, v) = call(&state, run(&b, "cat /sandbox/owner")).await;
    assert_eq!(v["stdout"], "beta\n");

    // Every key of the owning tenant shares alpha's, untouched by beta.
    let (status, v) = call(&state, run(&a2, "cat /sandbox/owner")).await;
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("alpha\n"))
    );
    assert_eq!(v["containerId"], alpha_container);
    for key in [&a, &a2, &b] {
        let (_, v) = call(&state, get("/sessions", key)).await;
        let ids: Vec<&str> = v["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .filter_map(|s| s["id"].as_str())
            .collect();
        assert_eq!(ids, vec!["job-1"], "each tenant lists its own");
    }
    assert_eq!(
        call(&state, get(file, &b)).await,
        (StatusCode::OK, json!({"content": "YmV0YQo="}))
    );

    // Deleting as alpha leaves beta's session alone.
    let (status, _) = call(&state, delete("/session/job-1", &a)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        call(&state, get("/sessions", &a)).await,
        (StatusCode::OK, json!({"sessions": []}))
    );
    let (_, v) = call(&state, run(&b, "cat /sandbox/owner")).await;
    assert_eq!(v["stdout"], "beta\n");
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
