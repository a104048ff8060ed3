//! The configuration file (SPEC section 9).
//!
//! `./isol8.config.json`, else `~/.isol8/config.json`; the first found wins, none means
//! defaults. Every key is camelCase and unknown keys are errors that name the key and the
//! file. [`Config::json_schema`] generates the file's JSON Schema from these same types.

use std::path::{Path, PathBuf};

use isol8_protocol::{
    EngineOptions, NetworkFilter, NetworkMode, PoolSize, PoolStrategy, SeccompMode,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// Default timeout of an execution, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Memory limit such as `512m`.
    pub memory_limit: Option<String>,
    /// CPU limit as a fraction of cores (at least 0.01).
    pub cpu_limit: Option<f64>,
    /// Network mode.
    pub network: Option<NetworkMode>,
    /// Size of `/sandbox`.
    pub sandbox_size: Option<String>,
    /// Size of `/tmp`.
    pub tmp_size: Option<String>,
    /// Read-only root filesystem.
    pub readonly_root_fs: Option<bool>,
    /// Process limit (at least 1).
    pub pids_limit: Option<i64>,
    /// Cap on stdout and on stderr, in bytes.
    pub max_output_size: Option<u64>,
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
    /// Prune idle sessions automatically (server).
    pub auto_prune: Option<bool>,
    /// Idle time after which a session is pruned, in milliseconds (default 1 h).
    pub max_container_age_ms: Option<u64>,
}

/// Security settings (`security.*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityConfig {
    /// Seccomp mode.
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
    /// Allow `codeUrl` at all.
    pub enabled: Option<bool>,
    /// Accepted URL schemes (default `https`).
    pub allowed_schemes: Option<Vec<String>>,
    /// Host regexes that may serve code.
    pub allowed_hosts: Option<Vec<String>>,
    /// Host regexes that may never serve code.
    pub blocked_hosts: Option<Vec<String>>,
    /// Largest accepted code size, in bytes.
    pub max_code_size: Option<u64>,
    /// Fetch timeout, in milliseconds.
    pub fetch_timeout_ms: Option<u64>,
    /// Require `codeHash` with every `codeUrl`.
    pub require_hash: Option<bool>,
}

/// Audit log settings (`audit.*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// Record executions.
    pub enabled: Option<bool>,
    /// Where records go (`file` or `stdout`).
    pub destination: Option<String>,
    /// Directory of audit files.
    pub log_dir: Option<String>,
    /// Days to keep audit files.
    pub retention_days: Option<u32>,
    /// Include the code in records.
    pub include_code: Option<bool>,
    /// Include the output in records.
    pub include_output: Option<bool>,
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
    pub default_ttl_ms: Option<u64>,
    /// How often expired and revoked keys are deleted, in milliseconds (default
    /// 3600000, one hour; at least 100).
    pub cleanup_interval_ms: Option<u64>,
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
    pub max_timeout_ms: Option<u64>,
    /// Largest `memoryLimit`, such as `1g` (default: the server's `defaults.memoryLimit`,
    /// else `512m`).
    pub max_memory_limit: Option<String>,
    /// Largest `cpuLimit`, in cores (default: the server's `defaults.cpuLimit`, else 1).
    /// Every CPU limit is at least 0.01.
    pub max_cpu_limit: Option<f64>,
    /// Largest `pidsLimit` (default: the server's `defaults.pidsLimit`, else 64).
    pub max_pids_limit: Option<i64>,
    /// Largest `maxOutputSize`, in bytes per stream (default: the server's
    /// `defaults.maxOutputSize`, else 1048576). This also bounds the server's memory per
    /// buffered `/execute`.
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
    /// Most sessions (each holding at most one container) alive at once on the server
    /// (default 32); a request creating one more gets 429 with `Retry-After`.
    pub max_sessions: Option<u32>,
    /// Most sessions one tenant may hold at once (default 16; the master key is one
    /// tenant); a request creating one more gets 429 with `Retry-After`.
    pub max_sessions_per_tenant: Option<u32>,
    /// Most entries a client's `secrets` may have (default
    /// [`ServerPolicy::DEFAULT_MAX_SECRETS`]).
    pub max_secrets: Option<usize>,
    /// Most bytes a client's `secrets` may hold, names and values together (default
    /// [`ServerPolicy::DEFAULT_MAX_SECRET_BYTES`]).
    pub max_secret_bytes: Option<usize>,
}

impl ServerPolicy {
    /// `maxSecrets` when the configuration does not set it.
    pub const DEFAULT_MAX_SECRETS: usize = 100;
    /// `maxSecretBytes` when the configuration does not set it (64 KiB).
    pub const DEFAULT_MAX_SECRET_BYTES: usize = 64 << 10;
}

