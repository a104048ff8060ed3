//! Authentication and database keys (SQLite in a temporary directory) over the fake.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};

use super::{call, call_full, delete, error_of, get, post, retry_after, server_with, KEY};
use crate::keys::{self, KeyInfo, KeyStore, Keys, StoreError};
use crate::{AppState, ServerSettings};

fn invalid() -> (StatusCode, Value) {
    (StatusCode::FORBIDDEN, json!({"error": "Invalid API key"}))
}

async fn keyed(dir: &std::path::Path, default_ttl: Option<Duration>) -> Arc<AppState> {
    let store = keys::open(dir.join("auth.db").to_str().expect("utf-8"))
        .await
        .expect("key store");
    server_with(
        Default::default(),
        ServerSettings {
            keys: Some(Keys::new(store, default_ttl)),
            ..Default::default()
        },
    )
    .state
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

#[tokio::test]
async fn health_needs_no_key_and_everything_else_does() {
    let s = super::server();
    let (status, body) = call(
        &s.state,
        Request::get("/health").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"status": "ok", "version": crate::VERSION})
        )
    );
    let req = json!({"request": {"runtime": "bash", "code": "echo hi"}}).to_string();
    assert_eq!(
        call(&s.state, post("/execute", None, req.clone())).await,
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "Missing Authorization header"})
        )
    );
    assert_eq!(
        call(&s.state, post("/execute", Some("wrong-key"), req.clone())).await,
        invalid()
    );
    // Not a bearer token, or the master key with a byte more or less.
    let basic = Request::get("/sessions")
        .header("authorization", format!("Basic {KEY}"))
        .body(Body::empty())
        .expect("req");
    assert_eq!(call(&s.state, basic).await, invalid());
    assert_eq!(
        call(&s.state, get("/sessions", &format!("{KEY}x"))).await,
        invalid()
    );
    assert_eq!(call(&s.state, get("/sessions", &KEY[1..])).await, invalid());
    for path in ["/sessions", "/auth/keys", "/openapi.json"] {
        let (status, _) = call(
            &s.state,
            Request::get(path).body(Body::empty()).expect("req"),
        )
        .await;
        let want = if path == "/openapi.json" {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(status, want, "{path}");
    }
    // Nothing ran for the refused requests.
    assert!(s.fake.seen.lock().expect("lock").is_empty());
    let (status, v) = call(&s.state, post("/execute", Some(KEY), req)).await;
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("hi\n"))
    );
}

