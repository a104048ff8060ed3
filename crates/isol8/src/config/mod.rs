//! The configuration file (SPEC section 9).
//!
//! `./isol8.config.json`, else `~/.isol8/config.json`; the first found wins, none means
//! defaults. Every key is camelCase and unknown keys are errors that name the key and the
//! file. [`Config::json_schema`] generates the file's JSON Schema from these same types.
//!
//! The format is a superset of the reference implementation's (isol8 v0.20): each of its
//! keys is read here (`installPackages` and `filesystem` included, our older `install` and
//! `file` still accepted), and integer keys take a whole float such as `10.0` ([`whole`]).
//! [`Config::resolved`] fills in every default (`isol8 config`).

use std::path::{Path, PathBuf};

use isol8_protocol::{
    EngineOptions, NetworkFilter, NetworkMode, PoolSize, PoolStrategy, SeccompMode,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod resolved;
pub mod whole;

/// File name looked up in the current directory.
pub const LOCAL_FILE: &str = "isol8.config.json";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON for the configuration (unknown key, wrong type…).
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        #[source]
        source: ParseError,
    },
}

/// Why configuration JSON does not parse, naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// A key the format does not have (a typo, or an option of another version).
    #[error("unknown key `{key}`")]
    UnknownKey {
        /// Its path (`defaults.foo`).
        key: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
    /// Not JSON, or not an object at the top.
    #[error("{source}")]
    Syntax {
        /// The decoder's error.
        source: serde_json::Error,
    },
    /// A value of the wrong type or form.
    #[error("`{key}`: {source}")]
    Value {
        /// Its path (`defaults.network`).
        key: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
}

/// Default sandbox settings (`defaults.*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Defaults {
    /// Default timeout of an execution, in milliseconds (default 30000).
    #[serde(default, deserialize_with = "whole::opt")]
    pub timeout_ms: Option<u64>,
    /// Memory limit such as `512m` (the default).
    pub memory_limit: Option<String>,
    /// CPU limit as a fraction of cores (at least 0.01; default 1).
    pub cpu_limit: Option<f64>,
    /// Network mode. Unset is `none`, except that a request's `installPackages` then
    /// switch it to `filtered`; an explicit `none` refuses installs.
    pub network: Option<NetworkMode>,
    /// Size of `/sandbox` (default `512m`).
    pub sandbox_size: Option<String>,
    /// Size of `/tmp` (default `256m`).
    pub tmp_size: Option<String>,
    /// Read-only root filesystem (default true).
    pub readonly_root_fs: Option<bool>,
    /// Process limit (at least 1; default 64).
    #[serde(default, deserialize_with = "whole::opt")]
    pub pids_limit: Option<i64>,
    /// Cap on stdout and on stderr, in bytes (default 1048576).
    #[serde(default, deserialize_with = "whole::opt")]
    pub max_output_size: Option<u64>,
}

impl Defaults {
    /// `timeoutMs` when unset.
    pub const TIMEOUT_MS: u64 = 30_000;
    /// `memoryLimit` when unset.
    pub const MEMORY_LIMIT: &'static str = "512m";
    /// `cpuLimit` when unset, in cores.
    pub const CPU_LIMIT: f64 = 1.0;
    /// `pidsLimit` when unset.
    pub const PIDS_LIMIT: i64 = 64;
    /// `sandboxSize` when unset.
    pub const SANDBOX_SIZE: &'static str = "512m";
    /// `tmpSize` when unset.
    pub const TMP_SIZE: &'static str = "256m";
    /// `maxOutputSize` when unset, in bytes per stream.
    pub const MAX_OUTPUT_SIZE: u64 = 1 << 20;
}

/// The filtered network (`network.*`): host rules, and the addresses egress may dial
/// although they are special-purpose.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkConfig {
    /// Host regexes allowed through the egress proxy (empty: every host not blacklisted).
    #[serde(default)]
    pub whitelist: Vec<String>,
    /// Host regexes refused by the egress proxy (wins over the whitelist).
    #[serde(default)]
    pub blacklist: Vec<String>,
    /// Addresses (`203.0.113.80`) or CIDR ranges (`203.0.113.0/24`) that the egress
    /// proxy and the `codeUrl` fetcher may dial although they are private, loopback,
    /// special-purpose or this host's own — e.g. a package-registry gateway inside a
    /// documentation range. Host rules still apply. Operator-only: clients cannot set it.
    #[serde(default)]
    pub exempt_ranges: Vec<String>,
}

