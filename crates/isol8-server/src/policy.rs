//! The server policy (`serverPolicy` in the configuration): what clients may ask for.
//!
//! A request over a cap is refused with 400 naming the field and the cap. Without a
//! configured policy, clients may still not pick host networking, their own image, a
//! seccomp mode other than `strict`, a seccomp profile file or OCI runtime on the host,
//! or `persist` — those choices belong to the operator.

use isol8::config::ServerPolicy;
use isol8::limits::parse_size;
use isol8_protocol::{EngineOptions, ExecutionRequest, NetworkMode, SeccompMode};

/// Checks a client's request and options against the policy; the error names the field
/// and the cap.
pub fn check(
    policy: &ServerPolicy,
    req: &ExecutionRequest,
    opts: &EngineOptions,
) -> Result<(), String> {
    check_secrets(policy, opts)?;
    if let Some(max) = policy.max_timeout_ms {
        for (field, value) in [
            ("request.timeoutMs", req.timeout_ms),
            ("options.timeoutMs", opts.timeout_ms),
        ] {
            if let Some(v) = value.filter(|v| *v > max) {
                return Err(format!(
                    "{field} {v} exceeds the server's limit of {max} ms"
                ));
            }
        }
    }
    if let (Some(max), Some(v)) = (&policy.max_memory_limit, &opts.memory_limit) {
        let cap = parse_size("serverPolicy.maxMemoryLimit", max).map_err(|e| e.to_string())?;
        let want = parse_size("memoryLimit", v).map_err(|e| e.to_string())?;
        if want > cap {
            return Err(format!(
                "options.memoryLimit {v} exceeds the server's limit of {max}"
            ));
        }
    }
    if let (Some(max), Some(v)) = (policy.max_cpu_limit, opts.cpu_limit) {
        if v > max {
            return Err(format!(
                "options.cpuLimit {v} exceeds the server's limit of {max}"
            ));
        }
    }
    if let (Some(max), Some(v)) = (policy.max_pids_limit, opts.pids_limit) {
        if v > max {
            return Err(format!(
                "options.pidsLimit {v} exceeds the server's limit of {max}"
            ));
        }
    }
    if let (Some(max), Some(v)) = (policy.max_output_size, opts.max_output_size) {
        if v > max {
            return Err(format!(
                "options.maxOutputSize {v} exceeds the server's limit of {max} bytes"
            ));
        }
    }
    // installPackages with no network asks the engine for `filtered`: the policy sees it so.
    let implied = (!req.install_packages.is_empty()).then_some(NetworkMode::Filtered);
    if let Some(network) = opts.network.or(implied) {
        if network == NetworkMode::Host && !policy.allow_host_network.unwrap_or(false) {
            return Err("options.network `host` is not allowed by this server".into());
        }
        if let Some(allowed) = &policy.allowed_networks {
            if !allowed.contains(&network) {
                let names: Vec<&str> = allowed.iter().map(|n| n.as_str()).collect();
                return Err(format!(
                    "options.network `{}` is not allowed by this server (allowed: {}){}",
                    network.as_str(),
                    names.join(", "),
                    if opts.network.is_none() {
                        "; installPackages needs it"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    if opts.image.is_some() && !policy.allow_custom_image.unwrap_or(false) {
        return Err("options.image: this server does not accept custom images".into());
    }
    if let Some(security) = &opts.security {
        if let Some(mode) = security.seccomp {
            let allowed = policy
                .allowed_seccomp
                .clone()
                .unwrap_or_else(|| vec![SeccompMode::Strict]);
            if !allowed.contains(&mode) {
                return Err(format!(
                    "options.security.seccomp `{mode:?}` is not allowed by this server"
                )
                .to_lowercase());
            }
        }
        if security.custom_profile_path.is_some() {
            return Err("options.security.customProfilePath names a file on the server; clients may not set it".into());
        }
        if security.runtime.is_some() {
            return Err(
                "options.security.runtime is chosen by the server operator, not by clients".into(),
            );
        }
    }
    if opts.persist == Some(true) {
        return Err("options.persist: clients may not leave containers behind".into());
    }
    if opts
        .mode
        .is_some_and(|m| m != isol8_protocol::options::Mode::Ephemeral)
    {
        return Err("options.mode: use sessionId for a persistent session".into());
    }
    Ok(())
}

/// Caps the size of a client's `secrets`: every secret is compiled into the execution's
/// masking automaton, so their number and size bound that work (`serverPolicy.maxSecrets`,
/// `serverPolicy.maxSecretBytes`, with defaults). The error never quotes a value.
fn check_secrets(policy: &ServerPolicy, opts: &EngineOptions) -> Result<(), String> {
    let max = policy
        .max_secrets
        .unwrap_or(ServerPolicy::DEFAULT_MAX_SECRETS);
    if opts.secrets.len() > max {
        return Err(format!(
            "options.secrets has {} entries; this server accepts at most {max} (serverPolicy.maxSecrets)",
            opts.secrets.len()
        ));
    }
    let max = policy
        .max_secret_bytes
        .unwrap_or(ServerPolicy::DEFAULT_MAX_SECRET_BYTES);
    let bytes: usize = opts.secrets.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > max {
        return Err(format!(
            "options.secrets holds {bytes} bytes (names and values); this server accepts at most {max} (serverPolicy.maxSecretBytes)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use isol8_protocol::options::SecurityOptions;

    fn req() -> ExecutionRequest {
        ExecutionRequest {
            runtime: "python".into(),
            code: Some("1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn caps_name_the_field_and_the_limit() {
        let policy = ServerPolicy {
            max_timeout_ms: Some(5000),
            max_memory_limit: Some("256m".into()),
            max_cpu_limit: Some(1.0),
            max_pids_limit: Some(100),
            max_output_size: Some(1 << 20),
            ..Default::default()
        };
        let mut r = req();
        r.timeout_ms = Some(6000);
        let e = check(&policy, &r, &EngineOptions::default()).expect_err("timeout");
        assert!(e.contains("request.timeoutMs") && e.contains("5000"), "{e}");
        let cases = [
            (
                EngineOptions {
                    memory_limit: Some("1g".into()),
                    ..Default::default()
                },
                "memoryLimit",
                "256m",
            ),
            (
                EngineOptions {
                    cpu_limit: Some(2.0),
                    ..Default::default()
                },
                "cpuLimit",
                "1",
            ),
            (
                EngineOptions {
                    pids_limit: Some(500),
                    ..Default::default()
                },
                "pidsLimit",
                "100",
            ),
            (
                EngineOptions {
                    max_output_size: Some(1 << 30),
                    ..Default::default()
                },
                "maxOutputSize",
                "1048576",
            ),
        ];
        for (opts, field, cap) in cases {
            let e = check(&policy, &req(), &opts).expect_err(field);
            assert!(e.contains(field) && e.contains(cap), "{e}");
        }
        let fine = EngineOptions {
            memory_limit: Some("128m".into()),
            cpu_limit: Some(0.5),
            ..Default::default()
        };
        assert!(check(&policy, &req(), &fine).is_ok());
    }

    #[test]
    fn installing_counts_as_asking_for_the_filtered_network() {
        let p = ServerPolicy {
            allowed_networks: Some(vec![NetworkMode::None]),
            ..Default::default()
        };
        let mut r = req();
        r.install_packages = vec!["six".into()];
        let e = check(&p, &r, &EngineOptions::default()).expect_err("implied filtered");
        assert!(
            e.contains("filtered") && e.contains("installPackages"),
            "{e}"
        );
        assert!(check(&ServerPolicy::default(), &r, &EngineOptions::default()).is_ok());
    }

    #[test]
    fn operator_only_choices_are_refused_by_default() {
        let p = ServerPolicy::default();
        let refused = [
            EngineOptions {
                network: Some(NetworkMode::Host),
                ..Default::default()
            },
            EngineOptions {
                image: Some("evil:latest".into()),
                ..Default::default()
            },
            EngineOptions {
                security: Some(SecurityOptions {
                    seccomp: Some(SeccompMode::Unconfined),
                    ..Default::default()
                }),
                ..Default::default()
            },
            EngineOptions {
                security: Some(SecurityOptions {
                    custom_profile_path: Some("/etc/shadow".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            EngineOptions {
                security: Some(SecurityOptions {
                    runtime: Some("runc".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            EngineOptions {
                persist: Some(true),
                ..Default::default()
            },
        ];
        for opts in refused {
            assert!(check(&p, &req(), &opts).is_err(), "{opts:?}");
        }
        let host_ok = ServerPolicy {
            allow_host_network: Some(true),
            ..Default::default()
        };
        assert!(check(
            &host_ok,
            &req(),
            &EngineOptions {
                network: Some(NetworkMode::Host),
                ..Default::default()
            }
        )
        .is_ok());
    }

    #[test]
    fn secrets_are_capped_in_number_and_size_by_default_and_by_policy() {
        let many = |n: usize, len: usize| EngineOptions {
            secrets: (0..n).map(|i| (format!("S{i}"), "v".repeat(len))).collect(),
            ..Default::default()
        };
        let p = ServerPolicy::default();
        assert!(check(&p, &req(), &many(100, 600)).is_ok());
        // The load: 30,000 secrets in one request.
        let e = check(&p, &req(), &many(30_000, 20)).expect_err("count");
        assert!(
            e.contains("serverPolicy.maxSecrets") && e.contains("100"),
            "{e}"
        );
        let e = check(&p, &req(), &many(2, 40_000)).expect_err("size");
        assert!(
            e.contains("serverPolicy.maxSecretBytes") && e.contains("65536"),
            "{e}"
        );
        assert!(!e.contains("vvvv"), "values are never quoted: {e}");
        let wider = ServerPolicy {
            max_secrets: Some(1000),
            max_secret_bytes: Some(1 << 20),
            ..Default::default()
        };
        assert!(check(&wider, &req(), &many(1000, 500)).is_ok());
        let narrower = ServerPolicy {
            max_secrets: Some(1),
            ..Default::default()
        };
        assert!(check(&narrower, &req(), &many(2, 5)).is_err());
    }
}
