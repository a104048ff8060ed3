//! Starting a step's process without copying the agent: `clone(CLONE_VM | CLONE_VFORK)`,
//! as glibc's `posix_spawn` does, instead of the `fork` behind Rust's `Command` with a
//! `pre_exec` closure.
//!
//! A forked child gets a copy of the agent's page tables and then faults in every page it
//! touches before `execve` (copy-on-write for the data and stacks of the agent's threads,
//! re-faulted file pages for its code): about a millisecond per step on a 2-core machine,
//! more than `bash -c 'echo 1'` itself. The child here shares the agent's memory and runs
//! on a stack of its own while the calling thread is suspended, until the new program is
//! loaded or the child has failed. So it must allocate nothing, take no lock and call
//! nothing that touches process-wide state of the C library: it makes raw system calls
//! only (`setresuid` through glibc would change the ids of the agent's threads), on data
//! the parent prepared: descriptors, C strings, the candidate paths of the `PATH` search.
//!
//! What the child does, in order: every signal's disposition back to the default (all
//! signals are blocked across the `clone`, so no handler of the agent can run in it),
//! no signal blocked, the output pipes (and stdin) on descriptors 0–2, the working
//! directory, its own session, first in line for the OOM killer, no core dumps, the
//! inherited descriptors on 3, 4…, the capability bounding set cleared (unless the agent
//! emptied its own at start-up, which every child inherits) and the sandbox user's ids
//! (as root), then `execve` of each candidate path in turn as `execvp` does
//! (a file the kernel cannot execute is run by `/bin/sh`). A failure before the new
//! program is loaded is reported through memory shared with the parent and the child
//! exits with 127; the reaper collects it like any other child.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::proc::{become_user, Identity};

/// A started step: its pid and the agent's ends of its standard streams.
pub struct Spawned {
    /// Process id (also its session and process group).
    pub pid: libc::pid_t,
    /// The write end of its stdin, when asked for a pipe (else stdin is `/dev/null`).
    pub stdin: Option<OwnedFd>,
    /// The read end of its stdout.
    pub stdout: OwnedFd,
    /// The read end of its stderr.
    pub stderr: OwnedFd,
}

/// Everything the child reads; lives on the parent's stack while the child runs.
struct Child {
    stdio: [RawFd; 3],
    inherit_at: RawFd,
    inherit: *const RawFd,
    inherit_len: usize,
    cwd: *const libc::c_char,
    candidates: *const *const libc::c_char,
    candidates_len: usize,
    argv: *const *const libc::c_char,
    /// `["/bin/sh", <candidate>, argv[1..]…, NULL]`; the child fills in slot 1.
    sh_argv: *mut *const libc::c_char,
    envp: *const *const libc::c_char,
    drop_to: Option<(libc::uid_t, libc::gid_t)>,
    /// Clear the capability bounding set before dropping to `drop_to` (false when the
    /// agent emptied its own at start-up, [`Identity::bounding_set_clear`]).
    clear_bounding_set: bool,
    /// The CPUs the child may run on, to restore first thing when the parent pinned
    /// itself (and so the child) to its own CPU across the `clone` ([`Pin`]).
    affinity: Option<*const libc::cpu_set_t>,
    /// errno of the first failure, 0 while none.
    error: AtomicI32,
}

/// The calling thread pinned to the CPU it runs on for the duration of a `clone`, so the
/// child is queued on that CPU, where the parent is about to sleep until the child has
/// exec'd, instead of on the idlest one. On a VM, starting a task on an idle vCPU waits
/// for that vCPU to wake: 133 µs median from the fork to the child's first run on the
/// other CPU against 50 µs on the same one (`perf sched` events of warm bash steps on a
/// 2-core VM, docs/PERFORMANCE.md). The child restores the saved set before anything
/// else ([`step_child`]); dropping the pin restores the parent's.
pub(crate) struct Pin {
    saved: libc::cpu_set_t,
}

