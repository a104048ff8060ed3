//! `libisol8-teardown.so`: what a pre-started interpreter loads (`LD_PRELOAD`) so that its
//! exit is reported before the kernel has torn its address space down.
//!
//! When a process ends, the kernel frees its memory (`exit_mm`) before it closes its
//! descriptors and before its parent can collect its exit status. For a pre-started
//! interpreter that is most of its exit: about 0.9 ms for Python's ~10 MB and 4–5 ms for
//! Node.js's ~45 MB resident and 750 MB mapped (docs/PERFORMANCE.md). The memory is only
//! freed by the last task using it. So, as the process's very last act, this library's
//! destructor starts a *holder*: a task sharing the address space (`CLONE_VM`, not a
//! thread of the process) that closes every descriptor it was given, asks for `SIGKILL`
//! when its parent dies (`PR_SET_PDEATHSIG`) and sleeps. The interpreter then exits at
//! once; the agent collects its status and reports it; the parent-death signal kills the
//! holder, which pays the teardown afterwards, when the result is already on its way.
//! The work is moved, not avoided: the CPU time is the same.
//!
//! What keeps this within isol8's rules (docs/SECURITY.md):
//! - The holder runs only the instructions below: no stack, no memory writes, every
//!   signal blocked (only `SIGKILL` and `SIGSTOP`, which have no handler, reach it), no
//!   descriptors. It is the sandbox user's, like the interpreter.
//! - It exists only after the interpreter's own exit handlers have run (ELF destructors
//!   run last in `exit`), and only for the process the library was loaded into at start,
//!   not for its forked children.
//! - It is killed when the interpreter dies. The agent kills whatever outlives a step
//!   before it reports the step, and a pool's reset waits until nothing of the execution
//!   is alive, so the next execution never meets it.
//! - Whatever fails (no process slot, an old kernel without `close_range`), the process
//!   simply exits as it would have without the library.
//!
//! The holder is cloned while the exiting thread is pinned to its CPU
//! (`pin_to_current_cpu`), so that it runs, and closes its copies of the process's
//! descriptors, as soon as the process is gone.
//!
//! The holder starts at `exit` (an ELF destructor) and at `quick_exit` (a handler
//! registered with the C library's `__cxa_at_quick_exit` when it has one: Bun ends that
//! way, and ELF destructors do not run there), whichever comes first, once.
//!
//! The library also keeps the way it was loaded out of the program's sight: when the
//! environment holds `LD_PRELOAD` naming nothing but a file called
//! `libisol8-teardown.so` (the variable the agent adds), its constructor takes that entry
//! out of the environment array before the program's own code reads it, so neither the
//! program nor anything it starts sees it. (`/proc/self/environ` still shows the
//! variable: that is the kernel's copy of the process's initial environment.)
//!
//! Built by the `isol8` crate's build script as a `no_std` shared object with no library
//! dependency (not even the C library): `.init_array` and `.fini_array` entries and raw
//! system calls for x86-64 and arm64. System call numbers are from the kernel's
//! `arch/x86/entry/syscalls/syscall_64.tbl` and `include/uapi/asm-generic/unistd.h`.
#![no_std]

use core::sync::atomic::{AtomicI32, Ordering};

/// `CLONE_VM` (`include/uapi/linux/sched.h`); the low byte, the exit signal, stays 0.
const CLONE_VM: usize = 0x100;
const SIG_BLOCK: usize = 0;
const SIG_SETMASK: usize = 2;
const PR_SET_PDEATHSIG: usize = 1;
const SIGKILL: usize = 9;

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const RT_SIGPROCMASK: usize = 14;
    pub const GETPID: usize = 39;
    pub const CLONE: usize = 56;
    pub const EXIT: usize = 60;
    pub const GETPPID: usize = 110;
    pub const PRCTL: usize = 157;
    pub const PPOLL: usize = 271;
    pub const SCHED_SETAFFINITY: usize = 203;
    pub const SCHED_GETAFFINITY: usize = 204;
    pub const GETCPU: usize = 309;
    pub const CLOSE_RANGE: usize = 436;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const RT_SIGPROCMASK: usize = 135;
    pub const GETPID: usize = 172;
    pub const CLONE: usize = 220;
    pub const EXIT: usize = 93;
    pub const GETPPID: usize = 173;
    pub const PRCTL: usize = 167;
    pub const PPOLL: usize = 73;
    pub const SCHED_SETAFFINITY: usize = 122;
    pub const SCHED_GETAFFINITY: usize = 123;
    pub const GETCPU: usize = 168;
    pub const CLOSE_RANGE: usize = 436;
}

