//! The warm pool (SPEC section 6): a reset leaks nothing into the next execution that
//! runs in the same container, `secure` never reuses, and `maxConcurrent` queues.

use std::time::{Duration, Instant};

use isol8::docker::EngineConfig;
use isol8::{Engine, EngineOptions, Error};
use isol8_protocol::{PoolSize, PoolStrategy};
use isol8_testkit::{assert_clean, code, engine, engine_with, run};

fn pooled(strategy: PoolStrategy) -> EngineOptions {
    EngineOptions {
        pool_strategy: Some(strategy),
        pool_size: Some(PoolSize::Split { clean: 1, dirty: 1 }),
        ..Default::default()
    }
}

/// Leaves everything it can behind: files (hidden, read-only, in every writable
/// directory), a double-forked setsid'd process ignoring SIGTERM, System V shared memory.
const LITTER: &str = r#"
set -e
mkdir -p /sandbox/.hidden/deep /sandbox/locked
echo secret > /sandbox/.hidden/deep/file
echo data > /sandbox/locked/file
chmod 0400 /sandbox/locked/file
chmod 0500 /sandbox/locked
echo tmp > /tmp/left-in-tmp
mkdir -p /tmp/.dot && echo x > /tmp/.dot/y
echo shm > /dev/shm/left-in-shm
(trap '' TERM HUP; setsid sleep 1000 >/dev/null 2>&1 < /dev/null &)
python3 -c 'import ctypes; libc = ctypes.CDLL(None); print("shmid", libc.shmget(0, 4096, 0o1600))'
cd /sandbox && mkdir -p workdir-of-run-n
echo "run N: $RUN_N_ONLY"
"#;

/// Reports what it can see of earlier runs.
const INSPECT: &str = r#"
echo "sandbox: $(ls -A /sandbox | tr '\n' ' ')"
echo "tmp: $(ls -A /tmp | tr '\n' ' ')"
echo "shm: $(ls -A /dev/shm | tr '\n' ' ')"
echo "env: ${RUN_N_ONLY:-unset}"
echo "pwd: $(pwd)"
n=0; for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = sleep ] && n=$((n+1)); done; echo "sleepers: $n"
echo "ipc: $(tail -n +2 /proc/sysvipc/shm | wc -l)"
"#;

