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

/// The fields of a JSON object, sorted.
fn fields(v: &Value) -> Vec<String> {
    let mut f: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    f.sort_unstable();
    f
}

/// The listed metadata of key `id`.
async fn listed(state: &Arc<AppState>, id: &str) -> Value {
    let (status, list) = call(state, get("/auth/keys", KEY)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
}

/// Milliseconds from `createdAt` to `expiresAt` of a listed key.
fn lifetime_ms(k: &Value) -> i64 {
    let t = |f: &str| {
        keys::parse_time(k[f].as_str().unwrap_or_else(|| panic!("{f}: {k}")))
            .unwrap_or_else(|| panic!("{f} is not RFC 3339: {k}"))
    };
    (t("expiresAt") - t("createdAt")).num_milliseconds()
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
            json!({"name": "ci", "tenantId": "alpha", "ttlMs": 60_000}).to_string(),
        ),
    )
    .await;
    // 201 {id, key, name, keyPrefix, tenantId, expiresAt}, as isol8 v0.20 answers.
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(
        fields(&v),
        ["expiresAt", "id", "key", "keyPrefix", "name", "tenantId"]
    );
    let key = v["key"].as_str().expect("key").to_string();
    let id = v["id"].as_str().expect("id").to_string();
    assert!(keys::is_key_shaped(&key), "{key}");
    assert_eq!(v["keyPrefix"], format!("{}...", &key[..10]));
    assert_eq!(
        (v["name"].as_str(), v["tenantId"].as_str()),
        (Some("ci"), Some("alpha"))
    );

    // The list shows metadata, never a key or a hash; lastUsedAt is null until used.
    let (status, list) = call(&state, get("/auth/keys", KEY)).await;
    assert_eq!(status, StatusCode::OK);
    let text = list.to_string();
    assert!(
        !text.contains(&key) && !text.contains(&keys::hash_key(&key)),
        "{text}"
    );
    assert!(!text.contains("\"key\""), "{text}");
    let k = listed(&state, &id).await;
    assert_eq!(
        fields(&k),
        [
            "createdAt",
            "expiresAt",
            "id",
            "keyPrefix",
            "lastUsedAt",
            "name",
            "revoked",
            "tenantId"
        ]
    );
    assert_eq!(k["expiresAt"], v["expiresAt"]);
    assert_eq!(lifetime_ms(&k), 60_000);
    assert_eq!(
        (k["lastUsedAt"].clone(), k["revoked"].clone()),
        (Value::Null, json!(false))
    );

    // The database key works on ordinary routes, which records its use.
    assert_eq!(
        call(&state, get("/sessions", &key)).await,
        (StatusCode::OK, json!({"sessions": []}))
    );
    let used = listed(&state, &id).await["lastUsedAt"].clone();
    assert!(
        used.as_str().and_then(keys::parse_time).is_some(),
        "lastUsedAt after use: {used}"
    );
    // Not on master-only ones.
    for req in [
        get("/auth/keys", &key),
        post("/auth/keys", Some(&key), json!({"name": "x"}).to_string()),
        post("/auth/login", Some(&key), "{}"),
        post("/cleanup", Some(&key), "{}"),
    ] {
        let (status, v) = call(&state, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(error_of(&v), "Master key required for this operation");
    }

    // Bad bodies name the field; a missing name is isol8 v0.20's `name is required`.
    for (body, message) in [
        (json!({}), "name is required"),
        (json!({"name": ""}), "name is required"),
        (json!({"name": null, "tenantId": "t"}), "name is required"),
        (json!({"name": "n", "tenantId": "a\nb"}), "tenantId"),
        (json!({"name": "n", "ttlMs": 0}), "ttlMs"),
        (json!({"name": "n", "bogus": 1}), "bogus"),
    ] {
        let (status, v) = call(&state, post("/auth/keys", Some(KEY), body.to_string())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(error_of(&v).contains(message), "{body}: {v}");
    }

    // Another key cannot revoke it; the master can, idempotently; then it is refused.
    let (other, other_id) = new_key(&state, json!({"name": "other", "tenantId": "beta"})).await;
    let (status, v) = call(&state, delete(&format!("/auth/keys/{id}"), &other)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(error_of(&v).starts_with("Master key required"), "{v}");
    assert!(error_of(&v).contains("only revoke itself"), "{v}");
    for _ in 0..2 {
        assert_eq!(
            call(&state, delete(&format!("/auth/keys/{id}"), KEY)).await,
            (StatusCode::OK, json!({"ok": true, "id": id}))
        );
    }
    assert_eq!(listed(&state, &id).await["revoked"], true);
    assert_eq!(call(&state, get("/sessions", &key)).await, invalid());
    assert_eq!(
        call(&state, delete("/auth/keys/no-such-id", KEY)).await,
        (StatusCode::NOT_FOUND, json!({"error": "Key not found"}))
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
async fn keys_default_to_the_default_tenant_and_lifetime_and_list_by_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Without auth.defaultTtlMs: 24 hours.
    let state = keyed(dir.path(), None).await;
    let (status, v) = call(
        &state,
        post(
            "/auth/keys",
            Some(KEY),
            json!({"name": "plain"}).to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["tenantId"], "default");
    let plain = v["id"].as_str().expect("id").to_string();
    assert_eq!(lifetime_ms(&listed(&state, &plain).await), 86_400_000);

    // `tenant` (this server's earlier name for it) is accepted too.
    let (_, a) = new_key(&state, json!({"name": "a", "tenantId": "alpha"})).await;
    let (_, a2) = new_key(&state, json!({"name": "a2", "tenant": "alpha"})).await;
    let (_, b) = new_key(&state, json!({"name": "b", "tenantId": "beta"})).await;
    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["id"].as_str().expect("id").to_string())
            .collect();
        ids.sort_unstable();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort_unstable();
        v
    };
    let (status, alpha) = call(&state, get("/auth/keys?tenantId=alpha", KEY)).await;
    assert_eq!(status, StatusCode::OK, "{alpha}");
    assert_eq!(ids(&alpha), sorted(vec![a.clone(), a2.clone()]));
    let (_, beta) = call(&state, get("/auth/keys?tenantId=beta", KEY)).await;
    assert_eq!(ids(&beta), vec![b.clone()]);
    let (_, none) = call(&state, get("/auth/keys?tenantId=nobody", KEY)).await;
    assert_eq!(none, json!({"keys": []}));
    // An empty filter (or other parameters) lists every key.
    let (_, all) = call(&state, get("/auth/keys?tenantId=&x=1", KEY)).await;
    assert_eq!(ids(&all), sorted(vec![plain, a, a2, b]));

    // auth.defaultTtlMs sets the default lifetime.
    let dir = tempfile::tempdir().expect("tempdir");
    let state = keyed(dir.path(), Some(Duration::from_secs(600))).await;
    let (_, id) = new_key(&state, json!({"name": "ten-minutes"})).await;
    assert_eq!(lifetime_ms(&listed(&state, &id).await), 600_000);
}

#[tokio::test]
async fn login_answers_token_expiry_and_key_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = keyed(dir.path(), Some(Duration::from_secs(600))).await;
    // An empty body is `{}`: name `login-<time>`, tenant `default`, auth.defaultTtlMs.
    let (status, v) = call(&state, post("/auth/login", Some(KEY), "")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(fields(&v), ["expiresAt", "keyId", "token"]);
    let token = v["token"].as_str().expect("token").to_string();
    assert!(keys::is_key_shaped(&token), "{token}");
    let k = listed(&state, v["keyId"].as_str().expect("keyId")).await;
    assert_eq!(k["expiresAt"], v["expiresAt"]);
    assert_eq!(k["tenantId"], "default");
    assert!(
        k["name"].as_str().is_some_and(|n| n.starts_with("login-")),
        "{k}"
    );
    assert_eq!(lifetime_ms(&k), 600_000);
    assert_eq!(
        call(&state, get("/sessions", &token)).await.0,
        StatusCode::OK
    );

    let (status, v) = call(
        &state,
        post(
            "/auth/login",
            Some(KEY),
            json!({"name": "laptop", "tenantId": "t1", "ttlMs": 5000}).to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let k = listed(&state, v["keyId"].as_str().expect("keyId")).await;
    assert_eq!(
        (k["name"].as_str(), k["tenantId"].as_str(), lifetime_ms(&k)),
        (Some("laptop"), Some("t1"), 5000)
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
        get("/auth/keys?tenantId=a", KEY),
        post("/auth/keys", Some(KEY), json!({"name": "x"}).to_string()),
        // Said before the body is looked at, as isol8 v0.20 does.
        post("/auth/keys", Some(KEY), "{not json"),
        post("/auth/login", Some(KEY), ""),
        delete("/auth/keys/some-id", KEY),
    ] {
        assert_eq!(
            call(&s.state, req).await,
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "DB-backed auth is not enabled"})
            )
        );
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
    async fn touch(&self, _: &str, _: &str) -> keys::Result<()> {
        Err(down("touch"))
    }
    async fn get(&self, _: &str) -> keys::Result<Option<KeyInfo>> {
        Err(down("get"))
    }
    async fn list(&self, _: Option<&str>) -> keys::Result<Vec<KeyInfo>> {
        Err(down("list"))
    }
    async fn revoke(&self, _: &str) -> keys::Result<bool> {
        Err(down("revoke"))
    }
    async fn remove_stale(&self, _: &str) -> keys::Result<u64> {
        Err(down("cleanup"))
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

/// A working store whose last-use updates fail (a read-only database, say).
#[derive(Debug)]
struct NoTouch(Arc<dyn KeyStore>);

#[async_trait::async_trait]
impl KeyStore for NoTouch {
    async fn insert(&self, info: &KeyInfo, hash: &str) -> keys::Result<()> {
        self.0.insert(info, hash).await
    }
    async fn find_by_hash(&self, hash: &str) -> keys::Result<Option<(KeyInfo, String)>> {
        self.0.find_by_hash(hash).await
    }
    async fn touch(&self, _: &str, _: &str) -> keys::Result<()> {
        Err(down("touch"))
    }
    async fn get(&self, id: &str) -> keys::Result<Option<KeyInfo>> {
        self.0.get(id).await
    }
    async fn list(&self, tenant: Option<&str>) -> keys::Result<Vec<KeyInfo>> {
        self.0.list(tenant).await
    }
    async fn revoke(&self, id: &str) -> keys::Result<bool> {
        self.0.revoke(id).await
    }
    async fn remove_stale(&self, now: &str) -> keys::Result<u64> {
        self.0.remove_stale(now).await
    }
}

#[tokio::test]
async fn a_key_whose_use_cannot_be_recorded_still_authenticates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = keys::open(dir.path().join("auth.db").to_str().expect("utf-8"))
        .await
        .expect("key store");
    let state = server_with(
        Default::default(),
        ServerSettings {
            keys: Some(Keys::new(Arc::new(NoTouch(store)), None)),
            ..Default::default()
        },
    )
    .state;
    let (key, id) = new_key(&state, json!({"name": "ro"})).await;
    assert_eq!(
        call(&state, get("/sessions", &key)).await,
        (StatusCode::OK, json!({"sessions": []}))
    );
    assert_eq!(listed(&state, &id).await["lastUsedAt"], Value::Null);
}

/// A refused request's body is never read, so the server closes the connection after the
/// 401/403; it must say so (`Connection: close`), or a client that pools connections sends
/// its next request on the closing one and gets no answer (seen with httpx: 5 in 200).
#[tokio::test]
async fn a_refused_request_closes_its_connection_openly_so_keep_alive_clients_never_race_it() {
    let s = super::server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = crate::app(s.state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let client = reqwest::Client::new();
    let body = json!({"request": {"runtime": "bash", "code": "x".repeat(100_000)}});
    for round in 0..200 {
        for key in [None, Some("wrong-key")] {
            let mut req = client.post(format!("{base}/execute")).json(&body);
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            let resp = req.send().await.expect("refusal");
            let expected = if key.is_some() { 403 } else { 401 };
            assert_eq!(resp.status().as_u16(), expected);
            assert_eq!(resp.headers()["connection"], "close");
            // The next request goes out on the same client (its pool) and must be answered.
            let health = client
                .get(format!("{base}/health"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("round {round}: the request after a refusal: {e}"));
            assert_eq!(health.status().as_u16(), 200);
        }
    }
}
