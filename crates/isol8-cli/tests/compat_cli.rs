//! The CLI as the reference's (Illusion47586/isol8 v0.20) scripts call it: its flags,
//! default runtimes, stored credentials and the output scripts read, run through the
//! real `isol8` binary.
//!
//! Most tests need no Docker: `run --host` against a recording HTTP server on loopback
//! (below) shows exactly what the CLI sends and how it prints what it gets back. The
//! tests marked `docker` run against the real engine and `isol8 serve`.
//!
//! Over 600 lines on purpose: one checklist of the reference CLI's behaviours, read
//! side by side with docs/COMPATIBILITY.md; the recording server is its only helper.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{isol8_in, text};
use serde_json::{json, Value};

/// The `isol8` binary in `dir` (its home too), without RUST_LOG (so stderr holds only
/// what the flags ask for).
fn cli(dir: &std::path::Path) -> Command {
    let mut cmd = isol8_in(dir);
    cmd.env_remove("RUST_LOG");
    cmd
}

/// A long-enough master key for `isol8 serve`.
const MASTER: &str = "compat-cli-master-key-0123456789";

/// One request the recording server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// A loopback HTTP server that records every request and answers each with `reply`.
struct Recorder {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    fn start(reply: impl Fn(&Seen) -> (u16, Value) + Send + Sync + 'static) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(req) = read_request(&mut stream) else {
                    continue;
                };
                let (status, body) = reply(&req);
                log.lock().expect("lock").push(req);
                let body = body.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Recorder { base, seen }
    }

    /// The recorded requests so far.
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The last `POST /execute` body.
    fn last_execute(&self) -> Seen {
        self.seen()
            .into_iter()
            .rev()
            .find(|s| s.method == "POST" && s.path == "/execute")
            .expect("a POST /execute")
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Seen> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut length = 0usize;
    let mut authorization = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "authorization" => authorization = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        path,
        authorization,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

/// A result as `POST /execute` answers it.
fn result(stdout: &str, stderr: &str, truncated: bool) -> Value {
    json!({
        "stdout": stdout,
        "stderr": stderr,
        "exitCode": 0,
        "durationMs": 1,
        "truncated": truncated,
        "executionId": "00000000-0000-0000-0000-000000000000",
        "runtime": "python",
        "timestamp": "2025-01-01T00:00:00.000Z"
    })
}

/// A recorder answering every execution with `print`'s output.
fn executor() -> Recorder {
    Recorder::start(|_| (200, result("ok\n", "", false)))
}

/// Asserts exit 1 and one stderr line, `error: …`, containing every `want`.
fn one_error_line(o: &Output, want: &[&str]) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    for w in want {
        assert!(err.contains(w), "`{w}` missing: {err}");
    }
}

#[test]
fn version_is_the_bare_number_and_no_arguments_print_the_help() {
    let dir = tempfile::tempdir().expect("tempdir");
    for flag in ["--version", "-V"] {
        let o = cli(dir.path()).arg(flag).output().expect("run");
        assert!(o.status.success());
        assert_eq!(
            text(&o.stdout),
            format!("{}\n", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
    }
    let o = cli(dir.path()).output().expect("run");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for want in [
        "isol8",
        "Commands:",
        "run",
        "serve",
        "setup",
        "cleanup",
        "list-custom",
    ] {
        assert!(out.contains(want), "`{want}` missing from: {out}");
    }
}

#[test]
fn help_lists_the_reference_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let help = |args: &[&str]| {
        let o = cli(dir.path()).args(args).output().expect("run");
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
    };
    let run = help(&["run", "--help"]);
    for flag in [
        "--pids-limit",
        "--allow-insecure-code-url",
        "--github",
        "--gist",
        "--setup",
        "--debug",
        "--no-stream",
    ] {
        assert!(run.contains(flag), "run: {flag}");
    }
    let serve = help(&["serve", "--help"]);
    for flag in ["-p, --port", "-k, --key", "--update", "--debug"] {
        assert!(serve.contains(flag), "serve: {flag}");
    }
    assert!(help(&["login", "--help"]).contains("--ttl"));
}

#[test]
fn inline_code_and_piped_code_default_to_python_and_cmd_to_bash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = executor();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = cli(dir.path());
        cmd.args(["run", "--host", &r.base, "--key", "k", "--no-stream"])
            .args(args);
        let o = match stdin {
            None => cmd.output().expect("run"),
            Some(code) => {
                let mut child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn");
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(code.as_bytes())
                    .expect("write");
                child.wait_with_output().expect("wait")
            }
        };
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        assert_eq!(text(&o.stdout), "ok\n");
        r.last_execute().body["request"].clone()
    };
    let req = run(&["-e", "print(42)"], None);
    assert_eq!(
        (req["runtime"].as_str(), req["code"].as_str()),
        (Some("python"), Some("print(42)"))
    );
    let req = run(&[], Some("print('piped')"));
    assert_eq!(
        (req["runtime"].as_str(), req["code"].as_str()),
        (Some("python"), Some("print('piped')"))
    );
    let req = run(&["--cmd", "echo hi"], None);
    assert_eq!(
        (req["runtime"].as_str(), req["cmd"].as_str()),
        (Some("bash"), Some("echo hi"))
    );
    // An explicit runtime still wins, and a file's extension still decides.
    let req = run(&["-r", "node", "-e", "console.log(1)"], None);
    assert_eq!(req["runtime"], "node");
    let req = run(&["-r", "python", "--cmd", "python3 -V"], None);
    assert_eq!(req["runtime"], "python");
    std::fs::write(dir.path().join("job.js"), "console.log(1)").expect("write");
    let req = run(&["job.js"], None);
    assert_eq!(req["runtime"], "node");
}

