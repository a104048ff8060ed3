//! [`serve`]: a whole `isol8 serve` process — the engine, the key store, the state, the
//! listener, signal handling and the graceful shutdown. The CLI maps its flags and the
//! configuration file to a [`ServeConfig`] and prints the [`ServeEvent`]s.
//!
//! Shutdown: the first SIGTERM/SIGINT stops accepting connections and drains
//! ([`AppState::drain`]: queued and new requests get 503 at once); running executions
//! get the grace to finish (a second signal ends the wait); then every execution still
//! running is killed and every container removed, and clients get a bounded moment to
//! receive their answers.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use isol8::config::{AuthConfig, Config, ServerPolicy};
use isol8::docker::EngineConfig;
use isol8::DockerEngine;

use crate::keys::{self, Keys, StoreError};
use crate::net::{GuardedListener, DEFAULT_WRITE_STALL};
use crate::policy::{self, PolicyConfigError};
use crate::state::{AppState, ServerSettings, DEFAULT_BODY_TIMEOUT};

/// Grace for running executions after SIGTERM/SIGINT when nothing else sets one.
pub const DEFAULT_SHUTDOWN_GRACE: Duration =
    Duration::from_millis(Config::DEFAULT_SHUTDOWN_GRACE_MS);

/// Idle sessions are pruned after this when `cleanup.maxContainerAgeMs` is not set.
pub const DEFAULT_SESSION_MAX_AGE: Duration =
    Duration::from_millis(isol8::config::CleanupConfig::MAX_CONTAINER_AGE_MS);

/// Shortest master key accepted.
pub const MIN_MASTER_KEY_LEN: usize = 16;

/// After the grace, how long killed executions' clients get to receive their answers
/// before the process exits anyway.
const ANSWER_BOUND: Duration = Duration::from_secs(5);

/// The same after a second signal: just long enough for answers already on their way.
const SECOND_SIGNAL_ANSWER_BOUND: Duration = Duration::from_secs(1);

/// Where database keys are kept, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStoreConfig {
    /// A SQLite file path, or a `postgres://`, `postgresql://`, `mysql://` or
    /// `mariadb://` connection string ([`keys::Backend::of`]).
    pub connection: String,
    /// Lifetime of keys created without one (`None`: [`keys::DEFAULT_TTL`], 24 hours).
    pub default_ttl: Option<Duration>,
    /// How often expired and revoked keys are deleted (`auth.cleanupIntervalMs`).
    pub cleanup_interval: Duration,
}

impl KeyStoreConfig {
    /// The key store named by an override (`--auth-db`) and `auth.*`: the override wins
    /// and enables keys; otherwise `auth.enabled` (default off, as in isol8 v0.20: a
    /// `connectionString` alone does not turn keys on, and a warning says so), with
    /// `<home>/.isol8/auth.db` when enabled without a connection string. `None`: the
    /// master key only.
    pub fn resolve(
        override_conn: Option<&str>,
        auth: &AuthConfig,
        home: Option<&Path>,
    ) -> Result<Option<KeyStoreConfig>, ServeError> {
        let enabled = override_conn.is_some() || auth.enabled == Some(true);
        if !enabled && auth.connection_string.is_some() {
            tracing::warn!(
                "auth.connectionString is set but auth.enabled is not true: database API keys \
                 are off (set auth.enabled, or pass --auth-db)"
            );
        }
        if !enabled {
            return Ok(None);
        }
        let connection = match override_conn
            .map(str::to_string)
            .or_else(|| auth.connection_string.clone())
        {
            Some(c) if !c.trim().is_empty() => c,
            Some(_) => return Err(ServeError::EmptyKeyStore),
            None => home
                .ok_or(ServeError::NoHome)?
                .join(".isol8")
                .join("auth.db")
                .to_string_lossy()
                .into_owned(),
        };
        Ok(Some(KeyStoreConfig {
            connection,
            default_ttl: auth.default_ttl_ms.map(Duration::from_millis),
            cleanup_interval: auth
                .cleanup_interval_ms
                .map_or(keys::DEFAULT_CLEANUP_INTERVAL, Duration::from_millis),
        }))
    }

