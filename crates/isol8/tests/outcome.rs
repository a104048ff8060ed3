//! How a run ended, against a real Docker daemon: the exit reason of a timeout, a
//! program killed by a signal and output cut at the cap (the program is not killed at
//! the cap), in buffered results and on the stream's final events.

use futures_util::StreamExt;
use isol8::{Engine, EngineOptions, ExitReason, StreamEvent, StreamEventType};
use isol8_testkit::{assert_clean, code, engine, run};

/// The error and exit events of a stream: (kind, data, exit reason).
fn closing(events: &[StreamEvent]) -> Vec<(StreamEventType, String, Option<ExitReason>)> {
    events
        .iter()
        .filter(|e| matches!(e.kind, StreamEventType::Exit | StreamEventType::Error))
        .map(|e| (e.kind, e.data.clone(), e.exit_reason))
        .collect()
}

async fn events(engine: &isol8::DockerEngine, req: isol8::ExecutionRequest) -> Vec<StreamEvent> {
    engine
        .execute_stream(req)
        .await
        .expect("stream")
        .collect()
        .await
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_program_past_its_timeout_ends_for_the_timeout() {
    let engine = engine(EngineOptions::default()).await;
    let mut req = code(
        "python",
        "import time\nprint('started', flush=True)\ntime.sleep(60)",
    );
    req.timeout_ms = Some(1500);
    let r = run(&engine, req.clone()).await;
    assert_eq!(
        (r.exit_code, r.exit_reason),
        (137, Some(ExitReason::Timeout)),
        "{r:?}"
    );
    // The timeout's own marker, once; no other reason's.
    assert_eq!(
        closing(&events(&engine, req).await),
        [
            (StreamEventType::Error, "EXECUTION TIMED OUT".into(), None),
            (
                StreamEventType::Exit,
                "137".into(),
                Some(ExitReason::Timeout)
            ),
        ]
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_program_killed_by_a_signal_says_which() {
    let engine = engine(EngineOptions::default()).await;
    let req = code(
        "python",
        "import os, signal\nprint('before', flush=True)\nos.kill(os.getpid(), signal.SIGSEGV)",
    );
    let r = run(&engine, req.clone()).await;
    assert_eq!(
        (r.exit_code, r.exit_reason),
        (139, Some(ExitReason::Signal)),
        "{r:?}"
    );
    assert_eq!(r.stdout, "before\n");
    assert_eq!(
        closing(&events(&engine, req).await),
        [
            (
                StreamEventType::Error,
                "KILLED BY SIGNAL SIGSEGV".into(),
                None
            ),
            (
                StreamEventType::Exit,
                "139".into(),
                Some(ExitReason::Signal)
            ),
        ]
    );
    // A program that exits by itself, with any status (above 128 too), just exited.
    for (runtime, src, status) in [
        ("python", "import sys; sys.exit(3)", 3),
        ("bash", "exit 200", 200),
        ("bash", "exit 139", 139),
    ] {
        let r = run(&engine, code(runtime, src)).await;
        assert_eq!(
            (r.exit_code, r.exit_reason),
            (status, Some(ExitReason::Exited)),
            "{src}"
        );
    }
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn output_past_the_cap_is_the_output_limit_and_the_program_runs_on() {
    let options = EngineOptions {
        max_output_size: Some(1000),
        ..Default::default()
    };
    let engine = engine(options).await;
    // 100 kB past the cap, then the program goes on: it writes a file and exits with 7.
    let mut req = code(
        "python",
        "import sys\nsys.stdout.write('x' * 100000)\nsys.stdout.flush()\nopen('/sandbox/after', 'w').write('ran on')\nsys.exit(7)",
    );
    req.output_paths = vec!["/sandbox/after".into()];
    let r = run(&engine, req.clone()).await;
    assert!(r.truncated, "{r:?}");
    assert_eq!(
        (r.exit_code, r.exit_reason),
        (7, Some(ExitReason::OutputLimit)),
        "{r:?}"
    );
    let after = r
        .files
        .as_ref()
        .and_then(|f| f.get("/sandbox/after"))
        .expect("the file written after the cap");
    use base64::Engine as _;
    let after = base64::engine::general_purpose::STANDARD
        .decode(after)
        .expect("base64");
    assert_eq!(after, b"ran on");
    assert_eq!(
        closing(&events(&engine, req).await),
        [
            (StreamEventType::Error, "OUTPUT LIMIT EXCEEDED".into(), None),
            (
                StreamEventType::Exit,
                "7".into(),
                Some(ExitReason::OutputLimit)
            ),
        ]
    );
    assert_clean(&engine).await;
}
