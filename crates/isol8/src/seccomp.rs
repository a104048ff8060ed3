//! isol8's seccomp profiles.
//!
//! The `strict` profile denies by default (`SCMP_ACT_ERRNO`, EPERM) and allows a fixed list
//! of system calls: Docker's default allowlist for an unprivileged container, minus
//! `io_uring_*`, `ptrace`, `process_vm_readv/writev` (allowed by Docker's default). Calls
//! that Docker only allows with capabilities isol8 never grants (namespace creation,
//! `mount` and the new mount API, `bpf`, `perf_event_open`, `keyctl`…) are simply absent,
//! so they are denied. `clone` is allowed only without namespace flags, `clone3` answers
//! ENOSYS (so libcs fall back to `clone`), `socket(AF_VSOCK)` is refused, and
//! `personality` takes only the values Docker's default allows.
//!
//! Only the native ABI is allowed: the profile names no sub-architectures, so a system
//! call made through a 32-bit ABI (i386 `int 0x80`, x32, arm32) matches no architecture
//! of the filter and meets the OCI runtime's bad-architecture action (runc kills the
//! caller with SIGSYS) instead of being checked against the list. Docker's default lists
//! them for 32-bit binaries, which no isol8 image runs; each one costs runc the whole
//! filter compiled once more at every container start (about 6 ms each for `runc run`
//! alone on a 2-core machine, see docs/PERFORMANCE.md), and the compat entry points are attack
//! surface the sandbox has no use for. For the same reason argument-checked rules are
//! few: `personality`'s five allowed values are two rules (one masked comparison), as
//! every such rule costs runc and libseccomp ~0.7 ms per start.
//!
//! A profile given to Docker in `SecurityOpt` replaces its default entirely, so this one is
//! complete on its own. Sandboxes run with exactly the capabilities SETUID, SETGID and
//! SETPCAP (used by the agent to drop to the sandbox user), which need no extra syscalls.

use serde_json::{json, Value};

use isol8_protocol::SeccompMode;

use crate::{Error, Result};

/// System calls allowed unconditionally by the strict profile.
const ALLOWED: &[&str] = &[
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
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
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
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
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
    "getuid32",
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
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
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
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
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
    "_newselect",
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
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
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
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
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
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
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
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    "arch_prctl",
    "modify_ldt",
];

/// System calls the strict profile must never allow (checked by tests).
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

/// Namespace flags of `clone`: CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER |
/// NEWPID | NEWNET. `clone` is allowed only when `flags & MASK == 0`.
const CLONE_NAMESPACE_MASK: u64 = 0x7E02_0000;

/// `AF_VSOCK` address family.
const AF_VSOCK: u64 = 40;

/// `personality(persona)` is allowed when `persona & PERSONALITY_MASK == 0`: exactly
/// `PER_LINUX` (0), `PER_LINUX32` (8), `UNAME26` (0x20000) and their union 0x20008, the
/// four values Docker's default profile allows (moby `profiles/seccomp/default.json`),
/// in one masked comparison of the whole 64-bit register instead of four rules.
const PERSONALITY_MASK: u64 = !0x0002_0008;

/// `personality(0xffffffff)`: reads the current persona without changing it.
const PERSONALITY_QUERY: u64 = 0xffff_ffff;

/// The strict, default-deny profile as Docker's JSON.
pub fn strict_profile() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": []}
        ],
        "syscalls": [
            {"names": ALLOWED, "action": "SCMP_ACT_ALLOW"},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": PERSONALITY_MASK, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": PERSONALITY_QUERY, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": CLONE_NAMESPACE_MASK, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    })
}

