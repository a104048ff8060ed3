//! The engine's audit records ([`crate::audit`]) on the fake daemon: one per execution,
//! buffered, streamed, interactive, in a session, failed, cancelled and refused; the
//! caller of a scope; code and output only when asked for, with secrets masked; and 200
//! executions at once, each recorded exactly once.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use isol8_protocol::options::Mode;
use isol8_protocol::{EngineOptions, ExecutionRequest};
use serde_json::Value;

use super::*;
use crate::audit::{sha256_hex, AuditCaller, AuditLog, AuditSettings, SystemClock};
use crate::config::{AuditConfig, AuditDestination};
use crate::Engine;

/// Standard output stand-in for the `stdout` destination.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buf").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An audit log on the stdout destination, captured.
fn stdout_log(include: bool) -> (AuditLog, Buf) {
    let out = Buf::default();
    let settings = AuditSettings {
        destination: AuditDestination::Stdout,
        include_code: include,
        include_output: include,
        ..AuditSettings::resolve(&AuditConfig {
            enabled: Some(true),
            log_dir: Some("/nonexistent".into()),
            ..Default::default()
        })
        .expect("valid")
        .expect("on")
    };
    let log = AuditLog::start(settings, Arc::new(SystemClock), Some(Box::new(out.clone())))
        .expect("open");
    (log, out)
}

