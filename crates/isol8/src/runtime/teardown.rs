//! Tests of the teardown library ([`super::TEARDOWN`]) on this machine: loaded into a
//! program that ends with `exit` or `quick_exit`, it must leave the exit status alone,
//! start exactly one holder (a task of the program's memory, not of its forked
//! children), and the holder must end when the program has: killed by its parent-death
//! signal, or on its own when the program was already gone. The `LD_PRELOAD` the agent
//! sets must not reach the program or its children; any other must.

use std::io::Read as _;
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the probe is called (a `bash` under another name): the holders it leaves are
/// found by this name, so nothing else this test process runs is touched.
const PROBE: &str = "isol8-probe";

/// What a probe run left: its stdout, its wait status and its holders.
type Probed = (String, std::process::ExitStatus, Vec<Holder>);

/// A holder the probe left.
#[derive(Debug)]
struct Holder {
    /// How it ended: `(si_code, si_status)`.
    end: (i32, i32),
    /// The CPUs it could run on (`Cpus_allowed_list` of its `/proc/PID/status`).
    cpus: String,
}

/// Runs `bash -c script` as [`PROBE`] with the library preloaded as the agent does
/// (`LD_PRELOAD` naming only it); see [`run_as_probe`].
fn run_probe(script: &str) -> Probed {
    run_as_probe("/bin/bash", script, |library| library.into())
}

/// Runs `program -c script` under the name [`PROBE`] with `LD_PRELOAD` set to
/// `preload(the library's path)`, this process being the subreaper that inherits what the
/// probe leaves.
fn run_as_probe(
    program: &str,
    script: &str,
    preload: impl FnOnce(&std::path::Path) -> std::ffi::OsString,
) -> Probed {
    // One probe at a time: under `cargo test` the tests share this process, and each
    // finds its holders by name among this process's children.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let library = dir.path().join("libisol8-teardown.so");
    std::fs::write(&library, super::TEARDOWN.contents).expect("write the library");
    let probe = dir.path().join(PROBE);
    symlink(program, &probe).expect("symlink the program");
    // SAFETY: prctl with integer arguments; it only changes who inherits our orphans.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
    let mut child = Command::new(&probe)
        .args(["-c", script])
        .env("LD_PRELOAD", preload(&library))
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
    let holders = holders
        .into_iter()
        .map(|pid| {
            let cpus = cpus_allowed(&pid.to_string());
            Holder {
                end: reap(pid),
                cpus,
            }
        })
        .collect();
    (out, status, holders)
}

/// The `Cpus_allowed_list` of process `pid` (`self` for this one).
fn cpus_allowed(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
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

/// Exactly one holder, which ended as designed: killed by `SIGKILL` when the program
/// died, or its own `exit(0)` when it found the program already gone.
fn assert_one_holder_ended_as_designed(holders: &[Holder]) {
    assert_eq!(holders.len(), 1, "holders: {holders:?}");
    let end = holders[0].end;
    assert!(
        end == (libc::CLD_KILLED, libc::SIGKILL) || end == (libc::CLD_EXITED, 0),
        "{holders:?}"
    );
}

#[test]
fn a_program_that_exits_leaves_one_holder_that_ends_with_it() {
    let (out, status, holders) = run_probe("echo hi; exit 7");
    assert_eq!((out.as_str(), status.code()), ("hi\n", Some(7)));
    assert_one_holder_ended_as_designed(&holders);
}

#[test]
fn forked_children_that_exit_start_no_holder() {
    // Each subshell is a forked bash that ends with `exit`: only the probe itself, the
    // process the library was loaded into, may start a holder.
    let (out, status, holders) = run_probe("(exit 3); echo $?; (exit 4); echo $?; exit 5");
    assert_eq!((out.as_str(), status.code()), ("3\n4\n", Some(5)));
    assert_one_holder_ended_as_designed(&holders);
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

#[test]
fn a_program_that_ends_with_quick_exit_leaves_one_holder_that_ends_with_it() {
    // Bun ends this way; ELF destructors do not run there. `quick_exit` flushes no stdio.
    let (out, status, holders) = run_as_probe(
        "/usr/bin/python3",
        "import ctypes, sys; print('hi'); sys.stdout.flush(); ctypes.CDLL(None).quick_exit(6)",
        |library| library.into(),
    );
    assert_eq!((out.as_str(), status.code()), ("hi\n", Some(6)));
    assert_one_holder_ended_as_designed(&holders);
}

#[test]
fn the_agents_preload_reaches_neither_the_program_nor_its_children() {
    let (out, status, holders) =
        // (`exit` last: bash would otherwise exec the last command in its own process.)
        run_probe("echo \"${LD_PRELOAD-unset}\"; sh -c 'echo \"${LD_PRELOAD-unset}\"'; exit");
    assert_eq!((out.as_str(), status.code()), ("unset\nunset\n", Some(0)));
    assert_eq!(holders.len(), 1, "holders: {holders:?}");
}

#[test]
fn a_preload_list_of_the_programs_own_stays_in_its_environment() {
    // Two entries (the library twice, loaded once): not the agent's variable.
    let mut listed = None;
    let (out, status, holders) = run_as_probe("/bin/bash", "echo \"$LD_PRELOAD\"", |library| {
        let list = format!("{} {}", library.display(), library.display());
        listed = Some(list.clone());
        list.into()
    });
    let listed = listed.expect("the list was made");
    assert_eq!(
        (out.as_str(), status.code()),
        (format!("{listed}\n").as_str(), Some(0))
    );
    assert_eq!(holders.len(), 1, "holders: {holders:?}");
}

#[test]
fn the_holder_is_started_on_one_cpu() {
    // Queued on the CPU the program leaves (see `pin_to_current_cpu` in the library): one
    // CPU of this process's set, where the machine lets this process run on several.
    let (_, _, holders) = run_probe("exit 0");
    assert_eq!(holders.len(), 1, "holders: {holders:?}");
    let mine = cpus_allowed("self");
    if mine.contains(['-', ',']) {
        assert!(
            holders[0].cpus.parse::<u32>().is_ok(),
            "{holders:?} of {mine}"
        );
    } else {
        assert_eq!(holders[0].cpus, mine, "{holders:?}");
    }
}
