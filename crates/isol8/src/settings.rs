//! Engine options resolved into validated sandbox settings.
//!
//! [`SandboxSettings::resolve`] fills defaults (SPEC section 3) and rejects bad values with
//! a message naming the field and the accepted form.

use std::collections::BTreeMap;

use isol8_protocol::options::{Mode, SecurityOptions};
use isol8_protocol::{
    EngineOptions, NetworkFilter, NetworkMode, PoolSize, PoolStrategy, SeccompMode,
};

use crate::runtime::RuntimeDefaults;
use crate::{Error, Result};

/// Default timeout of an execution.
pub const DEFAULT_TIMEOUT_MS: u64 = crate::config::Defaults::TIMEOUT_MS;
/// Default cap on stdout and on stderr.
pub const DEFAULT_MAX_OUTPUT: u64 = crate::config::Defaults::MAX_OUTPUT_SIZE;
/// Largest timeout accepted (24 h).
pub const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// Default memory limit.
pub const DEFAULT_MEMORY: &str = crate::config::Defaults::MEMORY_LIMIT;
/// Smallest memory limit accepted, in bytes (Docker's minimum, 6 MiB).
pub const MIN_MEMORY_BYTES: u64 = 6 << 20;
/// Default CPU limit, in cores.
pub const DEFAULT_CPU: f64 = crate::config::Defaults::CPU_LIMIT;
/// Smallest CPU limit accepted, in cores (Docker's minimum). A smaller positive value
/// would round to 0 nano-CPUs, which Docker reads as "no limit".
pub const MIN_CPU: f64 = 0.01;
/// Largest CPU limit accepted, in cores.
pub const MAX_CPU: f64 = 1024.0;
/// Default process limit.
pub const DEFAULT_PIDS: i64 = crate::config::Defaults::PIDS_LIMIT;
/// Smallest process limit accepted (0 and -1 would mean "unlimited" to Docker).
pub const MIN_PIDS: i64 = 1;
/// Default size of `/sandbox`.
pub const DEFAULT_SANDBOX_SIZE: &str = crate::config::Defaults::SANDBOX_SIZE;
/// Default size of `/tmp`.
pub const DEFAULT_TMP_SIZE: &str = crate::config::Defaults::TMP_SIZE;

/// Fully resolved settings of a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSettings {
    /// Ephemeral or persistent.
    pub mode: Mode,
    /// Network mode.
    pub network: NetworkMode,
    /// The network mode was chosen explicitly (an install never overrides it then).
    pub network_explicit: bool,
    /// Host rules for `filtered`.
    pub network_filter: NetworkFilter,
    /// Default timeout.
    pub timeout_ms: u64,
    /// Memory limit in bytes (swap may not exceed it: memory+swap = memory).
    pub memory_bytes: i64,
    /// CPU limit in billionths of a core (at least [`MIN_CPU`] cores: never 0, which
    /// Docker reads as "no limit").
    pub nano_cpus: i64,
    /// Process limit (at least [`MIN_PIDS`]: never 0 or -1, "unlimited" to Docker).
    pub pids_limit: i64,
    /// The process limit was set in the options (a runtime's default never replaces it).
    pub pids_explicit: bool,
    /// Read-only root filesystem.
    pub readonly_root_fs: bool,
    /// Size of `/sandbox` in bytes.
    pub sandbox_bytes: u64,
    /// The size of `/sandbox` was set in the options (a runtime's default never replaces
    /// it).
    pub sandbox_size_explicit: bool,
    /// Size of `/tmp` in bytes.
    pub tmp_bytes: u64,
    /// Cap on each output stream.
    pub max_output: u64,
    /// Secrets: name → value (masked in output).
    pub secrets: BTreeMap<String, String>,
    /// Image override.
    pub image: Option<String>,
    /// Fill `networkLogs`.
    pub log_network: bool,
    /// Pool strategy.
    pub pool_strategy: PoolStrategy,
    /// Pool size.
    pub pool_size: PoolSize,
    /// Seccomp mode.
    pub seccomp: SeccompMode,
    /// Profile path for `custom`.
    pub custom_profile_path: Option<String>,
    /// OCI runtime (`runsc` for gVisor); the daemon's default when `None`.
    pub oci_runtime: Option<String>,
    /// Keep the container after the run.
    pub persist: bool,
    /// Host path of the operator's CA bundle, mounted read-only and trusted inside the
    /// sandbox (config `caBundle`; never from a request).
    pub ca_bundle: Option<String>,
}

