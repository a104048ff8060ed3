//! Shared helpers for integration tests against a real Docker daemon.
//!
//! Without a daemon (or without the images) a test skips, saying so on stderr — except in
//! CI (`CI` set), where Docker is always provisioned and a missing daemon is a failure.

#![allow(dead_code)]

use bollard::query_parameters::ListContainersOptionsBuilder;
use isol8::docker::EngineConfig;
use isol8::{DockerEngine, EngineOptions, ExecutionRequest, ExecutionResult};

/// True when running under CI, where skipping is not allowed.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// An engine on the local daemon, or `None` (with a message) when Docker is unavailable
/// outside CI.
pub async fn engine_with(config: EngineConfig) -> Option<DockerEngine> {
    match DockerEngine::connect_with(config).await {
        Ok(e) => match e.docker().inspect_image("isol8:bash").await {
            Ok(_) => Some(e),
            Err(err) => {
                let msg = format!("isol8 images are not built ({err}); run `isol8 setup`");
                if in_ci() {
                    panic!("{msg}");
                }
                eprintln!("SKIPPED: {msg}");
                None
            }
        },
        Err(e) => {
            if in_ci() {
                panic!("Docker is required in CI: {e}");
            }
            eprintln!("SKIPPED: no Docker daemon: {e}");
            None
        }
    }
}

/// An engine with these options.
pub async fn engine(options: EngineOptions) -> Option<DockerEngine> {
    engine_with(EngineConfig {
        options,
        ..Default::default()
    })
    .await
}

/// A request running `code` in `runtime`.
pub fn code(runtime: &str, code: &str) -> ExecutionRequest {
    ExecutionRequest {
        runtime: runtime.into(),
        code: Some(code.into()),
        ..Default::default()
    }
}

/// Runs a request and panics with context when the engine fails.
pub async fn run(engine: &DockerEngine, req: ExecutionRequest) -> ExecutionResult {
    use isol8::Engine;
    match engine.execute(req.clone()).await {
        Ok(r) => r,
        Err(e) => panic!("execution of {req:?} failed: {e}"),
    }
}

/// Containers on the daemon still labelled as owned by this engine.
pub async fn leftovers(engine: &DockerEngine) -> Vec<String> {
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{}={}", isol8::LABEL_OWNER, engine.owner())],
    )]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    engine
        .docker()
        .list_containers(Some(opts))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// Stops the engine and asserts it left no container behind.
pub async fn assert_clean(engine: &DockerEngine) {
    use isol8::Engine;
    engine.stop().await.expect("stop");
    let left = leftovers(engine).await;
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

/// The package-registry hosts the tests reach (through the egress proxy or the
/// `codeUrl` fetcher).
pub const REGISTRY_HOSTS: [&str; 4] = [
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "jsr.io",
];

/// The `network.exemptRanges` these tests need: every address the registry hosts
/// resolve to *right now* that the egress address policy would refuse (on some machines
/// the registries are reached through a gateway inside a documentation range). Looked
/// up at test time, never hard-coded; empty where the registries have public addresses.
pub fn registry_exemptions() -> Vec<String> {
    use std::net::ToSocketAddrs;
    let policy = isol8::egress::AddressPolicy::default();
    let mut out: Vec<String> = REGISTRY_HOSTS
        .iter()
        .filter_map(|h| (*h, 443).to_socket_addrs().ok())
        .flatten()
        .map(|a| a.ip())
        .filter(|ip| policy.refusal(*ip).is_some())
        .map(|ip| ip.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}
