//! Processes: the sandbox identity, spawning steps with privileges dropped, reaping, and
//! signalling the sandbox user's processes as that user.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::{log, Event};

/// Who runs the user's code, and where its files live.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Uid of the sandbox user.
    pub uid: libc::uid_t,
    /// Gid of the sandbox user.
    pub gid: libc::gid_t,
    /// Root of the writable area (`/sandbox`): the working directories live here.
    pub root: String,
    /// Every directory below which files may be written and read back: `root`, then
    /// `/tmp` and `/dev/shm` ([`isol8_protocol::layout::WRITABLE_DIRS`]).
    pub writable: Vec<String>,
    /// True when the agent runs as root and must drop privileges for children.
    pub drop_privileges: bool,
    /// True once [`clear_bounding_set`] emptied the agent's capability bounding set at
    /// start-up, before any other thread existed: every thread and child inherits the
    /// empty set, so [`become_user`] need not clear it again in each child.
    pub bounding_set_clear: bool,
    /// True when [`kill_all`] may call `kill(-1, SIGKILL)` itself ([`may_kill_directly`]).
    pub kill_directly: bool,
}

impl Identity {
    /// Reads `ISOL8_AGENT_{UID,GID,ROOT}` and `ISOL8_AGENT_WRITABLE` (the writable
    /// directories besides the root, `:`-separated) for tests outside a container;
    /// defaults: the layout.
    pub fn from_env() -> Self {
        use isol8_protocol::layout::{SANDBOX_GID, SANDBOX_ROOT, SANDBOX_UID, WRITABLE_DIRS};
        let num = |k: &str, d: u32| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let root = std::env::var("ISOL8_AGENT_ROOT").unwrap_or_else(|_| SANDBOX_ROOT.to_string());
        let others: Vec<String> = match std::env::var("ISOL8_AGENT_WRITABLE") {
            Ok(list) => list
                .split(':')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect(),
            Err(_) => WRITABLE_DIRS
                .iter()
                .filter(|d| **d != SANDBOX_ROOT)
                .map(|d| d.to_string())
                .collect(),
        };
        let writable = std::iter::once(root.clone()).chain(others).collect();
        Identity {
            uid: num("ISOL8_AGENT_UID", SANDBOX_UID),
            gid: num("ISOL8_AGENT_GID", SANDBOX_GID),
            root,
            writable,
            // SAFETY: geteuid has no preconditions.
            drop_privileges: unsafe { libc::geteuid() } == 0,
            bounding_set_clear: false,
            kill_directly: false,
        }
    }
}

/// Highest capability number [`clear_bounding_set`] tries (the kernel refuses numbers
/// above its `CAP_LAST_CAP` with `EINVAL`: 40 in Linux 5.9 to 6.x).
const LAST_CAPABILITY: libc::c_int = 63;

/// Empties the calling thread's capability bounding set (`PR_CAPBSET_DROP` of every
/// capability, which needs CAP_SETPCAP) and checks with `PR_CAPBSET_READ` that nothing is
/// left. The agent calls it once, first thing, so that every thread and child inherits
/// the empty set: each drop commits new credentials, about 3 µs a call on a 2-core VM,
/// which a step's child used to pay 64 times before every `execve` (docs/PERFORMANCE.md).
/// The agent's own permitted and effective capabilities are unchanged: the bounding set
/// only limits what an `execve` can grant. Errors: the first drop refused for another
/// reason than an unknown capability, or a capability still in the set.
pub fn clear_bounding_set() -> io::Result<()> {
    for cap in 0..=LAST_CAPABILITY {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
    }
    for cap in 0..=LAST_CAPABILITY {
        // SAFETY: prctl with integer arguments; 1 means still in the set.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } == 1 {
            return Err(io::Error::other(format!(
                "capability {cap} is still in the bounding set"
            )));
        }
    }
    Ok(())
}

/// Makes the agent non-dumpable (so the sandbox user cannot open `/proc/1/fd/*` or
/// `/proc/1/mem`) and a child subreaper (so orphans come back to it even when it is not
/// PID 1, as in tests).
pub fn harden_self() {
    // SAFETY: plain prctl calls with integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            log("cannot clear the dumpable flag");
        }
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

