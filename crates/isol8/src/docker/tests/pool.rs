//! The warm pool: acquire and release, reuse after a clean reset, the `secure`
//! strategy, the clean/dirty bounds, the waiting queue, failed and hung resets, dead and
//! paused idle sandboxes, and `stop`.

use isol8_protocol::{EngineOptions, PoolSize, PoolStrategy};

use super::*;
use crate::docker::backend::fake::ResetMode;
use crate::{Engine, Error};

#[tokio::test(start_paused = true)]
async fn a_prewarmed_sandbox_serves_executions_and_is_reset_between_them() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, PoolSize::Total(1))).await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    let warm = only_container(&fake);
    assert_eq!(engine.pool_stats("bash").expect("stats").idle, 1);

    let first = engine.execute(bash("write /sandbox/x 1\necho one")).await;
    let first = first.expect("first run");
    assert_eq!((first.stdout.as_str(), first.exit_code), ("one\n", 0));
    assert_eq!(first.container_id.as_deref(), Some(warm.as_str()));
    eventually("the sandbox is back in the pool", || {
        engine.pool_stats("bash").expect("stats").idle == 1
    })
    .await;
    assert_eq!(fake.resets(&warm), 1, "reset once between executions");
    assert_eq!(
        fake.file(&warm, "/sandbox/x"),
        None,
        "the reset wiped /sandbox"
    );

    let second = engine.execute(bash("read /sandbox/x")).await.expect("run");
    assert_eq!(second.container_id.as_deref(), Some(warm.as_str()));
    assert_eq!(second.exit_code, 1, "nothing of the first run is left");
    assert_eq!(fake.created(), 1, "both ran in the prewarmed sandbox");
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn the_secure_strategy_destroys_each_sandbox_and_refills_the_pool() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, pooled(PoolStrategy::Secure, PoolSize::Total(1))).await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    let warm = only_container(&fake);
    let result = engine.execute(bash("echo hi")).await.expect("run");
    assert_eq!(result.container_id.as_deref(), Some(warm.as_str()));
    eventually("a fresh sandbox is ready", || {
        engine.pool_stats("bash").expect("stats").idle == 1 && !fake.exists(&warm)
    })
    .await;
    assert_eq!(fake.resets(&only_container(&fake)), 0);
    assert_eq!(fake.resets_total(), 0, "secure never resets");
    assert_eq!(fake.created(), 2);
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_writable_root_sandbox_is_never_reset() {
    let fake = FakeDocker::new();
    let options = EngineOptions {
        readonly_root_fs: Some(false),
        ..pooled(PoolStrategy::Fast, PoolSize::Total(1))
    };
    let engine = engine_on(&fake, options).await;
    let result = engine.execute(bash("echo hi")).await.expect("run");
    let id = result.container_id.expect("container");
    eventually("the used sandbox is destroyed", || !fake.exists(&id)).await;
    assert_eq!(fake.removed(), [id]);
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn beyond_the_dirty_bound_used_sandboxes_are_destroyed_not_reset() {
    let fake = FakeDocker::new();
    let size = PoolSize::Split { clean: 2, dirty: 1 };
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, size)).await;
    fake.hold_resets(true);
    let (a, b) = tokio::join!(
        engine.execute(bash("echo a")),
        engine.execute(bash("echo b"))
    );
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert_ne!(a.container_id, b.container_id);
    eventually("one sandbox resets, the other is destroyed", || {
        fake.resets_total() == 1 && fake.removed().len() == 1
    })
    .await;
    assert_eq!(engine.pool_stats("bash").expect("stats").resetting, 1);
    fake.hold_resets(false);
    eventually("the reset one is back, and the pool refilled", || {
        engine.pool_stats("bash").expect("stats").idle == 2
    })
    .await;
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_for_the_sandbox_being_reset_instead_of_starting_one() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, PoolSize::Total(1))).await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    let warm = only_container(&fake);
    fake.hold_resets(true);
    engine.execute(bash("echo a")).await.expect("a");
    eventually("the sandbox is being reset", || fake.resets(&warm) == 1).await;

    let waiting = tokio::spawn({
        let engine = engine.clone();
        async move { engine.execute(bash("echo b")).await }
    });
    // The request queues on the pool: nothing new is created while the reset runs.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(!waiting.is_finished());
    assert_eq!(fake.created(), 1);

    fake.hold_resets(false);
    let b = bounded("b", waiting).await.expect("join").expect("b");
    assert_eq!(b.container_id.as_deref(), Some(warm.as_str()));
    assert_eq!(fake.created(), 1, "b got the reset sandbox");
    engine.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_keep_to_the_one_pooled_sandbox() {
    // Each request waits for the reset of the sandbox the one before used; woken on this
    // thread while the reset's task goes on on a worker, it may take the sandbox before
    // that task has looked at the pool again. The pool must not take that for a
    // shortage and start a second container.
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, PoolSize::Total(1))).await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    let warm = only_container(&fake);
    for i in 0..300 {
        let r = engine.execute(bash("echo a")).await.expect("run");
        assert_eq!(r.container_id.as_deref(), Some(warm.as_str()), "run {i}");
    }
    assert_eq!(fake.created(), 1, "no container but the pooled one");
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_failed_reset_destroys_the_sandbox_and_the_pool_refills() {
    let fake = FakeDocker::new();
    fake.set_reset(ResetMode::Fail("processes survived: [42]".into()));
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, PoolSize::Total(1))).await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    let warm = only_container(&fake);
    engine.execute(bash("echo a")).await.expect("a");
    eventually("the failed sandbox is gone and a fresh one ready", || {
        !fake.exists(&warm) && engine.pool_stats("bash").expect("stats").idle == 1
    })
    .await;
    assert_eq!(fake.created(), 2);
    let b = engine.execute(bash("echo b")).await.expect("b");
    assert_ne!(b.container_id.as_deref(), Some(warm.as_str()));
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_reset_that_never_answers_is_given_up_and_the_sandbox_destroyed() {
    let fake = FakeDocker::new();
    fake.set_reset(ResetMode::Hang);
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, PoolSize::Total(1))).await;
    let a = engine.execute(bash("echo a")).await.expect("a");
    let id = a.container_id.expect("container");
    eventually("the hung sandbox is destroyed", || !fake.exists(&id)).await;
    eventually("the pool refilled", || {
        engine.pool_stats("bash").expect("stats").idle == 1
    })
    .await;
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_that_died_in_the_pool_is_never_handed_out() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, PoolSize::Total(1))).await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    let dead = only_container(&fake);
    fake.kill(&dead);
    let result = engine.execute(bash("echo hi")).await.expect("run");
    assert_eq!(result.stdout, "hi\n");
    assert_ne!(result.container_id.as_deref(), Some(dead.as_str()));
    eventually("the dead one is removed", || !fake.exists(&dead)).await;
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_paused_pooled_sandbox_is_evicted_and_replaced() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, PoolSize::Total(1))).await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    let frozen = only_container(&fake);
    fake.pause(&frozen);
    eventually("Docker's pause event evicts it", || !fake.exists(&frozen)).await;
    eventually("a fresh sandbox replaces it", || {
        engine.pool_stats("bash").expect("stats").idle == 1
    })
    .await;
    let result = engine.execute(bash("echo hi")).await.expect("run");
    assert_ne!(result.container_id.as_deref(), Some(frozen.as_str()));
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn stop_removes_every_container_and_refuses_new_work() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, PoolSize::Total(2))).await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    assert_eq!(fake.running().len(), 2);
    engine.stop().await.expect("stop");
    assert!(fake.running().is_empty(), "{:?}", fake.running());
    assert!(engine.live_containers().is_empty());
    let refused = engine.execute(bash("echo hi")).await;
    assert!(matches!(refused, Err(Error::Stopped)), "{refused:?}");
}