/// Compiles a host-rule regex; a bad one is a one-line error naming `field`.
pub fn compile_regex(field: &str, pattern: &str) -> Result<regex::Regex> {
    regex::Regex::new(pattern).map_err(|e| {
        // The regex crate's message spans lines (pattern, caret, reason): keep the reason.
        let text = e.to_string();
        let reason = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid")
            .trim()
            .trim_start_matches("error: ");
        Error::option(field, format!("`{pattern}` is not a valid regex: {reason}"))
    })
}

/// Parses a size such as `512m`, `1g`, `64k` or `1048576` (bytes). Suffixes are
/// case-insensitive and may be followed by `b` (`512mb`).
pub fn parse_size(field: &str, value: &str) -> Result<u64> {
    let bad = || {
        Error::option(
            field,
            format!("`{value}` is not a size; use a number with an optional k, m or g suffix, e.g. 512m"),
        )
    };
    let v = value.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (digits, mult) = match v.chars().last() {
        Some('k') => (&v[..v.len() - 1], 1u64 << 10),
        Some('m') => (&v[..v.len() - 1], 1 << 20),
        Some('g') => (&v[..v.len() - 1], 1 << 30),
        Some(c) if c.is_ascii_digit() => (v, 1),
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(Error::option(
            field,
            format!("`{value}` must be greater than zero"),
        ));
    }
    Ok(bytes)
}

impl SandboxSettings {
    /// Resolves `opts` (missing values take SPEC defaults) and validates every value.
    ///
    /// No value may mean "unlimited" to Docker or the kernel: the CPU limit is at least
    /// [`MIN_CPU`] cores, memory at least [`MIN_MEMORY_BYTES`], the process limit at
    /// least [`MIN_PIDS`], and sizes, the timeout and the output cap at least 1; NaN,
    /// infinities and negative values are refused. Errors name the field.
    pub fn resolve(opts: &EngineOptions) -> Result<SandboxSettings> {
        let memory = parse_size(
            "memoryLimit",
            opts.memory_limit.as_deref().unwrap_or(DEFAULT_MEMORY),
        )?;
        if memory < MIN_MEMORY_BYTES {
            return Err(Error::option(
                "memoryLimit",
                "must be at least 6m (Docker's minimum)",
            ));
        }
        let nano_cpus = nano_cpus("cpuLimit", opts.cpu_limit.unwrap_or(DEFAULT_CPU))?;
        let pids = opts.pids_limit.unwrap_or(DEFAULT_PIDS);
        if pids < MIN_PIDS {
            return Err(Error::option(
                "pidsLimit",
                format!("`{pids}` must be a positive number of processes (0 and -1 would mean unlimited)"),
            ));
        }
        let timeout_ms = opts.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        check_timeout("timeoutMs", timeout_ms)?;
        let max_output = opts.max_output_size.unwrap_or(DEFAULT_MAX_OUTPUT);
        if max_output == 0 {
            return Err(Error::option(
                "maxOutputSize",
                "must be a positive number of bytes",
            ));
        }
        let sandbox_bytes = parse_size(
            "sandboxSize",
            opts.sandbox_size.as_deref().unwrap_or(DEFAULT_SANDBOX_SIZE),
        )?;
        let tmp_bytes = parse_size(
            "tmpSize",
            opts.tmp_size.as_deref().unwrap_or(DEFAULT_TMP_SIZE),
        )?;
        for (name, value) in &opts.secrets {
            check_env_name("secrets", name)?;
            // An empty pattern would match everywhere (or, ignored, mask nothing while the
            // caller believes something is masked): refuse it.
            if value.is_empty() {
                return Err(Error::option(
                    "secrets",
                    format!("`{name}` has an empty value; give it a value or leave it out"),
                ));
            }
        }
        let filter = opts.network_filter.clone().unwrap_or_default();
        for pattern in filter.whitelists().flatten().chain(&filter.blacklist) {
            compile_regex("networkFilter", pattern)?;
        }
        let SecurityOptions {
            seccomp,
            custom_profile_path,
            runtime: oci_runtime,
        } = opts.security.clone().unwrap_or_default();
        if let Some(r) = &oci_runtime {
            if r.is_empty()
                || !r
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(Error::option(
                    "security.runtime",
                    format!("`{r}` is not an OCI runtime name such as runsc"),
                ));
            }
        }
        let seccomp = seccomp.unwrap_or_default();
        if seccomp == SeccompMode::Custom && custom_profile_path.is_none() {
            return Err(Error::option(
                "security.customProfilePath",
                "is required when security.seccomp is `custom`",
            ));
        }
        if let Some(image) = &opts.image {
            if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
                return Err(Error::option(
                    "image",
                    format!("`{image}` is not an image reference"),
                ));
            }
        }
        Ok(SandboxSettings {
            mode: opts.mode.unwrap_or_default(),
            network: opts.network.unwrap_or_default(),
            network_explicit: opts.network.is_some(),
            network_filter: filter,
            timeout_ms,
            memory_bytes: i64::try_from(memory)
                .map_err(|_| Error::option("memoryLimit", "is too large"))?,
            nano_cpus,
            pids_limit: pids,
            pids_explicit: opts.pids_limit.is_some(),
            readonly_root_fs: opts.readonly_root_fs.unwrap_or(true),
            sandbox_bytes,
            sandbox_size_explicit: opts.sandbox_size.is_some(),
            tmp_bytes,
            max_output,
            secrets: opts.secrets.clone(),
            image: opts.image.clone(),
            log_network: opts.log_network.unwrap_or(false),
            pool_strategy: opts.pool_strategy.unwrap_or_default(),
            pool_size: opts.pool_size.unwrap_or_default(),
            seccomp,
            custom_profile_path,
            oci_runtime,
            persist: opts.persist.unwrap_or(false),
            ca_bundle: None,
        })
    }
}

