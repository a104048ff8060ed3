//! `isol8 mcp` driven as an MCP host drives it: the binary spawned, `initialize`,
//! `tools/list` and `tools/call` of every tool — over stdio with the official Rust SDK's
//! client (rmcp), over streamable HTTP on the wire (JSON-RPC over POST, as any client
//! speaks it), against a remote `isol8 serve`, and with the official Python SDK (`mcp`)
//! as the client. Also: the operator's serverPolicy holds for whatever a model asks, and
//! nothing is left running when the client goes away.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

const TOOLS: [&str; 7] = [
    "create_session",
    "end_session",
    "list_runtimes",
    "read_file",
    "run_code",
    "run_in_session",
    "write_file",
];

/// `isol8 mcp` over stdio, with an rmcp client on its pipes.
struct Stdio_ {
    client: RunningService<RoleClient, ()>,
    child: tokio::process::Child,
}

/// Spawns `isol8 mcp EXTRA…` in `dir` (its config and home) and initializes a client.
async fn spawn_stdio(dir: &Path, extra: &[&str]) -> Stdio_ {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_isol8"))
        .arg("mcp")
        .args(extra)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("ISOL8_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn isol8 mcp");
    let stdout = child.stdout.take().expect("stdout");
    let stdin = child.stdin.take().expect("stdin");
    let client = ().serve((stdout, stdin)).await.expect("initialize");
    Stdio_ { client, child }
}

impl Stdio_ {
    async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        let Value::Object(args) = args else {
            panic!("arguments must be an object")
        };
        self.client
            .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
            .await
            .unwrap_or_else(|e| panic!("{tool}: {e}"))
    }

    /// Opens a session of `runtime` and runs `run` (`code` or `cmd` arguments) in it;
    /// returns the session id and the container it runs in.
    async fn session_running(&self, runtime: &str, run: Value) -> (String, String) {
        let r = self
            .call("create_session", json!({"runtime": runtime}))
            .await;
        let sid = ok(&r)["sessionId"].as_str().expect("sessionId").to_string();
        let mut args = run;
        args["sessionId"] = json!(sid);
        let r = self.call("run_in_session", args).await;
        let container = ok(&r)["containerId"]
            .as_str()
            .expect("containerId")
            .to_string();
        (sid, container)
    }

    /// Closes the client's end (stdin EOF) and waits for the server to exit; returns its
    /// pid and exit code.
    async fn close(mut self) -> (u32, Option<i32>) {
        let pid = self.child.id().expect("pid");
        self.client.cancel().await.expect("close the client");
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .expect("isol8 mcp exits after stdin EOF")
            .expect("wait");
        (pid, status.code())
    }
}

/// The text of a tool result.
fn text(r: &CallToolResult) -> String {
    serde_json::to_value(&r.content[0]).expect("content")["text"]
        .as_str()
        .expect("text content")
        .to_string()
}

fn structured(r: &CallToolResult) -> &Value {
    r.structured_content.as_ref().expect("structuredContent")
}

/// A successful call's structured content.
fn ok(r: &CallToolResult) -> &Value {
    assert_eq!(r.is_error, Some(false), "{}", text(r));
    structured(r)
}

/// A failed call's one-line message.
fn refused(r: &CallToolResult) -> String {
    assert_eq!(r.is_error, Some(true), "expected a tool error: {}", text(r));
    let t = text(r);
    assert!(t.starts_with("error: ") && !t.contains('\n'), "{t}");
    t
}

/// True while the container `id` (full or short) is among `pid`'s.
fn alive(pid: u32, id: &str) -> bool {
    isol8_testkit::containers_of_pid(pid)
        .iter()
        .any(|c| c.starts_with(id) || id.starts_with(c.as_str()))
}