impl NetworkConfig {
    /// The host rules, as engine options carry them.
    pub fn filter(&self) -> NetworkFilter {
        NetworkFilter {
            whitelist: self.whitelist.clone(),
            blacklist: self.blacklist.clone(),
            narrowing_whitelists: Vec::new(),
        }
    }
}

/// Container housekeeping (`cleanup.*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CleanupConfig {
    /// Prune idle sessions automatically (server; default true).
    pub auto_prune: Option<bool>,
    /// Idle time after which a session is pruned, in milliseconds (default 1 h).
    #[serde(default, deserialize_with = "whole::opt")]
    pub max_container_age_ms: Option<u64>,
}

impl CleanupConfig {
    /// `maxContainerAgeMs` when unset (one hour).
    pub const MAX_CONTAINER_AGE_MS: u64 = 3_600_000;
}

/// Security settings (`security.*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityConfig {
    /// Seccomp mode (default `strict`).
    pub seccomp: Option<SeccompMode>,
    /// Profile file for `custom`.
    pub custom_profile_path: Option<String>,
    /// OCI runtime registered with the daemon, e.g. `runsc` (gVisor) for a stronger
    /// boundary than the shared kernel; the daemon's default when unset.
    pub runtime: Option<String>,
}

/// Policy for fetching code from URLs (`remoteCode.*`); off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteCodeConfig {
    /// Allow `codeUrl` at all (default false).
    pub enabled: Option<bool>,
    /// Accepted URL schemes (default `https`).
    pub allowed_schemes: Option<Vec<String>>,
    /// Host regexes that may serve code (empty: any host not blocked).
    pub allowed_hosts: Option<Vec<String>>,
    /// Host regexes that may never serve code. Private, loopback, special-purpose and
    /// metadata addresses are refused whatever this says (see `network.exemptRanges`).
    pub blocked_hosts: Option<Vec<String>>,
    /// Largest accepted code size, in bytes (default 1048576, at most 16 MiB).
    #[serde(default, deserialize_with = "whole::opt")]
    pub max_code_size: Option<u64>,
    /// Fetch timeout, in milliseconds (default 10000, at most 300000).
    #[serde(default, deserialize_with = "whole::opt")]
    pub fetch_timeout_ms: Option<u64>,
    /// Require `codeHash` with every `codeUrl` (default false).
    pub require_hash: Option<bool>,
    /// Keep fetched code in memory and serve the same `codeUrl` (with the same
    /// `codeHash`, if any) from there for `cacheTtl` seconds instead of fetching it
    /// again (default true). Per engine process: a server shares it between requests.
    pub enable_cache: Option<bool>,
    /// How long fetched code stays cached, in seconds (default 3600; 0 disables the
    /// cache; longer than a year counts as a year).
    #[serde(default, deserialize_with = "whole::opt")]
    pub cache_ttl: Option<u64>,
}

impl RemoteCodeConfig {
    /// `maxCodeSize` when unset (10 MiB, as in isol8 v0.20).
    pub const MAX_CODE_SIZE: u64 = 10 << 20;
    /// `fetchTimeoutMs` when unset (30 s, as in isol8 v0.20).
    pub const FETCH_TIMEOUT_MS: u64 = 30_000;
    /// `enableCache` when unset.
    pub const ENABLE_CACHE: bool = true;
    /// `cacheTtl` when unset, in seconds (one hour).
    pub const CACHE_TTL_SECS: u64 = 3600;
}

/// Where audit records go (`audit.destination`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditDestination {
    /// Files under `audit.logDir` (also spelled `file`).
    #[default]
    #[serde(alias = "file")]
    Filesystem,
    /// Standard output.
    Stdout,
}

/// Audit log settings (`audit.*`): one JSON line per execution, written by the engine
/// (the `audit` module documents the record's fields, the files and their pruning).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// Record executions (default false).
    pub enabled: Option<bool>,
    /// Where records go: `filesystem` (the default; `file` is accepted too) or `stdout`.
    pub destination: Option<AuditDestination>,
    /// Directory of the daily audit files (default: `ISOL8_AUDIT_DIR`, else
    /// `./.isol8_audit`); created if missing.
    pub log_dir: Option<String>,
    /// An executable run after records are written, given the log file's path as its
    /// only argument; never waited for by executions, one run at a time (filesystem
    /// destination only).
    pub post_log_script: Option<String>,
    /// Put `resourceUsage` (CPU, memory, network) in each record (default true).
    pub track_resources: Option<bool>,
    /// Days to keep audit files (default 90): daily files dated more than this many days
    /// before today are deleted when the log opens and at each change of day; 0 keeps
    /// them all.
    #[serde(default, deserialize_with = "whole::opt")]
    pub retention_days: Option<u32>,
    /// Include the code in records, secrets masked (default false).
    pub include_code: Option<bool>,
    /// Include stdout and stderr in records, secrets masked (default false).
    pub include_output: Option<bool>,
}

