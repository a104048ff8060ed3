//! The API key stores against real databases: SQLite files, a PostgreSQL server
//! (`ISOL8_TEST_POSTGRES_URL`) and a MySQL/MariaDB server (`ISOL8_TEST_MYSQL_URL`),
//! both provided by `scripts/test.sh`; with `CI` set a missing URL fails the test,
//! otherwise it skips saying so. Each backend is checked the same way, and against a
//! database isol8 v0.20 wrote (its table, made by the test); SQLite and PostgreSQL also
//! against the earlier table of this project, migrated on open.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::reference::{self, is_iso_time, sha256_hex, Db};
use isol8_server::keys::{self, KeyInfo, KeyStore, Keys};

/// Milliseconds from creation to expiry.
fn lifetime_ms(k: &KeyInfo) -> i64 {
    let t = |s: &str| keys::parse_time(s).unwrap_or_else(|| panic!("not RFC 3339: {s}"));
    (t(&k.expires_at) - t(&k.created_at)).num_milliseconds()
}

/// The same checks for every backend. Tenants are unique per run so that concurrent
/// runs against one database do not see each other's keys as their own.
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
        (info.name.as_str(), info.tenant_id.as_str()),
        ("ci", tenant.as_str())
    );
    assert_eq!(info.key_prefix, format!("{}...", &key[..10]));
    assert!(is_iso_time(&info.created_at), "{info:?}");
    assert!(is_iso_time(&info.expires_at), "{info:?}");
    assert_eq!(lifetime_ms(&info), 86_400_000, "no TTL, no default: 24 h");
    assert_eq!((info.last_used_at.as_deref(), info.revoked), (None, false));

    // The key authenticates as its tenant, which records its use; a wrong or
    // malformed key does not.
    let found = keys.authenticate(&key).await.expect("auth").expect("valid");
    assert_eq!(found.id, info.id);
    assert_eq!(found.tenant_id, tenant);
    let used = found.last_used_at.clone().expect("lastUsedAt set on use");
    assert!(is_iso_time(&used), "{used}");
    let stored = store.get(&info.id).await.expect("get").expect("present");
    assert_eq!(stored.last_used_at.as_deref(), Some(used.as_str()));
    let other = keys::generate_key().expect("key");
    assert_eq!(keys.authenticate(&other).await.expect("auth"), None);
    assert_eq!(keys.authenticate("isol8_short").await.expect("auth"), None);

    // Only the hash is stored, and lookups go by hash.
    let (by_hash, hash) = store
        .find_by_hash(&sha256_hex(&key))
        .await
        .expect("find")
        .expect("present");
    assert_eq!(by_hash.id, info.id);
    assert_eq!(hash, sha256_hex(&key));

    // Without a tenant a key acts as tenant "default".
    let (_, own) = keys.create("solo", None, None).await.expect("create");
    assert_eq!(own.tenant_id, "default");

    // Listed with metadata, all of them or one tenant's.
    let mine = store.list(Some(&tenant)).await.expect("list");
    assert_eq!(mine, vec![stored.clone()]);
    let all = store.list(None).await.expect("list");
    assert!(all.iter().any(|k| k.id == info.id) && all.iter().any(|k| k.id == own.id));
    assert_eq!(store.get("no-such-id").await.expect("get"), None);

    // A TTL (or the default) sets the expiry; an expired key is refused.
    let with_default = Keys::new(store.clone(), Some(Duration::from_secs(3600)));
    let (_, timed) = with_default
        .create("timed", Some(&tenant), None)
        .await
        .expect("create");
    assert_eq!(lifetime_ms(&timed), 3_600_000, "defaultTtlMs applies");
    let (short_key, short) = with_default
        .create("short", Some(&tenant), Some(Duration::from_millis(50)))
        .await
        .expect("create");
    assert_eq!(lifetime_ms(&short), 50);
    // Valid until then (checked on the clock of the record, not the wall clock, so a
    // loaded machine cannot make this flaky), refused once past it.
    let expiry = short.expiry().expect("expiry");
    assert!(short.is_valid_at(expiry));
    assert!(!short.is_valid_at(expiry + chrono::Duration::milliseconds(1)));
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
            .expect("kept until the cleanup")
            .revoked
    );
    assert!(!store.revoke("no-such-id").await.expect("revoke unknown"));

    // The cleanup deletes revoked and expired keys, and only those.
    assert!(keys.cleanup().await.expect("cleanup") >= 2);
    let left: Vec<String> = store
        .list(Some(&tenant))
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(left, vec![timed.id]);
}

