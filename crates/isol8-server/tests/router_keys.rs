//! Keys through the router (driven without a socket): database keys managed with the
//! master key only, login issuing expiring keys, servers without a key store, and
//! sessions that belong to the tenant that created them.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::router::{call, delete, get, post, state, KEY};
use isol8::EngineOptions;
use isol8_server::AppState;
use serde_json::{json, Value};

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
    // The master key sees every tenant's sessions, each with its tenant.
    let (_, v) = call(&state, get("/sessions", KEY)).await;
    let listed: Vec<(&str, &str)> = v["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| Some((s["tenantId"].as_str()?, s["id"].as_str()?)))
        .collect();
    assert_eq!(listed, [("alpha", "job-1")], "{v}");
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
