//! `isol8 run` and standard input, locally and with `--host` against a real `isol8
//! serve`: its own stdin is forwarded to the program (when the code came from `-e`, a
//! file or `--cmd`) and then end-of-file; `--stdin TEXT` takes precedence; code piped on
//! stdin is the code, not input; a caller that leaves our stdin open without writing
//! (as Node's `child_process.exec` does) does not hang a program that never reads; a
//! shell pipeline of two runs works; and 600 kB out before 120 kB in arrives whole.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::serve::{Server, KEY};
use common::text;
use isol8_testkit::{assert_big_output, big_input, BIG_IO_CODE, INPUT, STDIN_CASES};

/// Longest any one `isol8 run` here may take before the test kills it and fails.
const BOUND: Duration = Duration::from_secs(120);

/// `isol8` with `args`, and `--host URL` (with the key) when `host` is given.
fn isol8(host: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_isol8"));
    cmd.arg("run");
    if let Some(host) = host {
        cmd.args(["--host", host]).env("ISOL8_API_KEY", KEY);
    }
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child` with a watchdog that kills it after [`BOUND`] (the test then fails
/// on its status).
fn bounded(child: std::process::Child) -> Output {
    let pid = child.id() as i32;
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let dog = std::thread::spawn(move || {
        if watch.recv_timeout(BOUND).is_err() {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().expect("wait");
    let _ = done.send(());
    let _ = dog.join();
    out
}

/// Runs `cmd` with `input` written to its stdin from another thread, then closed.
fn with_input(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // The program may end without reading it all (a broken pipe is fine).
        let _ = stdin.write_all(&input);
    });
    let out = bounded(child);
    let _ = writer.join();
    out
}

/// Runs `cmd` with its stdin left open and never written, as a caller that spawns it
/// and ignores its stdin does.
fn with_stdin_left_open(mut cmd: Command) -> Output {
    let mut child = cmd.spawn().expect("spawn");
    let open = child.stdin.take().expect("stdin");
    let out = bounded(child);
    drop(open);
    out
}

fn assert_run(o: &Output, want: &str, what: &str) {
    assert_eq!(
        (text(&o.stdout).as_str(), o.status.code()),
        (want, Some(0)),
        "{what}: stderr {}",
        text(&o.stderr)
    );
}

/// Everything the CLI promises about stdin, on the local engine or a server.
fn stdin_is_forwarded_then_closed(host: Option<&str>) {
    let place = if host.is_some() { "--host" } else { "local" };
    for case in STDIN_CASES {
        let args = ["-r", case.runtime, "-e", case.code];
        let o = with_input(isol8(host, &args), INPUT.as_bytes());
        assert_run(&o, case.with_input, &format!("{place} {}", case.name));
        let o = with_input(isol8(host, &args), b"");
        assert_run(
            &o,
            case.without_input,
            &format!("{place} {}, empty", case.name),
        );
    }
    let read = STDIN_CASES[0];
    // Nothing to forward (/dev/null, as from a terminal): end-of-file at once, streamed
    // and buffered, also with --stdin.
    for extra in [None, Some("--no-stream")] {
        let mut args: Vec<&str> = extra.into_iter().collect();
        args.extend(["-r", read.runtime, "-e", read.code]);
        let mut cmd = isol8(host, &args);
        let o = bounded(cmd.stdin(Stdio::null()).spawn().expect("spawn"));
        assert_run(
            &o,
            read.without_input,
            &format!("{place} /dev/null {extra:?}"),
        );
        args.extend(["--stdin", INPUT]);
        let mut cmd = isol8(host, &args);
        let o = bounded(cmd.stdin(Stdio::null()).spawn().expect("spawn"));
        assert_run(&o, read.with_input, &format!("{place} --stdin {extra:?}"));
    }
    // Buffered, and as JSON.
    let o = with_input(
        isol8(host, &["--no-stream", "-r", read.runtime, "-e", read.code]),
        INPUT.as_bytes(),
    );
    assert_run(&o, read.with_input, &format!("{place} --no-stream"));
    let o = with_input(
        isol8(host, &["--json", "-r", read.runtime, "-e", read.code]),
        INPUT.as_bytes(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON result");
    assert_eq!(v["stdout"], read.with_input, "{place} --json: {v}");
    assert_eq!(v["exitCode"], 0, "{place} --json: {v}");
    // From a file and from --cmd too.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("read.py");
    std::fs::write(&file, read.code).expect("write");
    let o = with_input(
        isol8(host, &[file.to_str().expect("path")]),
        INPUT.as_bytes(),
    );
    assert_run(&o, read.with_input, &format!("{place} FILE"));
    let o = with_input(
        isol8(host, &["-r", "bash", "--cmd", "tr a-z A-Z"]),
        INPUT.as_bytes(),
    );
    assert_run(&o, "ALPHA\nBETA\n", &format!("{place} --cmd"));
    // --stdin wins over what is piped.
    let o = with_input(
        isol8(
            host,
            &["--stdin", INPUT, "-r", read.runtime, "-e", read.code],
        ),
        b"piped, not read\n",
    );
    assert_run(&o, read.with_input, &format!("{place} --stdin"));
    // Code on stdin is the code: the program's own stdin is empty.
    let o = with_input(
        isol8(host, &["-r", "python"]),
        b"import sys\nprint(len(sys.stdin.read()))\n",
    );
    assert_run(&o, "0\n", &format!("{place} code on stdin"));

    // A caller that never writes to our stdin nor closes it: a program that does not
    // read finishes at once, streamed and buffered.
    for extra in [None, Some("--no-stream")] {
        let mut args: Vec<&str> = extra.into_iter().collect();
        args.extend(["-r", "python", "-e", "print('done')"]);
        let o = with_stdin_left_open(isol8(host, &args));
        assert_run(&o, "done\n", &format!("{place} stdin left open {extra:?}"));
    }

    // 600 kB out before 120 kB in, streamed and buffered.
    let input = big_input();
    for extra in [None, Some("--no-stream")] {
        let mut args: Vec<&str> = extra.into_iter().collect();
        args.extend(["-r", "python", "-e", BIG_IO_CODE]);
        let o = with_input(isol8(host, &args), input.as_bytes());
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert_big_output(&text(&o.stdout), &format!("{place} {extra:?}"));
    }

    // The seeds' stateless chaining from a shell.
    let host_flag = host.map(|h| format!("--host {h} ")).unwrap_or_default();
    let script = format!(
        "\"$0\" run {host_flag}-r bash -e 'seq 3' | \"$0\" run {host_flag}-r python -e 'import sys; print(sum(map(int, sys.stdin)))'"
    );
    let child = Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_isol8")])
        .env("ISOL8_API_KEY", KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    let o = bounded(child);
    assert_run(&o, "6\n", &format!("{place} seq 3 | sum"));
}

#[isol8_testkit::test(docker)]
fn local_runs_get_the_piped_stdin_then_end_of_file() {
    stdin_is_forwarded_then_closed(None);
}

#[isol8_testkit::test(docker)]
fn remote_runs_get_the_piped_stdin_then_end_of_file() {
    let s = Server::start();
    stdin_is_forwarded_then_closed(Some(&s.base));
    s.stop();
}