/// A database isol8 v0.20 wrote, with its keys, works as it is: its keys authenticate
/// (recording their use in its columns), are listed as it wrote them, revoked and
/// expired; keys this server creates are written in its layout.
async fn check_reference(db: &Db) {
    let f = db.write_reference().await;
    let store = keys::open(&db.conn())
        .await
        .expect("open the reference's database");
    let keys = Keys::new(store.clone(), None);

    // Listed exactly as it wrote them.
    let listed = store.list(None).await.expect("list");
    assert_eq!(listed.len(), 3, "{listed:?}");
    for k in f.all() {
        let l = listed
            .iter()
            .find(|l| l.id == k.id)
            .unwrap_or_else(|| panic!("{} not listed: {listed:?}", k.name));
        assert_eq!(
            l,
            &KeyInfo {
                id: k.id.clone(),
                name: k.name.clone(),
                key_prefix: k.prefix(),
                tenant_id: k.tenant.clone(),
                created_at: k.created_at.clone(),
                expires_at: k.expires_at.clone(),
                last_used_at: None,
                revoked: k.revoked,
            }
        );
    }
    let mut org1: Vec<String> = store
        .list(Some("org-1"))
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.id)
        .collect();
    org1.sort_unstable();
    let mut want = vec![f.valid.id.clone(), f.expired.id.clone()];
    want.sort_unstable();
    assert_eq!(org1, want);

    // Its valid key authenticates as its tenant; the use lands in its column.
    let info = keys
        .authenticate(&f.valid.key)
        .await
        .expect("auth")
        .expect("the reference's key is accepted");
    assert_eq!(
        (info.id.as_str(), info.tenant_id.as_str()),
        (f.valid.id.as_str(), "org-1")
    );
    let row = db.row(&f.valid.id).await.expect("row");
    assert!(
        row.last_used_at.as_deref().is_some_and(is_iso_time),
        "{row:?}"
    );
    // Its expired and revoked keys are refused.
    assert_eq!(keys.authenticate(&f.expired.key).await.expect("auth"), None);
    assert_eq!(keys.authenticate(&f.revoked.key).await.expect("auth"), None);

    // A key this server creates is stored as the reference stores keys.
    let (key, mine) = keys
        .create("ours", Some("org-1"), Some(Duration::from_secs(60)))
        .await
        .expect("create");
    let row = db.row(&mine.id).await.expect("row");
    assert_eq!(
        (row.name.as_str(), row.tenant.as_str(), row.revoked),
        ("ours", "org-1", false)
    );
    assert_eq!(row.key_hash, sha256_hex(&key));
    assert_eq!(row.key_prefix, format!("{}...", &key[..10]));
    assert!(
        is_iso_time(&row.created_at) && is_iso_time(&row.expires_at),
        "{row:?}"
    );
    assert_eq!(row.last_used_at, None);

    // Revoking sets its flag; the key is refused from then on.
    assert!(store.revoke(&f.valid.id).await.expect("revoke"));
    assert!(db.row(&f.valid.id).await.expect("row").revoked);
    assert_eq!(keys.authenticate(&f.valid.key).await.expect("auth"), None);

    // The cleanup deletes the expired and the revoked keys.
    assert_eq!(keys.cleanup().await.expect("cleanup"), 3);
    assert_eq!(db.count().await, 1);
    assert_eq!(db.row(&f.expired.id).await, None);

    // Opening it again changes nothing.
    let again = Keys::new(keys::open(&db.conn()).await.expect("reopen"), None);
    assert_eq!(
        again.authenticate(&key).await.expect("auth").map(|k| k.id),
        Some(mine.id)
    );
    db.drop_all().await;
}

