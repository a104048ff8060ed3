//! Disk-full and memory limits against the real engine (issue 13 item 3; `docs/SECURITY.md`,
//! "tmpfs sizes and the memory limit").
//!
//! Files in `/sandbox`, `/tmp` and `/dev/shm` are memory charged to the container's cgroup.
//! A full one must be a disk-full error for the program (`ENOSPC`, the program goes on),
//! never a kill of the whole container; the program's own memory must still be held to
//! `memoryLimit`, and the sandbox must stay usable afterwards: every run of a test goes to
//! the same pooled container (equal `containerId`: the agent survived and the reset
//! worked).

use isol8::{DockerEngine, EngineOptions, ExecutionResult};
use isol8_protocol::{PoolSize, PoolStrategy};
use isol8_testkit::{assert_clean, code, engine, run};

/// One warm sandbox, reused by every run of the test.
fn pooled(options: EngineOptions) -> EngineOptions {
    EngineOptions {
        pool_strategy: Some(PoolStrategy::Fast),
        pool_size: Some(PoolSize::Split { clean: 1, dirty: 1 }),
        ..options
    }
}

/// Sizes of one sandbox, in MiB.
#[derive(Clone, Copy)]
struct Sizes {
    memory: u64,
    sandbox: u64,
    tmp: u64,
}

/// `/dev/shm` is always 64 MiB.
const SHM_MB: u64 = 64;

impl Sizes {
    fn options(self) -> EngineOptions {
        pooled(EngineOptions {
            memory_limit: Some(format!("{}m", self.memory)),
            sandbox_size: Some(format!("{}m", self.sandbox)),
            tmp_size: Some(format!("{}m", self.tmp)),
            ..Default::default()
        })
    }