impl SandboxSettings {
    /// These settings for a run of a runtime with `defaults` (the agent's 200 processes and
    /// 2 GiB `/sandbox`): each default replaces the general one where the options left
    /// the value unset. `None` when nothing changes. A persistent session is bound to the
    /// runtime of its first execution and its container made then, so every execution of
    /// an agent session gets the same answer here. An invalid default (a registered
    /// runtime's) is an error naming the field.
    pub fn for_runtime(&self, defaults: &RuntimeDefaults) -> Result<Option<SandboxSettings>> {
        let mut out = self.clone();
        if let Some(pids) = defaults.pids_limit.filter(|_| !self.pids_explicit) {
            if pids < MIN_PIDS {
                return Err(Error::option(
                    "pidsLimit",
                    format!(
                        "the runtime's default `{pids}` must be a positive number of processes"
                    ),
                ));
            }
            out.pids_limit = pids;
        }
        if let Some(size) = defaults.sandbox_size.as_deref() {
            if !self.sandbox_size_explicit {
                out.sandbox_bytes = parse_size("sandboxSize", size)?;
            }
        }
        Ok((out != *self).then_some(out))
    }

    /// The first setting that belongs to a sandbox's container (its `HostConfig` or its
    /// image, fixed once the container exists) and differs between `self` and `other`,
    /// as the option that sets it (`memoryLimit`, `network`, `security.seccomp`…); `None`
    /// when they would run in the same kind of container. The other settings —
    /// `timeoutMs`, `maxOutputSize`, `secrets`, `networkFilter`, `logNetwork` — are
    /// applied per execution, so a persistent session's later executions may change
    /// them; the pool's settings are the engine's own.
    pub fn container_difference(&self, other: &SandboxSettings) -> Option<&'static str> {
        let fields: [(&'static str, bool); 12] = [
            ("network", self.network == other.network),
            ("memoryLimit", self.memory_bytes == other.memory_bytes),
            ("cpuLimit", self.nano_cpus == other.nano_cpus),
            ("pidsLimit", self.pids_limit == other.pids_limit),
            (
                "readonlyRootFs",
                self.readonly_root_fs == other.readonly_root_fs,
            ),
            ("sandboxSize", self.sandbox_bytes == other.sandbox_bytes),
            ("tmpSize", self.tmp_bytes == other.tmp_bytes),
            ("image", self.image == other.image),
            ("security.seccomp", self.seccomp == other.seccomp),
            (
                "security.customProfilePath",
                self.custom_profile_path == other.custom_profile_path,
            ),
            ("security.runtime", self.oci_runtime == other.oci_runtime),
            ("persist", self.persist == other.persist),
        ];
        fields
            .into_iter()
            .find(|(_, same)| !same)
            .map(|(name, _)| name)
    }

    /// Refuses `other` — the settings of a persistent session's later execution — when
    /// it would change the session's container (`self`): [`Error::InvalidRequest`]
    /// naming the option ([`SandboxSettings::container_difference`]).
    pub fn same_container(&self, other: &SandboxSettings) -> Result<()> {
        match self.container_difference(other) {
            None => Ok(()),
            Some(name) => Err(Error::InvalidRequest(format!(
                "options.{name} cannot change in an existing persistent session: its container was created with the session's first execution; send the same value (or none), or use a new session"
            ))),
        }
    }
}

