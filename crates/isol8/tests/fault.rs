//! Fault injection: sandboxes that die or are paused (frozen) while they wait in the pool
//! or while they run, containers killed mid-stream, and the Docker daemon restarted in
//! the middle of an execution.
//!
//! The daemon restart stops every container on the host, so it would break any test
//! running at the same time: `daemon_restart_*` is `#[ignore]`d and run alone by
//! `scripts/test.sh` (`cargo nextest run -p isol8 --test fault --run-ignored only`) before
//! the main suite. It restarts the daemon the way `scripts/lib.sh` started it
//! (`scripts/restart-docker.sh`: `systemctl restart docker`, or stopping the `dockerd`
//! process and starting it again with `setsid dockerd`), which needs root (or sudo). In CI
//! it never skips.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use isol8::docker::EngineConfig;
use isol8::{Engine, EngineOptions, StreamEventType};
use isol8_protocol::{PoolSize, PoolStrategy};
use isol8_testkit::{assert_clean, code, engine_with, run};

/// A `fast` pool keeping `clean` sandboxes ready for bash.
fn pooled(clean: u32) -> EngineConfig {
    EngineConfig {
        options: EngineOptions {
            pool_strategy: Some(PoolStrategy::Fast),
            pool_size: Some(PoolSize::Split { clean, dirty: 1 }),
            ..Default::default()
        },
        prewarm: vec!["bash".into()],
        ..Default::default()
    }
}

/// Waits until the container is no longer running (at most 10 s).
async fn wait_stopped(engine: &isol8::DockerEngine, id: &str) {
    for _ in 0..200 {
        let running = engine
            .docker()
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("container {id} is still running");
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_pooled_sandbox_that_died_while_idle_is_replaced_not_used() {
    let engine = engine_with(pooled(1)).await;
    engine.start().await.expect("prewarm");
    let idle = engine.live_containers();
    assert_eq!(idle.len(), 1, "one warm sandbox: {idle:?}");
    // Killed from outside while it waits for work (an OOM kill, `docker kill`, a daemon
    // restart all look like this to the engine).
    engine
        .docker()
        .kill_container(
            &idle[0],
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .expect("kill");
    wait_stopped(&engine, &idle[0]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = run(&engine, code("bash", "echo ok")).await;
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, "ok\n"), "{r:?}");
    assert_ne!(r.container_id.as_deref(), Some(idle[0].as_str()));
    assert_clean(&engine).await;
}

/// `docker pause` on a container (what an operator or a frozen cgroup does).
async fn pause(engine: &isol8::DockerEngine, id: &str) {
    engine
        .docker()
        .pause_container(id)
        .await
        .unwrap_or_else(|e| panic!("pause {id}: {e}"));
}

/// Reads a stream until a stdout event containing `marker`; panics after 30 s.
async fn until_stdout(events: &mut isol8::EventStream, marker: &str) {
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut out = String::new();
        while !out.contains(marker) {
            let ev = events.next().await.expect("the stream ended early");
            if ev.kind == StreamEventType::Stdout {
                out.push_str(&ev.data);
            }
        }
    })
    .await
    .expect("the program's first output");
}

/// The only container the engine owns (the one running the execution).
fn only_container(engine: &isol8::DockerEngine) -> String {
    let live = engine.live_containers();
    assert_eq!(live.len(), 1, "exactly one container: {live:?}");
    live[0].clone()
}