async fn litter_then_inspect(strategy: PoolStrategy) -> (String, String, String) {
    let engine = engine(pooled(strategy)).await;
    // The litter must not depend on the runtime: python3 exists only in isol8:python.
    let mut first = code("python", "");
    first.code = None;
    first.cmd = Some(LITTER.to_string());
    first.env.insert("RUN_N_ONLY".into(), "leaked-value".into());
    let r1 = run(&engine, first).await;
    assert_eq!(r1.exit_code, 0, "{r1:?}");
    assert!(
        r1.stdout.contains("shmid") && !r1.stdout.contains("shmid -1"),
        "{r1:?}"
    );
    let mut second = code("python", "");
    second.code = None;
    second.cmd = Some(INSPECT.to_string());
    let r2 = run(&engine, second).await;
    assert_eq!(r2.exit_code, 0, "{r2:?}");
    let ids = (
        r1.container_id.clone().expect("id"),
        r2.container_id.clone().expect("id"),
    );
    assert_clean(&engine).await;
    (ids.0, ids.1, r2.stdout)
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn fast_reset_leaves_nothing_for_the_next_run_in_the_same_container() {
    let (first, second, seen) = litter_then_inspect(PoolStrategy::Fast).await;
    assert_eq!(
        first, second,
        "the second run must reuse the first run's container"
    );
    assert_eq!(
        seen, CLEAN,
        "the reused container still shows traces of the previous run"
    );
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn secure_strategy_never_reuses_a_container() {
    let (first, second, seen) = litter_then_inspect(PoolStrategy::Secure).await;
    assert_ne!(first, second);
    assert_eq!(
        seen, CLEAN,
        "a fresh container shows traces of the previous run"
    );
}

/// What [`INSPECT`] prints in a sandbox with no trace of earlier runs.
const CLEAN: &str = "sandbox: \ntmp: \nshm: \nenv: unset\npwd: /sandbox\nsleepers: 0\nipc: 0\n";

/// Each resource attack, then an inspection run in the same engine: under both strategies
/// the next run works and sees nothing of the attack.
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn after_every_attack_the_next_run_is_clean_under_both_strategies() {
    let attacks: [(&str, &str, u64); 6] = [
        ("fork bomb", "bomb() { bomb | bomb & }; bomb; sleep 5", 3000),
        (
            "memory bomb",
            "python3 -c 'x = bytearray(1 << 30); print(len(x))'",
            10_000,
        ),
        (
            "fill /tmp, /sandbox and /dev/shm",
            "for d in /tmp /sandbox /dev/shm; do dd if=/dev/zero of=$d/fill bs=1M count=2000 2>/dev/null; done; true",
            20_000,
        ),
        (
            "zombies and escapees",
            "for i in $(seq 300); do (sleep 0 &) ; done; (trap '' TERM HUP; setsid nohup sleep 1000 >/dev/null 2>&1 &); echo x",
            10_000,
        ),
        ("ignore SIGTERM and loop", "trap '' TERM; while :; do :; done", 1500),
        (
            "System V IPC and environment",
            "python3 -c 'import ctypes; ctypes.CDLL(None).shmget(0, 4096, 0o1600)'; export RUN_N_ONLY=leak",
            10_000,
        ),
    ];
    for strategy in [PoolStrategy::Fast, PoolStrategy::Secure] {
        let engine = engine(pooled(strategy)).await;
        for (name, attack, timeout_ms) in attacks {
            let mut req = code("python", "");
            req.code = None;
            req.cmd = Some(attack.to_string());
            req.timeout_ms = Some(timeout_ms);
            req.env.insert("RUN_N_ONLY".into(), "leaked-value".into());
            let attacked = engine.execute(req).await;
            assert!(attacked.is_ok(), "{strategy:?} {name}: {attacked:?}");
            let mut inspect = code("python", "");
            inspect.code = None;
            inspect.cmd = Some(INSPECT.to_string());
            let r = run(&engine, inspect).await;
            assert_eq!(r.exit_code, 0, "{strategy:?} after {name}: {r:?}");
            assert_eq!(
                r.stdout, CLEAN,
                "{strategy:?}: traces of `{name}` in the next run"
            );
        }
        assert_clean(&engine).await;
    }
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn warm_runs_reuse_and_prewarm_fills_the_pool() {
    let config = EngineConfig {
        options: pooled(PoolStrategy::Fast),
        prewarm: vec!["bash".into()],
        ..Default::default()
    };
    let engine = engine_with(config).await;
    engine.start().await.expect("start prewarms");
    let stats = engine.pool_stats("bash").expect("stats");
    assert_eq!(stats.idle, 1, "{stats:?}");
    let mut ids = std::collections::HashSet::new();
    for i in 0..5 {
        let r = run(&engine, code("bash", &format!("echo {i}"))).await;
        assert_eq!(r.stdout, format!("{i}\n"));
        ids.insert(r.container_id.expect("id"));
    }
    assert_eq!(
        ids.len(),
        1,
        "sequential runs should all use the prewarmed container: {ids:?}"
    );
    assert_clean(&engine).await;
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn under_steady_load_the_pool_starts_no_container_it_cannot_use() {
    // poolSize.clean = maxConcurrent = 2, and two workers keep both sandboxes busy: every
    // execution can be served by a sandbox reset after the one before, so a container
    // started meanwhile could never run anything before it is destroyed again.
    let config = EngineConfig {
        options: EngineOptions {
            pool_strategy: Some(PoolStrategy::Fast),
            pool_size: Some(PoolSize::Split { clean: 2, dirty: 2 }),
            ..Default::default()
        },
        max_concurrent: Some(2),
        prewarm: vec!["bash".into()],
        ..Default::default()
    };
    let engine = engine_with(config).await;
    engine.start().await.expect("start prewarms");
    let since = unix_now();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..20 {
                    let r = run(&engine, code("bash", &format!("echo {w}-{i}"))).await;
                    assert_eq!(r.stdout, format!("{w}-{i}\n"), "{r:?}");
                    ids.push(r.container_id.expect("id"));
                }
                ids
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for w in workers {
        ids.extend(w.await.expect("worker"));
    }
    // Let the last resets finish and any refill they would start begin.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let until = unix_now();
    let created =
        isol8_testkit::containers_created(isol8::LABEL_OWNER, engine.owner(), since, until).await;
    assert_eq!(created, 0, "containers started under load (used: {ids:?})");
    assert_eq!(ids.len(), 2, "only the two pooled sandboxes ran: {ids:?}");
    let stats = engine.pool_stats("bash").expect("stats");
    assert_eq!((stats.idle, stats.warming), (2, 0), "{stats:?}");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_timed_out_or_killed_run_does_not_poison_the_pool() {
    let engine = engine(pooled(PoolStrategy::Fast)).await;
    let mut req = code("bash", "(trap '' TERM; setsid sleep 1000 &); sleep 1000");
    req.timeout_ms = Some(800);
    let r = run(&engine, req).await;
    assert_eq!(r.exit_code, 137);
    let r2 = run(&engine, code("bash", "n=0; for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = sleep ] && n=$((n+1)); done; echo $n")).await;
    assert_eq!(r2.stdout, "0\n");
    assert_eq!(r.container_id, r2.container_id);
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn max_concurrent_queues_in_order_and_times_out_clearly() {
    let config = EngineConfig {
        max_concurrent: Some(1),
        ..Default::default()
    };
    let engine = engine_with(config).await;
    // Three runs of 400 ms each through one slot cannot overlap.
    let t = Instant::now();
    let runs = (0..3).map(|_| {
        let e = engine.clone();
        tokio::spawn(async move { e.execute(code("bash", "sleep 0.4; echo done")).await })
    });
    for r in futures_util::future::join_all(runs).await {
        assert_eq!(r.expect("join").expect("run").stdout, "done\n");
    }
    assert!(
        t.elapsed() >= Duration::from_millis(1200),
        "runs overlapped: {:?}",
        t.elapsed()
    );

    // A request that cannot get a slot within its timeout gets a clear error.
    let e = engine.clone();
    let long = tokio::spawn(async move { e.execute(code("bash", "sleep 3")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut quick = code("bash", "echo never");
    quick.timeout_ms = Some(500);
    let err = engine.execute(quick).await.expect_err("queue timeout");
    assert!(
        matches!(
            err,
            Error::QueueTimeout {
                max_concurrent: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("maxConcurrent = 1"), "{err}");

    // Stopping the engine fails waiting requests cleanly.
    let e = engine.clone();
    let waiting = tokio::spawn(async move { e.execute(code("bash", "echo never")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    engine.stop().await.expect("stop");
    let err = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("no hang")
        .expect("join");
    assert!(matches!(err, Err(Error::Stopped)), "{err:?}");
    let _ = long.await;
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_container_whose_reset_fails_is_destroyed_not_reused() {
    let engine = engine(pooled(PoolStrategy::Fast)).await;
    // A directory tree deeper than PATH_MAX cannot be wiped by path: the reset fails.
    let deep = "d=$(printf 'x%.0s' $(seq 1 200)); for i in $(seq 1 30); do mkdir $d && cd $d; done; echo deep";
    let r1 = run(&engine, code("bash", deep)).await;
    assert_eq!(r1.stdout, "deep\n", "{r1:?}");
    let r2 = run(&engine, code("bash", "ls -A /sandbox | wc -l")).await;
    assert_ne!(
        r1.container_id, r2.container_id,
        "a container that failed its reset was reused"
    );
    assert_eq!(r2.stdout, "0\n");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn per_request_options_apply_and_never_share_a_container_with_other_settings() {
    let engine = engine(pooled(PoolStrategy::Fast)).await;
    let limit = "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes";
    // The cgroup holds memoryLimit plus every tmpfs at full size plus the agent's reserve
    // (`host_config::container_memory_bytes`).
    let cgroup = |options: &EngineOptions| {
        let settings = isol8::settings::SandboxSettings::resolve(options).expect("settings");
        isol8::docker::host_config::container_memory_bytes(&settings).to_string()
    };
    let default = run(&engine, code("bash", limit)).await;
    assert_eq!(default.stdout.trim(), cgroup(&EngineOptions::default()));
    let small = EngineOptions {
        memory_limit: Some("64m".into()),
        ..Default::default()
    };
    let r = engine
        .execute_with(code("bash", limit), &small)
        .await
        .expect("run with options");
    assert_eq!(r.stdout.trim(), cgroup(&small));
    assert_ne!(r.stdout, default.stdout);
    assert_ne!(
        r.container_id, default.container_id,
        "different limits must not share a container"
    );
    let again = engine
        .execute_with(code("bash", limit), &small)
        .await
        .expect("run with options");
    assert_eq!(
        again.container_id, r.container_id,
        "identical settings reuse the warm container"
    );
    let bad = EngineOptions {
        memory_limit: Some("12q".into()),
        ..Default::default()
    };
    let err = engine
        .execute_with(code("bash", "true"), &bad)
        .await
        .expect_err("bad value");
    assert!(err.to_string().contains("memoryLimit"), "{err}");
    assert_clean(&engine).await;
}
