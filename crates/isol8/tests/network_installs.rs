//! Package installs in the `filtered` network mode against the real daemon and the real
//! package registries (PyPI, npm): an install reaches its registry, a failed one says why,
//! and package names are argv entries, never shell text.

mod common;

use common::{engine, filtered};
use isol8::{Engine, EngineOptions, Error};
use isol8_protocol::NetworkMode;
use isol8_testkit::{assert_clean, code, run};

/// A request installing `packages`. Tests pin versions (`six==1.17.0`) so that a custom
/// image built by another test with the bare name (`six`) never covers them.
fn installing(runtime: &str, packages: &[&str], source: &str) -> isol8::ExecutionRequest {
    let mut req = code(runtime, source);
    req.install_packages = packages.iter().map(|s| s.to_string()).collect();
    req.timeout_ms = Some(120_000);
    req
}

#[isol8_testkit::test(docker, registries)]
async fn pip_install_then_import_in_filtered_mode() {
    let engine = engine(EngineOptions {
        log_network: Some(true),
        ..Default::default()
    })
    .await;
    // No network given: installing switches to `filtered` with PyPI's hosts allowed.
    let r = run(
        &engine,
        installing(
            "python",
            &["six==1.17.0"],
            "import six; print('six', six.__version__)",
        ),
    )
    .await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(r.stdout.contains("six 1."), "{r:?}");
    let logs = r.network_logs.expect("logNetwork gives networkLogs");
    assert!(
        logs.iter()
            .any(|l| l.host == "pypi.org" && l.action == "ALLOW" && l.method == "CONNECT"),
        "{logs:?}"
    );
    assert!(logs.iter().all(|l| l.action == "ALLOW"), "{logs:?}");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, registries)]
async fn npm_install_then_require_in_filtered_mode() {
    let engine = engine(filtered(&[], &[])).await;
    let r = run(
        &engine,
        installing(
            "node",
            &["is-number@7.0.0"],
            "const isNumber = require('is-number'); console.log('is-number', isNumber(42), isNumber('x'))",
        ),
    )
    .await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(r.stdout.contains("is-number true false"), "{r:?}");
    assert!(
        !r.stderr.contains("Warning"),
        "no proxy noise on stderr: {}",
        r.stderr
    );
    let logs = r.network_logs.expect("networkLogs");
    assert!(
        logs.iter()
            .any(|l| l.host == "registry.npmjs.org" && l.action == "ALLOW"),
        "{logs:?}"
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker)]
async fn installing_with_network_none_is_a_clear_error() {
    let engine = engine(EngineOptions {
        network: Some(NetworkMode::None),
        ..Default::default()
    })
    .await;
    let err = engine
        .execute(installing("python", &["six==1.17.0"], "import six"))
        .await
        .expect_err("no network, no install");
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    assert!(
        msg.contains("installPackages") && msg.contains("none"),
        "{msg}"
    );
    // Without the install the same code fails in the sandbox: six is not there.
    let r = run(&engine, code("python", "import six")).await;
    assert_ne!(r.exit_code, 0);
    assert!(r.stderr.contains("No module named 'six'"), "{r:?}");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, registries)]
async fn a_failed_install_is_an_error_carrying_the_installers_message() {
    let engine = engine(EngineOptions::default()).await;
    let err = engine
        .execute(installing(
            "python",
            &["isol8-no-such-package-7f3a9c"],
            "print('never')",
        ))
        .await
        .expect_err("the package does not exist");
    let msg = err.to_string();
    assert!(matches!(err, Error::PackageInstall { .. }), "{err:?}");
    assert!(
        msg.contains("pip") && msg.contains("No matching distribution"),
        "{msg}"
    );
    // Package names are argv entries, never shell text, and never options or URLs.
    for bad in [
        "six; rm -rf /",
        "--index-url=http://evil.example/",
        "https://evil.example/x.whl",
        "../x",
        "$(id)",
    ] {
        let err = engine
            .execute(installing("python", &[bad], "print(1)"))
            .await
            .expect_err(bad);
        assert!(matches!(err, Error::InvalidRequest(_)), "{bad}: {err:?}");
    }
    assert_clean(&engine).await;
}
