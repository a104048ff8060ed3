//! Secrets stay masked everywhere an execution's results can carry them, against the real
//! engine: output split across phases and writes, the proxy's `networkLogs`, `outputPaths`
//! files, session files, and error messages quoting request text or installer output.
//!
//! No traffic leaves this machine except, in the install test, to PyPI: refused proxy
//! requests are refused by the host rules before any lookup or dial.

use std::collections::BTreeMap;

use base64::Engine as _;
use futures_util::StreamExt;
use isol8::docker::EngineConfig;
use isol8::{Engine, EngineOptions, Error, Phase, StreamEvent, StreamEventType};
use isol8_protocol::{NetworkFilter, NetworkMode};
use isol8_testkit::{assert_clean, code, engine, engine_with, run};

const SECRET: &str = "hunter2secret";

fn with_secret() -> EngineOptions {
    EngineOptions {
        secrets: BTreeMap::from([("TOK".to_string(), SECRET.to_string())]),
        ..Default::default()
    }
}

/// The text of one stream's events, joined per phase: `[setup, code]`.
fn by_phase(events: &[StreamEvent], kind: StreamEventType) -> [String; 2] {
    let mut out = [String::new(), String::new()];
    for e in events.iter().filter(|e| e.kind == kind) {
        match e.phase {
            Some(Phase::Setup) => out[0].push_str(&e.data),
            _ => out[1].push_str(&e.data),
        }
    }
    out
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_secret_split_between_setup_and_code_output_is_masked_with_phases_kept() {
    let engine = engine(with_secret()).await;
    // The issue's reproduction: `isol8 run -r python --secret TOK=hunter2secret --setup
    // 'printf hunter2' -e 'print("secret")'` printed the whole secret.
    let mut req = code("python", "print('secret')");
    req.setup_script = Some("printf hunter2".into());
    let r = run(&engine, req.clone()).await;
    assert_eq!(r.stdout, "***\n", "{r:?}");

    // The same on stderr, with the setup's half itself split over two writes with a
    // pause, and visible text on both sides that must keep its phase.
    let mut req = code(
        "python",
        "import sys\nsys.stderr.write('cret then code\\n')\nprint('code out')",
    );
    req.setup_script =
        Some("echo setup out; printf 'setup says hun' >&2; sleep 0.2; printf ter2se >&2".into());
    let r = run(&engine, req.clone()).await;
    assert_eq!(r.stderr, "setup says *** then code\n", "{r:?}");
    assert_eq!(r.stdout, "setup out\ncode out\n", "{r:?}");

    let events: Vec<StreamEvent> = engine
        .execute_stream(req)
        .await
        .expect("stream")
        .collect()
        .await;
    let all: String = events.iter().map(|e| e.data.as_str()).collect();
    assert!(
        !all.contains("hunter2") && !all.contains("secret"),
        "{events:?}"
    );
    // The mask is reported where the secret began; what the code printed after it stays
    // in the code phase.
    assert_eq!(
        by_phase(&events, StreamEventType::Stderr),
        ["setup says ***", " then code\n"],
        "{events:?}"
    );
    assert_eq!(
        by_phase(&events, StreamEventType::Stdout),
        ["setup out\n", "code out\n"],
        "{events:?}"
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn refused_proxy_requests_are_logged_with_the_secret_masked() {
    let options = EngineOptions {
        network: Some(NetworkMode::Filtered),
        // Everything but this (unused) host is refused by the host rules, before any
        // lookup or dial.
        network_filter: Some(NetworkFilter {
            whitelist: vec![r"^only\.this\.example$".into()],
            ..Default::default()
        }),
        log_network: Some(true),
        ..with_secret()
    };
    let engine = engine(options).await;
    let r = run(
        &engine,
        code(
            "python",
            r#"
import os, urllib.request
t = os.environ['TOK']
for url in ['http://10.0.0.1/?t=' + t, 'http://' + t + '.example/x', 'https://' + t + '.example/']:
    try:
        urllib.request.urlopen(url, timeout=20)
        print('reached')
    except Exception as e:
        print('refused')
"#,
        ),
    )
    .await;
    assert_eq!(r.stdout, "refused\nrefused\nrefused\n", "{r:?}");
    let logs = r.network_logs.expect("logNetwork gives networkLogs");
    let seen: Vec<(&str, &str, &str, &str)> = logs
        .iter()
        .map(|l| {
            (
                l.method.as_str(),
                l.host.as_str(),
                l.path.as_str(),
                l.action.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("GET", "10.0.0.1", "/?t=***", "BLOCK"),
            ("GET", "***.example", "/x", "BLOCK"),
            ("CONNECT", "***.example", "", "BLOCK"),
        ],
        "{logs:?}"
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn output_path_files_are_masked_text_and_binary_alike_and_listed() {
    let engine = engine(with_secret()).await;
    let mut req = code(
        "bash",
        r#"printf 'token=%s\n' "$TOK" > /sandbox/key.txt
printf '\x00\xff%s\x00' "$TOK" > /sandbox/blob.bin
printf '\x00\xffclean' > /sandbox/clean.bin"#,
    );
    req.output_paths = vec![
        "/sandbox/key.txt".into(),
        "/sandbox/blob.bin".into(),
        "/sandbox/clean.bin".into(),
    ];
    let r = run(&engine, req).await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    let files = r.files.clone().expect("files");
    let b64 = base64::engine::general_purpose::STANDARD;
    let file = |p: &str| b64.decode(&files[p]).expect("base64");
    assert_eq!(file("/sandbox/key.txt"), b"token=***\n");
    assert_eq!(file("/sandbox/blob.bin"), b"\x00\xff***\x00");
    assert_eq!(file("/sandbox/clean.bin"), b"\x00\xffclean", "untouched");
    assert_eq!(
        r.masked_files,
        Some(vec![
            "/sandbox/blob.bin".to_string(),
            "/sandbox/key.txt".to_string()
        ])
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_session_file_read_back_is_masked() {
    let engine = engine(EngineOptions {
        mode: Some(isol8_protocol::options::Mode::Persistent),
        ..with_secret()
    })
    .await;
    let r = run(
        &engine,
        code("bash", r#"printf 'key: %s!' "$TOK" > /sandbox/k.txt"#),
    )
    .await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    let content = engine.get_file("/sandbox/k.txt").await.expect("read back");
    assert_eq!(content, b"key: ***!");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn errors_quoting_request_text_are_masked() {
    let engine = engine_with(EngineConfig {
        options: with_secret(),
        remote_code: isol8::config::RemoteCodeConfig {
            enabled: Some(true),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    // The agent refuses to write a file under a path that is a file (ExecFailed quotes
    // the path).
    let mut req = code("bash", "true");
    req.files = BTreeMap::from([
        (format!("/sandbox/d-{SECRET}"), "x".to_string()),
        (format!("/sandbox/d-{SECRET}/f"), "y".to_string()),
    ]);
    let e = engine.execute(req).await.expect_err("parent is a file");
    let msg = e.to_string();
    assert!(matches!(e, Error::InvalidRequest(_)), "{e:?}");
    assert!(msg.contains("d-***") && !msg.contains(SECRET), "{msg}");

    // `codeUrl` refusals quote the URL (refused before any connection: plain http).
    let req = isol8::ExecutionRequest {
        runtime: "python".into(),
        code_url: Some(format!("http://code.example/job.py?t={SECRET}")),
        ..Default::default()
    };
    let e = engine.execute(req).await.expect_err("plain http");
    let msg = e.to_string();
    assert!(msg.contains("?t=***") && !msg.contains(SECRET), "{msg}");

    // The same for a secret given per request (as a server client would).
    let req = isol8::ExecutionRequest {
        runtime: "python".into(),
        code_url: Some("http://code.example/job.py?t=per-request-value".into()),
        ..Default::default()
    };
    let per_request = EngineOptions {
        secrets: BTreeMap::from([("OTHER".to_string(), "per-request-value".to_string())]),
        ..Default::default()
    };
    let e = engine
        .execute_with(req, &per_request)
        .await
        .expect_err("plain http");
    assert!(!e.to_string().contains("per-request-value"), "{e}");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, registries, flavor = "multi_thread")]
async fn a_failed_install_error_masks_the_installers_output() {
    let secret = "isol8-no-such-package-5e1c7";
    let ca = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
    let engine = engine_with(EngineConfig {
        options: EngineOptions {
            secrets: BTreeMap::from([("PKG".to_string(), secret.to_string())]),
            ..Default::default()
        },
        ca_bundle: ca.exists().then(|| ca.display().to_string()),
        exempt_ranges: isol8_testkit::registry_exemptions(),
        ..Default::default()
    })
    .await;
    // pip names the missing package (the secret) in its last lines, which the error
    // carries.
    let mut req = code("python", "print('never')");
    req.install_packages = vec![secret.to_string()];
    req.timeout_ms = Some(120_000);
    let e = engine.execute(req).await.expect_err("no such package");
    let msg = e.to_string();
    assert!(matches!(e, Error::PackageInstall { .. }), "{e:?}");
    assert!(
        msg.contains("No matching distribution found for ***") && !msg.contains(secret),
        "{msg}"
    );
    assert_clean(&engine).await;
}