fn sigchld_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// Blocks SIGCHLD in the calling thread (and every thread it starts afterwards).
pub fn block_sigchld() {
    let set = sigchld_set();
    // SAFETY: valid set pointer; the old mask is not needed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Owns `waitpid` (as `wait4`, for the peak resident set of each reaped process). Children
/// exit → SIGCHLD → the reaper thread reaps every zombie and reports each exit either to
/// a registered waiter or to the main thread. The one exception is the running step's
/// process, which the main thread may reap first through its `pidfd` ([`reap_pidfd`]:
/// then the reaper finds nothing to report for it).
///
/// Spawning happens under the same lock the reaper holds while reaping, so a child can
/// never be reaped before its waiter is registered, nor behind std's back while std
/// collects a child whose `exec` failed.
#[derive(Clone)]
pub struct Reaper {
    waiters: Arc<Mutex<HashMap<libc::pid_t, Sender<i32>>>>,
}

impl Reaper {
    /// Starts the reaper thread.
    pub fn start(main: crate::inbox::Notifier) -> Reaper {
        let reaper = Reaper {
            waiters: Arc::new(Mutex::new(HashMap::new())),
        };
        let waiters = reaper.waiters.clone();
        thread::spawn(move || {
            let set = sigchld_set();
            loop {
                let mut sig = 0;
                // SAFETY: valid pointers; SIGCHLD is blocked in every thread.
                unsafe { libc::sigwait(&set, &mut sig) };
                let mut w = waiters.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    let mut status = 0;
                    // SAFETY: rusage is plain data.
                    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
                    // SAFETY: valid status and rusage pointers.
                    let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage) };
                    if pid <= 0 {
                        break;
                    }
                    match w.remove(&pid) {
                        Some(tx) => {
                            let _ = tx.send(status);
                        }
                        None => {
                            // ru_maxrss is in KiB: the largest resident set of the process
                            // and of the descendants it waited for.
                            let rss = (usage.ru_maxrss.max(0) as u64).saturating_mul(1024);
                            let _ = main.send(Event::Reaped(pid, status, rss));
                        }
                    }
                }
            }
        });
        reaper
    }

    /// Spawns `cmd` and returns a receiver for its wait status.
    pub fn spawn_waited(&self, cmd: &mut Command) -> io::Result<(Child, Receiver<i32>)> {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let child = cmd.spawn()?;
        let (tx, rx) = mpsc::channel();
        w.insert(child.id() as libc::pid_t, tx);
        Ok((child, rx))
    }
}

/// The signal that ended a process, from its wait status (`None` when it exited).
pub fn end_signal(status: i32) -> Option<i32> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