/// A CPU limit in cores as Docker's nano-CPUs: refuses NaN, infinities, values below
/// [`MIN_CPU`] (which could round to 0, "no limit" to Docker) and above [`MAX_CPU`].
pub fn nano_cpus(field: &str, cores: f64) -> Result<i64> {
    if !cores.is_finite() || !(MIN_CPU..=MAX_CPU).contains(&cores) {
        return Err(Error::option(
            field,
            format!(
                "`{cores}` is not a number of cores between {MIN_CPU} and {MAX_CPU}, such as 0.5 or 2"
            ),
        ));
    }
    // At least 10,000,000 for MIN_CPU: never 0.
    Ok((cores * 1e9).round() as i64)
}

/// Checks a timeout value.
pub fn check_timeout(field: &str, ms: u64) -> Result<()> {
    if ms == 0 || ms > MAX_TIMEOUT_MS {
        return Err(Error::option(
            field,
            format!("`{ms}` must be between 1 and {MAX_TIMEOUT_MS} milliseconds"),
        ));
    }
    Ok(())
}

/// Checks an environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn check_env_name(field: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(Error::option(
            field,
            format!("`{name}` is not a valid environment variable name"),
        ));
    }
    Ok(())
}

/// Options at every documented minimum (for tests of what the minimum gives).
#[cfg(test)]
pub(crate) fn minimum_options() -> EngineOptions {
    EngineOptions {
        cpu_limit: Some(MIN_CPU),
        pids_limit: Some(MIN_PIDS),
        memory_limit: Some("6m".into()),
        sandbox_size: Some("1".into()),
        tmp_size: Some("1".into()),
        max_output_size: Some(1),
        timeout_ms: Some(1),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_files_defaults_resolve() {
        let c = crate::config::Config::from_json_str(
            r#"{"maxConcurrent": 4, "defaults": {"memoryLimit": "256m", "network": "none"},
                "network": {"whitelist": ["^pypi\\.org$"]}, "poolStrategy": "secure",
                "security": {"seccomp": "strict"}}"#,
        )
        .expect("valid");
        let s = SandboxSettings::resolve(&c.engine_options()).expect("resolves");
        assert_eq!(s.memory_bytes, 256 << 20);
        assert_eq!(s.network_filter.whitelist, ["^pypi\\.org$"]);
    }

    #[test]
    fn the_resolved_configuration_gives_the_settings_the_file_gives() {
        // What `isol8 config` shows as defaults is what the engine applies.
        for json in [
            "{}",
            r#"{"defaults": {"timeoutMs": 5000, "memoryLimit": "1g", "network": "filtered"}}"#,
            r#"{"poolSize": 3, "security": {"seccomp": "unconfined"}}"#,
        ] {
            let c = crate::config::Config::from_json_str(json).expect("valid");
            assert_eq!(
                SandboxSettings::resolve(&c.resolved().engine_options()).expect("resolved"),
                SandboxSettings::resolve(&c.engine_options()).expect("as written"),
                "{json}"
            );
        }
    }

    #[test]
    fn container_settings_are_told_from_per_execution_ones() {
        let base = SandboxSettings::resolve(&EngineOptions {
            memory_limit: Some("1g".into()),
            ..Default::default()
        })
        .expect("valid");
        // Per-execution options, and the same size written another way: same container.
        let same = SandboxSettings::resolve(&EngineOptions {
            memory_limit: Some("1024m".into()),
            timeout_ms: Some(5),
            max_output_size: Some(10),
            secrets: BTreeMap::from([("T".to_string(), "v".to_string())]),
            log_network: Some(true),
            network_filter: Some(isol8_protocol::NetworkFilter {
                blacklist: vec!["x".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(base.container_difference(&same), None);
        for (opts, name) in [
            (
                EngineOptions {
                    memory_limit: Some("512m".into()),
                    ..Default::default()
                },
                "memoryLimit",
            ),
            (
                EngineOptions {
                    memory_limit: Some("1g".into()),
                    network: Some(NetworkMode::Filtered),
                    ..Default::default()
                },
                "network",
            ),
            (
                EngineOptions {
                    memory_limit: Some("1g".into()),
                    tmp_size: Some("1m".into()),
                    ..Default::default()
                },
                "tmpSize",
            ),
            (
                EngineOptions {
                    memory_limit: Some("1g".into()),
                    image: Some("other:tag".into()),
                    ..Default::default()
                },
                "image",
            ),
        ] {
            let other = SandboxSettings::resolve(&opts).expect("valid");
            assert_eq!(base.container_difference(&other), Some(name));
        }
    }

    #[test]
    fn per_execution_options_never_change_a_container() {
        // Every container option set to something else than the session's: dropped by
        // `per_execution`, so the session's container stays what it is.
        let session = EngineOptions {
            mode: Some(Mode::Persistent),
            memory_limit: Some("256m".into()),
            ..Default::default()
        };
        let base = SandboxSettings::resolve(&session).expect("valid");
        let later = EngineOptions {
            network: Some(NetworkMode::Filtered),
            memory_limit: Some("1g".into()),
            cpu_limit: Some(2.0),
            pids_limit: Some(9),
            readonly_root_fs: Some(false),
            sandbox_size: Some("1m".into()),
            tmp_size: Some("1m".into()),
            image: Some("x:y".into()),
            security: Some(SecurityOptions {
                seccomp: Some(SeccompMode::Unconfined),
                custom_profile_path: Some("/p".into()),
                runtime: Some("runsc".into()),
            }),
            persist: Some(true),
            timeout_ms: Some(5),
            secrets: BTreeMap::from([("T".to_string(), "v".to_string())]),
            ..Default::default()
        };
        let whole = SandboxSettings::resolve(&session.overlay(&later)).expect("valid");
        assert!(base.container_difference(&whole).is_some());
        let applied =
            SandboxSettings::resolve(&session.overlay(&later.per_execution())).expect("valid");
        assert_eq!(base.container_difference(&applied), None);
        assert_eq!((applied.timeout_ms, applied.secrets.len()), (5, 1));
    }

    #[test]
    fn empty_secret_values_are_refused_by_name() {
        let opts = EngineOptions {
            secrets: BTreeMap::from([("TOKEN".to_string(), String::new())]),
            ..Default::default()
        };
        let e = SandboxSettings::resolve(&opts).expect_err("empty secret");
        assert!(e.to_string().contains("`TOKEN` has an empty value"), "{e}");
        let opts = EngineOptions {
            secrets: BTreeMap::from([("TOKEN".to_string(), "x".to_string())]),
            ..Default::default()
        };
        assert!(
            SandboxSettings::resolve(&opts).is_ok(),
            "a one-byte secret is allowed"
        );
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("m", "512m").expect("ok"), 512 << 20);
        assert_eq!(parse_size("m", "1G").expect("ok"), 1 << 30);
        assert_eq!(parse_size("m", "64kb").expect("ok"), 64 << 10);
        assert_eq!(parse_size("m", "4096").expect("ok"), 4096);
        for bad in ["12q", "", "m", "-5m", "1.5g", "0", "99999999999999999999g"] {
            let err = parse_size("memoryLimit", bad).expect_err(bad).to_string();
            assert!(err.contains("memoryLimit"), "{err}");
        }
    }

    /// Default options with one change.
    fn with(change: impl FnOnce(&mut EngineOptions)) -> EngineOptions {
        let mut o = EngineOptions::default();
        change(&mut o);
        o
    }

    /// Every case must be refused by [`SandboxSettings::resolve`] with its field named.
    fn refused_naming_their_field(cases: Vec<(EngineOptions, &str)>) {
        for (opts, field) in cases {
            let err = SandboxSettings::resolve(&opts)
                .expect_err(field)
                .to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn no_value_can_mean_unlimited_to_docker() {
        // Each of these would reach Docker as 0 (or -1), which it reads as "no limit",
        // or is no number at all.
        refused_naming_their_field(vec![
            (with(|o| o.cpu_limit = Some(4e-10)), "cpuLimit"),
            (with(|o| o.cpu_limit = Some(0.009)), "cpuLimit"),
            (with(|o| o.cpu_limit = Some(f64::MIN_POSITIVE)), "cpuLimit"),
            (with(|o| o.cpu_limit = Some(0.0)), "cpuLimit"),
            (with(|o| o.cpu_limit = Some(-0.0)), "cpuLimit"),
            (with(|o| o.cpu_limit = Some(f64::INFINITY)), "cpuLimit"),
            (with(|o| o.cpu_limit = Some(f64::NAN)), "cpuLimit"),
            (with(|o| o.cpu_limit = Some(1e12)), "cpuLimit"),
            (with(|o| o.pids_limit = Some(0)), "pidsLimit"),
            (with(|o| o.pids_limit = Some(-1)), "pidsLimit"),
            (with(|o| o.memory_limit = Some("0".into())), "memoryLimit"),
            (with(|o| o.memory_limit = Some("0g".into())), "memoryLimit"),
            (with(|o| o.memory_limit = Some("5m".into())), "memoryLimit"),
            (with(|o| o.sandbox_size = Some("0k".into())), "sandboxSize"),
            (with(|o| o.tmp_size = Some("0".into())), "tmpSize"),
            (with(|o| o.timeout_ms = Some(0)), "timeoutMs"),
            (with(|o| o.max_output_size = Some(0)), "maxOutputSize"),
        ]);
        // The documented minimum is accepted and never rounds to 0.
        let s = SandboxSettings::resolve(&minimum_options()).expect("the minimum is valid");
        assert_eq!(s.nano_cpus, 10_000_000);
        assert_eq!(s.pids_limit, 1);
        assert_eq!(s.memory_bytes, 6 << 20);
        assert!(s.sandbox_bytes > 0 && s.tmp_bytes > 0 && s.max_output > 0 && s.timeout_ms > 0);
        // That the container's `HostConfig` carries them as resolved is checked with the
        // mapping (`docker::host_config`).
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = SandboxSettings::resolve(&EngineOptions::default()).expect("defaults are valid");
        assert_eq!(s.memory_bytes, 512 << 20);
        assert_eq!(s.nano_cpus, 1_000_000_000);
        assert_eq!(s.pids_limit, 64);
        assert_eq!(s.timeout_ms, 30_000);
        assert_eq!(s.max_output, 1 << 20);
        assert_eq!(s.sandbox_bytes, 512 << 20);
        assert_eq!(s.tmp_bytes, 256 << 20);
        assert!(s.readonly_root_fs);
        assert_eq!(s.network, NetworkMode::None);
        assert_eq!(s.seccomp, SeccompMode::Strict);
    }

    #[test]
    fn bad_values_name_their_field() {
        let bad_regex = NetworkFilter {
            whitelist: vec!["(".into()],
            ..Default::default()
        };
        refused_naming_their_field(vec![
            (with(|o| o.memory_limit = Some("12q".into())), "memoryLimit"),
            (with(|o| o.cpu_limit = Some(-1.0)), "cpuLimit"),
            (with(|o| o.pids_limit = Some(-3)), "pidsLimit"),
            (with(|o| o.tmp_size = Some("big".into())), "tmpSize"),
            (
                with(|o| o.network_filter = Some(bad_regex)),
                "networkFilter",
            ),
        ]);
    }

    #[test]
    fn a_runtimes_defaults_apply_where_the_options_leave_the_value_unset() {
        let agent = crate::RuntimeRegistry::builtin()
            .get("agent")
            .expect("agent")
            .defaults
            .clone();
        let unset = SandboxSettings::resolve(&EngineOptions::default()).expect("defaults");
        let s = unset.for_runtime(&agent).expect("valid").expect("changed");
        assert_eq!((s.pids_limit, s.sandbox_bytes), (200, 2 << 30));
        // Everything else stays.
        assert_eq!(
            SandboxSettings {
                pids_limit: unset.pids_limit,
                sandbox_bytes: unset.sandbox_bytes,
                ..s.clone()
            },
            unset
        );
        // A value the options set (the engine's or the request's) wins, even a smaller one.
        let set = SandboxSettings::resolve(&EngineOptions {
            pids_limit: Some(32),
            ..Default::default()
        })
        .expect("set");
        let s = set
            .for_runtime(&agent)
            .expect("valid")
            .expect("size changed");
        assert_eq!((s.pids_limit, s.sandbox_bytes), (32, 2 << 30));
        let both = SandboxSettings::resolve(&EngineOptions {
            pids_limit: Some(64),
            sandbox_size: Some("512m".into()),
            ..Default::default()
        })
        .expect("set");
        assert_eq!(both.for_runtime(&agent).expect("valid"), None);
        // Other runtimes have none; an agent session gets them as a single run does.
        assert_eq!(unset.for_runtime(&Default::default()).expect("valid"), None);
        let session = SandboxSettings::resolve(&EngineOptions {
            mode: Some(Mode::Persistent),
            ..Default::default()
        })
        .expect("persistent");
        let in_session = session
            .for_runtime(&agent)
            .expect("valid")
            .expect("changed");
        assert_eq!(
            (in_session.pids_limit, in_session.sandbox_bytes),
            (200, 2 << 30)
        );
    }
}
