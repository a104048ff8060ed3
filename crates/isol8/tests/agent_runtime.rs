//! The `agent` runtime end to end (issue 15 item 3): the pi coding agent in `isol8:agent`,
//! on the `filtered` network, talking to a small OpenAI-compatible model server this test
//! starts on a loopback address of this machine (never the internet): `agent_stub.py`,
//! over HTTPS with a certificate made for the test and trusted in the sandbox through the
//! engine's `caBundle` (the proxy tunnels only to port 443, and Node tunnels every proxied
//! request). The stub answers pi's first chat-completions call with a tool call that writes
//! a file and the second with a final message; the test reads the file back through
//! `outputPaths`, checks pi's output, the provider key that reached the stub (from
//! `secrets`) and that the key is masked in the output. pi is pointed at the stub through
//! the request alone: a `models.json` in its config directory (`files`) and `agentFlags`.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use isol8::docker::EngineConfig;
use isol8::{EngineOptions, ExecutionRequest};
use isol8_protocol::{NetworkFilter, NetworkMode};
use isol8_testkit::{assert_clean, engine_with, run};

/// What pi's write tool is asked to put in the file.
const FILE_TEXT: &str = "hello from the stub model\n";
/// Where.
const FILE_PATH: &str = "/sandbox/out/hello.txt";
/// The start of the final answer; the stub appends the API key it was sent.
const FINAL: &str = "Done: wrote the greeting. Key seen:";

/// The stub model server: its process (killed on drop), its directory and its call log.
struct Stub {
    child: Child,
    dir: PathBuf,
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Stub {
    /// Starts the stub on `host`:443 with a fresh self-signed certificate for that
    /// address; returns once it listens.
    fn start(host: Ipv4Addr) -> Stub {
        let dir =
            std::env::temp_dir().join(format!("isol8-agent-stub-{}-{host}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("stub dir");
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=isol8 agent stub"])
            .arg("-addext")
            .arg(format!("subjectAltName=IP:{host}"))
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl made no certificate");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agent_stub.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(host.to_string())
            .arg("443")
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .arg(dir.join("calls.jsonl"))
            .args([FILE_PATH, FILE_TEXT, FINAL])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the stub");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("the stub's first line");
        let stub = Stub { child, dir };
        assert_eq!(line.trim(), "ready", "the stub did not start");
        stub
    }

    /// The certificate, to be trusted in the sandbox.
    fn cert(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }

    /// The calls it received: `(authorization, body)`.
    fn calls(&self) -> Vec<(String, serde_json::Value)> {
        let text = std::fs::read_to_string(self.dir.join("calls.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a call line");
                (
                    v["authorization"].as_str().unwrap_or("").to_string(),
                    v["body"].clone(),
                )
            })
            .collect()
    }
}

/// pi's provider configuration naming the stub (an OpenAI-compatible server).
fn models_json(host: Ipv4Addr) -> String {
    serde_json::json!({
        "providers": {
            "stub": {
                "baseUrl": format!("https://{host}/v1"),
                "api": "openai-completions",
                "apiKey": "STUB_API_KEY",
                "compat": {"supportsDeveloperRole": false, "supportsReasoningEffort": false},
                "models": [{"id": "stub-model", "name": "Stub", "reasoning": false,
                            "contextWindow": 32000, "maxTokens": 1000}]
            }
        }
    })
    .to_string()
}

/// A loopback address of this test's own (127/8 is all loopback on Linux).
fn stub_host(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 79, (std::process::id() % 200) as u8 + 1, last)
}

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
    let stub = Stub::start(host);
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
            models_json(host),
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
