//! Fault injection: sandboxes that die while they wait in the pool, and the Docker daemon
//! restarted in the middle of an execution.
//!
//! The daemon restart stops every container on the host, so it would break any test
//! running at the same time: `daemon_restart_*` is `#[ignore]`d and run alone by
//! `scripts/test.sh` (`cargo nextest run -p isol8 --test fault --run-ignored only`) before
//! the main suite. It restarts the daemon the way `scripts/lib.sh` started it
//! (`scripts/restart-docker.sh`: `systemctl restart docker`, or stopping the `dockerd`
//! process and starting it again with `setsid dockerd`), which needs root (or sudo). In CI
//! it never skips.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_clean, code, engine_with, in_ci, run};
use futures_util::StreamExt;
use isol8::docker::EngineConfig;
use isol8::{Engine, EngineOptions, StreamEventType};
use isol8_protocol::{PoolSize, PoolStrategy};

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

#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_sandbox_that_died_while_idle_is_replaced_not_used() {
    let Some(engine) = engine_with(pooled(1)).await else {
        return;
    };
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

/// `scripts/restart-docker.sh`, or why it cannot run here.
fn restart_script() -> Result<std::path::PathBuf, String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/restart-docker.sh")
        .canonicalize()
        .map_err(|e| format!("scripts/restart-docker.sh: {e}"))?;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let sudo = Command::new("sudo")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !root && !sudo {
        return Err("restarting the Docker daemon needs root or password-less sudo".into());
    }
    Ok(script)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "restarts the Docker daemon; run alone by scripts/test.sh"]
async fn daemon_restart_mid_execution_fails_clearly_and_the_engine_recovers() {
    let script = match restart_script() {
        Ok(s) => s,
        Err(why) if in_ci() => panic!("{why}"),
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    // Two warm sandboxes: one serves the run cut by the restart, the other waits in the
    // pool and is dead when the daemon is back.
    let Some(engine) = engine_with(pooled(2)).await else {
        return;
    };
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
    let exit = rest.last().expect("events");
    assert_eq!(exit.kind, StreamEventType::Exit, "{rest:?}");
    assert_ne!(exit.data, "0");

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
