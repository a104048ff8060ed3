//! `isol8 run --runtime agent --agent-flags … -e PROMPT` end to end: the pi coding agent
//! in `isol8:agent`, pointed at a stub OpenAI-compatible model server this test starts on
//! a loopback address (`isol8_testkit::model_stub`), configured only through the command
//! line (`--file` for pi's `models.json`, `--secret` for the key, `--net filtered
//! --allow`) and a config file that trusts the stub's certificate and exempts its address.

mod common;

use common::{isol8_in, text};
use isol8_testkit::model_stub::{stub_host, ModelStub};

#[isol8_testkit::test(docker)]
fn isol8_run_drives_pi_with_agent_flags_against_a_stub_model() {
    let stub = ModelStub::start(
        stub_host(31),
        "/sandbox/report.md",
        "# Report\n",
        "All done. Key:",
    );
    let dir = std::env::temp_dir().join(format!("isol8-cli-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = serde_json::json!({
        "caBundle": stub.cert(),
        "network": {"exemptRanges": [stub.host().to_string()]},
    });
    std::fs::write(dir.join("isol8.config.json"), config.to_string()).expect("config");
    std::fs::write(dir.join("models.json"), stub.models_json()).expect("models.json");
    let key = format!("sk-cli-{}-secret", std::process::id());
    let o = isol8_in(&dir)
        .args(["run", "--runtime", "agent", "--net", "filtered"])
        .args(["--allow", &stub.whitelist_entry()])
        .args(["--secret", &format!("STUB_API_KEY={key}")])
        .args(["--file", "/sandbox/.pi/agent/models.json=models.json"])
        .args([
            "--agent-flags",
            "--provider stub --model \"stub-model\" --no-extensions --no-skills",
        ])
        .args(["--output-path", "/sandbox/report.md", "--json"])
        .args(["-e", "Write the report."])
        .output()
        .expect("isol8 run");
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}\n{:?}", stub.calls());
    let result: serde_json::Value = serde_json::from_str(&out).expect("--json prints a result");
    assert!(
        result["stdout"]
            .as_str()
            .is_some_and(|s| s.contains("All done. Key: ***")),
        "{result}"
    );
    assert!(!out.contains(&key) && !err.contains(&key), "the key leaked");
    use base64::Engine as _;
    let report = base64::engine::general_purpose::STANDARD
        .decode(
            result["files"]["/sandbox/report.md"]
                .as_str()
                .expect("file"),
        )
        .expect("base64");
    assert_eq!(report, b"# Report\n");
    let calls = stub.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].0, format!("Bearer {key}"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `isol8 serve` as a real process: an agent request over HTTP is refused without the
/// network with the reason (400), and with a whitelist pi runs against the stub; then
/// `isol8 run --host` drives the same through the server.
#[isol8_testkit::test(docker)]
fn isol8_serve_runs_agent_requests_and_refuses_them_without_network() {
    use common::serve::{Server, KEY};
    use serde_json::json;
    let stub = ModelStub::start(
        stub_host(32),
        "/sandbox/served.txt",
        "served\n",
        "Served. Key:",
    );
    let dir = std::env::temp_dir().join(format!("isol8-serve-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = json!({
        "caBundle": stub.cert(),
        "network": {"exemptRanges": [stub.host().to_string()]},
    });
    std::fs::write(dir.join("isol8.config.json"), config.to_string()).expect("config");
    let s = Server::start_in(Some(&dir), &[]);
    let key = format!("sk-serve-{}-secret", std::process::id());
    let models = stub.models_json();
    let request = |code: &str| {
        json!({
            "runtime": "agent",
            "code": code,
            "agentFlags": "--provider stub --model stub-model --no-extensions",
            "files": {"/sandbox/.pi/agent/models.json": models},
            "outputPaths": ["/sandbox/served.txt"],
        })
    };
    let (status, v) = s.post("/execute", json!({"request": request("go")}));
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("agent runtime needs network access")),
        "{v}"
    );
    let filtered = json!({
        "network": "filtered",
        "networkFilter": {"whitelist": [stub.whitelist_entry()], "blacklist": []},
        "secrets": {"STUB_API_KEY": key},
    });
    let (status, v) = s.post(
        "/execute",
        json!({"request": request("Write the file."), "options": filtered}),
    );
    assert_eq!(status, 200, "{v}\n{:?}", stub.calls());
    assert_eq!(v["exitCode"], 0, "{v}");
    assert!(
        v["stdout"]
            .as_str()
            .is_some_and(|o| o.contains("Served. Key: ***")),
        "{v}"
    );
    assert!(!v.to_string().contains(&key), "the key leaked: {v}");
    use base64::Engine as _;
    let served = base64::engine::general_purpose::STANDARD
        .decode(v["files"]["/sandbox/served.txt"].as_str().expect("file"))
        .expect("base64");
    assert_eq!(served, b"served\n");
    assert_eq!(stub.calls()[0].0, format!("Bearer {key}"));
    // The CLI as the server's client: the server's network rules apply there.
    let o = isol8_in(&dir)
        .env("ISOL8_API_KEY", KEY)
        .args(["run", "--host", &s.base, "--runtime", "agent"])
        .args(["--agent-flags", "--model stub/stub-model", "-e", "go"])
        .output()
        .expect("isol8 run --host");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("agent runtime needs network access"),
        "{}",
        text(&o.stderr)
    );
    s.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