#[tokio::test]
async fn database_keys_are_managed_with_the_master_key_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = keyed(dir.path(), None).await;
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
    assert!(keys::is_key_shaped(&key), "{key}");
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
    let fields: Vec<&String> = v.as_object().expect("object").keys().collect();
    assert_eq!(
        fields.len(),
        7,
        "id, name, tenant, createdAt, expiresAt, revoked, key: {v}"
    );

    // The list shows metadata, never a key or a hash.
    let (status, list) = call(&state, get("/auth/keys", KEY)).await;
    assert_eq!(status, StatusCode::OK);
    let text = list.to_string();
    assert!(
        !text.contains(&key) && !text.contains(&keys::hash_key(&key)),
        "{text}"
    );
    assert!(!text.contains("\"key\""), "{text}");
    assert_eq!(list["keys"][0]["id"], id.as_str());

    // The database key works on ordinary routes but not on master-only ones.
    assert_eq!(
        call(&state, get("/sessions", &key)).await,
        (StatusCode::OK, json!({"sessions": []}))
    );
    for req in [
        get("/auth/keys", &key),
        post("/auth/keys", Some(&key), json!({"name": "x"}).to_string()),
        post("/auth/login", Some(&key), "{}"),
        post("/cleanup", Some(&key), "{}"),
    ] {
        let (status, v) = call(&state, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(error_of(&v), "this route needs the master key");
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
        assert!(error_of(&v).contains(field), "{body}: {v}");
    }

    // Another key cannot revoke it; the master can, idempotently; then it is refused.
    let (other, other_id) = new_key(&state, json!({"name": "other", "tenant": "beta"})).await;
    let (status, v) = call(&state, delete(&format!("/auth/keys/{id}"), &other)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(error_of(&v).contains("only revoke itself"), "{v}");
    for _ in 0..2 {
        assert_eq!(
            call(&state, delete(&format!("/auth/keys/{id}"), KEY)).await,
            (StatusCode::OK, json!({"ok": true}))
        );
    }
    assert_eq!(call(&state, get("/sessions", &key)).await, invalid());
    assert_eq!(
        call(&state, delete("/auth/keys/no-such-id", KEY)).await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": "API key `no-such-id` not found"})
        )
    );
    // A key may revoke itself (what `isol8 logout` does).
    let (status, _) = call(&state, delete(&format!("/auth/keys/{other_id}"), &other)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(call(&state, get("/sessions", &other)).await, invalid());

    // Expired and unknown keys get the same answer as revoked ones.
    let (short, _) = new_key(&state, json!({"name": "short", "ttlMs": 1})).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(call(&state, get("/sessions", &short)).await, invalid());
    let unknown = keys::generate_key().expect("key");
    assert_eq!(call(&state, get("/sessions", &unknown)).await, invalid());
}

#[tokio::test]
async fn login_issues_an_expiring_key_acting_as_the_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = keyed(dir.path(), Some(Duration::from_secs(600))).await;
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
    assert_eq!(call(&state, get("/sessions", &key)).await.0, StatusCode::OK);
    let (status, v) = call(
        &state,
        post(
            "/auth/login",
            Some(KEY),
            json!({"name": "laptop", "tenant": "t1", "ttlMs": 5000}).to_string(),
        ),
    )
    .await;
    assert_eq!(
        (status, v["tenant"].as_str()),
        (StatusCode::CREATED, Some("t1"))
    );
    let (status, v) = call(&state, post("/auth/login", Some(KEY), "{\"ttl\": 1}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(error_of(&v).contains("ttl"), "{v}");
}

#[tokio::test]
async fn without_a_key_store_auth_routes_say_so_and_db_shaped_keys_are_refused() {
    let s = super::server();
    for req in [
        get("/auth/keys", KEY),
        post("/auth/keys", Some(KEY), json!({"name": "x"}).to_string()),
        post("/auth/login", Some(KEY), ""),
        delete("/auth/keys/some-id", KEY),
    ] {
        let (status, v) = call(&s.state, req).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        assert!(error_of(&v).contains("--auth-db"), "{v}");
    }
    let key = keys::generate_key().expect("key");
    assert_eq!(call(&s.state, get("/sessions", &key)).await, invalid());
}

/// A key store whose database is down (its errors carry what a client must not see).
#[derive(Debug)]
struct DownStore;

fn down(op: &'static str) -> StoreError {
    StoreError {
        op,
        message: "password authentication failed for user \"isol8\" at 10.1.2.3".into(),
    }
}

#[async_trait::async_trait]
impl KeyStore for DownStore {
    async fn insert(&self, _: &KeyInfo, _: &str) -> keys::Result<()> {
        Err(down("insert"))
    }
    async fn find_by_hash(&self, _: &str) -> keys::Result<Option<(KeyInfo, String)>> {
        Err(down("find"))
    }
    async fn get(&self, _: &str) -> keys::Result<Option<KeyInfo>> {
        Err(down("get"))
    }
    async fn list(&self) -> keys::Result<Vec<KeyInfo>> {
        Err(down("list"))
    }
    async fn revoke(&self, _: &str) -> keys::Result<bool> {
        Err(down("revoke"))
    }
}

#[tokio::test]
async fn a_key_store_that_is_down_is_a_503_with_retry_after_and_no_database_text() {
    let state = server_with(
        Default::default(),
        ServerSettings {
            keys: Some(Keys::new(Arc::new(DownStore), None)),
            ..Default::default()
        },
    )
    .state;
    // The master key still works without the store; a database key cannot be checked.
    assert_eq!(call(&state, get("/sessions", KEY)).await.0, StatusCode::OK);
    let key = keys::generate_key().expect("key");
    for req in [
        get("/sessions", &key),
        get("/auth/keys", KEY),
        post("/auth/keys", Some(KEY), json!({"name": "x"}).to_string()),
        delete("/auth/keys/x", KEY),
    ] {
        let (status, headers, v) = call_full(&state, req).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert!(retry_after(&headers).is_some_and(|s| s >= 1), "{headers:?}");
        let message = error_of(&v);
        assert!(message.contains("API key store is unavailable"), "{v}");
        assert!(
            !message.contains("password") && !message.contains("10.1.2.3"),
            "{v}"
        );
    }
}
