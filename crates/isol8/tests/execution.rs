//! Ephemeral execution through the library against a real Docker daemon: every request
//! field of SPEC section 2, streaming, caps, masking and timeouts, for all five runtimes.

use std::collections::BTreeMap;

use base64::Engine as _;
use futures_util::StreamExt;
use isol8::docker::EngineConfig;
use isol8::runtime::Runtime;
use isol8::{
    Engine, EngineOptions, ExecutionRequest, Phase, RuntimeRegistry, StreamEvent, StreamEventType,
};
use isol8_testkit::{assert_clean, code, engine, engine_with, run};

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn hello_world_in_all_five_runtimes() {
    let engine = engine(EngineOptions::default()).await;
    let cases = [
        ("python", "print('hello from python')", "hello from python"),
        ("node", "console.log('hello from node')", "hello from node"),
        (
            "bun",
            "console.log('hello from ' + 'bun' as string)",
            "hello from bun",
        ),
        (
            "deno",
            "const who: string = 'deno'; console.log(`hello from ${who}`)",
            "hello from deno",
        ),
        ("bash", "echo hello from bash", "hello from bash"),
    ];
    for (runtime, src, want) in cases {
        let r = run(&engine, code(runtime, src)).await;
        assert_eq!(r.exit_code, 0, "{runtime}: {r:?}");
        assert_eq!(r.stdout.trim(), want, "{runtime}: {r:?}");
        assert_eq!(r.runtime, runtime);
        assert!(!r.truncated);
        assert!(uuid_like(&r.execution_id), "{}", r.execution_id);
        assert!(r.container_id.as_deref().is_some_and(|c| c.len() == 64));
        assert!(
            chrono::DateTime::parse_from_rfc3339(&r.timestamp).is_ok(),
            "{}",
            r.timestamp
        );
    }
    assert_clean(&engine).await;
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn stdout_stderr_exit_code_env_and_stdin() {
    let engine = engine(EngineOptions::default()).await;
    let mut req = code(
        "python",
        "import os, sys\ndata = sys.stdin.read()\nprint('in:', data.upper())\nprint('env:', os.environ['GREETING'], file=sys.stderr)\nsys.exit(7)",
    );
    req.stdin = Some("piped text".into());
    req.env = BTreeMap::from([("GREETING".to_string(), "bonjour".to_string())]);
    let r = run(&engine, req).await;
    assert_eq!(r.exit_code, 7);
    assert_eq!(r.stdout, "in: PIPED TEXT\n");
    assert_eq!(r.stderr, "env: bonjour\n");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn cmd_runs_bash_in_the_runtime_image() {
    let engine = engine(EngineOptions::default()).await;
    let req = ExecutionRequest {
        runtime: "python".into(),
        cmd: Some("python3 -c 'print(6*7)' && echo $0".into()),
        ..Default::default()
    };
    let r = run(&engine, req).await;
    assert_eq!(r.stdout, "42\nbash\n", "{r:?}");
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn files_nested_output_paths_workdir_and_extension() {
    let engine = engine(EngineOptions::default()).await;
    let mut req = code(
        "node",
        "const fs = require('fs');\nconst x = fs.readFileSync('/sandbox/data/in/nums.txt', 'utf8');\nfs.mkdirSync('out', {recursive: true});\nfs.writeFileSync('out/sum.txt', String(x.split(',').map(Number).reduce((a, b) => a + b)));\nconsole.log(process.cwd());",
    );
    req.file_extension = Some(".cjs".into());
    req.workdir = Some("/sandbox/work/dir".into());
    req.files = BTreeMap::from([("data/in/nums.txt".to_string(), "1,2,3,4".to_string())]);
    req.output_paths = vec![
        "/sandbox/work/dir/out/sum.txt".into(),
        "/sandbox/missing.txt".into(),
    ];
    let r = run(&engine, req).await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), "/sandbox/work/dir");
    let files = r.files.expect("files requested");
    let sum = base64::engine::general_purpose::STANDARD
        .decode(
            files
                .get("/sandbox/work/dir/out/sum.txt")
                .expect("sum.txt read back"),
        )
        .expect("base64");
    assert_eq!(sum, b"10");
    assert!(!files.contains_key("/sandbox/missing.txt"));
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn paths_outside_sandbox_are_refused_before_anything_runs() {
    let engine = engine(EngineOptions::default()).await;
    for (field, mut req) in [
        ("file path", code("bash", "true")),
        ("workdir", code("bash", "true")),
        ("output path", code("bash", "true")),
    ] {
        match field {
            "file path" => {
                req.files = BTreeMap::from([("../etc/passwd".to_string(), "x".to_string())])
            }
            "workdir" => req.workdir = Some("/etc".into()),
            _ => req.output_paths = vec!["/etc/shadow".into()],
        }
        let err = engine.execute(req).await.expect_err("outside /sandbox");
        assert!(
            err.is_user_error() && err.to_string().contains(field),
            "{err}"
        );
    }
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn setup_script_events_have_phase_setup() {
    let engine = engine(EngineOptions::default()).await;
    let mut req = code("bash", "echo code-out; cat /sandbox/prepared.txt");
    req.setup_script =
        Some("echo setup-out; echo setup-err >&2; echo ready > /sandbox/prepared.txt".into());
    let events: Vec<StreamEvent> = engine
        .execute_stream(req.clone())
        .await
        .expect("stream")
        .collect()
        .await;
    let setup_out: String = events
        .iter()
        .filter(|e| e.kind == StreamEventType::Stdout && e.phase == Some(Phase::Setup))
        .map(|e| e.data.as_str())
        .collect();
    let setup_err: String = events
        .iter()
        .filter(|e| e.kind == StreamEventType::Stderr && e.phase == Some(Phase::Setup))
        .map(|e| e.data.as_str())
        .collect();
    let code_out: String = events
        .iter()
        .filter(|e| e.kind == StreamEventType::Stdout && e.phase == Some(Phase::Code))
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(setup_out, "setup-out\n");
    assert_eq!(setup_err, "setup-err\n");
    assert_eq!(code_out, "code-out\nready\n");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == StreamEventType::Exit)
            .count(),
        1
    );
    assert_eq!(
        events.last().map(|e| (e.kind, e.data.as_str(), e.phase)),
        Some((StreamEventType::Exit, "0", Some(Phase::Code)))
    );

    // A failing setup script stops the run with its exit code; the code never runs.
    req.setup_script = Some("echo broken >&2; exit 4".into());
    let r = run(&engine, req.clone()).await;
    assert_eq!(r.exit_code, 4);
    assert!(!r.stdout.contains("code-out"), "{r:?}");
    // Streamed, its exit event says the run ended in the setup phase.
    let events: Vec<StreamEvent> = engine
        .execute_stream(req)
        .await
        .expect("stream")
        .collect()
        .await;
    assert_eq!(
        events.last().map(|e| (e.kind, e.data.as_str(), e.phase)),
        Some((StreamEventType::Exit, "4", Some(Phase::Setup)))
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn secrets_are_masked_in_all_output_even_across_chunks() {
    let secret = "sk-live-0123456789abcdef";
    let options = EngineOptions {
        secrets: BTreeMap::from([("API_KEY".to_string(), secret.to_string())]),
        ..Default::default()
    };
    let engine = engine(options).await;
    // The secret is printed whole, to stderr, in the setup phase, and split over two
    // writes with a flush (and a pause) in between so it crosses a chunk boundary.
    let mut req = code(
        "python",
        "import os, sys, time\nk = os.environ['API_KEY']\nprint('key', k)\nprint(k, file=sys.stderr)\nsys.stdout.write(k[:7]); sys.stdout.flush(); time.sleep(0.2)\nsys.stdout.write(k[7:] + '\\n'); sys.stdout.flush()",
    );
    req.setup_script = Some("echo setup $API_KEY".into());
    let r = run(&engine, req.clone()).await;
    assert!(
        !r.stdout.contains(secret) && !r.stderr.contains(secret),
        "{r:?}"
    );
    assert!(!r.stdout.contains("sk-live"), "split secret leaked: {r:?}");
    assert_eq!(r.stdout, "setup ***\nkey ***\n***\n");
    assert_eq!(r.stderr, "***\n");

    let events: Vec<StreamEvent> = engine
        .execute_stream(req)
        .await
        .expect("stream")
        .collect()
        .await;
    let all: String = events.iter().map(|e| e.data.as_str()).collect();
    assert!(!all.contains("sk-live"), "{events:?}");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn output_cap_holds_in_buffered_and_streaming_mode() {
    let options = EngineOptions {
        max_output_size: Some(1000),
        ..Default::default()
    };
    let engine = engine(options).await;
    let req = code(
        "bash",
        "head -c 200000 /dev/zero | tr '\\0' 'a'; echo done >&2",
    );
    let r = run(&engine, req.clone()).await;
    assert!(r.truncated);
    assert_eq!(r.exit_code, 0);
    let (body, trailer) = r
        .stdout
        .split_once('\n')
        .expect("trailer after the capped output");
    assert_eq!(body.len(), 1000);
    assert!(body.bytes().all(|b| b == b'a'));
    assert_eq!(
        trailer.trim(),
        "--- OUTPUT TRUNCATED (200000 bytes, limit: 1000) ---"
    );
    assert_eq!(r.stderr, "done\n");

    let events: Vec<StreamEvent> = engine
        .execute_stream(req)
        .await
        .expect("stream")
        .collect()
        .await;
    let out: String = events
        .iter()
        .filter(|e| e.kind == StreamEventType::Stdout)
        .map(|e| e.data.as_str())
        .collect();
    let body = out.split('\n').next().expect("capped body");
    assert_eq!(body.len(), 1000);
    assert!(body.bytes().all(|b| b == b'a'));
    assert!(out.contains("--- OUTPUT TRUNCATED (200000 bytes, limit: 1000) ---"));
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn timeout_kills_the_whole_tree_with_137() {
    let engine = engine(EngineOptions::default()).await;
    let mut req = code(
        "bash",
        "echo started; (trap '' TERM; setsid sleep 300 &) ; sleep 300",
    );
    req.timeout_ms = Some(1500);
    let t = std::time::Instant::now();
    let r = run(&engine, req.clone()).await;
    assert!(t.elapsed().as_secs_f64() < 10.0, "took {:?}", t.elapsed());
    assert_eq!(r.exit_code, 137);
    assert_eq!(r.stdout, "started\n");
    assert!(
        r.stderr.ends_with("--- EXECUTION TIMED OUT ---"),
        "{:?}",
        r.stderr
    );

    let events: Vec<StreamEvent> = engine
        .execute_stream(req)
        .await
        .expect("stream")
        .collect()
        .await;
    let n = events.len();
    assert!(n >= 2);
    assert_eq!(
        (events[n - 2].kind, events[n - 2].data.as_str()),
        (StreamEventType::Error, "EXECUTION TIMED OUT")
    );
    assert_eq!(
        (events[n - 1].kind, events[n - 1].data.as_str()),
        (StreamEventType::Exit, "137")
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn streaming_delivers_output_before_the_program_ends() {
    let engine = engine(EngineOptions::default()).await;
    let req = code(
        "python",
        "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')",
    );
    let mut stream = engine.execute_stream(req).await.expect("stream");
    let t = std::time::Instant::now();
    let mut first = String::new();
    while !first.contains('\n') {
        let ev = stream.next().await.expect("event");
        if ev.kind == StreamEventType::Stdout {
            first.push_str(&ev.data);
        }
    }
    assert_eq!(first, "first\n");
    let first_at = t.elapsed();
    let rest: Vec<StreamEvent> = stream.collect().await;
    assert!(
        t.elapsed() >= first_at + std::time::Duration::from_millis(1000),
        "output was not streamed live"
    );
    let later: String = rest
        .iter()
        .filter(|e| e.kind == StreamEventType::Stdout)
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(later, "second\n");
    assert_eq!(rest.last().map(|e| e.kind), Some(StreamEventType::Exit));
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_registered_sixth_runtime_runs() {
    let mut registry = RuntimeRegistry::builtin();
    registry
        .register(
            Runtime::new("perl", "isol8:bash", &[".pl"], &["perl"]).with_inline(&["perl", "-e"]),
        )
        .expect("register perl");
    let engine = engine_with(EngineConfig {
        registry: Some(registry),
        ..Default::default()
    })
    .await;
    let r = run(&engine, code("perl", "print 6 * 7, qq{\\n};")).await;
    assert_eq!(r.stdout, "42\n", "{r:?}");
    assert_eq!(r.runtime, "perl");
    let mut file_req = code("perl", "print qq{from file\\n};");
    file_req.file_extension = Some(".pl".into());
    assert_eq!(run(&engine, file_req).await.stdout, "from file\n");
    assert!(engine
        .registry()
        .detect("x.pl")
        .is_some_and(|r| r.name == "perl"));
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn unsupported_fields_and_bad_input_fail_clearly() {
    let engine = engine(EngineOptions::default()).await;
    let mut req = code("bash", "jq --version");
    req.install_packages = vec!["jq".into()];
    let err = engine
        .execute(req)
        .await
        .expect_err("bash has no installer");
    assert!(err.to_string().contains("no package installer"), "{err}");
    let err = engine
        .execute(code("cobol", "x"))
        .await
        .expect_err("unknown runtime");
    assert!(
        err.to_string()
            .contains("available runtimes: python, node, bun, bash, deno"),
        "{err}"
    );
    let both = ExecutionRequest {
        cmd: Some("ls".into()),
        ..code("bash", "ls")
    };
    assert!(engine.execute(both).await.is_err());
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn invalid_utf8_output_is_replaced_not_fatal() {
    let engine = engine(EngineOptions::default()).await;
    let r = run(&engine, code("bash", "printf 'a\\377b\\n'")).await;
    assert_eq!(r.stdout, "a\u{fffd}b\n");
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn stop_removes_running_containers_and_refuses_new_work() {
    let engine = engine(EngineOptions::default()).await;
    let e2 = engine.clone();
    let running = tokio::spawn(async move { e2.execute(code("bash", "sleep 60")).await });
    // Wait for the container to exist.
    for _ in 0..100 {
        if !engine.live_containers().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!engine.live_containers().is_empty());
    engine.stop().await.expect("stop");
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(15), running)
        .await
        .expect("no hang")
        .expect("join");
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(engine.execute(code("bash", "true")).await.is_err());
    assert_clean(&engine).await;
}

/// A test that panics (or a program whose runtime shuts down) mid-run drops the engine
/// with a container still running: the engine's drop must remove it.
#[isol8_testkit::test(docker)]
fn dropping_the_engine_mid_run_removes_its_containers() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let engine = rt.block_on(engine(EngineOptions::default()));
    let owner = engine.owner().to_string();
    let e2 = engine.clone();
    rt.spawn(async move { e2.execute(code("bash", "sleep 60")).await });
    rt.block_on(async {
        for _ in 0..200 {
            if !engine.live_containers().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    assert!(
        !engine.live_containers().is_empty(),
        "the run never started"
    );
    drop(engine);
    rt.shutdown_timeout(std::time::Duration::from_secs(5));

    let check = tokio::runtime::Runtime::new().expect("runtime");
    let left = check.block_on(isol8_testkit::containers_labelled(
        isol8::LABEL_OWNER,
        &owner,
    ));
    assert_eq!(
        left,
        Vec::<String>::new(),
        "containers left after the engine was dropped"
    );
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn interactive_stdin_and_signals_reach_the_running_program() {
    use isol8::docker::Control;
    let engine = engine(EngineOptions::default()).await;
    let req = code("python", "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\nprint('eof')");
    let (mut events, ctl) = engine
        .execute_interactive(req, &Default::default())
        .await
        .expect("start");
    assert!(ctl.send(Control::Stdin(b"hello\n".to_vec())).await);
    let mut out = String::new();
    while !out.contains("HELLO\n") {
        let ev = events.next().await.expect("event");
        out.push_str(&ev.data);
    }
    assert!(ctl.send(Control::CloseStdin).await);
    let rest: Vec<StreamEvent> = events.collect().await;
    let text: String = rest
        .iter()
        .filter(|e| e.kind == StreamEventType::Stdout)
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(text, "eof\n");
    assert_eq!(rest.last().map(|e| e.data.as_str()), Some("0"));

    let req = code(
        "bash",
        "trap 'echo got-int; exit 5' INT; echo ready; while true; do sleep 0.05; done",
    );
    let (mut events, ctl) = engine
        .execute_interactive(req, &Default::default())
        .await
        .expect("start");
    let mut out = String::new();
    while !out.contains("ready") {
        out.push_str(&events.next().await.expect("event").data);
    }
    assert!(
        ctl.send(Control::Signal(
            isol8::docker::signal_number("SIGINT").expect("known")
        ))
        .await
    );
    let rest: Vec<StreamEvent> = events.collect().await;
    let text: String = rest.iter().map(|e| e.data.as_str()).collect();
    assert!(text.contains("got-int"), "{rest:?}");
    assert_eq!(
        rest.last().map(|e| (e.kind, e.data.as_str())),
        Some((StreamEventType::Exit, "5"))
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn per_request_secrets_are_masked_too() {
    let engine = engine(EngineOptions::default()).await;
    let options = EngineOptions {
        secrets: BTreeMap::from([("TOKEN".to_string(), "per-request-secret-value".to_string())]),
        ..Default::default()
    };
    let r = engine
        .execute_with(code("bash", "echo \"t=$TOKEN\""), &options)
        .await
        .expect("run");
    assert_eq!(r.stdout, "t=***\n");
    assert_clean(&engine).await;
}
