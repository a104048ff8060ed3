//! Helpers shared by the CLI's integration tests.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True when a Docker daemon with the isol8 images is available. Outside CI a test
/// without one skips, saying so; in CI (`CI` set) that is a failure.
pub fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["image", "inspect", "isol8:bash"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(!ci, "Docker and the isol8 images are required in CI");
        eprintln!("SKIPPED: needs a Docker daemon with the isol8 images");
    }
    ok
}

/// isol8 containers created by the process `pid`.
pub fn isol8_containers_of(pid: u32) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            "label=isol8.managed=true",
            "--filter",
        ])
        .arg(format!("label=isol8.pid={pid}"))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

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
    while isol8_containers_of(child.id()).is_empty() {
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
