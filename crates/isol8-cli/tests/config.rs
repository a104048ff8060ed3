//! `isol8 config` and the configuration file as the CLI reads it: the resolved view
//! (`--json` and text), a file in the reference implementation's format using every
//! key, `debug`, whole numbers written as floats, and a broken file, which stops the
//! commands that use it but not `logout`, `cleanup` or `--help`.

mod common;

use std::process::Output;

use common::{isol8_in, text};
use isol8_testkit::fixtures::REFERENCE_CONFIG;

fn dir_with(name: &str, config: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("isol8-config-{name}-"))
        .tempdir()
        .expect("temp dir");
    if let Some(c) = config {
        std::fs::write(dir.path().join("isol8.config.json"), c).expect("write");
    }
    dir
}

/// `isol8 ARGS` in `dir` with no log filter of the environment (so `-v` and `debug`
/// decide what is logged).
fn run(dir: &tempfile::TempDir, args: &[&str]) -> Output {
    isol8_in(dir.path())
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("run isol8")
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

#[test]
fn config_json_is_the_resolved_configuration_without_nulls() {
    let dir = dir_with("defaults", None);
    let v = json(&run(&dir, &["config", "--json"]));
    assert!(!v.to_string().contains("null"), "{v}");
    assert_eq!(v["maxConcurrent"], 10);
    assert_eq!(v["defaults"]["timeoutMs"], 30_000);
    assert_eq!(v["defaults"]["memoryLimit"], "512m");
    assert_eq!(v["remoteCode"]["enableCache"], true);
    assert_eq!(v["remoteCode"]["cacheTtl"], 3600);
    assert_eq!(v["audit"]["destination"], "filesystem");
    assert_eq!(v["serverPolicy"]["maxSessions"], 32);
    assert_eq!(v["poolSize"], serde_json::json!({"clean": 1, "dirty": 1}));

    // A partial file: what it sets, and the defaults around it.
    let dir = dir_with("partial", Some(r#"{"defaults": {"timeoutMs": 5000.0}}"#));
    let v = json(&run(&dir, &["config", "--json"]));
    assert_eq!(v["defaults"]["timeoutMs"], 5000);
    assert_eq!(v["defaults"]["tmpSize"], "256m");
    assert_eq!(v["serverPolicy"]["maxTimeoutMs"], 5000);
}

#[test]
fn a_reference_format_file_using_every_key_is_accepted_and_shown() {
    let dir = dir_with("reference", Some(REFERENCE_CONFIG));
    let o = run(&dir, &["config", "--json"]);
    let v = json(&o);
    assert_eq!(v["debug"], true);
    assert_eq!(v["maxConcurrent"], 4);
    assert_eq!(v["defaults"]["timeoutMs"], 15_000);
    assert_eq!(v["defaults"]["network"], "filtered");
    assert_eq!(v["cleanup"]["maxContainerAgeMs"], 600_000);
    assert_eq!(v["poolStrategy"], "secure");
    assert_eq!(v["poolSize"], serde_json::json!({"clean": 2, "dirty": 1}));
    assert_eq!(
        v["security"]["customProfilePath"],
        "/etc/isol8/seccomp.json"
    );
    assert_eq!(v["remoteCode"]["cacheTtl"], 120);
    assert_eq!(v["remoteCode"]["requireHash"], true);
    assert_eq!(v["audit"]["postLogScript"], "/usr/local/bin/ship-audit.sh");
    assert_eq!(v["audit"]["trackResources"], false);
    assert_eq!(v["audit"]["retentionDays"], 30);
    assert_eq!(v["auth"]["connectionString"], "/var/lib/isol8/auth.db");
    assert_eq!(
        v["prebuiltImages"][0],
        serde_json::json!({
            "tag": "my-python:data",
            "runtime": "python",
            "installPackages": ["six"],
            "setupScript": "echo ready > /sandbox/ready.txt",
            "setup": []
        })
    );
    assert!(v.get("$schema").is_none(), "$schema is not configuration");

    // The text form: every key by its full name, sizes as written.
    let o = run(&dir, &["config"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let value = |key: &str| {
        out.lines()
            .find_map(|l| {
                let (k, v) = l.split_once("  ")?;
                (k == key).then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("{key} missing from:\n{out}"))
    };
    assert_eq!(value("defaults.memoryLimit"), "256m");
    assert_eq!(value("defaults.sandboxSize"), "128m");
    assert_eq!(value("serverPolicy.maxMemoryLimit"), "256m");
    assert_eq!(value("remoteCode.cacheTtl"), "120");
    assert_eq!(value("network.exemptRanges"), "[]");
    assert_eq!(value("serverPolicy.maxSessions"), "32");
    assert_eq!(
        value("prebuiltImages[0].setupScript"),
        "echo ready > /sandbox/ready.txt"
    );
    // `audit` is acted on now (the engine writes the log): no key is listed as unused.
    assert!(!out.contains("parsed, not used"), "{out}");
}

#[test]
fn debug_in_the_config_logs_like_dash_v() {
    let quiet = dir_with("quiet", Some("{}"));
    let o = run(&quiet, &["config", "--json"]);
    assert!(o.status.success());
    assert_eq!(text(&o.stderr), "", "nothing is logged by default");
    let o = run(&quiet, &["-v", "config", "--json"]);
    assert!(
        text(&o.stderr).contains("configuration from"),
        "-v logs: {}",
        text(&o.stderr)
    );
    let debug = dir_with("debug", Some(r#"{"debug": true}"#));
    let o = run(&debug, &["config", "--json"]);
    assert!(o.status.success());
    assert!(
        text(&o.stderr).contains("configuration from"),
        "debug: true logs as -v does: {}",
        text(&o.stderr)
    );
}

#[test]
fn integers_may_be_whole_floats_but_not_fractions() {
    let dir = dir_with("floats", Some(r#"{"maxConcurrent": 10.0}"#));
    assert_eq!(json(&run(&dir, &["config", "--json"]))["maxConcurrent"], 10);
    let dir = dir_with("fraction", Some(r#"{"maxConcurrent": 10.5}"#));
    let o = run(&dir, &["config", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ")
            && err.contains("isol8.config.json")
            && err.contains("`maxConcurrent`: expected a whole number, got 10.5"),
        "{err}"
    );
}

#[test]
fn a_broken_config_stops_its_users_but_not_logout_cleanup_or_help() {
    let dir = dir_with("broken", Some(r#"{"defaults": {"memoryLimt": "1g"}}"#));
    let named = |s: &str| s.contains("isol8.config.json") && s.contains("defaults.memoryLimt");

    // Commands that use the configuration fail on it, in one line naming file and key.
    for args in [
        vec!["config"],
        vec!["run", "-r", "bash", "-e", "echo hi"],
        vec!["serve"],
    ] {
        let o = run(&dir, &args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: ") && named(&err), "{args:?}: {err}");
    }

    // --help does not read it.
    let o = run(&dir, &["--help"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("Usage"), "{}", text(&o.stdout));

    // logout and cleanup go on, with one warning line naming the problem first.
    let o = run(&dir, &["logout"]);
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("warning: ") && named(lines[0]),
        "{err}"
    );
    assert!(
        lines[1..].iter().all(|l| !named(l)),
        "logout went on past the configuration: {err}"
    );
    assert!(err.contains("not logged in"), "{err}");

    // No daemon here, on purpose: cleanup must get as far as trying to reach it.
    let o = isol8_in(dir.path())
        .env_remove("RUST_LOG")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["cleanup", "--force"])
        .output()
        .expect("run");
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("warning: ") && named(lines[0]),
        "{err}"
    );
    assert!(
        err.contains("cannot reach the Docker daemon"),
        "cleanup went on past the configuration: {err}"
    );
}

/// Removes the test's image however the test ends.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

#[isol8_testkit::test(docker)]
fn serve_builds_the_prebuilt_images_and_runs_their_setup_script() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    // No packages, so no registry is needed: the image only carries a setup script.
    let tag = format!("isol8-test-serve-prebuilt:{}", std::process::id());
    let _remove = RemoveImage(tag.clone());
    let config = serde_json::json!({
        "prebuiltImages": [{
            "tag": tag,
            "runtime": "python",
            "installPackages": [],
            "setupScript": "echo \"prepared by $(id -un)\" > ready.txt"
        }],
        "serverPolicy": {"allowCustomImage": true}
    });
    let dir = dir_with("serve-prebuilt", Some(&config.to_string()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = isol8_in(dir.path())
        .env_remove("RUST_LOG")
        .env("ISOL8_API_KEY", common::serve::KEY)
        .args(["serve", "--port", &port.to_string()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    // The image is built before the server listens.
    let mut before = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        if line.contains("listening on") {
            break;
        }
        before.push(line);
    }
    std::thread::spawn(move || lines.for_each(drop));
    let (tx, log) = std::sync::mpsc::channel();
    drop(tx);
    let server = common::serve::Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
    };
    assert!(
        before.iter().any(|l| l.contains(&format!("built {tag}"))),
        "{before:?}"
    );
    let (status, r) = server.post(
        "/execute",
        serde_json::json!({
            "request": {"runtime": "python", "code": "print(open('ready.txt').read().strip())"},
            "options": {"image": tag}
        }),
    );
    assert_eq!(
        (status, r["stdout"].as_str()),
        (200, Some("prepared by sandbox\n")),
        "{r}"
    );
    server.stop();
}