/// The process this library was loaded into (0 until its constructor ran, and again
/// once its holder was started).
static LOADED_INTO: AtomicI32 = AtomicI32::new(0);

/// The `LD_PRELOAD` entry the constructor takes out of the environment: this prefix, then
/// a path ending in [`FILE_NAME`] with no separator (`:` or space) of a list.
const PRELOAD_PREFIX: &[u8] = b"LD_PRELOAD=";
/// The library's file name, as the agent names it (`/usr/local/lib/isol8/` in the images).
const FILE_NAME: &[u8] = b"/libisol8-teardown.so";

// Symbols of the C library this library uses when the process has them, and does without
// otherwise: weak references, which the dynamic loader resolves to 0 when absent.
core::arch::global_asm!(".weak environ", ".weak __cxa_at_quick_exit");

/// The address the dynamic loader gave the symbol `$sym` (0 when the process has none),
/// read from the global offset table in assembly, so that the compiler cannot assume it
/// is not null.
macro_rules! got_address {
    ($sym:literal) => {{
        let address: usize;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a load from this object's own global offset table.
        unsafe {
            core::arch::asm!(concat!("mov {a}, qword ptr [rip + ", $sym, "@GOTPCREL]"),
                a = out(reg) address, options(nostack, readonly, preserves_flags));
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        unsafe {
            core::arch::asm!(concat!("adrp {a}, :got:", $sym),
                concat!("ldr {a}, [{a}, :got_lo12:", $sym, "]"),
                a = out(reg) address, options(nostack, readonly, preserves_flags));
        }
        address
    }};
}

/// A system call with up to four arguments; returns the raw result (`-errno` on failure).
#[inline(always)]
unsafe fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller passes a system call and arguments valid for it.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a,
            in("rsi") b, in("rdx") c, in("r10") d, lateout("rcx") _, lateout("r11") _,
            options(nostack));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("svc 0", in("x8") n, inlateout("x0") a as isize => ret, in("x1") b,
            in("x2") c, in("x3") d, options(nostack));
    }
    ret
}

extern "C" fn loaded() {
    // SAFETY: getpid takes no arguments.
    let pid = unsafe { syscall4(nr::GETPID, 0, 0, 0, 0) };
    LOADED_INTO.store(pid as i32, Ordering::Relaxed);
    let environ = got_address!("environ") as *const *mut *const u8;
    if !environ.is_null() {
        // SAFETY: the C library's `environ`, which it sets before any constructor runs
        // (glibc and musl alike): a null-terminated array of C strings.
        unsafe { forget_own_preload(*environ) };
    }
    let at_quick_exit = got_address!("__cxa_at_quick_exit");
    if at_quick_exit != 0 {
        // SAFETY: glibc's `int __cxa_at_quick_exit(void (*)(void), void *dso)`, which
        // `at_quick_exit` calls; no object handle, as this library is never unloaded.
        unsafe {
            let register: unsafe extern "C" fn(extern "C" fn(), *mut u8) -> i32 =
                core::mem::transmute(at_quick_exit);
            register(exiting, core::ptr::null_mut());
        }
    }
}

/// Takes the agent's `LD_PRELOAD` entry ([`PRELOAD_PREFIX`], [`FILE_NAME`]) out of the
/// null-terminated array `env`, moving the entries after it up one place.
///
/// # Safety
/// `env` is null or a writable null-terminated array of C strings.
unsafe fn forget_own_preload(env: *mut *const u8) {
    if env.is_null() {
        return;
    }
    let mut i = 0;
    // SAFETY: within the array, up to and including its null terminator.
    unsafe {
        while !(*env.add(i)).is_null() && !is_own_preload(*env.add(i)) {
            i += 1;
        }
        // From the entry found (none: the terminator, and nothing moves), each entry takes
        // the next one's place, the terminator last.
        while !(*env.add(i)).is_null() {
            *env.add(i) = *env.add(i + 1);
            i += 1;
        }
    }
}