/// Counts what an engine tells its observer.
#[derive(Debug, Default)]
struct Counts {
    created: std::sync::atomic::AtomicUsize,
    destroyed: std::sync::atomic::AtomicUsize,
    hits: std::sync::atomic::AtomicUsize,
    misses: std::sync::atomic::AtomicUsize,
    runs: std::sync::atomic::AtomicUsize,
    queued: std::sync::atomic::AtomicUsize,
    failed_resets: std::sync::atomic::AtomicUsize,
}

impl crate::stats::EngineObserver for Counts {
    fn queue_wait(&self, _: Duration) {
        self.queued.fetch_add(1, SeqCst);
    }
    fn sandbox_acquired(&self, runtime: &str, _: Duration, warm: bool) {
        assert_eq!(runtime, "bash");
        let n = if warm { &self.hits } else { &self.misses };
        n.fetch_add(1, SeqCst);
    }
    fn run_finished(&self, runtime: &str, _: Duration) {
        assert_eq!(runtime, "bash");
        self.runs.fetch_add(1, SeqCst);
    }
    fn container_created(&self) {
        self.created.fetch_add(1, SeqCst);
    }
    fn container_destroyed(&self) {
        self.destroyed.fetch_add(1, SeqCst);
    }
    fn reset_failed(&self) {
        self.failed_resets.fetch_add(1, SeqCst);
    }
}

use std::sync::atomic::Ordering::SeqCst;

#[tokio::test(start_paused = true)]
async fn the_observer_is_told_of_pool_hits_and_misses_runs_containers_and_failed_resets() {
    let fake = FakeDocker::new();
    let counts = Arc::new(Counts::default());
    let engine = engine_with(
        &fake,
        EngineConfig {
            options: pooled(PoolStrategy::Fast, PoolSize::Total(1)),
            observer: Some(counts.clone()),
            ..Default::default()
        },
    )
    .await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    assert_eq!(counts.created.load(SeqCst), 1, "the prewarmed sandbox");

    // A warm run (hit), reset cleanly back into the pool.
    engine.execute(bash("echo a")).await.expect("a");
    eventually("the sandbox is back", || {
        engine.pool_stats("bash").expect("stats").idle == 1
    })
    .await;
    // Its reset fails: destroyed, and the pool refills with a new container.
    fake.set_reset(ResetMode::Fail("processes survived: [42]".into()));
    engine.execute(bash("echo b")).await.expect("b");
    eventually("a fresh sandbox is ready", || {
        counts.created.load(SeqCst) == 2 && engine.pool_stats("bash").expect("stats").idle == 1
    })
    .await;
    assert_eq!(counts.failed_resets.load(SeqCst), 1);
    assert_eq!(counts.destroyed.load(SeqCst), 1);
    assert_eq!(counts.hits.load(SeqCst), 2);
    assert_eq!(counts.misses.load(SeqCst), 0);
    assert_eq!(counts.runs.load(SeqCst), 2);
    assert_eq!(counts.queued.load(SeqCst), 2);

    // A sibling shares the observer: its first run starts a sandbox (a miss).
    let sibling = engine
        .sibling(pooled(PoolStrategy::Secure, PoolSize::Total(0)))
        .expect("sibling");
    sibling.execute(bash("echo c")).await.expect("c");
    assert_eq!(counts.misses.load(SeqCst), 1);
    assert_eq!(counts.created.load(SeqCst), 3);
    sibling.stop().await.expect("stop sibling");
    engine.stop().await.expect("stop");
    assert_eq!(
        counts.destroyed.load(SeqCst),
        counts.created.load(SeqCst),
        "every container created was removed"
    );
    assert_eq!(counts.runs.load(SeqCst), 3);
}
