//! Key databases as isol8 v0.20 (the TypeScript server) leaves them, made by the tests
//! themselves: its `api_keys` table created with its layout (SQLite: camelCase columns,
//! `revoked INTEGER`; PostgreSQL and MySQL: snake_case, `revoked BOOLEAN`), holding
//! keys it would have issued — `isol8_` + 64 hex, stored as the SHA-256 hex of the key,
//! a 13-character display prefix, RFC 3339 times from JavaScript's `toISOString()`.
//! Also the table of earlier isol8 (Rust) versions, `isol8_api_keys`, for the
//! migration. PostgreSQL fixtures live in a schema of their own and MySQL ones in a
//! database of their own (`isol8_test_*`), so that the table is the fixture's.

use std::path::{Path, PathBuf};

use mysql_async::prelude::Queryable;
use sha2::Digest;

/// A key as the reference issues it.
#[derive(Debug, Clone)]
pub struct RefKey {
    pub id: String,
    pub key: String,
    pub name: String,
    pub tenant: String,
    pub created_at: String,
    pub expires_at: String,
    pub revoked: bool,
}

impl RefKey {
    fn new(name: &str, tenant: &str, expires_at: &str, revoked: bool) -> RefKey {
        let key = format!(
            "isol8_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        RefKey {
            id: uuid::Uuid::new_v4().to_string(),
            key,
            name: name.into(),
            tenant: tenant.into(),
            created_at: "2025-01-31T12:00:00.123Z".into(),
            expires_at: expires_at.into(),
            revoked,
        }
    }

    /// The SHA-256 of the key, lowercase hex: what the reference stores.
    pub fn hash(&self) -> String {
        sha256_hex(&self.key)
    }

    /// The first 10 characters and `...`.
    pub fn prefix(&self) -> String {
        format!("{}...", &self.key[..10])
    }
}

/// SHA-256 of `s` as lowercase hex.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// The keys of a fixture: one valid, one expired, one revoked.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub valid: RefKey,
    pub expired: RefKey,
    pub revoked: RefKey,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            valid: RefKey::new("ci", "org-1", "2999-01-01T00:00:00.000Z", false),
            expired: RefKey::new("old", "org-1", "2020-06-30T08:15:00.500Z", false),
            revoked: RefKey::new("gone", "org-2", "2999-01-01T00:00:00.000Z", true),
        }
    }

    pub fn all(&self) -> [&RefKey; 3] {
        [&self.valid, &self.expired, &self.revoked]
    }
}

/// A row read back with the reference's column names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub name: String,
    pub key_hash: String,
    pub key_prefix: String,
    pub tenant: String,
    pub created_at: String,
    pub expires_at: String,
    pub last_used_at: Option<String>,
    pub revoked: bool,
}

/// A fixture database, for reading rows back as the reference would.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(PathBuf),
    /// The URL selects the fixture's schema (`options=-csearch_path=…`).
    Postgres {
        url: String,
        schema: String,
    },
    /// The URL names the fixture's database.
    Mysql {
        url: String,
        database: String,
    },
}

/// A key earlier isol8 (Rust) versions stored: (key, id, tenant, created ms, expires ms,
/// revoked).
#[derive(Debug, Clone)]
pub struct OldKey {
    pub key: String,
    pub id: String,
    pub tenant: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked: bool,
}

