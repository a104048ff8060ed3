//! Database API keys: `isol8_` + 64 lowercase hex characters from the OS CSPRNG, stored
//! only as SHA-256 hashes (lowercase hex) with an id (a UUID), a name, a display prefix
//! (the key's first 10 characters and `...`), a tenant, creation, expiry and last-use
//! times (RFC 3339 text in UTC with milliseconds, `2025-01-31T12:00:00.000Z`) and a
//! revocation flag.
//!
//! # The table
//!
//! Keys live in a table `api_keys` laid out as isol8 v0.20 (the TypeScript server) lays
//! it out, so a database either server wrote works with the other as it is:
//!
//! | backend | columns |
//! | --- | --- |
//! | SQLite | `id`, `name`, `keyHash` (unique), `keyPrefix`, `tenantId`, `createdAt`, `expiresAt`, `lastUsedAt` (all `TEXT`), `revoked INTEGER` (0/1); index `idx_api_keys_keyHash` |
//! | PostgreSQL | `id`, `name`, `key_hash` (unique), `key_prefix`, `tenant_id`, `created_at`, `expires_at`, `last_used_at` (all `TEXT`), `revoked BOOLEAN`; index `idx_api_keys_key_hash` |
//! | MySQL/MariaDB | the same names as PostgreSQL: `id VARCHAR(36)`, `name TEXT`, `key_hash VARCHAR(64)` (unique), `key_prefix VARCHAR(20)`, `tenant_id VARCHAR(255)`, times `VARCHAR(30)`, `revoked BOOLEAN` |
//!
//! Every key has an expiry. Opening a store creates the table when missing, and checks
//! that an existing one has these columns. The table of earlier isol8 (Rust) versions,
//! `isol8_api_keys` (times in epoch milliseconds, `NULL` for never), is moved into
//! `api_keys` once, in place, in one transaction, and dropped: its keys keep working
//! (a key that never expired gets [`NEVER`]; the display prefix, which only the
//! plaintext could give, becomes `isol8_...`).
//!
//! # Backends
//!
//! [`open`] picks one from the connection string ([`Backend::of`]): a `postgres://` or
//! `postgresql://` URL is PostgreSQL ([`postgres::PostgresStore`]), a `mysql://` or
//! `mariadb://` URL is MySQL/MariaDB ([`mysql::MysqlStore`]), anything else is the path
//! of a SQLite file ([`sqlite::SqliteStore`]; a `sqlite:` prefix may name it
//! explicitly). Other `scheme://` strings are refused rather than taken as a file name.
//!
//! [`Keys`] issues, checks and expires keys over a [`KeyStore`].

pub mod mysql;
pub mod postgres;
pub mod sqlite;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Every database key starts with this.
pub const KEY_PREFIX: &str = "isol8_";

/// Longest accepted key lifetime (ten years), so expiry times never overflow.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Lifetime of keys created without one when `auth.defaultTtlMs` is not set: 24 hours.
pub const DEFAULT_TTL: Duration = Duration::from_millis(isol8::config::AuthConfig::DEFAULT_TTL_MS);

/// How often expired and revoked keys are deleted when `auth.cleanupIntervalMs` is not
/// set: every hour.
pub const DEFAULT_CLEANUP_INTERVAL: Duration =
    Duration::from_millis(isol8::config::AuthConfig::CLEANUP_INTERVAL_MS);

/// Shortest cleanup interval used (a shorter `auth.cleanupIntervalMs` is raised to it).
pub const MIN_CLEANUP_INTERVAL: Duration = Duration::from_millis(100);

/// Tenant of keys created without one.
pub const DEFAULT_TENANT: &str = "default";

/// The expiry given to keys of the earlier table that never expired.
pub const NEVER: &str = "9999-12-31T23:59:59.999Z";

/// The display prefix of keys moved from the earlier table (their plaintext, which the
/// real prefix comes from, was never stored).
pub const UNKNOWN_PREFIX: &str = "isol8_...";

