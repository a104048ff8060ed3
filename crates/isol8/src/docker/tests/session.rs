//! Persistent sessions: one container that keeps its files, bound to the runtime of its
//! first execution; file transfers in and out; a dead or stuck session container is
//! discarded and the next execution starts a new one.

use std::collections::BTreeMap;

use isol8_protocol::options::Mode;
use isol8_protocol::{EngineOptions, ExecutionRequest};

use super::*;
use crate::error::SandboxError;
use crate::{Engine, Error};

fn persistent() -> EngineOptions {
    EngineOptions {
        mode: Some(Mode::Persistent),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_keeps_its_files_and_stays_bound_to_its_first_runtime() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, persistent()).await;
    let first = engine
        .execute(bash("write /sandbox/notes.txt kept"))
        .await
        .expect("first");
    let second = engine
        .execute(bash("read /sandbox/notes.txt"))
        .await
        .expect("second");
    assert_eq!(second.stdout, "kept");
    assert_eq!(first.container_id, second.container_id);
    assert_eq!(fake.created(), 1);
    assert_eq!(fake.resets_total(), 0, "a session is never reset");

    let python = ExecutionRequest {
        runtime: "python".into(),
        code: Some("echo hi".into()),
        ..Default::default()
    };
    let err = engine.execute(python).await.expect_err("bound to bash");
    assert!(
        matches!(&err, Error::InvalidRequest(m) if m.contains("bound to runtime `bash`")),
        "{err:?}"
    );
    // A refused request leaves the session as it was.
    let again = engine.execute(bash("read /sandbox/notes.txt")).await;
    assert_eq!(again.expect("third").stdout, "kept");
    engine.stop().await.expect("stop");
    assert!(fake.running().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_sessions_executions_take_per_execution_options_and_refuse_container_ones() {
    let fake = FakeDocker::new();
    let engine = engine_on(
        &fake,
        EngineOptions {
            memory_limit: Some("256m".into()),
            ..persistent()
        },
    )
    .await;
    engine
        .execute(bash("write /sandbox/kept x"))
        .await
        .expect("first");
    // A secret given with one execution arrives, masked, in the same container.
    let with_secret = EngineOptions {
        secrets: BTreeMap::from([("TOKEN".to_string(), "tok-9f8e7d".to_string())]),
        timeout_ms: Some(4000),
        // The session's own value, written another way, and its own mode: accepted.
        memory_limit: Some("262144k".into()),
        mode: Some(Mode::Persistent),
        ..Default::default()
    };
    let r = engine
        .execute_with(bash("env TOKEN\nread /sandbox/kept"), &with_secret)
        .await
        .expect("per-execution options apply");
    assert_eq!(r.stdout, "***\nx");
    assert_eq!(fake.created(), 1, "still the session's container");
    // What the container was created with cannot change: refused by name, before
    // anything runs, and the session lives on.
    for (opts, name) in [
        (
            EngineOptions {
                memory_limit: Some("1g".into()),
                ..Default::default()
            },
            "options.memoryLimit",
        ),
        (
            EngineOptions {
                network: Some(isol8_protocol::NetworkMode::Filtered),
                ..Default::default()
            },
            "options.network",
        ),
        (
            EngineOptions {
                mode: Some(Mode::Ephemeral),
                ..Default::default()
            },
            "options.mode",
        ),
    ] {
        let err = engine
            .execute_with(bash("write /sandbox/kept changed"), &opts)
            .await
            .expect_err(name);
        assert!(
            matches!(&err, Error::InvalidRequest(m) if m.starts_with(name)),
            "{err:?}"
        );
    }
    let r = engine
        .execute(bash("read /sandbox/kept"))
        .await
        .expect("after");
    assert_eq!(r.stdout, "x");
    assert_eq!(fake.created(), 1);
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn files_move_in_and_out_of_a_session_binary_safe() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, persistent()).await;
    let err = engine
        .put_file("/sandbox/in.bin", b"x")
        .await
        .expect_err("no container");
    assert!(
        matches!(&err, Error::InvalidRequest(m) if m.contains("no container yet")),
        "{err:?}"
    );
    engine.execute(bash("echo start")).await.expect("start");
    let bytes: Vec<u8> = (0..=255u8).collect();
    engine.put_file("in.bin", &bytes).await.expect("put");
    assert_eq!(
        engine.get_file("/sandbox/in.bin").await.expect("get"),
        bytes
    );
    let id = only_container(&fake);
    assert_eq!(fake.file(&id, "/sandbox/in.bin"), Some(bytes));

    let err = engine.get_file("/sandbox/nope").await.expect_err("missing");
    assert!(
        matches!(&err, Error::InvalidRequest(m) if m == "cannot read /sandbox/nope: not found"),
        "{err:?}"
    );
    let err = engine
        .put_file("/etc/passwd", b"x")
        .await
        .expect_err("outside");
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");

    let pooled = engine_on(&fake, EngineOptions::default()).await;
    let err = pooled
        .get_file("/sandbox/in.bin")
        .await
        .expect_err("pooled");
    assert!(
        matches!(&err, Error::InvalidRequest(m) if m.contains("need a persistent session")),
        "{err:?}"
    );
    engine.stop().await.expect("stop");
    pooled.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_dead_session_container_is_replaced_by_the_next_execution() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, persistent()).await;
    let first = engine
        .execute(bash("write /sandbox/a kept"))
        .await
        .expect("first");
    let old = first.container_id.expect("container");
    fake.kill(&old);
    let err = engine.execute(bash("echo hi")).await.expect_err("dead");
    assert!(
        matches!(err, Error::Sandbox(SandboxError::Send { .. })),
        "{err:?}"
    );
    eventually("the dead container is removed", || !fake.exists(&old)).await;

    let next = engine.execute(bash("read /sandbox/a")).await.expect("next");
    assert_ne!(next.container_id.as_deref(), Some(old.as_str()));
    assert_eq!(next.exit_code, 1, "a new container starts empty");
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn a_stuck_transfer_discards_the_session_container() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, persistent()).await;
    engine.execute(bash("echo start")).await.expect("start");
    let id = only_container(&fake);
    fake.pause(&id);
    let err = bounded("transfer", engine.get_file("/sandbox/x"))
        .await
        .expect_err("stuck");
    assert!(
        matches!(
            &err,
            Error::Sandbox(SandboxError::TransferTimeout { secs: 47 })
        ),
        "{err:?}"
    );
    assert!(!fake.exists(&id), "the stuck container is discarded");
    let next = engine.execute(bash("echo again")).await.expect("next");
    assert_ne!(next.container_id.as_deref(), Some(id.as_str()));
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn what_a_session_wrote_is_masked_when_read_back() {
    let fake = FakeDocker::new();
    let options = EngineOptions {
        secrets: BTreeMap::from([("KEY".to_string(), "hunter2secret".to_string())]),
        ..persistent()
    };
    let engine = engine_on(&fake, options).await;
    engine
        .execute(bash("write /sandbox/out.txt key=hunter2secret"))
        .await
        .expect("write");
    let read = engine.get_file("/sandbox/out.txt").await.expect("read");
    assert_eq!(read, b"key=***");
    engine.stop().await.expect("stop");
}

#[tokio::test(start_paused = true)]
async fn an_agent_session_gets_the_agent_defaults_like_a_single_run() {
    let fake = FakeDocker::new();
    let engine = engine_on(
        &fake,
        EngineOptions {
            network: Some(isol8_protocol::NetworkMode::Host),
            ..persistent()
        },
    )
    .await;
    let agent = ExecutionRequest {
        runtime: "agent".into(),
        code: Some("echo agent ran".into()),
        ..Default::default()
    };
    let first = engine.execute(agent.clone()).await.expect("first");
    let second = engine.execute(agent).await.expect("second");
    assert_eq!(second.stdout, "agent ran\n");
    assert_eq!(
        first.container_id, second.container_id,
        "one session container"
    );
    let spec = fake
        .spec(&first.container_id.expect("container"))
        .expect("created");
    assert_eq!(spec.image, "isol8:agent");
    assert_eq!(spec.host.pids_limit, Some(200));
    let sandbox = &spec.host.tmpfs.as_ref().expect("tmpfs")["/sandbox"];
    assert!(
        sandbox.contains(&format!("size={}", 2u64 << 30)),
        "{sandbox}"
    );
    engine.stop().await.expect("stop");
}