fn write_config(dir: &Path, config: Value) {
    std::fs::write(dir.join("isol8.config.json"), config.to_string()).expect("write config");
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn stdio_client_lists_the_tools_and_calls_each_one_then_eof_removes_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mcp = spawn_stdio(dir.path(), &["--max-tool-output", "2000"]).await;
    let info = mcp.client.peer_info().expect("server info");
    assert_eq!(info.server_info.as_ref().expect("serverInfo").name, "isol8");
    assert!(info
        .instructions
        .as_deref()
        .is_some_and(|i| i.contains("create_session")));

    // tools/list: every tool, each with a description and a closed, described schema.
    let tools = mcp.client.list_all_tools().await.expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(names, TOOLS);
    for tool in &tools {
        assert!(
            tool.description.as_deref().is_some_and(|d| d.len() > 40),
            "{tool:?}"
        );
        let schema = Value::Object((*tool.input_schema).clone());
        assert_eq!(
            schema["additionalProperties"], false,
            "{}: {schema}",
            tool.name
        );
    }
    let run_schema = &tools
        .iter()
        .find(|t| t.name == "run_code")
        .expect("run_code")
        .input_schema;
    for arg in [
        "runtime",
        "code",
        "cmd",
        "stdin",
        "files",
        "timeoutMs",
        "packages",
        "network",
    ] {
        assert!(
            run_schema["properties"].get(arg).is_some(),
            "run_code lacks {arg}"
        );
    }

    // list_runtimes
    let r = mcp.call("list_runtimes", json!({})).await;
    let runtimes: Vec<&str> = ok(&r)["runtimes"]
        .as_array()
        .expect("runtimes")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for name in ["python", "node", "bun", "deno", "bash"] {
        assert!(runtimes.contains(&name), "{runtimes:?}");
    }
    assert_eq!(ok(&r)["limits"]["defaultNetwork"], "none");

    // run_code: stdout, stderr and the exit code of a failing program (not a tool error).
    let r = mcp
        .call(
            "run_code",
            json!({"runtime": "python", "code": "import sys\nprint(6 * 7)\nprint('bad', file=sys.stderr)\nsys.exit(3)"}),
        )
        .await;
    let out = ok(&r);
    assert_eq!(out["stdout"], "42\n");
    assert_eq!(out["stderr"], "bad\n");
    assert_eq!(out["exitCode"], 3);
    assert!(text(&r).starts_with("exit code: 3"), "{}", text(&r));
    if let Some(reason) = out.get("exitReason") {
        assert_eq!(reason, "exited");
    }
    // stdin and files, with a bash command.
    let r = mcp
        .call(
            "run_code",
            json!({"runtime": "bash", "cmd": "cat notes/a.txt; tr a-z A-Z", "stdin": "piped in\n",
                   "files": {"notes/a.txt": "from a file\n"}, "env": {"X": "1"}}),
        )
        .await;
    assert_eq!(ok(&r)["stdout"], "from a file\nPIPED IN\n");
    // Long output is cut in the middle, under a marker.
    let r = mcp
        .call(
            "run_code",
            json!({"runtime": "python", "code": "for i in range(5000): print(i)"}),
        )
        .await;
    let out = ok(&r);
    let stdout = out["stdout"].as_str().expect("stdout");
    assert!(
        stdout.starts_with("0\n1\n2\n") && stdout.ends_with("4998\n4999\n"),
        "{stdout}"
    );
    assert!(stdout.contains("bytes of stdout omitted"), "{stdout}");
    assert!(stdout.len() < 2200, "{}", stdout.len());
    assert_eq!(out["outputCapped"], true);
    // A timeout is a result with its exit code (and reason, where the engine gives one).
    let r = mcp
        .call(
            "run_code",
            json!({"runtime": "bash", "cmd": "sleep 60", "timeoutMs": 1000}),
        )
        .await;
    let out = ok(&r);
    assert_eq!(out["exitCode"], 137, "{out}");
    if let Some(reason) = out.get("exitReason") {
        assert_eq!(reason, "timeout");
    }

    // Bad input: a tool error with the CLI's one line, and the server keeps serving.
    let line = refused(
        &mcp.call("run_code", json!({"runtime": "cobol", "code": "x"}))
            .await,
    );
    assert!(line.contains("cobol"), "{line}");
    let line = refused(
        &mcp.call(
            "run_code",
            json!({"runtime": "python", "code": "1", "cmd": "true"}),
        )
        .await,
    );
    assert!(line.contains("code") && line.contains("cmd"), "{line}");
    let r = mcp
        .call(
            "run_code",
            json!({"runtime": "python", "code": "1", "memoryLimit": "64g"}),
        )
        .await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).contains("unknown field `memoryLimit`"),
        "{}",
        text(&r)
    );
    let r = mcp.call("run_code", json!({"code": "1"})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("runtime"), "{}", text(&r));
    let unknown = mcp
        .client
        .call_tool(CallToolRequestParams::new("rm_rf"))
        .await
        .expect_err("an unknown tool is a protocol error");
    assert!(unknown.to_string().contains("tool not found"), "{unknown}");

    // A session: write, run, read (text and binary), end.
    let r = mcp
        .call("create_session", json!({"runtime": "python"}))
        .await;
    let sid = ok(&r)["sessionId"].as_str().expect("sessionId").to_string();
    let r = mcp
        .call(
            "write_file",
            json!({"sessionId": sid, "path": "in.txt", "content": "hello"}),
        )
        .await;
    assert_eq!(ok(&r)["bytes"], 5);
    let r = mcp
        .call(
            "run_in_session",
            json!({"sessionId": sid, "code": "open('/sandbox/out.bin','wb').write(bytes([0,255]) + open('in.txt').read().upper().encode())\nprint('done')"}),
        )
        .await;
    let out = ok(&r);
    assert_eq!(out["stdout"], "done\n");
    assert_eq!(out["sessionId"], sid.as_str());
    let r = mcp
        .call(
            "read_file",
            json!({"sessionId": sid, "path": "out.bin", "encoding": "base64"}),
        )
        .await;
    assert_eq!(ok(&r)["content"], "AP9IRUxMTw=="); // 00 ff "HELLO"
    let r = mcp
        .call(
            "run_in_session",
            json!({"sessionId": sid, "cmd": "ls /sandbox && pwd"}),
        )
        .await;
    let stdout = ok(&r)["stdout"].as_str().expect("stdout").to_string();
    assert!(
        stdout.contains("in.txt") && stdout.contains("out.bin"),
        "{stdout}"
    );
    let r = mcp
        .call("read_file", json!({"sessionId": sid, "path": "in.txt"}))
        .await;
    assert_eq!(text(&r), "hello");
    let line = refused(
        &mcp.call(
            "read_file",
            json!({"sessionId": sid, "path": "/etc/passwd"}),
        )
        .await,
    );
    assert!(line.contains("/etc/passwd"), "{line}");
    ok(&mcp.call("end_session", json!({"sessionId": sid})).await);
    let line = refused(
        &mcp.call(
            "run_in_session",
            json!({"sessionId": sid, "code": "print(1)"}),
        )
        .await,
    );
    assert!(line.contains("no session"), "{line}");
    let line = refused(&mcp.call("end_session", json!({"sessionId": sid})).await);
    assert!(line.contains("no session"), "{line}");

    // A session left open, then the client goes away: its container and the engine's
    // are removed before the server exits.
    let (_, container) = mcp
        .session_running("bash", json!({"cmd": "echo still here"}))
        .await;
    let pid = mcp.child.id().expect("pid");
    assert!(alive(pid, &container), "the session's container runs");
    let (pid, code) = mcp.close().await;
    assert_eq!(code, Some(0));
    assert_eq!(
        isol8_testkit::containers_of_pid(pid),
        Vec::<String>::new(),
        "containers left after the MCP client closed stdin"
    );
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn sigterm_over_stdio_ends_the_open_sessions_before_exiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mcp = spawn_stdio(dir.path(), &[]).await;
    let (_, container) = mcp
        .session_running("python", json!({"code": "print('up')"}))
        .await;
    let pid = mcp.child.id().expect("pid");
    assert!(alive(pid, &container));
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(120), mcp.child.wait())
        .await
        .expect("isol8 mcp exits on SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(
        isol8_testkit::containers_of_pid(pid).is_empty(),
        "containers left after SIGTERM"
    );
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_model_gets_only_what_the_operator_policy_allows() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(
        dir.path(),
        json!({"serverPolicy": {"maxTimeoutMs": 5000, "allowedNetworks": ["none"]}}),
    );
    let mcp = spawn_stdio(dir.path(), &[]).await;
    let base = json!({"runtime": "python", "code": "print(1)"});
    let with = |extra: Value| {
        let mut args = base.clone();
        for (k, v) in extra.as_object().expect("object") {
            args[k] = v.clone();
        }
        args
    };
    let line = refused(&mcp.call("run_code", with(json!({"network": "host"}))).await);
    assert!(line.contains("serverPolicy.allowHostNetwork"), "{line}");
    let line = refused(
        &mcp.call(
            "run_code",
            with(json!({"network": "filtered", "allowedHosts": ["^example\\.com$"]})),
        )
        .await,
    );
    assert!(line.contains("serverPolicy.allowedNetworks"), "{line}");
    let line = refused(
        &mcp.call("run_code", with(json!({"packages": ["six"]})))
            .await,
    );
    assert!(line.contains("installPackages needs it"), "{line}");
    let line = refused(
        &mcp.call("run_code", with(json!({"image": "alpine:3"})))
            .await,
    );
    assert!(line.contains("serverPolicy.allowCustomImage"), "{line}");
    let line = refused(
        &mcp.call("run_code", with(json!({"timeoutMs": 600000})))
            .await,
    );
    assert!(line.contains("serverPolicy.maxTimeoutMs"), "{line}");
    let line = refused(
        &mcp.call(
            "create_session",
            json!({"runtime": "python", "network": "host"}),
        )
        .await,
    );
    assert!(line.contains("serverPolicy.allowHostNetwork"), "{line}");
    let line = refused(
        &mcp.call(
            "create_session",
            json!({"runtime": "python", "image": "alpine:3"}),
        )
        .await,
    );
    assert!(line.contains("serverPolicy.allowCustomImage"), "{line}");
    // In a session, a run's timeout is capped too.
    let r = mcp
        .call("create_session", json!({"runtime": "python"}))
        .await;
    let sid = ok(&r)["sessionId"].as_str().expect("sessionId").to_string();
    let line = refused(
        &mcp.call(
            "run_in_session",
            json!({"sessionId": sid, "code": "print(1)", "timeoutMs": 600000}),
        )
        .await,
    );
    assert!(line.contains("serverPolicy.maxTimeoutMs"), "{line}");
    // Within the policy, it runs; list_runtimes says what is allowed.
    assert_eq!(
        ok(&mcp.call("run_code", with(json!({"timeoutMs": 4000}))).await)["stdout"],
        "1\n"
    );
    let limits = ok(&mcp.call("list_runtimes", json!({})).await)["limits"].clone();
    assert_eq!(limits["networks"], json!(["none"]), "{limits}");
    assert_eq!(limits["maxTimeoutMs"], 5000, "{limits}");
    let (pid, code) = mcp.close().await;
    assert_eq!(code, Some(0));
    assert!(isol8_testkit::containers_of_pid(pid).is_empty());

    // The operator allows the host network: now a model may have it.
    write_config(
        dir.path(),
        json!({"serverPolicy": {"allowHostNetwork": true}}),
    );
    let mcp = spawn_stdio(dir.path(), &[]).await;
    let r = mcp
        .call(
            "run_code",
            json!({"runtime": "bash", "cmd": "echo ok", "network": "host"}),
        )
        .await;
    assert_eq!(ok(&r)["stdout"], "ok\n");
    let (pid, _) = mcp.close().await;
    assert!(isol8_testkit::containers_of_pid(pid).is_empty());
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn remote_mode_runs_through_an_isol8_server_and_ends_its_sessions_there() {
    let server = tokio::task::spawn_blocking(common::serve::Server::start)
        .await
        .expect("server");
    let _stop_on_panic = TermOnPanic(server.child.id());
    let dir = tempfile::tempdir().expect("tempdir");
    let mcp = spawn_stdio(
        dir.path(),
        &["--host", &server.base, "--key", common::serve::KEY],
    )
    .await;
    let r = mcp
        .call(
            "run_code",
            json!({"runtime": "python", "code": "print(6 * 7)"}),
        )
        .await;
    assert_eq!(ok(&r)["stdout"], "42\n");
    // The server's policy answers.
    let line = refused(
        &mcp.call(
            "run_code",
            json!({"runtime": "python", "code": "1", "network": "host"}),
        )
        .await,
    );
    assert!(line.contains("allowHostNetwork"), "{line}");
    let r = mcp.call("create_session", json!({"runtime": "bash"})).await;
    let sid = ok(&r)["sessionId"].as_str().expect("sessionId").to_string();
    ok(&mcp
        .call(
            "write_file",
            json!({"sessionId": sid, "path": "f.txt", "content": "remote"}),
        )
        .await);
    let r = mcp
        .call(
            "run_in_session",
            json!({"sessionId": sid, "cmd": "cat f.txt"}),
        )
        .await;
    assert_eq!(ok(&r)["stdout"], "remote");
    assert_eq!(
        text(
            &mcp.call("read_file", json!({"sessionId": sid, "path": "f.txt"}))
                .await
        ),
        "remote"
    );
    // (A blocking HTTP call: off the async worker.)
    let sessions = |s: &common::serve::Server| {
        tokio::task::block_in_place(|| {
            s.get("/sessions").1["sessions"]
                .as_array()
                .map_or(0, Vec::len)
        })
    };
    assert_eq!(sessions(&server), 1);
    // Left open: the client going away ends it on the server.
    let (_, code) = mcp.close().await;
    assert_eq!(code, Some(0));
    assert_eq!(sessions(&server), 0, "the session outlived its MCP client");
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stop");
}

