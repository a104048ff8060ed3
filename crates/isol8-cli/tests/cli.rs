//! The `isol8` binary as a user runs it: bad input gives one `error:` line and exit 1 with
//! nothing left behind; real runs stream output and exit with the program's status;
//! Ctrl-C removes the sandbox.
//!
//! Tests marked "needs Docker" skip (saying so) on a machine without a daemon, but never
//! in CI (`CI` set), where the daemon is always provisioned.

mod common;

use common::spawn_long_run;
use isol8_testkit::containers_of_pid;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn isol8() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_isol8"));
    cmd.stdin(Stdio::null());
    cmd
}

fn in_dir(dir: &std::path::Path) -> Command {
    let mut cmd = isol8();
    cmd.current_dir(dir).env("HOME", dir);
    cmd
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("isol8-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts exit status 1 and exactly one stderr line starting with `error:` containing `want`.
fn assert_one_error_line(o: &Output, want: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(want),
        "{err}"
    );
}

#[test]
fn help_lists_the_subcommands() {
    let o = isol8().arg("--help").output().expect("run");
    assert!(o.status.success());
    for sub in ["setup", "run", "cleanup", "config", "doctor", "mcp"] {
        assert!(stdout(&o).contains(sub), "{sub} missing from help");
    }
}

#[test]
fn config_reads_the_local_file_and_names_unknown_keys() {
    let dir = temp_dir("config");
    std::fs::write(
        dir.join("isol8.config.json"),
        r#"{"maxConcurrent": 3, "defaults": {"memoryLimit": "256m"}}"#,
    )
    .expect("write");
    let o = in_dir(&dir)
        .args(["config", "--json"])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["maxConcurrent"], 3);
    assert_eq!(v["defaults"]["memoryLimit"], "256m");

    let o = in_dir(&dir).arg("config").output().expect("run");
    // Sizes as written, under their full key.
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l.starts_with("defaults.memoryLimit ") && l.ends_with(" 256m")),
        "{}",
        stdout(&o)
    );

    std::fs::write(
        dir.join("isol8.config.json"),
        r#"{"defaults": {"memoryLimt": "256m"}}"#,
    )
    .expect("write");
    let o = in_dir(&dir)
        .args(["config", "--json"])
        .output()
        .expect("run");
    assert_one_error_line(&o, "unknown key `defaults.memoryLimt`");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_schema_is_json_with_every_key() {
    let o = isol8().args(["config", "--schema"]).output().expect("run");
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("schema is JSON");
    assert!(v["properties"]["maxConcurrent"].is_object());
    assert!(v["properties"]["serverPolicy"].is_object());
}

#[test]
fn cleanup_refuses_without_a_terminal_or_force() {
    let o = isol8().arg("cleanup").output().expect("run");
    assert_one_error_line(&o, "--force");
}

#[test]
fn bad_input_is_one_error_line_before_anything_runs() {
    let dir = temp_dir("badinput");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "-r", "cobol", "-e", "x"],
            "available runtimes: python, node, bun, bash, deno",
        ),
        (
            vec!["run", "-r", "python", "-e", "1", "--cmd", "ls"],
            "cannot be used with",
        ),
        (
            vec!["run", "-r", "python", "-e", "1", "--memory", "12q"],
            "memoryLimit",
        ),
        (
            vec!["run", "-r", "python", "-e", "1", "--cpu", "-2"],
            "cpuLimit",
        ),
        // Values Docker would read as "no limit" (0 nano-CPUs, pids 0 / -1).
        (
            vec!["run", "-r", "python", "-e", "1", "--cpu", "4e-10"],
            "between 0.01 and 1024",
        ),
        (
            vec!["run", "-r", "python", "-e", "1", "--pids", "0"],
            "pidsLimit",
        ),
        (
            vec!["run", "-r", "python", "-e", "1", "--pids", "-1"],
            "pidsLimit",
        ),
        (
            vec!["run", "-r", "python", "-e", "1", "--memory", "0"],
            "memoryLimit",
        ),
        (
            vec!["run", "-r", "python", "-e", "1", "--max-output", "0"],
            "maxOutputSize",
        ),
        (
            vec!["run", "missing-file.py"],
            "File not found: missing-file.py",
        ),
        (
            vec!["run", "-r", "bash", "-e", "true", "--workdir", "/etc"],
            "outside /sandbox",
        ),
        (
            vec!["run", "-r", "bash", "-e", "true", "--output-path", "../x"],
            "outside /sandbox",
        ),
        (
            vec![
                "run",
                "-r",
                "bash",
                "-e",
                "true",
                "--file",
                "/etc/x=Cargo.toml",
            ],
            "outside /sandbox",
        ),
        (
            vec!["run", "-r", "bash", "-e", "true", "--net", "bridge"],
            "none, filtered, host",
        ),
        // -e alone is python now (compat_cli.rs); an unknown extension still needs -r.
        (vec!["run", "Cargo.toml"], "pass --runtime"),
        (vec!["run", "-r", "python"], "no code given"),
        (vec!["run", "-r", "python", "-e", "1", "--bogus"], "--bogus"),
    ];
    std::fs::write(dir.join("Cargo.toml"), "x").expect("write");
    for (args, want) in cases {
        let o = in_dir(&dir).args(&args).output().expect("run");
        assert_one_error_line(&o, want);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn docker_not_running_says_how_to_start_it() {
    let o = isol8()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["run", "-r", "bash", "-e", "echo hi"])
        .output()
        .expect("run");
    assert_one_error_line(&o, "cannot reach the Docker daemon");
    assert!(stderr(&o).contains("start it"), "{}", stderr(&o));
}