/// A database in this project's earlier layout (`isol8_api_keys`) is migrated once,
/// in place, on open: its keys keep working.
async fn check_migration(db: &Db) {
    let old = reference::old_keys();
    db.write_old(&old).await;
    let store = keys::open(&db.conn()).await.expect("open and migrate");
    assert!(
        !db.has_table(keys::OLD_TABLE).await,
        "the earlier table is left"
    );
    assert!(db.has_table(keys::TABLE).await);
    assert_eq!(db.count().await, 3);
    let keys = Keys::new(store, None);
    let (forever, timed, revoked) = (&old[0], &old[1], &old[2]);
    for k in [forever, timed] {
        let info = keys
            .authenticate(&k.key)
            .await
            .expect("auth")
            .unwrap_or_else(|| panic!("the migrated key of {} is refused", k.tenant));
        assert_eq!(
            (info.id.as_str(), info.tenant_id.as_str()),
            (k.id.as_str(), k.tenant.as_str())
        );
    }
    assert_eq!(keys.authenticate(&revoked.key).await.expect("auth"), None);
    let row = db.row(&forever.id).await.expect("row");
    assert_eq!(
        (
            row.name.as_str(),
            row.key_hash.as_str(),
            row.key_prefix.as_str(),
            row.created_at.as_str(),
            row.expires_at.as_str(),
            row.revoked
        ),
        (
            "old-forever",
            sha256_hex(&forever.key).as_str(),
            keys::UNKNOWN_PREFIX,
            "2025-01-31T12:00:00.123Z",
            keys::NEVER,
            false
        )
    );
    assert_eq!(
        db.row(&timed.id).await.expect("row").expires_at,
        "2999-01-01T00:00:00.000Z"
    );
    assert!(db.row(&revoked.id).await.expect("row").revoked);

    // Once: opening it again finds nothing to move and keeps the keys.
    let again = Keys::new(keys::open(&db.conn()).await.expect("reopen"), None);
    assert_eq!(db.count().await, 3);
    assert!(again
        .authenticate(&forever.key)
        .await
        .expect("auth")
        .is_some());
    db.drop_all().await;
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
    // While it is open, its write-ahead log and shared-memory files are the owner's
    // only too.
    let files: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
        .expect("dir")
        .map(|f| f.expect("entry").path())
        .collect();
    assert!(files.len() >= 2, "no WAL files: {files:?}");
    for f in &files {
        let mode = std::fs::metadata(f).expect("file").permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} is mode {:o}",
            f.display(),
            mode & 0o777
        );
    }
    drop((k, store));
    for file in std::fs::read_dir(path.parent().expect("dir")).expect("dir") {
        let file = file.expect("entry").path();
        let bytes = std::fs::read(&file).expect("read db");
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&key), "plaintext key in {}", file.display());
    }
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

#[tokio::test]
async fn sqlite_works_with_a_database_isol8_v0_20_wrote() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_reference(&Db::sqlite(&dir.path().join("auth.db"))).await;
}

#[tokio::test]
async fn sqlite_migrates_the_earlier_table_once_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_migration(&Db::sqlite(&dir.path().join("auth.db"))).await;
}

/// A table `api_keys` that is not a key table is refused, naming what it lacks, and
/// left as it is.
async fn check_other_layout(db: &Db) {
    db.exec("CREATE TABLE api_keys (id VARCHAR(36) PRIMARY KEY, owner TEXT)")
        .await;
    let e = keys::open(&db.conn()).await.expect_err("another layout");
    let msg = e.to_string();
    assert!(
        msg.contains("api_keys") && msg.contains("no column name"),
        "{msg}"
    );
    assert_eq!(db.count().await, 0);
    db.drop_all().await;
}

#[tokio::test]
async fn sqlite_refuses_an_api_keys_table_of_another_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_other_layout(&Db::sqlite(&dir.path().join("auth.db"))).await;
}

#[isol8_testkit::test(postgres)]
async fn postgres_refuses_an_api_keys_table_of_another_layout() {
    check_other_layout(&Db::postgres(&isol8_testkit::postgres_url()).await).await;
}