impl Pin {
    /// Pins the calling thread to its current CPU; `None` (nothing changed) when it may
    /// run on one CPU only or a call fails.
    pub(crate) fn to_current_cpu() -> Option<Pin> {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: cpu_set_t is plain data; the calls read and write sets of `size` bytes.
        unsafe {
            let mut saved: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size, &mut saved) != 0 || libc::CPU_COUNT(&saved) < 2 {
                return None;
            }
            let cpu = libc::sched_getcpu();
            if cpu < 0 || !libc::CPU_ISSET(cpu as usize, &saved) {
                return None;
            }
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            set_own_cpus(&one).then_some(Pin { saved })
        }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if !set_own_cpus(&self.saved) {
            crate::log(&format!(
                "cannot restore the agent's CPU affinity: {}",
                io::Error::last_os_error()
            ));
        }
    }
}

/// Makes `set` the calling thread's CPU set; false when the kernel refused it (`errno`
/// says why). A raw system call, so also safe in [`step_child`].
fn set_own_cpus(set: *const libc::cpu_set_t) -> bool {
    // SAFETY: sched_setaffinity reads a set of the given size from a valid pointer.
    unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            0,
            std::mem::size_of::<libc::cpu_set_t>(),
            set,
        ) == 0
    }
}

/// Bytes of stack for the child: a few frames of raw system calls.
const STACK: usize = 64 << 10;

fn cstring(s: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| io::Error::other("a NUL byte in an argument"))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The paths `execvp` would try for `program` with this `PATH`.
fn candidates(program: &str, path: Option<&str>) -> Vec<String> {
    if program.contains('/') {
        return vec![program.to_string()];
    }
    path.unwrap_or("/bin:/usr/bin")
        .split(':')
        .map(|dir| match dir {
            // An empty entry is the working directory.
            "" => program.to_string(),
            d => format!("{}/{program}", d.trim_end_matches('/')),
        })
        .collect()
}