#[isol8_testkit::test(docker)]
fn runs_code_and_exits_with_its_status() {
    let o = isol8()
        .args(["run", "-r", "python", "-e", "print(6*7)"])
        .output()
        .expect("run");
    assert_eq!(stdout(&o), "42\n", "{}", stderr(&o));
    assert!(o.status.success());

    let o = isol8()
        .args(["run", "-r", "bash", "-e", "echo out; echo err >&2; exit 3"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");

    let o = isol8()
        .args(["run", "--no-stream", "-r", "bash", "-e", "echo buffered"])
        .output()
        .expect("run");
    assert_eq!(stdout(&o), "buffered\n");

    let o = isol8()
        .args(["run", "--json", "-r", "node", "-e", "console.log(1+1)"])
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("result JSON");
    assert_eq!(v["stdout"], "2\n");
    assert_eq!(v["exitCode"], 0);
    assert_eq!(v["runtime"], "node");
    assert!(v["executionId"].as_str().is_some_and(|s| s.len() == 36));
}

#[isol8_testkit::test(docker)]
fn code_from_a_file_or_stdin_and_out_file() {
    let dir = temp_dir("files");
    std::fs::write(dir.join("hello.sh"), "echo from $0 file").expect("write");
    let o = in_dir(&dir)
        .args(["run", "hello.sh", "--out", "captured.txt"])
        .output()
        .expect("run");
    assert_eq!(stdout(&o), "from bash file\n", "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dir.join("captured.txt")).expect("out file"),
        "from bash file\n"
    );

    let mut child = isol8()
        .args(["run", "-r", "python"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"print('piped code')")
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(stdout(&o), "piped code\n");

    let o = isol8()
        .args([
            "run",
            "-r",
            "python",
            "--timeout",
            "1000",
            "-e",
            "import time; time.sleep(30)",
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(137));
    assert!(
        stderr(&o).contains("--- EXECUTION TIMED OUT ---"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[isol8_testkit::test(docker)]
fn missing_image_says_to_run_setup() {
    let o = isol8()
        .args([
            "run",
            "-r",
            "bash",
            "-e",
            "true",
            "--image",
            "isol8:does-not-exist",
        ])
        .output()
        .expect("run");
    assert_one_error_line(&o, "run `isol8 setup --runtime bash`");
}

#[isol8_testkit::test(docker)]
fn ctrl_c_removes_the_container() {
    let mut child = spawn_long_run();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let t = Instant::now();
    let status = child.wait().expect("wait");
    assert!(t.elapsed() < Duration::from_secs(15));
    assert_eq!(status.code(), Some(130));
    let leaked = containers_of_pid(pid);
    assert!(
        leaked.is_empty(),
        "containers left after Ctrl-C: {leaked:?}"
    );
}

#[isol8_testkit::test(docker)]
fn bench_reports_every_path_with_a_docker_exec_baseline() {
    let o = isol8()
        .args(["bench", "--quick", "-n", "2", "-r", "bash", "--json"])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("report JSON");
    let paths: Vec<&str> = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["path"].as_str())
        .collect();
    assert_eq!(
        paths,
        // (No `warm_fresh`: bash has no pre-started interpreter, so it would be `warm`.)
        vec![
            "warm",
            "warm_back_to_back",
            "warm_after_idle",
            "warm_stdio",
            "warm_audited",
            "docker_exec",
            "cold",
            "docker_run"
        ]
    );
    for r in v["results"].as_array().expect("results") {
        assert_eq!(r["n"], 2);
        assert!(r["median_ms"].as_f64().is_some_and(|m| m > 0.0), "{r}");
        // The engine's paths carry the program's own time and the overhead around it;
        // the Docker baselines have no program time (null, not zero).
        if r["path"].as_str().is_some_and(|p| p.starts_with("docker_")) {
            assert!(
                r["program_ms"].is_null() && r["overhead_ms"].is_null(),
                "{r}"
            );
        } else {
            assert!(r["program_ms"].as_f64().is_some(), "{r}");
            assert!(r["overhead_ms"].as_f64().is_some(), "{r}");
        }
    }
    assert!(v["machine"]["cpus"].as_u64().is_some_and(|c| c >= 1));
    assert!(v["peak_rss_mb"].as_f64().is_some_and(|m| m > 0.0));
    let phases = v["phases"].as_array().expect("phases");
    let phase_paths: Vec<&str> = phases.iter().filter_map(|p| p["path"].as_str()).collect();
    assert_eq!(phase_paths, ["warm", "warm_after_idle"], "{phases:?}");
    for p in phases {
        assert_eq!(p["n"], 2, "every warm sample has its phases reported: {p}");
    }
    assert!(v["pools_rss"]["pools"].as_u64().is_some_and(|p| p >= 1));
    let targets = v["targets"].as_array().expect("targets");
    assert!(
        targets
            .iter()
            .any(|t| t["target"] == "warm end to end" && t["runtime"] == "bash"),
        "{targets:?}"
    );
}

#[isol8_testkit::test(docker)]
fn containers_of_a_killed_engine_are_reaped_by_the_next_one() {
    let mut child = spawn_long_run();
    let pid = child.id();
    // SIGKILL: the engine gets no chance to clean up.
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert_eq!(
        containers_of_pid(pid).len(),
        1,
        "the orphan should still be there"
    );
    // Any new engine on this host removes it on start.
    let o = isol8()
        .args(["run", "-r", "bash", "-e", "true"])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        containers_of_pid(pid).is_empty(),
        "the orphan was not reaped"
    );
}

/// Lines of `text` in the engine's log format (`<time> [LEVEL] …`).
fn log_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            ["[WARN]", "[INFO]", "[DEBUG]", "[TRACE]"]
                .iter()
                .any(|lv| l.contains(lv))
        })
        .collect()
}

#[isol8_testkit::test(docker)]
fn engine_log_lines_stay_off_stderr_without_dash_v() {
    // A memory kill makes the engine discard the sandbox (logged as routine engine
    // business, once as `WARN reset failed; destroying the sandbox`): none of that is
    // the user's. Which line the engine logs depends on timing; the filter itself is
    // pinned by `library_warnings_show_only_with_dash_v_except_in_serve`.
    let bomb = [
        "run",
        "-r",
        "python",
        "--memory",
        "64m",
        "-e",
        "b = b'x' * (400 << 20)",
    ];
    let o = isol8().args(bomb).output().expect("run");
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        log_lines(&err).is_empty(),
        "engine log lines on stderr: {err}"
    );
    assert!(!err.contains("reset failed"), "{err}");

    // The same run with -v shows the engine's log (at least where its configuration
    // came from), so the quiet above is the filter's doing.
    let o = isol8().arg("-v").args(bomb).output().expect("run");
    let err = stderr(&o);
    assert!(
        log_lines(&err).iter().any(|l| l.contains("[INFO]")),
        "no log with -v: {err}"
    );
}

#[isol8_testkit::test(docker)]
fn a_program_killed_by_a_signal_gets_one_line_saying_which() {
    let segv =
        "import os, signal; print('before', flush=True); os.kill(os.getpid(), signal.SIGSEGV)";
    // Streamed and buffered alike: the program's output, then the one line.
    for extra in [None, Some("--no-stream")] {
        let mut cmd = isol8();
        cmd.args(["run", "-r", "python"]);
        cmd.args(extra);
        let o = cmd.args(["-e", segv]).output().expect("run");
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(139), "{extra:?}: {err}");
        assert_eq!(stdout(&o), "before\n");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("--- ")).collect();
        assert_eq!(
            lines,
            ["--- KILLED BY SIGNAL SIGSEGV ---"],
            "{extra:?}: {err}"
        );
    }
    // --json says it in the result, not on stderr.
    let o = isol8()
        .args(["run", "-r", "python", "--json", "-e", segv])
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["exitReason"], "signal", "{v}");
    assert!(!stderr(&o).contains("KILLED BY SIGNAL"), "{}", stderr(&o));
}

#[isol8_testkit::test(docker)]
fn a_timeout_is_said_once() {
    for extra in [None, Some("--no-stream")] {
        let mut cmd = isol8();
        cmd.args(["run", "-r", "python", "--timeout", "1000"]);
        cmd.args(extra);
        let o = cmd
            .args(["-e", "import time; time.sleep(30)"])
            .output()
            .expect("run");
        assert_eq!(o.status.code(), Some(137), "{extra:?}");
        let err = stderr(&o);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("--- ")).collect();
        assert_eq!(lines, ["--- EXECUTION TIMED OUT ---"], "{extra:?}: {err}");
    }
}

#[isol8_testkit::test(docker)]
fn a_program_over_its_memory_limit_gets_one_line_naming_the_limit() {
    for extra in [None, Some("--no-stream")] {
        let mut cmd = isol8();
        cmd.args(["run", "-r", "python", "--memory", "128m"]);
        cmd.args(extra);
        let o = cmd
            .args(["-e", "b = b'x' * (400 << 20)"])
            .output()
            .expect("run");
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(137), "{extra:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("--- ")).collect();
        assert_eq!(
            lines,
            ["--- MEMORY LIMIT EXCEEDED (128m) ---"],
            "{extra:?}: {err}"
        );
    }
}