/// Exit code of a wait status: the code, or 128+N when killed by signal N.
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// Becomes the sandbox user: the capability bounding set cleared when asked (that needs
/// CAP_SETPCAP, so it comes before the uid change), no supplementary groups, then the
/// gid and the uid (real, effective and saved). Raw system calls only, so it is safe both
/// in a forked child and in one sharing the agent's memory (glibc's wrappers would
/// synchronise the ids of every thread of the agent); nothing is allocated. Errors: the
/// first call that failed.
pub(crate) fn become_user(
    uid: libc::uid_t,
    gid: libc::gid_t,
    clear_bounding_set: bool,
) -> io::Result<()> {
    // SAFETY: raw system calls with integer arguments (setgroups with no list).
    unsafe {
        if clear_bounding_set {
            for cap in 0..64 {
                libc::syscall(libc::SYS_prctl, libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
        }
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
            || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The calling thread's filesystem identity, taken as the sandbox user's for as long as
/// the value lives ([`FsIdentity::take`]) and given back when it is dropped.
///
/// Raw system calls change only the calling thread's credentials (credentials(7): the
/// libc wrappers of `setgroups` and friends would apply them to every thread); the real,
/// effective and saved ids stay as they were, so the sandbox user can neither signal nor
/// trace the thread meanwhile (the agent is also not dumpable). Moving the fsuid away
/// from 0 clears the thread's filesystem capabilities and moving it back restores them
/// (capabilities(7), "Effect of user ID changes on capabilities"); `CAP_SETGID`, which
/// restoring the groups needs, is not one of them.
pub(crate) struct FsIdentity {
    fsuid: libc::uid_t,
    fsgid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl FsIdentity {
    /// Gives the calling thread no supplementary groups, fsgid `gid` and fsuid `uid`
    /// (each checked: `setfsuid`/`setfsgid` report the previous id, not failure, so they
    /// are read back). Errors: the first call that failed or did not take effect; the
    /// thread then has its own identity back.
    pub(crate) fn take(uid: libc::uid_t, gid: libc::gid_t) -> io::Result<FsIdentity> {
        let saved = FsIdentity {
            fsuid: current_fsuid(),
            fsgid: current_fsgid(),
            groups: own_groups()?,
        };
        // From here on, dropping `saved` restores whatever was changed.
        // SAFETY: raw syscalls with integer arguments (setgroups with no list).
        unsafe {
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::syscall(libc::SYS_setfsgid, gid);
            libc::syscall(libc::SYS_setfsuid, uid);
        }
        let (fsuid, fsgid) = (current_fsuid(), current_fsgid());
        if (fsuid, fsgid) != (uid, gid) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("filesystem ids are {fsuid}:{fsgid}, not {uid}:{gid}"),
            ));
        }
        Ok(saved)
    }
}

impl Drop for FsIdentity {
    /// Gives the thread its fsuid, fsgid and groups back; aborts the agent when the
    /// kernel refuses (a thread left with the sandbox user's identity would do the
    /// agent's later work, such as the reset, as that user).
    fn drop(&mut self) {
        // SAFETY: raw syscalls with integer arguments and a list of the given length.
        let groups_set = unsafe {
            libc::syscall(libc::SYS_setfsuid, self.fsuid);
            libc::syscall(libc::SYS_setfsgid, self.fsgid);
            libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr()) == 0
        };
        if !groups_set || (current_fsuid(), current_fsgid()) != (self.fsuid, self.fsgid) {
            log(&format!(
                "cannot give the agent its own filesystem identity back: {}",
                io::Error::last_os_error()
            ));
            std::process::abort();
        }
    }
}

/// The calling thread's fsuid (`setfsuid` with an invalid id changes nothing and returns
/// the current one).
fn current_fsuid() -> libc::uid_t {
    // SAFETY: raw syscall with an integer argument.
    unsafe { libc::syscall(libc::SYS_setfsuid, -1i64) as libc::uid_t }
}

/// The calling thread's fsgid, as [`current_fsuid`].
fn current_fsgid() -> libc::gid_t {
    // SAFETY: raw syscall with an integer argument.
    unsafe { libc::syscall(libc::SYS_setfsgid, -1i64) as libc::gid_t }
}

/// The calling thread's supplementary groups. Errors: `getgroups` failed.
pub(crate) fn own_groups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: a count query, then a list of that many entries; raw syscalls so that the
    // thread's own list is read.
    unsafe {
        let n = libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>());
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let got = libc::syscall(libc::SYS_getgroups, n, groups.as_mut_ptr());
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        groups.truncate(got as usize);
        Ok(groups)
    }
}

/// The calling thread's (fsuid, fsgid).
#[cfg(test)]
pub(crate) fn fs_ids() -> (libc::uid_t, libc::gid_t) {
    (current_fsuid(), current_fsgid())
}

/// What the light child of [`signal_from_clone`] needs; lives on the parent's stack.
#[repr(C)]
struct SignalArgs {
    uid: libc::uid_t,
    gid: libc::gid_t,
    target: libc::pid_t,
    sig: libc::c_int,
}

/// Bytes of stack for the light child (it makes five system calls).
const LIGHT_STACK: usize = 16 << 10;

/// The light child: becomes the sandbox user ([`become_user`]), sends the signal and
/// ends. Returns only on failure.
extern "C" fn light_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the parent's SignalArgs, alive while the parent waits
    // (CLONE_VFORK); raw system calls with integer arguments. Nothing is allocated.
    unsafe {
        let a = &*(arg as *const SignalArgs);
        if become_user(a.uid, a.gid, false).is_err() {
            libc::syscall(libc::SYS_exit, 1);
        }
        libc::syscall(libc::SYS_kill, a.target, a.sig);
        libc::syscall(libc::SYS_exit, 0);
    }
    1
}

