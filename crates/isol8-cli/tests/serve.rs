//! `isol8 serve` as a real process against the real daemon: every route over HTTP, a
//! load test from this (separate) process, and a clean SIGTERM shutdown.

mod common;

use common::docker_available;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const KEY: &str = "serve-test-key-0123456789abcdef";

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_isol8"))
            .args(["serve", "--port", &port.to_string()])
            .env("ISOL8_API_KEY", KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let first = lines.next().expect("server output").expect("line");
        assert!(first.contains("listening on"), "{first}");
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let resp = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn containers(&self) -> usize {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=isol8.pid={}", self.child.id()))
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout).lines().count()
    }

    /// SIGTERM, then checks a clean exit with nothing left behind.
    fn stop(mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        let status = self.child.wait().expect("wait");
        assert!(t.elapsed() < Duration::from_secs(30));
        assert_eq!(status.code(), Some(0), "server exit status");
        assert_eq!(self.containers(), 0, "containers left after shutdown");
    }
}

#[test]
fn every_route_over_http_then_a_clean_shutdown() {
    if !docker_available() {
        return;
    }
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
    assert!(
        text.trim_end()
            .ends_with(r#"data: {"type":"exit","data":"0"}"#),
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
    let (status, v) = s.post("/cleanup", json!({}));
    assert_eq!(status, 200, "{v}");
    assert!(v["containers"].is_number());
    s.stop();
}

#[test]
fn load_from_a_separate_process_with_no_failures_and_nothing_left() {
    if !docker_available() {
        return;
    }
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

#[test]
fn the_cli_runs_code_on_a_server_with_host_and_sessions() {
    if !docker_available() {
        return;
    }
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
