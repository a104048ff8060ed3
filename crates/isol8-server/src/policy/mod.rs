//! The server policy (`serverPolicy` in the configuration): what clients may ask for.
//!
//! The policy is checked on what a request would actually run with: the client's
//! `options` laid over the server's ([`isol8::EngineOptions::overlay`], field by field)
//! and resolved ([`isol8::DockerEngine::settings_with`]), compared with the server's own
//! settings. So a client can only keep or narrow what the operator set:
//!
//! * every numeric limit has a cap, `serverPolicy.max*`, by default the server's own
//!   setting (its `defaults.*`, else the engine default); the cap applies to the value
//!   the run would get, so leaving a field out cannot exceed it either (`isol8 serve`
//!   lowers its own defaults to the caps at start, [`bound_defaults`]);
//! * the OCI runtime, a custom seccomp profile file, the container's persistence and a
//!   writable root filesystem (unless `serverPolicy.allowWritableRootFs`) are the
//!   operator's alone; the seccomp mode, network mode and image may only change
//!   to what the policy allows;
//! * network rules cannot be removed at all (the overlay only narrows them).
//!
//! A request over a cap is refused with 400 naming the field and the cap
//! ([`PolicyError`]); an invalid policy is refused at start ([`PolicyConfigError`]).
//!
//! Files: [`check`] (a client's request), [`bound_defaults`] (the server's own defaults
//! at start), the error types here.

mod check;
mod defaults;
#[cfg(test)]
mod tests;

pub use check::check;
pub use defaults::bound_defaults;

use isol8::config::ServerPolicy;
use isol8::settings::{nano_cpus, parse_size, MIN_PIDS};

/// Why a client's request is refused by the policy (answered 400 with this text).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// More secrets than `serverPolicy.maxSecrets`.
    #[error("options.secrets has {count} entries; this server accepts at most {max} (serverPolicy.maxSecrets)")]
    TooManySecrets {
        /// Secrets in the request.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// Secrets larger in all than `serverPolicy.maxSecretBytes` (values are never quoted).
    #[error("options.secrets holds {bytes} bytes (names and values); this server accepts at most {max} (serverPolicy.maxSecretBytes)")]
    SecretsTooLarge {
        /// Bytes of names and values.
        bytes: usize,
        /// The cap.
        max: usize,
    },
    /// A timeout over the cap.
    #[error("{field} {value} exceeds the server's limit of {cap} ms (serverPolicy.maxTimeoutMs)")]
    Timeout {
        /// Where it came from (`request.timeoutMs`, `options.timeoutMs`, or the default).
        field: &'static str,
        /// The timeout, ms.
        value: u64,
        /// The cap, ms.
        cap: u64,
    },
    /// A size (`memoryLimit`, `sandboxSize`, `tmpSize`) over its cap.
    #[error("options.{field} {asked} exceeds the server's limit of {cap} (serverPolicy.{key})")]
    Size {
        /// The option's name.
        field: &'static str,
        /// The policy key of its cap (`maxMemoryLimit`…).
        key: &'static str,
        /// The size as the client wrote it (or the resolved one, formatted).
        asked: String,
        /// The cap as written.
        cap: String,
    },
    /// A CPU limit over the cap.
    #[error(
        "options.cpuLimit {asked} exceeds the server's limit of {cap} (serverPolicy.maxCpuLimit)"
    )]
    Cpu {
        /// Cores asked for.
        asked: f64,
        /// The cap, cores.
        cap: f64,
    },
    /// A process limit over the cap.
    #[error(
        "options.pidsLimit {asked} exceeds the server's limit of {cap} (serverPolicy.maxPidsLimit)"
    )]
    Pids {
        /// Processes asked for.
        asked: i64,
        /// The cap.
        cap: i64,
    },
    /// An output cap over the server's.
    #[error("options.maxOutputSize {asked} exceeds the server's limit of {cap} bytes (serverPolicy.maxOutputSize)")]
    Output {
        /// Bytes asked for.
        asked: u64,
        /// The cap, bytes.
        cap: u64,
    },
    /// The host network without `serverPolicy.allowHostNetwork`.
    #[error("options.network `host` is not allowed by this server (serverPolicy.allowHostNetwork){hint}")]
    HostNetwork {
        /// Why the request needs it, if it did not ask itself.
        hint: &'static str,
    },
    /// A network mode outside `serverPolicy.allowedNetworks`.
    #[error(
        "options.network `{network}` is not allowed by this server (serverPolicy.allowedNetworks: {allowed}){hint}"
    )]
    Network {
        /// The mode asked for.
        network: &'static str,
        /// The allowed modes, comma-separated.
        allowed: String,
        /// Why the request needs it, if it did not ask itself.
        hint: &'static str,
    },
    /// Another image without `serverPolicy.allowCustomImage`.
    #[error(
        "options.image: this server does not accept custom images (serverPolicy.allowCustomImage)"
    )]
    CustomImage,
    /// A seccomp mode other than the server's and not in `serverPolicy.allowedSeccomp`.
    #[error("options.security.seccomp `{asked}` is not allowed by this server (it uses `{own}`), see serverPolicy.allowedSeccomp")]
    Seccomp {
        /// The mode asked for.
        asked: &'static str,
        /// The server's mode.
        own: &'static str,
    },
    /// A writable root filesystem without `serverPolicy.allowWritableRootFs`.
    #[error("options.readonlyRootFs false is not allowed by this server (serverPolicy.allowWritableRootFs)")]
    WritableRootFs,
    /// A seccomp profile file (a path on the server).
    #[error(
        "options.security.customProfilePath names a file on the server; clients may not set it"
    )]
    CustomProfile,
    /// Another OCI runtime.
    #[error("options.security.runtime is chosen by the server operator, not by clients")]
    OciRuntime,
    /// A kept container without `serverPolicy.allowPersist`.
    #[error(
        "options.persist: clients may not leave containers behind on this server (serverPolicy.allowPersist)"
    )]
    Persist,
    /// Persistent mode outside a session.
    #[error("options.mode: use sessionId for a persistent session")]
    Mode,
    /// A size cap of the policy itself is invalid (caught at start by [`validate`]).
    #[error("serverPolicy.{name}: {source}")]
    InvalidSizeCap {
        /// The cap's name (`maxMemoryLimit`…).
        name: &'static str,
        /// What is wrong with it.
        source: isol8::Error,
    },
    /// The CPU cap of the policy itself is invalid (caught at start by [`validate`]).
    #[error(transparent)]
    InvalidCpuCap(isol8::Error),
}