/// Sends `sig` to `target` as the sandbox user from a child that shares the agent's
/// memory and runs while the calling thread waits (`CLONE_VM | CLONE_VFORK`): no copy of
/// the agent's address space, no exec, no helper pipe. About a tenth of a forked
/// helper's cost, on the path every execution takes (the kill after each step). The
/// child's exit signal is none, so the reaper (which waits without `__WCLONE`) never
/// sees it; it is reaped here.
///
/// For the microseconds it lives, the child is a process of the sandbox user sharing
/// the agent's memory. That memory is not dumpable ([`harden_self`]; the flag belongs to
/// the shared address space, and the uid change keeps it clear), so the sandbox user can
/// neither attach to it nor open its `/proc/PID/mem` (and the seccomp profile refuses
/// `ptrace`). It can signal it, as it could the forked helper: a child killed before it
/// kills is an error here, and the forked helper is tried.
fn signal_from_clone(
    uid: libc::uid_t,
    gid: libc::gid_t,
    target: libc::pid_t,
    sig: i32,
) -> io::Result<()> {
    let args = SignalArgs {
        uid,
        gid,
        target,
        sig,
    };
    let mut stack = vec![0u8; LIGHT_STACK];
    // The stack grows down; 16-byte alignment as the ABI wants.
    let top = (stack.as_mut_ptr() as usize + LIGHT_STACK) & !15;
    // SAFETY: the child runs on its own stack (kept alive until it is reaped), reads
    // `args` (alive likewise) and only makes raw system calls; CLONE_VFORK suspends this
    // thread until it has exited.
    let pid = unsafe {
        libc::clone(
            light_child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK,
            &args as *const SignalArgs as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut status = 0;
    // SAFETY: waits for our own clone child.
    let waited = unsafe { libc::waitpid(pid, &mut status, libc::__WCLONE) };
    drop(stack);
    if waited != pid {
        return Err(io::Error::last_os_error());
    }
    match libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        true => Ok(()),
        false => Err(io::Error::other(format!(
            "it could not become the sandbox user (wait status {status})"
        ))),
    }
}

/// Sends `sig` to `target` (a pid, `-pgid`, or -1 for "everything of the sandbox user").
///
/// The agent signals chosen processes (a step's process group, a waiting interpreter) with
/// the sandbox user's identity, so that the kernel's permission check applies to the pid
/// it names: a child becomes that user, calls kill(2), and exits without ever exec'ing:
/// a light child sharing the agent's memory ([`signal_from_clone`]), or, should that
/// fail, a forked one. (As root without CAP_KILL this is also the only way it can.)
pub fn signal_as_sandbox(ident: &Identity, reaper: &Reaper, target: libc::pid_t, sig: i32) {
    if !ident.drop_privileges {
        if target == -1 {
            kill_descendants(sig);
        } else {
            // SAFETY: kill with integer arguments.
            unsafe { libc::kill(target, sig) };
        }
        return;
    }
    let (uid, gid, clear) = (ident.uid, ident.gid, !ident.bounding_set_clear);
    match signal_from_clone(uid, gid, target, sig) {
        Ok(()) => return,
        Err(e) => log(&format!(
            "cannot signal from a light child ({e}); forking a helper"
        )),
    }
    let mut cmd = Command::new("/proc/self/exe");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: async-signal-safe calls only; the child leaves through _exit.
    unsafe {
        cmd.pre_exec(move || {
            if become_user(uid, gid, clear).is_err() {
                libc::_exit(1);
            }
            libc::kill(target, sig);
            libc::_exit(0);
        });
    }
    match reaper.spawn_waited(&mut cmd) {
        Ok((_child, done)) => {
            let _ = done.recv();
        }
        Err(e) => log(&format!("cannot signal sandbox processes: {e}")),
    }
}

/// Kills every process of the sandbox user (SIGKILL): with one `kill(-1, SIGKILL)` of
/// the agent's own when [`Identity::kill_directly`], otherwise from a child that became
/// the sandbox user ([`signal_as_sandbox`]; also when the direct call is refused).
pub fn kill_all(ident: &Identity, reaper: &Reaper) {
    if ident.kill_directly {
        // SAFETY: kill with integer arguments. ESRCH: there was nothing to kill.
        let rc = unsafe { libc::kill(-1, libc::SIGKILL) };
        if rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return;
        }
    }
    signal_as_sandbox(ident, reaper, -1, libc::SIGKILL);
}

/// `CAP_KILL`'s number (`linux/capability.h`).
const CAP_KILL: u32 = 5;

