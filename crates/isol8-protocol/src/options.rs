//! Engine options (SPEC section 3) as they travel in the library, the CLI and the
//! server's `options` object. Every field is optional here; the library fills defaults
//! and validates values (naming the field and the accepted form when one is wrong).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Lifetime of the sandbox container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
#[cfg_attr(
    feature = "clap",
    derive(clap::ValueEnum),
    value(rename_all = "lowercase")
)]
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
#[cfg_attr(
    feature = "clap",
    derive(clap::ValueEnum),
    value(rename_all = "lowercase")
)]
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
    /// Further whitelists, each of which must also admit a host (one of its patterns
    /// matches). When options are laid over others ([`EngineOptions::overlay`]) a second
    /// whitelist lands here, so it narrows what the first admits instead of widening it.
    /// Empty lists admit every host and are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub narrowing_whitelists: Vec<Vec<String>>,
}

impl NetworkFilter {
    /// Every non-empty whitelist: a host is admitted only if each of them admits it.
    pub fn whitelists(&self) -> impl Iterator<Item = &Vec<String>> {
        std::iter::once(&self.whitelist)
            .chain(&self.narrowing_whitelists)
            .filter(|w| !w.is_empty())
    }

    /// `over` laid on `self` so that it can only narrow: the blacklists are joined, and a
    /// host must pass every whitelist of both (an empty one admits every host).
    pub fn narrowed_by(&self, over: &NetworkFilter) -> NetworkFilter {
        let mut blacklist = self.blacklist.clone();
        for p in &over.blacklist {
            if !blacklist.contains(p) {
                blacklist.push(p.clone());
            }
        }
        let mut whitelists: Vec<Vec<String>> = Vec::new();
        for w in self.whitelists().chain(over.whitelists()) {
            if !whitelists.contains(w) {
                whitelists.push(w.clone());
            }
        }
        let mut layers = whitelists.into_iter();
        NetworkFilter {
            whitelist: layers.next().unwrap_or_default(),
            blacklist,
            narrowing_whitelists: layers.collect(),
        }
    }
}

/// How pooled containers are recycled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
#[cfg_attr(
    feature = "clap",
    derive(clap::ValueEnum),
    value(rename_all = "lowercase")
)]
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
#[cfg_attr(
    feature = "clap",
    derive(clap::ValueEnum),
    value(rename_all = "lowercase")
)]
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

impl SecurityOptions {
    /// `over` laid on `self` field by field: a field `over` leaves unset keeps `self`'s.
    pub fn overlay(&self, over: &SecurityOptions) -> SecurityOptions {
        SecurityOptions {
            seccomp: over.seccomp.or(self.seccomp),
            custom_profile_path: over
                .custom_profile_path
                .clone()
                .or_else(|| self.custom_profile_path.clone()),
            runtime: over.runtime.clone().or_else(|| self.runtime.clone()),
        }
    }
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
    /// CPU limit as a fraction of cores, at least 0.01 (a smaller value would round to
    /// 0 nano-CPUs, which Docker reads as "no limit").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<f64>,
    /// Maximum number of processes, at least 1 (0 and -1 mean "unlimited" to Docker).
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

impl EngineOptions {
    /// `over` laid on `self`: how per-request options (a server client's `options`, the
    /// library's `execute_with`) are applied to an engine's. The one place options are
    /// combined; every field is merged on its own, so leaving a field out — or sending an
    /// empty object such as `security: {}` — never removes what `self` set:
    ///
    /// * values `over` sets win (`timeoutMs`, `memoryLimit`, `network`, …); whether a
    ///   client may change them is the server policy's decision, taken on the result;
    /// * `security` is merged field by field (an unset `runtime` keeps `self`'s);
    /// * `networkFilter` can only narrow: blacklists are joined and both whitelists
    ///   must admit a host ([`NetworkFilter::narrowed_by`]);
    /// * `secrets` are joined (`over`'s value wins for the same name);
    /// * `poolStrategy` and `poolSize` stay `self`'s: pools belong to the engine.
    pub fn overlay(&self, over: &EngineOptions) -> EngineOptions {
        let mut secrets = self.secrets.clone();
        secrets.extend(over.secrets.clone());
        let network_filter = match (&self.network_filter, &over.network_filter) {
            (Some(base), Some(over)) => Some(base.narrowed_by(over)),
            (base, over) => base.clone().or_else(|| over.clone()),
        };
        let security = match (&self.security, &over.security) {
            (Some(base), Some(over)) => Some(base.overlay(over)),
            (base, over) => base.clone().or_else(|| over.clone()),
        };
        EngineOptions {
            mode: over.mode.or(self.mode),
            network: over.network.or(self.network),
            network_filter,
            timeout_ms: over.timeout_ms.or(self.timeout_ms),
            memory_limit: over
                .memory_limit
                .clone()
                .or_else(|| self.memory_limit.clone()),
            cpu_limit: over.cpu_limit.or(self.cpu_limit),
            pids_limit: over.pids_limit.or(self.pids_limit),
            readonly_root_fs: over.readonly_root_fs.or(self.readonly_root_fs),
            sandbox_size: over
                .sandbox_size
                .clone()
                .or_else(|| self.sandbox_size.clone()),
            tmp_size: over.tmp_size.clone().or_else(|| self.tmp_size.clone()),
            max_output_size: over.max_output_size.or(self.max_output_size),
            secrets,
            image: over.image.clone().or_else(|| self.image.clone()),
            log_network: over.log_network.or(self.log_network),
            pool_strategy: self.pool_strategy,
            pool_size: self.pool_size,
            security,
            persist: over.persist.or(self.persist),
        }
    }