/// An image with baked-in packages built by `isol8 setup` (`prebuiltImages[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrebuiltImage {
    /// Runtime the image is based on.
    pub runtime: String,
    /// Tag of the built image.
    pub tag: Option<String>,
    /// Packages to install.
    #[serde(default)]
    pub install: Vec<String>,
    /// Extra shell commands run while building.
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
    /// Bound on concurrent executions (default 10). On a server it is one budget shared
    /// by ephemeral requests and every session.
    pub max_concurrent: Option<u32>,
    /// How long `isol8 serve` lets running executions finish after SIGTERM/SIGINT before
    /// killing them, in milliseconds (default 10000; `--shutdown-grace-ms` wins).
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
    /// Pool strategy.
    pub pool_strategy: Option<PoolStrategy>,
    /// Pool size.
    pub pool_size: Option<PoolSize>,
    /// Security settings.
    #[serde(default)]
    pub security: SecurityConfig,
    /// Remote code policy.
    #[serde(default)]
    pub remote_code: RemoteCodeConfig,
    /// Audit log.
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
    /// CA bundle trusted inside sandboxes (TLS-intercepting proxies).
    pub ca_bundle: Option<String>,
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

    /// Keys present in the file that this version parses but does not act on yet.
    pub fn inactive_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.audit != AuditConfig::default() {
            keys.push("audit");
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let err = Config::from_json_str(r#"{"defaults": {"timeoutMs": 5, "foo": 1}}"#)
            .expect_err("unknown");
        assert_eq!(err.to_string(), "unknown key `defaults.foo`");
        assert!(matches!(err, ParseError::UnknownKey { .. }), "{err:?}");
        let err = Config::from_json_str(r#"{"maxConcurent": 3}"#).expect_err("typo");
        assert_eq!(err.to_string(), "unknown key `maxConcurent`");
        let err = Config::from_json_str(r#"{"remoteCode": {"enabled": true, "x": 1}}"#)
            .expect_err("nested");
        assert_eq!(err.to_string(), "unknown key `remoteCode.x`");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err =
            Config::from_json_str(r#"{"defaults": {"network": "bridge"}}"#).expect_err("bad enum");
        let text = err.to_string();
        assert!(
            text.contains("defaults.network") && text.contains("filtered"),
            "{text}"
        );
    }

    #[test]
    fn values_reach_engine_options() {
        let c = Config::from_json_str(
            r#"{"maxConcurrent": 4, "defaults": {"memoryLimit": "256m", "network": "none"},
                "network": {"whitelist": ["^pypi\\.org$"]}, "poolStrategy": "secure",
                "security": {"seccomp": "strict"}}"#,
        )
        .expect("valid");
        assert_eq!(c.max_concurrent, Some(4));
        let o = c.engine_options();
        assert_eq!(o.memory_limit.as_deref(), Some("256m"));
        assert_eq!(o.pool_strategy, Some(PoolStrategy::Secure));
        assert_eq!(
            o.network_filter.expect("filter").whitelist,
            vec!["^pypi\\.org$".to_string()]
        );
        assert!(Config::default().inactive_keys().is_empty());
    }

    #[test]
    fn session_caps_and_the_shutdown_grace_are_read() {
        let c = Config::from_json_str(
            r#"{"shutdownGraceMs": 2500, "serverPolicy": {"maxSessions": 4, "maxSessionsPerTenant": 2}}"#,
        )
        .expect("valid");
        assert_eq!(c.shutdown_grace_ms, Some(2500));
        assert_eq!(c.server_policy.max_sessions, Some(4));
        assert_eq!(c.server_policy.max_sessions_per_tenant, Some(2));
        assert!(Config::from_json_str(r#"{"serverPolicy": {"maxSession": 4}}"#).is_err());
    }

    #[test]
    fn exempt_ranges_are_read_and_stay_out_of_engine_options() {
        let c = Config::from_json_str(
            r#"{"network": {"blacklist": ["x"], "exemptRanges": ["203.0.113.80", "198.18.0.0/15"]}}"#,
        )
        .expect("valid");
        assert_eq!(c.network.exempt_ranges, ["203.0.113.80", "198.18.0.0/15"]);
        let filter = c.engine_options().network_filter.expect("filter");
        assert_eq!(filter.blacklist, ["x"]);
        assert!(Config::from_json_str(r#"{"network": {"exempt": []}}"#).is_err());
    }

    #[test]
    fn schema_lists_every_top_level_key() {
        let schema = Config::json_schema();
        let props = schema["properties"].as_object().expect("properties");
        for key in [
            "maxConcurrent",
            "shutdownGraceMs",
            "defaults",
            "network",
            "cleanup",
            "poolStrategy",
            "poolSize",
            "security",
            "remoteCode",
            "audit",
            "auth",
            "prebuiltImages",
            "serverPolicy",
            "caBundle",
        ] {
            assert!(props.contains_key(key), "schema lacks {key}");
        }
    }
}
