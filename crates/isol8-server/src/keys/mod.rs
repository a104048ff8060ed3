//! Database API keys: `isol8_` + 64 lowercase hex characters from the OS CSPRNG, stored
//! only as SHA-256 hashes with an id, a name, a tenant, creation and expiry times and a
//! revocation flag.
//!
//! [`KeyStore`] has two backends: an embedded SQLite file ([`SqliteStore`], the default)
//! and PostgreSQL ([`PostgresStore`], chosen by a `postgres://` or `postgresql://`
//! connection string); [`open`] picks one. [`Keys`] issues and checks keys over a store.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Every database key starts with this.
pub const KEY_PREFIX: &str = "isol8_";

/// Longest accepted key lifetime (ten years), so expiry times never overflow.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Table holding the keys (same name in both backends).
const TABLE: &str = "isol8_api_keys";

/// A key store operation that failed.
#[derive(Debug)]
pub struct StoreError {
    /// What was being done (`open`, `insert`, `find`…).
    pub op: &'static str,
    /// The backend's message.
    pub message: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "API key store: {} failed: {}", self.op, self.message)
    }
}

impl std::error::Error for StoreError {}

fn err(op: &'static str) -> impl Fn(&dyn fmt::Display) -> StoreError {
    move |e| StoreError {
        op,
        message: e.to_string(),
    }
}

/// Result of key store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// What is known about a key (never the key itself, never its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Stable identifier (used to revoke it).
    pub id: String,
    /// Human label.
    pub name: String,
    /// The tenant the key acts as: sessions belong to tenants.
    pub tenant: String,
    /// Creation time, milliseconds since the epoch.
    pub created_at_ms: i64,
    /// Expiry time, milliseconds since the epoch (`None`: never).
    pub expires_at_ms: Option<i64>,
    /// Revoked keys are refused.
    pub revoked: bool,
}

/// A time in milliseconds since the epoch as RFC 3339 (milliseconds, UTC); `None` when
/// out of range.
fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The wire form of a key's metadata: `{id, name, tenant, createdAt, expiresAt,
/// revoked}` (never the key, never its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "KeyInfo")]
pub struct KeyView {
    /// Stable identifier (used to revoke it).
    pub id: String,
    /// Human label.
    pub name: String,
    /// The tenant the key acts as (owner of its sessions).
    pub tenant: String,
    /// Creation time, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub created_at: Option<String>,
    /// Expiry time, RFC 3339; `null`: never.
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: Option<String>,
    /// Revoked keys are refused.
    pub revoked: bool,
}

impl KeyInfo {
    /// The wire form ([`KeyView`]).
    pub fn view(&self) -> KeyView {
        KeyView {
            id: self.id.clone(),
            name: self.name.clone(),
            tenant: self.tenant.clone(),
            created_at: rfc3339(self.created_at_ms),
            expires_at: self.expires_at_ms.and_then(rfc3339),
            revoked: self.revoked,
        }
    }

    /// The wire form as JSON: `{id, name, tenant, createdAt, expiresAt, revoked}`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.view()).unwrap_or(Value::Null)
    }

    /// True when the key may be used at `now_ms`.
    pub fn is_valid_at(&self, now_ms: i64) -> bool {
        !self.revoked && self.expires_at_ms.is_none_or(|e| now_ms < e)
    }
}

/// Where keys are kept.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Stores a new key under the SHA-256 hex `hash` of its plaintext.
    async fn insert(&self, info: &KeyInfo, hash: &str) -> Result<()>;
    /// The key whose hash is `hash`, with the stored hash.
    async fn find_by_hash(&self, hash: &str) -> Result<Option<(KeyInfo, String)>>;
    /// The key with id `id`.
    async fn get(&self, id: &str) -> Result<Option<KeyInfo>>;
    /// Every key, oldest first.
    async fn list(&self) -> Result<Vec<KeyInfo>>;
    /// Marks a key revoked; false when no key has that id. Revoking twice is fine.
    async fn revoke(&self, id: &str) -> Result<bool>;
}

/// A fresh key: `isol8_` + 64 lowercase hex characters (32 bytes from the OS CSPRNG).
pub fn generate_key() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| err("generate")(&e))?;
    Ok(format!("{KEY_PREFIX}{}", hex::encode(bytes)))
}