/// Whether the agent may end the sandbox's processes with its own `kill(-1, SIGKILL)`
/// rather than from a child that becomes the sandbox user (which costs a `clone`, the
/// uid change and a `wait`, about 0.15 ms a step on a 2-core VM; docs/PERFORMANCE.md).
/// True when the agent runs as root, is PID 1 of its own PID namespace
/// ([`owns_namespaces`]), where `kill(-1)` reaches every process but itself and nothing
/// outside the container, and has `CAP_KILL` in its effective set (the engine grants the
/// container KILL besides SETUID, SETGID and SETPCAP). That grants the agent no power it
/// lacked: with CAP_SETUID it could already become any user of the container and signal
/// that user's processes, which is how it killed them before. Outside a container (tests
/// on a host), or without the capability: false.
pub fn may_kill_directly(ident: &Identity) -> bool {
    ident.drop_privileges && owns_namespaces() && has_effective_capability(CAP_KILL)
}

/// Whether capability `cap` is in the process's effective set, read from the `CapEff`
/// line of `/proc/self/status` (a 64-bit mask in hexadecimal, proc(5)); false when the
/// line cannot be read.
fn has_effective_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| capability_mask(&status, "CapEff"))
        .is_some_and(|mask| (mask >> cap) & 1 == 1)
}

/// The mask of the `name:` line (`CapEff`, `CapPrm`, …) of a `/proc/PID/status` text.
fn capability_mask(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// How many descriptors this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Every pid listed in `/proc` (of the agent's PID namespace).
fn all_pids() -> impl Iterator<Item = libc::pid_t> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<libc::pid_t>().ok())
        })
}

/// True when the agent is PID 1 of its own PID namespace, i.e. of a sandbox container:
/// every process it sees, the IPC namespace and `/dev/mqueue` then belong to the sandbox
/// alone, and a reset may clear them entirely. Outside a container (tests run the agent
/// on a host) a reset touches only what belongs to the sandbox user.
pub fn owns_namespaces() -> bool {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() == 1 }
}

/// True when nothing but the agent runs in the sandbox, known without scanning `/proc`:
/// as PID 1 of the container every other process descends from the agent (an orphan is
/// re-parented to it before its parent's exit is reported), so having no child at all,
/// not even one that ended and is not reaped yet, means no other process exists. Outside
/// a container: false (the agent cannot see what the sandbox user runs elsewhere).
pub fn alone() -> bool {
    if !owns_namespaces() {
        return false;
    }
    // SAFETY: siginfo_t is plain data; waitid with WNOWAIT changes nothing (the reaper
    // still collects every child).
    let rc = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

/// Waits, up to `timeout`, until [`alone`]: every other process of the container ended
/// and reaped (the reaper thread collects them). False when that did not happen in time;
/// true at once outside a container, where the agent cannot tell ([`alone`] never holds
/// there) and nothing is waited for.
pub fn wait_alone(timeout: std::time::Duration) -> bool {
    if !owns_namespaces() {
        return true;
    }
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = std::time::Duration::from_micros(50);
    while !alone() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(10));
    }
    true
}

