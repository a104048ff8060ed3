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
//! A request over a cap is refused with 400 naming the field and the cap.

use isol8::config::ServerPolicy;
use isol8::limits::{nano_cpus, parse_size, SandboxSettings, MAX_TIMEOUT_MS, MIN_PIDS};
use isol8_protocol::options::Mode;
use isol8_protocol::{EngineOptions, ExecutionRequest, NetworkMode, SeccompMode};

/// Checks the policy's own values (at server start): each cap must be a valid limit.
pub fn validate(policy: &ServerPolicy) -> Result<(), String> {
    let text = |e: isol8::Error| e.to_string();
    if let Some(ms) = policy.max_timeout_ms {
        isol8::limits::check_timeout("serverPolicy.maxTimeoutMs", ms).map_err(text)?;
    }
    for (name, value) in [
        ("maxMemoryLimit", &policy.max_memory_limit),
        ("maxSandboxSize", &policy.max_sandbox_size),
        ("maxTmpSize", &policy.max_tmp_size),
    ] {
        if let Some(v) = value {
            parse_size(&format!("serverPolicy.{name}"), v).map_err(text)?;
        }
    }
    if let Some(cpu) = policy.max_cpu_limit {
        nano_cpus("serverPolicy.maxCpuLimit", cpu).map_err(text)?;
    }
    if policy.max_pids_limit.is_some_and(|p| p < MIN_PIDS) {
        return Err("serverPolicy.maxPidsLimit must be at least 1".into());
    }
    if policy.max_output_size == Some(0) {
        return Err("serverPolicy.maxOutputSize must be at least 1 byte".into());
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

/// A size cap: the policy's, else the server's own; as bytes and as written.
fn size_cap(name: &str, policy: &Option<String>, own: u64) -> Result<(u64, String), String> {
    match policy {
        Some(text) => {
            let cap = parse_size(name, text).map_err(|e| format!("serverPolicy.{name}: {e}"))?;
            Ok((cap, text.clone()))
        }
        None => Ok((own, format_size(own))),
    }
}

/// Lowers the server's own defaults in `options` to the policy's caps, so that a
/// request leaving a field out runs within the cap instead of being refused (what
/// `isol8 serve` does at start). Returns one line per lowered value, to tell the
/// operator; an invalid option or cap is an error naming it.
pub fn bound_defaults(
    policy: &ServerPolicy,
    options: &mut EngineOptions,
) -> Result<Vec<String>, String> {
    validate(policy)?;
    let own = SandboxSettings::resolve(options).map_err(|e| format!("defaults: {e}"))?;
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
        if own.nano_cpus > nano_cpus("maxCpuLimit", cap).map_err(|e| e.to_string())? {
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
            if have > parse_size(what, text).map_err(|e| e.to_string())? {
                *slot = Some(text.clone());
                note(what, format_size(have), text.clone());
            }
        }
    }
    // The lowered values must still be valid (e.g. memory at least 6m).
    SandboxSettings::resolve(options)
        .map_err(|e| format!("serverPolicy caps the defaults to invalid values: {e}"))?;
    Ok(lowered)
}

/// Checks a client's request against the policy. `client` are the client's own options
/// (for naming fields), `server` the server's settings and `merged` the settings the
/// request would run with (`client` laid over the server's options, resolved). The
/// error names the field and the cap.
pub fn check(
    policy: &ServerPolicy,
    req: &ExecutionRequest,
    client: &EngineOptions,
    server: &SandboxSettings,
    merged: &SandboxSettings,
) -> Result<(), String> {
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
        if let Some(v) = value.filter(|v| *v > timeout_cap) {
            return Err(format!(
                "{field} {v} exceeds the server's limit of {timeout_cap} ms"
            ));
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
            return Err(format!(
                "options.{field} {} exceeds the server's limit of {shown}",
                given(asked, want)
            ));
        }
    }

    let cpu_cap = match policy.max_cpu_limit {
        Some(cores) => nano_cpus("serverPolicy.maxCpuLimit", cores).map_err(|e| e.to_string())?,
        None => server.nano_cpus,
    };
    if merged.nano_cpus > cpu_cap {
        let asked = client.cpu_limit.unwrap_or(merged.nano_cpus as f64 / 1e9);
        return Err(format!(
            "options.cpuLimit {asked} exceeds the server's limit of {}",
            cpu_cap as f64 / 1e9
        ));
    }

    let pids_cap = policy.max_pids_limit.unwrap_or(server.pids_limit);
    if merged.pids_limit > pids_cap {
        return Err(format!(
            "options.pidsLimit {} exceeds the server's limit of {pids_cap}",
            merged.pids_limit
        ));
    }

    let output_cap = policy.max_output_size.unwrap_or(server.max_output);
    if merged.max_output > output_cap {
        return Err(format!(
            "options.maxOutputSize {} exceeds the server's limit of {output_cap} bytes",
            merged.max_output
        ));
    }

    // installPackages with no network chosen runs on `filtered`: the policy sees it so.
    let implied = !req.install_packages.is_empty()
        && merged.network == NetworkMode::None
        && !merged.network_explicit;
    let network = if implied {
        NetworkMode::Filtered
    } else {
        merged.network
    };
    if network != server.network {
        let hint = if implied {
            "; installPackages needs it"
        } else {
            ""
        };
        if network == NetworkMode::Host && !policy.allow_host_network.unwrap_or(false) {
            return Err(format!(
                "options.network `host` is not allowed by this server{hint}"
            ));
        }
        if let Some(allowed) = &policy.allowed_networks {
            if !allowed.contains(&network) {
                let names: Vec<&str> = allowed.iter().map(|n| n.as_str()).collect();
                return Err(format!(
                    "options.network `{}` is not allowed by this server (allowed: {}){hint}",
                    network.as_str(),
                    names.join(", "),
                ));
            }
        }
    }

    if merged.image != server.image && !policy.allow_custom_image.unwrap_or(false) {
        return Err("options.image: this server does not accept custom images".into());
    }
    if merged.seccomp != server.seccomp {
        let allowed = policy.allowed_seccomp.as_deref().unwrap_or_default();
        if !allowed.contains(&merged.seccomp) {
            return Err(format!(
                "options.security.seccomp `{}` is not allowed by this server (it uses `{}`)",
                seccomp_name(merged.seccomp),
                seccomp_name(server.seccomp)
            ));
        }
    }
    if !merged.readonly_root_fs
        && server.readonly_root_fs
        && !policy.allow_writable_root_fs.unwrap_or(false)
    {
        return Err("options.readonlyRootFs false is not allowed by this server (serverPolicy.allowWritableRootFs)".into());
    }
    if merged.custom_profile_path != server.custom_profile_path {
        return Err(
            "options.security.customProfilePath names a file on the server; clients may not set it"
                .into(),
        );
    }
    if merged.oci_runtime != server.oci_runtime {
        return Err(
            "options.security.runtime is chosen by the server operator, not by clients".into(),
        );
    }
    if merged.persist && !server.persist {
        return Err("options.persist: clients may not leave containers behind".into());
    }
    if merged.mode != Mode::Ephemeral || client.mode.is_some_and(|m| m != Mode::Ephemeral) {
        return Err("options.mode: use sessionId for a persistent session".into());
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
    use isol8_protocol::NetworkFilter;

    fn req() -> ExecutionRequest {
        ExecutionRequest {
            runtime: "python".into(),
            code: Some("1".into()),
            ..Default::default()
        }
    }

    /// Resolves the server's options and `client` laid over them, as the server does
    /// (`DockerEngine::settings_with`), and checks the result.
    fn check_over(
        policy: &ServerPolicy,
        server: &EngineOptions,
        r: &ExecutionRequest,
        client: &EngineOptions,
    ) -> Result<(), String> {
        let own = SandboxSettings::resolve(server).map_err(|e| e.to_string())?;
        let merged =
            SandboxSettings::resolve(&server.overlay(client)).map_err(|e| e.to_string())?;
        check(policy, r, client, &own, &merged)
    }

    fn allowed(policy: &ServerPolicy, client: &EngineOptions) -> Result<(), String> {
        check_over(policy, &EngineOptions::default(), &req(), client)
    }

    #[test]
    fn caps_name_the_field_and_the_limit() {
        let policy = ServerPolicy {
            max_timeout_ms: Some(5000),
            max_memory_limit: Some("1g".into()),
            max_cpu_limit: Some(2.0),
            max_pids_limit: Some(100),
            max_output_size: Some(4 << 20),
            max_sandbox_size: Some("1g".into()),
            ..Default::default()
        };
        let server = EngineOptions {
            timeout_ms: Some(2000),
            ..Default::default()
        };
        let mut r = req();
        r.timeout_ms = Some(6000);
        let e = check_over(&policy, &server, &r, &EngineOptions::default()).expect_err("timeout");
        assert!(e.contains("request.timeoutMs") && e.contains("5000"), "{e}");
        r.timeout_ms = Some(4000);
        assert!(check_over(&policy, &server, &r, &EngineOptions::default()).is_ok());
        let cases = [
            (
                EngineOptions {
                    memory_limit: Some("2g".into()),
                    ..Default::default()
                },
                "options.memoryLimit 2g",
                "limit of 1g",
            ),
            (
                EngineOptions {
                    cpu_limit: Some(2.5),
                    ..Default::default()
                },
                "options.cpuLimit 2.5",
                "limit of 2",
            ),
            (
                EngineOptions {
                    pids_limit: Some(500),
                    ..Default::default()
                },
                "options.pidsLimit 500",
                "limit of 100",
            ),
            (
                EngineOptions {
                    max_output_size: Some(1 << 30),
                    ..Default::default()
                },
                "maxOutputSize",
                "4194304",
            ),
            (
                EngineOptions {
                    sandbox_size: Some("2g".into()),
                    ..Default::default()
                },
                "options.sandboxSize 2g",
                "1g",
            ),
            (
                EngineOptions {
                    tmp_size: Some("1g".into()),
                    ..Default::default()
                },
                "options.tmpSize 1g",
                "limit of 256m",
            ),
        ];
        for (opts, field, cap) in cases {
            let e = check_over(&policy, &server, &req(), &opts).expect_err(field);
            assert!(e.contains(field) && e.contains(cap), "{e}");
        }
        let fine = EngineOptions {
            memory_limit: Some("1g".into()),
            cpu_limit: Some(2.0),
            pids_limit: Some(100),
            timeout_ms: Some(5000),
            ..Default::default()
        };
        assert!(check_over(&policy, &server, &req(), &fine).is_ok());
    }

    #[test]
    fn without_a_policy_clients_get_at_most_the_servers_own_settings() {
        // What an attacker asked an unconfigured server for: 16g, all cores, 24 h,
        // 100,000 processes and a 1 TiB output cap. Each is refused on its own.
        let p = ServerPolicy::default();
        let mut day = req();
        day.timeout_ms = Some(24 * 3600 * 1000);
        let e = check_over(
            &p,
            &EngineOptions::default(),
            &day,
            &EngineOptions::default(),
        )
        .expect_err("24 h");
        assert!(e.contains("limit of 30000 ms"), "{e}");
        let greedy = [
            (
                EngineOptions {
                    memory_limit: Some("16g".into()),
                    ..Default::default()
                },
                "limit of 512m",
            ),
            (
                EngineOptions {
                    cpu_limit: Some(64.0),
                    ..Default::default()
                },
                "limit of 1",
            ),
            (
                EngineOptions {
                    pids_limit: Some(100_000),
                    ..Default::default()
                },
                "limit of 64",
            ),
            (
                EngineOptions {
                    max_output_size: Some(1 << 40),
                    ..Default::default()
                },
                "limit of 1048576 bytes",
            ),
            (
                EngineOptions {
                    timeout_ms: Some(86_400_000),
                    ..Default::default()
                },
                "limit of 30000 ms",
            ),
            (
                EngineOptions {
                    sandbox_size: Some("100g".into()),
                    ..Default::default()
                },
                "limit of 512m",
            ),
        ];
        for (opts, want) in greedy {
            let e = allowed(&p, &opts).expect_err(want);
            assert!(e.contains(want), "{e}");
        }
        // Narrowing is always fine.
        let small = EngineOptions {
            memory_limit: Some("64m".into()),
            cpu_limit: Some(0.25),
            pids_limit: Some(16),
            max_output_size: Some(1024),
            timeout_ms: Some(1000),
            ..Default::default()
        };
        assert!(allowed(&p, &small).is_ok());
        // The server's own (configured) defaults are the caps, even above the engine's.
        let big_server = EngineOptions {
            memory_limit: Some("2g".into()),
            cpu_limit: Some(4.0),
            ..Default::default()
        };
        let ask = EngineOptions {
            memory_limit: Some("2g".into()),
            cpu_limit: Some(3.0),
            ..Default::default()
        };
        assert!(check_over(&p, &big_server, &req(), &ask).is_ok());
    }

    #[test]
    fn leaving_a_field_out_does_not_exceed_a_cap_below_the_servers_default() {
        // The operator caps memory and time below the engine defaults (512m, 30 s) but
        // sets no defaults: a request that names neither must not run with 512m / 30 s.
        let low = ServerPolicy {
            max_memory_limit: Some("128m".into()),
            max_timeout_ms: Some(2000),
            max_pids_limit: Some(16),
            ..Default::default()
        };
        let mut server = EngineOptions::default();
        let e = check_over(&low, &server, &req(), &EngineOptions::default())
            .expect_err("the default is over the cap");
        assert!(e.contains("2000 ms"), "{e}");
        // `isol8 serve` lowers its own defaults to the caps at start, so it runs.
        let lowered = bound_defaults(&low, &mut server).expect("valid");
        assert_eq!(lowered.len(), 3, "{lowered:?}");
        assert!(
            lowered[0].contains("defaults.timeoutMs lowered from 30000 to"),
            "{lowered:?}"
        );
        assert!(check_over(&low, &server, &req(), &EngineOptions::default()).is_ok());
        let s = SandboxSettings::resolve(&server).expect("valid");
        assert_eq!(
            (s.memory_bytes, s.timeout_ms, s.pids_limit),
            (128 << 20, 2000, 16)
        );
        // Asking for more is still refused, and nothing is lowered twice.
        let ask = EngineOptions {
            memory_limit: Some("256m".into()),
            ..Default::default()
        };
        let e = check_over(&low, &server, &req(), &ask).expect_err("over the cap");
        assert!(
            e.contains("options.memoryLimit 256m exceeds the server's limit of 128m"),
            "{e}"
        );
        assert!(bound_defaults(&low, &mut server).expect("valid").is_empty());
        // A cap that makes the defaults invalid is an error at start.
        let tiny = ServerPolicy {
            max_memory_limit: Some("1m".into()),
            ..Default::default()
        };
        let e = bound_defaults(&tiny, &mut EngineOptions::default()).expect_err("too small");
        assert!(e.contains("memoryLimit"), "{e}");
    }

    #[test]
    fn a_cpu_limit_that_rounds_to_zero_never_reaches_the_cap_check() {
        // 4e-10 cores is 0 nano-CPUs — "no limit" to Docker — and below any cap.
        for cpu in [4e-10, 1e-300, 0.0049] {
            let e = allowed(
                &ServerPolicy {
                    max_cpu_limit: Some(1.0),
                    ..Default::default()
                },
                &EngineOptions {
                    cpu_limit: Some(cpu),
                    ..Default::default()
                },
            )
            .expect_err("refused");
            assert!(e.contains("cpuLimit") && e.contains("0.01"), "{e}");
        }
    }

    #[test]
    fn empty_security_and_filter_objects_keep_the_operators() {
        let server = EngineOptions {
            security: Some(SecurityOptions {
                runtime: Some("runsc".into()),
                ..Default::default()
            }),
            network: Some(NetworkMode::Filtered),
            network_filter: Some(NetworkFilter {
                whitelist: vec![r"^pypi\.org$".into()],
                blacklist: vec![r"^evil\.example$".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let client: EngineOptions =
            serde_json::from_str(r#"{"security": {}, "networkFilter": {}}"#).expect("json");
        let p = ServerPolicy::default();
        assert!(check_over(&p, &server, &req(), &client).is_ok());
        let merged = SandboxSettings::resolve(&server.overlay(&client)).expect("merged");
        assert_eq!(merged.oci_runtime.as_deref(), Some("runsc"));
        assert_eq!(merged.network_filter.whitelist, [r"^pypi\.org$"]);
        assert_eq!(merged.network_filter.blacklist, [r"^evil\.example$"]);
        // Naming the server's own runtime is fine; any other, or runc, is refused.
        for (runtime, ok) in [("runsc", true), ("runc", false), ("kata", false)] {
            let c = EngineOptions {
                security: Some(SecurityOptions {
                    runtime: Some(runtime.into()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let got = check_over(&p, &server, &req(), &c);
            assert_eq!(got.is_ok(), ok, "{runtime}: {got:?}");
        }
        // A client whitelist narrows: nothing to refuse, and the operator's stays.
        let c = EngineOptions {
            network_filter: Some(NetworkFilter {
                whitelist: vec![r"^example\.com$".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(check_over(&p, &server, &req(), &c).is_ok());
        let merged = SandboxSettings::resolve(&server.overlay(&c)).expect("merged");
        assert_eq!(merged.network_filter.whitelists().count(), 2);
    }

    #[test]
    fn seccomp_may_only_change_to_what_the_policy_allows() {
        let unconfined = EngineOptions {
            security: Some(SecurityOptions {
                seccomp: Some(SeccompMode::Unconfined),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = allowed(&ServerPolicy::default(), &unconfined).expect_err("weaker");
        assert!(e.contains("seccomp `unconfined`"), "{e}");
        let strict = EngineOptions {
            security: Some(SecurityOptions {
                seccomp: Some(SeccompMode::Strict),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            allowed(&ServerPolicy::default(), &strict).is_ok(),
            "the server's own"
        );
        let lax = ServerPolicy {
            allowed_seccomp: Some(vec![SeccompMode::Unconfined]),
            ..Default::default()
        };
        assert!(allowed(&lax, &unconfined).is_ok());
    }

    #[test]
    fn installing_counts_as_asking_for_the_filtered_network() {
        let p = ServerPolicy {
            allowed_networks: Some(vec![NetworkMode::None]),
            ..Default::default()
        };
        let mut r = req();
        r.install_packages = vec!["six".into()];
        let e = check_over(&p, &EngineOptions::default(), &r, &EngineOptions::default())
            .expect_err("implied filtered");
        assert!(
            e.contains("filtered") && e.contains("installPackages"),
            "{e}"
        );
        assert!(check_over(
            &ServerPolicy::default(),
            &EngineOptions::default(),
            &r,
            &EngineOptions::default()
        )
        .is_ok());
        // A server whose own network is filtered needs no permission for it.
        let filtered = EngineOptions {
            network: Some(NetworkMode::Filtered),
            ..Default::default()
        };
        assert!(check_over(&p, &filtered, &r, &EngineOptions::default()).is_ok());
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
                    seccomp: Some(SeccompMode::Custom),
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
            EngineOptions {
                mode: Some(Mode::Persistent),
                ..Default::default()
            },
        ];
        for opts in refused {
            assert!(allowed(&p, &opts).is_err(), "{opts:?}");
        }
        let host_ok = ServerPolicy {
            allow_host_network: Some(true),
            ..Default::default()
        };
        assert!(allowed(
            &host_ok,
            &EngineOptions {
                network: Some(NetworkMode::Host),
                ..Default::default()
            }
        )
        .is_ok());
    }

    #[test]
    fn a_writable_root_filesystem_needs_the_operators_consent() {
        let writable = EngineOptions {
            readonly_root_fs: Some(false),
            ..Default::default()
        };
        let e = allowed(&ServerPolicy::default(), &writable).expect_err("refused");
        assert!(
            e.contains("readonlyRootFs") && e.contains("serverPolicy.allowWritableRootFs"),
            "{e}"
        );
        let read_only = EngineOptions {
            readonly_root_fs: Some(true),
            ..Default::default()
        };
        assert!(allowed(&ServerPolicy::default(), &read_only).is_ok());
        let consent = ServerPolicy {
            allow_writable_root_fs: Some(true),
            ..Default::default()
        };
        assert!(allowed(&consent, &writable).is_ok());
        let parsed = isol8::config::Config::from_json_str(
            r#"{"serverPolicy": {"allowWritableRootFs": true}}"#,
        )
        .expect("the key parses");
        assert_eq!(parsed.server_policy.allow_writable_root_fs, Some(true));
    }

    #[test]
    fn the_policy_itself_is_validated() {
        assert!(validate(&ServerPolicy::default()).is_ok());
        let bad = [
            ServerPolicy {
                max_cpu_limit: Some(4e-10),
                ..Default::default()
            },
            ServerPolicy {
                max_memory_limit: Some("lots".into()),
                ..Default::default()
            },
            ServerPolicy {
                max_pids_limit: Some(0),
                ..Default::default()
            },
            ServerPolicy {
                max_output_size: Some(0),
                ..Default::default()
            },
            ServerPolicy {
                max_timeout_ms: Some(0),
                ..Default::default()
            },
            ServerPolicy {
                max_tmp_size: Some("0".into()),
                ..Default::default()
            },
        ];
        for p in bad {
            let e = validate(&p).expect_err("invalid");
            assert!(e.contains("serverPolicy.max"), "{e}");
        }
    }

    #[test]
    fn sizes_are_shown_as_written() {
        assert_eq!(format_size(512 << 20), "512m");
        assert_eq!(format_size(1 << 30), "1g");
        assert_eq!(format_size(64 << 10), "64k");
        assert_eq!(format_size(1000), "1000");
    }

    #[test]
    fn secrets_are_capped_in_number_and_size_by_default_and_by_policy() {
        let many = |n: usize, len: usize| EngineOptions {
            secrets: (0..n).map(|i| (format!("S{i}"), "v".repeat(len))).collect(),
            ..Default::default()
        };
        let p = ServerPolicy::default();
        assert!(allowed(&p, &many(100, 600)).is_ok());
        // The issue's load: 30,000 secrets in one request.
        let e = allowed(&p, &many(30_000, 20)).expect_err("count");
        assert!(
            e.contains("serverPolicy.maxSecrets") && e.contains("100"),
            "{e}"
        );
        let e = allowed(&p, &many(2, 40_000)).expect_err("size");
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
        assert!(allowed(&wider, &many(1000, 500)).is_ok());
        let narrower = ServerPolicy {
            max_secrets: Some(1),
            ..Default::default()
        };
        assert!(allowed(&narrower, &many(2, 5)).is_err());
    }
}