/// The `SecurityOpt` entry for a seccomp mode.
pub fn security_opt(mode: SeccompMode, custom_profile_path: Option<&str>) -> Result<String> {
    match mode {
        SeccompMode::Strict => Ok(format!("seccomp={}", strict_profile())),
        SeccompMode::Unconfined => Ok("seccomp=unconfined".to_string()),
        SeccompMode::Custom => {
            let path = custom_profile_path.ok_or_else(|| {
                Error::option(
                    "security.customProfilePath",
                    "is required with seccomp `custom`",
                )
            })?;
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::option(
                    "security.customProfilePath",
                    format!("cannot read `{path}`: {e}"),
                )
            })?;
            let profile: Value = serde_json::from_str(&text).map_err(|e| {
                Error::option(
                    "security.customProfilePath",
                    format!("`{path}` is not JSON: {e}"),
                )
            })?;
            if profile
                .get("defaultAction")
                .and_then(Value::as_str)
                .is_none()
            {
                return Err(Error::option(
                    "security.customProfilePath",
                    format!("`{path}` is not a seccomp profile (no defaultAction)"),
                ));
            }
            Ok(format!("seccomp={profile}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed_names(profile: &Value) -> Vec<String> {
        profile["syscalls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|rule| rule["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn strict_profile_denies_by_default() {
        let p = strict_profile();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
    }

    #[test]
    fn dangerous_calls_are_never_allowed() {
        let allowed = allowed_names(&strict_profile());
        for name in DENIED {
            assert!(!allowed.iter().any(|a| a == name), "{name} must be denied");
        }
    }

    #[test]
    fn clone_is_masked_and_vsock_refused() {
        let p = strict_profile();
        let rules = p["syscalls"].as_array().expect("rules");
        let clone = rules
            .iter()
            .find(|r| r["names"][0] == "clone")
            .expect("clone rule");
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        // CLONE_NEWUSER (0x10000000) and CLONE_NEWNET (0x40000000) are inside the mask.
        let mask = clone["args"][0]["value"].as_u64().expect("mask");
        assert_ne!(mask & 0x1000_0000, 0);
        assert_ne!(mask & 0x4000_0000, 0);
        let socket = rules
            .iter()
            .find(|r| r["names"][0] == "socket")
            .expect("socket rule");
        assert_eq!(socket["args"][0]["value"], 40);
        assert_eq!(socket["args"][0]["op"], "SCMP_CMP_NE");
    }

    /// Whether a rule's argument conditions hold for `args` (the ops the profile uses,
    /// as libseccomp compares them: whole 64-bit values).
    fn conditions_hold(rule: &Value, args: &[u64]) -> bool {
        rule["args"].as_array().into_iter().flatten().all(|c| {
            let arg = args[c["index"].as_u64().expect("index") as usize];
            let value = c["value"].as_u64().expect("value");
            match c["op"].as_str().expect("op") {
                "SCMP_CMP_EQ" => arg == value,
                "SCMP_CMP_NE" => arg != value,
                "SCMP_CMP_MASKED_EQ" => arg & value == c["valueTwo"].as_u64().unwrap_or(0),
                other => panic!("op {other} not modelled"),
            }
        })
    }

    /// What the strict profile does with a native-ABI call of `name` with `args`.
    fn allows(profile: &Value, name: &str, args: &[u64]) -> bool {
        profile["syscalls"]
            .as_array()
            .expect("rules")
            .iter()
            .filter(|r| {
                r["names"]
                    .as_array()
                    .expect("names")
                    .iter()
                    .any(|n| n == name)
            })
            .any(|r| r["action"] == "SCMP_ACT_ALLOW" && conditions_hold(r, args))
    }

    #[test]
    fn personality_takes_exactly_the_values_dockers_default_allows() {
        let p = strict_profile();
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
            .filter(|&v| allows(&p, "personality", &[v]))
            .collect();
        allowed.sort_unstable();
        allowed.dedup();
        // moby profiles/seccomp/default.json: PER_LINUX, PER_LINUX32, UNAME26,
        // UNAME26|PER_LINUX32 and the query 0xffffffff.
        assert_eq!(allowed, [0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff]);
    }

    #[test]
    fn only_the_native_abi_is_allowed() {
        let p = strict_profile();
        let arches = p["archMap"].as_array().expect("archMap");
        assert!(!arches.is_empty());
        for arch in arches {
            let subs = arch["subArchitectures"]
                .as_array()
                .expect("subArchitectures");
            assert!(subs.is_empty(), "{arch}: a 32-bit ABI would be allowed");
        }
        // The argument rules stay few: each costs the runtime time at every start.
        let with_args = p["syscalls"]
            .as_array()
            .expect("rules")
            .iter()
            .filter(|r| r.get("args").is_some())
            .count();
        assert_eq!(with_args, 4, "socket, personality ×2, clone");
        assert!(allows(&p, "clone", &[0x0100_0011]), "a plain fork's flags");
        assert!(!allows(&p, "clone", &[0x1000_0011]), "CLONE_NEWUSER");
        assert!(allows(&p, "socket", &[1]) && !allows(&p, "socket", &[AF_VSOCK]));
    }

    #[test]
    fn custom_profile_is_validated() {
        let err = security_opt(SeccompMode::Custom, Some("/nonexistent/profile.json"))
            .expect_err("missing file");
        assert!(err.to_string().contains("customProfilePath"));
        assert_eq!(
            security_opt(SeccompMode::Unconfined, None).expect("ok"),
            "seccomp=unconfined"
        );
    }
}