/// The table holding the keys, in every backend.
pub const TABLE: &str = "api_keys";

/// The table of earlier isol8 (Rust) versions, migrated into [`TABLE`] on open.
pub const OLD_TABLE: &str = "isol8_api_keys";

/// The columns an `api_keys` table must have in PostgreSQL and MySQL (snake_case there,
/// camelCase in SQLite: the layouts isol8 v0.20 creates).
const SNAKE_COLUMNS: [&str; 9] = [
    "id",
    "name",
    "key_hash",
    "key_prefix",
    "tenant_id",
    "created_at",
    "expires_at",
    "last_used_at",
    "revoked",
];

/// The columns PostgreSQL and MySQL reads of a key select, in the order their row
/// readers take them.
const SNAKE_SELECT: &str =
    "id, name, key_prefix, tenant_id, created_at, expires_at, last_used_at, revoked, key_hash";

/// A key store operation that failed.
#[derive(Debug)]
pub struct StoreError {
    /// What was being done (`open`, `insert`, `find`…).
    pub op: &'static str,
    /// The backend's message (never a connection string: it may hold a password).
    pub message: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "API key store: {} failed: {}", self.op, self.message)
    }
}

impl std::error::Error for StoreError {}

/// A function turning any error into a [`StoreError`] of operation `op`.
pub(crate) fn err(op: &'static str) -> impl Fn(&dyn fmt::Display) -> StoreError {
    move |e| StoreError {
        op,
        message: e.to_string(),
    }
}

/// Result of key store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// What is known about a key — never the key itself, never its hash — as stored and as
/// `GET /auth/keys` lists it: `{id, name, keyPrefix, tenantId, createdAt, expiresAt,
/// lastUsedAt, revoked}`. Times are the stored RFC 3339 text, passed on as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "KeyInfo")]
pub struct KeyInfo {
    /// Stable identifier, a UUID (used to revoke it).
    pub id: String,
    /// Human label.
    pub name: String,
    /// The key's first 10 characters and `...` (`isol8_3f9a...`), to recognise it by.
    pub key_prefix: String,
    /// The tenant the key acts as: sessions belong to tenants.
    pub tenant_id: String,
    /// Creation time, RFC 3339 (UTC, milliseconds).
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    /// Expiry time, RFC 3339 (UTC, milliseconds): the key is refused from then on.
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: String,
    /// When the key last authenticated a request, RFC 3339; `null`: never.
    #[schemars(extend("format" = "date-time"))]
    pub last_used_at: Option<String>,
    /// Revoked keys are refused (and deleted by the next cleanup).
    pub revoked: bool,
}

impl KeyInfo {
    /// The wire form as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The expiry as a time; `None` when the stored text is not RFC 3339.
    pub fn expiry(&self) -> Option<DateTime<Utc>> {
        parse_time(&self.expires_at)
    }

    /// True when the key may be used at `now`: not revoked, and `now` is not past its
    /// expiry. A key whose expiry cannot be read is refused.
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        !self.revoked && self.expiry().is_some_and(|e| now <= e)
    }
}

/// `t` as stored: RFC 3339 in UTC with milliseconds and `Z` (`2025-01-31T12:00:00.000Z`).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A stored time; `None` when it is not RFC 3339.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A time in epoch milliseconds (the earlier table's unit) as stored now.
pub(crate) fn time_of_millis(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(|| NEVER.to_string(), format_time)
}

/// A key's display prefix: its first 10 characters and `...`.
pub fn display_prefix(key: &str) -> String {
    let head: String = key.chars().take(10).collect();
    format!("{head}...")
}