impl AuditConfig {
    /// `retentionDays` when unset.
    pub const RETENTION_DAYS: u32 = 90;
}

/// API key store of the server (`auth.*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// Accept database keys besides the master key.
    pub enabled: Option<bool>,
    /// SQLite file path, or a `postgres://`, `postgresql://`, `mysql://` or `mariadb://`
    /// connection string.
    pub connection_string: Option<String>,
    /// Default lifetime of new keys, in milliseconds (default 86400000, 24 hours).
    #[serde(default, deserialize_with = "whole::opt")]
    pub default_ttl_ms: Option<u64>,
    /// How often expired and revoked keys are deleted, in milliseconds (default
    /// 3600000, one hour; at least 100).
    #[serde(default, deserialize_with = "whole::opt")]
    pub cleanup_interval_ms: Option<u64>,
}

impl AuthConfig {
    /// `defaultTtlMs` when unset: 24 hours.
    pub const DEFAULT_TTL_MS: u64 = 24 * 3600 * 1000;
    /// `cleanupIntervalMs` when unset: one hour.
    pub const CLEANUP_INTERVAL_MS: u64 = 3600 * 1000;
}

/// The server's `GET /metrics` (`metrics.*`, an isol8 addition): Prometheus text of what
/// the server and its engine do. It needs an API key like every other route unless
/// `public` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` without an API key (default false), for a scraper that
    /// cannot send one; the figures then reach anyone who can reach the server (counts
    /// and timings only: no code, output, keys or tenants).
    pub public: Option<bool>,
}

/// Caps on what server clients may request (`serverPolicy`).
///
/// Every cap has a default: without it, a client may ask for at most the server's own
/// setting (its `defaults.*`, else the engine default: 30000 ms, `512m`, 1 CPU, 64
/// processes, 1 MiB of output per stream, `512m` `/sandbox`, `256m` `/tmp`), so a server
/// started without a policy is bounded too. A cap may raise that; a value the server
/// itself uses is always accepted. Caps apply to what the request would actually run
/// with (the client's `options` laid over the server's), and a client can never remove
/// the server's OCI runtime, seccomp profile or network rules by leaving them out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerPolicy {
    /// Largest `timeoutMs` (request or options), in milliseconds (default: the server's
    /// `defaults.timeoutMs`, else 30000).
    #[serde(default, deserialize_with = "whole::opt")]
    pub max_timeout_ms: Option<u64>,
    /// Largest `memoryLimit`, such as `1g` (default: the server's `defaults.memoryLimit`,
    /// else `512m`).
    pub max_memory_limit: Option<String>,
    /// Largest `cpuLimit`, in cores (default: the server's `defaults.cpuLimit`, else 1).
    /// Every CPU limit is at least 0.01.
    pub max_cpu_limit: Option<f64>,
    /// Largest `pidsLimit` (default: the server's `defaults.pidsLimit`, else 64).
    #[serde(default, deserialize_with = "whole::opt")]
    pub max_pids_limit: Option<i64>,
    /// Largest `maxOutputSize`, in bytes per stream (default: the server's
    /// `defaults.maxOutputSize`, else 1048576). This also bounds the server's memory per
    /// buffered `/execute`.
    #[serde(default, deserialize_with = "whole::opt")]
    pub max_output_size: Option<u64>,
    /// Largest `sandboxSize` (default: the server's `defaults.sandboxSize`, else `512m`).
    pub max_sandbox_size: Option<String>,
    /// Largest `tmpSize` (default: the server's `defaults.tmpSize`, else `256m`).
    pub max_tmp_size: Option<String>,
    /// Network modes clients may pick besides the server's own (default `none` and
    /// `filtered`; `host` also needs `allowHostNetwork`).
    pub allowed_networks: Option<Vec<NetworkMode>>,
    /// Let clients pick `host` networking.
    pub allow_host_network: Option<bool>,
    /// Let clients pick their own `image`.
    pub allow_custom_image: Option<bool>,
    /// Seccomp modes clients may pick besides the server's own `security.seccomp`
    /// (default: none — clients keep the server's mode).
    pub allowed_seccomp: Option<Vec<SeccompMode>>,
    /// Let clients ask for a writable root filesystem (`readonlyRootFs: false`; default
    /// no). Such sandboxes are never reused: each serves one execution.
    pub allow_writable_root_fs: Option<bool>,
    /// Let clients keep an ephemeral execution's container after it ends (`persist:
    /// true`; default no). A kept container is never reused; it stays until `POST
    /// /cleanup`, `isol8 cleanup` or the server's shutdown removes it.
    pub allow_persist: Option<bool>,
    /// Most sessions (each holding at most one container) alive at once on the server
    /// (default 32); a request creating one more gets 429 with `Retry-After`.
    #[serde(default, deserialize_with = "whole::opt")]
    pub max_sessions: Option<u32>,
    /// Most sessions one tenant may hold at once (default 16; the master key is one
    /// tenant); a request creating one more gets 429 with `Retry-After`.
    #[serde(default, deserialize_with = "whole::opt")]
    pub max_sessions_per_tenant: Option<u32>,
    /// Most entries a client's `secrets` may have (default
    /// [`ServerPolicy::DEFAULT_MAX_SECRETS`]).
    #[serde(default, deserialize_with = "whole::opt")]
    pub max_secrets: Option<usize>,
    /// Most bytes a client's `secrets` may hold, names and values together (default
    /// [`ServerPolicy::DEFAULT_MAX_SECRET_BYTES`]).
    #[serde(default, deserialize_with = "whole::opt")]
    pub max_secret_bytes: Option<usize>,
}

