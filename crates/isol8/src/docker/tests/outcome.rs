//! How a run ended, as results and streams say it: `resourceUsage` from the agent's
//! figures (absent when it measured nothing), `exitReason` by precedence, the `error`
//! event announcing a non-normal reason before the `exit`, in pooled sandboxes and
//! sessions, and a sandbox lost under the running program.

use isol8_protocol::layout::TIMEOUT_EVENT;
use isol8_protocol::{ExitReason, ResourceUsage};

use super::*;
use crate::Engine;

const MIB: u64 = 1024 * 1024;

/// The error and exit events of a stream, in order: (kind, data, reason, usage).
fn closing(events: &[StreamEvent]) -> Vec<(StreamEventType, String, Option<ExitReason>)> {
    events
        .iter()
        .filter(|e| matches!(e.kind, StreamEventType::Exit | StreamEventType::Error))
        .map(|e| (e.kind, e.data.clone(), e.exit_reason))
        .collect()
}

fn exit(code: &str, reason: ExitReason) -> (StreamEventType, String, Option<ExitReason>) {
    (StreamEventType::Exit, code.to_string(), Some(reason))
}

fn error(data: &str) -> (StreamEventType, String, Option<ExitReason>) {
    (StreamEventType::Error, data.to_string(), None)
}