#[test]
fn reference_flag_names_reach_the_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = executor();
    let run = |args: &[&str]| {
        let o = cli(dir.path())
            .args(["run", "--host", &r.base, "--key", "k", "--no-stream"])
            .args(args)
            .output()
            .expect("run");
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        r.last_execute()
    };
    // --pids-limit, and our --pids as an alias.
    let seen = run(&["--pids-limit", "32", "-e", "1"]);
    assert_eq!(seen.body["options"]["pidsLimit"], 32);
    assert_eq!(seen.authorization.as_deref(), Some("Bearer k"));
    let seen = run(&["--pids", "16", "-e", "1"]);
    assert_eq!(seen.body["options"]["pidsLimit"], 16);

    // A repeatable --setup: an existing file's contents, else the text itself.
    let setup = dir.path().join("setup.sh");
    std::fs::write(&setup, "echo from-file > /sandbox/a").expect("write");
    let seen = run(&[
        "--setup",
        setup.to_str().expect("utf-8"),
        "--setup",
        "echo inline > /sandbox/b",
        "-e",
        "1",
    ]);
    assert_eq!(
        seen.body["request"]["setupScript"],
        "echo from-file > /sandbox/a\necho inline > /sandbox/b"
    );

    // --github / --gist expand to raw URLs (sent to the server, which fetches them
    // under its remoteCode policy; nothing is fetched here), runtime from the path.
    let seen = run(&["--github", "octo/tools/main/jobs/run.py", "--hash", "ab12"]);
    let req = &seen.body["request"];
    assert_eq!(
        req["codeUrl"],
        "https://raw.githubusercontent.com/octo/tools/main/jobs/run.py"
    );
    assert_eq!(
        (req["runtime"].as_str(), req["codeHash"].as_str()),
        (Some("python"), Some("ab12"))
    );
    assert!(req.get("code").is_none(), "{req}");
    let seen = run(&["--gist", "0123abcd/job.js", "--allow-insecure-code-url"]);
    let req = &seen.body["request"];
    assert_eq!(
        req["codeUrl"],
        "https://gist.githubusercontent.com/0123abcd/raw/job.js"
    );
    assert_eq!(req["runtime"], "node");
    assert_eq!(req["allowInsecureCodeUrl"], true);
    // Our older name of the flag still works.
    let seen = run(&["--url", "http://example.com/x.sh", "--allow-insecure-url"]);
    assert_eq!(seen.body["request"]["allowInsecureCodeUrl"], true);
    assert_eq!(seen.body["request"]["runtime"], "bash");
}

#[test]
fn bad_code_url_shortcuts_fail_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = executor();
    let run = |args: &[&str]| {
        cli(dir.path())
            .args(["run", "--host", &r.base, "--key", "k"])
            .args(args)
            .output()
            .expect("run")
    };
    one_error_line(&run(&["--github", "octo/tools"]), &["OWNER/REPO/REF/PATH"]);
    one_error_line(&run(&["--gist", "abc/"]), &["ID or ID/FILE"]);
    one_error_line(&run(&["--gist", "0123abcd"]), &["pass --runtime"]);
    one_error_line(
        &run(&["--github", "o/r/main/x.py", "--url", "https://a/b.py"]),
        &["cannot be used with"],
    );
    one_error_line(
        &run(&["--github", "o/r/main/x.py", "-e", "1"]),
        &["cannot be used with"],
    );
    one_error_line(&run(&["--hash", "ab", "-e", "1"]), &["--hash", "--url"]);
    one_error_line(
        &run(&["--allow-insecure-code-url", "--cmd", "true"]),
        &["--allow-insecure-code-url", "--github"],
    );
    assert!(r.seen().is_empty(), "{:?}", r.seen());
}