impl ServerPolicy {
    /// `maxSecrets` when the configuration does not set it.
    pub const DEFAULT_MAX_SECRETS: usize = 100;
    /// `maxSecretBytes` when the configuration does not set it (64 KiB).
    pub const DEFAULT_MAX_SECRET_BYTES: usize = 64 << 10;
    /// `maxSessions` when the configuration does not set it.
    pub const DEFAULT_MAX_SESSIONS: u32 = 32;
    /// `maxSessionsPerTenant` when the configuration does not set it.
    pub const DEFAULT_MAX_SESSIONS_PER_TENANT: u32 = 16;
}

/// An image with baked-in packages that `isol8 setup` and `isol8 serve` build when it
/// is missing or out of date (`prebuiltImages[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrebuiltImage {
    /// Tag of the built image (default `isol8-custom:<runtime>-<hash of the contents>`).
    pub tag: Option<String>,
    /// Runtime the image is based on (`python`, `node` or `bun`).
    pub runtime: String,
    /// Packages to install (also spelled `install`).
    #[serde(default, alias = "install")]
    pub install_packages: Vec<String>,
    /// A bash script baked into the image and run before every execution that uses the
    /// image, as the sandbox user in the working directory, after any `installPackages`
    /// of the request and before the request's own `setupScript`; a failure ends the
    /// execution with the `setup` phase.
    pub setup_script: Option<String>,
    /// Shell commands run once, as root with network, while the image is built (after
    /// the installs).
    #[serde(default)]
    pub setup: Vec<String>,
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// JSON Schema reference (ignored).
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Debug logging: the CLI logs as with `-v`, `isol8 serve` at debug level
    /// (default false).
    pub debug: Option<bool>,
    /// Bound on concurrent executions (default 10). On a server it is one budget shared
    /// by ephemeral requests and every session.
    #[serde(default, deserialize_with = "whole::opt")]
    pub max_concurrent: Option<u32>,
    /// How long `isol8 serve` lets running executions finish after SIGTERM/SIGINT before
    /// killing them, in milliseconds (default 10000; `--shutdown-grace-ms` wins).
    #[serde(default, deserialize_with = "whole::opt")]
    pub shutdown_grace_ms: Option<u64>,
    /// Default sandbox settings.
    #[serde(default)]
    pub defaults: Defaults,
    /// Host rules and address exemptions of the filtered network.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Container housekeeping.
    #[serde(default)]
    pub cleanup: CleanupConfig,
    /// Pool strategy (default `fast`).
    pub pool_strategy: Option<PoolStrategy>,
    /// Pool size: warm containers per image, one number or `{"clean": N, "dirty": N}`
    /// (default 1 and 1).
    #[serde(default, deserialize_with = "pool_size")]
    pub pool_size: Option<PoolSize>,
    /// Security settings.
    #[serde(default)]
    pub security: SecurityConfig,
    /// Remote code policy.
    #[serde(default)]
    pub remote_code: RemoteCodeConfig,
    /// Audit log (see [`AuditConfig`]).
    #[serde(default)]
    pub audit: AuditConfig,
    /// Server key store.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Images with baked-in packages.
    #[serde(default)]
    pub prebuilt_images: Vec<PrebuiltImage>,
    /// Caps on client requests (server).
    #[serde(default)]
    pub server_policy: ServerPolicy,
    /// The server's Prometheus endpoint, `GET /metrics` (an isol8 addition).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// CA bundle trusted inside sandboxes (TLS-intercepting proxies).
    pub ca_bundle: Option<String>,
}

