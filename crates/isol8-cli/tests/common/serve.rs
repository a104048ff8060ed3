//! `isol8 serve` as a child process for the `serve*.rs` tests: start it (flags, working
//! directory), call its routes, read its log, signal it and count its containers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const KEY: &str = "serve-test-key-0123456789abcdef";

pub struct Server {
    pub child: Child,
    pub base: String,
    /// The server's stderr, line by line (after the first).
    pub log: std::sync::mpsc::Receiver<String>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts `isol8 serve` with extra flags.
    pub fn start_with(extra: &[&str]) -> Server {
        Server::start_in(None, extra)
    }

    /// Starts `isol8 serve` with extra flags in `dir` (where its `isol8.config.json`
    /// is looked up).
    pub fn start_in(dir: Option<&std::path::Path>, extra: &[&str]) -> Server {
        Server::start_full(dir, extra, &[])
    }

    /// Starts `isol8 serve` with extra flags and environment variables in `dir`. Lines
    /// the server logs before its `listening on` line stay readable in [`Server::log`].
    pub fn start_full(
        dir: Option<&std::path::Path>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
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
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (tx, log) = std::sync::mpsc::channel();
        // Without RUST_LOG the listening line is the first; with it, log lines may
        // come first.
        let mut before = Vec::new();
        loop {
            let line = lines.next().expect("server output").expect("line");
            if line.contains("listening on") {
                break;
            }
            assert!(
                !env.is_empty() && before.len() < 100,
                "no listening line first: {line}"
            );
            before.push(line);
        }
        for line in before {
            let _ = tx.send(line);
        }
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
    pub fn wait_log(&self, needle: &str, within: Duration) -> String {
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

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the process to exit, failing after `bound`; returns its exit code.
    pub fn wait_exit(&mut self, bound: Duration) -> Option<i32> {
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

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn containers(&self) -> usize {
        containers_of(self.child.id())
    }

    /// SIGTERM, then checks a clean exit with nothing left behind.
    pub fn stop(mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        let status = self.child.wait().expect("wait");
        assert!(t.elapsed() < Duration::from_secs(30));
        assert_eq!(status.code(), Some(0), "server exit status");
        assert_eq!(self.containers(), 0, "containers left after shutdown");
    }
}

/// A request with `key` to the server; returns status and JSON body.
pub fn call(s: &Server, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
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

pub fn session_ids(v: &Value) -> Vec<String> {
    v["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect()
}

/// How many isol8 containers the server process `pid` has on the daemon.
pub fn containers_of(pid: u32) -> usize {
    isol8_testkit::containers_of_pid(pid).len()
}
