//! `isol8 serve` as a real process against the real daemon: every route over HTTP, a
//! load test from this (separate) process and a clean SIGTERM shutdown, and the CLI
//! itself as a client (`--host`, sessions).
//!
//! Database keys are in `serve_keys.rs`, shutdown with work in flight in
//! `serve_shutdown.rs`; the server process helper is `common/serve.rs`.

mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

use common::serve::{Server, KEY};
use serde_json::{json, Value};

#[isol8_testkit::test(docker)]
fn every_route_over_http_then_a_clean_shutdown() {
    let s = Server::start();
    let health: Value = reqwest::blocking::get(format!("{}/health", s.base))
        .expect("health")
        .json()
        .expect("json");
    assert_eq!(health["status"], "ok");

    let (status, r) = s.post(
        "/execute",
        json!({"request": {"runtime": "python", "code": "print(6*7)"}}),
    );
    assert_eq!((status, r["stdout"].as_str()), (200, Some("42\n")), "{r}");

    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/execute/stream", s.base))
        .bearer_auth(KEY)
        .json(&json!({"request": {"runtime": "bash", "code": "echo streamed"}}))
        .send()
        .expect("stream");
    let text = resp.text().expect("sse body");
    assert!(
        text.contains(r#"data: {"type":"stdout","data":"streamed\n","phase":"code"}"#),
        "{text}"
    );
    // The final exit event, with its additive exitReason (and resourceUsage when the
    // agent measured).
    let last: serde_json::Value = text
        .trim_end()
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("data: "))
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_else(|| panic!("a final event: {text}"));
    assert_eq!(
        (
            &last["type"],
            &last["data"],
            &last["phase"],
            &last["exitReason"]
        ),
        (
            &json!("exit"),
            &json!("0"),
            &json!("code"),
            &json!("exited")
        ),
        "{text}"
    );

    let (status, _) = s.post(
        "/execute",
        json!({"request": {"runtime": "bash", "code": "echo hi > /sandbox/f"}, "sessionId": "e2e"}),
    );
    assert_eq!(status, 200);
    let (status, v) = s.get("/file?sessionId=e2e&path=/sandbox/f");
    assert_eq!((status, v), (200, json!({"content": "aGkK"})));
    let (status, v) = s.post(
        "/file",
        json!({"sessionId": "e2e", "path": "/sandbox/g", "content": "aGVsbG8="}),
    );
    assert_eq!((status, v), (200, json!({"ok": true})));
    let (_, v) = s.get("/sessions");
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(1));
    let resp = reqwest::blocking::Client::new()
        .delete(format!("{}/session/e2e", s.base))
        .bearer_auth(KEY)
        .send()
        .expect("delete");
    assert_eq!(resp.status().as_u16(), 200);
    // Never the default here: it would remove isol8's images, as the reference does.
    let (status, v) = s.post("/cleanup", json!({"images": false}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["containers"]["removed"].is_number(), "{v}");
    assert!(v.get("images").is_none(), "{v}");
    s.stop();
}

#[isol8_testkit::test(docker)]
fn load_from_a_separate_process_with_no_failures_and_nothing_left() {
    let s = Server::start();
    let total = 500;
    let concurrency = 16;
    let failures = std::sync::atomic::AtomicUsize::new(0);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..concurrency {
            scope.spawn(|| {
                let client = reqwest::blocking::Client::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < total {
                    let ok = client
                        .post(format!("{}/execute", s.base))
                        .bearer_auth(KEY)
                        .json(&json!({"request": {"runtime": "bash", "code": "echo ok"}}))
                        .send()
                        .ok()
                        .filter(|r| r.status().is_success())
                        .and_then(|r| r.json::<Value>().ok())
                        .is_some_and(|v| v["stdout"] == "ok\n");
                    if !ok {
                        failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    eprintln!(
        "{total} executions at concurrency {concurrency} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(failures.into_inner(), 0);
    s.stop();
}

#[isol8_testkit::test(docker)]
fn the_cli_runs_code_on_a_server_with_host_and_sessions() {
    let s = Server::start();
    let isol8 = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_isol8"))
            .args(args)
            .env("ISOL8_API_KEY", KEY)
            .stdin(Stdio::null())
            .output()
            .expect("run")
    };
    let o = isol8(&["run", "--host", &s.base, "-r", "python", "-e", "print(6*7)"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "42\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = isol8(&[
        "run",
        "--host",
        &s.base,
        "-r",
        "bash",
        "-e",
        "echo out; echo err >&2; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    let o = isol8(&[
        "run", "--host", &s.base, "--json", "-r", "bash", "-e", "echo j",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["stdout"], "j\n");
    // A session keeps state between separate CLI invocations.
    isol8(&[
        "run",
        "--host",
        &s.base,
        "--session-id",
        "cli",
        "-r",
        "bash",
        "-e",
        "echo 5 > /sandbox/n",
    ]);
    let o = isol8(&[
        "run",
        "--host",
        &s.base,
        "--session-id",
        "cli",
        "-r",
        "bash",
        "-e",
        "cat /sandbox/n",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "5\n");
    // A wrong key is one clear error line.
    let o = Command::new(env!("CARGO_BIN_EXE_isol8"))
        .args([
            "run",
            "--host",
            &s.base,
            "--key",
            "wrong-key",
            "-r",
            "bash",
            "-e",
            "true",
        ])
        .env_remove("ISOL8_API_KEY")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Invalid API key"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    s.stop();
}
