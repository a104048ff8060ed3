//! Keys in a PostgreSQL database (`tokio-postgres`, one connection, reopened when it
//! drops): the `api_keys` table with snake_case columns (see the [module docs](super)).

use std::fmt;
use std::sync::Arc;

use tokio_postgres::{Client, GenericClient, NoTls, Row};

use super::{
    err, time_of_millis, KeyInfo, KeyStore, Result, NEVER, OLD_TABLE, SNAKE_COLUMNS, SNAKE_SELECT,
    UNKNOWN_PREFIX,
};

/// The table, as isol8 v0.20 creates it.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS api_keys (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        key_hash     TEXT NOT NULL UNIQUE,
        key_prefix   TEXT NOT NULL,
        tenant_id    TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        expires_at   TEXT NOT NULL,
        last_used_at TEXT,
        revoked      BOOLEAN NOT NULL DEFAULT FALSE
    )";

/// Its index, as isol8 v0.20 creates it.
const INDEX: &str = "CREATE INDEX IF NOT EXISTS idx_api_keys_key_hash ON api_keys(key_hash)";

/// The advisory lock that makes servers starting together create and migrate the table
/// one at a time.
const MIGRATION_LOCK: i64 = 0x6973_6f6c_385f_6b65; // "isol8_ke"

/// Keys in a PostgreSQL database.
pub struct PostgresStore {
    url: String,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

/// A row of `SELECT` as [`KeyInfo`] and the stored hash.
fn pg_row(row: &Row) -> std::result::Result<(KeyInfo, String), tokio_postgres::Error> {
    Ok((
        KeyInfo {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            key_prefix: row.try_get(2)?,
            tenant_id: row.try_get(3)?,
            created_at: row.try_get(4)?,
            expires_at: row.try_get(5)?,
            last_used_at: row.try_get(6)?,
            revoked: row.try_get(7)?,
        },
        row.try_get(8)?,
    ))
}

/// Opens a connection to `url`, its driver task running in the background.
async fn dial(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| err("connect")(&format!("PostgreSQL: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("PostgreSQL key store connection closed: {e}");
        }
    });
    Ok(client)
}

/// Creates the table when missing, checks its columns, and moves the earlier table's
/// keys into it (then drops that table) — in one transaction, under an advisory lock.
async fn migrate(client: &mut Client) -> std::result::Result<(), String> {
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| e.to_string())?;
    tx.batch_execute(SCHEMA).await.map_err(|e| e.to_string())?;
    let present: Vec<String> = tx
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'api_keys'",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if let Some(missing) = SNAKE_COLUMNS
        .iter()
        .find(|c| !present.iter().any(|p| p == *c))
    {
        return Err(format!(
            "its table api_keys has no column {missing}: it is not an isol8 key table (move it away, or point the server at another database)"
        ));
    }
    tx.batch_execute(INDEX).await.map_err(|e| e.to_string())?;
    let old: bool = tx
        .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&OLD_TABLE])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| e.to_string())?;
    if old {
        let moved = move_old_keys(&tx)
            .await
            .map_err(|e| format!("moving the keys of {OLD_TABLE} into api_keys: {e}"))?;
        tracing::info!(moved, "API keys moved from {OLD_TABLE} to api_keys");
    }
    tx.commit().await.map_err(|e| e.to_string())
}

/// Copies every key of the earlier table into `api_keys` and drops it; returns how many.
async fn move_old_keys(
    tx: &impl GenericClient,
) -> std::result::Result<usize, tokio_postgres::Error> {
    let rows = tx
        .query(
            &format!(
                "SELECT id, name, tenant, key_hash, created_at, expires_at, revoked FROM {OLD_TABLE}"
            ),
            &[],
        )
        .await?;
    for r in &rows {
        let (id, name, tenant, hash): (String, String, String, String) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        let created: i64 = r.try_get(4)?;
        let expires: Option<i64> = r.try_get(5)?;
        let revoked: bool = r.try_get(6)?;
        tx.execute(
            "INSERT INTO api_keys (id, name, key_hash, key_prefix, tenant_id, created_at, expires_at, last_used_at, revoked)
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8)",
            &[
                &id,
                &name,
                &hash,
                &UNKNOWN_PREFIX,
                &tenant,
                &time_of_millis(created),
                &expires.map_or_else(|| NEVER.to_string(), time_of_millis),
                &revoked,
            ],
        )
        .await?;
    }
    tx.batch_execute(&format!("DROP TABLE {OLD_TABLE}")).await?;
    Ok(rows.len())
}

impl PostgresStore {
    /// Connects to `url`, creates the table when missing and moves the keys of the
    /// earlier table into it.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        let mut client = dial(url).await?;
        migrate(&mut client)
            .await
            .map_err(|e| err("open")(&format!("PostgreSQL: {e}")))?;
        Ok(PostgresStore {
            url: url.to_string(),
            client: tokio::sync::Mutex::new(Some(Arc::new(client))),
        })
    }

    /// The live connection, reconnecting if the previous one closed.
    async fn client(&self) -> Result<Arc<Client>> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let client = Arc::new(dial(&self.url).await?);
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
                "INSERT INTO api_keys (id, name, key_hash, key_prefix, tenant_id, created_at, expires_at, last_used_at, revoked)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &info.id,
                    &info.name,
                    &hash,
                    &info.key_prefix,
                    &info.tenant_id,
                    &info.created_at,
                    &info.expires_at,
                    &info.last_used_at,
                    &info.revoked,
                ],
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
                &format!("SELECT {SNAKE_SELECT} FROM api_keys WHERE key_hash = $1"),
                &[&hash],
            )
            .await
            .map_err(|e| err("find")(&e))?;
        row.as_ref()
            .map(pg_row)
            .transpose()
            .map_err(|e| err("find")(&e))
    }

    async fn touch(&self, id: &str, at: &str) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2",
                &[&at, &id],
            )
            .await
            .map(drop)
            .map_err(|e| err("touch")(&e))
    }

    async fn get(&self, id: &str) -> Result<Option<KeyInfo>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {SNAKE_SELECT} FROM api_keys WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(|e| err("get")(&e))?;
        row.as_ref()
            .map(|r| pg_row(r).map(|(info, _)| info))
            .transpose()
            .map_err(|e| err("get")(&e))
    }

    async fn list(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>> {
        self.client()
            .await?
            .query(
                &format!(
                    "SELECT {SNAKE_SELECT} FROM api_keys WHERE $1::text IS NULL OR tenant_id = $1
                     ORDER BY created_at, id"
                ),
                &[&tenant],
            )
            .await
            .map_err(|e| err("list")(&e))?
            .iter()
            .map(|r| pg_row(r).map(|(info, _)| info))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| err("list")(&e))
    }

    async fn revoke(&self, id: &str) -> Result<bool> {
        self.client()
            .await?
            .execute("UPDATE api_keys SET revoked = TRUE WHERE id = $1", &[&id])
            .await
            .map(|n| n > 0)
            .map_err(|e| err("revoke")(&e))
    }

    async fn remove_stale(&self, now: &str) -> Result<u64> {
        self.client()
            .await?
            .execute(
                "DELETE FROM api_keys WHERE revoked OR expires_at < $1",
                &[&now],
            )
            .await
            .map_err(|e| err("cleanup")(&e))
    }
}