    /// What the store is, fit to print: never the connection string of a database (it
    /// may hold a password).
    pub fn describe(&self) -> String {
        match keys::Backend::of(&self.connection) {
            Ok(b) => b.describe(),
            Err(_) => "an unsupported connection string".to_string(),
        }
    }

    /// Opens (creating if needed) the store.
    pub async fn open(&self) -> Result<Keys, StoreError> {
        let store = keys::open(&self.connection).await?;
        Ok(Keys::new(store, self.default_ttl))
    }
}

/// Everything `isol8 serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The master key (at least [`MIN_MASTER_KEY_LEN`] characters).
    pub master_key: String,
    /// The shared engine's configuration; its defaults above a policy cap are lowered
    /// to it at start ([`policy::bound_defaults`]).
    pub engine: EngineConfig,
    /// Caps on what clients may request.
    pub policy: ServerPolicy,
    /// Database keys (`None`: the master key only).
    pub key_store: Option<KeyStoreConfig>,
    /// Idle sessions are removed after this (`None`: never).
    pub prune_after: Option<Duration>,
    /// How long running executions may finish after the first signal.
    pub shutdown_grace: Duration,
    /// Bound on receiving a request body.
    pub body_timeout: Duration,
    /// A client that accepts no response bytes for this long is disconnected.
    pub write_stall: Duration,
    /// Serve `GET /metrics` without an API key (config `metrics.public`).
    pub metrics_public: bool,
}

impl ServeConfig {
    /// The configuration file's settings for a server on `addr` with `master_key`:
    /// engine, `serverPolicy`, `cleanup.autoPrune` / `maxContainerAgeMs`,
    /// `shutdownGraceMs`. No key store (see [`KeyStoreConfig::resolve`]).
    pub fn from_config(config: &Config, addr: SocketAddr, master_key: String) -> ServeConfig {
        let cleanup = &config.cleanup;
        ServeConfig {
            addr,
            master_key,
            engine: EngineConfig::from_config(config),
            policy: config.server_policy.clone(),
            key_store: None,
            prune_after: cleanup.auto_prune.unwrap_or(true).then(|| {
                cleanup
                    .max_container_age_ms
                    .map_or(DEFAULT_SESSION_MAX_AGE, Duration::from_millis)
            }),
            shutdown_grace: config
                .shutdown_grace_ms
                .map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_millis),
            body_timeout: DEFAULT_BODY_TIMEOUT,
            write_stall: DEFAULT_WRITE_STALL,
            metrics_public: config.metrics.public.unwrap_or(false),
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The master key is shorter than [`MIN_MASTER_KEY_LEN`].
    #[error("the API key is too short: use at least {MIN_MASTER_KEY_LEN} characters")]
    MasterKeyTooShort,
    /// The key store's connection string is empty.
    #[error(
        "the API key database is empty: give a SQLite file path, or a postgres:// or mysql:// URL"
    )]
    EmptyKeyStore,
    /// Keys are enabled with no connection string and no home directory.
    #[error("HOME is not set: pass --auth-db PATH")]
    NoHome,
    /// The key store could not be opened.
    #[error(transparent)]
    KeyStore(#[from] StoreError),
    /// The policy, or the defaults under it, are invalid.
    #[error(transparent)]
    Policy(#[from] PolicyConfigError),
    /// The engine could not start (Docker unreachable, invalid options…).
    #[error(transparent)]
    Engine(#[from] isol8::Error),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install the SIGTERM/SIGINT handlers: {0}")]
    Signals(std::io::Error),
    /// The server's accept loop failed.
    #[error("the server failed: {0}")]
    Server(std::io::Error),
}

/// What a running server reports, for its operator (the CLI prints each on stderr).
#[derive(Debug, Clone, PartialEq)]
pub enum ServeEvent {
    /// A default was lowered to the policy's cap at start (one line each).
    Lowered(String),
    /// Listening; the first line of a started server.
    Listening {
        /// The bound address.
        addr: SocketAddr,
    },
    /// Which database keys are accepted (`None`: the master key only).
    KeyStore(Option<String>),
    /// The first signal: draining, with this many executions running.
    ShuttingDown {
        /// Executions running.
        running: usize,
        /// Their grace.
        grace: Duration,
    },
    /// Executions still running are killed: the grace is over, or a second signal came.
    Killing {
        /// True after a second signal.
        second_signal: bool,
        /// Executions killed.
        running: usize,
    },
    /// Nothing runs any more: removing the containers.
    Removing,
}

impl fmt::Display for ServeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeEvent::Lowered(line) => write!(f, "note: {line}"),
            ServeEvent::Listening { addr } => {
                write!(f, "isol8 {} listening on http://{addr}", crate::VERSION)
            }
            ServeEvent::KeyStore(Some(d)) => write!(f, "database API keys: {d}"),
            ServeEvent::KeyStore(None) => write!(f, "database API keys: off (master key only)"),
            ServeEvent::ShuttingDown { running, grace } => write!(
                f,
                "shutting down: new and queued requests get 503; {running} running execution(s) have {:.1} s to finish (a second signal stops at once)",
                grace.as_secs_f64()
            ),
            ServeEvent::Killing {
                second_signal,
                running,
            } => write!(
                f,
                "{}: killing {running} execution(s) and removing this server's containers",
                if *second_signal {
                    "second signal"
                } else {
                    "grace over"
                }
            ),
            ServeEvent::Removing => write!(f, "removing this server's containers"),
        }
    }
}

