//! The compiled filter against the policy's model, against the program runc installs for
//! the same policy, and in the kernel.

use super::*;
use isol8_protocol::seccomp::{decide, AF_VSOCK, DENIED};

/// The program runc 1.1.5 (libseccomp 2.5.4) installed for the strict policy as a Docker
/// profile (isol8's `strict` before the agent installed it, with the 32-bit-only names it
/// then listed), captured from a container with `scripts/capture-seccomp-program.py`.
const RUNC_STRICT_X86_64: &[u8] = include_bytes!("runc-1.1.5-strict-x86_64.bpf");

const AUDIT_ARCH_I386: u32 = 0x4000_0003;

/// `struct seccomp_data` for the emulator.
#[derive(Clone, Copy)]
struct Data {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

impl Data {
    fn word(&self, offset: u32) -> u32 {
        match offset {
            0 => self.nr,
            4 => self.arch,
            16..=63 if offset.is_multiple_of(4) => {
                let arg = self.args[(offset as usize - 16) / 8];
                if offset.is_multiple_of(8) {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            _ => panic!("load at offset {offset}"),
        }
    }
}

/// Runs a classic BPF seccomp program (the instructions libseccomp and [`program`] use)
/// on `data`, like the kernel's interpreter.
fn run(p: &[Instruction], data: &Data) -> u32 {
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = p[pc];
        let branch = |taken: bool| pc + 1 + usize::from(if taken { i.jt } else { i.jf });
        pc = match i.code {
            0x20 => {
                acc = data.word(i.k);
                pc + 1
            }
            0x54 => {
                acc &= i.k;
                pc + 1
            }
            0x05 => pc + 1 + i.k as usize,
            0x15 => branch(acc == i.k),
            0x25 => branch(acc > i.k),
            0x35 => branch(acc >= i.k),
            0x45 => branch(acc & i.k != 0),
            0x06 => return i.k,
            code => panic!("opcode {code:#x} at {pc}"),
        };
    }
}

fn decode(bytes: &[u8]) -> Vec<Instruction> {
    bytes
        .chunks_exact(8)
        .map(|c| Instruction {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect()
}

/// First arguments worth trying on every checked call: the policy's constants, each
/// with its upper half set, every single bit, and the edges.
fn first_arguments() -> Vec<u64> {
    let mut v = vec![
        0,
        1,
        2,
        10,
        0x8,
        0x2_0000,
        0x2_0008,
        0xffff_ffff,
        AF_VSOCK,
        0x0100_0011,
        CLONE_NAMESPACE_MASK,
        u64::MAX,
    ];
    for base in v.clone() {
        v.push(base | 1 << 32);
        v.push(base | 1 << 63);
    }
    for bit in 0..64 {
        v.push(1 << bit);
    }
    v
}

fn numbers() -> Vec<u32> {
    let mut v: Vec<u32> = (0..1100).collect();
    for base in [0x4000_0000u32, 0x8000_0000, 0xc000_0000] {
        v.extend((0..600).map(|n| base + n));
        v.push(base - 1);
    }
    v.extend([0xffff_fffe, 0xffff_ffff]);
    v
}

fn is_checked(arch: &Arch, nr: u32) -> bool {
    CHECKED
        .iter()
        .any(|(name, _)| (arch.number)(name) == Some(nr))
}

/// Every input the comparisons below try: each architecture value, every call number up
/// to 1,100 and around the x32 bit and the sign bit, with every first argument for the
/// checked calls.
fn inputs(arch: &Arch) -> Vec<Data> {
    let mut v = Vec::new();
    for a in [arch.audit, X86_64.audit, AARCH64.audit, AUDIT_ARCH_I386, 0] {
        for nr in numbers() {
            let args: Vec<u64> = if is_checked(arch, nr & !X32_SYSCALL_BIT) {
                first_arguments()
            } else {
                vec![0, u64::MAX]
            };
            for a0 in args {
                v.push(Data {
                    nr,
                    arch: a,
                    args: [a0, 7, 0, 0, 0, 0],
                });
            }
        }
    }
    v
}

#[test]
fn the_filter_decides_as_runc_did_except_for_a_vsock_family_hidden_in_the_upper_half() {
    let runc = decode(RUNC_STRICT_X86_64);
    let ours = program(&X86_64);
    let socket = (X86_64.number)("socket").expect("socket");
    let mut differences = 0;
    for d in inputs(&X86_64) {
        let (theirs, mine) = (run(&runc, &d), run(&ours, &d));
        let vsock_in_upper_half = d.arch == X86_64.audit
            && d.nr == socket
            && d.args[0] & 0xffff_ffff == AF_VSOCK
            && d.args[0] >> 32 != 0;
        if vsock_in_upper_half {
            assert_eq!(theirs, RET_ALLOW, "runc's rule compares 64 bits");
            assert_eq!(mine, RET_ERRNO | DENIED_ERRNO);
            differences += 1;
        } else {
            assert_eq!(
                mine, theirs,
                "nr {:#x} arch {:#x} arg0 {:#x}",
                d.nr, d.arch, d.args[0]
            );
        }
    }
    assert!(differences > 0, "the vsock case was tried");
}

#[test]
fn the_filter_matches_the_policy_on_both_architectures() {
    for arch in [&X86_64, &AARCH64] {
        let p = program(arch);
        let named: Vec<&str> = ALLOWED
            .iter()
            .chain(CHECKED.iter().map(|(n, _)| n))
            .chain(DENIED)
            .copied()
            .collect();
        for name in named {
            let Some(nr) = (arch.number)(name) else {
                continue;
            };
            for a0 in first_arguments() {
                let args = [a0, 0, 0, 0, 0, 0];
                let expected = decide(name, &args).map_or(RET_ALLOW, |e| RET_ERRNO | e);
                let d = Data {
                    nr,
                    arch: arch.audit,
                    args,
                };
                assert_eq!(run(&p, &d), expected, "{name}({a0:#x})");
            }
        }
        // A number the policy does not name: EPERM up to the highest it names, ENOSYS
        // above; another ABI: killed.
        let max = ALLOWED
            .iter()
            .chain(CHECKED.iter().map(|(n, _)| n))
            .filter_map(|n| (arch.number)(n))
            .max()
            .expect("names");
        for nr in 0..max + 100 {
            let named = ALLOWED
                .iter()
                .chain(CHECKED.iter().map(|(n, _)| n))
                .any(|n| (arch.number)(n) == Some(nr));
            let d = Data {
                nr,
                arch: arch.audit,
                args: [0; 6],
            };
            if !named {
                let expected = if nr > max { ENOSYS } else { DENIED_ERRNO };
                assert_eq!(run(&p, &d), RET_ERRNO | expected, "nr {nr}");
            }
            let foreign = Data {
                arch: AUDIT_ARCH_I386,
                ..d
            };
            assert_eq!(run(&p, &foreign), RET_KILL_THREAD, "i386 nr {nr}");
        }
    }
}

#[test]
fn every_name_has_its_kernel_number() {
    // Every allowed name is a call of the x86-64 ABI.
    for name in ALLOWED {
        assert!((X86_64.number)(name).is_some(), "{name} on x86-64");
    }
    // arm64 has no legacy calls its generic table replaced by the `*at` family.
    let missing: Vec<&str> = ALLOWED
        .iter()
        .copied()
        .filter(|n| (AARCH64.number)(n).is_none())
        .collect();
    for name in &missing {
        assert!(
            (X86_64.number)(name).is_some_and(|nr| nr < 335),
            "{name}: missing on arm64 but not a legacy x86-64 call"
        );
    }
    // Spot checks against libseccomp 2.5.4's `scmp_sys_resolver`.
    for (arch, name, nr) in [
        (&X86_64, "read", 0),
        (&X86_64, "socket", 41),
        (&X86_64, "clone", 56),
        (&X86_64, "personality", 135),
        (&X86_64, "clone3", 435),
        (&X86_64, "fchmodat2", 452),
        (&AARCH64, "newfstatat", 79),
        (&AARCH64, "socket", 198),
        (&AARCH64, "clone", 220),
        (&AARCH64, "personality", 92),
        (&AARCH64, "clone3", 435),
    ] {
        assert_eq!((arch.number)(name), Some(nr), "{name}");
    }
}

#[test]
fn the_kernel_accepts_the_filter_and_enforces_it() {
    let mut filter = program(native());
    assert!(filter.len() < 1024, "{} instructions", filter.len());
    // In a child: the filter stays with it.
    // SAFETY: the child makes only raw system calls and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: raw system calls with integer arguments; `_exit` never returns.
        unsafe {
            let code = if install(&mut filter).is_err() {
                10
            } else if libc::syscall(libc::SYS_unshare, 0) != -1
                || *libc::__errno_location() != libc::EPERM
            {
                11
            } else if libc::syscall(libc::SYS_socket, 1u64 << 32 | AF_VSOCK, 1, 0) != -1
                || *libc::__errno_location() != libc::EPERM
            {
                12
            } else if libc::syscall(libc::SYS_clone3, 0, 0) != -1
                || *libc::__errno_location() != libc::ENOSYS
            {
                13
            } else if libc::getppid() <= 0 {
                14
            } else {
                0
            };
            libc::_exit(code);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "see the child's exit codes");
}
