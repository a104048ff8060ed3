//! The concurrency cases that are hard to hit against a real daemon: a reset failing
//! while a request waits for it, `stop()` while the pool refills, a container dying
//! between acquire and exec, `stop()` with a request queued for a slot, and an engine
//! dropped without `stop()`.

use isol8_protocol::{ExecutionRequest, PoolSize, PoolStrategy, StreamEventType};

use super::*;
use crate::docker::backend::fake::ResetMode;
use crate::{Engine, Error};

#[tokio::test(start_paused = true)]
async fn a_reset_failing_while_a_request_waits_for_it_gives_the_request_a_fresh_sandbox() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, PoolSize::Total(1))).await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    let used = only_container(&fake);
    fake.set_reset(ResetMode::Fail("a file is left in /tmp".into()));
    fake.hold_resets(true);
    engine.execute(bash("echo a")).await.expect("a");
    eventually("the reset is under way", || fake.resets(&used) == 1).await;

    let waiting = tokio::spawn({
        let engine = engine.clone();
        async move { engine.execute(bash("echo b")).await }
    });
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "b waits for the sandbox being reset"
    );
    fake.hold_resets(false);

    let b = bounded("b", waiting).await.expect("join").expect("b");
    assert_eq!(b.stdout, "b\n");
    assert_ne!(b.container_id.as_deref(), Some(used.as_str()));
    eventually("the sandbox whose reset failed is gone", || {
        !fake.exists(&used)
    })
    .await;
    eventually("the pool is back to one ready sandbox", || {
        engine.pool_stats("bash").expect("stats").idle == 1
    })
    .await;
    engine.stop().await.expect("stop");
    assert!(fake.running().is_empty(), "{:?}", fake.running());
}

#[tokio::test(start_paused = true)]
async fn stop_while_the_pool_refills_leaves_no_container_behind() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, pooled(PoolStrategy::Secure, PoolSize::Total(1))).await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    // The next sandboxes stay between create and hello until released.
    fake.hold_starts(true);
    let used = engine.execute(bash("echo a")).await.expect("a");
    eventually("a replacement is being started", || {
        engine.pool_stats("bash").expect("stats").warming == 1 && fake.created() == 2
    })
    .await;

    let stop = tokio::spawn({
        let engine = engine.clone();
        async move { engine.stop().await }
    });
    bounded("stop", stop).await.expect("join").expect("stop");
    fake.hold_starts(false);
    // Whatever the refill was doing has finished and seen the stop.
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    assert!(fake.running().is_empty(), "{:?}", fake.running());
    assert!(engine.live_containers().is_empty());
    assert!(!fake.exists(used.container_id.as_deref().expect("id")));
    let stats = engine.pool_stats("bash").expect("stats");
    assert_eq!((stats.idle, stats.warming, stats.resetting), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_container_dying_between_acquire_and_exec_is_replaced_and_the_run_succeeds() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, PoolSize::Total(1))).await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    let dying = only_container(&fake);
    // Its output is still open, so the pool hands it out; the exec frame then fails.
    fake.break_stdin(&dying);
    let result = engine.execute(bash("echo hi")).await.expect("run");
    assert_eq!(result.stdout, "hi\n");
    let ran = result.container_id.expect("container");
    assert_ne!(ran, dying);
    assert_eq!(fake.execs(&ran), 1);
    eventually("the dying container is removed", || !fake.exists(&dying)).await;
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn stop_refuses_a_request_queued_for_a_slot_and_ends_the_running_one() {
    let fake = FakeDocker::new();
    let engine = engine_with(
        &fake,
        EngineConfig {
            max_concurrent: Some(1),
            ..Default::default()
        },
    )
    .await;
    let running = engine
        .execute_stream(ExecutionRequest {
            timeout_ms: Some(60_000),
            ..bash("echo started\nhang")
        })
        .await
        .expect("first");
    let queued = tokio::spawn({
        let engine = engine.clone();
        async move {
            let req = ExecutionRequest {
                timeout_ms: Some(60_000),
                ..bash("echo b")
            };
            engine.execute(req).await
        }
    });
    eventually("both are active", || engine.running() == 2).await;
    engine.stop().await.expect("stop");
    let refused = bounded("queued", queued).await.expect("join");
    assert!(matches!(refused, Err(Error::Stopped)), "{refused:?}");
    let events = all_events(running).await;
    let last = events.last().expect("events");
    assert_eq!(last.kind, StreamEventType::Error);
    assert!(last.data.starts_with("sandbox lost: "), "{last:?}");
    assert!(fake.running().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_engine_dropped_without_stop_removes_its_containers() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, PoolSize::Total(2))).await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    assert_eq!(fake.running().len(), 2);
    drop(engine);
    eventually("the dropped engine's containers are removed", || {
        fake.running().is_empty()
    })
    .await;
}
