//! [`check`]: a client's request against the policy, on the settings it would run with.

use isol8::config::ServerPolicy;
use isol8::settings::{nano_cpus, parse_size, SandboxSettings, MAX_TIMEOUT_MS};
use isol8_protocol::options::Mode;
use isol8_protocol::{EngineOptions, ExecutionRequest, NetworkMode, SeccompMode};

use super::{format_size, PolicyError};

/// A size cap: the policy's, else the server's own; as bytes and as written.
fn size_cap(
    name: &'static str,
    policy: &Option<String>,
    own: u64,
) -> Result<(u64, String), PolicyError> {
    match policy {
        Some(text) => {
            let cap = parse_size(name, text)
                .map_err(|source| PolicyError::InvalidSizeCap { name, source })?;
            Ok((cap, text.clone()))
        }
        None => Ok((own, format_size(own))),
    }
}

/// Checks a client's request against the policy. `client` are the client's own options
/// (for naming fields), `server` the server's settings and `merged` the settings the
/// request would run with (`client` laid over the server's options, resolved). The
/// error names the field and the cap.
///
/// A built-in runtime's own defaults (the agent's 200 processes and 2 GiB `/sandbox`,
/// [`SandboxSettings::for_runtime`]) apply to both first, as the engine applies them
/// where the options leave those values unset: the server's settings for that runtime
/// are the caps a policy without its own falls back to, and the request is checked with
/// what it will really get.
pub fn check(
    policy: &ServerPolicy,
    req: &ExecutionRequest,
    client: &EngineOptions,
    server: &SandboxSettings,
    merged: &SandboxSettings,
) -> Result<(), PolicyError> {
    let defaults = isol8::RuntimeRegistry::builtin()
        .get(&req.runtime)
        .map(|r| r.defaults.clone())
        .unwrap_or_default();
    // A built-in default is valid, so `for_runtime` cannot fail here.
    let server_rt = server.for_runtime(&defaults).ok().flatten();
    let merged_rt = merged.for_runtime(&defaults).ok().flatten();
    let server = server_rt.as_ref().unwrap_or(server);
    let merged = merged_rt.as_ref().unwrap_or(merged);
    check_secrets(policy, client)?;
    // Timeouts: the request's wins over the options', and what runs is capped.
    let timeout_cap = policy
        .max_timeout_ms
        .unwrap_or(server.timeout_ms)
        .min(MAX_TIMEOUT_MS);
    for (field, value) in [
        ("options.timeoutMs", client.timeout_ms),
        (
            if req.timeout_ms.is_some() {
                "request.timeoutMs"
            } else {
                "timeoutMs (the server's default)"
            },
            Some(req.timeout_ms.unwrap_or(merged.timeout_ms)),
        ),
    ] {
        if let Some(value) = value.filter(|v| *v > timeout_cap) {
            return Err(PolicyError::Timeout {
                field,
                value,
                cap: timeout_cap,
            });
        }
    }

    let given = |v: &Option<String>, bytes: u64| v.clone().unwrap_or_else(|| format_size(bytes));
    for (field, name, policy_cap, own, want, asked) in [
        (
            "memoryLimit",
            "maxMemoryLimit",
            &policy.max_memory_limit,
            server.memory_bytes.max(0) as u64,
            merged.memory_bytes.max(0) as u64,
            &client.memory_limit,
        ),
        (
            "sandboxSize",
            "maxSandboxSize",
            &policy.max_sandbox_size,
            server.sandbox_bytes,
            merged.sandbox_bytes,
            &client.sandbox_size,
        ),
        (
            "tmpSize",
            "maxTmpSize",
            &policy.max_tmp_size,
            server.tmp_bytes,
            merged.tmp_bytes,
            &client.tmp_size,
        ),
    ] {
        let (cap, shown) = size_cap(name, policy_cap, own)?;
        if want > cap {
            return Err(PolicyError::Size {
                field,
                key: name,
                asked: given(asked, want),
                cap: shown,
            });
        }
    }

    let cpu_cap = match policy.max_cpu_limit {
        Some(cores) => {
            nano_cpus("serverPolicy.maxCpuLimit", cores).map_err(PolicyError::InvalidCpuCap)?
        }
        None => server.nano_cpus,
    };
    if merged.nano_cpus > cpu_cap {
        return Err(PolicyError::Cpu {
            asked: client.cpu_limit.unwrap_or(merged.nano_cpus as f64 / 1e9),
            cap: cpu_cap as f64 / 1e9,
        });
    }

    let pids_cap = policy.max_pids_limit.unwrap_or(server.pids_limit);
    if merged.pids_limit > pids_cap {
        return Err(PolicyError::Pids {
            asked: merged.pids_limit,
            cap: pids_cap,
        });
    }

    let output_cap = policy.max_output_size.unwrap_or(server.max_output);
    if merged.max_output > output_cap {
        return Err(PolicyError::Output {
            asked: merged.max_output,
            cap: output_cap,
        });
    }

    check_network(policy, req, server, merged)?;

    if merged.image != server.image && !policy.allow_custom_image.unwrap_or(false) {
        return Err(PolicyError::CustomImage);
    }
    if merged.seccomp != server.seccomp {
        let allowed = policy.allowed_seccomp.as_deref().unwrap_or_default();
        if !allowed.contains(&merged.seccomp) {
            return Err(PolicyError::Seccomp {
                asked: seccomp_name(merged.seccomp),
                own: seccomp_name(server.seccomp),
            });
        }
    }
    if !merged.readonly_root_fs
        && server.readonly_root_fs
        && !policy.allow_writable_root_fs.unwrap_or(false)
    {
        return Err(PolicyError::WritableRootFs);
    }
    if merged.custom_profile_path != server.custom_profile_path {
        return Err(PolicyError::CustomProfile);
    }
    if merged.oci_runtime != server.oci_runtime {
        return Err(PolicyError::OciRuntime);
    }
    if merged.persist && !server.persist && !policy.allow_persist.unwrap_or(false) {
        return Err(PolicyError::Persist);
    }
    if merged.mode != Mode::Ephemeral || client.mode.is_some_and(|m| m != Mode::Ephemeral) {
        return Err(PolicyError::Mode);
    }
    Ok(())
}