#[test]
fn no_stream_warns_on_stderr_when_the_output_was_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cut = Recorder::start(|_| (200, result("xxxx", "partial err", true)));
    let o = cli(dir.path())
        .args([
            "run",
            "--host",
            &cut.base,
            "--key",
            "k",
            "--no-stream",
            "-e",
            "1",
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), "xxxx");
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(lines[0], "partial err");
    assert!(
        lines[1].starts_with("warning: output was truncated"),
        "{err}"
    );

    let whole = executor();
    let o = cli(dir.path())
        .args([
            "run",
            "--host",
            &whole.base,
            "--key",
            "k",
            "--no-stream",
            "-e",
            "1",
        ])
        .output()
        .expect("run");
    assert_eq!(text(&o.stderr), "", "no warning when nothing was cut");
}

#[test]
fn debug_prints_debug_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = executor();
    let o = cli(dir.path())
        .args([
            "run",
            "--debug",
            "--host",
            &r.base,
            "--key",
            "k",
            "--no-stream",
            "-e",
            "1",
        ])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("[DEBUG]"), "{}", text(&o.stderr));
    // Without it, nothing but the program's output.
    let o = cli(dir.path())
        .args([
            "run",
            "--host",
            &r.base,
            "--key",
            "k",
            "--no-stream",
            "-e",
            "1",
        ])
        .output()
        .expect("run");
    assert_eq!(text(&o.stderr), "");
}

#[test]
fn login_stores_the_reference_credentials_and_both_layouts_are_read() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path();
    let creds_path = dir.join(".isol8").join("credentials.json");
    let future = "2999-01-01T00:00:00.000Z";
    // A server answering login as the reference does, executions with "ok".
    let r = Recorder::start(move |seen| match seen.path.as_str() {
        "/auth/login" => (
            200,
            json!({"token": "isol8_issued", "expiresAt": future, "keyId": "key-1"}),
        ),
        _ => (200, result("ok\n", "", false)),
    });
    let o = cli(dir)
        .args(["login", "--host", &format!("{}/", r.base), "--ttl", "60000"])
        .env("ISOL8_API_KEY", MASTER)
        .output()
        .expect("login");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let login = r
        .seen()
        .into_iter()
        .find(|s| s.path == "/auth/login")
        .expect("login call");
    assert_eq!(login.body["ttlMs"], 60000);
    assert_eq!(login.authorization, Some(format!("Bearer {MASTER}")));
    let stored: Value =
        serde_json::from_slice(&std::fs::read(&creds_path).expect("credentials")).expect("json");
    assert_eq!(
        stored,
        json!({"host": r.base, "token": "isol8_issued", "expiresAt": future, "keyId": "key-1"})
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&creds_path)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // `run --host` with no key given uses the stored one, in either layout.
    let run_with_stored = || {
        cli(dir)
            .args(["run", "--host", &r.base, "--no-stream", "-e", "1"])
            .env_remove("ISOL8_API_KEY")
            .output()
            .expect("run")
    };
    let o = run_with_stored();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        r.last_execute().authorization.as_deref(),
        Some("Bearer isol8_issued")
    );
    for old in [
        json!({"host": r.base, "key": "isol8_old", "id": "key-0", "tenant": "t", "expiresAt": future}),
        json!({"host": r.base, "key": "isol8_old", "id": "key-0"}),
    ] {
        std::fs::write(&creds_path, old.to_string()).expect("write");
        let o = run_with_stored();
        assert!(o.status.success(), "{old}: {}", text(&o.stderr));
        assert_eq!(
            r.last_execute().authorization.as_deref(),
            Some("Bearer isol8_old")
        );
    }

    // An expired stored key is reported as expired, and nothing is sent.
    let before = r.seen().len();
    for expired in [
        json!({"host": r.base, "token": "isol8_gone", "expiresAt": "2001-01-01T00:00:00.000Z", "keyId": "k"}),
        json!({"host": r.base, "key": "isol8_gone", "id": "k", "expiresAt": "2001-01-01T00:00:00Z"}),
    ] {
        std::fs::write(&creds_path, expired.to_string()).expect("write");
        one_error_line(&run_with_stored(), &["expired", "isol8 login"]);
        let o = cli(dir)
            .args(["session", "list"])
            .env_remove("ISOL8_API_KEY")
            .output()
            .expect("session list");
        one_error_line(&o, &["expired", "isol8 login"]);
    }
    assert_eq!(r.seen().len(), before, "an expired key was sent");
}