/// Starts a step (see the module's description): `argv[0]` without a `/` is looked up in
/// `env`'s `PATH` (`/bin:/usr/bin` when it has none, as glibc's `execvp`); `env` is the
/// whole environment; stdin is a pipe when `piped_stdin`, else `/dev/null`;
/// `inherit[i]` becomes descriptor `inherit_at + i` (`inherit_at` is 3 or above; each
/// `inherit[i]` must be 10 or above and outside the range it is copied to, so none is
/// overwritten before it is copied), every other descriptor beyond stdio is closed on
/// exec; as root, the program runs as the sandbox user with no capabilities.
///
/// # Errors
/// A pipe or `clone` failed, or the child failed before the program was loaded (the
/// `errno` of that step: no such program, permission denied, a bad working directory…).
pub fn spawn_step(
    ident: &Identity,
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: &str,
    piped_stdin: bool,
    inherit_at: RawFd,
    inherit: &[RawFd],
) -> io::Result<Spawned> {
    let targets = inherit_at..inherit_at.saturating_add(inherit.len() as RawFd);
    if inherit_at < 3 || inherit.iter().any(|fd| *fd < 10 || targets.contains(fd)) {
        return Err(io::Error::other(
            "inherited descriptors must be 10 or above and outside their new numbers, \
             which start at 3 or above",
        ));
    }
    let program = argv.first().ok_or_else(|| io::Error::other("empty argv"))?;
    let argv_c: Vec<CString> = argv.iter().map(cstring).collect::<io::Result<_>>()?;
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}")))
        .collect::<io::Result<_>>()?;
    let paths: Vec<CString> = candidates(program, env.get("PATH").map(String::as_str))
        .iter()
        .map(cstring)
        .collect::<io::Result<_>>()?;
    let cwd = cstring(cwd)?;
    let sh = c"/bin/sh";
    let mut argv_ptrs: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut sh_argv: Vec<*const libc::c_char> = vec![sh.as_ptr(), std::ptr::null()];
    sh_argv.extend(argv_c.iter().skip(1).map(|a| a.as_ptr()));
    sh_argv.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let path_ptrs: Vec<*const libc::c_char> = paths.iter().map(|p| p.as_ptr()).collect();

    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin_child, stdin_parent) = if piped_stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        let null = std::fs::File::open("/dev/null")?;
        (OwnedFd::from(null), None)
    };
    use std::os::fd::AsRawFd;
    // Pinned as late as possible: the thread spends as little as it can bound to one CPU.
    let pin = Pin::to_current_cpu();
    let child = Child {
        stdio: [
            stdin_child.as_raw_fd(),
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
        ],
        inherit_at,
        inherit: inherit.as_ptr(),
        inherit_len: inherit.len(),
        cwd: cwd.as_ptr(),
        candidates: path_ptrs.as_ptr(),
        candidates_len: path_ptrs.len(),
        argv: argv_ptrs.as_ptr(),
        sh_argv: sh_argv.as_mut_ptr(),
        envp: envp_ptrs.as_ptr(),
        drop_to: ident.drop_privileges.then_some((ident.uid, ident.gid)),
        clear_bounding_set: !ident.bounding_set_clear,
        affinity: pin.as_ref().map(|p| &p.saved as *const libc::cpu_set_t),
        error: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; STACK];
    // The stack grows down; 16-byte alignment as the ABI wants.
    let top = (stack.as_mut_ptr() as usize + STACK) & !15;
    // SAFETY: sigset_t is plain data; blocking every signal in this thread for the
    // duration of the clone keeps the agent's handlers out of the child until it has
    // reset them. The child runs on its own stack, reads `child` and the vectors above
    // (all alive until it has exec'd or exited: CLONE_VFORK suspends this thread until
    // then) and makes raw system calls only.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            step_child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &child as *const Child as *mut libc::c_void,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        drop(pin);
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    drop(stack);
    match child.error.load(Ordering::SeqCst) {
        0 => Ok(Spawned {
            pid,
            stdin: stdin_parent,
            stdout: out_r,
            stderr: err_r,
        }),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Highest signal number the kernel knows (`_NSIG - 1`; 64 on x86-64 and arm64).
const LAST_SIGNAL: libc::c_int = 64;

/// Puts every signal's disposition back to the default in the step's child.
///
/// Ignored dispositions survive `exec`, and the agent may have inherited some: Docker's
/// runtime starts PID 1 of a container with signal 32 ignored (a plain `docker run`
/// shows `SigIgn: 0000000080000000`), and glibc's `posix_spawn` (behind Rust's
/// `Command`) leaves its reserved signals 32 and 33 ignored in children; every program
/// the agent ran inherited signal 32 ignored. libc's `sigaction` refuses
/// the signals glibc (32, 33) and musl (32-34) reserve, so this calls the `rt_sigaction`
/// system call itself. An all-zero kernel `sigaction` is `SIG_DFL` with no flags and an
/// empty mask whatever the architecture's field layout. SIGKILL and SIGSTOP cannot be
/// changed and are skipped; errors are ignored (nothing useful can be done about them).
/// Async-signal-safe: one system call per signal, nothing allocated.
fn reset_signal_dispositions() {
    // Larger than any architecture's kernel `struct sigaction`.
    let default = [0u64; 4];
    for sig in 1..=LAST_SIGNAL {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a zeroed, large-enough struct and writes nothing
        // (null old action); the size argument is the kernel's sigset size (8 bytes).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

/// `errno` after a failed raw system call.
fn errno() -> i32 {
    // SAFETY: the calling thread's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

/// Records the current errno and ends the child.
fn fail(c: &Child) -> ! {
    let e = errno();
    c.error
        .store(if e == 0 { libc::EINVAL } else { e }, Ordering::SeqCst);
    // SAFETY: exit_group with an integer argument; it does not return.
    unsafe { libc::syscall(libc::SYS_exit_group, 127) };
    unreachable!("exit_group returned")
}

/// `new` becomes a copy of `old` that survives `execve` (`dup3` refuses equal numbers:
/// then the close-on-exec flag is cleared instead).
fn dup_to(old: RawFd, new: RawFd) -> bool {
    // SAFETY: raw system calls with integer arguments.
    unsafe {
        if old == new {
            return libc::syscall(libc::SYS_fcntl, old, libc::F_SETFD, 0) == 0;
        }
        libc::syscall(libc::SYS_dup3, old, new, 0) >= 0
    }
}

extern "C" fn step_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Child`, alive while this runs (see `spawn`); only
    // raw system calls on memory the parent prepared.
    unsafe {
        let c = &*(arg as *const Child);
        // Every CPU the agent may use again, before the program could see the pin.
        if let Some(set) = c.affinity {
            if !set_own_cpus(set) {
                fail(c);
            }
        }
        reset_signal_dispositions();
        let empty: u64 = 0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            std::mem::size_of::<u64>(),
        );
        for (target, fd) in c.stdio.iter().enumerate() {
            if !dup_to(*fd, target as RawFd) {
                fail(c);
            }
        }
        if libc::syscall(libc::SYS_chdir, c.cwd) != 0 || libc::syscall(libc::SYS_setsid) < 0 {
            fail(c);
        }
        let fd = libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::syscall(libc::SYS_write, fd, b"1000".as_ptr(), 4);
            libc::syscall(libc::SYS_close, fd);
        }
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_CORE,
            &no_core as *const libc::rlimit,
            std::ptr::null_mut::<libc::rlimit>(),
        );
        for i in 0..c.inherit_len {
            if !dup_to(*c.inherit.add(i), c.inherit_at + i as RawFd) {
                fail(c);
            }
        }
        if let Some((uid, gid)) = c.drop_to {
            if become_user(uid, gid, c.clear_bounding_set).is_err() {
                fail(c);
            }
        }
        // As `execvp`: the first candidate that runs; a missing one is skipped, a
        // permission problem remembered, anything else ends the search.
        let mut denied = false;
        for i in 0..c.candidates_len {
            let path = *c.candidates.add(i);
            libc::syscall(libc::SYS_execve, path, c.argv, c.envp);
            match errno() {
                libc::ENOEXEC => {
                    *c.sh_argv.add(1) = path;
                    libc::syscall(
                        libc::SYS_execve,
                        *c.sh_argv,
                        c.sh_argv as *const *const libc::c_char,
                        c.envp,
                    );
                    fail(c);
                }
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => fail(c),
            }
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_search_is_execvps() {
        assert_eq!(candidates("./x", Some("/a")), ["./x"]);
        assert_eq!(
            candidates("bash", Some("/usr/local/bin:/usr/bin/::/bin")),
            ["/usr/local/bin/bash", "/usr/bin/bash", "bash", "/bin/bash"]
        );
        assert_eq!(candidates("sh", None), ["/bin/sh", "/usr/bin/sh"]);
    }

    /// `Cpus_allowed_list` of a status file (`/proc/thread-self/status`, …).
    pub(crate) fn allowed_cpus(status: &str) -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("a Cpus_allowed_list line")
            .trim()
            .to_string()
    }

    /// `Cpus_allowed_list` of the calling thread.
    fn own_cpus() -> String {
        allowed_cpus(&std::fs::read_to_string("/proc/thread-self/status").expect("own status"))
    }

    #[test]
    fn a_step_runs_on_every_cpu_of_the_agent_which_keeps_them() {
        use std::io::Read;
        let ident = Identity {
            drop_privileges: false,
            ..Identity::from_env()
        };
        let before = own_cpus();
        let argv = ["cat", "/proc/self/status"].map(String::from);
        let env = BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]);
        let child = spawn_step(&ident, &argv, &env, "/", false, 3, &[]).expect("spawned");
        let mut out = String::new();
        std::fs::File::from(child.stdout)
            .read_to_string(&mut out)
            .expect("the step's output");
        let mut status = 0;
        // SAFETY: waits for the child just spawned.
        assert_eq!(
            unsafe { libc::waitpid(child.pid, &mut status, 0) },
            child.pid
        );
        assert_eq!(status, 0);
        // Pinned across the clone (on a machine with two CPUs or more), restored on both
        // sides: the program sees the agent's CPUs, and the agent still has them.
        assert_eq!(allowed_cpus(&out), before);
        assert_eq!(own_cpus(), before);
    }
}