#[test]
fn http_beyond_loopback_needs_a_token_and_bad_addresses_are_one_error_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (args, needle) in [
        (&["mcp", "--http", "0.0.0.0:0"][..], "--http-token"),
        (&["mcp", "--http", "localhost:x"][..], "IP:PORT"),
        (&["mcp", "--max-tool-output", "10"][..], "--max-tool-output"),
    ] {
        let out = common::isol8_in(dir.path())
            .args(args)
            .env_remove("ISOL8_MCP_TOKEN")
            .output()
            .expect("run isol8 mcp");
        let stderr = common::text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(needle) && stderr.lines().count() == 1,
            "{args:?}: {stderr}"
        );
    }
}

/// Sends SIGTERM to a child server when the test panics before stopping it, so that it
/// removes its containers and does not outlive the test.
struct TermOnPanic(u32);

impl Drop for TermOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(self.0 as i32, libc::SIGTERM) };
        }
    }
}

/// `isol8 mcp --http` spawned on a free loopback port with a bearer token: the child and
/// its MCP URL.
fn spawn_http(token: &str) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let dir = std::env::temp_dir();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_isol8"))
        .args(["mcp", "--http", "127.0.0.1:0", "--http-token", token])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn isol8 mcp --http");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let first = lines.next().expect("a start-up line").expect("line");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in `{first}`"))
        .to_string();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("isol8 mcp: {line}");
        }
    });
    (child, url)
}