/// Why a policy, or the server's defaults under it, cannot be used (at start).
#[derive(Debug, thiserror::Error)]
pub enum PolicyConfigError {
    /// A cap is not a valid limit (the message names it).
    #[error(transparent)]
    InvalidCap(isol8::Error),
    /// `serverPolicy.maxPidsLimit` is 0.
    #[error("serverPolicy.maxPidsLimit must be at least 1")]
    NoPids,
    /// `serverPolicy.maxOutputSize` is 0.
    #[error("serverPolicy.maxOutputSize must be at least 1 byte")]
    NoOutput,
    /// The server's own options are invalid.
    #[error("defaults: {0}")]
    InvalidDefaults(isol8::Error),
    /// The caps lower the defaults to values that are not valid limits.
    #[error("serverPolicy caps the defaults to invalid values: {0}")]
    CappedInvalid(isol8::Error),
}

/// Checks the policy's own values (at server start): each cap must be a valid limit.
pub fn validate(policy: &ServerPolicy) -> Result<(), PolicyConfigError> {
    let invalid = PolicyConfigError::InvalidCap;
    if let Some(ms) = policy.max_timeout_ms {
        isol8::settings::check_timeout("serverPolicy.maxTimeoutMs", ms).map_err(invalid)?;
    }
    for (name, value) in [
        ("maxMemoryLimit", &policy.max_memory_limit),
        ("maxSandboxSize", &policy.max_sandbox_size),
        ("maxTmpSize", &policy.max_tmp_size),
    ] {
        if let Some(v) = value {
            parse_size(&format!("serverPolicy.{name}"), v).map_err(invalid)?;
        }
    }
    if let Some(cpu) = policy.max_cpu_limit {
        nano_cpus("serverPolicy.maxCpuLimit", cpu).map_err(invalid)?;
    }
    if policy.max_pids_limit.is_some_and(|p| p < MIN_PIDS) {
        return Err(PolicyConfigError::NoPids);
    }
    if policy.max_output_size == Some(0) {
        return Err(PolicyConfigError::NoOutput);
    }
    Ok(())
}

/// A size in bytes as written in options: `512m`, `1g`, `64k`, else bytes.
pub fn format_size(bytes: u64) -> String {
    for (shift, suffix) in [(30, "g"), (20, "m"), (10, "k")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}
