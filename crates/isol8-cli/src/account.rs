//! `isol8 login`, `isol8 logout` and `isol8 session list|stop`, and the stored
//! credentials (`~/.isol8/credentials.json`, mode 0600) that `run --host` falls back to.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use isol8::{EngineOptions, RemoteEngine};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What `isol8 login` stores: the reference CLI's layout, `{host, token, expiresAt,
/// keyId}` (plus `tenant` when the server named one). The older layout of this CLI,
/// `{host, key, id, tenant?, expiresAt?}`, is still read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The server (`http://…`), without a trailing slash.
    pub host: String,
    /// The issued database key.
    #[serde(alias = "key")]
    pub token: String,
    /// When it expires (RFC 3339), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The key's id (what `logout` revokes).
    #[serde(alias = "id")]
    pub key_id: String,
    /// The tenant it acts as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl Credentials {
    /// True when `expiresAt` is a time at or before `now`. An expiry that does not parse
    /// as RFC 3339 counts as unknown (not expired): the server decides.
    pub fn expired_at(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.expires_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t <= now)
    }
}

/// `~/.isol8/credentials.json`.
pub fn credentials_path() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set: cannot locate ~/.isol8")?;
    Ok(PathBuf::from(home).join(".isol8").join("credentials.json"))
}

/// The stored credentials, if `isol8 login` ran.
pub fn load_credentials() -> Result<Option<Credentials>> {
    let path = credentials_path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    };
    let creds = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not valid credentials (run `isol8 login` again)",
            path.display()
        )
    })?;
    Ok(Some(creds))
}

/// Writes the credentials atomically, readable by the owner only.
fn save_credentials(c: &Credentials) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let path = credentials_path()?;
    let dir = path.parent().context("credentials path has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(".credentials.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    // The umask cannot widen 0600, but make sure of it all the same.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(serde_json::to_string_pretty(c)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn normalize(host: &str) -> String {
    host.trim_end_matches('/').to_string()
}

/// The key for `host`: `explicit` (flag or ISOL8_API_KEY) else the stored login for the
/// same host. A stored key past its `expiresAt` is an error saying to log in again.
pub fn key_for(host: &str, explicit: Option<String>) -> Result<Option<String>> {
    if let Some(k) = explicit.filter(|k| !k.is_empty()) {
        return Ok(Some(k));
    }
    let Some(creds) = load_credentials()?.filter(|c| normalize(&c.host) == normalize(host)) else {
        return Ok(None);
    };
    if creds.expired_at(chrono::Utc::now()) {
        bail!(
            "the API key stored by `isol8 login` for {} expired at {}: run `isol8 login --host {}` again (or pass --key)",
            creds.host,
            creds.expires_at.as_deref().unwrap_or("?"),
            creds.host
        );
    }
    Ok(Some(creds.token))
}

/// Flags of `isol8 login`.
#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The isol8 server, e.g. http://127.0.0.1:3000.
    #[arg(long, value_name = "URL")]
    pub host: String,
    /// The server's master key (prefer the ISOL8_API_KEY environment variable).
    #[arg(long, env = "ISOL8_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Label of the issued key (default `login`).
    #[arg(long)]
    pub name: Option<String>,
    /// Tenant the issued key acts as (default `default`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Lifetime of the issued key in milliseconds (default the server's).
    #[arg(long = "ttl", visible_alias = "ttl-ms", value_name = "MS")]
    pub ttl_ms: Option<u64>,
}