/// Three keys of the earlier table: one that never expires, one that expires in 2999,
/// one revoked.
pub fn old_keys() -> Vec<OldKey> {
    let k = |tenant: &str, expires_ms: Option<i64>, revoked: bool| OldKey {
        key: format!(
            "isol8_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ),
        id: uuid::Uuid::new_v4().to_string(),
        tenant: tenant.into(),
        created_ms: 1_738_324_800_123, // 2025-01-31T12:00:00.123Z
        expires_ms,
        revoked,
    };
    vec![
        k("forever", None, false),
        k("timed", Some(32_472_144_000_000), false), // 2999-01-01T00:00:00.000Z
        k("revoked", None, true),
    ]
}

impl Db {
    /// The connection string the server is given.
    pub fn conn(&self) -> String {
        match self {
            Db::Sqlite(p) => p.to_string_lossy().into_owned(),
            Db::Postgres { url, .. } | Db::Mysql { url, .. } => url.clone(),
        }
    }

    /// A fresh, empty SQLite database file at `path`.
    pub fn sqlite(path: &Path) -> Db {
        Db::Sqlite(path.to_path_buf())
    }

    /// A fresh, empty schema in the PostgreSQL database at `base`.
    pub async fn postgres(base: &str) -> Db {
        let schema = format!("isol8_ref_{}", uuid::Uuid::new_v4().simple());
        pg(base)
            .await
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        Db::Postgres {
            url: format!("{base}{sep}options=-csearch_path%3D{schema}"),
            schema,
        }
    }

    /// A fresh, empty database (`isol8_test_…`) on the MySQL server of `base`.
    pub async fn mysql(base: &str) -> Db {
        let database = format!(
            "isol8_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let mut c = my(base).await;
        c.query_drop(format!("CREATE DATABASE {database}"))
            .await
            .expect("create database");
        drop(c);
        let cut = base.rfind('/').expect("a database in the URL");
        Db::Mysql {
            url: format!("{}/{database}", &base[..cut]),
            database,
        }
    }

    /// Removes the schema or database (a SQLite file goes with its directory).
    pub async fn drop_all(&self) {
        match self {
            Db::Sqlite(_) => {}
            Db::Postgres { url, schema } => pg(url)
                .await
                .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                .await
                .expect("drop schema"),
            Db::Mysql { url, database } => my(url)
                .await
                .query_drop(format!("DROP DATABASE {database}"))
                .await
                .expect("drop database"),
        }
    }

    /// Runs `sql` (statements separated by `;`).
    pub async fn exec(&self, sql: &str) {
        match self {
            Db::Sqlite(p) => rusqlite::Connection::open(p)
                .and_then(|c| c.execute_batch(sql))
                .expect("sqlite"),
            Db::Postgres { url, .. } => pg(url).await.batch_execute(sql).await.expect("pg"),
            Db::Mysql { url, .. } => {
                let mut c = my(url).await;
                for stmt in sql.split(';').filter(|s| !s.trim().is_empty()) {
                    c.query_drop(stmt).await.expect("mysql");
                }
            }
        }
    }

    /// Creates the `api_keys` table as the reference does and inserts a fixture's
    /// keys as the reference would have.
    pub async fn write_reference(&self) -> Fixture {
        let f = Fixture::new();
        match self {
            Db::Sqlite(_) => {
                self.exec(
                    "CREATE TABLE IF NOT EXISTS api_keys (
                        id TEXT PRIMARY KEY, name TEXT NOT NULL, keyHash TEXT NOT NULL UNIQUE,
                        keyPrefix TEXT NOT NULL, tenantId TEXT NOT NULL, createdAt TEXT NOT NULL,
                        expiresAt TEXT NOT NULL, lastUsedAt TEXT,
                        revoked INTEGER NOT NULL DEFAULT 0);
                     CREATE INDEX IF NOT EXISTS idx_api_keys_keyHash ON api_keys(keyHash);",
                )
                .await
            }
            Db::Postgres { .. } => {
                self.exec(
                    "CREATE TABLE IF NOT EXISTS api_keys (
                        id TEXT PRIMARY KEY, name TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
                        key_prefix TEXT NOT NULL, tenant_id TEXT NOT NULL, created_at TEXT NOT NULL,
                        expires_at TEXT NOT NULL, last_used_at TEXT,
                        revoked BOOLEAN NOT NULL DEFAULT FALSE);
                     CREATE INDEX IF NOT EXISTS idx_api_keys_key_hash ON api_keys(key_hash);",
                )
                .await
            }
            Db::Mysql { .. } => {
                self.exec(
                    "CREATE TABLE IF NOT EXISTS api_keys (
                        id VARCHAR(36) PRIMARY KEY, name TEXT NOT NULL,
                        key_hash VARCHAR(64) NOT NULL UNIQUE, key_prefix VARCHAR(20) NOT NULL,
                        tenant_id VARCHAR(255) NOT NULL, created_at VARCHAR(30) NOT NULL,
                        expires_at VARCHAR(30) NOT NULL, last_used_at VARCHAR(30),
                        revoked BOOLEAN NOT NULL DEFAULT FALSE);
                     CREATE INDEX idx_api_keys_key_hash ON api_keys(key_hash)",
                )
                .await
            }
        }
        for k in f.all() {
            self.insert_reference(k).await;
        }
        f
    }

    async fn insert_reference(&self, k: &RefKey) {
        let (hash, prefix) = (k.hash(), k.prefix());
        match self {
            Db::Sqlite(p) => {
                rusqlite::Connection::open(p)
                    .and_then(|c| {
                        c.execute(
                            "INSERT INTO api_keys (id, name, keyHash, keyPrefix, tenantId, createdAt, expiresAt, revoked)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                            rusqlite::params![
                                k.id, k.name, hash, prefix, k.tenant, k.created_at, k.expires_at,
                                i64::from(k.revoked)
                            ],
                        )
                    })
                    .expect("insert");
            }
            Db::Postgres { url, .. } => {
                pg(url)
                    .await
                    .execute(
                        "INSERT INTO api_keys (id, name, key_hash, key_prefix, tenant_id, created_at, expires_at, revoked)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[
                            &k.id, &k.name, &hash, &prefix, &k.tenant, &k.created_at,
                            &k.expires_at, &k.revoked,
                        ],
                    )
                    .await
                    .expect("insert");
            }
            Db::Mysql { url, .. } => {
                my(url)
                    .await
                    .exec_drop(
                        "INSERT INTO api_keys (id, name, key_hash, key_prefix, tenant_id, created_at, expires_at, revoked)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            &k.id, &k.name, &hash, &prefix, &k.tenant, &k.created_at,
                            &k.expires_at, k.revoked,
                        ),
                    )
                    .await
                    .expect("insert");
            }
        }
    }

    /// Creates the table of earlier isol8 (Rust) versions and inserts `keys` as they
    /// stored them (SQLite and PostgreSQL: MySQL was never supported before).
    pub async fn write_old(&self, keys: &[OldKey]) {
        match self {
            Db::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).expect("open");
                c.execute_batch(
                    "CREATE TABLE isol8_api_keys (
                        id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT NOT NULL,
                        key_hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,
                        expires_at INTEGER, revoked INTEGER NOT NULL DEFAULT 0);",
                )
                .expect("create");
                for k in keys {
                    c.execute(
                        "INSERT INTO isol8_api_keys VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        rusqlite::params![
                            k.id,
                            format!("old-{}", k.tenant),
                            k.tenant,
                            sha256_hex(&k.key),
                            k.created_ms,
                            k.expires_ms,
                            i64::from(k.revoked)
                        ],
                    )
                    .expect("insert");
                }
            }
            Db::Postgres { url, .. } => {
                let c = pg(url).await;
                c.batch_execute(
                    "CREATE TABLE isol8_api_keys (
                        id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT NOT NULL,
                        key_hash TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL,
                        expires_at BIGINT, revoked BOOLEAN NOT NULL DEFAULT FALSE)",
                )
                .await
                .expect("create");
                for k in keys {
                    c.execute(
                        "INSERT INTO isol8_api_keys VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        &[
                            &k.id,
                            &format!("old-{}", k.tenant),
                            &k.tenant,
                            &sha256_hex(&k.key),
                            &k.created_ms,
                            &k.expires_ms,
                            &k.revoked,
                        ],
                    )
                    .await
                    .expect("insert");
                }
            }
            Db::Mysql { .. } => panic!("MySQL had no earlier table"),
        }
    }

    /// True when a table `name` exists.
    pub async fn has_table(&self, name: &str) -> bool {
        match self {
            Db::Sqlite(p) => {
                rusqlite::Connection::open(p)
                    .and_then(|c| {
                        c.query_row(
                            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                            [name],
                            |r| r.get::<_, i64>(0),
                        )
                    })
                    .expect("sqlite")
                    > 0
            }
            Db::Postgres { url, .. } => pg(url)
                .await
                .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&name])
                .await
                .expect("pg")
                .get(0),
            Db::Mysql { url, .. } => {
                let n: Option<i64> = my(url)
                    .await
                    .exec_first(
                        "SELECT count(*) FROM information_schema.TABLES
                         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                        (name,),
                    )
                    .await
                    .expect("mysql");
                n.unwrap_or(0) > 0
            }
        }
    }

    /// Row `id` of `api_keys`, read with the reference's column names.
    pub async fn row(&self, id: &str) -> Option<RawRow> {
        match self {
            Db::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).expect("open");
                let mut stmt = c
                    .prepare(
                        "SELECT name, keyHash, keyPrefix, tenantId, createdAt, expiresAt, lastUsedAt, revoked
                         FROM api_keys WHERE id = ?1",
                    )
                    .expect("prepare");
                let mut rows = stmt.query([id]).expect("query");
                rows.next().expect("row").map(|r| RawRow {
                    name: r.get(0).expect("name"),
                    key_hash: r.get(1).expect("keyHash"),
                    key_prefix: r.get(2).expect("keyPrefix"),
                    tenant: r.get(3).expect("tenantId"),
                    created_at: r.get(4).expect("createdAt"),
                    expires_at: r.get(5).expect("expiresAt"),
                    last_used_at: r.get(6).expect("lastUsedAt"),
                    revoked: r.get::<_, i64>(7).expect("revoked") != 0,
                })
            }
            Db::Postgres { url, .. } => pg(url)
                .await
                .query_opt(
                    "SELECT name, key_hash, key_prefix, tenant_id, created_at, expires_at, last_used_at, revoked
                     FROM api_keys WHERE id = $1",
                    &[&id],
                )
                .await
                .expect("pg")
                .map(|r| RawRow {
                    name: r.get(0),
                    key_hash: r.get(1),
                    key_prefix: r.get(2),
                    tenant: r.get(3),
                    created_at: r.get(4),
                    expires_at: r.get(5),
                    last_used_at: r.get(6),
                    revoked: r.get(7),
                }),
            Db::Mysql { url, .. } => {
                type Cols = (
                    String,
                    String,
                    String,
                    String,
                    String,
                    String,
                    Option<String>,
                    bool,
                );
                let row: Option<Cols> = my(url)
                    .await
                    .exec_first(
                        "SELECT name, key_hash, key_prefix, tenant_id, created_at, expires_at, last_used_at, revoked
                         FROM api_keys WHERE id = ?",
                        (id,),
                    )
                    .await
                    .expect("mysql");
                row.map(|r| RawRow {
                    name: r.0,
                    key_hash: r.1,
                    key_prefix: r.2,
                    tenant: r.3,
                    created_at: r.4,
                    expires_at: r.5,
                    last_used_at: r.6,
                    revoked: r.7,
                })
            }
        }
    }

    /// How many rows `api_keys` has.
    pub async fn count(&self) -> i64 {
        match self {
            Db::Sqlite(p) => rusqlite::Connection::open(p)
                .and_then(|c| c.query_row("SELECT count(*) FROM api_keys", [], |r| r.get(0)))
                .expect("sqlite"),
            Db::Postgres { url, .. } => pg(url)
                .await
                .query_one("SELECT count(*) FROM api_keys", &[])
                .await
                .expect("pg")
                .get(0),
            Db::Mysql { url, .. } => {
                let n: Option<i64> = my(url)
                    .await
                    .query_first("SELECT count(*) FROM api_keys")
                    .await
                    .expect("mysql");
                n.unwrap_or(0)
            }
        }
    }
}

/// A PostgreSQL connection of the test itself.
async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    client
}

/// A MySQL connection of the test itself.
async fn my(url: &str) -> mysql_async::Conn {
    mysql_async::Conn::from_url(url)
        .await
        .expect("connect to MySQL")
}

/// True when `s` is a time as JavaScript's `toISOString()` writes it
/// (`2025-01-31T12:00:00.123Z`).
pub fn is_iso_time(s: &str) -> bool {
    s.len() == 24
        && s.ends_with('Z')
        && s.as_bytes()[10] == b'T'
        && s.as_bytes()[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}