/// Whether the C string `entry` is `LD_PRELOAD=` and one path ending in [`FILE_NAME`]
/// (no `:`, space or tab, which separate a list). Compares byte by byte: no C library
/// function (`strlen`, `memcmp`) to link against.
///
/// # Safety
/// `entry` is a valid C string.
unsafe fn is_own_preload(entry: *const u8) -> bool {
    // SAFETY: the prefix comparison stops at the first byte that differs, and a NUL
    // differs from every byte of the prefix, so no read passes the string's end; the
    // value is read up to its NUL, and its last `FILE_NAME.len()` bytes within it.
    unsafe {
        if !bytes_at(entry, PRELOAD_PREFIX) {
            return false;
        }
        let value = entry.add(PRELOAD_PREFIX.len());
        let mut len = 0;
        loop {
            match *value.add(len) {
                0 => break,
                b':' | b' ' | b'\t' => return false,
                _ => len += 1,
            }
        }
        len.checked_sub(FILE_NAME.len())
            .is_some_and(|start| bytes_at(value.add(start), FILE_NAME))
    }
}

/// Whether the bytes at `p` are `expected`, read one by one up to the first difference.
///
/// # Safety
/// `p` is readable up to the first byte that differs from `expected`, or for its length.
unsafe fn bytes_at(p: *const u8, expected: &[u8]) -> bool {
    // SAFETY: the caller's promise; `all` stops at the first difference.
    expected
        .iter()
        .enumerate()
        .all(|(i, &b)| unsafe { *p.add(i) } == b)
}

extern "C" fn exiting() {
    // SAFETY: getpid takes no arguments.
    let pid = unsafe { syscall4(nr::GETPID, 0, 0, 0, 0) };
    // Once: `quick_exit` called from an exit handler, or `exit` from a quick-exit one,
    // finds it taken. (A plain load and store: a compare-and-swap would call the C
    // library on arm64. Should two threads reach `exit` and `quick_exit` at once, each
    // starts a holder, and both end with the process.)
    if pid as i32 != LOADED_INTO.load(Ordering::Relaxed) {
        // A forked child of the interpreter (not ours to speed up), or the holder
        // already started.
        return;
    }
    LOADED_INTO.store(0, Ordering::Relaxed);
    let all: u64 = !0;
    let mut saved: u64 = 0;
    let mut cpus = [0u64; CPU_SET_BYTES / 8];
    // SAFETY: valid sigset pointers of the kernel's size (8 bytes). Every signal is
    // blocked across the clone, so the holder, which inherits the mask, never runs a
    // handler (which would need a stack); this process restores its mask just after.
    unsafe {
        syscall4(
            nr::RT_SIGPROCMASK,
            SIG_BLOCK,
            &all as *const u64 as usize,
            &mut saved as *mut u64 as usize,
            8,
        );
        let pinned = pin_to_current_cpu(&mut cpus);
        start_holder(pid as usize);
        if pinned {
            syscall4(
                nr::SCHED_SETAFFINITY,
                0,
                CPU_SET_BYTES,
                cpus.as_ptr() as usize,
                0,
            );
        }
        syscall4(
            nr::RT_SIGPROCMASK,
            SIG_SETMASK,
            &saved as *const u64 as usize,
            0,
            8,
        );
    }
}

/// Bytes of the CPU sets read and written (1,024 CPUs; on a machine with more possible
/// CPUs the kernel refuses them and nothing is pinned).
const CPU_SET_BYTES: usize = 128;

/// Pins the calling thread to the CPU it runs on, saving its CPU set in `saved`; false
/// (nothing changed) when a call fails. The holder is cloned while the thread is pinned,
/// so it is queued on the CPU the exiting process is about to leave, not on the other
/// one: it holds copies of the process's descriptors until its first system call closes
/// them, and the output pipes the agent waits for end only then. Queued on another vCPU,
/// it could wait for that vCPU to wake or to be free (docs/PERFORMANCE.md: Bun's and
/// Node.js's step ends shortened by 0.1–0.4 ms). The caller restores `saved` after the
/// clone; the holder keeps the single CPU, which is where it then frees the memory.
///
/// # Safety
/// Raw system calls on buffers of [`CPU_SET_BYTES`].
unsafe fn pin_to_current_cpu(saved: &mut [u64; CPU_SET_BYTES / 8]) -> bool {
    let mut cpu: u32 = 0;
    // SAFETY: the buffers are CPU_SET_BYTES long (getaffinity returns the bytes it
    // wrote, > 0) and `cpu` is a valid u32; getcpu's other arguments may be null.
    unsafe {
        if syscall4(
            nr::SCHED_GETAFFINITY,
            0,
            CPU_SET_BYTES,
            saved.as_mut_ptr() as usize,
            0,
        ) <= 0
            || syscall4(nr::GETCPU, &mut cpu as *mut u32 as usize, 0, 0, 0) != 0
            || cpu as usize >= CPU_SET_BYTES * 8
        {
            return false;
        }
        let mut one = [0u64; CPU_SET_BYTES / 8];
        one[cpu as usize / 64] = 1 << (cpu % 64);
        syscall4(
            nr::SCHED_SETAFFINITY,
            0,
            CPU_SET_BYTES,
            one.as_ptr() as usize,
            0,
        ) == 0
    }
}

