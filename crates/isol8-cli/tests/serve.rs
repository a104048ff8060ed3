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
        Server::start_with(&[])
    }

    /// Starts `isol8 serve` with extra flags.
    fn start_with(extra: &[&str]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_isol8"))
            .args(["serve", "--port", &port.to_string()])
            .args(extra)
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

/// A request with `key` to the server; returns status and JSON body.
fn call(s: &Server, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let url = format!("{}{path}", s.base);
    let mut req = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        "DELETE" => client.delete(url),
        _ => unreachable!("{method}"),
    }
    .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn session_ids(v: &Value) -> Vec<String> {
    v["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn database_keys_tenants_and_login_against_a_real_server() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keys.db");
    let s = Server::start_with(&["--auth-db", db.to_str().expect("utf-8")]);

    // The master key creates keys for two tenants.
    let (status, a) = call(
        &s,
        "POST",
        "/auth/keys",
        KEY,
        Some(json!({"name": "a", "tenant": "alpha"})),
    );
    assert_eq!(status, 201, "{a}");
    let (status, b) = call(
        &s,
        "POST",
        "/auth/keys",
        KEY,
        Some(json!({"name": "b", "tenant": "beta"})),
    );
    assert_eq!(status, 201, "{b}");
    let (key_a, id_a) = (
        a["key"].as_str().expect("key"),
        a["id"].as_str().expect("id"),
    );
    let key_b = b["key"].as_str().expect("key");
    assert!(key_a.starts_with("isol8_") && key_a.len() == 70, "{key_a}");
    assert!(db.exists(), "the SQLite file was not created");

    // Key A runs code, ephemerally and in a session.
    let (status, r) = call(
        &s,
        "POST",
        "/execute",
        key_a,
        Some(json!({"request": {"runtime": "python", "code": "print(6*7)"}})),
    );
    assert_eq!((status, r["stdout"].as_str()), (200, Some("42\n")), "{r}");
    let (status, r) = call(
        &s,
        "POST",
        "/execute",
        key_a,
        Some(
            json!({"request": {"runtime": "bash", "code": "echo a > /sandbox/who"}, "sessionId": "sa"}),
        ),
    );
    assert_eq!(status, 200, "{r}");

    // Session ids are per tenant: B sees none of A's, and its own "sa" is another
    // session in another container, which A does not see either.
    let (_, v) = call(&s, "GET", "/sessions", key_a, None);
    assert_eq!(session_ids(&v), vec!["sa"]);
    let (_, v) = call(&s, "GET", "/sessions", key_b, None);
    assert!(session_ids(&v).is_empty(), "{v}");
    let (status, _) = call(
        &s,
        "GET",
        "/file?sessionId=sa&path=/sandbox/who",
        key_b,
        None,
    );
    assert_eq!(status, 404, "B has no session `sa` yet, whatever A has");
    let (status, v) = call(
        &s,
        "POST",
        "/execute",
        key_b,
        Some(
            json!({"request": {"runtime": "bash", "code": "cat /sandbox/who || echo b > /sandbox/who"}, "sessionId": "sa"}),
        ),
    );
    assert_eq!((status, v["stdout"].as_str()), (200, Some("")), "{v}");
    assert!(
        v["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("No such file")),
        "B must not see A's file: {v}"
    );
    let (_, v) = call(&s, "GET", "/sessions", key_b, None);
    assert_eq!(session_ids(&v), vec!["sa"]);
    for (key, content) in [(key_a, "YQo="), (key_b, "Ygo=")] {
        let (status, v) = call(&s, "GET", "/file?sessionId=sa&path=/sandbox/who", key, None);
        assert_eq!((status, v), (200, json!({"content": content})));
    }
    let (status, _) = call(&s, "DELETE", "/session/sa", key_b, None);
    assert_eq!(status, 200);

    // Database keys may not manage keys or clean up.
    for (method, path) in [
        ("GET", "/auth/keys"),
        ("POST", "/cleanup"),
        ("POST", "/auth/login"),
    ] {
        let (status, _) = call(&s, method, path, key_b, Some(json!({})));
        assert_eq!(status, 403, "{method} {path}");
    }
    let (status, list) = call(&s, "GET", "/auth/keys", KEY, None);
    assert_eq!(status, 200);
    assert!(
        !list.to_string().contains(key_a),
        "the key list leaks a key"
    );

    // Revoked: 403 from then on.
    let (status, _) = call(&s, "DELETE", &format!("/auth/keys/{id_a}"), KEY, None);
    assert_eq!(status, 200);
    let (status, v) = call(&s, "GET", "/sessions", key_a, None);
    assert_eq!((status, v), (403, json!({"error": "Invalid API key"})));
    let (status, _) = call(&s, "DELETE", "/session/sa", KEY, None);
    assert_eq!(status, 200);

    // The CLI: login stores an issued key (0600), run/session use it, logout revokes it.
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("home");
    let cli = |args: &[&str], master: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_isol8"));
        c.args(args)
            .env("HOME", &home)
            .env_remove("ISOL8_API_KEY")
            .stdin(Stdio::null());
        if master {
            c.env("ISOL8_API_KEY", KEY);
        }
        let o = c.output().expect("run isol8");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, _, err) = cli(
        &["run", "--host", &s.base, "-r", "bash", "-e", "true"],
        false,
    );
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("error: ") && err.contains("isol8 login"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let (code, out, err) = cli(
        &["login", "--host", &format!("{}/", s.base), "--name", "e2e"],
        true,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("logged in"), "{out}");
    let creds_path = home.join(".isol8").join("credentials.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&creds_path)
        .expect("credentials")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let creds: Value =
        serde_json::from_slice(&std::fs::read(&creds_path).expect("read")).expect("json");
    let login_key = creds["key"].as_str().expect("key").to_string();
    assert!(login_key.starts_with("isol8_"), "{creds}");
    assert_ne!(login_key, KEY);
    assert_eq!(creds["host"], s.base.as_str());

    // No key on the command line and none in the environment: the stored login is used.
    let (code, out, err) = cli(
        &[
            "run",
            "--host",
            &s.base,
            "--session-id",
            "cli-s",
            "-r",
            "bash",
            "-e",
            "echo via-login",
        ],
        false,
    );
    assert_eq!((code, out.as_str()), (Some(0), "via-login\n"), "{err}");
    let (code, out, err) = cli(&["session", "list"], false);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("cli-s"), "{out}");
    let (code, out, _) = cli(&["session", "list", "--json"], false);
    assert_eq!(code, Some(0));
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed[0]["id"], "cli-s");
    // The login key acts as the master's tenant: the master sees the session too.
    let (_, v) = call(&s, "GET", "/sessions", KEY, None);
    assert_eq!(session_ids(&v), vec!["cli-s"]);
    let (code, _, err) = cli(&["session", "stop", "cli-s"], false);
    assert_eq!(code, Some(0), "{err}");
    let (_, out, _) = cli(&["session", "list", "--json"], false);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json"),
        json!([])
    );

    let (code, out, err) = cli(&["logout"], false);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("revoked"), "{out}");
    assert!(!creds_path.exists(), "credentials left after logout");
    let (status, _) = call(&s, "GET", "/sessions", &login_key, None);
    assert_eq!(status, 403, "the login key still works after logout");
    let (code, _, err) = cli(&["logout"], false);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: not logged in"), "{err}");
    let (code, _, err) = cli(&["session", "list"], false);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: "), "{err}");
    s.stop();
}