/// Where keys are kept: one table laid out as the module docs say.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Stores a new key under the SHA-256 hex `hash` of its plaintext.
    async fn insert(&self, info: &KeyInfo, hash: &str) -> Result<()>;
    /// The key whose hash is `hash`, with the stored hash.
    async fn find_by_hash(&self, hash: &str) -> Result<Option<(KeyInfo, String)>>;
    /// Sets the last-use time of key `id` to `at` (RFC 3339).
    async fn touch(&self, id: &str, at: &str) -> Result<()>;
    /// The key with id `id`.
    async fn get(&self, id: &str) -> Result<Option<KeyInfo>>;
    /// Every key (only `tenant`'s when given), oldest first.
    async fn list(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>>;
    /// Marks a key revoked; false when no key has that id. Revoking twice is fine.
    async fn revoke(&self, id: &str) -> Result<bool>;
    /// Deletes every revoked key and every key whose expiry is before `now` (RFC 3339,
    /// compared as stored text); returns how many.
    async fn remove_stale(&self, now: &str) -> Result<u64>;
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

/// The database a connection string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file at this path.
    Sqlite(String),
    /// A PostgreSQL server (`postgres://` or `postgresql://` URL, passed on as is).
    Postgres(String),
    /// A MySQL or MariaDB server (the URL with its scheme as `mysql://`).
    Mysql(String),
}

impl Backend {
    /// The backend of `conn`: `postgres://` / `postgresql://` → PostgreSQL, `mysql://` /
    /// `mariadb://` → MySQL, `sqlite:PATH` or `sqlite://PATH` → SQLite at PATH, any other
    /// `scheme://…` → an error, anything else → the path of a SQLite file. Schemes are
    /// matched without regard to case.
    pub fn of(conn: &str) -> Result<Backend> {
        let lower = conn.to_ascii_lowercase();
        let rest = |scheme: &str| &conn[scheme.len()..];
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(Backend::Postgres(conn.to_string()));
        }
        for scheme in ["mysql://", "mariadb://"] {
            if lower.starts_with(scheme) {
                return Ok(Backend::Mysql(format!("mysql://{}", rest(scheme))));
            }
        }
        for scheme in ["sqlite://", "sqlite:"] {
            if lower.starts_with(scheme) {
                return Ok(Backend::Sqlite(rest(scheme).to_string()));
            }
        }
        if let Some(i) = conn.find("://") {
            let scheme = &conn[..i];
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            {
                return Err(StoreError {
                    op: "open",
                    message: format!(
                        "unsupported database URL scheme `{scheme}://`: give a SQLite file path, or a postgres://, postgresql://, mysql:// or mariadb:// URL"
                    ),
                });
            }
        }
        Ok(Backend::Sqlite(conn.to_string()))
    }

    /// What it is, fit to print: never a server's URL (it may hold a password).
    pub fn describe(&self) -> String {
        match self {
            Backend::Sqlite(path) => format!("SQLite file {path}"),
            Backend::Postgres(_) => "PostgreSQL".to_string(),
            Backend::Mysql(_) => "MySQL".to_string(),
        }
    }
}

/// True when `conn` names a PostgreSQL database.
pub fn is_postgres_url(conn: &str) -> bool {
    matches!(Backend::of(conn), Ok(Backend::Postgres(_)))
}

/// True when `conn` names a MySQL/MariaDB database.
pub fn is_mysql_url(conn: &str) -> bool {
    matches!(Backend::of(conn), Ok(Backend::Mysql(_)))
}

/// Opens the store named by `conn` ([`Backend::of`]): connects (creating the file of a
/// SQLite store, owner-only), creates the table when missing and migrates the earlier
/// table (see the module docs).
pub async fn open(conn: &str) -> Result<Arc<dyn KeyStore>> {
    Ok(match Backend::of(conn)? {
        Backend::Postgres(url) => Arc::new(postgres::PostgresStore::connect(&url).await?),
        Backend::Mysql(url) => Arc::new(mysql::MysqlStore::connect(&url).await?),
        Backend::Sqlite(path) => {
            let path = std::path::PathBuf::from(path);
            Arc::new(
                tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path))
                    .await
                    .map_err(|e| err("open")(&e))??,
            )
        }
    })
}

