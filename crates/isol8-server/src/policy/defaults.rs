//! [`bound_defaults`]: the server's own defaults lowered to the policy's caps at start.

use isol8::config::ServerPolicy;
use isol8::settings::{nano_cpus, parse_size, SandboxSettings};
use isol8_protocol::EngineOptions;

use super::{format_size, validate, PolicyConfigError};

/// Lowers the server's own defaults in `options` to the policy's caps, so that a
/// request leaving a field out runs within the cap instead of being refused (what
/// `isol8 serve` does at start). Returns one line per lowered value, to tell the
/// operator; an invalid option or cap is an error naming it.
pub fn bound_defaults(
    policy: &ServerPolicy,
    options: &mut EngineOptions,
) -> Result<Vec<String>, PolicyConfigError> {
    validate(policy)?;
    let own = SandboxSettings::resolve(options).map_err(PolicyConfigError::InvalidDefaults)?;
    let mut lowered = Vec::new();
    let mut note = |what: &str, from: String, to: String| {
        lowered.push(format!(
            "{what} lowered from {from} to serverPolicy's cap of {to}"
        ));
    };
    if let Some(cap) = policy.max_timeout_ms.filter(|c| own.timeout_ms > *c) {
        options.timeout_ms = Some(cap);
        note(
            "defaults.timeoutMs",
            own.timeout_ms.to_string(),
            cap.to_string(),
        );
    }
    if let Some(cap) = policy.max_cpu_limit {
        let cap_nanos =
            nano_cpus("serverPolicy.maxCpuLimit", cap).map_err(PolicyConfigError::InvalidCap)?;
        if own.nano_cpus > cap_nanos {
            options.cpu_limit = Some(cap);
            note(
                "defaults.cpuLimit",
                (own.nano_cpus as f64 / 1e9).to_string(),
                cap.to_string(),
            );
        }
    }
    if let Some(cap) = policy.max_pids_limit.filter(|c| own.pids_limit > *c) {
        options.pids_limit = Some(cap);
        note(
            "defaults.pidsLimit",
            own.pids_limit.to_string(),
            cap.to_string(),
        );
    }
    if let Some(cap) = policy.max_output_size.filter(|c| own.max_output > *c) {
        options.max_output_size = Some(cap);
        note(
            "defaults.maxOutputSize",
            own.max_output.to_string(),
            cap.to_string(),
        );
    }
    for (what, cap, have, slot) in [
        (
            "defaults.memoryLimit",
            &policy.max_memory_limit,
            own.memory_bytes.max(0) as u64,
            &mut options.memory_limit,
        ),
        (
            "defaults.sandboxSize",
            &policy.max_sandbox_size,
            own.sandbox_bytes,
            &mut options.sandbox_size,
        ),
        (
            "defaults.tmpSize",
            &policy.max_tmp_size,
            own.tmp_bytes,
            &mut options.tmp_size,
        ),
    ] {
        if let Some(text) = cap {
            if have > parse_size(what, text).map_err(PolicyConfigError::InvalidCap)? {
                *slot = Some(text.clone());
                note(what, format_size(have), text.clone());
            }
        }
    }
    // The lowered values must still be valid (e.g. memory at least 6m).
    SandboxSettings::resolve(options).map_err(PolicyConfigError::CappedInvalid)?;
    Ok(lowered)
}
