//! The strict seccomp filter: [`isol8_protocol::seccomp`]'s policy compiled to a classic
//! BPF program for this architecture, installed by the agent as the first thing it does.
//!
//! Why the agent and not the OCI runtime: given the same policy as a Docker profile, runc
//! rebuilds the filter with libseccomp at every container start and carries it, one JSON
//! object per system call, through dockerd, containerd, the shim and its own state files
//! (about 10 ms of every cold start on a 2-core machine, see `docs/PERFORMANCE.md`).
//! Compiled here it costs tens of microseconds, and every process of the sandbox still
//! runs under it: the agent is PID 1, installs the filter before it reads a frame or
//! starts a thread, and everything else in the container descends from it (filters are
//! inherited across `fork` and `execve` and cannot be removed). Docker installs the short
//! [`isol8_protocol::seccomp::DENIED`] list for the moment before.
//!
//! The program, for an architecture with audit value `A` and highest named call `MAX`:
//!
//! ```text
//!   arch != A                      -> kill the thread (a 32-bit ABI: i386, arm32)
//!   x86-64: nr has bit 30 (x32)    -> kill the thread, except nr == -1 -> EPERM
//!   nr > MAX                       -> ENOSYS (newer than the policy: libc falls back)
//!   otherwise                      -> binary search over the numbers 0..=MAX, leaves:
//!                                     allow, EPERM, ENOSYS or an argument check
//! ```
//!
//! This is, decision for decision, what runc 1.1 with libseccomp 2.5 installs for the
//! same policy as a Docker profile, with one deliberate difference: `socket`'s family is
//! compared on its low 32 bits (libseccomp compares all 64, so `socket((1 << 32) | 40)`
//! passed its `!= AF_VSOCK` rule and the kernel, reading an `int`, made a vsock socket).
//! The tests check both against runc's own program, captured from a container.
//! The kernel's per-syscall action cache (Linux 5.11) recognises the calls this program
//! allows without reading their arguments, so they cost nothing after the first.

use isol8_protocol::seccomp::{
    Check, ALLOWED, CHECKED, CLONE_NAMESPACE_MASK, DENIED_ERRNO, ENOSYS, PERSONALITY_MASK,
    PERSONALITY_QUERY,
};

#[cfg(test)]
mod tests;

/// One BPF instruction (`struct sock_filter`, `linux/filter.h`).
pub type Instruction = libc::sock_filter;

// Classic BPF opcodes (`linux/bpf_common.h`).
// BPF_LD | BPF_W | BPF_ABS: load the 32-bit word at offset k.
const BPF_LD_W_ABS: u16 = 0x20;
// BPF_JMP | BPF_JA: jump forward k instructions.
const BPF_JMP_JA: u16 = 0x05;
// BPF_JMP | BPF_JEQ / JGT / JGE / JSET | BPF_K: compare with k, then jump jt or jf.
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGT_K: u16 = 0x25;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_JMP_JSET_K: u16 = 0x45;
// BPF_RET | BPF_K: return k.
const BPF_RET_K: u16 = 0x06;

// `seccomp` return values (`linux/seccomp.h`).
const RET_KILL_THREAD: u32 = 0;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

// Offsets in `struct seccomp_data` (`linux/seccomp.h`): nr, arch, instruction pointer,
// then six 64-bit arguments, whose halves sit little-endian on both supported CPUs.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;
const ARG0_HIGH: u32 = 20;
#[cfg(not(target_endian = "little"))]
compile_error!("the seccomp filter reads argument halves little-endian");

/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// An architecture the filter can be compiled for.
#[derive(Debug, Clone, Copy)]
pub struct Arch {
    /// `AUDIT_ARCH_*` value (`linux/audit.h`) of its native 64-bit ABI.
    pub audit: u32,
    /// x86-64: calls with bit 30 of their number are x32 ABI calls.
    pub x32_bit: bool,
    /// The native number of a system call, `None` when the architecture has none.
    pub number: fn(&str) -> Option<u32>,
}