    /// Each writable tmpfs with its size.
    fn dirs(self) -> [(&'static str, u64); 3] {
        [
            ("/sandbox", self.sandbox),
            ("/tmp", self.tmp),
            ("/dev/shm", SHM_MB),
        ]
    }
}

/// Bash that writes 64 MiB more than `size` MiB into `dir`, then reports the status.
fn fill(dir: &str, size: u64) -> String {
    format!(
        "head -c {}m /dev/zero > {dir}/fill; echo {dir}=$?",
        size + 64
    )
}

/// Python that allocates (and touches) 8 MiB at a time, printing the total in MiB.
const BOMB: &str = "python3 -c '
chunks = []
while True:
    chunks.append(b\"\\1\" * (8 << 20))
    print(len(chunks) * 8, flush=True)
'";

/// The same with memory that is neither anonymous nor in a tmpfs mount: a `memfd` grown 8
/// MiB at a time.
const MEMFD_BOMB: &str = "python3 -c '
import os
fd = os.memfd_create(\"bomb\")
total = 0
while True:
    os.write(fd, b\"\\1\" * (8 << 20))
    total += 8
    print(total, flush=True)
'";

/// Runs a shell script in the python image (which has both bash and python3).
async fn bash(engine: &DockerEngine, script: String) -> ExecutionResult {
    let mut req = code("python", "");
    req.code = None;
    req.cmd = Some(script);
    run(engine, req).await
}

/// Fills each tmpfs past its size (each run: ENOSPC, the program goes on), then all three
/// at once followed by a memory bomb (killed near `memoryLimit`, far below `memoryLimit`
/// plus the tmpfs sizes), then a normal run: all in one container.
async fn fills_then_bomb_then_normal_run(sizes: Sizes) {
    let engine = engine(sizes.options()).await;
    let mut containers = Vec::new();
    for (dir, size) in sizes.dirs() {
        let r = bash(&engine, format!("{}; echo after", fill(dir, size))).await;
        assert_eq!(r.exit_code, 0, "filling {dir}: {r:?}");
        assert_eq!(
            r.stdout,
            format!("{dir}=1\nafter\n"),
            "filling {dir}: {r:?}"
        );
        assert!(
            r.stderr.contains("No space left on device"),
            "filling {dir}: {r:?}"
        );
        containers.push(r.container_id);
    }

    // With every tmpfs full the cgroup has only its reserve left above memoryLimit; with
    // them empty it has the tmpfs sizes: either way the bomb stops near memoryLimit.
    let all = sizes.dirs().map(|(d, s)| fill(d, s)).join("; ");
    for (name, bomb, prefix) in [
        ("anonymous memory", BOMB, all.clone()),
        ("a memfd", MEMFD_BOMB, all.clone()),
        ("anonymous memory, empty tmpfs", BOMB, "true".to_string()),
    ] {
        let r = bash(&engine, format!("{prefix}; {bomb}; echo survived")).await;
        assert_eq!(r.exit_code, 137, "{name}: {r:?}");
        assert!(!r.stdout.contains("survived"), "{name}: {r:?}");
        if prefix != "true" {
            let lines: Vec<&str> = r.stdout.lines().collect();
            assert_eq!(lines[..3], ["/sandbox=1", "/tmp=1", "/dev/shm=1"], "{r:?}");
        }
        let reached: u64 = r
            .stdout
            .lines()
            .last()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("{name}: the bomb printed nothing: {r:?}"));
        let tmpfs = sizes.sandbox + sizes.tmp + SHM_MB;
        assert!(
            reached < sizes.memory + 32,
            "{name}: the bomb got {reached} MiB under memoryLimit {} MiB (the cgroup has {tmpfs} MiB more for the tmpfs mounts): {r:?}",
            sizes.memory
        );
        assert!(
            reached >= sizes.memory / 2,
            "{name}: the bomb was stopped at {reached} MiB, far below memoryLimit {} MiB: {r:?}",
            sizes.memory
        );
        containers.push(r.container_id);
    }

    let r = bash(
        &engine,
        "ls -A /sandbox /tmp /dev/shm | grep -c fill; echo ok".into(),
    )
    .await;
    assert_eq!(r.stdout, "0\nok\n", "{r:?}");
    assert_eq!(r.exit_code, 0, "{r:?}");
    containers.push(r.container_id);
    assert!(containers[0].is_some(), "{containers:?}");
    assert!(
        containers.iter().all(|c| *c == containers[0]),
        "every run must reuse the one pooled container (the agent survived, the resets worked): {containers:?}"
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn full_tmpfs_mounts_are_enospc_and_a_bomb_stops_at_the_default_memory_limit() {
    fills_then_bomb_then_normal_run(Sizes {
        memory: 512,
        sandbox: 512,
        tmp: 256,
    })
    .await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn full_tmpfs_mounts_are_enospc_and_a_bomb_stops_at_a_small_memory_limit_with_larger_tmpfs() {
    fills_then_bomb_then_normal_run(Sizes {
        memory: 64,
        sandbox: 256,
        tmp: 128,
    })
    .await;
}

/// The files in the tmpfs mounts are not taken out of the program's memory: with
/// `/sandbox` and `/tmp` nearly full, a program still gets 80% of `memoryLimit`.
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_program_gets_most_of_its_memory_limit_while_the_tmpfs_mounts_are_nearly_full() {
    for sizes in [
        Sizes {
            memory: 512,
            sandbox: 512,
            tmp: 256,
        },
        Sizes {
            memory: 64,
            sandbox: 256,
            tmp: 128,
        },
    ] {
        let engine = engine(sizes.options()).await;
        let allocate = sizes.memory * 8 / 10;
        let script = format!(
            "head -c {}m /dev/zero > /sandbox/f && head -c {}m /dev/zero > /tmp/f && head -c {}m /dev/zero > /dev/shm/f && echo filled; \
             python3 -c 'b = b\"\\1\" * ({allocate} << 20); print(\"allocated\", len(b) >> 20)'",
            sizes.sandbox - 8,
            sizes.tmp - 8,
            SHM_MB - 8,
        );
        let r = bash(&engine, script).await;
        assert_eq!(
            r.stdout,
            format!("filled\nallocated {allocate}\n"),
            "{}m memory limit: {r:?}",
            sizes.memory
        );
        assert_eq!(r.exit_code, 0, "{r:?}");
        assert_clean(&engine).await;
    }
}