/// `asm!` with the holder's code for this architecture (the template before `;`) and the
/// system call numbers and constants it names, then the clone's register operands.
macro_rules! holder_asm {
    ($($code:literal),+; $($operands:tt)*) => {
        core::arch::asm!(
            $($code,)+
            close_range = const nr::CLOSE_RANGE,
            prctl = const nr::PRCTL,
            pdeathsig = const PR_SET_PDEATHSIG,
            sigkill = const SIGKILL,
            getppid = const nr::GETPPID,
            ppoll = const nr::PPOLL,
            exit = const nr::EXIT,
            $($operands)*
        )
    };
}

/// Clones the holder (see the module docs). The child never returns from the assembly:
/// it closes its descriptors, asks for `SIGKILL` at its parent's death, leaves at once if
/// the parent (`parent`) is already gone, and otherwise sleeps in `ppoll` with no
/// descriptors and no timeout until that signal comes. It uses no stack and writes no
/// memory.
#[cfg(target_arch = "x86_64")]
unsafe fn start_holder(parent: usize) {
    // SAFETY: clone with CLONE_VM and a null stack: the child keeps this stack pointer
    // but only executes the system calls below, all signals blocked, so it never touches
    // the stack this thread goes on using.
    unsafe {
        holder_asm!(
            "syscall",
            "test rax, rax",
            "jnz 6f",
            "mov eax, {close_range}",
            "xor edi, edi",
            "mov esi, -1",
            "xor edx, edx",
            "syscall",
            "test rax, rax",
            "jnz 5f",
            "mov eax, {prctl}",
            "mov edi, {pdeathsig}",
            "mov esi, {sigkill}",
            "syscall",
            "test rax, rax",
            "jnz 5f",
            "mov eax, {getppid}",
            "syscall",
            "cmp rax, r12",
            "jne 5f",
            "4:",
            "mov eax, {ppoll}",
            "xor edi, edi",
            "xor esi, esi",
            "xor edx, edx",
            "xor r10d, r10d",
            "syscall",
            "jmp 4b",
            "5:",
            "mov eax, {exit}",
            "xor edi, edi",
            "syscall",
            "6:";
            inlateout("rax") nr::CLONE => _,
            inlateout("rdi") CLONE_VM => _,
            inlateout("rsi") 0usize => _,
            inlateout("rdx") 0usize => _,
            inlateout("r10") 0usize => _,
            inlateout("r8") 0usize => _,
            in("r12") parent,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
}

/// As the x86-64 version.
#[cfg(target_arch = "aarch64")]
unsafe fn start_holder(parent: usize) {
    // SAFETY: as the x86-64 version.
    unsafe {
        holder_asm!(
            "svc 0",
            "cbnz x0, 6f",
            "mov x8, {close_range}",
            "mov x0, #0",
            "mov x1, #-1",
            "mov x2, #0",
            "svc 0",
            "cbnz x0, 5f",
            "mov x8, {prctl}",
            "mov x0, {pdeathsig}",
            "mov x1, {sigkill}",
            "svc 0",
            "cbnz x0, 5f",
            "mov x8, {getppid}",
            "svc 0",
            "cmp x0, x9",
            "b.ne 5f",
            "4:",
            "mov x8, {ppoll}",
            "mov x0, #0",
            "mov x1, #0",
            "mov x2, #0",
            "mov x3, #0",
            "svc 0",
            "b 4b",
            "5:",
            "mov x8, {exit}",
            "mov x0, #0",
            "svc 0",
            "6:";
            inlateout("x8") nr::CLONE => _,
            inlateout("x0") CLONE_VM => _,
            inlateout("x1") 0usize => _,
            inlateout("x2") 0usize => _,
            inlateout("x3") 0usize => _,
            inlateout("x4") 0usize => _,
            in("x9") parent,
            options(nostack),
        );
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = loaded;

#[used]
#[unsafe(link_section = ".fini_array")]
static FINI: extern "C" fn() = exiting;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
