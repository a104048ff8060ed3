//! The data path that skips the Docker daemon (issue 14 item 2): frames between engine
//! and agent go over a Unix socket the engine owns, one per sandbox, mounted read-only in
//! that sandbox alone. These tests check that the frames really take it, that nothing in
//! a sandbox can reach its own socket, another sandbox's or the engine's others, and that
//! the attached stdio still carries everything when asked to.

use isol8::docker::EngineConfig;
use isol8::{DockerEngine, EngineOptions};
use isol8_protocol::agent::{Frame, FrameDecoder, Hello, Kind};
use isol8_protocol::{PoolSize, PoolStrategy};
use isol8_testkit::{assert_clean, code, engine_with, run};

/// A pool of two sandboxes (so another sandbox is there to be reached), frames over
/// the data socket unless `stdio_frames`.
async fn pooled(stdio_frames: bool) -> DockerEngine {
    let engine = engine_with(EngineConfig {
        options: EngineOptions {
            pool_strategy: Some(PoolStrategy::Fast),
            pool_size: Some(PoolSize::Split { clean: 2, dirty: 2 }),
            ..Default::default()
        },
        stdio_frames,
        ..Default::default()
    })
    .await;
    engine.prewarm(&["python".into()]).await.expect("prewarm");
    engine
}

/// The frames a container wrote to its stdout (`docker logs`, stdout only). The
/// container is killed first: Docker's log driver keeps a line without its newline (a
/// frame of JSON) until more comes or the container stops.
fn stdout_frames(container: &str) -> Vec<Frame> {
    let killed = std::process::Command::new("docker")
        .args(["kill", container])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("docker kill");
    assert!(killed.success(), "docker kill {container}");
    logged_frames(container)
}

fn logged_frames(container: &str) -> Vec<Frame> {
    let out = std::process::Command::new("docker")
        .args(["logs", container])
        .stderr(std::process::Stdio::null())
        .output()
        .expect("docker logs");
    assert!(out.status.success(), "docker logs {container}");
    let mut decoder = FrameDecoder::new();
    decoder.push(&out.stdout);
    let mut frames = Vec::new();
    while let Some(f) = decoder.next_frame().expect("frames") {
        frames.push(f);
    }
    frames
}

/// Looks, as the sandbox user, for every way to the engine's sockets: the data socket
/// directory, a connection to its socket, every socket file on the filesystems the
/// sandbox sees, and the mounts it has.
const PROBE: &str = r#"
import os, socket, stat
found = []
try:
    os.listdir("/run/isol8-data")
    found.append("listed /run/isol8-data")
except PermissionError:
    pass
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("/run/isol8-data/agent.sock")
    found.append("connected to its data socket")
except OSError as e:
    print("connect:", e.__class__.__name__)
for root, dirs, files in os.walk("/", onerror=lambda e: None):
    if root.startswith(("/proc", "/sys")):
        dirs[:] = []
        continue
    for name in files + dirs:
        try:
            if stat.S_ISSOCK(os.lstat(os.path.join(root, name)).st_mode):
                found.append("socket " + os.path.join(root, name))
        except OSError:
            pass
mounts = [l.split()[4] for l in open("/proc/self/mountinfo") if "isol8" in l.split()[3]]
print("mounts:", mounts)
print("found:", found or "nothing")
"#;

#[isol8_testkit::test(docker)]
async fn frames_bypass_the_daemon_and_no_sandbox_reaches_a_socket() {
    let engine = pooled(false).await;
    let r = run(&engine, code("python", PROBE)).await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    // Its own directory is mounted (and closed to the sandbox user); nothing else of the
    // engine's is, and no socket file is anywhere it can look.
    assert!(
        r.stdout.contains("connect: PermissionError"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("mounts: ['/run/isol8-data']"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("found: nothing"), "{}", r.stdout);

    // On the host, the socket is gone once the agent connected (checked before the kill
    // below, after which the pool starts a replacement).
    let base = isol8::docker::data_socket::base();
    let prefix = format!("{}-", std::process::id());
    let left: Vec<_> = std::fs::read_dir(&base)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    // Each sandbox's directory (and the socket in it) is removed once its agent has
    // connected: nothing of this engine's is left to connect to.
    assert!(left.is_empty(), "{left:?}");

    // The container's stdout carried the hello and nothing after it: every other frame
    // (the exec, the output, the exit, the reset) went over the data socket.
    let id = r.container_id.clone().expect("container id");
    let frames = stdout_frames(&id);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].kind, Kind::Hello);
    let hello: Hello = frames[0].parse().expect("hello");
    assert!(hello.data_socket, "{hello:?}");

    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker)]
async fn with_stdio_frames_everything_goes_through_the_attached_stdio() {
    let engine = pooled(true).await;
    let r = run(&engine, code("python", "print(1)")).await;
    assert_eq!(r.stdout, "1\n", "{r:?}");
    let frames = stdout_frames(&r.container_id.clone().expect("container id"));
    let hello: Hello = frames[0].parse().expect("hello");
    assert!(!hello.data_socket, "{hello:?}");
    // The hello, the output and the exit at least (the reset's answer may follow).
    let kinds: Vec<Kind> = frames.iter().map(|f| f.kind).collect();
    assert!(
        kinds.starts_with(&[Kind::Hello, Kind::Prestarted])
            && kinds.contains(&Kind::Output)
            && kinds.contains(&Kind::Exited),
        "{kinds:?}"
    );
    assert_clean(&engine).await;
}
