//! Host rules and network logs of the `filtered` mode against the real daemon and the
//! real registries: whitelists and blacklists, per-request rules that narrow the
//! engine's and never remove them, one log per execution, and the `host` mode.

mod common;

use common::{engine, fetch, filtered};
use isol8::docker::EngineConfig;
use isol8::{Engine, EngineOptions};
use isol8_protocol::NetworkMode;
use isol8_testkit::{assert_clean, code, engine_with, run};

#[isol8_testkit::test(docker, registries)]
async fn an_allowlisted_host_is_reachable_and_others_get_403_with_block_logs() {
    let engine = engine(filtered(&[r"^pypi\.org$"], &[])).await;
    let r = run(
        &engine,
        code(
            "python",
            &fetch(&[
                "https://pypi.org/simple/six/",
                "https://registry.npmjs.org/is-number",
                "http://example.com/",
            ]),
        ),
    )
    .await;
    assert!(
        r.stdout.contains("https://pypi.org/simple/six/ -> 200"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("https://registry.npmjs.org/is-number -> 403"),
        "{r:?}"
    );
    assert!(r.stdout.contains("http://example.com/ -> 403"), "{r:?}");
    let logs = r.network_logs.expect("networkLogs");
    let actions: Vec<(&str, &str)> = logs
        .iter()
        .map(|l| (l.host.as_str(), l.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("pypi.org", "ALLOW"),
            ("registry.npmjs.org", "BLOCK"),
            ("example.com", "BLOCK")
        ],
        "{logs:?}"
    );
    // The blacklist wins over the whitelist.
    let mut req = code("python", &fetch(&["https://pypi.org/simple/six/"]));
    req.timeout_ms = Some(60_000);
    let r = engine
        .execute_with(req, &filtered(&["pypi"], &[r"^pypi\.org$"]))
        .await
        .expect("run");
    assert!(r.stdout.contains("-> 403"), "{r:?}");
    assert_eq!(r.network_logs.expect("logs")[0].action, "BLOCK");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, registries)]
async fn per_request_host_rules_narrow_the_engines_and_never_remove_them() {
    // The operator admits the two registries only. `.invalid` names never resolve, so
    // nothing is dialled even if a rule were lost.
    let engine = engine(filtered(&[r"^pypi\.org$", r"^registry\.npmjs\.org$"], &[])).await;
    let urls = [
        "https://pypi.org/simple/six/",
        "https://registry.npmjs.org/is-number",
        "http://isol8-test.invalid/",
    ];
    let actions = |r: &isol8::ExecutionResult| -> Vec<String> {
        r.network_logs
            .iter()
            .flatten()
            .map(|l| format!("{} {}", l.host, l.action))
            .collect()
    };
    let cases = [
        // Empty objects used to replace the operator's rules (and with them, the whitelist).
        (
            r#"{"networkFilter": {}, "security": {}}"#,
            [
                "pypi.org ALLOW",
                "registry.npmjs.org ALLOW",
                "isol8-test.invalid BLOCK",
            ],
        ),
        // A client whitelist applies in addition: both must admit a host.
        (
            r#"{"networkFilter": {"whitelist": ["^registry\\.npmjs\\.org$", "invalid$"]}}"#,
            [
                "pypi.org BLOCK",
                "registry.npmjs.org ALLOW",
                "isol8-test.invalid BLOCK",
            ],
        ),
        // A client blacklist adds to the operator's.
        (
            r#"{"networkFilter": {"blacklist": ["^pypi\\.org$"]}}"#,
            [
                "pypi.org BLOCK",
                "registry.npmjs.org ALLOW",
                "isol8-test.invalid BLOCK",
            ],
        ),
    ];
    for (json, want) in cases {
        let mut options: EngineOptions = serde_json::from_str(json).expect("options");
        options.log_network = Some(true);
        let mut req = code("python", &fetch(&urls));
        req.timeout_ms = Some(60_000);
        let r = engine.execute_with(req, &options).await.expect("run");
        assert_eq!(actions(&r), want, "{json}: {r:?}");
    }
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker)]
async fn each_execution_gets_only_its_own_network_log() {
    for strategy in [
        isol8_protocol::PoolStrategy::Fast,
        isol8_protocol::PoolStrategy::Secure,
    ] {
        let engine = engine(EngineOptions {
            pool_strategy: Some(strategy),
            pool_size: Some(isol8_protocol::PoolSize::Total(1)),
            ..filtered(&[], &[])
        })
        .await;
        let first = run(&engine, code("python", &fetch(&["http://10.1.1.1/"]))).await;
        let second = run(&engine, code("python", &fetch(&["http://10.2.2.2/"]))).await;
        let third = run(&engine, code("python", "print('quiet')")).await;
        let hosts = |r: &isol8::ExecutionResult| -> Vec<String> {
            r.network_logs
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|l| l.host)
                .collect()
        };
        assert_eq!(hosts(&first), vec!["10.1.1.1"], "{strategy:?}");
        assert_eq!(hosts(&second), vec!["10.2.2.2"], "{strategy:?}");
        assert!(
            hosts(&third).is_empty(),
            "{strategy:?}: {:?}",
            third.network_logs
        );
        assert_clean(&engine).await;
    }
}

#[isol8_testkit::test(docker)]
async fn without_log_network_there_are_no_logs_and_host_mode_works() {
    let engine = engine(EngineOptions {
        network: Some(NetworkMode::Filtered),
        ..Default::default()
    })
    .await;
    let r = run(&engine, code("python", &fetch(&["http://10.0.0.1/"]))).await;
    assert!(r.stdout.contains("-> 403"), "{r:?}");
    assert_eq!(r.network_logs, None);
    assert_clean(&engine).await;

    // `host`: the host's network; a listener on the host's loopback is reachable.
    let engine = engine_with(EngineConfig {
        options: EngineOptions {
            network: Some(NetworkMode::Host),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let r = run(
        &engine,
        code(
            "python",
            &format!("import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5); print('reached')"),
        ),
    )
    .await;
    assert!(r.stdout.contains("reached"), "{r:?}");
    assert_clean(&engine).await;
}
