//! Attacks on the sandbox, each run for real through the engine, each asserting that the
//! attack failed and that the engine and host are fine afterwards.
//!
//! Network probes only ever target TEST-NET-1 (192.0.2.0/24, reserved for documentation)
//! from a sandbox with no interface but loopback: the kernel refuses them with
//! ENETUNREACH before anything is sent.

use std::collections::BTreeMap;

use isol8::{Engine, EngineOptions};
use isol8_testkit::{assert_clean, code, engine, peak_rss_mb, run};

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn flooding_stdout_and_stderr_keeps_engine_memory_bounded() {
    let engine = engine(EngineOptions::default()).await;
    let before = peak_rss_mb();
    let mut req = code(
        "bash",
        "head -c 100000000 /dev/zero | tr '\\0' 'x' & head -c 100000000 /dev/zero | tr '\\0' 'y' >&2; wait",
    );
    req.timeout_ms = Some(60_000);
    let r = run(&engine, req).await;
    assert!(r.truncated);
    assert_eq!(r.exit_code, 0);
    assert!(
        r.stdout
            .contains("--- OUTPUT TRUNCATED (100000000 bytes, limit: 1048576) ---"),
        "{}",
        &r.stdout[r.stdout.len() - 200..]
    );
    assert!(r
        .stderr
        .contains("--- OUTPUT TRUNCATED (100000000 bytes, limit: 1048576) ---"));
    assert!(r.stdout.len() < 1_100_000 && r.stderr.len() < 1_100_000);
    let grown = peak_rss_mb() - before;
    assert!(
        grown < 64.0,
        "engine memory grew by {grown} MiB for 200 MB of output"
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_single_ten_megabyte_line_is_capped() {
    let engine = engine(EngineOptions::default()).await;
    let r = run(
        &engine,
        code("python", "import sys\nsys.stdout.write('z' * 10_000_000)\n"),
    )
    .await;
    assert!(r.truncated);
    let body = r.stdout.split('\n').next().expect("body");
    assert_eq!(body.len(), 1_048_576);
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn thousands_of_zombies_are_reaped_and_the_sandbox_stays_usable() {
    let options = EngineOptions {
        pids_limit: Some(4096),
        ..Default::default()
    };
    let engine = engine(options).await;
    // Each child forks a grandchild and exits at once: 2000 orphans land on the agent.
    let src = "import os\nfor i in range(2000):\n    pid = os.fork()\n    if pid == 0:\n        if os.fork() == 0:\n            os._exit(0)\n        os._exit(0)\n    os.waitpid(pid, 0)\nprint('forked')";
    let mut req = code("python", src);
    req.timeout_ms = Some(60_000);
    let r = run(&engine, req).await;
    assert_eq!(r.stdout, "forked\n", "{r:?}");
    let r2 = run(&engine, code("bash", "n=0; for s in /proc/[0-9]*/stat; do read -r _ _ st _ < $s 2>/dev/null; [ \"$st\" = Z ] && n=$((n+1)); done; echo zombies=$n")).await;
    assert_eq!(r2.stdout, "zombies=0\n");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn huge_environment_and_arguments_fail_clearly_or_work() {
    let engine = engine(EngineOptions::default()).await;
    // 1000 variables of 1 KiB each are fine.
    let mut req = code("bash", "env | grep -c '^BIG_'");
    req.env = (0..1000)
        .map(|i| (format!("BIG_{i}"), "v".repeat(1024)))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(run(&engine, req).await.stdout, "1000\n");
    // One variable longer than the kernel's per-string limit cannot be passed to exec:
    // a clear error, not a crash, and the engine keeps working.
    let mut req = code("bash", "echo unreachable");
    req.env.insert("HUGE".into(), "v".repeat(200_000));
    let err = engine.execute(req).await.expect_err("E2BIG");
    assert!(err.to_string().contains("Argument list too long"), "{err}");
    // Large code goes through a file, not argv.
    let big = format!("x = '{}'\nprint(len(x))", "a".repeat(300_000));
    assert_eq!(run(&engine, code("python", &big)).await.stdout, "300000\n");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn host_information_and_kernel_interfaces_are_hidden() {
    let engine = engine(EngineOptions::default()).await;
    let r = run(
        &engine,
        code(
            "bash",
            "head -c 16 /proc/kcore 2>/dev/null | wc -c; ls -A /sys/firmware 2>/dev/null | wc -l; ls -d /proc/[0-9]* | wc -l; hostname",
        ),
    )
    .await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "0", "/proc/kcore readable: {r:?}");
    assert_eq!(lines[1], "0", "/sys/firmware visible: {r:?}");
    let pids: usize = lines[2].parse().expect("count");
    assert!(pids < 10, "host processes visible: {pids}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    assert_ne!(
        lines[3],
        host.trim(),
        "the sandbox sees the host's hostname"
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn setuid_binaries_grant_nothing() {
    let engine = engine(EngineOptions::default()).await;
    let r = run(
        &engine,
        code(
            "bash",
            "n=$(find / -xdev -perm -4000 -type f 2>/dev/null | wc -l); echo setuid-files=$n; \
             for f in $(find / -xdev -perm -4000 -type f 2>/dev/null); do $f --help >/dev/null 2>&1; done; \
             su -c 'id -u' root </dev/null 2>/dev/null && echo became-root; \
             cp /bin/bash /sandbox/b && chmod u+s /sandbox/b && /sandbox/b -p -c 'id -u'",
        ),
    )
    .await;
    assert!(r.stdout.contains("setuid-files="), "{r:?}");
    assert!(!r.stdout.contains("became-root"), "{r:?}");
    assert!(r.stdout.trim_end().ends_with("1000"), "{r:?}");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn output_paths_refuse_symlinks_and_hard_links_to_system_files() {
    let engine = engine(EngineOptions::default()).await;
    let mut req = code(
        "bash",
        "ln -s /etc/shadow /sandbox/shadow; ln -s /etc /sandbox/etc; ln /etc/passwd /sandbox/hard 2>/dev/null || echo no-hardlink; mkdir /sandbox/dir",
    );
    req.output_paths = vec![
        "/sandbox/shadow".into(),
        "/sandbox/etc/passwd".into(),
        "/sandbox/hard".into(),
        "/sandbox/dir".into(),
    ];
    let r = run(&engine, req).await;
    assert_eq!(r.stdout, "no-hardlink\n", "{r:?}");
    assert_eq!(
        r.files.expect("files requested"),
        BTreeMap::new(),
        "nothing may be read back"
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn request_files_are_written_and_read_as_the_sandbox_user_only() {
    let engine = engine(EngineOptions::default()).await;
    // Written by the agent on a thread whose filesystem identity is the sandbox user's:
    // created files and directories are its own, in /sandbox, /tmp and /dev/shm alike.
    let mut req = code(
        "bash",
        "stat -c '%n %u:%g' /sandbox/a/b/in.txt /sandbox/a /tmp/t.txt /dev/shm/s.txt; \
         cat /sandbox/a/b/in.txt; \
         echo secret > /sandbox/private; chmod 000 /sandbox/private; \
         mkdir /sandbox/locked; echo x > /sandbox/locked/f; chmod 000 /sandbox/locked",
    );
    req.files = BTreeMap::from([
        ("a/b/in.txt".to_string(), "hello".to_string()),
        ("/tmp/t.txt".to_string(), "t".to_string()),
        ("/dev/shm/s.txt".to_string(), "s".to_string()),
    ]);
    // Read back with the sandbox user's permissions: what it made unreadable to itself
    // stays unreadable (root's would not matter either: the agent has no DAC override).
    req.output_paths = vec![
        "/sandbox/a/b/in.txt".into(),
        "/sandbox/private".into(),
        "/sandbox/locked/f".into(),
    ];
    let r = run(&engine, req).await;
    assert_eq!(
        r.stdout,
        "/sandbox/a/b/in.txt 1000:1000\n/sandbox/a 1000:1000\n/tmp/t.txt 1000:1000\n\
         /dev/shm/s.txt 1000:1000\nhello",
        "{r:?}"
    );
    let files = r.files.expect("files requested");
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["/sandbox/a/b/in.txt"],
        "{files:?}"
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn network_none_reaches_nothing() {
    let engine = engine(EngineOptions::default()).await;
    let src = r#"
import errno, socket
def attempt(kind, fn):
    try:
        fn(); print(kind, "OPEN")
    except OSError as e:
        print(kind, errno.errorcode.get(e.errno, e.errno))
def tcp():
    s = socket.socket(); s.settimeout(2); s.connect(("192.0.2.1", 80))
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("192.0.2.1", 53))
def icmp():
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
def dns():
    socket.getaddrinfo("example.com", 80)
attempt("tcp", tcp); attempt("udp", udp); attempt("icmp", icmp)
try:
    dns(); print("dns OPEN")
except socket.gaierror:
    print("dns refused")
"#;
    let r = run(&engine, code("python", src)).await;
    assert_eq!(
        r.stdout, "tcp ENETUNREACH\nudp ENETUNREACH\nicmp EPERM\ndns refused\n",
        "{r:?}"
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_sandbox_killed_from_outside_ends_the_run_as_sandbox_lost() {
    let engine = engine(EngineOptions::default()).await;
    let e2 = engine.clone();
    let running = tokio::spawn(async move { e2.execute(code("bash", "sleep 60")).await });
    let mut id = None;
    for _ in 0..200 {
        if let Some(c) = engine.live_containers().first() {
            id = Some(c.clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let id = id.expect("the sandbox never appeared");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    engine
        .docker()
        .kill_container(&id, None::<bollard::query_parameters::KillContainerOptions>)
        .await
        .expect("kill");
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(15), running)
        .await
        .expect("the run must not hang")
        .expect("join");
    // The program died with its sandbox: a result that says so, not a made-up exit.
    let r = outcome.expect("a program killed with its sandbox has a result");
    assert_eq!(
        (r.exit_code, r.exit_reason),
        (137, Some(isol8::ExitReason::SandboxLost)),
        "{r:?}"
    );
    assert_eq!(r.container_id.as_deref(), Some(id.as_str()));
    // The engine recovers: the next run works.
    assert_eq!(run(&engine, code("bash", "echo ok")).await.stdout, "ok\n");
    assert_clean(&engine).await;
}

/// A consumer that stops reading a flood of output and goes away: the run is killed and
/// its container removed promptly (the attach stream is closed before the removal, which
/// the daemon would otherwise hold up until its own request timeout).
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_consumer_that_abandons_a_flood_gets_the_run_killed_and_reclaimed() {
    use futures_util::StreamExt;
    let engine = engine(EngineOptions {
        max_output_size: Some(256 << 20),
        ..Default::default()
    })
    .await;
    let mut events = engine
        .execute_stream(code(
            "python",
            "import sys\nwhile True: sys.stdout.write('x' * 65536)",
        ))
        .await
        .expect("stream");
    for _ in 0..10 {
        events.next().await.expect("output flows");
    }
    // Let the sandbox fill every buffer on the way, then walk away.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    drop(events);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while (engine.running() > 0 || !isol8_testkit::leftovers(&engine).await.is_empty())
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(engine.running(), 0, "the abandoned run is still running");
    assert!(
        isol8_testkit::leftovers(&engine).await.is_empty(),
        "its container is still there"
    );
    assert_clean(&engine).await;
}