#[isol8_testkit::test(mysql)]
async fn mysql_refuses_an_api_keys_table_of_another_layout() {
    check_other_layout(&Db::mysql(&isol8_testkit::mysql_url()).await).await;
}

#[tokio::test]
async fn unsupported_url_schemes_are_refused_not_taken_as_file_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = "mongodb://u:secret@127.0.0.1:1/db";
    let e = keys::open(conn).await.expect_err("unsupported");
    assert!(e.to_string().contains("`mongodb://`"), "{e}");
    assert!(!e.to_string().contains("secret"), "{e}");
    // A sqlite: prefix names a file.
    let path = dir.path().join("named.db");
    keys::open(&format!("sqlite:{}", path.display()))
        .await
        .expect("sqlite: path");
    assert!(path.exists());
}

#[tokio::test]
async fn expired_and_revoked_keys_are_deleted_on_the_cleanup_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = keys::open(dir.path().join("auth.db").to_str().expect("utf-8"))
        .await
        .expect("open");
    let keys = Keys::new(store.clone(), None);
    let (_, stays) = keys.create("stays", None, None).await.expect("create");
    let (_, expires) = keys
        .create("expires", None, Some(Duration::from_millis(1)))
        .await
        .expect("create");
    let (_, revoked) = keys.create("revoked", None, None).await.expect("create");
    assert!(store.revoke(&revoked.id).await.expect("revoke"));
    // auth.cleanupIntervalMs of 100 ms.
    let task = keys.spawn_cleanup(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ids: Vec<String> = store
            .list(None)
            .await
            .expect("list")
            .into_iter()
            .map(|k| k.id)
            .collect();
        if ids == [stays.id.clone()] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not cleaned up within 30 s: {ids:?} (expired {}, revoked {})",
            expires.id,
            revoked.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!task.is_finished(), "the cleanup task stopped");
    task.abort();
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

#[isol8_testkit::test(postgres)]
async fn postgres_works_with_a_database_isol8_v0_20_wrote() {
    check_reference(&Db::postgres(&isol8_testkit::postgres_url()).await).await;
}

#[isol8_testkit::test(postgres)]
async fn postgres_migrates_the_earlier_table_once_in_place() {
    check_migration(&Db::postgres(&isol8_testkit::postgres_url()).await).await;
}

#[isol8_testkit::test(mysql)]
async fn mysql_store() {
    let url = isol8_testkit::mysql_url();
    assert!(keys::is_mysql_url(&url), "{url}");
    let store = keys::open(&url).await.expect("connect to MySQL");
    exercise(store).await;
    // A second store on the same database sees the same keys; `mariadb://` is MySQL.
    let a = Keys::new(keys::open(&url).await.expect("connect"), None);
    let maria = url.replacen("mysql://", "mariadb://", 1);
    let b = Keys::new(keys::open(&maria).await.expect("connect"), None);
    let (key, info) = a.create("shared", Some("my"), None).await.expect("create");
    assert_eq!(
        b.authenticate(&key).await.expect("auth").map(|i| i.id),
        Some(info.id)
    );
}

#[tokio::test]
async fn mysql_store_reports_a_refused_connection() {
    // Nothing listens on port 1; before this project knew MySQL, this URL was opened
    // as a SQLite file of that name (creating the directory `mysql:`).
    let cwd = std::env::current_dir().expect("cwd");
    let e = keys::open("mysql://u:secret@127.0.0.1:1/db")
        .await
        .expect_err("refused");
    let msg = e.to_string();
    assert!(
        msg.contains("connect failed") && msg.contains("MySQL"),
        "{msg}"
    );
    assert!(!msg.contains("secret"), "the password leaked: {msg}");
    assert!(!cwd.join("mysql:").exists(), "a SQLite file was created");
}

#[isol8_testkit::test(mysql)]
async fn mysql_works_with_a_database_isol8_v0_20_wrote() {
    check_reference(&Db::mysql(&isol8_testkit::mysql_url()).await).await;
}
