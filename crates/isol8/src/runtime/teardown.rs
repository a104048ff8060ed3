//! Tests of the teardown library ([`super::TEARDOWN`]) on this machine: loaded into a
//! program that ends with `exit`, it must leave the exit status alone, start exactly one
//! holder (a task of the program's memory, not of its forked children), and the holder
//! must end when the program has: killed by its parent-death signal, or on its own when
//! the program was already gone.

use std::io::Read as _;
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the probe is called (a `bash` under another name): the holders it leaves are
/// found by this name, so nothing else this test process runs is touched.
const PROBE: &str = "isol8-probe";

/// Runs `bash -c script` as [`PROBE`] with the library preloaded, this process being the
/// subreaper that inherits what the probe leaves. Returns the probe's stdout, its wait
/// status and how each holder ended (`(si_code, si_status)`).
fn run_probe(script: &str) -> (String, std::process::ExitStatus, Vec<(i32, i32)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let library = dir.path().join("libisol8-teardown.so");
    std::fs::write(&library, super::TEARDOWN.contents).expect("write the library");
    let probe = dir.path().join(PROBE);
    symlink("/bin/bash", &probe).expect("symlink bash");
    // SAFETY: prctl with integer arguments; it only changes who inherits our orphans.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
    let mut child = Command::new(&probe)
        .args(["-c", script])
        .env("LD_PRELOAD", &library)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start bash");
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    let status = child.wait().expect("wait");
    // The probe is reaped: whatever it started is our child now (orphans are re-parented
    // before their parent's exit can be collected), alive or a zombie until we reap it.
    let me = std::process::id().to_string();
    let holders: Vec<libc::pid_t> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(str::trim).map(str::to_string))
            };
            field("Name:").as_deref() == Some(PROBE) && field("PPid:").as_deref() == Some(&me)
        })
        .collect();
    let ends = holders.into_iter().map(reap).collect();
    (out, status, ends)
}

/// Waits (up to 10 s) for our child `pid` to end and reaps it: `(si_code, si_status)`.
fn reap(pid: libc::pid_t) -> (i32, i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it for our own child.
        let (rc, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let rc = libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            );
            (rc, info)
        };
        assert_eq!(rc, 0, "waitid({pid}): {}", std::io::Error::last_os_error());
        // SAFETY: si_pid and si_status are valid for a SIGCHLD-kind siginfo.
        let (got, status) = unsafe { (info.si_pid(), info.si_status()) };
        if got == pid {
            return (info.si_code, status);
        }
        assert!(
            Instant::now() < deadline,
            "holder {pid} still alive after 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How a holder may end: killed by `SIGKILL` when the program died, or its own `exit(0)`
/// when it found the program already gone.
fn holder_ended_as_designed(end: (i32, i32)) -> bool {
    end == (libc::CLD_KILLED, libc::SIGKILL) || end == (libc::CLD_EXITED, 0)
}

#[test]
fn a_program_that_exits_leaves_one_holder_that_ends_with_it() {
    let (out, status, holders) = run_probe("echo hi; exit 7");
    assert_eq!((out.as_str(), status.code()), ("hi\n", Some(7)));
    assert_eq!(holders.len(), 1, "holders: {holders:?}");
    assert!(holder_ended_as_designed(holders[0]), "{holders:?}");
}

#[test]
fn forked_children_that_exit_start_no_holder() {
    // Each subshell is a forked bash that ends with `exit`: only the probe itself, the
    // process the library was loaded into, may start a holder.
    let (out, status, holders) = run_probe("(exit 3); echo $?; (exit 4); echo $?; exit 5");
    assert_eq!((out.as_str(), status.code()), ("3\n4\n", Some(5)));
    assert_eq!(holders.len(), 1, "holders: {holders:?}");
    assert!(holder_ended_as_designed(holders[0]), "{holders:?}");
}

#[test]
fn a_program_killed_by_a_signal_leaves_no_holder() {
    // No `exit`, so no destructor: the kernel frees the memory as it always did.
    let (out, status, holders) = run_probe("echo hi; kill -KILL $$");
    assert_eq!(
        (out.as_str(), status.signal()),
        ("hi\n", Some(libc::SIGKILL))
    );
    assert!(holders.is_empty(), "holders: {holders:?}");
}