#[test]
fn login_also_reads_the_older_reply_of_this_server() {
    let home = tempfile::tempdir().expect("tempdir");
    let r = Recorder::start(|_| {
        (
            201,
            json!({"key": "isol8_k", "id": "id-9", "tenant": "master", "expiresAt": "2999-01-01T00:00:00.000Z", "name": "login", "revoked": false}),
        )
    });
    let o = cli(home.path())
        .args(["login", "--host", &r.base, "--ttl-ms", "1000"])
        .env("ISOL8_API_KEY", MASTER)
        .output()
        .expect("login");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stored: Value = serde_json::from_slice(
        &std::fs::read(home.path().join(".isol8/credentials.json")).expect("credentials"),
    )
    .expect("json");
    assert_eq!(
        stored,
        json!({"host": r.base, "token": "isol8_k", "expiresAt": "2999-01-01T00:00:00.000Z", "keyId": "id-9", "tenant": "master"})
    );
}

#[test]
fn missing_key_and_missing_file_errors_use_the_reference_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = cli(dir.path())
        .args([
            "run",
            "-e",
            "print(1)",
            "--host",
            "http://127.0.0.1:9",
            "--no-stream",
        ])
        .env("ISOL8_API_KEY", "")
        .output()
        .expect("run");
    one_error_line(&o, &["API key required", "--key", "ISOL8_API_KEY"]);
    let o = cli(dir.path())
        .arg("serve")
        .env("ISOL8_API_KEY", "")
        .output()
        .expect("serve");
    one_error_line(&o, &["API key required"]);
    let o = cli(dir.path())
        .args(["login", "--host", "http://127.0.0.1:9"])
        .env_remove("ISOL8_API_KEY")
        .output()
        .expect("login");
    one_error_line(&o, &["API key required"]);
    let o = cli(dir.path())
        .args(["run", "/nonexistent/file.py", "--no-stream"])
        .output()
        .expect("run");
    one_error_line(&o, &["File not found: /nonexistent/file.py"]);
}

#[test]
fn a_serve_port_in_use_is_one_line_naming_it_whichever_source_chose_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port().to_string();
    let serve = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = cli(dir.path());
        cmd.arg("serve")
            .args(args)
            .env_remove("ISOL8_PORT")
            .env_remove("PORT")
            .env("ISOL8_API_KEY", MASTER);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("serve")
    };
    let in_use = [format!("port {port} is already in use")];
    let want: Vec<&str> = in_use.iter().map(String::as_str).collect();
    one_error_line(&serve(&["-p", &port], &[]), &want);
    one_error_line(
        &serve(&["--port", &port], &[("ISOL8_PORT", "nonsense")]),
        &want,
    );
    one_error_line(
        &serve(&[], &[("ISOL8_PORT", &port), ("PORT", "nonsense")]),
        &want,
    );
    one_error_line(&serve(&[], &[("PORT", &port)]), &want);
    one_error_line(
        &serve(&["-k", MASTER, "-p", &port], &[("ISOL8_API_KEY", "")]),
        &want,
    );
    one_error_line(
        &serve(&[], &[("ISOL8_PORT", "99999")]),
        &["invalid port `99999` from ISOL8_PORT"],
    );
    drop(busy);
}

#[test]
fn serve_refuses_a_short_master_key_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port().to_string();
    drop(free);
    let o = cli(dir.path())
        .args(["serve", "-p", &port, "-k", "test-key"])
        .env_remove("ISOL8_API_KEY")
        .output()
        .expect("serve");
    one_error_line(&o, &["too short", "16"]);
}

/// Reads `child`'s stderr until a line contains `needle` (bounded), returning the lines.
fn stderr_until(child: &mut std::process::Child, needle: &str) -> Vec<String> {
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            // Keep reading after the test stops listening: the server must never
            // find its stderr closed.
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(needle);
                lines.push(line);
                if done {
                    return lines;
                }
            }
            Err(e) => panic!("no `{needle}` on stderr ({e}): {lines:?}"),
        }
    }
}

