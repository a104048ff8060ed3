//! Persistent mode (SPEC sections 1 and 2): one container per session, bound to its
//! runtime, files kept between executions, each execution a fresh process; binary-safe
//! `put_file` / `get_file` confined to `/sandbox` and refusing symlinks.

mod common;

use common::{assert_clean, code, engine, engine_with, run};
use isol8::docker::EngineConfig;
use isol8::{Engine, EngineOptions};
use isol8_protocol::options::Mode;
use sha2::{Digest, Sha256};

fn persistent() -> EngineOptions {
    EngineOptions {
        mode: Some(Mode::Persistent),
        ..Default::default()
    }
}

fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn files_persist_and_every_execution_is_a_fresh_process() {
    let Some(engine) = engine(persistent()).await else {
        return;
    };
    let r1 = run(
        &engine,
        code(
            "python",
            "import os\nopen('/sandbox/state.txt', 'w').write('kept')\nprint(os.getpid())",
        ),
    )
    .await;
    let r2 = run(
        &engine,
        code(
            "python",
            "import os\nprint(open('/sandbox/state.txt').read())\nprint(os.getpid())",
        ),
    )
    .await;
    assert_eq!(
        r1.container_id, r2.container_id,
        "one container per session"
    );
    let (pid1, out2) = (
        r1.stdout.trim().to_string(),
        r2.stdout.lines().collect::<Vec<_>>(),
    );
    assert_eq!(out2[0], "kept");
    assert_ne!(out2[1], pid1, "each execution is a new process");
    // Processes do not outlive their execution, even in a session.
    run(
        &engine,
        code(
            "python",
            "import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)",
        ),
    )
    .await;
    let r = run(&engine, code("python", "import os\nprint(sum(1 for p in os.listdir('/proc') if p.isdigit() and open(f'/proc/{p}/comm').read().strip() == 'sleep'))")).await;
    assert_eq!(r.stdout, "0\n");
    assert_clean(&engine).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_is_bound_to_its_runtime() {
    let Some(engine) = engine(persistent()).await else {
        return;
    };
    run(&engine, code("python", "print(1)")).await;
    let err = engine
        .execute(code("node", "console.log(1)"))
        .await
        .expect_err("other runtime");
    assert!(
        err.to_string().contains("bound to runtime `python`"),
        "{err}"
    );
    // The session still works for its own runtime.
    assert_eq!(run(&engine, code("python", "print(2)")).await.stdout, "2\n");
    assert_clean(&engine).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn put_and_get_file_round_trip_five_mebibytes_of_random_bytes() {
    let Some(engine) = engine(persistent()).await else {
        return;
    };
    run(&engine, code("python", "print('session up')")).await;
    let data = random_bytes(5 << 20, 0x5eed);
    let digest = Sha256::digest(&data);
    engine
        .put_file("/sandbox/in/blob.bin", &data)
        .await
        .expect("put_file");
    let r = run(
        &engine,
        code("python", "import hashlib\nd = open('/sandbox/in/blob.bin', 'rb').read()\nprint(hashlib.sha256(d).hexdigest())\nopen('/sandbox/out.bin', 'wb').write(d[::-1])"),
    )
    .await;
    assert_eq!(
        r.stdout.trim(),
        hex::encode(digest),
        "the sandbox saw different bytes"
    );
    let back = engine
        .get_file("/sandbox/in/blob.bin")
        .await
        .expect("get_file");
    assert_eq!(Sha256::digest(&back), digest);
    let reversed = engine
        .get_file("out.bin")
        .await
        .expect("relative paths are inside /sandbox");
    assert_eq!(reversed.len(), data.len());
    assert_eq!(reversed.first(), data.last());
    assert_clean(&engine).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn file_transfer_refuses_escapes_and_oversized_files() {
    let config = EngineConfig {
        options: persistent(),
        max_file_bytes: Some(1 << 20),
        ..Default::default()
    };
    let Some(engine) = engine_with(config).await else {
        return;
    };
    run(
        &engine,
        code(
            "bash",
            "ln -s /etc/passwd /sandbox/passwd; ln -s /etc /sandbox/etcdir; mkdir /sandbox/d",
        ),
    )
    .await;
    for path in ["/etc/passwd", "../etc/passwd", "/sandbox/../etc/hostname"] {
        let err = engine.get_file(path).await.expect_err(path);
        assert!(
            err.to_string().contains("outside /sandbox"),
            "{path}: {err}"
        );
        let err = engine.put_file(path, b"x").await.expect_err(path);
        assert!(
            err.to_string().contains("outside /sandbox"),
            "{path}: {err}"
        );
    }
    for path in [
        "/sandbox/passwd",
        "/sandbox/etcdir/hostname",
        "/sandbox/d",
        "/sandbox/missing",
    ] {
        let err = engine.get_file(path).await.expect_err(path);
        assert!(
            err.to_string().starts_with(&format!("cannot read {path}")),
            "{path}: {err}"
        );
    }
    let err = engine
        .put_file("/sandbox/etcdir/evil", b"x")
        .await
        .expect_err("through a symlink");
    assert!(err.to_string().contains("symlink"), "{err}");
    let err = engine
        .put_file("/sandbox/big", &vec![0u8; 2 << 20])
        .await
        .expect_err("too big");
    assert!(err.to_string().contains("limit"), "{err}");
    // The session survived all of that.
    assert_eq!(
        run(&engine, code("bash", "echo alive")).await.stdout,
        "alive\n"
    );
    assert_clean(&engine).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn file_transfer_needs_a_persistent_session() {
    let Some(engine) = engine(EngineOptions::default()).await else {
        return;
    };
    let err = engine
        .put_file("/sandbox/x", b"x")
        .await
        .expect_err("ephemeral");
    assert!(err.to_string().contains("persistent"), "{err}");
    assert_clean(&engine).await;
    let Some(engine) = engine_with(EngineConfig {
        options: persistent(),
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let err = engine
        .get_file("/sandbox/x")
        .await
        .expect_err("no session yet");
    assert!(err.to_string().contains("execute code first"), "{err}");
    assert_clean(&engine).await;
}
