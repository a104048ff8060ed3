//! `codeUrl`: code fetched by the engine under its remote-code policy and verified by
//! SHA-256, from a server this test runs (and, only to show a public HTTPS fetch works,
//! from a real registry).

use isol8::docker::EngineConfig;
use isol8::{Engine, Error};
use isol8_testkit::{assert_clean, engine_with, run};

/// Serves `body` at `/code.py` (200), and a redirect to 10.0.0.1 at `/to-private`, on
/// a fresh loopback port of this process; returns the base URL.
async fn serve_code(body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let reply = if head.starts_with("GET /code.py ") {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else if head.starts_with("GET /to-private ") {
                    "HTTP/1.1 302 Found\r\nLocation: http://10.0.0.1/code.py\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    base
}

#[isol8_testkit::test(docker)]
async fn code_url_is_fetched_under_the_policy_and_verified() {
    // The code comes from a server this test runs, so its bytes and hash are known; the
    // operator's exemption for 127.0.0.1 is the only way the fetcher may reach it.
    const CODE: &str = "print('fetched', 6 * 7)";
    let base = serve_code(CODE).await;
    let engine = engine_with(EngineConfig {
        remote_code: isol8::config::RemoteCodeConfig {
            enabled: Some(true),
            allowed_schemes: Some(vec!["http".into()]),
            allowed_hosts: Some(vec![r"^127\.0\.0\.1$".into()]),
            require_hash: Some(true),
            ..Default::default()
        },
        exempt_ranges: vec!["127.0.0.1".into()],
        ..Default::default()
    })
    .await;
    let sha = sha256_hex(CODE.as_bytes());
    let req = |url: &str, hash: &str| isol8::ExecutionRequest {
        runtime: "python".into(),
        code_url: Some(url.into()),
        code_hash: Some(hash.into()),
        allow_insecure_code_url: Some(true),
        ..Default::default()
    };
    let url = format!("{base}/code.py");
    let r = run(&engine, req(&url, &sha)).await;
    assert_eq!(
        (r.exit_code, r.stdout.as_str()),
        (0, "fetched 42\n"),
        "{r:?}"
    );
    let wrong = engine
        .execute(req(&url, &"a".repeat(64)))
        .await
        .expect_err("hash mismatch");
    assert!(
        wrong.to_string().contains("SHA-256") && wrong.to_string().contains(&sha),
        "{wrong}"
    );
    // Refused by policy: a host outside allowedHosts, a redirect to a private address, a
    // metadata address; and plain http without allowInsecureCodeUrl.
    for url in [
        format!("{}/code.py", base.replace("127.0.0.1", "localhost")),
        format!("{base}/to-private"),
        "http://169.254.169.254/x".to_string(),
    ] {
        let err = engine.execute(req(&url, &sha)).await.expect_err(&url);
        assert!(matches!(err, Error::InvalidRequest(_)), "{url}: {err:?}");
    }
    let mut secure_only = req(&url, &sha);
    secure_only.allow_insecure_code_url = None;
    let err = engine.execute(secure_only).await.expect_err("plain http");
    assert!(err.to_string().contains("allowInsecureCodeUrl"), "{err}");
    assert_clean(&engine).await;

    // Without the exemption the same server is refused before it is dialled: loopback.
    let engine = engine_with(EngineConfig {
        remote_code: isol8::config::RemoteCodeConfig {
            enabled: Some(true),
            allowed_schemes: Some(vec!["http".into()]),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let err = engine.execute(req(&url, &sha)).await.expect_err("loopback");
    assert!(err.to_string().contains("loopback"), "{err}");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, registries)]
async fn a_public_https_code_url_can_be_fetched() {
    // Only that a real HTTPS fetch works end to end: what the registry answers is not
    // ours, so neither its bytes nor the program's outcome are checked.
    let engine = engine_with(EngineConfig {
        remote_code: isol8::config::RemoteCodeConfig {
            enabled: Some(true),
            allowed_hosts: Some(vec![r"^registry\.npmjs\.org$".into()]),
            ..Default::default()
        },
        exempt_ranges: isol8_testkit::registry_exemptions(),
        ..Default::default()
    })
    .await;
    let req = isol8::ExecutionRequest {
        runtime: "bash".into(),
        code_url: Some("https://registry.npmjs.org/-/ping".into()),
        ..Default::default()
    };
    let r = engine.execute(req).await;
    assert!(r.is_ok(), "the fetch failed: {r:?}");
    assert_clean(&engine).await;
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
