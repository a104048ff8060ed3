//! The strict seccomp policy, shared by the engine and the agent.
//!
//! The policy denies by default (EPERM) and allows a fixed list of system calls: Docker's
//! default allowlist for an unprivileged container, minus `io_uring_*`, `ptrace` and
//! `process_vm_readv/writev` (moby `profiles/seccomp/default.json` allows them). Calls
//! Docker allows only with capabilities isol8 never grants (namespace creation, `mount`
//! and the new mount API, `bpf`, `perf_event_open`, `keyctl`…) are absent, so they are
//! denied. A few calls are decided by their arguments ([`CHECKED`]): `clone` without
//! namespace flags, `socket` of any family but `AF_VSOCK`, `personality` with the values
//! Docker's default allows; `clone3` answers ENOSYS so that C libraries fall back to
//! `clone`, whose flags the filter can read.
//!
//! The agent compiles this policy into a classic BPF program for its own architecture and
//! installs it before anything else runs in the sandbox (see `docs/SECURITY.md`); Docker
//! gets only the short [`DENIED`] list as a baseline for the moment before that. Names
//! are the kernel's (`syscalls/syscall_64.tbl`, `asm-generic/unistd.h`): only calls of the
//! native 64-bit ABI of x86-64 and arm64 are listed, since a call through any other ABI
//! (i386 `int 0x80`, x32) kills the caller. A name without a number on an architecture
//! (`open` on arm64) is skipped there.

/// The environment variable through which the engine asks the agent to install the
/// strict policy (value [`FILTER_STRICT`]). The agent removes it from its environment.
pub const FILTER_ENV: &str = "ISOL8_SECCOMP_FILTER";

/// The value of [`FILTER_ENV`] asking for this policy.
pub const FILTER_STRICT: &str = "strict";

/// The errno of a denied call: EPERM.
pub const DENIED_ERRNO: u32 = 1;

/// The errno of a call the policy answers as unimplemented: ENOSYS. Also the answer to
/// every call numbered above the highest the policy names on the architecture, as runc
/// does for profiles it installs, so that a C library falls back from a call newer than
/// the policy instead of failing with EPERM.
pub const ENOSYS: u32 = 38;

/// Namespace flags of `clone`: CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER |
/// NEWPID | NEWNET. `clone` is allowed only when `flags & MASK == 0`.
pub const CLONE_NAMESPACE_MASK: u64 = 0x7E02_0000;

/// `AF_VSOCK` address family (`linux/socket.h`).
pub const AF_VSOCK: u64 = 40;

/// `personality(persona)` is allowed when `persona & PERSONALITY_MASK == 0`: exactly
/// `PER_LINUX` (0), `PER_LINUX32` (8), `UNAME26` (0x20000) and their union 0x20008, the
/// four values Docker's default profile allows, compared over the whole 64-bit register.
pub const PERSONALITY_MASK: u64 = !0x0002_0008;

/// `personality(0xffffffff)`: reads the current persona without changing it.
pub const PERSONALITY_QUERY: u64 = 0xffff_ffff;

/// How a call named in [`CHECKED`] is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Allowed when the first argument (the flags, 64 bits) has no bit of
    /// [`CLONE_NAMESPACE_MASK`].
    CloneFlags,
    /// Allowed unless the first argument's low 32 bits are [`AF_VSOCK`]: the kernel
    /// reads `socket`'s family as an `int`, so the upper half cannot hide the family.
    SocketFamily,
    /// Allowed when the first argument (64 bits) is one of Docker's personas (see
    /// [`PERSONALITY_MASK`]) or [`PERSONALITY_QUERY`].
    Persona,
    /// Answered ENOSYS without running.
    Enosys,
}

/// The calls decided by their arguments (or answered ENOSYS).
pub const CHECKED: &[(&str, Check)] = &[
    ("clone", Check::CloneFlags),
    ("socket", Check::SocketFamily),
    ("personality", Check::Persona),
    ("clone3", Check::Enosys),
];

