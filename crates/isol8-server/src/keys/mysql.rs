//! Keys in a MySQL or MariaDB database (`mysql_async`, a small connection pool): the
//! `api_keys` table with snake_case columns (see the [module docs](super)).

use std::fmt;

use mysql_async::prelude::Queryable;
use mysql_async::{from_row_opt, Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row};

use super::{err, KeyInfo, KeyStore, Result, SNAKE_COLUMNS, SNAKE_SELECT};

/// The table, as isol8 v0.20 creates it.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS api_keys (
        id           VARCHAR(36) PRIMARY KEY,
        name         TEXT NOT NULL,
        key_hash     VARCHAR(64) NOT NULL UNIQUE,
        key_prefix   VARCHAR(20) NOT NULL,
        tenant_id    VARCHAR(255) NOT NULL,
        created_at   VARCHAR(30) NOT NULL,
        expires_at   VARCHAR(30) NOT NULL,
        last_used_at VARCHAR(30),
        revoked      BOOLEAN NOT NULL DEFAULT FALSE
    )";

/// Its index (MySQL has no `CREATE INDEX IF NOT EXISTS`: an existing one is error 1061).
const INDEX: &str = "CREATE INDEX idx_api_keys_key_hash ON api_keys(key_hash)";

/// MySQL's "duplicate key name" error.
const ER_DUP_KEYNAME: u16 = 1061;

/// Most connections the pool opens.
const MAX_CONNECTIONS: usize = 10;

/// Keys in a MySQL or MariaDB database.
pub struct MysqlStore {
    pool: Pool,
}

impl fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's options hold the password: never print them.
        f.debug_struct("MysqlStore").finish_non_exhaustive()
    }
}

/// A row of `SELECT` as [`KeyInfo`] and the stored hash.
type Columns = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
);

fn row_info(row: Row) -> std::result::Result<(KeyInfo, String), mysql_async::FromRowError> {
    let (id, name, key_prefix, tenant_id, created_at, expires_at, last_used_at, revoked, hash) =
        from_row_opt::<Columns>(row)?;
    Ok((
        KeyInfo {
            id,
            name,
            key_prefix,
            tenant_id,
            created_at,
            expires_at,
            last_used_at,
            revoked: revoked != 0,
        },
        hash,
    ))
}

/// Rows as [`KeyInfo`]s, or what failed.
fn infos(op: &'static str, rows: Vec<Row>) -> Result<Vec<KeyInfo>> {
    rows.into_iter()
        .map(|r| row_info(r).map(|(info, _)| info).map_err(|e| err(op)(&e)))
        .collect()
}

/// A MySQL failure of operation `op` (server errors carry no connection details).
fn my_err(op: &'static str) -> impl Fn(mysql_async::Error) -> super::StoreError {
    move |e| err(op)(&format!("MySQL: {e}"))
}