/// A JSON-RPC exchange over streamable HTTP: the status, the session id header and the
/// JSON-RPC messages of the answer (a JSON body or server-sent events).
fn post(
    url: &str,
    token: &str,
    session: Option<&str>,
    body: Value,
) -> (u16, Option<String>, Vec<Value>) {
    let mut req = reqwest::blocking::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .timeout(Duration::from_secs(120))
        .json(&body);
    if let Some(id) = session {
        req = req.header("Mcp-Session-Id", id);
    }
    let resp = req.send().expect("POST /mcp");
    let status = resp.status().as_u16();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.text().expect("body");
    let messages = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .chain(std::iter::once(body.as_str()))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .filter(|v| v.get("jsonrpc").is_some())
        .collect();
    (status, sid, messages)
}

/// The result (or error) of the JSON-RPC request `id` among `messages`.
fn answer(messages: &[Value], id: u64) -> &Value {
    messages
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no answer to {id} in {messages:?}"))
}

#[isol8_testkit::test(docker)]
fn http_client_calls_the_tools_and_a_closed_mcp_session_ends_its_sandboxes() {
    const TOKEN: &str = "mcp-test-token-0123456789";
    let (mut child, url) = spawn_http(TOKEN);
    let pid = child.id();
    let _stop_on_panic = TermOnPanic(pid);

    // Without the token: 401, nothing runs.
    let status = reqwest::blocking::Client::new()
        .post(&url)
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .expect("POST")
        .status();
    assert_eq!(status.as_u16(), 401);

    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let (status, sid, msgs) = post(&url, TOKEN, None, init.clone());
    assert_eq!(status, 200);
    let sid = sid.expect("an MCP session id");
    assert_eq!(answer(&msgs, 1)["result"]["serverInfo"]["name"], "isol8");
    let (status, _, _) = post(
        &url,
        TOKEN,
        Some(&sid),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    assert!(status == 202 || status == 200, "{status}");

    let (_, _, msgs) = post(
        &url,
        TOKEN,
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    );
    let mut names: Vec<String> = answer(&msgs, 2)["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect();
    names.sort();
    assert_eq!(names, TOOLS);

    let call = |id: u64, tool: &str, args: Value| -> Value {
        let (status, _, msgs) = post(
            &url,
            TOKEN,
            Some(&sid),
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}}),
        );
        assert_eq!(status, 200, "{tool}");
        answer(&msgs, id).clone()
    };
    let r = call(
        3,
        "run_code",
        json!({"runtime": "node", "code": "console.log(6 * 7)"}),
    );
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert_eq!(r["result"]["structuredContent"]["stdout"], "42\n");
    let r = call(4, "list_runtimes", json!({}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    let r = call(5, "no_such_tool", json!({}));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = call(
        6,
        "run_code",
        json!({"runtime": "python", "code": "1", "network": "host"}),
    );
    assert_eq!(r["result"]["isError"], true, "{r}");

    let r = call(7, "create_session", json!({"runtime": "python"}));
    let session = r["result"]["structuredContent"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let r = call(
        8,
        "write_file",
        json!({"sessionId": session, "path": "x.txt", "content": "over http"}),
    );
    assert_eq!(r["result"]["isError"], false, "{r}");
    let r = call(
        9,
        "run_in_session",
        json!({"sessionId": session, "code": "print(open('x.txt').read())"}),
    );
    assert_eq!(
        r["result"]["structuredContent"]["stdout"], "over http\n",
        "{r}"
    );
    let container = r["result"]["structuredContent"]["containerId"]
        .as_str()
        .expect("containerId")
        .to_string();
    let r = call(
        10,
        "read_file",
        json!({"sessionId": session, "path": "x.txt"}),
    );
    assert_eq!(
        r["result"]["structuredContent"]["content"], "over http",
        "{r}"
    );
    assert!(alive(pid, &container));

    // The MCP client closes its session: the sandbox session it opened ends.
    let status = reqwest::blocking::Client::new()
        .delete(&url)
        .bearer_auth(TOKEN)
        .header("Mcp-Session-Id", &sid)
        .header("MCP-Protocol-Version", "2025-06-18")
        .send()
        .expect("DELETE")
        .status();
    assert!(status.is_success(), "{status}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(pid, &container) {
        assert!(
            Instant::now() < deadline,
            "the session's container outlived its MCP session"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The stateless protocol (2026-07-28: no MCP session, each request on its own): a
    // session outlives the request that made it, for the next ones.
    let stateless = |id: u64, tool: &str, args: Value| -> Value {
        let resp = reqwest::blocking::Client::new()
            .post(&url)
            .bearer_auth(TOKEN)
            .header("Accept", "application/json, text/event-stream")
            .header("MCP-Protocol-Version", "2026-07-28")
            .header("Mcp-Method", "tools/call")
            .header("Mcp-Name", tool)
            .timeout(Duration::from_secs(120))
            .json(
                &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                "name": tool, "arguments": args, "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {},
                    "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"}}}}),
            )
            .send()
            .expect("POST");
        let body = resp.text().expect("body");
        let msgs: Vec<Value> = body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .chain(std::iter::once(body.as_str()))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .collect();
        answer(&msgs, id).clone()
    };
    let r = stateless(1, "create_session", json!({"runtime": "bash"}));
    let session = r["result"]["structuredContent"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let r = stateless(
        2,
        "run_in_session",
        json!({"sessionId": session, "cmd": "echo kept > k; cat k"}),
    );
    assert_eq!(r["result"]["structuredContent"]["stdout"], "kept\n", "{r}");

    // Another MCP session leaves a sandbox session open; SIGTERM ends everything.
    let (_, sid, _) = post(&url, TOKEN, None, init);
    let sid = sid.expect("session id");
    post(
        &url,
        TOKEN,
        Some(&sid),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    let (_, _, msgs) = post(
        &url,
        TOKEN,
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "create_session", "arguments": {"runtime": "bash"}}}),
    );
    assert_eq!(answer(&msgs, 2)["result"]["isError"], false, "{msgs:?}");
    assert!(!isol8_testkit::containers_of_pid(pid).is_empty());
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(
        isol8_testkit::containers_of_pid(pid).is_empty(),
        "containers left after SIGTERM"
    );
}

