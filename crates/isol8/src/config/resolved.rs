//! The configuration with every default filled in: what `isol8 config` shows.
//!
//! [`Config::resolved`] is a configuration that, written back to a file, behaves exactly
//! like the original: every key that has a default gets it (the same defaults the
//! engine, the code fetcher and the server apply), keys without one (`caBundle`,
//! `security.customProfilePath`…) stay unset. So does `defaults.network`: unset is not
//! the same as `none` (a request's `installPackages` then switch to `filtered`, which an
//! explicit `none` refuses). [`Config::resolved_json`] leaves unset keys
//! out instead of writing `null`, and [`Config::resolved_lines`] flattens it into
//! `key value` lines with sizes as written (`512m`).

use isol8_protocol::NetworkMode;

use super::{
    AuditConfig, AuditDestination, AuthConfig, CleanupConfig, Config, Defaults, MetricsConfig,
    RemoteCodeConfig, SecurityConfig, ServerPolicy,
};

impl Config {
    /// This configuration with every default filled in.
    pub fn resolved(&self) -> Config {
        let d = &self.defaults;
        let text = |v: &Option<String>, default: &str| Some(v.clone().unwrap_or(default.into()));
        let defaults = Defaults {
            timeout_ms: Some(d.timeout_ms.unwrap_or(Defaults::TIMEOUT_MS)),
            memory_limit: text(&d.memory_limit, Defaults::MEMORY_LIMIT),
            cpu_limit: Some(d.cpu_limit.unwrap_or(Defaults::CPU_LIMIT)),
            // Unset differs from an explicit `none` (see the module's comment).
            network: d.network,
            // Unset also differs from the general default here: a runtime with defaults of
            // its own (the agent's 200 processes, 2g) gets those where these are unset.
            sandbox_size: d.sandbox_size.clone(),
            tmp_size: text(&d.tmp_size, Defaults::TMP_SIZE),
            readonly_root_fs: Some(d.readonly_root_fs.unwrap_or(true)),
            pids_limit: d.pids_limit,
            max_output_size: Some(d.max_output_size.unwrap_or(Defaults::MAX_OUTPUT_SIZE)),
        };
        let r = &self.remote_code;
        let remote_code = RemoteCodeConfig {
            enabled: Some(r.enabled.unwrap_or(false)),
            allowed_schemes: Some(
                r.allowed_schemes
                    .clone()
                    .unwrap_or_else(|| vec!["https".into()]),
            ),
            allowed_hosts: Some(r.allowed_hosts.clone().unwrap_or_default()),
            blocked_hosts: Some(r.blocked_hosts.clone().unwrap_or_default()),
            max_code_size: Some(r.max_code_size.unwrap_or(RemoteCodeConfig::MAX_CODE_SIZE)),
            fetch_timeout_ms: Some(
                r.fetch_timeout_ms
                    .unwrap_or(RemoteCodeConfig::FETCH_TIMEOUT_MS),
            ),
            require_hash: Some(r.require_hash.unwrap_or(false)),
            enable_cache: Some(r.enable_cache.unwrap_or(RemoteCodeConfig::ENABLE_CACHE)),
            cache_ttl: Some(r.cache_ttl.unwrap_or(RemoteCodeConfig::CACHE_TTL_SECS)),
        };
        let a = &self.audit;
        let audit = AuditConfig {
            enabled: Some(a.enabled.unwrap_or(false)),
            destination: Some(a.destination.unwrap_or_default()),
            log_dir: a.log_dir.clone(),
            post_log_script: a.post_log_script.clone(),
            track_resources: Some(a.track_resources.unwrap_or(true)),
            retention_days: Some(a.retention_days.unwrap_or(AuditConfig::RETENTION_DAYS)),
            include_code: Some(a.include_code.unwrap_or(false)),
            include_output: Some(a.include_output.unwrap_or(false)),
        };
        // The connection string stays as written: unset means `~/.isol8/auth.db` once
        // keys are enabled.
        let mut auth = self.auth.clone();
        auth.enabled.get_or_insert(false);
        auth.default_ttl_ms
            .get_or_insert(AuthConfig::DEFAULT_TTL_MS);
        auth.cleanup_interval_ms
            .get_or_insert(AuthConfig::CLEANUP_INTERVAL_MS);
        let server_policy = self.server_policy.resolved(&defaults);
        Config {
            schema: None,
            debug: Some(self.debug.unwrap_or(false)),
            max_concurrent: Some(
                self.max_concurrent
                    .unwrap_or(Config::DEFAULT_MAX_CONCURRENT),
            ),
            shutdown_grace_ms: Some(
                self.shutdown_grace_ms
                    .unwrap_or(Config::DEFAULT_SHUTDOWN_GRACE_MS),
            ),
            defaults,
            network: self.network.clone(),
            cleanup: CleanupConfig {
                auto_prune: Some(self.cleanup.auto_prune.unwrap_or(true)),
                max_container_age_ms: Some(
                    self.cleanup
                        .max_container_age_ms
                        .unwrap_or(CleanupConfig::MAX_CONTAINER_AGE_MS),
                ),
            },
            pool_strategy: Some(self.pool_strategy.unwrap_or_default()),
            pool_size: Some(self.pool_size.unwrap_or_default()),
            security: SecurityConfig {
                seccomp: Some(self.security.seccomp.unwrap_or_default()),
                custom_profile_path: self.security.custom_profile_path.clone(),
                runtime: self.security.runtime.clone(),
            },
            remote_code,
            audit,
            auth,
            prebuilt_images: self.prebuilt_images.clone(),
            server_policy,
            metrics: MetricsConfig {
                public: Some(self.metrics.public.unwrap_or(false)),
            },
            ca_bundle: self.ca_bundle.clone(),
        }
    }