/// Exchanges the master key for an expiring database key and stores it.
pub async fn login(args: LoginArgs) -> Result<i32> {
    let Some(master) = args.key.filter(|k| !k.is_empty()) else {
        bail!("API key required: pass the server's master key with --key or ISOL8_API_KEY");
    };
    let engine = RemoteEngine::new(&args.host, &master, None, EngineOptions::default())?;
    let mut body = json!({});
    if let Some(n) = args.name {
        body["name"] = json!(n);
    }
    if let Some(t) = &args.tenant {
        body["tenantId"] = json!(t);
    }
    if let Some(ms) = args.ttl_ms {
        body["ttlMs"] = json!(ms);
    }
    // `{token, expiresAt, keyId}` (servers before it answered `{key, id, …}`).
    let issued = engine.login(&body).await?;
    // The reference's reply `{token, expiresAt, keyId}`, or this server's older
    // `{key, id, tenant, expiresAt}`.
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| issued[*n].as_str())
            .map(str::to_string)
    };
    let (Some(token), Some(key_id)) = (field(&["token", "key"]), field(&["keyId", "id"])) else {
        bail!("the server's login reply has no token or keyId (is it an isol8 server?)");
    };
    let creds = Credentials {
        host: normalize(&args.host),
        token,
        expires_at: field(&["expiresAt"]),
        key_id,
        tenant: field(&["tenantId", "tenant"]).or_else(|| args.tenant.clone()),
    };
    let path = save_credentials(&creds)?;
    println!(
        "logged in to {} as tenant {} (key {}, expires {}); credentials in {}",
        creds.host,
        creds.tenant.as_deref().unwrap_or("?"),
        creds.key_id,
        creds.expires_at.as_deref().unwrap_or("never"),
        path.display()
    );
    Ok(0)
}

/// Revokes the stored key on its server and removes the credentials file.
pub async fn logout() -> Result<i32> {
    let path = credentials_path()?;
    let Some(creds) = load_credentials()? else {
        bail!("not logged in (no {})", path.display());
    };
    let engine = RemoteEngine::new(&creds.host, &creds.token, None, EngineOptions::default())?;
    match engine.revoke_key(&creds.key_id).await {
        Ok(()) => {}
        // Already revoked or expired: nothing left to revoke on the server.
        Err(isol8::Error::Remote { status: 403, .. }) => {
            eprintln!("note: the server no longer accepted this key (expired or revoked)");
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "could not revoke the key on {} (credentials kept; try again)",
                creds.host
            )))
        }
    }
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    println!("logged out of {}: key {} revoked", creds.host, creds.key_id);
    Ok(0)
}

/// Flags of `isol8 session`.
#[derive(clap::Args, Debug)]
pub struct SessionArgs {
    /// The isol8 server (default: the one of `isol8 login`).
    #[arg(long, value_name = "URL", global = true)]
    pub host: Option<String>,
    /// API key (prefer ISOL8_API_KEY; default: the one of `isol8 login`).
    #[arg(long, env = "ISOL8_API_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
    #[command(subcommand)]
    pub command: SessionCommand,
}

/// `isol8 session …`.
#[derive(clap::Subcommand, Debug)]
pub enum SessionCommand {
    /// List your sessions on the server.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a session and remove its container.
    Stop {
        /// The session id.
        id: String,
    },
}

/// Runs `isol8 session list|stop`.
pub async fn session(args: SessionArgs) -> Result<i32> {
    let host = match args.host {
        Some(h) => h,
        None => match load_credentials()? {
            Some(c) => c.host,
            None => bail!("no server: pass --host URL or run `isol8 login --host URL` first"),
        },
    };
    let Some(key) = key_for(&host, args.key)? else {
        bail!(
            "API key required for {host}: pass --key, set ISOL8_API_KEY, or run `isol8 login --host {host}`"
        );
    };
    let engine = RemoteEngine::new(&host, &key, None, EngineOptions::default())?;
    match args.command {
        SessionCommand::List { json } => {
            let sessions = engine.list_sessions().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&sessions)?);
            } else if sessions.is_empty() {
                eprintln!("no sessions");
            } else {
                println!("{:<40} {:<8} LAST USED", "ID", "ACTIVE");
                for s in &sessions {
                    println!(
                        "{:<40} {:<8} {}",
                        s["id"].as_str().unwrap_or("?"),
                        s["isActive"].as_bool().unwrap_or(false),
                        s["lastAccessedAt"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        SessionCommand::Stop { id } => {
            engine.delete_session(&id).await?;
            println!("session {id} stopped");
        }
    }
    Ok(0)
}
