//! Drives the real agent binary over pipes, as the engine does over a container's stdio.
//!
//! Run as root (as in CI), the agent drops to a dedicated unused uid for the programs, so
//! privilege dropping and "kill everything of the sandbox user" are exercised for real.
//! Run as another user, it runs programs as that user and kills its own descendants.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use isol8_protocol::agent::{
    self, ExecSpec, Exited, FileWrite, Frame, Hello, Kind, Step, StepPhase, Stream,
    PROTOCOL_VERSION,
};

/// Each test gets its own uid: killing "everything of the sandbox user" in one test must
/// not hit another test's programs.
const TEST_UID_BASE: u32 = 54_300;

struct Agent {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    root: std::path::PathBuf,
    uid: u32,
}

#[derive(Debug, Default)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    phases: Vec<(Stream, StepPhase)>,
    exited: Option<Exited>,
    failed: Option<String>,
}

impl Agent {
    fn start(name: &str, n: u32) -> Agent {
        Self::start_with(name, n, &[])
    }

    /// Starts an agent with extra environment variables.
    fn start_with(name: &str, n: u32, env: &[(&str, &str)]) -> Agent {
        Self::start_cmd(name, n, |cmd| {
            cmd.envs(env.iter().copied());
        })
    }

    /// Starts an agent after `adjust` has had its say on the agent's command.
    fn start_cmd(name: &str, n: u32, adjust: impl FnOnce(&mut Command)) -> Agent {
        let root =
            std::env::temp_dir().join(format!("isol8-agent-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("root");
        // SAFETY: geteuid has no preconditions.
        let is_root = unsafe { libc::geteuid() } == 0;
        let uid = if is_root {
            TEST_UID_BASE + n
        } else {
            unsafe { libc::geteuid() }
        };
        if is_root {
            std::os::unix::fs::chown(&root, Some(uid), Some(uid)).expect("chown root");
        }
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_isol8-agent"));
        cmd.env("ISOL8_AGENT_UID", uid.to_string())
            .env("ISOL8_AGENT_GID", uid.to_string())
            .env("ISOL8_AGENT_ROOT", &root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("spawn agent");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let hello = agent::read_frame(&mut stdout)
            .expect("read")
            .expect("hello frame");
        assert_eq!(hello.kind, Kind::Hello);
        let hello: Hello = hello.parse().expect("hello json");
        assert_eq!(hello.protocol, PROTOCOL_VERSION);
        Agent {
            child,
            stdin,
            stdout,
            root,
            uid,
        }
    }

    fn path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.root.display())
    }

    fn spec(&self, steps: Vec<Step>) -> ExecSpec {
        ExecSpec {
            protocol: PROTOCOL_VERSION,
            steps,
            env: BTreeMap::from([(
                "PATH".to_string(),
                "/usr/local/bin:/usr/bin:/bin".to_string(),
            )]),
            cwd: self.root.display().to_string(),
            stdin: None,
            interactive: false,
            timeout_ms: 10_000,
            max_output_bytes: 1 << 20,
            files: vec![],
            output_paths: vec![],
            max_read_bytes: 1 << 20,
            measure_usage: true,
            memory_limit_bytes: None,
        }
    }

    fn exec(&mut self, spec: &ExecSpec) -> Outcome {
        agent::write_frame(&mut self.stdin, &Frame::json(Kind::Exec, spec)).expect("send exec");
        let mut out = Outcome::default();
        loop {
            let f = agent::read_frame(&mut self.stdout)
                .expect("read")
                .expect("agent closed stdout");
            match f.kind {
                Kind::Output => {
                    let (stream, phase, data) = agent::decode_output(&f.payload).expect("output");
                    out.phases.push((stream, phase));
                    match stream {
                        Stream::Stdout => out.stdout.extend_from_slice(data),
                        Stream::Stderr => out.stderr.extend_from_slice(data),
                    }
                }
                Kind::Exited => {
                    out.exited = Some(f.parse().expect("exited"));
                    return out;
                }
                Kind::ExecFailed => {
                    out.failed = Some(f.parse::<agent::ExecFailed>().expect("failed").message);
                    return out;
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}

impl Agent {
    /// Sends a reset of the agent's root and returns its answer.
    fn reset(&mut self) -> agent::ResetDone {
        let wipe = vec![self.root.display().to_string()];
        agent::write_frame(
            &mut self.stdin,
            &Frame::json(Kind::Reset, &agent::ResetSpec { wipe }),
        )
        .expect("send reset");
        let f = agent::read_frame(&mut self.stdout)
            .expect("read")
            .expect("frame");
        assert_eq!(f.kind, Kind::ResetDone);
        f.parse().expect("json")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn bash(phase: StepPhase, script: &str) -> Step {
    Step {
        phase,
        argv: vec!["bash".into(), "-c".into(), script.into()],
        preload: None,
    }
}

fn processes_of(uid: u32) -> Vec<String> {
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let owner = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1));
        let state = status
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or("");
        let cmd = std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default();
        if owner == Some(&uid.to_string()) && !state.contains("Z") && cmd.contains("sleep") {
            found.push(format!("{name}: {cmd}"));
        }
    }
    found
}

#[test]
fn runs_a_step_and_reports_output_and_exit_code() {
    let mut a = Agent::start("basic", 1);
    let out = a.exec(&a.spec(vec![bash(
        StepPhase::Code,
        "echo hi; echo err >&2; id -u; exit 3",
    )]));
    let exited = out.exited.expect("exited");
    assert_eq!(exited.exit_code, 3);
    assert!(!exited.timed_out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("hi\n{}\n", a.uid)
    );
    assert_eq!(out.stderr, b"err\n");
    // The same agent serves a second execution.
    let out = a.exec(&a.spec(vec![bash(StepPhase::Code, "echo again")]));
    assert_eq!(out.stdout, b"again\n");
    assert_eq!(out.exited.expect("exited").exit_code, 0);
}

#[test]
fn failing_setup_stops_before_the_code() {
    let mut a = Agent::start("setup", 2);
    let out = a.exec(&a.spec(vec![
        bash(StepPhase::Setup, "echo preparing; exit 5"),
        bash(StepPhase::Code, "echo code"),
    ]));
    let exited = out.exited.expect("exited");
    assert_eq!(exited.exit_code, 5);
    assert_eq!(exited.phase, Some(StepPhase::Setup));
    assert_eq!(out.stdout, b"preparing\n");
    assert!(out.phases.iter().all(|(_, p)| *p == StepPhase::Setup));
}

#[test]
fn timeout_kills_the_whole_tree_including_escapees() {
    let mut a = Agent::start("timeout", 3);
    let mut spec = a.spec(vec![bash(
        StepPhase::Code,
        "(trap '' TERM; setsid sleep 1000 &); (sleep 1001 &); trap '' TERM; echo started; sleep 1002",
    )]);
    spec.timeout_ms = 1000;
    let t = Instant::now();
    let out = a.exec(&spec);
    let exited = out.exited.expect("exited");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(exited.timed_out);
    assert_eq!(exited.exit_code, 137);
    assert_eq!(exited.signal, Some(9), "the agent's own kill");
    assert_eq!(out.stdout, b"started\n");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        processes_of(a.uid),
        Vec::<String>::new(),
        "processes survived the timeout"
    );
}

#[test]
fn background_processes_do_not_outlive_a_normal_exit() {
    let mut a = Agent::start("background", 4);
    let t = Instant::now();
    let out = a.exec(&a.spec(vec![bash(
        StepPhase::Code,
        "(setsid sleep 1003 &); sleep 1004 & echo done",
    )]));
    assert_eq!(out.exited.expect("exited").exit_code, 0);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "waited for background processes"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(processes_of(a.uid), Vec::<String>::new());
}

#[test]
fn output_cap_truncates_exactly_and_counts_the_rest() {
    let mut a = Agent::start("cap", 5);
    let mut spec = a.spec(vec![bash(
        StepPhase::Code,
        "head -c 300000 /dev/zero; echo small >&2",
    )]);
    spec.max_output_bytes = 1000;
    let out = a.exec(&spec);
    let exited = out.exited.expect("exited");
    assert_eq!(out.stdout.len(), 1000);
    assert_eq!(exited.stdout.total_bytes, 300_000);
    assert!(exited.stdout.truncated);
    assert!(!exited.stderr.truncated);
    assert_eq!(out.stderr, b"small\n");
}

#[test]
fn stdin_files_and_output_paths() {
    let mut a = Agent::start("files", 6);
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut spec = a.spec(vec![bash(
        StepPhase::Code,
        "read line; cat in/deep/data.txt; echo \"$line\" > out.txt; ln -s /etc/hostname link.txt; mkdir d",
    )]);
    spec.cwd = a.path("work");
    spec.stdin = Some(b64(b"from stdin\n"));
    spec.files = vec![FileWrite {
        path: a.path("work/in/deep/data.txt"),
        content: b64(b"nested\n"),
        mode: None,
    }];
    spec.output_paths = vec![
        a.path("work/out.txt"),
        a.path("work/link.txt"),
        a.path("work/d"),
        a.path("work/none"),
    ];
    let out = a.exec(&spec);
    let exited = out.exited.expect("exited");
    assert_eq!(
        exited.exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"nested\n");
    assert_eq!(
        exited
            .files
            .get(&a.path("work/out.txt"))
            .map(String::as_str),
        Some(b64(b"from stdin\n").as_str())
    );
    assert_eq!(exited.files.len(), 1);
    assert!(exited
        .file_errors
        .get(&a.path("work/link.txt"))
        .is_some_and(|e| e.contains("symlink")));
    assert!(exited.file_errors.contains_key(&a.path("work/d")));
    assert!(exited.file_errors.contains_key(&a.path("work/none")));
}

#[test]
fn file_paths_outside_the_root_or_through_symlinks_fail_the_exec() {
    let mut a = Agent::start("badpaths", 7);
    std::os::unix::fs::symlink("/etc", a.root.join("etc-link")).expect("symlink");
    for path in [
        "/etc/isol8-test-evil".to_string(),
        a.path("etc-link/isol8-test-evil"),
        a.path("a/../../x"),
    ] {
        let mut spec = a.spec(vec![bash(StepPhase::Code, "echo should-not-run")]);
        spec.files = vec![FileWrite {
            path: path.clone(),
            content: String::new(),
            mode: None,
        }];
        let out = a.exec(&spec);
        assert!(out.failed.is_some(), "{path} was accepted");
        assert!(out.stdout.is_empty());
    }
    assert!(!std::path::Path::new("/etc/isol8-test-evil").exists());
}

#[test]
fn files_and_output_paths_in_the_other_writable_directories() {
    // Stands in for /tmp: another directory the sandbox user may write (world-writable
    // and sticky, as /tmp is).
    let other = std::env::temp_dir().join(format!("isol8-agent-test-other-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&other);
    std::fs::create_dir_all(&other).expect("other");
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let o = other.display().to_string();
    let mut a = Agent::start_with("writable", 21, &[("ISOL8_AGENT_WRITABLE", &o)]);
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut spec = a.spec(vec![bash(
        StepPhase::Code,
        &format!("cat {o}/in/data.txt; echo made > {o}/out.txt; ln -s /etc/hostname {o}/link; id -u > {o}/who"),
    )]);
    spec.files = vec![FileWrite {
        path: format!("{o}/in/data.txt"),
        content: b64(b"from the other dir\n"),
        mode: None,
    }];
    spec.output_paths = vec![
        format!("{o}/out.txt"),
        format!("{o}/link"),
        format!("{o}/who"),
    ];
    let out = a.exec(&spec);
    let exited = out.exited.expect("exited");
    assert_eq!(
        exited.exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"from the other dir\n");
    assert_eq!(
        exited
            .files
            .get(&format!("{o}/out.txt"))
            .map(String::as_str),
        Some(b64(b"made\n").as_str())
    );
    assert!(exited
        .file_errors
        .get(&format!("{o}/link"))
        .is_some_and(|e| e.contains("symlink")));
    // The file was written as the sandbox user, not as the agent.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(other.join("in/data.txt")).expect("written");
    assert_eq!(meta.uid(), a.uid);
    // Through the planted symlink, and out of the directory with `..`: refused.
    std::fs::create_dir_all(other.join("d")).expect("dir");
    std::os::unix::fs::symlink("/etc", other.join("d/etc")).expect("symlink");
    for path in [
        format!("{o}/d/etc/isol8-test-evil"),
        format!("{o}/../isol8-test-evil"),
    ] {
        let mut spec = a.spec(vec![bash(StepPhase::Code, "echo should-not-run")]);
        spec.files = vec![FileWrite {
            path: path.clone(),
            content: String::new(),
            mode: None,
        }];
        let out = a.exec(&spec);
        assert!(out.failed.is_some(), "{path} was accepted");
        assert!(out.stdout.is_empty());
    }
    assert!(!std::path::Path::new("/etc/isol8-test-evil").exists());
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn missing_program_is_reported_not_fatal() {
    let mut a = Agent::start("missing", 8);
    let spec = a.spec(vec![Step {
        phase: StepPhase::Code,
        argv: vec!["definitely-not-a-program".into()],
        preload: None,
    }]);
    let out = a.exec(&spec);
    assert!(out
        .failed
        .is_some_and(|m| m.contains("definitely-not-a-program")));
    let out = a.exec(&a.spec(vec![bash(StepPhase::Code, "echo still alive")]));
    assert_eq!(out.stdout, b"still alive\n");
}

#[test]
fn many_zombies_are_reaped() {
    let mut a = Agent::start("zombies", 9);
    let out = a.exec(&a.spec(vec![bash(
        StepPhase::Code,
        "for i in $(seq 300); do (true &) ; done; echo ok",
    )]));
    assert_eq!(out.stdout, b"ok\n");
    let pid = a.child.id();
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    assert!(
        children.split_whitespace().count() < 5,
        "unreaped children: {children}"
    );
    let _ = a.stdin.flush();
}

#[test]
fn reset_wipes_files_including_read_only_and_hidden_ones() {
    let mut a = Agent::start("reset", 20);
    let out = a.exec(&a.spec(vec![bash(
        StepPhase::Code,
        "mkdir -p .hidden/deep locked && echo x > .hidden/deep/f && echo y > locked/f && chmod 0500 locked && chmod 0400 locked/f && echo z > plain",
    )]));
    assert_eq!(
        out.exited.expect("exited").exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(a.root.join("locked/f").exists());
    let wipe = vec![a.root.display().to_string()];
    agent::write_frame(
        &mut a.stdin,
        &Frame::json(Kind::Reset, &agent::ResetSpec { wipe }),
    )
    .expect("send reset");
    let f = agent::read_frame(&mut a.stdout)
        .expect("read")
        .expect("frame");
    assert_eq!(f.kind, Kind::ResetDone);
    let done: agent::ResetDone = f.parse().expect("json");
    assert!(done.ok, "{:?}", done.problem);
    let left: Vec<_> = std::fs::read_dir(&a.root).expect("root").collect();
    assert!(left.is_empty(), "left after reset: {left:?}");
    // The agent still serves executions after a reset.
    let out = a.exec(&a.spec(vec![bash(StepPhase::Code, "ls -A | wc -l")]));
    assert_eq!(out.stdout, b"0\n");
}

#[test]
fn reset_closes_every_connection_the_relay_holds() {
    use std::io::Read;
    use std::net::TcpStream;
    use std::os::unix::net::UnixListener;
    let dir = std::env::temp_dir().join(format!("isol8-agent-relay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let sock = dir.join("proxy.sock");
    let proxy = UnixListener::bind(&sock).expect("bind the stand-in proxy");
    let mut a = Agent::start_with(
        "relay",
        21,
        &[(agent::EGRESS_SOCKET_ENV, sock.to_str().expect("utf-8"))],
    );
    // What a program does: open a connection through the relay and leave it open.
    let mut client = TcpStream::connect(("127.0.0.1", agent::EGRESS_PORT)).expect("connect");
    client
        .write_all(b"CONNECT example.org:443 HTTP/1.1\r\n")
        .expect("write");
    let (mut upstream, _) = proxy.accept().expect("the relay dials the proxy");
    upstream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let n = upstream.read(&mut buf).expect("relayed bytes");
    assert!(n > 0 && buf[..n].starts_with(b"CONNECT"), "{:?}", &buf[..n]);

    let done = a.reset();
    assert!(done.ok, "{:?}", done.problem);
    // The relay closed its side: the proxy end reads end of file (not a timeout).
    assert_eq!(
        upstream.read(&mut buf).expect("end of file, not a timeout"),
        0,
        "the relayed connection outlived the reset"
    );
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    match client.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the program's end is still open: {other:?}"),
    }
    // The relay keeps serving new connections after the reset.
    let mut again = TcpStream::connect(("127.0.0.1", agent::EGRESS_PORT)).expect("connect");
    again.write_all(b"x").expect("write");
    let (mut up2, _) = proxy.accept().expect("relayed again");
    up2.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(up2.read(&mut buf).expect("read"), 1);
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `Sig*` masks (hexadecimal) of a `/proc/<pid>/status` text.
fn signal_mask(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.trim(), 16).expect("hex mask")
}

#[test]
fn programs_start_with_default_signal_dispositions_and_nothing_blocked() {
    // The agent inherits ignored and blocked signals the way PID 1 of a container may:
    // 32 (reserved by glibc, left ignored by posix_spawn), a real-time signal, SIGTERM,
    // SIGINT, SIGPIPE and SIGHUP ignored; SIGUSR1, SIGUSR2 and SIGRTMIN+5 blocked.
    // glibc's sigaction refuses signal 32, so the kernel is asked directly.
    let ignored = [
        32,
        40,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGPIPE,
        libc::SIGHUP,
    ];
    let mut a = Agent::start_cmd("signals", 14, |cmd| {
        // SAFETY: only async-signal-safe system calls in the forked child.
        unsafe {
            cmd.pre_exec(move || {
                // An all-zero kernel sigaction with handler 1 = SIG_IGN.
                let ignore = [1u64, 0, 0, 0];
                for sig in ignored {
                    libc::syscall(
                        libc::SYS_rt_sigaction,
                        sig,
                        ignore.as_ptr(),
                        std::ptr::null_mut::<u64>(),
                        8usize,
                    );
                }
                let mut block: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut block);
                libc::sigaddset(&mut block, libc::SIGUSR1);
                libc::sigaddset(&mut block, libc::SIGUSR2);
                libc::sigaddset(&mut block, libc::SIGRTMIN() + 5);
                libc::sigprocmask(libc::SIG_BLOCK, &block, std::ptr::null_mut());
                Ok(())
            });
        }
    });
    // The set-up really took: the agent itself has them ignored.
    let agent_status =
        std::fs::read_to_string(format!("/proc/{}/status", a.child.id())).expect("agent status");
    let agent_ignored = signal_mask(&agent_status, "SigIgn:");
    for sig in ignored {
        assert_ne!(
            agent_ignored & (1 << (sig - 1)),
            0,
            "signal {sig} not ignored in the agent: {agent_status}"
        );
    }

    for phase in [StepPhase::Setup, StepPhase::Code] {
        let out = a.exec(&a.spec(vec![bash(
            phase,
            "cat /proc/self/status; yes | head -1 >/dev/null; echo \"yes=${PIPESTATUS[0]}\"",
        )]));
        assert_eq!(out.exited.as_ref().map(|e| e.exit_code), Some(0), "{out:?}");
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(signal_mask(&status, "SigIgn:"), 0, "{phase:?}: {status}");
        assert_eq!(signal_mask(&status, "SigBlk:"), 0, "{phase:?}: {status}");
        // `yes` dies of SIGPIPE when `head` has gone, as under any shell.
        assert!(status.ends_with("yes=141\n"), "{phase:?}: {status}");
    }
}

#[test]
fn the_ending_signal_and_the_executions_usage_are_reported() {
    let mut a = Agent::start("usage", 40);
    // Busy for 300 ms of its own CPU time (not a wall-clock loop: `$SECONDS` ticks on
    // whole seconds), ~64 MiB touched in one process, then killed by SIGSEGV.
    let out = a.exec(&a.spec(vec![bash(
        StepPhase::Code,
        "python3 -c 'import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass'; \
         python3 -c 'b = bytearray(64 << 20); b[::4096] = b\"x\" * (len(b) // 4096); print(\"touched\")'; \
         kill -SEGV $$",
    )]));
    assert_eq!(out.stdout, b"touched\n", "{out:?}");
    let exited = out.exited.expect("exited");
    assert_eq!(exited.exit_code, 139, "{exited:?}");
    assert_eq!(exited.signal, Some(11), "{exited:?}");
    assert!(!exited.oom_killed, "{exited:?}");
    let usage = exited.usage.expect("the cgroup of the test is readable");
    assert!(usage.wall_time_us >= 300_000, "{usage:?}");
    assert!(
        usage.cpu_time_us >= 200_000,
        "the busy loop's CPU is in the cgroup's: {usage:?}"
    );
    assert!(
        usage.peak_memory_bytes >= 64 << 20,
        "the python process's resident set: {usage:?}"
    );
    // A normal exit has no signal; measuring can be turned off.
    let mut spec = a.spec(vec![bash(StepPhase::Code, "exit 3")]);
    spec.measure_usage = false;
    let exited = a.exec(&spec).exited.expect("exited");
    assert_eq!((exited.exit_code, exited.signal), (3, None));
    assert_eq!(exited.usage, None);
}

/// A stand-in for a pre-started interpreter, in Bash (the agent knows no language): it
/// waits for the request, then prints its own pid and the request's last field (the
/// code) instead of running it. Its command line carries "sleep" so that
/// [`processes_of`] sees it while it waits.
const WAITING_LOADER: &str = r#": sleep-while-waiting
exec 4<&-
printf r >&5
exec 5>&-
code=$(tr '\0' '\n' <&3 | tail -n 1)
exec 3<&-
echo "pre-started $$: $code"
"#;

impl Agent {
    /// Asks for a waiting process running `argv` (e.g. [`WAITING_LOADER`]); returns the
    /// agent's answer and the pid of the process (0 when none is left).
    fn prestart(
        &mut self,
        argv: &[&str],
        startup_env: &[&str],
    ) -> (agent::Prestarted, libc::pid_t) {
        self.prestart_with(argv, startup_env, agent::PRESTART_FIRST_FD, true)
    }

    /// [`Agent::prestart`] with the descriptors from `first_fd` on, taking stdin or not.
    fn prestart_with(
        &mut self,
        argv: &[&str],
        startup_env: &[&str],
        first_fd: i32,
        serves_stdin: bool,
    ) -> (agent::Prestarted, libc::pid_t) {
        let spec = agent::PrestartSpec {
            inline: vec!["bash".into(), "-c".into()],
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: self.spec(vec![]).env,
            cwd: self.root.display().to_string(),
            startup_env: startup_env.iter().map(|s| s.to_string()).collect(),
            first_fd,
            serves_stdin,
            script: None,
            stdio: false,
            preload: None,
        };
        agent::write_frame(&mut self.stdin, &Frame::json(Kind::Prestart, &spec))
            .expect("send prestart");
        let f = agent::read_frame(&mut self.stdout)
            .expect("read")
            .expect("frame");
        assert_eq!(f.kind, Kind::Prestarted);
        let pid = processes_of(self.uid)
            .first()
            .and_then(|p| p.split(':').next()?.parse().ok())
            .unwrap_or(0);
        (f.parse().expect("json"), pid)
    }
}

#[test]
fn a_waiting_process_serves_the_next_matching_execution_and_no_other() {
    let mut a = Agent::start("prestart-serve", 41);
    let (done, pid) = a.prestart(&["bash", "-c", WAITING_LOADER], &["PATH"]);
    assert!(done.ok, "{done:?}");
    let mut spec = a.spec(vec![bash(StepPhase::Code, "the code")]);
    // Variables not read at start-up may differ.
    spec.env.insert("LATER".into(), "x".into());
    let out = a.exec(&spec);
    assert_eq!(out.exited.expect("exited").exit_code, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("pre-started {pid}: the code\n")
    );
    // It served once: the next execution starts fresh.
    let out = a.exec(&a.spec(vec![bash(StepPhase::Code, "echo fresh")]));
    assert_eq!(out.stdout, b"fresh\n");
}

#[test]
fn an_execution_it_cannot_serve_kills_the_waiting_process_before_anything_runs() {
    let mut a = Agent::start("prestart-refuse", 42);
    // Each spec is one the waiting process must not serve; its first step looks for it
    // (the marker split in two, so the looking shell's own command line has no match).
    let look = "for p in /proc/[0-9]*; do grep -qa sleep-while-''waiting $p/cmdline 2>/dev/null && echo found $p; done; echo looked";
    let refusals: Vec<(&str, ExecSpec)> = vec![
        ("a setup step", {
            a.spec(vec![
                bash(StepPhase::Setup, look),
                bash(StepPhase::Code, "true"),
            ])
        }),
        ("a start-up variable changed", {
            let mut s = a.spec(vec![bash(StepPhase::Code, look)]);
            s.env.insert("PATH".into(), "/usr/bin:/bin".into());
            s
        }),
        ("another working directory", {
            let mut s = a.spec(vec![bash(StepPhase::Code, look)]);
            s.files.push(FileWrite {
                path: a.path("sub/f"),
                content: String::new(),
                mode: None,
            });
            s.cwd = a.path("sub");
            s
        }),
        ("not the inline command", {
            let mut s = a.spec(vec![bash(StepPhase::Code, look)]);
            s.steps[0].argv.push("extra-argument".into());
            s
        }),
    ];
    for (why, spec) in refusals {
        let (done, _) = a.prestart(&["bash", "-c", WAITING_LOADER], &["PATH"]);
        assert!(done.ok, "{why}: {done:?}");
        let out = a.exec(&spec);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "looked\n",
            "{why}: {out:?}"
        );
        assert_eq!(out.exited.expect("exited").exit_code, 0, "{why}");
        let done = a.reset();
        assert!(done.ok, "{why}: {done:?}");
    }
}

#[test]
fn a_waiting_process_gets_its_descriptors_where_asked_and_stdin_only_if_it_takes_it() {
    let mut a = Agent::start("prestart-fds", 44);
    // WAITING_LOADER on 100, 101 and 102, saying which low or high descriptors it has.
    let loader = r#": sleep-while-waiting
for f in 3 4 5 100 101 102; do [ -e /proc/$$/fd/$f ] && fds="$fds $f"; done
exec 101<&-
printf r >&102
exec 102>&-
code=$(tr '\0' '\n' <&100 | tail -n 1)
exec 100<&-
echo "pre-started$fds: $code"
"#;
    let (done, pid) = a.prestart_with(&["bash", "-c", loader], &[], 100, false);
    assert!(done.ok && pid > 0, "{done:?}");
    // An execution that feeds stdin is not this loader's: it starts fresh.
    let mut spec = a.spec(vec![bash(StepPhase::Code, "cat")]);
    spec.stdin = Some(base64::engine::general_purpose::STANDARD.encode("fed"));
    let out = a.exec(&spec);
    assert_eq!(out.stdout, b"fed", "{out:?}");
    let done = a.reset();
    assert!(done.ok, "{done:?}");
    // One that does not is served, and the loader had exactly its three descriptors.
    let (done, _) = a.prestart_with(&["bash", "-c", loader], &[], 100, false);
    assert!(done.ok, "{done:?}");
    let out = a.exec(&a.spec(vec![bash(StepPhase::Code, "the code")]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pre-started 100 101 102: the code\n"
    );
}

#[test]
fn a_reset_kills_a_waiting_process_and_one_that_died_leaves_the_run_fresh() {
    let mut a = Agent::start("prestart-reset", 43);
    let (done, pid) = a.prestart(&["bash", "-c", WAITING_LOADER], &[]);
    assert!(done.ok && pid > 0, "{done:?}");
    let done = a.reset();
    assert!(done.ok, "{done:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(processes_of(a.uid), Vec::<String>::new());

    // One that ends before it is ready is reported; the next run starts fresh.
    let (done, _) = a.prestart(&["bash", "-c", "exec 5>&-; sleep 0.2; exit 7"], &[]);
    assert!(!done.ok, "{done:?}");
    assert!(
        done.problem
            .as_deref()
            .is_some_and(|p| p.contains("ended before it was ready")),
        "{done:?}"
    );
    // One that ends while it waits is forgotten; the run starts fresh too.
    let (done, _) = a.prestart(
        &[
            "bash",
            "-c",
            ": sleep-then-exit; printf r >&5; sleep 0.2; exit 7",
        ],
        &[],
    );
    assert!(done.ok, "{done:?}");
    std::thread::sleep(Duration::from_millis(500));
    let out = a.exec(&a.spec(vec![bash(StepPhase::Code, "echo fresh")]));
    assert_eq!(out.stdout, b"fresh\n", "{out:?}");
    assert_eq!(out.exited.expect("exited").exit_code, 0);
}