/// A `pidfd` for process `pid` (readable once it has exited), or the kernel's refusal
/// (`ESRCH` for a child already reaped: its exit then comes from the reaper).
pub fn pidfd(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open with integer arguments; the descriptor is checked and owned.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    match i32::try_from(fd) {
        // SAFETY: a descriptor just created and owned by nothing else.
        Ok(fd) if fd >= 0 => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Waits until every process of `pids` has ended (its `pidfd` is readable once it is a
/// zombie or gone, whoever its parent is), or `timeout` has passed: a reset's wait for
/// what it killed, which for a pre-started interpreter's holder is the time the kernel
/// takes to free the program's memory. A process already gone (`ESRCH`) counts as
/// ended; when a `pidfd` cannot be had for another reason (a kernel before 5.3, no
/// descriptor left), this sleeps for `timeout`, as the reset did before.
pub fn wait_ended(pids: &[libc::pid_t], timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    let mut fds = Vec::with_capacity(pids.len());
    for &pid in pids {
        match pidfd(pid) {
            Ok(fd) => fds.push(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(_) => {
                thread::sleep(timeout);
                return;
            }
        }
    }
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !polled.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        // Rounded up: a wait of 0 ms would spin.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `polled` is a valid array of pollfd of the given length, whose
        // descriptors `fds` keeps open.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
        polled.retain(|p| p.revents == 0);
    }
}

/// Reaps the exited child behind `pidfd` if the reaper has not yet: its wait status (as
/// `waitpid` gives it) and its peak resident set in bytes. `None` when it is not a zombie
/// or another thread reaped it first (then the reaper reports it). Waiting on the
/// `pidfd`, not on the pid, so a pid reused since cannot be reaped by mistake.
pub fn reap_pidfd(pidfd: &OwnedFd) -> Option<(i32, u64)> {
    // SAFETY: siginfo_t and rusage are plain data; the raw waitid (unlike glibc's
    // wrapper) also fills the rusage.
    let (rc, info, usage) = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let mut usage: libc::rusage = std::mem::zeroed();
        let rc = libc::syscall(
            libc::SYS_waitid,
            libc::P_PIDFD,
            pidfd.as_raw_fd(),
            &mut info as *mut libc::siginfo_t,
            libc::WEXITED | libc::WNOHANG,
            &mut usage as *mut libc::rusage,
        );
        (rc, info, usage)
    };
    // SAFETY: after a successful waitid, si_pid and si_status are set (si_pid 0: no
    // child had exited yet).
    let (pid, code) = unsafe { (info.si_pid(), info.si_status()) };
    if rc != 0 || pid == 0 {
        return None;
    }
    let status = match info.si_code {
        libc::CLD_EXITED => (code & 0xff) << 8,
        libc::CLD_KILLED => code & 0x7f,
        libc::CLD_DUMPED => (code & 0x7f) | 0x80,
        _ => return None,
    };
    let rss = (usage.ru_maxrss.max(0) as u64).saturating_mul(1024);
    Some((status, rss))
}

/// The processes that must not outlive an execution, in one scan of `/proc`: as PID 1 of
/// a container, every process but the agent itself, whatever its uid; as root elsewhere,
/// the sandbox user's; without root, the agent's descendants (all counted alive).
pub struct Remaining {
    /// Still alive: to be killed.
    pub alive: Vec<libc::pid_t>,
    /// Ended but not reaped yet (zombies): each keeps its `/proc` entry (pid, name,
    /// owner), which the next execution must not see either, until the agent's reaper
    /// thread collects it (as PID 1 of a container, or as the subreaper elsewhere, it is
    /// every one's parent in the end).
    pub ended: Vec<libc::pid_t>,
}

/// The [`Remaining`] processes now.
pub fn remaining(ident: &Identity) -> Remaining {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut found = Remaining {
        alive: Vec::new(),
        ended: Vec::new(),
    };
    if !ident.drop_privileges {
        found.alive = descendants(me);
        return found;
    }
    let everyone = me == 1;
    let uid = ident.uid.to_string();
    for pid in all_pids() {
        if pid == me {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name).map(str::trim))
        };
        let owner = field("Uid:").and_then(|u| u.split_whitespace().next());
        if !everyone && owner != Some(uid.as_str()) {
            continue;
        }
        if field("State:").is_some_and(|s| s.starts_with('Z') || s.starts_with('X')) {
            found.ended.push(pid);
        } else {
            found.alive.push(pid);
        }
    }
    found
}