/// Runs the HTTP API until SIGINT/SIGTERM, then removes this server's containers (see
/// the module docs). `report` gets every [`ServeEvent`], in order.
pub async fn serve(
    config: ServeConfig,
    report: &(dyn Fn(ServeEvent) + Sync),
) -> Result<(), ServeError> {
    if config.master_key.len() < MIN_MASTER_KEY_LEN {
        return Err(ServeError::MasterKeyTooShort);
    }
    let keys = match &config.key_store {
        Some(k) => Some((k.open().await?, k.describe())),
        None => None,
    };
    let mut engine_config = config.engine;
    // Clients get at most the server's own settings unless serverPolicy raises a cap;
    // defaults above a cap are lowered to it, so a request leaving a field out fits.
    for line in policy::bound_defaults(&config.policy, &mut engine_config.options)? {
        report(ServeEvent::Lowered(line));
    }
    let options = engine_config.options.clone();
    // The engine reports its work to the metrics `GET /metrics` shows.
    let metrics = Arc::new(crate::metrics::Metrics::new());
    engine_config.observer = Some(metrics.clone());
    let engine = DockerEngine::connect_with(engine_config).await?;
    let (keys, keys_desc) = match keys {
        Some((k, d)) => (Some(k), Some(d)),
        None => (None, None),
    };
    let state = AppState::with_settings(
        engine,
        options,
        config.master_key,
        ServerSettings {
            policy: config.policy,
            keys,
            body_timeout: config.body_timeout,
            metrics,
            metrics_public: config.metrics_public,
        },
    );
    if let Some(max_age) = config.prune_after {
        AppState::spawn_pruner(&state, max_age);
    }
    // Expired and revoked keys are deleted every auth.cleanupIntervalMs.
    let key_cleanup = match (state.keys(), &config.key_store) {
        (Some(keys), Some(k)) => Some(keys.spawn_cleanup(k.cleanup_interval)),
        _ => None,
    };
    let _stop_key_cleanup = AbortOnDrop(key_cleanup);
    let addr = config.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    report(ServeEvent::Listening { addr });
    report(ServeEvent::KeyStore(keys_desc));
    let listener = GuardedListener::new(listener, config.write_stall);
    let signals = count_signals().map_err(ServeError::Signals)?;
    let mut first = signals.clone();
    let server = axum::serve(listener, crate::app(state.clone()))
        // The first signal stops the accept loop (no new connections).
        .with_graceful_shutdown(async move {
            let _ = first.wait_for(|n| *n >= 1).await;
        });
    let mut server = tokio::spawn(std::future::IntoFuture::into_future(server));
    let mut signals_seen = signals.clone();
    tokio::select! {
        _ = signals_seen.wait_for(|n| *n >= 1) => {}
        ended = &mut server => {
            state.shutdown().await;
            return match ended {
                Ok(r) => r.map_err(ServeError::Server),
                Err(e) => Err(ServeError::Server(std::io::Error::other(e))),
            };
        }
    }
    shut_down(&state, server, signals, config.shutdown_grace, report).await;
    Ok(())
}