    /// Only the options that apply per execution — `timeoutMs`, `maxOutputSize`,
    /// `secrets`, `networkFilter`, `logNetwork` — and none that shape a container
    /// (`network`, `memoryLimit`, `cpuLimit`, `pidsLimit`, `readonlyRootFs`,
    /// `sandboxSize`, `tmpSize`, `image`, `security`, `persist`), nor `mode` or the
    /// pool's. What a later request in an existing persistent session can change: the
    /// server lays these over the session's own, as the reference server keeps a
    /// session's container whatever a later request asks.
    pub fn per_execution(&self) -> EngineOptions {
        EngineOptions {
            timeout_ms: self.timeout_ms,
            max_output_size: self.max_output_size,
            secrets: self.secrets.clone(),
            network_filter: self.network_filter.clone(),
            log_network: self.log_network,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words the CLI accepts (`--net`, `--seccomp`…) are the JSON ones.
    #[cfg(feature = "clap")]
    #[test]
    fn command_line_words_are_the_json_words() {
        use clap::ValueEnum;
        fn check<T: ValueEnum + Serialize>() {
            for v in T::value_variants() {
                let word = v
                    .to_possible_value()
                    .expect("a word")
                    .get_name()
                    .to_string();
                assert_eq!(serde_json::to_value(v).expect("json"), word);
            }
        }
        check::<Mode>();
        check::<NetworkMode>();
        check::<PoolStrategy>();
        check::<SeccompMode>();
    }

    fn filter(white: &[&str], black: &[&str]) -> NetworkFilter {
        NetworkFilter {
            whitelist: white.iter().map(|s| s.to_string()).collect(),
            blacklist: black.iter().map(|s| s.to_string()).collect(),
            narrowing_whitelists: Vec::new(),
        }
    }

    fn operator() -> EngineOptions {
        EngineOptions {
            network_filter: Some(filter(&["^pypi\\.org$"], &["^evil\\.example$"])),
            security: Some(SecurityOptions {
                seccomp: Some(SeccompMode::Strict),
                custom_profile_path: None,
                runtime: Some("runsc".into()),
            }),
            memory_limit: Some("256m".into()),
            secrets: BTreeMap::from([("A".into(), "1".into())]),
            pool_strategy: Some(PoolStrategy::Secure),
            ..Default::default()
        }
    }

    #[test]
    fn per_execution_keeps_only_what_applies_to_one_execution() {
        let all = EngineOptions {
            mode: Some(Mode::Persistent),
            network: Some(NetworkMode::Filtered),
            network_filter: Some(filter(&["^a$"], &["^b$"])),
            timeout_ms: Some(5),
            memory_limit: Some("1g".into()),
            cpu_limit: Some(2.0),
            pids_limit: Some(9),
            readonly_root_fs: Some(false),
            sandbox_size: Some("1m".into()),
            tmp_size: Some("1m".into()),
            max_output_size: Some(7),
            secrets: BTreeMap::from([("S".into(), "v".into())]),
            image: Some("x:y".into()),
            log_network: Some(true),
            pool_strategy: Some(PoolStrategy::Secure),
            pool_size: Some(PoolSize::Total(3)),
            security: Some(SecurityOptions {
                seccomp: Some(SeccompMode::Unconfined),
                ..Default::default()
            }),
            persist: Some(true),
        };
        assert_eq!(
            all.per_execution(),
            EngineOptions {
                network_filter: Some(filter(&["^a$"], &["^b$"])),
                timeout_ms: Some(5),
                max_output_size: Some(7),
                secrets: BTreeMap::from([("S".into(), "v".into())]),
                log_network: Some(true),
                ..Default::default()
            }
        );
    }

    #[test]
    fn empty_objects_in_the_overlay_remove_nothing() {
        let base = operator();
        let over: EngineOptions =
            serde_json::from_str(r#"{"security": {}, "networkFilter": {}}"#).expect("json");
        let merged = base.overlay(&over);
        assert_eq!(
            merged.security, base.security,
            "security: {{}} dropped fields"
        );
        assert_eq!(
            merged.network_filter, base.network_filter,
            "networkFilter: {{}}"
        );
        assert_eq!(base.overlay(&EngineOptions::default()), base);
        // Unset on the base side: the overlay's own values apply.
        let alone = EngineOptions::default().overlay(&over);
        assert_eq!(alone.security, Some(SecurityOptions::default()));
    }

    #[test]
    fn security_is_merged_field_by_field() {
        let over = EngineOptions {
            security: Some(SecurityOptions {
                seccomp: Some(SeccompMode::Unconfined),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sec = operator().overlay(&over).security.expect("security");
        assert_eq!(sec.runtime.as_deref(), Some("runsc"), "runtime kept");
        assert_eq!(
            sec.seccomp,
            Some(SeccompMode::Unconfined),
            "the change is visible to the policy"
        );
    }

    #[test]
    fn a_client_filter_adds_blacklist_entries_and_narrows_the_whitelist() {
        let over = EngineOptions {
            network_filter: Some(filter(&["^files\\.pythonhosted\\.org$"], &["^pypi\\.org$"])),
            ..Default::default()
        };
        let f = operator().overlay(&over).network_filter.expect("filter");
        assert_eq!(f.blacklist, ["^evil\\.example$", "^pypi\\.org$"]);
        assert_eq!(
            f.whitelist,
            ["^pypi\\.org$"],
            "the operator's whitelist stays first"
        );
        assert_eq!(
            f.narrowing_whitelists,
            [vec!["^files\\.pythonhosted\\.org$".to_string()]]
        );
        let all: Vec<_> = f.whitelists().collect();
        assert_eq!(all.len(), 2, "both must admit a host");
        // Without an operator whitelist the client's is the only one.
        let open = NetworkFilter::default().narrowed_by(&filter(&["^a$"], &[]));
        assert_eq!(
            (open.whitelist, open.narrowing_whitelists),
            (vec!["^a$".to_string()], vec![])
        );
        // A narrowed filter sent on again keeps every layer (the remote CLI does this).
        let json = serde_json::to_string(&f).expect("serialize");
        let back: NetworkFilter = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, f);
        assert_eq!(NetworkFilter::default().narrowed_by(&back), f);
    }

    #[test]
    fn scalars_of_the_overlay_win_and_pools_stay_the_engines() {
        let over = EngineOptions {
            memory_limit: Some("1g".into()),
            secrets: BTreeMap::from([("A".into(), "2".into()), ("B".into(), "3".into())]),
            pool_strategy: Some(PoolStrategy::Fast),
            ..Default::default()
        };
        let m = operator().overlay(&over);
        assert_eq!(m.memory_limit.as_deref(), Some("1g"));
        assert_eq!(m.pool_strategy, Some(PoolStrategy::Secure));
        assert_eq!(m.secrets.len(), 2);
        assert_eq!(m.secrets["A"], "2");
    }

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
