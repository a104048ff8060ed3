//! `isol8 serve` as a real process against the real daemon: every route over HTTP, a
//! load test from this (separate) process, a clean SIGTERM shutdown, and SIGTERM with
//! executions running and queued (503 at once, a grace, then killed) and a second
//! signal.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const KEY: &str = "serve-test-key-0123456789abcdef";

struct Server {
    child: Child,
    base: String,
    /// The server's stderr, line by line (after the first).
    log: std::sync::mpsc::Receiver<String>,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts `isol8 serve` with extra flags.
    fn start_with(extra: &[&str]) -> Server {
        Server::start_in(None, extra)
    }

    /// Starts `isol8 serve` with extra flags in `dir` (where its `isol8.config.json`
    /// is looked up).
    fn start_in(dir: Option<&std::path::Path>, extra: &[&str]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_isol8"));
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd
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
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Waits (at most `within`) for a line of the server's stderr containing `needle`.
    fn wait_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no `{needle}` in the server's log: {e}"),
            }
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the process to exit, failing after `bound`; returns its exit code.
    fn wait_exit(&mut self, bound: Duration) -> Option<i32> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the server did not exit within {bound:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
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
        containers_of(self.child.id())
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

#[isol8_testkit::test(docker)]
fn database_keys_tenants_and_login_against_a_real_server() {
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

/// A streamed execution read on a thread of its own: `started` is sent once the
/// program's output contains `started`; the thread returns every SSE event.
fn stream_on_thread(
    base: &str,
    code: &str,
    started: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<Vec<Value>> {
    let url = format!("{base}/execute/stream");
    let body = json!({"request": {"runtime": "bash", "code": code, "timeoutMs": 30000}});
    std::thread::spawn(move || {
        let resp = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(180))
            .build()
            .expect("client")
            .post(url)
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .expect("stream");
        assert_eq!(resp.status().as_u16(), 200);
        let mut events = Vec::new();
        let mut told = false;
        for line in BufReader::new(resp).lines().map_while(Result::ok) {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let ev: Value = serde_json::from_str(data).expect("event JSON");
            if !told && ev["data"].as_str().is_some_and(|d| d.contains("started")) {
                told = true;
                let _ = started.send(());
            }
            events.push(ev);
        }
        events
    })
}

/// Asserts a stream ended because its sandbox was killed: a final `sandbox lost: …`
/// error and no exit event.
fn assert_lost(events: &[Value]) {
    let last = events.last().expect("events");
    assert_eq!(last["type"], "error", "{events:?}");
    assert!(
        last["data"]
            .as_str()
            .is_some_and(|d| d.starts_with("sandbox lost: ")),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e["type"] == "exit"), "{events:?}");
}

#[isol8_testkit::test(docker)]
fn sigterm_refuses_the_queue_at_once_gives_running_executions_a_grace_then_kills_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let grace_ms = 6000;
    std::fs::write(
        dir.path().join("isol8.config.json"),
        // The executions ask for 600 s: above the server's own 30 s, so the operator allows it.
        json!({"maxConcurrent": 3, "shutdownGraceMs": grace_ms, "serverPolicy": {"maxTimeoutMs": 600_000}}).to_string(),
    )
    .expect("config");
    let mut s = Server::start_in(Some(dir.path()), &[]);
    // Three executions hold every slot: two far longer than the grace, one shorter.
    let (tx, started) = std::sync::mpsc::channel();
    let long: Vec<_> = (0..2)
        .map(|i| stream_on_thread(&s.base, &format!("echo started; sleep 30{i}"), tx.clone()))
        .collect();
    let short = stream_on_thread(&s.base, "echo started; sleep 4; echo done", tx);
    for _ in 0..3 {
        started
            .recv_timeout(Duration::from_secs(60))
            .expect("every execution starts");
    }
    // Two more queue for a slot.
    let queued: Vec<_> = (0..2)
        .map(|_| {
            let url = format!("{}/execute", s.base);
            std::thread::spawn(move || {
                let resp = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .expect("client")
                    .post(url)
                    .bearer_auth(KEY)
                    .json(&json!({"request": {"runtime": "bash", "code": "echo queued", "timeoutMs": 30000}}))
                    .send()
                    .expect("queued request");
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                (resp.status().as_u16(), retry, resp.json::<Value>().unwrap_or(Value::Null))
            })
        })
        .collect();
    // Let them reach the server's queue.
    std::thread::sleep(Duration::from_millis(1500));
    let pid = s.child.id();
    s.signal(libc::SIGTERM);
    let began = Instant::now();

    // The queued requests are refused right away, while the long runs still run.
    for q in queued {
        let (status, retry, body) = q.join().expect("queued thread");
        assert_eq!(status, 503, "{body}");
        assert!(
            retry
                .and_then(|r| r.parse::<u32>().ok())
                .is_some_and(|r| r > 0),
            "Retry-After: {body}"
        );
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("shutting down")),
            "{body}"
        );
    }
    assert!(
        long.iter().all(|t| !t.is_finished()),
        "the queue was answered only after the running executions ended"
    );
    // No new work is accepted.
    let late = reqwest::blocking::Client::new()
        .get(format!("{}/health", s.base))
        .timeout(Duration::from_secs(10))
        .send();
    assert!(
        late.map_or(true, |r| r.status().as_u16() == 503),
        "a request after SIGTERM was served"
    );

    // The short run finishes within the grace; the long ones are killed after it.
    let events = short.join().expect("short stream");
    assert!(events.iter().any(|e| e["data"] == "done\n"), "{events:?}");
    assert_eq!(events.last(), Some(&json!({"type": "exit", "data": "0"})));
    for l in long {
        assert_lost(&l.join().expect("long stream"));
    }
    let code = s.wait_exit(Duration::from_millis(grace_ms) + Duration::from_secs(30));
    assert_eq!(code, Some(0), "server exit status");
    eprintln!(
        "exited {:.1} s after SIGTERM (grace {} s)",
        began.elapsed().as_secs_f64(),
        grace_ms / 1000
    );
    assert_eq!(
        containers_of(pid),
        0,
        "containers of the server left after shutdown"
    );
}

#[isol8_testkit::test(docker)]
fn a_second_signal_skips_the_grace_and_still_removes_every_container() {
    // A grace far longer than the test's bound: only the second signal can end it. The
    // execution asks for 600 s, which the operator allows.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("isol8.config.json"),
        json!({"serverPolicy": {"maxTimeoutMs": 600_000}}).to_string(),
    )
    .expect("config");
    let mut s = Server::start_in(Some(dir.path()), &["--shutdown-grace-ms", "3600000"]);
    let (tx, started) = std::sync::mpsc::channel();
    let long = stream_on_thread(&s.base, "echo started; sleep 600", tx);
    started
        .recv_timeout(Duration::from_secs(60))
        .expect("the execution starts");
    let pid = s.child.id();
    s.signal(libc::SIGTERM);
    s.wait_log("shutting down", Duration::from_secs(30));
    s.signal(libc::SIGINT);
    let code = s.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0), "server exit status");
    assert_eq!(
        containers_of(pid),
        0,
        "containers left after the second signal"
    );
    assert_lost(&long.join().expect("stream"));
}

/// How many isol8 containers the server process `pid` has on the daemon.
fn containers_of(pid: u32) -> usize {
    isol8_testkit::containers_of_pid(pid).len()
}