impl Config {
    /// `maxConcurrent` when unset.
    pub const DEFAULT_MAX_CONCURRENT: u32 = 10;
    /// `shutdownGraceMs` when unset.
    pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
}

/// Reads `poolSize`: a whole number, or an object with exactly `clean` and `dirty`.
fn pool_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PoolSize>, D::Error> {
    use serde::de::Error as _;
    let count = |v: &serde_json::Value, what: &str| -> Result<u32, D::Error> {
        let n = v
            .as_u64()
            .map(|n| whole::Whole(n.into()))
            .or_else(|| v.as_i64().map(|n| whole::Whole(n.into())))
            .map(Ok)
            .or_else(|| v.as_f64().map(whole::Whole::from_f64))
            .ok_or_else(|| D::Error::custom(format!("{what} must be a whole number")))?
            .map_err(|e| D::Error::custom(format!("{what}: {e}")))?;
        n.get()
            .map_err(|e| D::Error::custom(format!("{what}: {e}")))
    };
    let expected = r#"a whole number or {"clean": N, "dirty": N}"#;
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(None),
        Some(n @ serde_json::Value::Number(_)) => {
            Ok(Some(PoolSize::Total(count(&n, "the pool size")?)))
        }
        Some(serde_json::Value::Object(m)) => {
            if let Some(k) = m.keys().find(|k| *k != "clean" && *k != "dirty") {
                return Err(D::Error::custom(format!(
                    "unknown key `{k}` in poolSize; expected {expected}"
                )));
            }
            let get = |k: &str| match m.get(k) {
                Some(v) => count(v, k),
                None => Err(D::Error::custom(format!(
                    "`{k}` is missing; expected {expected}"
                ))),
            };
            Ok(Some(PoolSize::Split {
                clean: get("clean")?,
                dirty: get("dirty")?,
            }))
        }
        Some(other) => Err(D::Error::custom(format!(
            "expected {expected}, got {other}"
        ))),
    }
}

/// A configuration and where it came from.
#[derive(Debug, Clone, Default)]
pub struct LoadedConfig {
    /// The configuration.
    pub config: Config,
    /// The file it was read from; `None` for built-in defaults.
    pub path: Option<PathBuf>,
}

impl Config {
    /// Loads `./isol8.config.json`, else `~/.isol8/config.json`, else defaults.
    pub fn load() -> Result<LoadedConfig, ConfigError> {
        let mut candidates = vec![PathBuf::from(LOCAL_FILE)];
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(Path::new(&home).join(".isol8").join("config.json"));
        }
        for path in candidates {
            if path.is_file() {
                let config = Self::load_from(&path)?;
                return Ok(LoadedConfig {
                    config,
                    path: Some(path),
                });
            }
        }
        Ok(LoadedConfig::default())
    }

    /// Loads one file.
    pub fn load_from(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text).map_err(|source| ConfigError::Invalid {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses configuration JSON; the error names the offending key.
    pub fn from_json_str(text: &str) -> Result<Config, ParseError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let source = e.into_inner();
            // serde says "unknown field `x`, expected one of …"; the path already ends in x.
            if source.to_string().starts_with("unknown field") {
                ParseError::UnknownKey { key, source }
            } else if key == "." {
                ParseError::Syntax { source }
            } else {
                ParseError::Value { key, source }
            }
        })?;
        Ok(config)
    }

    /// The JSON Schema of the configuration file.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
    }

    /// Engine options from `defaults`, `network`, pool and security keys.
    pub fn engine_options(&self) -> EngineOptions {
        let d = &self.defaults;
        EngineOptions {
            network: d.network,
            network_filter: Some(self.network.filter()),
            timeout_ms: d.timeout_ms,
            memory_limit: d.memory_limit.clone(),
            cpu_limit: d.cpu_limit,
            pids_limit: d.pids_limit,
            readonly_root_fs: d.readonly_root_fs,
            sandbox_size: d.sandbox_size.clone(),
            tmp_size: d.tmp_size.clone(),
            max_output_size: d.max_output_size,
            pool_strategy: self.pool_strategy,
            pool_size: self.pool_size,
            security: Some(isol8_protocol::options::SecurityOptions {
                seccomp: self.security.seccomp,
                custom_profile_path: self.security.custom_profile_path.clone(),
                runtime: self.security.runtime.clone(),
            }),
            ..Default::default()
        }
    }

    /// Keys present in the file that this version parses but does not act on yet (none
    /// today: `audit` was the last).
    pub fn inactive_keys(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