/// Without root (tests): kill every descendant of this process, repeatedly until none is
/// left (a fork bomb may add some while we scan).
fn kill_descendants(sig: i32) {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    for _ in 0..50 {
        let victims = descendants(me);
        if victims.is_empty() {
            return;
        }
        for pid in victims {
            // SAFETY: kill with integer arguments.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

fn descendants(root: libc::pid_t) -> Vec<libc::pid_t> {
    let mut parent_of = HashMap::new();
    for pid in all_pids() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may contain spaces) start after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<libc::pid_t>().ok());
        if let (Some(ppid), Some(state)) = (ppid, state) {
            if state != "Z" {
                parent_of.insert(pid, ppid);
            }
        }
    }
    parent_of
        .keys()
        .copied()
        .filter(|&pid| {
            let mut p = pid;
            for _ in 0..4096 {
                match parent_of.get(&p) {
                    Some(&pp) if pp == root => return true,
                    Some(&pp) if pp > 1 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state letter of `pid` in `/proc` (`None` once it is reaped).
    fn state_of(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    #[test]
    fn capability_masks_are_read_from_the_status_lines() {
        // (A root process in a container with SETGID, SETUID, SETPCAP and KILL.)
        let status = "Name:\tisol8-agent\nCapInh:\t0000000000000000\n\
                      CapPrm:\t00000000000001e0\nCapEff:\t00000000000001e0\n\
                      CapBnd:\t0000000000000000\n";
        assert_eq!(capability_mask(status, "CapEff"), Some(0x1e0));
        assert_eq!(capability_mask(status, "CapInh"), Some(0));
        assert_eq!(capability_mask(status, "CapAmb"), None);
        assert_eq!(capability_mask("CapEffX:\t1\n", "CapEff"), None);
        assert_eq!(capability_mask("CapEff:\tzz\n", "CapEff"), None);
    }

    #[test]
    fn a_process_that_ended_counts_as_unreaped_until_it_is_reaped() {
        let mut ident = Identity::from_env();
        if !ident.drop_privileges {
            // Not root: both are the live descendants.
            return;
        }
        (ident.uid, ident.gid) = (4242, 4343);
        let mut cmd = Command::new("true");
        // SAFETY: become_user makes only raw system calls.
        unsafe { cmd.pre_exec(|| become_user(4242, 4343, false)) };
        let mut child = cmd.spawn().expect("true");
        let pid = child.id() as libc::pid_t;
        wait_ended(&[pid], std::time::Duration::from_secs(10));
        assert_eq!(state_of(child.id()), Some('Z'));
        let left = remaining(&ident);
        assert!(!left.alive.contains(&pid));
        assert!(left.ended.contains(&pid));
        child.wait().expect("reap");
        let left = remaining(&ident);
        assert!(!left.alive.contains(&pid) && !left.ended.contains(&pid));
    }

    #[test]
    fn waiting_for_processes_returns_when_they_have_ended_or_at_the_timeout() {
        let mut quick = Command::new("sleep").arg("0.05").spawn().expect("sleep");
        let mut slow = Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = |c: &Child| c.id() as libc::pid_t;
        // Ended: it is a zombie (not reaped) when the wait returns, well before 30 s.
        let begun = std::time::Instant::now();
        wait_ended(&[pid(&quick)], std::time::Duration::from_secs(30));
        assert!(begun.elapsed() < std::time::Duration::from_secs(30));
        assert_eq!(state_of(quick.id()), Some('Z'));
        // Still running: the wait lasts until its timeout, then gives up.
        let begun = std::time::Instant::now();
        wait_ended(
            &[pid(&quick), pid(&slow)],
            std::time::Duration::from_millis(50),
        );
        assert!(begun.elapsed() >= std::time::Duration::from_millis(50));
        assert_eq!(state_of(slow.id()), Some('S'));
        slow.kill().expect("kill");
        wait_ended(&[pid(&slow)], std::time::Duration::from_secs(30));
        assert_eq!(state_of(slow.id()), Some('Z'));
        quick.wait().expect("reap");
        slow.wait().expect("reap");
    }

    #[test]
    fn the_bounding_set_is_emptied_for_the_thread_and_its_children() {
        // On a thread of its own: the set is per thread, and the test harness's other
        // threads keep theirs.
        std::thread::spawn(|| {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                // Without CAP_SETPCAP nothing can be dropped, and that is an error.
                assert!(clear_bounding_set().is_err());
                return;
            }
            clear_bounding_set().expect("emptied");
            // A child started now inherits the empty set.
            let out = Command::new("grep")
                .args(["^CapBnd", "/proc/self/status"])
                .output()
                .expect("grep runs");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "CapBnd:\t0000000000000000"
            );
        })
        .join()
        .expect("the test thread ends");
    }

    #[test]
    // Each child is reaped through its pidfd, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    fn a_child_reaped_by_its_pidfd_gives_the_wait_status_waitpid_would() {
        for (script, want) in [
            ("exit 3", 3 << 8),
            ("kill -KILL $$", libc::SIGKILL),
            ("ulimit -c 0; kill -SEGV $$", libc::SIGSEGV),
        ] {
            let child = Command::new("sh").args(["-c", script]).spawn().expect("sh");
            let fd = pidfd(child.id() as libc::pid_t).expect("pidfd");
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            assert_eq!(unsafe { libc::poll(&mut p, 1, 10_000) }, 1, "{script}");
            let (status, rss) = reap_pidfd(&fd).expect("reaped");
            assert_eq!(status, want, "{script}");
            assert!(rss > 0, "{script}");
            assert_eq!(reap_pidfd(&fd), None, "reaped once: {script}");
        }
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(libc::SIGKILL), 137);
        assert_eq!(exit_code(libc::SIGTERM), 143);
        assert_eq!(end_signal(libc::SIGKILL), Some(9));
        assert_eq!(end_signal(libc::SIGSEGV | 0x80), Some(11), "core dumped");
        assert_eq!(end_signal(3 << 8), None);
        assert_eq!(end_signal(0), None);
    }
}