/// What the policy does with a native-ABI call of `name` with arguments `args`, as a
/// `seccomp` return value's errno: `None` allows the call, `Some(errno)` fails it. A name
/// the policy does not know is denied. The reference model the agent's compiled filter
/// is tested against.
pub fn decide(name: &str, args: &[u64; 6]) -> Option<u32> {
    if ALLOWED.contains(&name) {
        return None;
    }
    let Some((_, check)) = CHECKED.iter().find(|(n, _)| *n == name) else {
        return Some(DENIED_ERRNO);
    };
    let allowed = match check {
        Check::CloneFlags => args[0] & CLONE_NAMESPACE_MASK == 0,
        Check::SocketFamily => args[0] & 0xffff_ffff != AF_VSOCK,
        Check::Persona => args[0] & PERSONALITY_MASK == 0 || args[0] == PERSONALITY_QUERY,
        Check::Enosys => return Some(ENOSYS),
    };
    (!allowed).then_some(DENIED_ERRNO)
}

/// System calls allowed whatever their arguments.
pub const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "membarrier",
    "memfd_create",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
    "arch_prctl",
    "modify_ldt",
];

/// System calls the policy must never allow (checked by tests), and the baseline profile
/// Docker installs before the agent's filter exists: these are denied from the first
/// instruction of the container.
pub const DENIED: &[&str] = &[
    "unshare",
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "bpf",
    "perf_event_open",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kexec_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "lookup_dcookie",
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "iopl",
    "ioperm",
    "syslog",
    "sethostname",
    "setdomainname",
    "settimeofday",
    "clock_settime",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_calls_are_never_allowed() {
        for name in DENIED {
            assert!(!ALLOWED.contains(name), "{name} must be denied");
            assert!(!CHECKED.iter().any(|(n, _)| n == name), "{name} is checked");
            assert_eq!(decide(name, &[0; 6]), Some(DENIED_ERRNO), "{name}");
        }
        for (name, _) in CHECKED {
            assert!(
                !ALLOWED.contains(name),
                "{name} is both allowed and checked"
            );
        }
    }

    #[test]
    fn clone_without_namespaces_and_sockets_but_vsock() {
        let args = |a0| [a0, 0, 0, 0, 0, 0];
        assert_eq!(decide("clone", &args(0x0100_0011)), None, "a plain fork");
        assert_eq!(
            decide("clone", &args(0x1000_0011)),
            Some(1),
            "CLONE_NEWUSER"
        );
        assert_eq!(decide("clone", &args(0x4000_0000)), Some(1), "CLONE_NEWNET");
        assert_eq!(decide("socket", &args(1)), None);
        assert_eq!(decide("socket", &args(AF_VSOCK)), Some(1));
        assert_eq!(
            decide("socket", &args(1 << 32 | AF_VSOCK)),
            Some(1),
            "upper half"
        );
        assert_eq!(decide("clone3", &args(0)), Some(ENOSYS));
        assert_eq!(decide("no_such_call", &args(0)), Some(DENIED_ERRNO));
    }

    #[test]
    fn personality_takes_exactly_the_values_dockers_default_allows() {
        // Every persona number, every single flag bit of the 64-bit register, the
        // allowed values with each bit added, and the query.
        let mut candidates: Vec<u64> = (0..0x20).collect();
        for bit in 0..64 {
            candidates.push(1 << bit);
            for base in [0x8, 0x2_0000, 0x2_0008, 0xffff_ffff] {
                candidates.push(base | (1 << bit));
            }
        }
        candidates.extend([0xffff_ffff, 0x4_0000, u64::MAX, 0x1_0000_0000]);
        let mut allowed: Vec<u64> = candidates
            .into_iter()
            .filter(|&v| decide("personality", &[v, 0, 0, 0, 0, 0]).is_none())
            .collect();
        allowed.sort_unstable();
        allowed.dedup();
        // moby profiles/seccomp/default.json: PER_LINUX, PER_LINUX32, UNAME26,
        // UNAME26|PER_LINUX32 and the query 0xffffffff.
        assert_eq!(allowed, [0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff]);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = ALLOWED.to_vec();
        names.extend(CHECKED.iter().map(|(n, _)| *n));
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a name is listed twice");
    }
}