/// The Python interpreter with the official `mcp` package (`ISOL8_MCP_PYTHON`, set by
/// scripts/test.sh: the venv of `ensure_client_venv` in scripts/lib.sh; else `python3`), or why there is none.
fn python_with_mcp() -> Result<String, String> {
    let python = std::env::var("ISOL8_MCP_PYTHON").unwrap_or_else(|_| "python3".into());
    match std::process::Command::new(&python)
        .args(["-c", "import mcp.client.stdio, mcp.client.streamable_http"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(python),
        Ok(_) => Err(format!(
            "{python} has no `mcp` package (scripts/test.sh installs it: `ensure_client_venv` in scripts/lib.sh)"
        )),
        Err(e) => Err(format!("cannot run {python}: {e}")),
    }
}

/// True while the daemon knows container `id` (full or short).
fn container_exists(id: &str) -> bool {
    std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.Id}}", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run docker inspect")
        .success()
}

fn python_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client.py")
}

#[isol8_testkit::test(docker)]
fn the_official_python_mcp_client_drives_isol8_mcp_over_stdio_and_http() {
    let python = match python_with_mcp() {
        Ok(p) => p,
        Err(why) => {
            isol8_testkit::skip(
                "the_official_python_mcp_client_drives_isol8_mcp_over_stdio_and_http",
                &why,
            );
            return;
        }
    };
    // stdio: the SDK spawns `isol8 mcp` itself; the session the script leaves open
    // must end with the connection.
    let out = std::process::Command::new(&python)
        .arg(python_script())
        .args(["stdio", env!("CARGO_BIN_EXE_isol8")])
        .output()
        .expect("run the Python client");
    assert!(
        out.status.success(),
        "python client over stdio failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("all checks passed"), "{stdout}");
    let left = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LEFT_CONTAINER="))
        .expect("the container of the session left open");
    let deadline = Instant::now() + Duration::from_secs(60);
    while container_exists(left) {
        assert!(
            Instant::now() < deadline,
            "the session left open outlived its stdio client"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // HTTP: against `isol8 mcp --http`.
    const TOKEN: &str = "python-mcp-token-0123456789";
    let (mut child, url) = spawn_http(TOKEN);
    let pid = child.id();
    let _stop_on_panic = TermOnPanic(pid);
    let out = std::process::Command::new(&python)
        .arg(python_script())
        .args(["http", &url, TOKEN])
        .output()
        .expect("run the Python client");
    assert!(
        out.status.success(),
        "python client over HTTP failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    assert!(
        isol8_testkit::containers_of_pid(pid).is_empty(),
        "containers left"
    );
}

#[isol8_testkit::test(docker, registries, flavor = "multi_thread")]
async fn packages_a_model_asks_for_are_installed_for_a_run_and_for_a_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The machine's CA bundle (with a TLS-intercepting proxy's CA, where there is one)
    // and the registries' addresses exempted from egress's reserved-range refusal.
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    write_config(
        dir.path(),
        json!({"caBundle": ca.exists().then_some(ca),
               "network": {"exemptRanges": isol8_testkit::registry_exemptions()}}),
    );
    let mcp = spawn_stdio(dir.path(), &[]).await;
    let r = mcp
        .call(
            "run_code",
            json!({"runtime": "python", "packages": ["six==1.17.0"], "code": "import six; print(six.__name__)"}),
        )
        .await;
    // (The install's own output comes first, as in `isol8 run`. The version is pinned so
    // that an image another test builds with a bare `six` never covers the request.)
    let stdout = ok(&r)["stdout"].as_str().expect("stdout");
    assert!(stdout.ends_with("\nsix\n"), "{}", text(&r));
    let r = mcp
        .call(
            "create_session",
            json!({"runtime": "python", "packages": ["six==1.17.0"]}),
        )
        .await;
    let sid = ok(&r)["sessionId"].as_str().expect("sessionId").to_string();
    let r = mcp
        .call(
            "run_in_session",
            json!({"sessionId": sid, "code": "import six; print(six.PY3)"}),
        )
        .await;
    assert_eq!(ok(&r)["stdout"], "True\n", "{}", text(&r));
    let (pid, code) = mcp.close().await;
    assert_eq!(code, Some(0));
    assert!(isol8_testkit::containers_of_pid(pid).is_empty());
}
