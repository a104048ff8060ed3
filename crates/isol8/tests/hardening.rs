//! SPEC section 4: every default hardening measure, each shown by really attempting the
//! forbidden thing inside a sandbox and checking that it failed.

use isol8::EngineOptions;
use isol8_testkit::{assert_clean, code, engine, run};

/// Runs a python snippet calling a raw syscall and returns the errno it printed.
const SYSCALL_PROBE: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
nr = int(sys.argv[1]) if len(sys.argv) > 1 else NR
args = [ctypes.c_long(a) for a in ARGS]
r = libc.syscall(ctypes.c_long(nr), *args)
print(r, ctypes.get_errno())
"#;

/// Skips `test` (see [`isol8_testkit::skip`]: never in CI) on CPUs other than x86-64.
fn skipped_off_x86_64(test: &str, why: &str) -> bool {
    !cfg!(target_arch = "x86_64") && isol8_testkit::skip(test, why)
}

fn probe(nr: u32, args: &[i64]) -> String {
    SYSCALL_PROBE
        .replace("NR", &nr.to_string())
        .replace("ARGS", &format!("{args:?}"))
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn root_filesystem_is_read_only_and_tmp_is_noexec() {
    let engine = engine(EngineOptions::default()).await;
    let r = run(&engine, code("bash", "echo x > /evil 2>&1 || echo root-denied; echo x > /usr/bin/evil 2>/dev/null || echo usr-denied; touch /sandbox/ok && echo sandbox-ok")).await;
    assert_eq!(r.stdout, "root-denied\nusr-denied\nsandbox-ok\n", "{r:?}");

    let r = run(
        &engine,
        code("bash", "printf '#!/bin/sh\\necho ran\\n' > /tmp/x.sh; chmod +x /tmp/x.sh; /tmp/x.sh; echo rc=$?; cp /bin/true /tmp/t; /tmp/t; echo rc2=$?; cp /bin/true /dev/shm/t 2>/dev/null && { /dev/shm/t; echo rc3=$?; }"),
    )
    .await;
    assert!(!r.stdout.contains("ran\n"), "{r:?}");
    assert!(r.stdout.contains("rc=126"), "{r:?}");
    assert!(r.stdout.contains("rc2=126"), "{r:?}");
    assert!(!r.stdout.contains("rc3=0"), "{r:?}");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn user_is_not_root_and_has_no_capabilities() {
    let engine = engine(EngineOptions::default()).await;
    let r = run(
        &engine,
        code("bash", "id -u; id -g; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status"),
    )
    .await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "1000", "{r:?}");
    assert_eq!(lines[1], "1000");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = lines.iter().find(|l| l.starts_with(cap)).expect(cap);
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')),
        "{r:?}"
    );
    // The agent (PID 1) holds exactly SETUID, SETGID, SETPCAP and KILL (bits 7, 6, 8,
    // 5), with an empty bounding set that its children inherit.
    let r = run(
        &engine,
        code("bash", "grep -E '^(CapEff|CapBnd)' /proc/1/status"),
    )
    .await;
    assert_eq!(
        r.stdout, "CapEff:\t00000000000001e0\nCapBnd:\t0000000000000000\n",
        "{r:?}"
    );
    // It is another user's non-dumpable process: its fds are off limits.
    let r = run(&engine, code("bash", "echo garbage > /proc/1/fd/1 && echo wrote; ls /proc/1/fd >/dev/null 2>&1 || echo no-fds; kill -9 1; echo still-here")).await;
    assert!(!r.stdout.contains("wrote"), "{r:?}");
    assert!(
        r.stdout.contains("no-fds") && r.stdout.contains("still-here"),
        "{r:?}"
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn dangerous_syscalls_are_refused() {
    let engine = engine(EngineOptions::default()).await;
    // x86_64 syscall numbers.
    let cases = [
        ("unshare(CLONE_NEWUSER)", 272, vec![0x1000_0000]),
        ("mount", 165, vec![0, 0, 0, 0, 0]),
        ("keyctl", 250, vec![0, 0, 0, 0, 0]),
        ("io_uring_setup", 425, vec![8, 0]),
        ("ptrace(PTRACE_ATTACH, 1)", 101, vec![16, 1, 0, 0]),
        ("bpf", 321, vec![0, 0, 0]),
        ("userfaultfd", 323, vec![0]),
        ("perf_event_open", 298, vec![0, 0, -1, -1, 0]),
    ];
    for (name, nr, args) in cases {
        let r = run(&engine, code("python", &probe(nr, &args))).await;
        let out: Vec<&str> = r.stdout.split_whitespace().collect();
        assert_eq!(out.first(), Some(&"-1"), "{name} succeeded: {r:?}");
        let errno: i32 = out.get(1).and_then(|e| e.parse().ok()).unwrap_or(0);
        assert!(
            errno == libc_eperm() || errno == 38,
            "{name}: unexpected errno {errno}: {r:?}"
        );
    }
    // The command-line tools fail too.
    let r = run(&engine, code("bash", "unshare -Ur true && echo unshared; mount -t tmpfs none /sandbox 2>/dev/null && echo mounted; echo end")).await;
    assert_eq!(r.stdout, "end\n", "{r:?}");
    assert_clean(&engine).await;
}

/// Runs machine code that makes one system call and returns its result. `{CODE}` is the
/// bytes; the result is printed before anything else can happen.
const MACHINE_CODE: &str = r#"
import ctypes, mmap, os, sys
buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write(bytes({CODE}))
call = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
print("started", flush=True)
r = call()
print("returned", r, "pid", os.getpid(), flush=True)
"#;

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn system_calls_through_a_32_bit_abi_are_refused() {
    if skipped_off_x86_64(
        "system_calls_through_a_32_bit_abi_are_refused",
        "the machine code is x86_64's",
    ) {
        return;
    }
    let engine = engine(EngineOptions::default()).await;
    // `mov eax, NR; int 0x80; ret` (i386 ABI) and `mov eax, NR|0x40000000; syscall; ret`
    // (x32 ABI): getpid, which the native ABI allows.
    let i386_getpid = "[0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3]";
    let i386_unshare = "[0xb8, 0x36, 1, 0, 0, 0xbb, 0, 0, 0, 0x10, 0xcd, 0x80, 0xc3]";
    let x32_getpid = "[0xb8, 39, 0, 0, 0x40, 0x0f, 0x05, 0xc3]";
    for (name, bytes) in [
        ("i386 getpid", i386_getpid),
        ("i386 unshare(CLONE_NEWUSER)", i386_unshare),
    ] {
        let r = run(
            &engine,
            code("python", &MACHINE_CODE.replace("{CODE}", bytes)),
        )
        .await;
        // The filter matches no architecture: the runtime's bad-architecture action kills
        // the caller with SIGSYS before the call runs.
        assert_eq!(r.stdout, "started\n", "{name} returned: {r:?}");
        assert_eq!(r.exit_code, 128 + libc::SIGSYS, "{name}: {r:?}");
    }
    // x32 calls never run either (the kernel may not even have the ABI: -ENOSYS).
    let r = run(
        &engine,
        code("python", &MACHINE_CODE.replace("{CODE}", x32_getpid)),
    )
    .await;
    assert!(
        !r.stdout.contains("returned") || r.stdout.contains("returned -"),
        "x32 getpid ran: {r:?}"
    );
    // The same program through the native ABI runs: the refusal is the ABI's.
    let native_getpid = "[0xb8, 39, 0, 0, 0, 0x0f, 0x05, 0xc3]";
    let r = run(
        &engine,
        code("python", &MACHINE_CODE.replace("{CODE}", native_getpid)),
    )
    .await;
    let words: Vec<&str> = r.stdout.split_whitespace().collect();
    assert_eq!(words.get(1), Some(&"returned"), "{r:?}");
    assert_eq!(
        words.get(2),
        words.get(4),
        "getpid's result is the pid: {r:?}"
    );
    assert_clean(&engine).await;
}

/// The strict policy is the agent's filter: Docker's baseline refuses only the listed
/// dangerous calls, so these answers come from the filter the agent installed.
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn the_agents_filter_decides_what_the_docker_baseline_leaves_open() {
    if skipped_off_x86_64(
        "the_agents_filter_decides_what_the_docker_baseline_leaves_open",
        "the system call numbers are x86_64's",
    ) {
        return;
    }
    let engine = engine(EngineOptions::default()).await;
    // Exactly two filters on the program: Docker's baseline and the agent's.
    let r = run(
        &engine,
        code("bash", "grep -E '^Seccomp' /proc/self/status"),
    )
    .await;
    assert_eq!(r.stdout, "Seccomp:\t2\nSeccomp_filters:\t2\n", "{r:?}");
    let eperm = libc_eperm().to_string();
    for (name, nr, args, errno) in [
        // Not in the policy, harmless and unprivileged without a filter (returns 0).
        ("get_mempolicy", 239, vec![0, 0, 0, 0, 0], eperm.as_str()),
        // AF_VSOCK with bits in the upper half, which the kernel's `int` family ignores.
        (
            "socket((1 << 32) | AF_VSOCK)",
            41,
            vec![(1 << 32) | 40, 1, 0],
            eperm.as_str(),
        ),
        // Newer than every call the policy names (mseal): ENOSYS, so libc falls back.
        ("mseal", 462, vec![0, 0, 0], "38"),
    ] {
        let r = run(&engine, code("python", &probe(nr, &args))).await;
        let out: Vec<&str> = r.stdout.split_whitespace().collect();
        assert_eq!(out, ["-1", errno], "{name}: {r:?}");
    }
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn personality_changes_beyond_dockers_values_are_refused() {
    let engine = engine(EngineOptions::default()).await;
    // x86_64 personality = 135. Allowed: the query and PER_LINUX32; refused:
    // ADDR_NO_RANDOMIZE (0x40000, what `setarch -R` asks for) and READ_IMPLIES_EXEC.
    for (value, allowed) in [
        (0xffff_ffff_i64, true),
        (0x8, true),
        (0x4_0000, false),
        (0x40_0000, false),
    ] {
        let r = run(&engine, code("python", &probe(135, &[value]))).await;
        let out: Vec<&str> = r.stdout.split_whitespace().collect();
        if allowed {
            assert_ne!(out.first(), Some(&"-1"), "personality({value:#x}): {r:?}");
        } else {
            assert_eq!(
                out,
                ["-1", "1"],
                "personality({value:#x}) not refused: {r:?}"
            );
        }
    }
    let r = run(
        &engine,
        code("bash", "setarch -R true && echo no-aslr-allowed; echo end"),
    )
    .await;
    assert_eq!(r.stdout, "end\n", "{r:?}");
    assert_clean(&engine).await;
}

fn libc_eperm() -> i32 {
    1
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn only_loopback_in_network_none() {
    let engine = engine(EngineOptions::default()).await;
    let r = run(&engine, code("bash", "ls /sys/class/net")).await;
    assert_eq!(
        r.stdout.split_whitespace().collect::<Vec<_>>(),
        vec!["lo"],
        "{r:?}"
    );
    let r = run(
        &engine,
        code("python", "import socket\ns = socket.socket()\ns.settimeout(2)\ntry:\n    s.connect(('192.0.2.1', 80)); print('connected')\nexcept OSError as e:\n    print('refused', e.errno)"),
    )
    .await;
    assert!(r.stdout.starts_with("refused"), "{r:?}");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn fork_bomb_stops_at_the_pids_limit() {
    let engine = engine(EngineOptions::default()).await;
    let mut req = code(
        "bash",
        "bomb() { bomb | bomb & }; bomb; sleep 3; echo survived",
    );
    req.timeout_ms = Some(8000);
    let t = std::time::Instant::now();
    let r = run(&engine, req).await;
    assert!(t.elapsed().as_secs() < 30);
    assert!(
        r.stderr.contains("fork")
            || r.stderr.contains("retry")
            || r.stderr.contains("Resource temporarily unavailable"),
        "{r:?}"
    );
    // The host and the engine are fine: the next execution works normally.
    let ok = run(&engine, code("bash", "echo fine")).await;
    assert_eq!(ok.stdout, "fine\n");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn memory_limit_kills_with_137() {
    let engine = engine(EngineOptions::default()).await;
    let r = run(
        &engine,
        code(
            "python",
            "b = bytearray(1 << 30)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('allocated')",
        ),
    )
    .await;
    assert_eq!(r.exit_code, 137, "{r:?}");
    assert!(!r.stdout.contains("allocated"));
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn tmpfs_sizes_are_enforced() {
    let options = EngineOptions {
        tmp_size: Some("8m".into()),
        sandbox_size: Some("16m".into()),
        ..Default::default()
    };
    let engine = engine(options).await;
    let r = run(&engine, code("bash", "head -c 20m /dev/zero > /tmp/big 2>/dev/null; echo tmp=$?; head -c 40m /dev/zero > /sandbox/big 2>/dev/null; echo sb=$?; df -k /tmp /sandbox | tail -2 | awk '{print $2}'")).await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "tmp=1", "{r:?}");
    assert_eq!(lines[1], "sb=1", "{r:?}");
    assert_eq!(lines[2], "8192");
    assert_eq!(lines[3], "16384");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn the_oci_runtime_is_selectable() {
    use isol8_protocol::options::SecurityOptions;
    let with = |runtime: &str| EngineOptions {
        security: Some(SecurityOptions {
            runtime: Some(runtime.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    // runc is always registered; naming it explicitly works like the default.
    let engine = engine(with("runc")).await;
    assert_eq!(
        run(&engine, code("bash", "echo runc")).await.stdout,
        "runc\n"
    );
    assert_clean(&engine).await;
    // A runtime the daemon does not know is a clear error, not a silent fallback.
    let broken = isol8_testkit::engine(with("isol8-no-such-runtime")).await;
    let err = isol8::Engine::execute(&broken, code("bash", "true"))
        .await
        .expect_err("unknown runtime");
    assert!(err.to_string().contains("isol8-no-such-runtime"), "{err}");
    assert_clean(&broken).await;
}
