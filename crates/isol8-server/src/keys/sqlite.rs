//! Keys in an embedded SQLite file (`rusqlite`, bundled SQLite): the `api_keys` table
//! with camelCase columns (see the [module docs](super)), in WAL mode, the file
//! readable by its owner only.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{err, time_of_millis, KeyInfo, KeyStore, Result, NEVER, OLD_TABLE, UNKNOWN_PREFIX};

/// The columns an `api_keys` table must have.
const COLUMNS: [&str; 9] = [
    "id",
    "name",
    "keyHash",
    "keyPrefix",
    "tenantId",
    "createdAt",
    "expiresAt",
    "lastUsedAt",
    "revoked",
];

/// What [`row_info`] reads.
const SELECT: &str =
    "id, name, keyPrefix, tenantId, createdAt, expiresAt, lastUsedAt, revoked, keyHash";

/// The table, as isol8 v0.20 creates it.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS api_keys (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        keyHash     TEXT NOT NULL UNIQUE,
        keyPrefix   TEXT NOT NULL,
        tenantId    TEXT NOT NULL,
        createdAt   TEXT NOT NULL,
        expiresAt   TEXT NOT NULL,
        lastUsedAt  TEXT,
        revoked     INTEGER NOT NULL DEFAULT 0
    )";

/// Its index, as isol8 v0.20 creates it.
const INDEX: &str = "CREATE INDEX IF NOT EXISTS idx_api_keys_keyHash ON api_keys(keyHash)";

/// Keys in an embedded SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

/// A row of `SELECT` as [`KeyInfo`] and the stored hash.
fn row_info(row: &Row<'_>) -> rusqlite::Result<(KeyInfo, String)> {
    Ok((
        KeyInfo {
            id: row.get(0)?,
            name: row.get(1)?,
            key_prefix: row.get(2)?,
            tenant_id: row.get(3)?,
            created_at: row.get(4)?,
            expires_at: row.get(5)?,
            last_used_at: row.get(6)?,
            revoked: row.get::<_, i64>(7)? != 0,
        },
        row.get(8)?,
    ))
}

impl SqliteStore {
    /// Opens (creating if needed, owner-only) the SQLite file at `path`, creates the
    /// table when missing and moves the keys of the earlier table into it.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let fail = |e: &dyn fmt::Display| err("open")(&format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err("open")(&format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path).map_err(|e| fail(&e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| fail(&e))?;
        // As isol8 v0.20 opens it (its WAL and shared-memory files take the database
        // file's owner-only mode).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| fail(&e))?;
        migrate(&mut conn).map_err(|e| fail(&e))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
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

/// True when the database has a table `name`.
fn has_table(tx: &Connection, name: &str) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}

/// Creates the table when missing, checks its columns, and moves the earlier table's
/// keys into it (then drops that table) — all in one transaction.
fn migrate(conn: &mut Connection) -> std::result::Result<(), String> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    tx.execute_batch(SCHEMA).map_err(|e| e.to_string())?;
    let present: Vec<String> = {
        let mut stmt = tx
            .prepare("SELECT name FROM pragma_table_info('api_keys')")
            .map_err(|e| e.to_string())?;
        let names = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(|e| e.to_string())?;
        names
    };
    if let Some(missing) = COLUMNS.iter().find(|c| !present.iter().any(|p| p == *c)) {
        return Err(format!(
            "its table api_keys has no column {missing}: it is not an isol8 key table (move it away, or point the server at another database)"
        ));
    }
    tx.execute_batch(INDEX).map_err(|e| e.to_string())?;
    if has_table(&tx, OLD_TABLE).map_err(|e| e.to_string())? {
        let moved = move_old_keys(&tx)
            .map_err(|e| format!("moving the keys of {OLD_TABLE} into api_keys: {e}"))?;
        tracing::info!(moved, "API keys moved from {OLD_TABLE} to api_keys");
    }
    tx.commit().map_err(|e| e.to_string())
}