    /// [`Config::resolved`] as JSON, unset keys left out (no `null`s): what
    /// `isol8 config --json` prints. An unset `defaults.network` shows as `none`, the mode
    /// a run gets (as isol8 v0.20 prints it), although a request installing packages
    /// then gets `filtered` instead.
    pub fn resolved_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.resolved()).unwrap_or_default();
        strip_nulls(&mut v);
        if let Some(defaults) = v.get_mut("defaults").and_then(|d| d.as_object_mut()) {
            defaults
                .entry("network")
                .or_insert_with(|| serde_json::json!("none"));
            // Shown with the general defaults (the agent runtime's own apply while unset).
            defaults
                .entry("pidsLimit")
                .or_insert_with(|| serde_json::json!(Defaults::PIDS_LIMIT));
            defaults
                .entry("sandboxSize")
                .or_insert_with(|| serde_json::json!(Defaults::SANDBOX_SIZE));
        }
        v
    }

    /// [`Config::resolved_json`] as `(key, value)` lines: dotted keys
    /// (`defaults.memoryLimit`, `prebuiltImages[0].tag`), strings as written (`512m`),
    /// lists of plain values as compact JSON. What `isol8 config` prints.
    pub fn resolved_lines(&self) -> Vec<(String, String)> {
        let mut lines = Vec::new();
        flatten("", &self.resolved_json(), &mut lines);
        if self.defaults.network.is_none() {
            for (key, value) in lines.iter_mut() {
                if key == "defaults.network" {
                    *value = "none (unset: installPackages switch to filtered)".into();
                }
            }
        }
        for (key, unset, agent) in [
            (
                "defaults.pidsLimit",
                self.defaults.pids_limit.is_none(),
                "200",
            ),
            (
                "defaults.sandboxSize",
                self.defaults.sandbox_size.is_none(),
                "2g",
            ),
        ] {
            if let Some((_, value)) = lines.iter_mut().find(|(k, _)| k == key).filter(|_| unset) {
                *value = format!("{value} (unset: the agent runtime gets {agent})");
            }
        }
        lines
    }
}

impl ServerPolicy {
    /// Every cap filled in: a numeric cap defaults to the server's own value in
    /// `defaults` (itself resolved), the rest to the documented defaults.
    fn resolved(&self, defaults: &Defaults) -> ServerPolicy {
        let allow_host = self.allow_host_network.unwrap_or(false);
        let networks = self.allowed_networks.clone().unwrap_or_else(|| {
            let mut n = vec![NetworkMode::None, NetworkMode::Filtered];
            if allow_host {
                n.push(NetworkMode::Host);
            }
            n
        });
        ServerPolicy {
            max_timeout_ms: self.max_timeout_ms.or(defaults.timeout_ms),
            max_memory_limit: self
                .max_memory_limit
                .clone()
                .or(defaults.memory_limit.clone()),
            max_cpu_limit: self.max_cpu_limit.or(defaults.cpu_limit),
            max_pids_limit: self.max_pids_limit.or(defaults.pids_limit),
            max_output_size: self.max_output_size.or(defaults.max_output_size),
            max_sandbox_size: self
                .max_sandbox_size
                .clone()
                .or(defaults.sandbox_size.clone()),
            max_tmp_size: self.max_tmp_size.clone().or(defaults.tmp_size.clone()),
            allowed_networks: Some(networks),
            allow_host_network: Some(allow_host),
            allow_custom_image: Some(self.allow_custom_image.unwrap_or(false)),
            allowed_seccomp: Some(self.allowed_seccomp.clone().unwrap_or_default()),
            allow_writable_root_fs: Some(self.allow_writable_root_fs.unwrap_or(false)),
            allow_persist: Some(self.allow_persist.unwrap_or(false)),
            max_sessions: Some(
                self.max_sessions
                    .unwrap_or(ServerPolicy::DEFAULT_MAX_SESSIONS),
            ),
            max_sessions_per_tenant: Some(
                self.max_sessions_per_tenant
                    .unwrap_or(ServerPolicy::DEFAULT_MAX_SESSIONS_PER_TENANT),
            ),
            max_secrets: Some(
                self.max_secrets
                    .unwrap_or(ServerPolicy::DEFAULT_MAX_SECRETS),
            ),
            max_secret_bytes: Some(
                self.max_secret_bytes
                    .unwrap_or(ServerPolicy::DEFAULT_MAX_SECRET_BYTES),
            ),
        }
    }
}

impl AuditDestination {
    /// The name the file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDestination::Filesystem => "filesystem",
            AuditDestination::Stdout => "stdout",
        }
    }
}

fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn flatten(key: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let key = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(a) if a.iter().any(|e| e.is_object() || e.is_array()) => {
            for (i, e) in a.iter().enumerate() {
                flatten(&format!("{key}[{i}]"), e, out);
            }
        }
        Value::String(s) => out.push((key.to_string(), s.clone())),
        other => out.push((key.to_string(), other.to_string())),
    }
}