/// Issues, checks and expires keys over a [`KeyStore`].
#[derive(Debug, Clone)]
pub struct Keys {
    store: Arc<dyn KeyStore>,
    default_ttl: Duration,
}

impl Keys {
    /// Keys in `store`; new keys without a lifetime of their own get `default_ttl`
    /// (`None`: [`DEFAULT_TTL`], 24 hours).
    pub fn new(store: Arc<dyn KeyStore>, default_ttl: Option<Duration>) -> Keys {
        Keys {
            store,
            default_ttl: default_ttl.unwrap_or(DEFAULT_TTL).min(MAX_TTL),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// The lifetime of keys created without one.
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// Creates a key; returns its plaintext (shown once, never stored) and its metadata.
    /// `tenant` defaults to [`DEFAULT_TENANT`], `ttl` to the default lifetime; lifetimes
    /// are capped at [`MAX_TTL`].
    pub async fn create(
        &self,
        name: &str,
        tenant: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<(String, KeyInfo)> {
        let key = generate_key()?;
        let created = Utc::now();
        let ttl = ttl.unwrap_or(self.default_ttl).min(MAX_TTL);
        let expires = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|d| created.checked_add_signed(d))
            .ok_or_else(|| err("insert")(&"the key's expiry is out of range"))?;
        let info = KeyInfo {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            key_prefix: display_prefix(&key),
            tenant_id: tenant.unwrap_or(DEFAULT_TENANT).to_string(),
            created_at: format_time(created),
            expires_at: format_time(expires),
            last_used_at: None,
            revoked: false,
        };
        self.store.insert(&info, &hash_key(&key)).await?;
        Ok((key, info))
    }

    /// The metadata of `token` when it is a valid key (known, unrevoked, unexpired),
    /// after recording the use as its last-use time. A failure to record the use is
    /// logged and does not refuse the key.
    pub async fn authenticate(&self, token: &str) -> Result<Option<KeyInfo>> {
        if !is_key_shaped(token) {
            return Ok(None);
        }
        let hash = hash_key(token);
        let Some((mut info, stored)) = self.store.find_by_hash(&hash).await? else {
            return Ok(None);
        };
        // The lookup was by hash; compare again without an early exit all the same.
        if !constant_time_eq(stored.as_bytes(), hash.as_bytes()) {
            return Ok(None);
        }
        let now = Utc::now();
        if !info.is_valid_at(now) {
            if !info.revoked && info.expiry().is_none() {
                tracing::warn!(id = %info.id, expires_at = %info.expires_at, "API key refused: its expiry is not an RFC 3339 time");
            }
            return Ok(None);
        }
        let at = format_time(now);
        match self.store.touch(&info.id, &at).await {
            Ok(()) => info.last_used_at = Some(at),
            Err(e) => tracing::warn!(id = %info.id, "could not record the API key's use: {e}"),
        }
        Ok(Some(info))
    }

    /// Deletes every revoked key and every key past its expiry; returns how many.
    pub async fn cleanup(&self) -> Result<u64> {
        self.store.remove_stale(&format_time(Utc::now())).await
    }

    /// Runs [`Keys::cleanup`] every `every` (at least [`MIN_CLEANUP_INTERVAL`]), the
    /// first time `every` from now, until the task is aborted or the last other handle
    /// on the store is dropped. Failures are logged and retried at the next tick.
    pub fn spawn_cleanup(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let every = every.max(MIN_CLEANUP_INTERVAL);
        let store = Arc::downgrade(&self.store);
        let default_ttl = self.default_ttl;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(store) = store.upgrade() else { return };
                let keys = Keys { store, default_ttl };
                match keys.cleanup().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "expired and revoked API keys deleted"),
                    Err(e) => tracing::warn!("API key cleanup: {e}"),
                }
            }
        })
    }
}