/// x86-64 (`AUDIT_ARCH_X86_64`).
#[cfg(any(test, target_arch = "x86_64"))]
pub const X86_64: Arch = Arch {
    audit: 0xc000_003e,
    x32_bit: true,
    number: |name| {
        let n: syscalls::x86_64::Sysno = name.parse().ok()?;
        u32::try_from(n.id()).ok()
    },
};

/// arm64 (`AUDIT_ARCH_AARCH64`).
#[cfg(any(test, target_arch = "aarch64"))]
pub const AARCH64: Arch = Arch {
    audit: 0xc000_00b7,
    x32_bit: false,
    number: |name| {
        // The `syscalls` crate names arm64's 79 `fstatat`; the kernel (`asm-generic`
        // `__NR3264_fstatat` on 64-bit) and libseccomp call it `newfstatat`.
        let name = if name == "newfstatat" {
            "fstatat"
        } else {
            name
        };
        let n: syscalls::aarch64::Sysno = name.parse().ok()?;
        u32::try_from(n.id()).ok()
    },
};

/// The architecture this agent was built for.
pub fn native() -> &'static Arch {
    #[cfg(target_arch = "x86_64")]
    return &X86_64;
    #[cfg(target_arch = "aarch64")]
    return &AARCH64;
}

/// `x32` system calls have this bit in their number (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What the filter does with one call number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Deny,
    Check(Check),
}

/// A run of consecutive call numbers with one action.
#[derive(Debug, Clone, Copy)]
struct Segment {
    first: u32,
    action: Action,
}