/// Aborts a background task when dropped (when [`serve`] returns, however it returns).
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Counts SIGTERM and SIGINT deliveries, from now on.
fn count_signals() -> std::io::Result<tokio::sync::watch::Receiver<u32>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(rx)
}

/// The graceful shutdown after the first SIGTERM/SIGINT: queued and new requests get 503
/// at once ([`AppState::drain`]); running executions get `grace` to finish (a second
/// signal ends the wait); then every execution still running is killed and every
/// container removed; clients get a bounded moment to receive their answers.
async fn shut_down(
    state: &Arc<AppState>,
    mut server: tokio::task::JoinHandle<std::io::Result<()>>,
    mut signals: tokio::sync::watch::Receiver<u32>,
    grace: Duration,
    report: &(dyn Fn(ServeEvent) + Sync),
) {
    state.drain();
    report(ServeEvent::ShuttingDown {
        running: state.executing(),
        grace,
    });
    let deadline = tokio::time::Instant::now() + grace;
    let mut again = false;
    while state.executing() > 0 || state.open_websockets() > 0 {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = tokio::time::sleep_until(deadline) => break,
            _ = signals.wait_for(|n| *n >= 2) => {
                again = true;
                break;
            }
        }
    }
    if state.executing() > 0 {
        report(ServeEvent::Killing {
            second_signal: again,
            running: state.executing(),
        });
    } else {
        report(ServeEvent::Removing);
    }
    state.shutdown().await;
    // Let the clients of killed executions receive their answers (503, or a final
    // `sandbox lost` event), within a bound (short after a second signal).
    let (bound, more) = if again {
        (SECOND_SIGNAL_ANSWER_BOUND, 3)
    } else {
        (ANSWER_BOUND, 2)
    };
    let answered = async {
        let _ = (&mut server).await;
        while state.open_websockets() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = answered => {}
        _ = tokio::time::sleep(bound) => {}
        _ = signals.wait_for(|n| *n >= more) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_override_and_auth_config_choose_the_key_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("conf.db");
        let conn = Some(db.to_string_lossy().into_owned());

        // Nothing configured: master key only.
        let none = KeyStoreConfig::resolve(None, &AuthConfig::default(), Some(dir.path()));
        assert_eq!(none.expect("ok"), None);

        // connectionString alone does not enable keys (as in v0.20)…
        let alone = AuthConfig {
            connection_string: conn.clone(),
            ..Default::default()
        };
        assert_eq!(
            KeyStoreConfig::resolve(None, &alone, None).expect("ok"),
            None
        );
        // …enabled does, there; defaultTtlMs reaches the keys.
        let auth = AuthConfig {
            enabled: Some(true),
            connection_string: conn.clone(),
            default_ttl_ms: Some(60_000),
            ..Default::default()
        };
        let store = KeyStoreConfig::resolve(None, &auth, None)
            .expect("ok")
            .expect("keys");
        assert!(store.describe().contains("SQLite"), "{}", store.describe());
        let keys = store.open().await.expect("open");
        assert!(db.exists());
        assert_eq!(keys.default_ttl(), Duration::from_secs(60));
        assert_eq!(store.cleanup_interval, keys::DEFAULT_CLEANUP_INTERVAL);

        // auth.cleanupIntervalMs, read from a config file, sets how often keys are
        // cleaned up.
        let file = Config::from_json_str(&format!(
            r#"{{"auth": {{"enabled": true, "connectionString": {}, "cleanupIntervalMs": 250}}}}"#,
            serde_json::json!(conn.as_deref().expect("conn"))
        ))
        .expect("valid config");
        let store = KeyStoreConfig::resolve(None, &file.auth, None)
            .expect("ok")
            .expect("keys");
        assert_eq!(store.cleanup_interval, Duration::from_millis(250));
        assert_eq!(
            store.open().await.expect("open").default_ttl(),
            keys::DEFAULT_TTL
        );

        // enabled: false turns them off, unless the override asks for them.
        let off = AuthConfig {
            enabled: Some(false),
            connection_string: conn.clone(),
            ..Default::default()
        };
        assert_eq!(KeyStoreConfig::resolve(None, &off, None).expect("ok"), None);
        let flag = dir.path().join("flag.db");
        let store = KeyStoreConfig::resolve(flag.to_str(), &off, None)
            .expect("ok")
            .expect("keys");
        store.open().await.expect("open");
        assert!(
            flag.exists() && store.describe().contains("flag.db"),
            "{}",
            store.describe()
        );

        // enabled: true without a connection string: <home>/.isol8/auth.db.
        let on = AuthConfig {
            enabled: Some(true),
            ..Default::default()
        };
        KeyStoreConfig::resolve(None, &on, Some(dir.path()))
            .expect("ok")
            .expect("keys")
            .open()
            .await
            .expect("open");
        assert!(dir.path().join(".isol8").join("auth.db").exists());
        assert!(matches!(
            KeyStoreConfig::resolve(None, &on, None),
            Err(ServeError::NoHome)
        ));
        assert!(matches!(
            KeyStoreConfig::resolve(Some(" "), &on, None),
            Err(ServeError::EmptyKeyStore)
        ));

        // A PostgreSQL URL is never printed (it may carry a password).
        let pg = AuthConfig {
            enabled: Some(true),
            connection_string: Some("postgres://u:secret@127.0.0.1:1/db".into()),
            ..Default::default()
        };
        let store = KeyStoreConfig::resolve(None, &pg, None)
            .expect("ok")
            .expect("keys");
        assert_eq!(store.describe(), "PostgreSQL");
        let e = store.open().await.expect_err("nothing listens");
        assert!(!e.to_string().contains("secret"), "{e}");
        // Nor a MySQL one.
        let my = AuthConfig {
            enabled: Some(true),
            connection_string: Some("mysql://u:secret@127.0.0.1:1/db".into()),
            ..Default::default()
        };
        let store = KeyStoreConfig::resolve(None, &my, None)
            .expect("ok")
            .expect("keys");
        assert_eq!(store.describe(), "MySQL");
        let e = store.open().await.expect_err("nothing listens");
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn the_config_file_sets_grace_pruning_policy_and_public_metrics() {
        let addr: SocketAddr = "127.0.0.1:3000".parse().expect("addr");
        let c = ServeConfig::from_config(&Config::default(), addr, "k".repeat(16));
        assert_eq!(c.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(c.prune_after, Some(DEFAULT_SESSION_MAX_AGE));
        assert_eq!(c.key_store, None);
        assert!(!c.metrics_public, "/metrics needs a key by default");
        let config = Config::from_json_str(
            r#"{"shutdownGraceMs": 2500, "cleanup": {"autoPrune": false}, "serverPolicy": {"maxSessions": 3}, "metrics": {"public": true}}"#,
        )
        .expect("valid config");
        let c = ServeConfig::from_config(&config, addr, "k".repeat(16));
        assert_eq!(c.shutdown_grace, Duration::from_millis(2500));
        assert_eq!(c.prune_after, None);
        assert_eq!(c.policy.max_sessions, Some(3));
        assert!(c.metrics_public);
    }

    #[tokio::test]
    async fn a_short_master_key_is_refused_before_anything_starts() {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let c = ServeConfig::from_config(&Config::default(), addr, "short".into());
        let e = serve(c, &|_| {}).await.expect_err("too short");
        assert!(matches!(e, ServeError::MasterKeyTooShort), "{e}");
        assert_eq!(
            e.to_string(),
            "the API key is too short: use at least 16 characters"
        );
    }

    #[test]
    fn events_read_as_the_operator_expects() {
        let addr: SocketAddr = "127.0.0.1:3000".parse().expect("addr");
        let line = ServeEvent::Listening { addr }.to_string();
        assert!(
            line.contains("listening on http://127.0.0.1:3000"),
            "{line}"
        );
        let line = ServeEvent::ShuttingDown {
            running: 2,
            grace: Duration::from_millis(1500),
        }
        .to_string();
        assert!(line.contains("2 running execution(s) have 1.5 s"), "{line}");
        let line = ServeEvent::Killing {
            second_signal: true,
            running: 1,
        }
        .to_string();
        assert!(line.starts_with("second signal: killing 1"), "{line}");
    }
}
