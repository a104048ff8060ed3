//! Persistent mode (SPEC sections 1 and 2): one container per session, bound to its
//! runtime, files kept between executions, each execution a fresh process; binary-safe
//! `put_file` / `get_file` confined to `/sandbox` and refusing symlinks.

use isol8::docker::EngineConfig;
use isol8::{Engine, EngineOptions};
use isol8_protocol::options::Mode;
use isol8_testkit::{assert_clean, code, engine, engine_with, run};
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

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn files_persist_and_every_execution_is_a_fresh_process() {
    let engine = engine(persistent()).await;
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

/// What a step leaves running is killed before its result is reported, even when it
/// cannot run at that moment, one kind at a time: a stopped process, a process whose
/// main thread has ended while another thread sleeps (its main thread shows as a
/// zombie), and one in its own session ignoring SIGTERM. A session has no reset, so the
/// next execution sees what the step's end left.
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn nothing_a_step_leaves_survives_it_even_stopped_or_headless() {
    let engine = engine(persistent()).await;
    // What to plant, and what the planting program sees of it before it ends:
    // `(command name, state)` of every process but PID 1 and itself.
    let plants = [
        ("sh -c 'kill -STOP $$' &", "[('sh', 'T')]\n"),
        (
            "python3 -c 'import threading, time, ctypes; threading.Thread(target=time.sleep, \
             args=(1002,)).start(); ctypes.CDLL(None).pthread_exit(None)' &",
            "[('python3', 'Z')]\n",
        ),
        ("(trap '' TERM; setsid sleep 1003 &)", "[('sleep', 'S')]\n"),
    ];
    let others = "sorted((open(f'/proc/{p}/comm').read().strip(), \
        open(f'/proc/{p}/stat').read().rsplit(') ', 1)[1][0]) \
        for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid()))";
    for (plant, planted) in plants {
        // The program is fresh (sessions pre-start nothing), so no holder of the teardown
        // library is around, and it waits (up to 10 s) until what it planted has settled.
        let program = format!(
            "import os, subprocess, time\nsubprocess.run(['bash', '-c', {plant:?}])\n\
             for _ in range(200):\n    seen = {others}\n\
             \x20   if f'{{seen}}\\n' == {planted:?}: break\n    time.sleep(0.05)\n\
             print(seen)"
        );
        let r = run(&engine, code("python", &program)).await;
        assert_eq!((r.stdout.as_str(), r.exit_code), (planted, 0), "{r:?}");
        let r = run(
            &engine,
            code("python", &format!("import os\nprint({others})")),
        )
        .await;
        assert_eq!(r.stdout, "[]\n", "{plant}: {r:?}");
    }
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_session_is_bound_to_its_runtime() {
    let engine = engine(persistent()).await;
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

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn put_and_get_file_round_trip_five_mebibytes_of_random_bytes() {
    let engine = engine(persistent()).await;
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

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn file_transfer_refuses_escapes_and_oversized_files() {
    let config = EngineConfig {
        options: persistent(),
        max_file_bytes: Some(1 << 20),
        ..Default::default()
    };
    let engine = engine_with(config).await;
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

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn file_transfer_needs_a_persistent_session() {
    let engine = engine(EngineOptions::default()).await;
    let err = engine
        .put_file("/sandbox/x", b"x")
        .await
        .expect_err("ephemeral");
    assert!(err.to_string().contains("persistent"), "{err}");
    assert_clean(&engine).await;
    let engine = engine_with(EngineConfig {
        options: persistent(),
        ..Default::default()
    })
    .await;
    let err = engine
        .get_file("/sandbox/x")
        .await
        .expect_err("no session yet");
    assert!(err.to_string().contains("execute code first"), "{err}");
    assert_clean(&engine).await;
}

/// A FIFO planted by the session's own code where a file is then written or read: the
/// transfer is refused at once (opening a FIFO for writing with no reader would block the
/// agent forever and with it the session), and the session goes on in the same container.
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn file_transfer_over_a_planted_fifo_is_refused_without_hanging() {
    use std::time::Duration;
    let engine = engine(persistent()).await;
    let r1 = run(
        &engine,
        code("bash", "mkfifo /sandbox/in.txt && echo planted"),
    )
    .await;
    assert_eq!(r1.stdout, "planted\n", "{r1:?}");
    // The timeout only keeps a regression from hanging the suite.
    let put = tokio::time::timeout(
        Duration::from_secs(120),
        engine.put_file("/sandbox/in.txt", b"data"),
    )
    .await
    .expect("put_file over a FIFO hung");
    let err = put.expect_err("a FIFO is not a regular file");
    assert!(
        matches!(err, isol8::Error::InvalidRequest(_))
            && err.to_string().contains("not a regular file"),
        "{err}"
    );
    let get = tokio::time::timeout(Duration::from_secs(120), engine.get_file("/sandbox/in.txt"))
        .await
        .expect("get_file of a FIFO hung");
    let err = get.expect_err("a FIFO is not a regular file");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    // Same container, the FIFO untouched, and ordinary transfers still work.
    let r2 = run(
        &engine,
        code("bash", "test -p /sandbox/in.txt && echo still-a-fifo"),
    )
    .await;
    assert_eq!(r2.stdout, "still-a-fifo\n", "{r2:?}");
    assert_eq!(r1.container_id, r2.container_id);
    engine
        .put_file("/sandbox/ok.txt", b"fine")
        .await
        .expect("put a regular file");
    assert_eq!(
        engine.get_file("/sandbox/ok.txt").await.expect("get"),
        b"fine"
    );
    assert_clean(&engine).await;
}

/// An agent that does not answer (its container frozen with `docker pause`): the file
/// transfer ends with a clear error at the engine's own timeout instead of holding the
/// session, the session's container is removed, and the next execution starts afresh.
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_stuck_file_transfer_times_out_and_discards_the_sessions_container() {
    use std::time::Duration;
    let engine = engine(persistent()).await;
    let r1 = run(
        &engine,
        code("bash", "echo x > /sandbox/kept && echo ready"),
    )
    .await;
    assert_eq!(r1.stdout, "ready\n", "{r1:?}");
    let id = r1.container_id.clone().expect("container id");
    engine
        .docker()
        .pause_container(&id)
        .await
        .expect("pause the session's container");
    // The outer timeout only keeps a regression from hanging the suite.
    let put = tokio::time::timeout(
        Duration::from_secs(120),
        engine.put_file("/sandbox/new.txt", b"data"),
    )
    .await
    .expect("the engine's transfer timeout did not fire");
    let err = put.expect_err("a frozen agent cannot answer");
    assert!(
        matches!(err, isol8::Error::Sandbox(_))
            && err.to_string().contains("did not finish a file transfer")
            && err.to_string().contains("discarded"),
        "{err}"
    );
    assert!(
        engine.docker().inspect_container(&id, None).await.is_err(),
        "the stuck session container is still on the daemon"
    );
    let r2 = run(&engine, code("bash", "ls -A /sandbox | wc -l")).await;
    assert_ne!(r2.container_id, r1.container_id, "a new container");
    assert_eq!(r2.stdout, "0\n", "{r2:?}");
    assert_clean(&engine).await;
}
