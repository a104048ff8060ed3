//! The API key stores against real databases: an embedded SQLite file and a PostgreSQL
//! server (`ISOL8_TEST_POSTGRES_URL`, which `scripts/test.sh` provides; with `CI` set a
//! missing URL fails the test, otherwise it skips saying so).

use std::sync::Arc;
use std::time::Duration;

use isol8_server::keys::{self, KeyStore, Keys};

/// The same checks for every backend. Tenants and names are unique per run so that
/// concurrent runs against one database do not see each other's keys as their own.
async fn exercise(store: Arc<dyn KeyStore>) {
    let run = uuid::Uuid::new_v4().to_string();
    let tenant = format!("tenant-{run}");
    let keys = Keys::new(store.clone(), None);

    let (key, info) = keys
        .create("ci", Some(&tenant), None)
        .await
        .expect("create");
    assert!(keys::is_key_shaped(&key), "{key}");
    assert_eq!(
        (info.name.as_str(), info.tenant.as_str()),
        ("ci", tenant.as_str())
    );
    assert_eq!(
        info.expires_at_ms, None,
        "no TTL and no default: never expires"
    );
    assert!(!info.revoked);

    // The key authenticates as its tenant; a wrong or malformed key does not.
    let found = keys.authenticate(&key).await.expect("auth").expect("valid");
    assert_eq!(found, info);
    let other = keys::generate_key().expect("key");
    assert_eq!(keys.authenticate(&other).await.expect("auth"), None);
    assert_eq!(keys.authenticate("isol8_short").await.expect("auth"), None);

    // Only the hash is stored, and lookups go by hash.
    let (by_hash, stored) = store
        .find_by_hash(&keys::hash_key(&key))
        .await
        .expect("find")
        .expect("present");
    assert_eq!(by_hash.id, info.id);
    assert_eq!(stored, keys::hash_key(&key));
    assert_ne!(stored, key);

    // Without a tenant a key is a tenant of its own.
    let (_, own) = keys.create("solo", None, None).await.expect("create");
    assert_eq!(own.tenant, own.id);

    // Listed with metadata.
    let listed = store.list().await.expect("list");
    let mine: Vec<_> = listed.iter().filter(|k| k.tenant == tenant).collect();
    assert_eq!(mine, vec![&info]);
    assert!(listed.iter().any(|k| k.id == own.id));
    assert_eq!(store.get(&info.id).await.expect("get"), Some(info.clone()));
    assert_eq!(store.get("no-such-id").await.expect("get"), None);

    // A TTL (or the default) sets the expiry; an expired key is refused.
    let with_default = Keys::new(store.clone(), Some(Duration::from_secs(3600)));
    let (_, timed) = with_default
        .create("timed", Some(&tenant), None)
        .await
        .expect("create");
    let ttl = timed.expires_at_ms.expect("expiry") - timed.created_at_ms;
    assert_eq!(ttl, 3_600_000, "defaultTtlMs applies");
    let (short_key, short) = with_default
        .create("short", Some(&tenant), Some(Duration::from_millis(50)))
        .await
        .expect("create");
    assert_eq!(short.expires_at_ms, Some(short.created_at_ms + 50));
    // Valid until then (checked on the clock of the record, not the wall clock, so a
    // loaded machine cannot make this flaky), refused once past it.
    assert!(short.is_valid_at(short.created_at_ms + 49));
    assert!(!short.is_valid_at(short.created_at_ms + 50));
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(keys.authenticate(&short_key).await.expect("auth"), None);

    // Revocation: refused afterwards, idempotent, unknown ids reported.
    assert!(store.revoke(&info.id).await.expect("revoke"));
    assert_eq!(keys.authenticate(&key).await.expect("auth"), None);
    assert!(store.revoke(&info.id).await.expect("revoke again"));
    assert!(
        store
            .get(&info.id)
            .await
            .expect("get")
            .expect("kept")
            .revoked
    );
    assert!(!store.revoke("no-such-id").await.expect("revoke unknown"));
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub").join("auth.db");
    let store = keys::open(path.to_str().expect("utf-8"))
        .await
        .expect("open");
    exercise(store).await;

    // The file is the owner's only and never holds a plaintext key.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path)
        .expect("db file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let store = keys::open(path.to_str().expect("utf-8"))
        .await
        .expect("reopen");
    let k = Keys::new(store.clone(), None);
    let (key, info) = k.create("persist", Some("p"), None).await.expect("create");
    drop((k, store));
    let bytes = std::fs::read(&path).expect("read db");
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains(&key), "plaintext key in the database file");
    // Keys outlive the process's handle on the file.
    let reopened = Keys::new(
        keys::open(path.to_str().expect("utf-8"))
            .await
            .expect("reopen"),
        None,
    );
    assert_eq!(
        reopened
            .authenticate(&key)
            .await
            .expect("auth")
            .map(|i| i.id),
        Some(info.id)
    );
}

#[tokio::test]
async fn sqlite_store_reports_an_unusable_path() {
    let e = keys::open("/proc/no/such/dir/auth.db")
        .await
        .expect_err("unusable path");
    assert!(e.to_string().contains("open failed"), "{e}");
}

#[isol8_testkit::test(postgres)]
async fn postgres_store() {
    let url = isol8_testkit::postgres_url();
    assert!(keys::is_postgres_url(&url), "{url}");
    let store = keys::open(&url).await.expect("connect to PostgreSQL");
    exercise(store).await;
    // A second store on the same database sees the same keys (the table is shared).
    let a = Keys::new(keys::open(&url).await.expect("connect"), None);
    let b = Keys::new(keys::open(&url).await.expect("connect"), None);
    let (key, info) = a.create("shared", Some("pg"), None).await.expect("create");
    assert_eq!(
        b.authenticate(&key).await.expect("auth").map(|i| i.id),
        Some(info.id)
    );
}

#[tokio::test]
async fn postgres_store_reports_a_refused_connection() {
    // Nothing listens on port 1.
    let e = keys::open("postgres://u:secret@127.0.0.1:1/db")
        .await
        .expect_err("refused");
    let msg = e.to_string();
    assert!(msg.contains("connect failed"), "{msg}");
    assert!(!msg.contains("secret"), "the password leaked: {msg}");
}