#[tokio::test(start_paused = true)]
async fn the_agents_figures_become_resource_usage_of_the_result_and_the_exit_event() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let script = format!(
        "usage 50000 200000 {} {} 1000 200\necho hi",
        10 * MIB,
        20 * MIB + MIB / 4
    );
    let want = ResourceUsage {
        cpu_percent: 25.0,
        memory_mb: 10.0,
        peak_memory_mb: 20.25,
        network_bytes_in: 1000,
        network_bytes_out: 200,
    };
    let result = engine.execute(bash(&script)).await.expect("run");
    assert_eq!(result.resource_usage.as_ref(), Some(&want));
    assert_eq!(result.exit_reason, Some(ExitReason::Exited));
    let json = serde_json::to_value(&result).expect("json");
    assert_eq!(json["resourceUsage"]["peakMemoryMB"], 20.25);
    assert_eq!(json["exitReason"], "exited");

    let events = all_events(engine.execute_stream(bash(&script)).await.expect("run")).await;
    assert_eq!(closing(&events), [exit("0", ExitReason::Exited)]);
    let last = events.last().expect("events");
    assert_eq!(last.resource_usage.as_ref(), Some(&want));
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn without_the_agents_figures_there_is_no_resource_usage() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    // The agent measured nothing: no zeros are made up.
    let result = engine.execute(bash("echo hi")).await.expect("run");
    assert_eq!(result.resource_usage, None);
    assert_eq!(result.exit_reason, Some(ExitReason::Exited));
    let json = serde_json::to_value(&result).expect("json");
    assert!(json.get("resourceUsage").is_none(), "{json}");
    let events = all_events(engine.execute_stream(bash("echo hi")).await.expect("run")).await;
    assert_eq!(events.last().and_then(|e| e.resource_usage.clone()), None);
    engine.stop().await.expect("stop");

    // The bench's knob: the agent is asked not to measure, and does not.
    let engine = engine_with(
        &fake,
        EngineConfig {
            skip_usage: true,
            ..Default::default()
        },
    )
    .await;
    let result = engine
        .execute(bash("usage 1 2 3 4 5 6\necho hi"))
        .await
        .expect("run");
    assert_eq!(result.resource_usage, None);
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn an_oom_kill_the_agent_survives_is_the_memory_limit_and_the_sandbox_is_reused() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, pooled(PoolStrategy::Fast, PoolSize::Total(1))).await;
    let req = bash(&format!(
        "usage 1000 2000 {MIB} {} 0 0\noom-kill",
        128 * MIB
    ));
    let events = all_events(engine.execute_stream(req.clone()).await.expect("run")).await;
    assert_eq!(
        closing(&events),
        [
            error("MEMORY LIMIT EXCEEDED"),
            exit("137", ExitReason::MemoryLimit)
        ]
    );
    let result = engine.execute(req).await.expect("run");
    assert_eq!(
        (result.exit_code, result.exit_reason),
        (137, Some(ExitReason::MemoryLimit))
    );
    assert_eq!(result.resource_usage.map(|u| u.peak_memory_mb), Some(128.0));
    // The library's stderr stays the program's: no line is added to it.
    assert_eq!(result.stderr, "");
    // The agent survived: its sandbox was reset (not destroyed) and served the next run.
    let id = result.container_id.clone().expect("container");
    eventually("the sandbox is reset", || fake.resets(&id) >= 1).await;
    let again = engine.execute(bash("echo ok")).await.expect("run");
    assert_eq!(again.container_id.as_deref(), Some(id.as_str()));
    assert!(fake.exists(&id));
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_container_the_oom_killer_took_whole_is_the_memory_limit() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let result = engine.execute(bash("echo big\noom")).await.expect("run");
    assert_eq!(result.exit_reason, Some(ExitReason::MemoryLimit));
    assert_eq!(result.resource_usage, None);
    let events = all_events(engine.execute_stream(bash("oom")).await.expect("run")).await;
    assert_eq!(
        closing(&events),
        [
            error("MEMORY LIMIT EXCEEDED"),
            exit("137", ExitReason::MemoryLimit)
        ]
    );
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_program_killed_by_a_signal_says_which() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let events = all_events(
        engine
            .execute_stream(bash("echo before\nkill-self 11"))
            .await
            .expect("run"),
    )
    .await;
    assert_eq!(
        closing(&events),
        [
            error("KILLED BY SIGNAL SIGSEGV"),
            exit("139", ExitReason::Signal)
        ]
    );
    let result = engine.execute(bash("kill-self 6")).await.expect("run");
    assert_eq!(
        (result.exit_code, result.exit_reason),
        (134, Some(ExitReason::Signal))
    );
    // A status above 128 the program chose itself is a normal exit, not a guessed signal.
    for code in ["exit 143", "exit 200", "exit 3"] {
        let result = engine.execute(bash(code)).await.expect("run");
        assert_eq!(result.exit_reason, Some(ExitReason::Exited), "{code}");
    }
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn output_cut_at_the_cap_is_the_output_limit_unless_something_else_ended_the_run() {
    let fake = FakeDocker::new();
    let options = EngineOptions {
        max_output_size: Some(1000),
        ..Default::default()
    };
    let engine = engine_on(&fake, options).await;
    let events = all_events(
        engine
            .execute_stream(bash("flood 5000"))
            .await
            .expect("run"),
    )
    .await;
    assert_eq!(
        closing(&events),
        [
            error("OUTPUT LIMIT EXCEEDED"),
            exit("0", ExitReason::OutputLimit)
        ]
    );
    let result = engine.execute(bash("flood 5000")).await.expect("run");
    assert!(result.truncated);
    assert_eq!(result.exit_reason, Some(ExitReason::OutputLimit));

    // Over the cap and then OOM-killed: the memory limit wins, one error event.
    let events = all_events(
        engine
            .execute_stream(bash("flood 5000\noom-kill"))
            .await
            .expect("run"),
    )
    .await;
    assert_eq!(
        closing(&events),
        [
            error("MEMORY LIMIT EXCEEDED"),
            exit("137", ExitReason::MemoryLimit)
        ]
    );
    // Over the cap and then killed by a signal: the signal wins.
    let result = engine
        .execute(bash("flood 5000\nkill-self 11"))
        .await
        .expect("run");
    assert_eq!(result.exit_reason, Some(ExitReason::Signal));
    // Over the cap and then past the timeout (which kills with signal 9): the timeout,
    // with its one error event and no other.
    let req = ExecutionRequest {
        timeout_ms: Some(1000),
        ..bash("flood 5000\nhang")
    };
    let events = all_events(engine.execute_stream(req.clone()).await.expect("run")).await;
    assert_eq!(
        closing(&events),
        [error(TIMEOUT_EVENT), exit("137", ExitReason::Timeout)]
    );
    let result = engine.execute(req).await.expect("run");
    assert_eq!(result.exit_reason, Some(ExitReason::Timeout));
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_frozen_agent_past_the_watchdog_is_a_timeout() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let req = ExecutionRequest {
        timeout_ms: Some(1000),
        ..bash("freeze")
    };
    let result = engine.execute(req).await.expect("run");
    assert_eq!(
        (result.exit_code, result.exit_reason),
        (137, Some(ExitReason::Timeout))
    );
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_container_killed_under_the_running_program_is_a_lost_sandbox_with_a_result() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let mut stream = engine
        .execute_stream(bash("echo started\nhang"))
        .await
        .expect("stream");
    let first = bounded("first event", stream.next()).await.expect("event");
    assert_eq!(first.data, "started\n");
    let id = only_container(&fake);
    fake.kill(&id);
    let rest = all_events(stream).await;
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert_eq!(rest[0].kind, StreamEventType::Error);
    assert!(
        rest[0].data.starts_with("sandbox lost: ") && rest[0].data.contains("exit code 137"),
        "{rest:?}"
    );
    assert_eq!(
        (rest[1].kind, rest[1].data.as_str(), rest[1].exit_reason),
        (StreamEventType::Exit, "137", Some(ExitReason::SandboxLost))
    );
    eventually("the dead container is removed", || !fake.exists(&id)).await;

    // Buffered: the output that arrived, status 137, the reason.
    let killed = tokio::spawn({
        let engine = engine.clone();
        async move { engine.execute(bash("echo partial\nhang")).await }
    });
    eventually("the second run started", || fake.running().len() == 1).await;
    let id = only_container(&fake);
    eventually("its exec arrived", || fake.execs(&id) == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    fake.kill(&id);
    let result = bounded("run", killed)
        .await
        .expect("join")
        .expect("a result");
    assert_eq!(
        (result.exit_code, result.exit_reason),
        (137, Some(ExitReason::SandboxLost))
    );
    assert_eq!(result.stdout, "partial\n");
    assert_eq!(result.container_id.as_deref(), Some(id.as_str()));
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_sessions_executions_carry_usage_and_reason() {
    let fake = FakeDocker::new();
    let options = EngineOptions {
        mode: Some(isol8_protocol::options::Mode::Persistent),
        ..Default::default()
    };
    let engine = engine_on(&fake, options).await;
    let result = engine
        .execute(bash(&format!("usage 10 10 {MIB} {MIB} 0 0\nkill-self 11")))
        .await
        .expect("run");
    assert_eq!(result.exit_reason, Some(ExitReason::Signal));
    assert_eq!(result.resource_usage.map(|u| u.cpu_percent), Some(100.0));
    let events = all_events(
        engine
            .execute_stream(bash("usage 1 4 0 0 0 0\necho hi"))
            .await
            .expect("run"),
    )
    .await;
    let last = events.last().expect("events");
    assert_eq!(last.exit_reason, Some(ExitReason::Exited));
    assert_eq!(
        last.resource_usage.as_ref().map(|u| u.cpu_percent),
        Some(25.0)
    );
    assert_eq!(fake.created(), 1, "one session container");
    engine.stop().await.expect("stop");
}
