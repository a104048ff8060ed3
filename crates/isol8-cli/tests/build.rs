//! `isol8 build` and the config's `prebuiltImages` (built by `isol8 setup`): packages are
//! baked in from the real registries, an unchanged build is skipped, and runs asking for
//! those packages use the image instead of installing (so they need no network).
//!
//! Needs Docker and the package registries: skips (saying so) without them outside CI.

mod common;

use common::{isol8_in, text};
use std::process::{Command, Output};

/// Removes the test's images and directory however the test ends.
struct Cleanup(Vec<String>, std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Runs `isol8 ARGS` in `dir` and requires it to succeed.
fn succeed(dir: &std::path::Path, args: &[&str]) -> Output {
    let o = isol8_in(dir).args(args).output().expect("isol8");
    ok(&o);
    o
}

/// Runs `isol8 ARGS` in `dir`, requires success and parses the `--json` result.
fn result_json(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&succeed(dir, args).stdout).expect("result JSON")
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

#[isol8_testkit::test(docker, registries)]
fn built_and_prebuilt_images_serve_runs_that_ask_for_their_packages() {
    let dir = std::env::temp_dir().join(format!("isol8-build-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let py_tag = format!("isol8-test-prebuilt:six-{}", std::process::id());
    let node_tag = format!("isol8-test-built:isnum-{}", std::process::id());
    let _cleanup = Cleanup(vec![py_tag.clone(), node_tag.clone()], dir.clone());
    let ca = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
    let config = serde_json::json!({
        "caBundle": ca.exists().then_some(ca),
        "prebuiltImages": [{
            "runtime": "python",
            "tag": py_tag,
            "install": ["six"],
            "setup": ["echo prebuilt > /opt/isol8/marker"]
        }]
    });
    std::fs::write(dir.join("isol8.config.json"), config.to_string()).expect("config");

    // `isol8 setup` builds the prebuilt image after the (up-to-date) runtime image…
    let o = succeed(&dir, &["setup", "-r", "python"]);
    assert!(
        text(&o.stderr).contains(&format!("built {py_tag}")),
        "{}",
        text(&o.stderr)
    );
    // …and skips it when nothing changed.
    let o = succeed(&dir, &["setup", "-r", "python"]);
    assert!(
        text(&o.stderr).contains(&format!("{py_tag}: Up to date")),
        "{}",
        text(&o.stderr)
    );

    // A run asking for six uses the image: no install, so no proxy traffic at all.
    let v = result_json(
        &dir,
        &["run", "-r", "python", "--install", "SIX", "--json", "--log-network", "-e", "import six, pathlib; print(six.__file__, pathlib.Path('/opt/isol8/marker').read_text().strip())"],
    );
    assert_eq!(
        v["stdout"], "/opt/isol8/pypackages/six.py prebuilt\n",
        "{v}"
    );
    assert!(v.get("networkLogs").is_none(), "installed at run time: {v}");

    // `isol8 build` for node; the package then resolves from the image.
    let o = succeed(
        &dir,
        &[
            "build",
            "--base",
            "node",
            "--tag",
            &node_tag,
            "--install",
            "is-number",
        ],
    );
    assert_eq!(text(&o.stdout).trim(), node_tag);
    let v = result_json(
        &dir,
        &[
            "run",
            "-r",
            "node",
            "--install",
            "is-number",
            "--json",
            "-e",
            "console.log(require.resolve('is-number'), require('is-number')(7))",
        ],
    );
    assert_eq!(
        v["stdout"], "/opt/isol8/node_modules/is-number/index.js true\n",
        "{v}"
    );
    // An ESM `import` from a file in /sandbox (.mjs, node's default) finds it too.
    let v = result_json(
        &dir,
        &[
            "run",
            "-r",
            "node",
            "--install",
            "is-number",
            "--json",
            "--ext",
            ".mjs",
            "-e",
            "import isNumber from 'is-number'; console.log('esm', isNumber(8))",
        ],
    );
    assert_eq!(v["stdout"], "esm true\n", "{v}");

    // Runtimes without a build recipe and missing input are one clear error line.
    for args in [
        vec!["build", "--base", "deno", "--install", "is-number"],
        vec!["build", "--base", "python"],
        vec!["build", "--base", "python", "--install", "six; id"],
    ] {
        let o = isol8_in(&dir).args(&args).output().expect("build");
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(
            err.lines().count() == 1 && err.starts_with("error: "),
            "{args:?}: {err}"
        );
    }
}
