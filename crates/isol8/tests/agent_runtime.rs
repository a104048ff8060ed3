//! The `agent` runtime end to end (issue 15 item 3): the pi coding agent in `isol8:agent`,
//! on the `filtered` network, talking to a small OpenAI-compatible model server this test
//! starts on a loopback address of this machine (never the internet; see
//! `isol8_testkit::model_stub`), over HTTPS with a certificate made for the test and
//! trusted in the sandbox through the engine's `caBundle`. The stub answers pi's first chat-completions call with a tool call that writes
//! a file and the second with a final message; the test reads the file back through
//! `outputPaths`, checks pi's output, the provider key that reached the stub (from
//! `secrets`) and that the key is masked in the output. pi is pointed at the stub through
//! the request alone: a `models.json` in its config directory (`files`) and `agentFlags`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use base64::Engine as _;
use isol8::docker::EngineConfig;
use isol8::{EngineOptions, ExecutionRequest};
use isol8_protocol::{NetworkFilter, NetworkMode};
use isol8_testkit::model_stub::{stub_host, ModelStub};
use isol8_testkit::{assert_clean, engine_with, run};

/// What pi's write tool is asked to put in the file.
const FILE_TEXT: &str = "hello from the stub model\n";
/// Where.
const FILE_PATH: &str = "/sandbox/out/hello.txt";
/// The start of the final answer; the stub appends the API key it was sent.
const FINAL: &str = "Done: wrote the greeting. Key seen:";

/// An engine on the `filtered` network admitting only `host` (exempted exactly: it is a
/// loopback address), trusting `ca`, with the provider key as a secret.
async fn agent_engine(host: Ipv4Addr, key: &str, ca: Option<String>) -> isol8::DockerEngine {
    let escaped = host.to_string().replace('.', "\\.");
    engine_with(EngineConfig {
        options: EngineOptions {
            network: Some(NetworkMode::Filtered),
            network_filter: Some(NetworkFilter {
                whitelist: vec![format!("^{escaped}$")],
                ..Default::default()
            }),
            secrets: BTreeMap::from([("STUB_API_KEY".to_string(), key.to_string())]),
            timeout_ms: Some(180_000),
            ..Default::default()
        },
        ca_bundle: ca,
        exempt_ranges: vec![host.to_string()],
        ..Default::default()
    })
    .await
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn pi_writes_a_file_with_a_tool_call_of_a_stub_model_and_answers() {
    let host = stub_host(21);
    let stub = ModelStub::start(host, FILE_PATH, FILE_TEXT, FINAL);
    let key = format!("sk-stub-{}-do-not-print", std::process::id());
    let engine = agent_engine(host, &key, Some(stub.cert())).await;
    let req = ExecutionRequest {
        runtime: "agent".into(),
        code: Some("Write the greeting file, then say you are done.".into()),
        // Quotes are split like a shell's, and nothing runs: `'stub-model'` is one item.
        agent_flags: Some(
            "--provider stub --model 'stub-model' --no-extensions --no-skills --no-context-files --thinking off"
                .into(),
        ),
        files: BTreeMap::from([(
            "/sandbox/.pi/agent/models.json".to_string(),
            stub.models_json(),
        )]),
        output_paths: vec![FILE_PATH.into()],
        timeout_ms: Some(180_000),
        ..Default::default()
    };
    let r = run(&engine, req).await;
    let calls = stub.calls();
    assert_eq!(r.exit_code, 0, "{r:?}\ncalls: {calls:?}");
    // The file pi's write tool made, read back.
    let files = r.files.clone().expect("files");
    let written = base64::engine::general_purpose::STANDARD
        .decode(&files[FILE_PATH])
        .expect("base64");
    assert_eq!(String::from_utf8_lossy(&written), FILE_TEXT, "{r:?}");
    // pi printed the final message, with the key the stub echoed masked.
    assert!(r.stdout.contains(FINAL), "{r:?}");
    assert!(r.stdout.contains(&format!("{FINAL} ***")), "{r:?}");
    assert!(
        !r.stdout.contains(&key) && !r.stderr.contains(&key),
        "the provider key leaked: {r:?}"
    );
    // Two model calls: the tool call, then the answer after the tool's result. The key
    // came from `secrets` through pi's provider configuration.
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].0, format!("Bearer {key}"));
    assert_eq!(calls[0].1["model"], "stub-model");
    let second = calls[1].1["messages"].to_string();
    assert!(
        second.contains("call_stub_1"),
        "the tool result went back: {second}"
    );
    // The sandbox note was appended to pi's system prompt.
    assert!(
        calls[0].1["messages"].to_string().contains("isol8 sandbox"),
        "{:?}",
        calls[0].1
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn an_agent_sandbox_gets_the_agent_defaults_and_pi_is_installed() {
    let host = stub_host(22);
    let engine = agent_engine(host, "sk-unused-key", None).await;
    let req = ExecutionRequest {
        runtime: "agent".into(),
        cmd: Some("df -B1 --output=size /sandbox | tail -1; pi --version 2>&1; id -u".into()),
        ..Default::default()
    };
    let r = run(&engine, req).await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            (2u64 << 30).to_string().as_str(),
            pinned_pi_version().as_str(),
            "1000"
        ],
        "a 2 GiB /sandbox, the pinned pi, the sandbox user: {r:?}"
    );
    // The container the daemon made has the agent's process limit.
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let id = r.container_id.expect("container");
    let inspected = docker
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .expect("the pooled sandbox");
    let limit = inspected.host_config.and_then(|h| h.pids_limit);
    assert_eq!(limit, Some(200));
    assert_clean(&engine).await;
}

/// The pi version the committed lockfile pins (read from it: this crate does not depend
/// on the image builder).
fn pinned_pi_version() -> String {
    let lock: serde_json::Value =
        serde_json::from_str(include_str!("../../../images/agent/package-lock.json"))
            .expect("lockfile");
    lock["packages"]["node_modules/@mariozechner/pi-coding-agent"]["version"]
        .as_str()
        .expect("version")
        .to_string()
}
