//! Unit tests of the policy: caps, defaults lowered to caps, operator-only choices.
//! Over 600 lines on purpose: one table-driven test per `serverPolicy` key, all of them
//! against the same `allowed` check.

use super::*;
use isol8::settings::SandboxSettings;
use isol8_protocol::options::Mode;
use isol8_protocol::options::SecurityOptions;
use isol8_protocol::NetworkFilter;
use isol8_protocol::{EngineOptions, ExecutionRequest, NetworkMode, SeccompMode};

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
    let merged = SandboxSettings::resolve(&server.overlay(client)).map_err(|e| e.to_string())?;
    check(policy, r, client, &own, &merged).map_err(|e| e.to_string())
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
    assert!(matches!(e, PolicyConfigError::CappedInvalid(_)), "{e:?}");
    assert!(e.to_string().contains("memoryLimit"), "{e}");
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
    let parsed =
        isol8::config::Config::from_json_str(r#"{"serverPolicy": {"allowWritableRootFs": true}}"#)
            .expect("the key parses");
    assert_eq!(parsed.server_policy.allow_writable_root_fs, Some(true));
}

#[test]
fn a_kept_container_needs_the_operators_consent() {
    let keep = EngineOptions {
        persist: Some(true),
        ..Default::default()
    };
    let e = allowed(&ServerPolicy::default(), &keep).expect_err("refused");
    assert!(e.contains("serverPolicy.allowPersist"), "{e}");
    let parsed =
        isol8::config::Config::from_json_str(r#"{"serverPolicy": {"allowPersist": true}}"#)
            .expect("the key parses");
    assert!(allowed(&parsed.server_policy, &keep).is_ok());
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
        let e = validate(&p).expect_err("invalid").to_string();
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

#[test]
fn refusals_are_typed_by_what_was_refused() {
    let own = SandboxSettings::resolve(&EngineOptions::default()).expect("valid");
    let p = ServerPolicy::default();
    let typed = |client: EngineOptions| {
        let merged = SandboxSettings::resolve(&EngineOptions::default().overlay(&client))
            .expect("valid options");
        check(&p, &req(), &client, &own, &merged).expect_err("refused")
    };
    let e = typed(EngineOptions {
        network: Some(NetworkMode::Host),
        ..Default::default()
    });
    assert!(matches!(e, PolicyError::HostNetwork { hint: "" }), "{e:?}");
    let e = typed(EngineOptions {
        pids_limit: Some(1_000_000),
        ..Default::default()
    });
    assert!(
        matches!(e, PolicyError::Pids { asked: 1_000_000, cap } if cap == own.pids_limit),
        "{e:?}"
    );
    let e = typed(EngineOptions {
        mode: Some(Mode::Persistent),
        ..Default::default()
    });
    assert!(matches!(e, PolicyError::Mode), "{e:?}");
    let e = typed(EngineOptions {
        memory_limit: Some("64g".into()),
        ..Default::default()
    });
    assert!(
        matches!(&e, PolicyError::Size { field: "memoryLimit", asked, .. } if asked == "64g"),
        "{e:?}"
    );
}

/// Every refusal a setting could lift names that `serverPolicy` key, so an operator
/// (or a user of the reference server, which has no policy) knows what to change.
#[test]
fn each_refusal_names_the_server_policy_key_that_allows_it() {
    let only_none = ServerPolicy {
        allowed_networks: Some(vec![NetworkMode::None]),
        ..Default::default()
    };
    let cases: Vec<(ServerPolicy, EngineOptions, &str)> = vec![
        (
            ServerPolicy::default(),
            EngineOptions {
                timeout_ms: Some(3_600_000),
                ..Default::default()
            },
            "serverPolicy.maxTimeoutMs",
        ),
        (
            ServerPolicy::default(),
            EngineOptions {
                memory_limit: Some("16g".into()),
                ..Default::default()
            },
            "serverPolicy.maxMemoryLimit",
        ),
        (
            ServerPolicy::default(),
            EngineOptions {
                sandbox_size: Some("16g".into()),
                ..Default::default()
            },
            "serverPolicy.maxSandboxSize",
        ),
        (
            ServerPolicy::default(),
            EngineOptions {
                tmp_size: Some("16g".into()),
                ..Default::default()
            },
            "serverPolicy.maxTmpSize",
        ),
        (
            ServerPolicy::default(),
            EngineOptions {
                cpu_limit: Some(8.0),
                ..Default::default()
            },
            "serverPolicy.maxCpuLimit",
        ),
        (
            ServerPolicy::default(),
            EngineOptions {
                pids_limit: Some(10_000),
                ..Default::default()
            },
            "serverPolicy.maxPidsLimit",
        ),
        (
            ServerPolicy::default(),
            EngineOptions {
                max_output_size: Some(1 << 30),
                ..Default::default()
            },
            "serverPolicy.maxOutputSize",
        ),
        (
            ServerPolicy::default(),
            EngineOptions {
                network: Some(NetworkMode::Host),
                ..Default::default()
            },
            "serverPolicy.allowHostNetwork",
        ),
        (
            only_none,
            EngineOptions {
                network: Some(NetworkMode::Filtered),
                ..Default::default()
            },
            "serverPolicy.allowedNetworks",
        ),
        (
            ServerPolicy::default(),
            EngineOptions {
                image: Some("alpine".into()),
                ..Default::default()
            },
            "serverPolicy.allowCustomImage",
        ),
        (
            ServerPolicy::default(),
            EngineOptions {
                security: Some(SecurityOptions {
                    seccomp: Some(SeccompMode::Unconfined),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "serverPolicy.allowedSeccomp",
        ),
        (
            ServerPolicy::default(),
            EngineOptions {
                readonly_root_fs: Some(false),
                ..Default::default()
            },
            "serverPolicy.allowWritableRootFs",
        ),
        (
            ServerPolicy::default(),
            EngineOptions {
                persist: Some(true),
                ..Default::default()
            },
            "serverPolicy.allowPersist",
        ),
    ];
    for (policy, client, key) in cases {
        let e = allowed(&policy, &client).expect_err(key);
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[test]
fn an_agent_request_is_checked_with_the_agent_defaults() {
    let agent = ExecutionRequest {
        runtime: "agent".into(),
        code: Some("fix it".into()),
        ..Default::default()
    };
    let server = EngineOptions::default();
    let none = EngineOptions::default();
    // No caps of its own: the server's settings for the agent (200, 2g) are the caps.
    assert_eq!(
        check_over(&ServerPolicy::default(), &server, &agent, &none),
        Ok(())
    );
    // A client asking more than the agent's defaults is refused as before.
    let more = EngineOptions {
        pids_limit: Some(201),
        ..Default::default()
    };
    let e = check_over(&ServerPolicy::default(), &server, &agent, &more).expect_err("201");
    assert!(
        e.contains("pidsLimit 201 exceeds the server's limit of 200"),
        "{e}"
    );
    // Caps below the agent's defaults refuse what it would get unless the client asks less.
    let tight = ServerPolicy {
        max_pids_limit: Some(100),
        max_sandbox_size: Some("1g".into()),
        ..Default::default()
    };
    let e = check_over(&tight, &server, &agent, &none).expect_err("2g > 1g");
    assert!(
        e.contains("sandboxSize 2g exceeds the server's limit of 1g"),
        "{e}"
    );
    let small = EngineOptions {
        sandbox_size: Some("1g".into()),
        ..Default::default()
    };
    let e = check_over(&tight, &server, &agent, &small).expect_err("200 > 100");
    assert!(
        e.contains("pidsLimit 200 exceeds the server's limit of 100"),
        "{e}"
    );
    let within = EngineOptions {
        pids_limit: Some(100),
        sandbox_size: Some("1g".into()),
        ..Default::default()
    };
    assert_eq!(check_over(&tight, &server, &agent, &within), Ok(()));
    // Other runtimes keep the general defaults under the same caps.
    assert_eq!(check_over(&tight, &server, &req(), &none), Ok(()));
}