fn stmt(code: u16, k: u32) -> Instruction {
    Instruction {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Instruction {
    Instruction { code, jt, jf, k }
}

fn ret(value: u32) -> Instruction {
    stmt(BPF_RET_K, value)
}

fn errno(e: u32) -> Instruction {
    ret(RET_ERRNO | e)
}

/// The strict policy as a BPF program for `arch`.
///
/// # Panics
/// When the program would exceed the kernel's 4,096 instructions (it has a few hundred;
/// the policy would have to grow tenfold).
pub fn program(arch: &Arch) -> Vec<Instruction> {
    let mut numbered: Vec<(u32, Action)> = ALLOWED
        .iter()
        .map(|name| (*name, Action::Allow))
        .chain(CHECKED.iter().map(|(name, c)| (*name, Action::Check(*c))))
        .filter_map(|(name, action)| Some(((arch.number)(name)?, action)))
        .collect();
    numbered.sort_unstable_by_key(|(nr, _)| *nr);
    let max = numbered.last().map_or(0, |(nr, _)| *nr);
    let mut segments: Vec<Segment> = Vec::new();
    let mut next = 0;
    for &(nr, action) in &numbered {
        if nr > next {
            push(&mut segments, next, Action::Deny);
        }
        push(&mut segments, nr, action);
        next = nr + 1;
    }

    let mut p = vec![
        stmt(BPF_LD_W_ABS, ARCH),
        jump(BPF_JMP_JEQ_K, arch.audit, 1, 0),
        ret(RET_KILL_THREAD),
        stmt(BPF_LD_W_ABS, NR),
    ];
    if arch.x32_bit {
        p.extend([
            jump(BPF_JMP_JSET_K, X32_SYSCALL_BIT, 0, 3),
            // -1: a tracer skipped the call; no rule names it.
            jump(BPF_JMP_JEQ_K, u32::MAX, 0, 1),
            errno(DENIED_ERRNO),
            ret(RET_KILL_THREAD),
        ]);
    }
    p.extend([jump(BPF_JMP_JGT_K, max, 0, 1), errno(ENOSYS)]);
    p.extend(search(&segments));
    assert!(p.len() <= MAX_INSTRUCTIONS, "{} instructions", p.len());
    p
}

/// Appends a segment, merging it into the previous one when the action is the same
/// (argument checks never merge: each reads its own call's arguments).
fn push(segments: &mut Vec<Segment>, first: u32, action: Action) {
    let mergeable = matches!(action, Action::Allow | Action::Deny);
    if mergeable && segments.last().is_some_and(|s| s.action == action) {
        return;
    }
    segments.push(Segment { first, action });
}

/// A binary search over `segments` (sorted, contiguous, non-empty) ending in a return
/// on every path. An inner node is `jge pivot` and a long jump over its left half, so
/// no short jump ever spans more than an argument check.
fn search(segments: &[Segment]) -> Vec<Instruction> {
    if let [only] = segments {
        return leaf(only.action);
    }
    let mid = segments.len() / 2;
    let left = search(&segments[..mid]);
    let right = search(&segments[mid..]);
    let skip = u32::try_from(left.len()).expect("program length");
    let mut p = Vec::with_capacity(left.len() + right.len() + 2);
    p.push(jump(BPF_JMP_JGE_K, segments[mid].first, 0, 1));
    p.push(stmt(BPF_JMP_JA, skip));
    p.extend(left);
    p.extend(right);
    p
}

fn leaf(action: Action) -> Vec<Instruction> {
    const _: () = assert!(CLONE_NAMESPACE_MASK >> 32 == 0);
    let low = |v: u64| (v & 0xffff_ffff) as u32;
    match action {
        Action::Allow => vec![ret(RET_ALLOW)],
        Action::Deny => vec![errno(DENIED_ERRNO)],
        Action::Check(Check::Enosys) => vec![errno(ENOSYS)],
        Action::Check(Check::CloneFlags) => vec![
            stmt(BPF_LD_W_ABS, ARG0_LOW),
            jump(BPF_JMP_JSET_K, low(CLONE_NAMESPACE_MASK), 0, 1),
            errno(DENIED_ERRNO),
            ret(RET_ALLOW),
        ],
        Action::Check(Check::SocketFamily) => vec![
            stmt(BPF_LD_W_ABS, ARG0_LOW),
            jump(BPF_JMP_JEQ_K, low(isol8_protocol::seccomp::AF_VSOCK), 0, 1),
            errno(DENIED_ERRNO),
            ret(RET_ALLOW),
        ],
        Action::Check(Check::Persona) => vec![
            // The upper half must be zero for either allowed form.
            stmt(BPF_LD_W_ABS, ARG0_HIGH),
            jump(BPF_JMP_JEQ_K, 0, 0, 5),
            stmt(BPF_LD_W_ABS, ARG0_LOW),
            jump(BPF_JMP_JSET_K, low(PERSONALITY_MASK), 1, 0),
            ret(RET_ALLOW),
            jump(BPF_JMP_JEQ_K, low(PERSONALITY_QUERY), 0, 1),
            ret(RET_ALLOW),
            errno(DENIED_ERRNO),
        ],
    }
}

/// Installs the strict filter on the calling process when the engine asked for it
/// ([`isol8_protocol::seccomp::FILTER_ENV`]), removing the request from the environment.
/// Returns whether it did. Called before any other thread exists; `TSYNC` makes the
/// kernel refuse rather than leave a thread unfiltered.
///
/// # Errors
/// The request names an unknown policy, or the kernel refused the filter (errno text).
pub fn install_if_asked() -> Result<bool, String> {
    use isol8_protocol::seccomp::{FILTER_ENV, FILTER_STRICT};
    let Some(asked) = std::env::var_os(FILTER_ENV) else {
        return Ok(false);
    };
    std::env::remove_var(FILTER_ENV);
    if asked != FILTER_STRICT {
        return Err(format!("unknown seccomp filter {asked:?} in {FILTER_ENV}"));
    }
    install(&mut program(native()))?;
    Ok(true)
}

/// Installs `filter` on the calling thread and, with `TSYNC`, every other thread of the
/// process; sets `no_new_privs` first (the OCI runtime already has).
///
/// # Errors
/// The kernel refused (errno text).
pub fn install(filter: &mut [Instruction]) -> Result<(), String> {
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(|_| "filter too long".to_string())?,
        filter: filter.as_mut_ptr(),
    };
    const SECCOMP_SET_MODE_FILTER: libc::c_long = 1;
    const SECCOMP_FILTER_FLAG_TSYNC: libc::c_long = 1;
    // SAFETY: plain prctl; `prog` points at `filter`, alive for the call, and the kernel
    // copies the program.
    let rc = unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
        }
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_TSYNC,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(format!(
            "the kernel refused the filter: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