/// True when `s` has the shape of a database key.
pub fn is_key_shaped(s: &str) -> bool {
    s.strip_prefix(KEY_PREFIX).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The SHA-256 of a key, as lowercase hex (what the stores keep).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Compares two byte strings in time independent of where they differ (`subtle`; only
/// the lengths may show).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// True when `conn` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(conn: &str) -> bool {
    conn.starts_with("postgres://") || conn.starts_with("postgresql://")
}

/// Opens the store named by `conn`: PostgreSQL for a `postgres://` / `postgresql://`
/// connection string, otherwise a SQLite file at that path (created, mode 0600).
pub async fn open(conn: &str) -> Result<Arc<dyn KeyStore>> {
    if is_postgres_url(conn) {
        Ok(Arc::new(PostgresStore::connect(conn).await?))
    } else {
        let path = PathBuf::from(conn);
        Ok(Arc::new(
            tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                .await
                .map_err(|e| err("open")(&e))??,
        ))
    }
}

/// Issues and checks keys over a [`KeyStore`].
#[derive(Debug, Clone)]
pub struct Keys {
    store: Arc<dyn KeyStore>,
    default_ttl: Option<Duration>,
}

impl Keys {
    /// Keys in `store`; new keys without a lifetime of their own get `default_ttl`.
    pub fn new(store: Arc<dyn KeyStore>, default_ttl: Option<Duration>) -> Keys {
        Keys { store, default_ttl }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// The lifetime of keys created without one.
    pub fn default_ttl(&self) -> Option<Duration> {
        self.default_ttl
    }

    /// Creates a key; returns its plaintext (shown once, never stored) and its metadata.
    /// `tenant` defaults to the key's own id (a tenant of its own); `ttl` to the default.
    pub async fn create(
        &self,
        name: &str,
        tenant: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<(String, KeyInfo)> {
        let key = generate_key()?;
        let id = uuid::Uuid::new_v4().to_string();
        let created = now_ms();
        let ttl = ttl.or(self.default_ttl).map(|t| t.min(MAX_TTL));
        let info = KeyInfo {
            tenant: tenant.map_or_else(|| id.clone(), str::to_string),
            id,
            name: name.to_string(),
            created_at_ms: created,
            expires_at_ms: ttl.map(|t| created.saturating_add(t.as_millis() as i64)),
            revoked: false,
        };
        self.store.insert(&info, &hash_key(&key)).await?;
        Ok((key, info))
    }

    /// The metadata of `token` when it is a valid key: known, unrevoked, unexpired.
    pub async fn authenticate(&self, token: &str) -> Result<Option<KeyInfo>> {
        if !is_key_shaped(token) {
            return Ok(None);
        }
        let hash = hash_key(token);
        let Some((info, stored)) = self.store.find_by_hash(&hash).await? else {
            return Ok(None);
        };
        // The lookup was by hash; compare again without an early exit all the same.
        if !constant_time_eq(stored.as_bytes(), hash.as_bytes()) {
            return Ok(None);
        }
        Ok(info.is_valid_at(now_ms()).then_some(info))
    }
}

/// Keys in an embedded SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<std::sync::Mutex<rusqlite::Connection>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn row_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyInfo> {
    Ok(KeyInfo {
        id: row.get(0)?,
        name: row.get(1)?,
        tenant: row.get(2)?,
        created_at_ms: row.get(3)?,
        expires_at_ms: row.get(4)?,
        revoked: row.get::<_, i64>(5)? != 0,
    })
}

const COLUMNS: &str = "id, name, tenant, created_at, expires_at, revoked";

impl SqliteStore {
    /// Opens (creating if needed, owner-only) the SQLite file at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err("open")(&format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = rusqlite::Connection::open(path)
            .map_err(|e| err("open")(&format!("{}: {e}", path.display())))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| err("open")(&e))?;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                tenant TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                created_at INTEGER NOT NULL,
                expires_at INTEGER,
                revoked INTEGER NOT NULL DEFAULT 0
            );"
        ))
        .map_err(|e| err("open")(&format!("{}: {e}", path.display())))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            conn: Arc::new(std::sync::Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(|e| err(op)(&e))?;
            f(&conn).map_err(|e| err(op)(&e))
        })
        .await
        .map_err(|e| err(op)(&e))?
    }
}

#[async_trait::async_trait]
impl KeyStore for SqliteStore {
    async fn insert(&self, info: &KeyInfo, hash: &str) -> Result<()> {
        let (info, hash) = (info.clone(), hash.to_string());
        self.with("insert", move |c| {
            c.execute(
                &format!("INSERT INTO {TABLE} (id, name, tenant, key_hash, created_at, expires_at, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                rusqlite::params![info.id, info.name, info.tenant, hash, info.created_at_ms, info.expires_at_ms, i64::from(info.revoked)],
            )
            .map(drop)
        })
        .await
    }

    async fn find_by_hash(&self, hash: &str) -> Result<Option<(KeyInfo, String)>> {
        let hash = hash.to_string();
        self.with("find", move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS}, key_hash FROM {TABLE} WHERE key_hash = ?1"
            ))?;
            let mut rows = stmt.query([hash])?;
            match rows.next()? {
                Some(row) => Ok(Some((row_info(row)?, row.get(6)?))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<KeyInfo>> {
        let id = id.to_string();
        self.with("get", move |c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {COLUMNS} FROM {TABLE} WHERE id = ?1"))?;
            let mut rows = stmt.query([id])?;
            rows.next()?.map(row_info).transpose()
        })
        .await
    }

    async fn list(&self) -> Result<Vec<KeyInfo>> {
        self.with("list", |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM {TABLE} ORDER BY created_at, id"
            ))?;
            let rows = stmt.query_map([], row_info)?;
            rows.collect()
        })
        .await
    }

    async fn revoke(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.with("revoke", move |c| {
            c.execute(
                &format!("UPDATE {TABLE} SET revoked = 1 WHERE id = ?1"),
                [id],
            )
            .map(|n| n > 0)
        })
        .await
    }
}

