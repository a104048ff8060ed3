//! Engine options (SPEC section 3) as they travel in the library, the CLI and the
//! server's `options` object. Every field is optional here; the library fills defaults
//! and validates values (naming the field and the accepted form when one is wrong).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Lifetime of the sandbox container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A clean container per execution.
    #[default]
    Ephemeral,
    /// One container per session, kept between executions.
    Persistent,
}

/// Network access of the sandbox (SPEC section 5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only.
    #[default]
    None,
    /// HTTP(S) egress through isol8's filtering proxy.
    Filtered,
    /// The host's network.
    Host,
}

impl NetworkMode {
    /// The option value as written in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Filtered => "filtered",
            NetworkMode::Host => "host",
        }
    }
}

/// Host-name regexes for the `filtered` network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkFilter {
    /// When non-empty, only hosts matching one of these are allowed.
    #[serde(default)]
    pub whitelist: Vec<String>,
    /// Hosts matching any of these are blocked (wins over the whitelist).
    #[serde(default)]
    pub blacklist: Vec<String>,
}

/// How pooled containers are recycled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum PoolStrategy {
    /// Reset and reuse containers.
    #[default]
    Fast,
    /// One execution per container; destroyed afterwards.
    Secure,
}

/// Warm pool size: one number, or separate clean and dirty counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum PoolSize {
    /// The same number of clean containers per image.
    Total(u32),
    /// Clean (ready) and dirty (awaiting reset) counts per image.
    Split {
        /// Ready containers kept per image.
        clean: u32,
        /// Used containers awaiting reset per image.
        dirty: u32,
    },
}

impl Default for PoolSize {
    fn default() -> Self {
        PoolSize::Split { clean: 1, dirty: 1 }
    }
}

/// Seccomp profile selection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// isol8's default-deny profile.
    #[default]
    Strict,
    /// No seccomp filter at all (not recommended).
    Unconfined,
    /// A profile file given by `customProfilePath`.
    Custom,
}

/// Security settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityOptions {
    /// Which seccomp profile to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<SeccompMode>,
    /// Path of the profile used with `seccomp: custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_profile_path: Option<String>,
    /// OCI runtime registered with the Docker daemon (e.g. `runsc` for gVisor); the
    /// daemon's default (`runc`) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

/// Engine options; `None` means "use the configured default".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct EngineOptions {
    /// `ephemeral` (default) or `persistent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// `none` (default), `filtered` or `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkMode>,
    /// Host-name rules for `filtered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_filter: Option<NetworkFilter>,
    /// Default timeout in milliseconds (a request's `timeoutMs` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Memory limit such as `512m` (k/m/g suffixes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    /// CPU limit as a fraction of cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<f64>,
    /// Maximum number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    /// Mount the root filesystem read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_root_fs: Option<bool>,
    /// Size of the `/sandbox` tmpfs, such as `512m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_size: Option<String>,
    /// Size of the `/tmp` tmpfs, such as `256m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmp_size: Option<String>,
    /// Cap on stdout and on stderr, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_size: Option<u64>,
    /// Environment variables whose values are masked as `***` in all output.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Image overriding the runtime's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Record the proxy's decisions in `networkLogs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_network: Option<bool>,
    /// `fast` (default) or `secure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_strategy: Option<PoolStrategy>,
    /// Warm containers per image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<PoolSize>,
    /// Seccomp settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityOptions>,
    /// Keep the container after the run for inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_size_accepts_number_or_split() {
        let n: PoolSize = serde_json::from_str("3").expect("number");
        assert_eq!(n, PoolSize::Total(3));
        let s: PoolSize = serde_json::from_str(r#"{"clean":2,"dirty":0}"#).expect("split");
        assert_eq!(s, PoolSize::Split { clean: 2, dirty: 0 });
    }

    #[test]
    fn unknown_enum_value_is_rejected_with_accepted_values() {
        let err = serde_json::from_str::<EngineOptions>(r#"{"network":"bridge"}"#)
            .expect_err("bridge is not a mode");
        let msg = err.to_string();
        assert!(msg.contains("bridge") && msg.contains("filtered"), "{msg}");
    }
}