/// The records written so far (after a flush).
fn records(log: &AuditLog, out: &Buf) -> Vec<Value> {
    // The writer is a thread of its own: a blocking flush does not depend on the
    // (paused) runtime.
    log.flush_blocking();
    String::from_utf8(out.0.lock().expect("buf").clone())
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// An engine on `fake` with `options`, recording in `log`.
async fn audited(fake: &FakeDocker, options: EngineOptions, log: &AuditLog) -> DockerEngine {
    engine_with(
        fake,
        EngineConfig {
            options,
            audit_log: Some(log.clone()),
            ..Default::default()
        },
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_buffered_execution_is_recorded_once_with_what_its_result_says() {
    let fake = FakeDocker::new();
    let (log, out) = stdout_log(false);
    let engine = audited(&fake, EngineOptions::default(), &log).await;
    let code = "echo hello\nexit 3";
    let req = ExecutionRequest {
        metadata: BTreeMap::from([
            ("userId".to_string(), "u-7".to_string()),
            ("job".to_string(), "nightly".to_string()),
        ]),
        ..bash(code)
    };
    let result = engine.execute(req).await.expect("runs");
    let recs = records(&log, &out);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r["executionId"], result.execution_id.as_str());
    assert_eq!(r["outcome"], "completed");
    assert_eq!(r["runtime"], "bash");
    assert_eq!(r["image"], "isol8:bash");
    assert_eq!(r["codeHash"], sha256_hex(code).as_str());
    assert_eq!(r["exitCode"], 3);
    assert_eq!(r["durationMs"], result.duration_ms);
    assert_eq!(r["truncated"], false);
    assert_eq!(
        r["containerId"],
        result.container_id.as_deref().expect("container")
    );
    assert_eq!(r["userId"], "u-7");
    assert_eq!(r["metadata"]["job"], "nightly");
    assert_eq!(r["network"], serde_json::json!({"mode": "none"}));
    // Timestamps are RFC 3339 UTC.
    assert!(
        chrono::DateTime::parse_from_rfc3339(r["timestamp"].as_str().expect("ts")).is_ok(),
        "{r}"
    );
    // No caller outside a scope; no code or output without includeCode/includeOutput.
    for absent in [
        "tenant",
        "keyId",
        "sessionId",
        "code",
        "stdout",
        "stderr",
        "error",
    ] {
        assert!(r.get(absent).is_none(), "{absent} in {r}");
    }
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn streamed_and_interactive_executions_are_recorded_too() {
    let fake = FakeDocker::new();
    let (log, out) = stdout_log(true);
    let engine = audited(&fake, EngineOptions::default(), &log).await;
    let events = all_events(
        engine
            .execute_stream(bash("echo streamed\nexit 4"))
            .await
            .expect("stream"),
    )
    .await;
    assert_eq!(text(&events, StreamEventType::Exit), "4");
    let (stream, control) = engine
        .execute_interactive(bash("cat"), &EngineOptions::default())
        .await
        .expect("interactive");
    control
        .send(crate::control::Control::Stdin(b"typed\n".to_vec()))
        .await;
    control.send(crate::control::Control::CloseStdin).await;
    let events = all_events(stream).await;
    assert_eq!(text(&events, StreamEventType::Stdout), "typed\n");
    let recs = records(&log, &out);
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0]["outcome"], "completed");
    assert_eq!(recs[0]["exitCode"], 4);
    assert_eq!(recs[0]["stdout"], "streamed\n");
    assert_eq!(recs[1]["exitCode"], 0);
    assert_eq!(recs[1]["stdout"], "typed\n");
    assert_ne!(recs[0]["executionId"], recs[1]["executionId"]);
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_streamed_execution_is_recorded_once_its_consumer_took_the_output() {
    // A CLI printing the output and an audit log on the same stdout: the record must come
    // after the output, so it is written when the consumer takes the run's end.
    let fake = FakeDocker::new();
    let (log, out) = stdout_log(false);
    let engine = audited(&fake, EngineOptions::default(), &log).await;
    let mut stream = engine
        .execute_stream(bash("echo first"))
        .await
        .expect("stream");
    let first = bounded("first event", futures_util::StreamExt::next(&mut stream))
        .await
        .expect("an event");
    assert_eq!(first.kind, StreamEventType::Stdout);
    // The run ends while its consumer still holds the output: nothing written yet.
    eventually("the run ended", || engine.running() == 0).await;
    assert!(
        records(&log, &out).is_empty(),
        "written before the consumer took the end"
    );
    let rest = all_events(stream).await;
    assert_eq!(text(&rest, StreamEventType::Exit), "0");
    assert_eq!(records(&log, &out).len(), 1);
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn every_execution_of_a_session_is_recorded_with_the_session_container() {
    let fake = FakeDocker::new();
    let (log, out) = stdout_log(false);
    let options = EngineOptions {
        mode: Some(Mode::Persistent),
        ..Default::default()
    };
    let engine = audited(&fake, options, &log).await;
    let first = engine
        .execute(bash("write /sandbox/a kept"))
        .await
        .expect("1");
    let second = engine.execute(bash("read /sandbox/a")).await.expect("2");
    assert_eq!(second.stdout, "kept");
    let recs = records(&log, &out);
    assert_eq!(recs.len(), 2);
    let container = first.container_id.expect("container");
    for (r, res) in recs.iter().zip([&first.execution_id, &second.execution_id]) {
        assert_eq!(r["containerId"], container.as_str());
        assert_eq!(r["executionId"], res.as_str());
        assert_eq!(r["outcome"], "completed");
    }
    // A session's sibling engine (how a server makes sessions) records in the same log.
    let sibling = engine.sibling(EngineOptions::default()).expect("sibling");
    sibling.execute(bash("exit 0")).await.expect("sibling run");
    assert_eq!(records(&log, &out).len(), 3);
    engine.stop().await.expect("stop");
    sibling.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn failed_cancelled_and_refused_executions_are_recorded_with_why() {
    let fake = FakeDocker::new();
    let (log, out) = stdout_log(false);
    let engine = audited(&fake, EngineOptions::default(), &log).await;
    // The container dies under the program: a result, exit reason sandboxLost.
    let lost = engine.execute(bash("echo x\ndie")).await.expect("a result");
    assert_eq!(
        lost.exit_reason,
        Some(isol8_protocol::ExitReason::SandboxLost)
    );
    // A package that does not install: failed.
    let install = ExecutionRequest {
        runtime: "python".into(),
        install_packages: vec!["failing-package".into()],
        ..bash("echo never")
    };
    let err = engine.execute(install).await.expect_err("install fails");
    assert!(matches!(err, crate::Error::PackageInstall { .. }), "{err}");
    // Refused by the engine before anything ran: a bad request.
    let bad = ExecutionRequest {
        cmd: Some("ls".into()),
        ..bash("echo both code and cmd")
    };
    let refused = engine.execute(bad).await.expect_err("refused");
    // Refused by the engine: an option outside its accepted form.
    let bad_option = EngineOptions {
        memory_limit: Some("lots".into()),
        ..Default::default()
    };
    engine
        .execute_with(bash("echo"), &bad_option)
        .await
        .expect_err("bad option");
    // The consumer goes away mid-run: cancelled.
    let mut stream = engine
        .execute_stream(bash("echo started\nhang"))
        .await
        .expect("stream");
    let first = bounded("first event", futures_util::StreamExt::next(&mut stream)).await;
    assert!(first.is_some());
    drop(stream);
    eventually("the cancelled run is recorded", || {
        records(&log, &out).len() == 5
    })
    .await;
    let mut recs = records(&log, &out);
    let lost_rec = recs.remove(0);
    assert_eq!(lost_rec["outcome"], "completed", "{lost_rec}");
    assert_eq!(lost_rec["exitReason"], "sandboxLost", "{lost_rec}");
    assert_eq!(lost_rec["exitCode"], 137, "{lost_rec}");
    assert_eq!(lost_rec["executionId"], lost.execution_id.as_str());
    let failed = &recs[0];
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert!(failed.get("exitCode").is_none(), "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .expect("error")
            .contains("failing-package"),
        "{failed}"
    );
    let refused_rec = &recs[1];
    assert_eq!(refused_rec["outcome"], "refused");
    assert_eq!(refused_rec["error"], refused.to_string().as_str());
    assert_eq!(refused_rec["runtime"], "bash");
    assert!(refused_rec.get("containerId").is_none());
    assert_eq!(recs[2]["outcome"], "refused");
    assert!(
        recs[2]["error"]
            .as_str()
            .expect("error")
            .contains("memoryLimit"),
        "{}",
        recs[2]
    );
    assert_eq!(recs[3]["outcome"], "cancelled");
    let ids: HashSet<&str> = recs
        .iter()
        .map(|r| r["executionId"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 4, "every record has its own execution id");
    assert_ne!(lost_rec["executionId"], failed["executionId"]);
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn code_and_output_are_recorded_only_when_asked_and_with_secrets_masked() {
    let fake = FakeDocker::new();
    let secrets = EngineOptions {
        secrets: BTreeMap::from([("TOKEN".to_string(), "hunter2".to_string())]),
        ..Default::default()
    };
    let code = "echo key=hunter2\nerr also hunter2";
    let (log, out) = stdout_log(true);
    let engine = audited(&fake, secrets.clone(), &log).await;
    let req = ExecutionRequest {
        metadata: BTreeMap::from([("note".to_string(), "hunter2".to_string())]),
        ..bash(code)
    };
    engine.execute(req.clone()).await.expect("runs");
    // A refused request with a per-request secret: its error and code are masked too.
    let per_request = EngineOptions {
        secrets: BTreeMap::from([("OTHER".to_string(), "s3kr1t".to_string())]),
        memory_limit: Some("s3kr1t".into()),
        ..Default::default()
    };
    let refused = engine
        .execute_with(bash("echo s3kr1t"), &per_request)
        .await
        .expect_err("bad memoryLimit");
    assert!(!refused.to_string().contains("s3kr1t"), "{refused}");
    let recs = records(&log, &out);
    let r = &recs[0];
    assert_eq!(r["code"], "echo key=***\nerr also ***");
    assert_eq!(r["stdout"], "key=***\n");
    assert_eq!(r["stderr"], "also ***\n");
    assert_eq!(r["metadata"]["note"], "***");
    assert_eq!(
        r["codeHash"],
        sha256_hex(code).as_str(),
        "the hash is of the code as sent"
    );
    let line = String::from_utf8(out.0.lock().expect("buf").clone()).expect("utf-8");
    assert!(
        !line.contains("hunter2") && !line.contains("s3kr1t"),
        "{line}"
    );
    assert_eq!(recs[1]["outcome"], "refused");
    assert_eq!(recs[1]["code"], "echo ***");
    engine.stop().await.expect("stop");

    // Without includeCode / includeOutput: neither.
    let (log, out) = stdout_log(false);
    let engine = audited(&fake, secrets, &log).await;
    engine.execute(bash(code)).await.expect("runs");
    let r = &records(&log, &out)[0];
    for absent in ["code", "stdout", "stderr"] {
        assert!(r.get(absent).is_none(), "{absent} in {r}");
    }
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_scope_names_the_caller_and_gives_the_execution_its_id() {
    let fake = FakeDocker::new();
    let (log, out) = stdout_log(false);
    let engine = audited(&fake, EngineOptions::default(), &log).await;
    let caller = AuditCaller {
        tenant: Some("acme".into()),
        key_id: Some("key-1".into()),
        session_id: Some("s1".into()),
        request_id: Some("req-9".into()),
        execution_id: Some("11111111-2222-3333-4444-555555555555".into()),
    };
    let result = crate::audit::scope(caller.clone(), engine.execute(bash("exit 0")))
        .await
        .expect("runs");
    assert_eq!(result.execution_id, "11111111-2222-3333-4444-555555555555");
    // A stream is launched in the scope and consumed outside it.
    let stream = crate::audit::scope(
        AuditCaller {
            execution_id: None,
            ..caller
        },
        engine.execute_stream(bash("exit 0")),
    )
    .await
    .expect("stream");
    all_events(stream).await;
    let recs = records(&log, &out);
    assert_eq!(
        recs[0]["executionId"],
        "11111111-2222-3333-4444-555555555555"
    );
    for r in &recs {
        assert_eq!(r["tenant"], "acme");
        assert_eq!(r["keyId"], "key-1");
        assert_eq!(r["sessionId"], "s1");
        assert_eq!(r["requestId"], "req-9");
    }
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn two_hundred_concurrent_executions_are_each_recorded_exactly_once() {
    let fake = FakeDocker::new();
    let dir = tempfile::tempdir().expect("tmp");
    let config = AuditConfig {
        enabled: Some(true),
        log_dir: Some(dir.path().to_string_lossy().into_owned()),
        ..Default::default()
    };
    // Opened from the configuration, as the CLI and the server do.
    let engine = engine_with(
        &fake,
        EngineConfig {
            audit: config,
            max_concurrent: Some(50),
            ..Default::default()
        },
    )
    .await;
    let runs = (0..200).map(|i| {
        let engine = engine.clone();
        async move {
            if i % 2 == 0 {
                engine
                    .execute(bash(&format!("echo {i}")))
                    .await
                    .map(|r| r.execution_id)
            } else {
                let stream = engine.execute_stream(bash(&format!("echo {i}"))).await?;
                all_events(stream).await;
                Ok(String::new())
            }
        }
    });
    let results = bounded("200 runs", futures_util::future::join_all(runs)).await;
    let buffered: Vec<String> = results
        .into_iter()
        .map(|r| r.expect("each run succeeds"))
        .filter(|id| !id.is_empty())
        .collect();
    assert_eq!(buffered.len(), 100);
    engine.audit_log().expect("auditing").flush_blocking();
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    let text: String = files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read"))
        .collect();
    assert!(text.ends_with('\n'));
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is a whole JSON record"))
        .collect();
    assert_eq!(recs.len(), 200);
    let ids: HashSet<&str> = recs
        .iter()
        .map(|r| r["executionId"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 200, "no execution id twice");
    for id in &buffered {
        assert!(ids.contains(id.as_str()), "{id} missing");
    }
    let hashes: HashSet<&str> = recs
        .iter()
        .map(|r| r["codeHash"].as_str().expect("hash"))
        .collect();
    assert_eq!(hashes.len(), 200, "each record is its own execution's");
    assert!(recs.iter().all(|r| r["outcome"] == "completed"));
    assert!(Path::new(&files[0]).file_name().is_some());
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_or_timed_out_in_the_queue_is_recorded_once() {
    let fake = FakeDocker::new();
    let (log, out) = stdout_log(false);
    let engine = engine_with(
        &fake,
        EngineConfig {
            max_concurrent: Some(1),
            audit_log: Some(log.clone()),
            ..Default::default()
        },
    )
    .await;
    // The only slot is busy with a program that waits.
    let mut busy = engine
        .execute_stream(bash("echo busy\nhang"))
        .await
        .expect("stream");
    bounded("first event", futures_util::StreamExt::next(&mut busy)).await;
    // A request whose caller gives up while it is queued: cancelled.
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        engine.execute(bash("echo dropped")),
    )
    .await;
    assert!(gave_up.is_err(), "it was still queued");
    // A request whose queue wait runs out: refused, and only that.
    let short = ExecutionRequest {
        timeout_ms: Some(500),
        ..bash("echo short")
    };
    let err = engine.execute(short).await.expect_err("no slot in time");
    assert!(err.to_string().contains("slot"), "{err}");
    drop(busy);
    eventually("the busy run is recorded", || {
        records(&log, &out).len() == 3
    })
    .await;
    let recs = records(&log, &out);
    let of = |code: &str| -> Vec<&Value> {
        let h = sha256_hex(code);
        recs.iter()
            .filter(|r| r["codeHash"] == h.as_str())
            .collect()
    };
    let dropped = of("echo dropped");
    assert_eq!(dropped.len(), 1, "{recs:#?}");
    assert_eq!(dropped[0]["outcome"], "cancelled");
    assert!(dropped[0].get("containerId").is_none());
    let short = of("echo short");
    assert_eq!(short.len(), 1, "{recs:#?}");
    assert_eq!(short[0]["outcome"], "refused");
    assert!(short[0]["error"].as_str().expect("error").contains("slot"));
    assert_eq!(of("echo busy\nhang")[0]["outcome"], "cancelled");
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn stop_writes_the_records_of_the_executions_it_cuts_off() {
    let fake = FakeDocker::new();
    let (log, out) = stdout_log(false);
    let engine = audited(&fake, EngineOptions::default(), &log).await;
    let mut running = engine
        .execute_stream(bash("echo started\nhang"))
        .await
        .expect("stream");
    bounded("first event", futures_util::StreamExt::next(&mut running)).await;
    engine.stop().await.expect("stop");
    // Written by the time stop() returned: no flush here.
    let text = String::from_utf8(out.0.lock().expect("buf").clone()).expect("utf-8");
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(recs.len(), 1, "{text}");
    assert_eq!(recs[0]["outcome"], "failed");
    drop(running);
}
