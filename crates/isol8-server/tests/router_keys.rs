//! Keys through the router (driven without a socket): database keys managed with the
//! master key only, login issuing expiring keys, servers without a key store, key
//! databases isol8 v0.20 wrote (SQLite, PostgreSQL, MySQL), and sessions that belong to
//! the tenant that created them.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::reference::Db;
use common::router::{call, delete, get, post, state, KEY};
use isol8::EngineOptions;
use isol8_server::AppState;
use serde_json::{json, Value};

/// State with the key store of `conn` (`default_ttl` for keys created without one).
async fn state_on(conn: &str, default_ttl: Option<std::time::Duration>) -> Arc<AppState> {
    let engine = isol8_testkit::engine(EngineOptions::default()).await;
    let store = isol8_server::keys::open(conn).await.expect("key store");
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

/// State with a SQLite key store in `dir` (`default_ttl` for keys created without one).
async fn keyed_state(
    dir: &std::path::Path,
    default_ttl: Option<std::time::Duration>,
) -> Arc<AppState> {
    state_on(dir.join("auth.db").to_str().expect("utf-8"), default_ttl).await
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

/// The listed keys, by id.
async fn listed(state: &Arc<AppState>, query: &str) -> std::collections::BTreeMap<String, Value> {
    let (status, v) = call(state, get(&format!("/auth/keys{query}"), KEY)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| (k["id"].as_str().expect("id").to_string(), k.clone()))
        .collect()
}

/// Milliseconds from `createdAt` to `expiresAt` of a listed key.
fn lifetime_ms(k: &Value) -> i64 {
    let t = |f: &str| {
        chrono::DateTime::parse_from_rfc3339(k[f].as_str().unwrap_or_else(|| panic!("{f}: {k}")))
            .expect("rfc3339")
    };
    (t("expiresAt") - t("createdAt")).num_milliseconds()
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
            json!({"name": "ci", "tenantId": "alpha", "ttlMs": 60_000}).to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let key = v["key"].as_str().expect("key").to_string();
    let id = v["id"].as_str().expect("id").to_string();
    assert!(isol8_server::keys::is_key_shaped(&key), "{key}");
    assert_eq!(
        v,
        json!({
            "id": id, "key": key, "name": "ci", "keyPrefix": format!("{}...", &key[..10]),
            "tenantId": "alpha", "expiresAt": v["expiresAt"],
        })
    );

    // The list shows metadata, never a key or a hash.
    let (status, list) = call(&state, get("/auth/keys", KEY)).await;
    assert_eq!(status, StatusCode::OK);
    let text = list.to_string();
    assert!(!text.contains(&key), "{text}");
    assert!(
        !text.contains(&common::reference::sha256_hex(&key)),
        "{text}"
    );
    assert!(!text.contains("\"key\""), "{text}");
    let keys = listed(&state, "").await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[&id]["expiresAt"], v["expiresAt"]);
    assert_eq!(lifetime_ms(&keys[&id]), 60_000);
    assert_eq!(keys[&id]["lastUsedAt"], Value::Null);

    // The database key works on ordinary routes (its use is recorded) but not on
    // master-only ones.
    let (status, v) = call(&state, get("/sessions", &key)).await;
    assert_eq!((status, v), (StatusCode::OK, json!({"sessions": []})));
    assert!(listed(&state, "").await[&id]["lastUsedAt"].is_string());
    for req in [
        get("/auth/keys", &key),
        post("/auth/keys", Some(&key), json!({"name": "x"}).to_string()),
        post("/auth/login", Some(&key), "{}"),
        post("/cleanup", Some(&key), "{}"),
    ] {
        let (status, v) = call(&state, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert!(
            v["error"]
                .as_str()
                .expect("error")
                .contains("Master key required"),
            "{v}"
        );
    }

    // Bad bodies name the field.
    for (body, field) in [
        (json!({}), "name is required"),
        (json!({"name": ""}), "name is required"),
        (json!({"name": "n", "tenantId": "a\nb"}), "tenantId"),
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
    let (other, other_id) = new_key(&state, json!({"name": "other", "tenantId": "beta"})).await;
    let (status, _) = call(&state, delete(&format!("/auth/keys/{id}"), &other)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&state, get("/sessions", &key)).await;
    assert_eq!(status, StatusCode::OK, "still valid");
    for _ in 0..2 {
        let (status, v) = call(&state, delete(&format!("/auth/keys/{id}"), KEY)).await;
        assert_eq!((status, v), (StatusCode::OK, json!({"ok": true, "id": id})));
    }
    assert_eq!(call(&state, get("/sessions", &key)).await, invalid());
    assert_eq!(
        call(&state, delete("/auth/keys/no-such-id", KEY)).await,
        (StatusCode::NOT_FOUND, json!({"error": "Key not found"}))
    );
    assert_eq!(listed(&state, "").await[&id]["revoked"], true);

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
async fn login_issues_an_expiring_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ttl = std::time::Duration::from_secs(600);
    let state = keyed_state(dir.path(), Some(ttl)).await;
    // An empty body is `{}`: name `login-<time>`, tenant `default`, auth.defaultTtlMs.
    let (status, v) = call(&state, post("/auth/login", Some(KEY), "")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let token = v["token"].as_str().expect("token").to_string();
    let id = v["keyId"].as_str().expect("keyId").to_string();
    assert_eq!(
        v,
        json!({"token": token, "expiresAt": v["expiresAt"], "keyId": id})
    );
    let k = &listed(&state, "").await[&id];
    assert_eq!(k["tenantId"], "default");
    assert!(
        k["name"].as_str().is_some_and(|n| n.starts_with("login-")),
        "{k}"
    );
    assert_eq!(lifetime_ms(k), 600_000);
    let (status, _) = call(&state, get("/sessions", &token)).await;
    assert_eq!(status, StatusCode::OK);

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
    let k = &listed(&state, "?tenantId=t1").await[v["keyId"].as_str().expect("keyId")];
    assert_eq!((k["name"].as_str(), lifetime_ms(k)), (Some("laptop"), 5000));
    let (status, v) = call(&state, post("/auth/login", Some(KEY), "{\"ttl\": 1}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn without_a_key_store_auth_routes_say_so_and_db_shaped_keys_are_refused() {
    let state = state().await;
    for req in [
        get("/auth/keys", KEY),
        post("/auth/keys", Some(KEY), json!({"name": "x"}).to_string()),
        post("/auth/login", Some(KEY), ""),
        delete("/auth/keys/some-id", KEY),
    ] {
        assert_eq!(
            call(&state, req).await,
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "DB-backed auth is not enabled"})
            )
        );
    }
    let key = isol8_server::keys::generate_key().expect("key");
    assert_eq!(call(&state, get("/sessions", &key)).await, invalid());
    state.shutdown().await;
}

/// A database isol8 v0.20 wrote (made by the test with its table and its keys) serves
/// as it is: its keys authenticate, are listed as it wrote them (with their use
/// recorded), are revoked over `DELETE /auth/keys/:id`, and expired ones are refused.
async fn serves_a_database_isol8_v0_20_wrote(db: Db) {
    let f = db.write_reference().await;
    let state = state_on(&db.conn(), None).await;

    assert_eq!(
        call(&state, get("/sessions", &f.valid.key)).await,
        (StatusCode::OK, json!({"sessions": []}))
    );
    assert_eq!(
        call(&state, get("/sessions", &f.expired.key)).await,
        invalid()
    );
    assert_eq!(
        call(&state, get("/sessions", &f.revoked.key)).await,
        invalid()
    );

    let keys = listed(&state, "").await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    for k in f.all() {
        let l = &keys[&k.id];
        assert_eq!(
            (
                l["name"].as_str(),
                l["keyPrefix"].as_str(),
                l["tenantId"].as_str(),
                l["createdAt"].as_str(),
                l["expiresAt"].as_str(),
                l["revoked"].as_bool()
            ),
            (
                Some(k.name.as_str()),
                Some(k.prefix().as_str()),
                Some(k.tenant.as_str()),
                Some(k.created_at.as_str()),
                Some(k.expires_at.as_str()),
                Some(k.revoked)
            ),
            "{l}"
        );
    }
    assert!(keys[&f.valid.id]["lastUsedAt"].is_string(), "{keys:?}");
    assert_eq!(keys[&f.expired.id]["lastUsedAt"], Value::Null);
    let org2 = listed(&state, "?tenantId=org-2").await;
    assert_eq!(org2.keys().collect::<Vec<_>>(), [&f.revoked.id]);

    // Revoked over the API: refused from then on, and so stored.
    assert_eq!(
        call(&state, delete(&format!("/auth/keys/{}", f.valid.id), KEY)).await,
        (StatusCode::OK, json!({"ok": true, "id": f.valid.id}))
    );
    assert_eq!(
        call(&state, get("/sessions", &f.valid.key)).await,
        invalid()
    );
    assert!(db.row(&f.valid.id).await.expect("row").revoked);

    // The key store's cleanup deletes the expired and revoked keys.
    let cleaner = isol8_server::keys::Keys::new(
        isol8_server::keys::open(&db.conn()).await.expect("open"),
        None,
    );
    assert_eq!(cleaner.cleanup().await.expect("cleanup"), 3);
    assert_eq!(listed(&state, "").await.len(), 0);
    state.shutdown().await;
    db.drop_all().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_sqlite_database_isol8_v0_20_wrote_serves_its_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    serves_a_database_isol8_v0_20_wrote(Db::sqlite(&dir.path().join("auth.db"))).await;
}

#[isol8_testkit::test(docker, postgres, flavor = "multi_thread")]
async fn a_postgres_database_isol8_v0_20_wrote_serves_its_keys() {
    serves_a_database_isol8_v0_20_wrote(Db::postgres(&isol8_testkit::postgres_url()).await).await;
}

#[isol8_testkit::test(docker, mysql, flavor = "multi_thread")]
async fn a_mysql_database_isol8_v0_20_wrote_serves_its_keys() {
    serves_a_database_isol8_v0_20_wrote(Db::mysql(&isol8_testkit::mysql_url()).await).await;
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