/// Creates the table and its index when missing and checks the table's columns.
async fn migrate(conn: &mut Conn) -> std::result::Result<(), String> {
    conn.query_drop(SCHEMA).await.map_err(|e| e.to_string())?;
    let present: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'api_keys'",
            (),
        )
        .await
        .map_err(|e| e.to_string())?;
    if let Some(missing) = SNAKE_COLUMNS
        .iter()
        .find(|c| !present.iter().any(|p| p.eq_ignore_ascii_case(c)))
    {
        return Err(format!(
            "its table api_keys has no column {missing}: it is not an isol8 key table (move it away, or point the server at another database)"
        ));
    }
    match conn.query_drop(INDEX).await {
        Ok(()) => Ok(()),
        Err(mysql_async::Error::Server(e)) if e.code == ER_DUP_KEYNAME => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

impl MysqlStore {
    /// Connects to `url` (`mysql://user:password@host:port/database`), creates the
    /// table when missing and checks it.
    pub async fn connect(url: &str) -> Result<MysqlStore> {
        let opts = mysql_async::Opts::from_url(url)
            .map_err(|e| err("connect")(&format!("MySQL: invalid connection URL: {e}")))?;
        let constraints = PoolConstraints::new(0, MAX_CONNECTIONS)
            .ok_or_else(|| err("connect")(&"MySQL: invalid pool size"))?;
        let opts = OptsBuilder::from_opts(opts)
            // Revoking a revoked key matches a row even though nothing changes.
            .client_found_rows(true)
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        let pool = Pool::new(opts);
        let mut conn = pool.get_conn().await.map_err(my_err("connect"))?;
        migrate(&mut conn)
            .await
            .map_err(|e| err("open")(&format!("MySQL: {e}")))?;
        drop(conn);
        Ok(MysqlStore { pool })
    }

    async fn conn(&self, op: &'static str) -> Result<Conn> {
        self.pool.get_conn().await.map_err(my_err(op))
    }
}

#[async_trait::async_trait]
impl KeyStore for MysqlStore {
    async fn insert(&self, info: &KeyInfo, hash: &str) -> Result<()> {
        let mut conn = self.conn("insert").await?;
        conn.exec_drop(
            "INSERT INTO api_keys (id, name, key_hash, key_prefix, tenant_id, created_at, expires_at, last_used_at, revoked)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                &info.id,
                &info.name,
                hash,
                &info.key_prefix,
                &info.tenant_id,
                &info.created_at,
                &info.expires_at,
                &info.last_used_at,
                info.revoked,
            ),
        )
        .await
        .map_err(my_err("insert"))
    }

    async fn find_by_hash(&self, hash: &str) -> Result<Option<(KeyInfo, String)>> {
        let mut conn = self.conn("find").await?;
        let row: Option<Row> = conn
            .exec_first(
                format!("SELECT {SNAKE_SELECT} FROM api_keys WHERE key_hash = ?"),
                (hash,),
            )
            .await
            .map_err(my_err("find"))?;
        row.map(row_info).transpose().map_err(|e| err("find")(&e))
    }

    async fn touch(&self, id: &str, at: &str) -> Result<()> {
        let mut conn = self.conn("touch").await?;
        conn.exec_drop(
            "UPDATE api_keys SET last_used_at = ? WHERE id = ?",
            (at, id),
        )
        .await
        .map_err(my_err("touch"))
    }

    async fn get(&self, id: &str) -> Result<Option<KeyInfo>> {
        let mut conn = self.conn("get").await?;
        let row: Option<Row> = conn
            .exec_first(
                format!("SELECT {SNAKE_SELECT} FROM api_keys WHERE id = ?"),
                (id,),
            )
            .await
            .map_err(my_err("get"))?;
        row.map(|r| row_info(r).map(|(info, _)| info))
            .transpose()
            .map_err(|e| err("get")(&e))
    }

    async fn list(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>> {
        let mut conn = self.conn("list").await?;
        let rows: Vec<Row> = match tenant {
            Some(t) => {
                conn.exec(
                    format!(
                        "SELECT {SNAKE_SELECT} FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id"
                    ),
                    (t,),
                )
                .await
            }
            None => {
                conn.exec(
                    format!("SELECT {SNAKE_SELECT} FROM api_keys ORDER BY created_at, id"),
                    (),
                )
                .await
            }
        }
        .map_err(my_err("list"))?;
        infos("list", rows)
    }

    async fn revoke(&self, id: &str) -> Result<bool> {
        let mut conn = self.conn("revoke").await?;
        conn.exec_drop("UPDATE api_keys SET revoked = TRUE WHERE id = ?", (id,))
            .await
            .map_err(my_err("revoke"))?;
        Ok(conn.affected_rows() > 0)
    }

    async fn remove_stale(&self, now: &str) -> Result<u64> {
        let mut conn = self.conn("cleanup").await?;
        conn.exec_drop(
            "DELETE FROM api_keys WHERE revoked OR expires_at < ?",
            (now,),
        )
        .await
        .map_err(my_err("cleanup"))?;
        Ok(conn.affected_rows())
    }
}