/// A row of the earlier table: id, name, tenant, hash, created and expiry times (epoch
/// milliseconds; `NULL`: never) and the revocation flag.
type OldRow = (String, String, String, String, i64, Option<i64>, i64);

/// Copies every key of the earlier table into `api_keys` and drops it; returns how many.
fn move_old_keys(tx: &Connection) -> rusqlite::Result<usize> {
    let old: Vec<OldRow> = {
        let mut stmt = tx.prepare(&format!(
            "SELECT id, name, tenant, key_hash, created_at, expires_at, revoked FROM {OLD_TABLE}"
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (id, name, tenant, hash, created, expires, revoked) in &old {
        tx.execute(
            "INSERT INTO api_keys (id, name, keyHash, keyPrefix, tenantId, createdAt, expiresAt, lastUsedAt, revoked)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)",
            params![
                id,
                name,
                hash,
                UNKNOWN_PREFIX,
                tenant,
                time_of_millis(*created),
                expires.map_or_else(|| NEVER.to_string(), time_of_millis),
                i64::from(*revoked != 0),
            ],
        )?;
    }
    tx.execute_batch(&format!("DROP TABLE {OLD_TABLE}"))?;
    Ok(old.len())
}

#[async_trait::async_trait]
impl KeyStore for SqliteStore {
    async fn insert(&self, info: &KeyInfo, hash: &str) -> Result<()> {
        let (info, hash) = (info.clone(), hash.to_string());
        self.with("insert", move |c| {
            c.execute(
                "INSERT INTO api_keys (id, name, keyHash, keyPrefix, tenantId, createdAt, expiresAt, lastUsedAt, revoked)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    info.id,
                    info.name,
                    hash,
                    info.key_prefix,
                    info.tenant_id,
                    info.created_at,
                    info.expires_at,
                    info.last_used_at,
                    i64::from(info.revoked)
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn find_by_hash(&self, hash: &str) -> Result<Option<(KeyInfo, String)>> {
        let hash = hash.to_string();
        self.with("find", move |c| {
            c.prepare_cached(&format!("SELECT {SELECT} FROM api_keys WHERE keyHash = ?1"))?
                .query_row([hash], row_info)
                .optional()
        })
        .await
    }

    async fn touch(&self, id: &str, at: &str) -> Result<()> {
        let (id, at) = (id.to_string(), at.to_string());
        self.with("touch", move |c| {
            c.prepare_cached("UPDATE api_keys SET lastUsedAt = ?1 WHERE id = ?2")?
                .execute([at, id])
                .map(drop)
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<KeyInfo>> {
        let id = id.to_string();
        self.with("get", move |c| {
            c.prepare_cached(&format!("SELECT {SELECT} FROM api_keys WHERE id = ?1"))?
                .query_row([id], row_info)
                .optional()
                .map(|r| r.map(|(info, _)| info))
        })
        .await
    }

    async fn list(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>> {
        let tenant = tenant.map(str::to_string);
        self.with("list", move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SELECT} FROM api_keys WHERE ?1 IS NULL OR tenantId = ?1 ORDER BY createdAt, id"
            ))?;
            let rows = stmt.query_map([tenant], |r| row_info(r).map(|(info, _)| info))?;
            rows.collect()
        })
        .await
    }

    async fn revoke(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.with("revoke", move |c| {
            c.execute("UPDATE api_keys SET revoked = 1 WHERE id = ?1", [id])
                .map(|n| n > 0)
        })
        .await
    }

    async fn remove_stale(&self, now: &str) -> Result<u64> {
        let now = now.to_string();
        self.with("cleanup", move |c| {
            c.execute(
                "DELETE FROM api_keys WHERE revoked <> 0 OR expiresAt < ?1",
                [now],
            )
            .map(|n| n as u64)
        })
        .await
    }
}