/// The network mode the run would get, against the server's and the policy's.
fn check_network(
    policy: &ServerPolicy,
    req: &ExecutionRequest,
    server: &SandboxSettings,
    merged: &SandboxSettings,
) -> Result<(), PolicyError> {
    // installPackages with no network chosen runs on `filtered`: the policy sees it so.
    let implied = !req.install_packages.is_empty()
        && merged.network == NetworkMode::None
        && !merged.network_explicit;
    let network = if implied {
        NetworkMode::Filtered
    } else {
        merged.network
    };
    if network == server.network {
        return Ok(());
    }
    let hint = if implied {
        "; installPackages needs it"
    } else {
        ""
    };
    if network == NetworkMode::Host && !policy.allow_host_network.unwrap_or(false) {
        return Err(PolicyError::HostNetwork { hint });
    }
    if let Some(allowed) = &policy.allowed_networks {
        if !allowed.contains(&network) {
            let names: Vec<&str> = allowed.iter().map(|n| n.as_str()).collect();
            return Err(PolicyError::Network {
                network: network.as_str(),
                allowed: names.join(", "),
                hint,
            });
        }
    }
    Ok(())
}

fn seccomp_name(mode: SeccompMode) -> &'static str {
    match mode {
        SeccompMode::Strict => "strict",
        SeccompMode::Unconfined => "unconfined",
        SeccompMode::Custom => "custom",
    }
}

/// Caps the size of a client's `secrets`: every secret is compiled into the execution's
/// masking automaton, so their number and size bound that work (`serverPolicy.maxSecrets`,
/// `serverPolicy.maxSecretBytes`, with defaults). The error never quotes a value.
fn check_secrets(policy: &ServerPolicy, opts: &EngineOptions) -> Result<(), PolicyError> {
    let max = policy
        .max_secrets
        .unwrap_or(ServerPolicy::DEFAULT_MAX_SECRETS);
    if opts.secrets.len() > max {
        return Err(PolicyError::TooManySecrets {
            count: opts.secrets.len(),
            max,
        });
    }
    let max = policy
        .max_secret_bytes
        .unwrap_or(ServerPolicy::DEFAULT_MAX_SECRET_BYTES);
    let bytes: usize = opts.secrets.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > max {
        return Err(PolicyError::SecretsTooLarge { bytes, max });
    }
    Ok(())
}
