//! One execution's state machine: output events and phases, exit codes, the timeout and
//! the watchdog, paused, killed and OOM-killed containers, the output cap's trailer,
//! secrets masked across chunks, a consumer that goes away, the agent's refusal,
//! interactive stdin and signals, failed installs, and failures to start a sandbox.

use std::collections::BTreeMap;

use isol8_protocol::layout::{TIMEOUT_EVENT, TIMEOUT_TRAILER};
use isol8_protocol::{EngineOptions, ExecutionRequest, Phase, StreamEventType};

use super::*;
use crate::control::Control;
use crate::docker::backend::fake::{CreateFailure, HelloMode};
use crate::docker::backend::ImageSummary;
use crate::error::SandboxError;
use crate::{Engine, Error, LABEL_BUILD_PACKAGES, LABEL_BUILD_RUNTIME};

#[tokio::test(start_paused = true)]
async fn output_arrives_as_events_of_its_phase_and_the_stream_ends_with_the_exit_code() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let req = ExecutionRequest {
        setup_script: Some("echo preparing".into()),
        ..bash("echo hello\nerr oops\nexit 3")
    };
    let events = all_events(engine.execute_stream(req.clone()).await.expect("stream")).await;
    let kinds: Vec<(StreamEventType, &str, Option<Phase>)> = events
        .iter()
        .map(|e| (e.kind, e.data.as_str(), e.phase))
        .collect();
    assert_eq!(
        kinds,
        [
            (StreamEventType::Stdout, "preparing\n", Some(Phase::Setup)),
            (StreamEventType::Stdout, "hello\n", Some(Phase::Code)),
            (StreamEventType::Stderr, "oops\n", Some(Phase::Code)),
            (StreamEventType::Exit, "3", Some(Phase::Code)),
        ]
    );
    let result = engine.execute(req).await.expect("buffered");
    assert_eq!(result.stdout, "preparing\nhello\n");
    assert_eq!(result.stderr, "oops\n");
    assert_eq!(result.exit_code, 3);
    assert_eq!(result.runtime, "bash");
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn exit_and_error_events_name_the_phase_the_run_ended_in() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let closing =
        |events: &[isol8_protocol::StreamEvent]| -> Vec<(StreamEventType, String, Option<Phase>)> {
            events
                .iter()
                .filter(|e| matches!(e.kind, StreamEventType::Exit | StreamEventType::Error))
                .map(|e| (e.kind, e.data.clone(), e.phase))
                .collect()
        };
    // A failing setup script ends the run in the setup phase.
    let req = ExecutionRequest {
        setup_script: Some("exit 4".into()),
        ..bash("echo never")
    };
    let events = all_events(engine.execute_stream(req).await.expect("stream")).await;
    assert_eq!(
        closing(&events),
        [(StreamEventType::Exit, "4".to_string(), Some(Phase::Setup))]
    );
    // A setup script over the timeout: the timeout's error and the exit are the setup's.
    let req = ExecutionRequest {
        setup_script: Some("hang".into()),
        timeout_ms: Some(1000),
        ..bash("echo never")
    };
    let events = all_events(engine.execute_stream(req).await.expect("stream")).await;
    assert_eq!(
        closing(&events),
        [
            (
                StreamEventType::Error,
                TIMEOUT_EVENT.to_string(),
                Some(Phase::Setup)
            ),
            (StreamEventType::Exit, "137".to_string(), Some(Phase::Setup)),
        ]
    );
    // The code over its timeout: the code's.
    let req = ExecutionRequest {
        setup_script: Some("echo ready".into()),
        timeout_ms: Some(1000),
        ..bash("hang")
    };
    let events = all_events(engine.execute_stream(req).await.expect("stream")).await;
    assert_eq!(
        closing(&events),
        [
            (
                StreamEventType::Error,
                TIMEOUT_EVENT.to_string(),
                Some(Phase::Code)
            ),
            (StreamEventType::Exit, "137".to_string(), Some(Phase::Code)),
        ]
    );
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_program_over_its_timeout_is_killed_and_the_run_marked() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let req = ExecutionRequest {
        timeout_ms: Some(1000),
        ..bash("echo started\nhang")
    };
    let events = all_events(engine.execute_stream(req.clone()).await.expect("stream")).await;
    let tail: Vec<(StreamEventType, &str)> = events
        .iter()
        .rev()
        .take(2)
        .map(|e| (e.kind, e.data.as_str()))
        .collect();
    assert_eq!(
        tail,
        [
            (StreamEventType::Exit, "137"),
            (StreamEventType::Error, TIMEOUT_EVENT)
        ]
    );
    let result = engine.execute(req).await.expect("buffered");
    assert_eq!(result.exit_code, 137);
    assert_eq!(result.stdout, "started\n");
    assert!(
        result.stderr.ends_with(TIMEOUT_TRAILER),
        "{}",
        result.stderr
    );
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_ends_a_run_whose_agent_stopped_answering() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let req = ExecutionRequest {
        timeout_ms: Some(1000),
        ..bash("echo started\nfreeze")
    };
    let result = bounded("the run", engine.execute(req)).await.expect("run");
    assert_eq!(result.exit_code, 137);
    assert!(
        result.stderr.ends_with(TIMEOUT_TRAILER),
        "{}",
        result.stderr
    );
    let id = result.container_id.expect("container");
    eventually("the stuck sandbox is destroyed", || !fake.exists(&id)).await;
    assert_eq!(fake.resets_total(), 0, "a stuck sandbox is never reset");
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_container_paused_mid_run_is_unresponsive_not_a_timeout() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let req = ExecutionRequest {
        timeout_ms: Some(2000),
        ..bash("echo started\nhang")
    };
    let mut stream = engine.execute_stream(req).await.expect("stream");
    let first = bounded("first event", stream.next()).await.expect("event");
    assert_eq!(first.data, "started\n");
    fake.pause(&only_container(&fake));
    let rest = all_events(stream).await;
    let last = rest.last().expect("a final event");
    assert_eq!(last.kind, StreamEventType::Error);
    assert!(last.data.starts_with("sandbox unresponsive: "), "{last:?}");
    assert!(rest.iter().all(|e| e.kind != StreamEventType::Exit));
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn an_oom_killed_program_exits_137_and_its_sandbox_is_destroyed() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let result = engine.execute(bash("echo big\noom")).await.expect("run");
    assert_eq!((result.exit_code, result.stdout.as_str()), (137, "big\n"));
    let id = result.container_id.expect("container");
    eventually("the sandbox is destroyed", || !fake.exists(&id)).await;
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn output_over_the_cap_ends_with_the_truncation_trailer() {
    let fake = FakeDocker::new();
    let options = EngineOptions {
        max_output_size: Some(1000),
        ..Default::default()
    };
    let engine = engine_on(&fake, options).await;
    let result = engine.execute(bash("flood 200000")).await.expect("run");
    assert!(result.truncated);
    let trailer = "\n--- OUTPUT TRUNCATED (200000 bytes, limit: 1000) ---\n";
    assert_eq!(result.stdout.len(), 1000 + trailer.len());
    assert!(
        result.stdout.ends_with(trailer),
        "{}",
        &result.stdout[990..]
    );
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_secret_split_across_output_chunks_is_still_masked() {
    let fake = FakeDocker::new();
    let options = EngineOptions {
        secrets: BTreeMap::from([("TOKEN".to_string(), "hunter2secret".to_string())]),
        ..Default::default()
    };
    let engine = engine_on(&fake, options).await;
    let script = "print token=hun\nprint ter2se\nprint cret!\\n\nenv TOKEN\nerr hunter2secret";
    let events = all_events(engine.execute_stream(bash(script)).await.expect("run")).await;
    assert!(
        events
            .iter()
            .filter(|e| e.kind == StreamEventType::Stdout)
            .count()
            >= 2,
        "the output came in several events: {events:?}"
    );
    assert_eq!(text(&events, StreamEventType::Stdout), "token=***!\n***\n");
    assert_eq!(text(&events, StreamEventType::Stderr), "***\n");
    assert!(
        events.iter().all(|e| !e.data.contains("hunter")),
        "{events:?}"
    );
    engine.stop().await.expect("stop");
}

/// A program that prints a line and then hangs, silent, within an hour's timeout.
fn silent_hang() -> ExecutionRequest {
    ExecutionRequest {
        timeout_ms: Some(3_600_000),
        ..bash("echo started\nhang")
    }
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_goes_away_stops_the_run_and_its_sandbox_is_discarded() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let mut stream = engine.execute_stream(bash("spew")).await.expect("stream");
    for _ in 0..3 {
        bounded("output", stream.next()).await.expect("event");
    }
    let id = only_container(&fake);
    drop(stream);
    eventually("the run ended", || engine.running() == 0).await;
    eventually("its sandbox is removed", || !fake.exists(&id)).await;
    assert_eq!(
        fake.resets_total(),
        0,
        "an interrupted sandbox is never reused"
    );

    // A silent program too: the run notices the consumer left, not its timeout.
    let mut stream = engine.execute_stream(silent_hang()).await.expect("stream");
    bounded("output", stream.next()).await.expect("event");
    let id = only_container(&fake);
    drop(stream);
    eventually("the silent run's sandbox is removed", || !fake.exists(&id)).await;
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_buffered_execution_dropped_mid_run_stops_the_run_and_its_sandbox_is_discarded() {
    // `execute` polls its run in the caller's task: dropping the caller's future hands
    // the run to a task of its own, which sees its consumer gone and cleans up.
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let gave_up =
        tokio::time::timeout(Duration::from_secs(30), engine.execute(silent_hang())).await;
    assert!(gave_up.is_err(), "the program hangs: {gave_up:?}");
    let id = only_container(&fake);
    eventually("the run ended", || engine.running() == 0).await;
    eventually("its sandbox is removed", || !fake.exists(&id)).await;
    assert_eq!(
        fake.resets_total(),
        0,
        "an interrupted sandbox is never reused"
    );
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn an_agent_refusal_is_the_requests_error() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let err = engine
        .execute(bash("refuse cannot write /sandbox/x: is a directory"))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, Error::InvalidRequest(m) if m == "cannot write /sandbox/x: is a directory"),
        "{err:?}"
    );
    let events = all_events(
        engine
            .execute_stream(bash("refuse nope"))
            .await
            .expect("run"),
    )
    .await;
    let kinds: Vec<(StreamEventType, &str)> =
        events.iter().map(|e| (e.kind, e.data.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (StreamEventType::Error, "nope"),
            (StreamEventType::Exit, "1")
        ]
    );
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn interactive_stdin_and_signals_reach_the_program() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let (stream, control) = engine
        .execute_interactive(bash("cat\necho done"), &Default::default())
        .await
        .expect("interactive");
    assert!(control.send(Control::Stdin(b"abc".to_vec())).await);
    assert!(control.send(Control::Stdin(b"def\n".to_vec())).await);
    assert!(control.send(Control::CloseStdin).await);
    let events = all_events(stream).await;
    assert_eq!(text(&events, StreamEventType::Stdout), "abcdef\ndone\n");
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("0"));

    let (stream, control) = engine
        .execute_interactive(bash("wait-signal"), &Default::default())
        .await
        .expect("interactive");
    assert!(control.send(Control::Signal(2)).await);
    let events = all_events(stream).await;
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("130"));
    assert!(
        !control.send(Control::CloseStdin).await,
        "the run has ended"
    );
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_failed_install_is_reported_with_the_installers_last_words() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let req = ExecutionRequest {
        runtime: "python".into(),
        code: Some("echo never".into()),
        install_packages: vec!["fail-pkg".into()],
        ..Default::default()
    };
    let err = engine.execute(req).await.expect_err("install fails");
    match err {
        Error::PackageInstall {
            installer,
            exit_code,
            output,
        } => {
            assert_eq!((installer.as_str(), exit_code), ("pip", 1));
            assert_eq!(output, "ERROR: no matching distribution found for fail-pkg");
        }
        other => panic!("{other:?}"),
    }
    // Streamed, the install's failure and the exit are the setup phase's.
    let req = ExecutionRequest {
        runtime: "python".into(),
        code: Some("echo never".into()),
        install_packages: vec!["fail-pkg".into()],
        ..Default::default()
    };
    let events = all_events(engine.execute_stream(req).await.expect("stream")).await;
    let last: Vec<(StreamEventType, Option<Phase>)> = events
        .iter()
        .rev()
        .take(2)
        .map(|e| (e.kind, e.phase))
        .collect();
    assert_eq!(
        last,
        [
            (StreamEventType::Exit, Some(Phase::Setup)),
            (StreamEventType::Error, Some(Phase::Setup)),
        ]
    );
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_built_image_with_the_packages_replaces_the_install() {
    let fake = FakeDocker::new();
    let labels = |pkgs: &str| {
        BTreeMap::from([
            (LABEL_BUILD_RUNTIME.to_string(), "python".to_string()),
            (LABEL_BUILD_PACKAGES.to_string(), pkgs.to_string()),
        ])
    };
    fake.add_image(ImageSummary {
        id: "sha256:1".into(),
        tags: vec!["custom:big".into()],
        labels: labels(r#"["numpy","pandas","scipy"]"#),
        created: 2,
    });
    fake.add_image(ImageSummary {
        id: "sha256:2".into(),
        tags: vec!["custom:small".into()],
        labels: labels(r#"["numpy","pandas"]"#),
        created: 1,
    });
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let req = ExecutionRequest {
        runtime: "python".into(),
        code: Some("echo ran".into()),
        install_packages: vec!["NumPy".into()],
        ..Default::default()
    };
    let result = engine.execute(req).await.expect("run");
    assert_eq!(result.stdout, "ran\n", "no install step ran");
    let id = result.container_id.expect("container");
    let spec = fake.spec(&id).expect("still pooled");
    assert_eq!(spec.image, "custom:small", "the fewest extra packages");
    assert_eq!(spec.host.network_mode.as_deref(), Some("none"));
    engine.stop().await.expect("stop");
}

/// The default `strict` mode asks the agent for its seccomp filter: a sandbox whose agent
/// did not confirm it is never used, and is removed.
#[tokio::test(start_paused = true)]
async fn a_sandbox_without_the_agents_seccomp_filter_is_refused() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    fake.set_hello(HelloMode::NoSeccompFilter);
    let err = engine.execute(bash("echo")).await.expect_err("no filter");
    assert!(
        matches!(&err, Error::Sandbox(SandboxError::SeccompFilter)),
        "{err:?}"
    );
    eventually("the sandbox is removed", || fake.running().is_empty()).await;
    assert_eq!(fake.removed().len(), 1);
    fake.set_hello(HelloMode::Normal);
    let r = engine.execute(bash("echo")).await.expect("with the filter");
    assert_eq!(r.exit_code, 0, "{r:?}");
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn sandboxes_that_cannot_start_fail_the_request_and_leave_nothing() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    fake.fail_creates(&[
        CreateFailure::MissingImage,
        CreateFailure::Failed,
        CreateFailure::Unreachable,
    ]);
    let err = engine.execute(bash("echo")).await.expect_err("no image");
    assert!(
        matches!(&err, Error::ImageMissing { image, runtime } if image == "isol8:bash" && runtime == "bash"),
        "{err:?}"
    );
    let err = engine.execute(bash("echo")).await.expect_err("500");
    assert!(
        matches!(
            &err,
            Error::Docker {
                op: "create container",
                ..
            }
        ),
        "{err:?}"
    );
    let err = engine.execute(bash("echo")).await.expect_err("down");
    assert!(matches!(&err, Error::DockerUnavailable { .. }), "{err:?}");

    fake.set_hello(HelloMode::WrongProtocol);
    let err = engine.execute(bash("echo")).await.expect_err("protocol");
    assert!(
        matches!(&err, Error::Sandbox(SandboxError::ProtocolMismatch { .. })),
        "{err:?}"
    );
    fake.set_hello(HelloMode::DieAtStart);
    let err = engine.execute(bash("echo")).await.expect_err("died");
    assert!(
        matches!(&err, Error::Sandbox(SandboxError::DiedAtStart { why }) if why.contains("agent: cannot start") && why.contains("exit code 1")),
        "{err:?}"
    );
    fake.set_hello(HelloMode::Silent);
    let err = bounded("start", engine.execute(bash("echo")))
        .await
        .expect_err("silent");
    assert!(
        matches!(
            &err,
            Error::Sandbox(SandboxError::HelloTimeout { secs: 20 })
        ),
        "{err:?}"
    );
    eventually("every failed sandbox is removed", || {
        fake.running().is_empty()
    })
    .await;
    assert_eq!(fake.removed().len(), 3);
    assert!(engine.live_containers().is_empty());
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_request_that_gets_no_slot_in_time_is_refused_before_it_runs() {
    let fake = FakeDocker::new();
    let engine = engine_with(
        &fake,
        EngineConfig {
            max_concurrent: Some(1),
            ..Default::default()
        },
    )
    .await;
    let busy = engine
        .execute_stream(ExecutionRequest {
            timeout_ms: Some(60_000),
            ..bash("hang")
        })
        .await
        .expect("first");
    let req = ExecutionRequest {
        timeout_ms: Some(500),
        ..bash("echo never")
    };
    let err = engine.execute(req).await.expect_err("queue timeout");
    assert!(
        matches!(
            err,
            Error::QueueTimeout {
                waited_ms: 500,
                max_concurrent: 1
            }
        ),
        "{err:?}"
    );
    drop(busy);
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn an_agent_run_gets_the_agent_defaults_unless_the_options_set_them() {
    let fake = FakeDocker::new();
    let engine = engine_on(
        &fake,
        EngineOptions {
            network: Some(isol8_protocol::NetworkMode::Host),
            ..Default::default()
        },
    )
    .await;
    let agent = |flags: &str| ExecutionRequest {
        runtime: "agent".into(),
        code: Some("echo agent ran".into()),
        agent_flags: Some(flags.into()),
        ..Default::default()
    };
    let sandbox_size = |spec: &crate::docker::backend::ContainerSpec| {
        spec.host.tmpfs.as_ref().expect("tmpfs")["/sandbox"].clone()
    };
    // Neither the engine nor the request set them: 200 processes, a 2 GiB /sandbox.
    let result = engine.execute(agent("--model x")).await.expect("run");
    assert_eq!(result.stdout, "agent ran\n");
    let spec = fake
        .spec(&result.container_id.expect("container"))
        .expect("pooled");
    assert_eq!(spec.image, "isol8:agent");
    assert_eq!(spec.host.pids_limit, Some(200));
    assert!(sandbox_size(&spec).contains(&format!("size={}", 2u64 << 30)));
    // The request's own values win.
    let options = EngineOptions {
        pids_limit: Some(50),
        sandbox_size: Some("1g".into()),
        ..Default::default()
    };
    let result = engine.execute_with(agent(""), &options).await.expect("run");
    let spec = fake
        .spec(&result.container_id.expect("container"))
        .expect("pooled");
    assert_eq!(spec.host.pids_limit, Some(50));
    assert!(sandbox_size(&spec).contains(&format!("size={}", 1u64 << 30)));
    // Other runtimes keep the general defaults.
    let result = engine.execute(bash("echo ran")).await.expect("run");
    let spec = fake
        .spec(&result.container_id.expect("container"))
        .expect("pooled");
    assert_eq!(spec.host.pids_limit, Some(64));
    assert!(sandbox_size(&spec).contains(&format!("size={}", 512u64 << 20)));
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn an_agent_run_without_network_is_refused_before_any_sandbox_starts() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, EngineOptions::default()).await;
    let req = ExecutionRequest {
        runtime: "agent".into(),
        code: Some("echo never".into()),
        ..Default::default()
    };
    let e = engine.execute(req.clone()).await.expect_err("none");
    assert!(
        e.to_string().contains("agent runtime needs network access"),
        "{e}"
    );
    let filtered = EngineOptions {
        network: Some(isol8_protocol::NetworkMode::Filtered),
        ..Default::default()
    };
    let e = engine
        .execute_with(req, &filtered)
        .await
        .expect_err("empty whitelist");
    assert!(
        e.to_string().contains("at least one whitelist entry"),
        "{e}"
    );
    assert_eq!(fake.created(), 0, "no sandbox was made");
    engine.stop().await.expect("stop");
}