#[isol8_testkit::test(docker)]
fn serve_takes_its_port_from_isol8_port_accepts_update_and_says_where_it_listens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let mut child = Command::new(env!("CARGO_BIN_EXE_isol8"))
        .args(["serve", "--update", "-k", MASTER])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("ISOL8_PORT", port.to_string())
        .env("PORT", "1")
        .env_remove("ISOL8_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let lines = stderr_until(&mut child, "listening on");
    assert!(
        lines[0].starts_with("note: --update is not needed"),
        "{lines:?}"
    );
    let listening = lines.last().expect("line");
    assert!(
        listening.contains(&format!(
            "listening on http://localhost:{port} (bound to 127.0.0.1 only"
        )),
        "{listening}"
    );
    let health: Value = reqwest::blocking::get(format!("http://127.0.0.1:{port}/health"))
        .expect("health")
        .json()
        .expect("json");
    assert_eq!(health["status"], "ok");
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[isol8_testkit::test(docker)]
fn reference_run_flags_against_the_real_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| cli(dir.path()).arg("run").args(args).output().expect("run");
    // -e without -r is python; --cmd without -r is bash.
    let o = run(&["-e", "print(6*7)", "--no-stream"]);
    assert_eq!(text(&o.stdout), "42\n", "{}", text(&o.stderr));
    let o = run(&["--cmd", "echo $BASH_VERSION | cut -c1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).trim().parse::<u32>().is_ok(),
        "{}",
        text(&o.stdout)
    );
    // --pids-limit reaches the container: forking stops below 32 processes.
    let forks = "import os, time\n\
                 n = 0\n\
                 try:\n\
                 \x20   for _ in range(100):\n\
                 \x20       if os.fork() == 0:\n\
                 \x20           time.sleep(2); os._exit(0)\n\
                 \x20       n += 1\n\
                 except OSError:\n\
                 \x20   pass\n\
                 print('capped' if n < 32 else n)";
    let o = run(&["--pids-limit", "32", "-e", forks]);
    assert_eq!(text(&o.stdout), "capped\n", "{}", text(&o.stderr));
    // Two --setup values, one a file, run before the code.
    let setup = dir.path().join("setup.sh");
    std::fs::write(&setup, "echo one > /sandbox/marker").expect("write");
    let o = run(&[
        "--setup",
        setup.to_str().expect("utf-8"),
        "--setup",
        "echo two >> /sandbox/marker",
        "-e",
        "print(open('/sandbox/marker').read().split())",
    ]);
    assert_eq!(text(&o.stdout), "['one', 'two']\n", "{}", text(&o.stderr));
    // --max-output with --no-stream: the output is cut and a warning says so.
    let o = run(&[
        "-e",
        "print('x' * 10000)",
        "--max-output",
        "1024",
        "--no-stream",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).len() <= 1100, "{}", text(&o.stdout).len());
    assert!(
        text(&o.stderr)
            .lines()
            .any(|l| l.starts_with("warning: output was truncated")),
        "{}",
        text(&o.stderr)
    );
}

#[isol8_testkit::test(docker)]
fn list_custom_shows_each_custom_image_with_its_runtime_and_packages() {
    let tag = format!("isol8-compat-list-custom:{}", std::process::id());
    // A custom image as `isol8 build` labels it, made without installing anything.
    let mut build = Command::new("docker")
        .args([
            "build",
            "-q",
            "-t",
            &tag,
            "--label",
            "isol8.build.runtime=bash",
            "--label",
            r#"isol8.build.packages=["jq","ripgrep"]"#,
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker build");
    build
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"FROM isol8:bash\n")
        .expect("write");
    let built = build.wait_with_output().expect("wait");
    assert!(built.status.success(), "{}", text(&built.stderr));

    let dir = tempfile::tempdir().expect("tempdir");
    let o = cli(dir.path())
        .arg("list-custom")
        .output()
        .expect("list-custom");
    let listed = cli(dir.path())
        .args(["list-custom", "--json"])
        .output()
        .expect("list-custom --json");
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();

    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.starts_with("TAG"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&tag))
        .unwrap_or_else(|| panic!("{tag} not listed: {out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols, [tag.as_str(), "bash", "jq,ripgrep"], "{line}");
    assert!(
        !out.lines().any(|l| l.starts_with("isol8:")),
        "runtime images are not custom: {out}"
    );
    let v: Value = serde_json::from_slice(&listed.stdout).expect("json");
    let entry = v
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["tag"] == tag.as_str())
        .expect("listed in JSON");
    assert_eq!(entry["runtime"], "bash");
    assert_eq!(entry["packages"], json!(["jq", "ripgrep"]));
}
