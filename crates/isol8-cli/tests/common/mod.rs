//! Helpers shared by the CLI's integration tests.

#![allow(dead_code, unused_imports)]

pub mod serve;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `isol8 run` of a long bash program and waits until its sandbox exists.
pub fn spawn_long_run() -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_isol8"))
        .args(["run", "-r", "bash", "-e", "echo started; sleep 60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while isol8_testkit::containers_of_pid(child.id()).is_empty() {
        assert!(Instant::now() < deadline, "the sandbox never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// The `isol8` binary run in `dir`, with `dir` as its home (so configs and logins there
/// are the only ones it sees) and no standard input.
pub fn isol8_in(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_isol8"));
    cmd.stdin(std::process::Stdio::null())
        .current_dir(dir)
        .env("HOME", dir);
    cmd
}

/// Bytes as (lossy) text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