/// No warm pool: the only container an engine owns is the one running its execution.
fn unpooled() -> EngineConfig {
    EngineConfig {
        options: EngineOptions {
            pool_size: Some(PoolSize::Total(0)),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Waits (at most 30 s) until the engine's only container runs a process whose command
/// line contains `needle`, and returns the container.
async fn running_process(engine: &isol8::DockerEngine, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let [id] = engine.live_containers().as_slice() {
            let top = engine
                .docker()
                .top_processes(id, None::<bollard::query_parameters::TopOptions>)
                .await;
            let found = top
                .ok()
                .and_then(|t| t.processes)
                .is_some_and(|ps| ps.iter().any(|p| p.iter().any(|col| col.contains(needle))));
            if found {
                return id.clone();
            }
        }
        assert!(Instant::now() < deadline, "`{needle}` never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_paused_pooled_sandbox_is_evicted_and_never_handed_out() {
    let engine = engine_with(pooled(1)).await;
    engine.start().await.expect("prewarm");
    let idle = engine.live_containers();
    assert_eq!(idle.len(), 1, "one warm sandbox: {idle:?}");
    // Frozen while it waits for work: its agent can no longer answer.
    pause(&engine, &idle[0]).await;
    // Docker's event reaches the engine's watcher, which flags it and evicts it from the
    // pool (no round trip on the warm path).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !engine.sandbox_flagged(&idle[0]) && engine.live_containers().contains(&idle[0]) {
        assert!(
            Instant::now() < deadline,
            "Docker's pause event never reached the engine"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut req = code("bash", "echo ok");
    req.timeout_ms = Some(5_000);
    let r = tokio::time::timeout(Duration::from_secs(60), engine.execute(req))
        .await
        .expect("no hang")
        .expect("runs on a fresh sandbox, not on the frozen one");
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, "ok\n"), "{r:?}");
    assert!(!r.stderr.contains("TIMED OUT"), "{r:?}");
    assert_ne!(r.container_id.as_deref(), Some(idle[0].as_str()));
    // The frozen container itself is removed (force removal works on paused ones).
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_sandbox_paused_mid_run_is_unresponsive_not_the_programs_timeout() {
    let engine = engine_with(unpooled()).await;
    let mut req = code("bash", "echo started; sleep 60; echo finished");
    req.timeout_ms = Some(5_000);
    let mut events = engine.execute_stream(req).await.expect("stream");
    until_stdout(&mut events, "started").await;
    let id = only_container(&engine);
    pause(&engine, &id).await;
    // The agent cannot enforce the timeout while frozen; the engine's watchdog fires
    // (timeout + its grace), finds the container paused and says so.
    let rest = tokio::time::timeout(Duration::from_secs(60), events.collect::<Vec<_>>())
        .await
        .expect("the run must end, not hang");
    let last = rest.last().expect("a final event");
    assert_eq!(last.kind, StreamEventType::Error, "{rest:?}");
    assert!(
        last.data.starts_with("sandbox unresponsive: ") && last.data.contains("paused"),
        "{rest:?}"
    );
    assert!(
        !rest
            .iter()
            .any(|e| e.kind == StreamEventType::Exit || e.data.contains("TIMED OUT")),
        "neither an exit code nor the program's timeout: {rest:?}"
    );
    // Buffered, the same fault is an error, not a result with exit code 137.
    let e2 = engine.clone();
    let mut req = code("bash", "sleep 61");
    req.timeout_ms = Some(5_000);
    let buffered = tokio::spawn(async move { e2.execute(req).await });
    let id = running_process(&engine, "sleep 61").await;
    pause(&engine, &id).await;
    let err = tokio::time::timeout(Duration::from_secs(60), buffered)
        .await
        .expect("no hang")
        .expect("join")
        .expect_err("a frozen sandbox is an error");
    assert!(
        matches!(err, isol8::Error::SandboxUnresponsive(_)),
        "{err:?}"
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_sandbox_killed_mid_stream_ends_it_with_sandbox_lost_then_its_reason() {
    let engine = engine_with(unpooled()).await;
    let mut req = code("bash", "echo started; sleep 60; echo finished");
    req.timeout_ms = Some(120_000);
    let mut events = engine.execute_stream(req).await.expect("stream");
    until_stdout(&mut events, "started").await;
    let id = only_container(&engine);
    engine
        .docker()
        .kill_container(&id, None::<bollard::query_parameters::KillContainerOptions>)
        .await
        .expect("kill");
    let rest = tokio::time::timeout(Duration::from_secs(60), events.collect::<Vec<_>>())
        .await
        .expect("the run must end, not hang");
    let [.., error, exit] = rest.as_slice() else {
        panic!("an error and an exit: {rest:?}");
    };
    assert_eq!(error.kind, StreamEventType::Error, "{rest:?}");
    assert!(
        error
            .data
            .starts_with("sandbox lost: the sandbox container stopped unexpectedly"),
        "{rest:?}"
    );
    // The program was killed with its sandbox (137), and the exit says why.
    assert_eq!(
        (exit.kind, exit.data.as_str(), exit.exit_reason),
        (
            StreamEventType::Exit,
            "137",
            Some(isol8::ExitReason::SandboxLost)
        ),
        "{rest:?}"
    );
    assert!(
        !rest.iter().any(|e| e.data.contains("finished")),
        "{rest:?}"
    );
    // The engine goes on.
    assert_eq!(run(&engine, code("bash", "echo ok")).await.stdout, "ok\n");
    assert_clean(&engine).await;
}

/// `scripts/restart-docker.sh` (root or password-less sudo is checked by the `root` need).
fn restart_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/restart-docker.sh")
        .canonicalize()
        .unwrap_or_else(|e| panic!("scripts/restart-docker.sh: {e}"))
}

#[isol8_testkit::test(docker, root, flavor = "multi_thread")]
#[ignore = "restarts the Docker daemon; run alone by scripts/test.sh"]
async fn daemon_restart_mid_execution_fails_clearly_and_the_engine_recovers() {
    let script = restart_script();
    // Two warm sandboxes: one serves the run cut by the restart, the other waits in the
    // pool and is dead when the daemon is back.
    let engine = engine_with(pooled(2)).await;
    engine.start().await.expect("prewarm");
    let warm = engine.live_containers();
    assert_eq!(warm.len(), 2, "two warm sandboxes: {warm:?}");

    let mut req = code("bash", "echo started; sleep 30; echo finished");
    req.timeout_ms = Some(90_000);
    let mut events = engine.execute_stream(req).await.expect("stream");
    let first = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("the run starts")
        .expect("an event");
    assert_eq!(
        (first.kind, first.data.as_str()),
        (StreamEventType::Stdout, "started\n")
    );

    // Restart the daemon while `sleep 30` runs; the run must end on its own meanwhile.
    let began = Instant::now();
    let restart = std::thread::spawn(move || Command::new("bash").arg(script).status());
    let rest = tokio::time::timeout(Duration::from_secs(60), events.collect::<Vec<_>>())
        .await
        .expect("the run must end, not hang, when the daemon goes away");
    let ended_after = began.elapsed();
    let status = restart.join().expect("restart thread").expect("run script");
    assert!(status.success(), "restart-docker.sh failed: {status}");
    eprintln!(
        "run ended {:.1} s after the restart began; daemon back after {:.1} s: {rest:?}",
        ended_after.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    let error = rest
        .iter()
        .find(|e| e.kind == StreamEventType::Error)
        .map(|e| e.data.clone())
        .unwrap_or_else(|| panic!("an error event: {rest:?}"));
    assert!(
        error.contains("cannot reach the Docker daemon"),
        "a clear error: {error}"
    );
    assert!(
        !rest.iter().any(|e| e.data.contains("finished")),
        "{rest:?}"
    );
    // The sandbox was lost under the program: that error, then the exit saying so.
    let [.., lost, exit] = rest.as_slice() else {
        panic!("an error and an exit: {rest:?}");
    };
    assert_eq!(
        (lost.kind, lost.data.starts_with("sandbox lost: ")),
        (StreamEventType::Error, true),
        "{rest:?}"
    );
    assert_eq!(
        (exit.kind, exit.exit_reason),
        (StreamEventType::Exit, Some(isol8::ExitReason::SandboxLost)),
        "{rest:?}"
    );

    // The same engine recovers: the dead pooled sandbox is dropped, new ones are started.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..3 {
        let r = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            engine.execute(code("bash", &format!("echo run {i}"))),
        )
        .await
        .expect("no hang after the restart");
        let r = r.unwrap_or_else(|e| panic!("run {i} after the restart failed: {e}"));
        assert_eq!(r.stdout, format!("run {i}\n"), "{r:?}");
        assert!(
            !warm.contains(r.container_id.as_ref().expect("container id")),
            "a sandbox from before the restart was reused: {r:?}"
        );
    }
    // Containers from before the restart (now exited) are removed too.
    assert_clean(&engine).await;
}
