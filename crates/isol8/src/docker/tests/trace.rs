//! Every log line of an execution is inside its `execution` span: the agent's relayed
//! stderr, the run's own lines and the pool's reset afterwards, on buffered, streamed
//! and concurrent executions; a front end's [`ExecutionContext`] names the id and tenant.

use isol8_protocol::{PoolSize, PoolStrategy};

use super::*;
use crate::docker::backend::fake::ResetMode;
use crate::trace::tests::capture;
use crate::trace::{ExecutionContext, EXECUTION_SPAN};
use crate::Engine;

#[tokio::test(start_paused = true)]
async fn every_line_of_an_execution_and_of_its_sandbox_reset_carries_its_execution_id() {
    let fake = FakeDocker::new();
    fake.set_reset(ResetMode::Fail("processes survived: [42]".into()));
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, PoolSize::Total(1))).await;
    engine.prewarm(&["bash".into()]).await.expect("prewarm");
    let warm = only_container(&fake);
    let (captured, _guard) = capture();
    let result = bounded(
        "the execution",
        engine.execute(bash("log agent-says-hi\necho out")),
    )
    .await
    .expect("run");
    assert_eq!(result.stdout, "out\n");
    assert_eq!(result.container_id.as_deref(), Some(warm.as_str()));
    eventually("the failed reset was logged", || {
        !captured.with_message("reset failed").is_empty()
    })
    .await;
    eventually("the pool refilled", || {
        engine.pool_stats("bash").expect("stats").idle == 1
    })
    .await;
    let agent = captured.with_message("agent-says-hi");
    assert_eq!(agent.len(), 1, "{:?}", captured.lines());
    assert_eq!(agent[0].target(), "isol8::agent");
    // The Docker event watcher is one task for the whole engine: its lines name the
    // container (`container`), which the execution span records, not the execution.
    let lines: Vec<_> = captured
        .lines()
        .into_iter()
        .filter(|l| l.target() != "isol8::docker::watch")
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        let span = line
            .span(EXECUTION_SPAN)
            .unwrap_or_else(|| panic!("a line outside the execution span: {line:?}"));
        assert_eq!(
            span["execution_id"],
            result.execution_id.as_str(),
            "{line:?}"
        );
        assert_eq!(span["runtime"], "bash", "{line:?}");
        assert_eq!(span["container_id"], warm.as_str(), "{line:?}");
    }
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn concurrent_streamed_executions_log_each_in_its_own_span() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let (captured, _guard) = capture();
    let a = engine
        .execute_stream(bash("log from-a\nsleep 50\nlog from-a-again\necho a"))
        .await
        .expect("a");
    let b = engine
        .execute_stream(bash("log from-b\nsleep 50\nlog from-b-again\necho b"))
        .await
        .expect("b");
    let (a, b) = bounded("both streams", async {
        futures_util::join!(all_events(a), all_events(b))
    })
    .await;
    assert_eq!(text(&a, StreamEventType::Stdout), "a\n");
    assert_eq!(text(&b, StreamEventType::Stdout), "b\n");
    let id_of = |marker: &str| -> (String, String) {
        let lines = captured.with_message(marker);
        assert_eq!(lines.len(), 2, "{marker}: {lines:?}");
        let span = lines[0].span(EXECUTION_SPAN).expect("in a span").clone();
        assert_eq!(lines[1].span(EXECUTION_SPAN), Some(&span), "{marker}");
        (
            span["execution_id"].as_str().expect("id").to_string(),
            span["container_id"]
                .as_str()
                .expect("container")
                .to_string(),
        )
    };
    let (id_a, container_a) = id_of("from-a");
    let (id_b, container_b) = id_of("from-b");
    assert_ne!(id_a, id_b);
    assert_ne!(container_a, container_b);
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_front_ends_context_names_the_execution_id_and_tenant() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let (captured, _guard) = capture();
    let result = ExecutionContext {
        tenant: Some("acme".into()),
        execution_id: Some("exec-42".into()),
    }
    .scope(engine.execute(bash("log hello\necho hi")))
    .await
    .expect("run");
    assert_eq!(result.execution_id, "exec-42");
    let line = &captured.with_message("hello")[0];
    let span = line.span(EXECUTION_SPAN).expect("in the span");
    assert_eq!(span["execution_id"], "exec-42");
    assert_eq!(span["tenant"], "acme");
    // A refused launch is logged nowhere but answered with an error; still, the launch
    // ran in a span of its own: a new id each time.
    let again = engine.execute(bash("echo hi")).await.expect("run");
    assert_ne!(again.execution_id, "exec-42");
    engine.stop().await.expect("stop");
}