/// Keys in a PostgreSQL database (one connection, reopened when it drops).
pub struct PostgresStore {
    url: String,
    client: tokio::sync::Mutex<Option<Arc<tokio_postgres::Client>>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

fn pg_row(row: &tokio_postgres::Row) -> KeyInfo {
    KeyInfo {
        id: row.get(0),
        name: row.get(1),
        tenant: row.get(2),
        created_at_ms: row.get(3),
        expires_at_ms: row.get(4),
        revoked: row.get(5),
    }
}

impl PostgresStore {
    /// Connects to `url` and creates the table if needed.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        let store = PostgresStore {
            url: url.to_string(),
            client: tokio::sync::Mutex::new(None),
        };
        let client = store.client().await?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    tenant TEXT NOT NULL,
                    key_hash TEXT NOT NULL UNIQUE,
                    created_at BIGINT NOT NULL,
                    expires_at BIGINT,
                    revoked BOOLEAN NOT NULL DEFAULT FALSE
                )"
            ))
            .await
            .map_err(|e| err("open")(&e))?;
        Ok(store)
    }

    /// The live connection, reconnecting if the previous one closed.
    async fn client(&self) -> Result<Arc<tokio_postgres::Client>> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .map_err(|e| err("connect")(&format!("PostgreSQL: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("PostgreSQL key store connection closed: {e}");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }
}

#[async_trait::async_trait]
impl KeyStore for PostgresStore {
    async fn insert(&self, info: &KeyInfo, hash: &str) -> Result<()> {
        self.client()
            .await?
            .execute(
                &format!("INSERT INTO {TABLE} (id, name, tenant, key_hash, created_at, expires_at, revoked) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                &[&info.id, &info.name, &info.tenant, &hash, &info.created_at_ms, &info.expires_at_ms, &info.revoked],
            )
            .await
            .map(drop)
            .map_err(|e| err("insert")(&e))
    }

    async fn find_by_hash(&self, hash: &str) -> Result<Option<(KeyInfo, String)>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {COLUMNS}, key_hash FROM {TABLE} WHERE key_hash = $1"),
                &[&hash],
            )
            .await
            .map_err(|e| err("find")(&e))?;
        Ok(row.map(|r| (pg_row(&r), r.get(6))))
    }

    async fn get(&self, id: &str) -> Result<Option<KeyInfo>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM {TABLE} WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(|e| err("get")(&e))?;
        Ok(row.as_ref().map(pg_row))
    }

    async fn list(&self) -> Result<Vec<KeyInfo>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {COLUMNS} FROM {TABLE} ORDER BY created_at, id"),
                &[],
            )
            .await
            .map_err(|e| err("list")(&e))?;
        Ok(rows.iter().map(pg_row).collect())
    }

    async fn revoke(&self, id: &str) -> Result<bool> {
        self.client()
            .await?
            .execute(
                &format!("UPDATE {TABLE} SET revoked = TRUE WHERE id = $1"),
                &[&id],
            )
            .await
            .map(|n| n > 0)
            .map_err(|e| err("revoke")(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_hex_and_distinct() {
        let a = generate_key().expect("key");
        let b = generate_key().expect("key");
        assert!(is_key_shaped(&a), "{a}");
        assert_eq!(a.len(), KEY_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert!(!is_key_shaped("isol8_XYZ"));
        assert!(!is_key_shaped(&a.to_uppercase()));
        assert!(!is_key_shaped(&format!("{a}0")));
    }

    #[test]
    fn hashes_are_sha256_hex() {
        // sha256("abc")
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn validity_follows_revocation_and_expiry() {
        let mut k = KeyInfo {
            id: "i".into(),
            name: "n".into(),
            tenant: "t".into(),
            created_at_ms: 0,
            expires_at_ms: Some(1000),
            revoked: false,
        };
        assert!(k.is_valid_at(999));
        assert!(!k.is_valid_at(1000));
        k.expires_at_ms = None;
        assert!(k.is_valid_at(i64::MAX));
        k.revoked = true;
        assert!(!k.is_valid_at(0));
        assert_eq!(k.to_json()["createdAt"], "1970-01-01T00:00:00.000Z");
        assert!(k.to_json().get("hash").is_none());
    }
}
