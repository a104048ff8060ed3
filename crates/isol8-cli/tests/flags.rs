//! `isol8 run` flags of the network, package and file features: `--files DIR`, `--net`,
//! `--allow`/`--deny`, `--log-network`, `--install`, `--persistent`, `--url`.

mod common;

use common::{isol8_in, text};
use std::process::Output;

fn one_error_line(o: &Output, want: &str) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: ") && err.contains(want), "{err}");
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("isol8-flags-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn bad_network_and_package_flags_fail_before_anything_runs() {
    let dir = temp_dir("bad");
    let cases: [(&[&str], &str); 4] = [
        (
            &["--net", "none", "--install", "six", "-e", "1"],
            "installPackages needs the network",
        ),
        (&["--install", "six;id", "-e", "1"], "installPackages entry"),
        (
            &["--net", "filtered", "--allow", "(", "-e", "1"],
            "not a valid regex",
        ),
        (
            &["--files", "/nonexistent-dir", "-e", "1"],
            "is not a directory",
        ),
    ];
    for (flags, want) in cases {
        let o = isol8_in(&dir)
            .args(["run", "-r", "python"])
            .args(flags)
            .output()
            .expect("run");
        one_error_line(&o, want);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_agent_run_without_network_or_with_bad_flags_fails_before_anything_runs() {
    let dir = temp_dir("agent");
    let cases: [(&[&str], &str); 5] = [
        (&["-e", "fix it"], "agent runtime needs network access"),
        (
            &["--net", "none", "-e", "fix it"],
            "agent runtime needs network access",
        ),
        (
            &["--net", "filtered", "-e", "fix it"],
            "at least one whitelist entry",
        ),
        (
            &[
                "--net",
                "filtered",
                "--allow",
                "^api\\.example\\.com$",
                "--agent-flags",
                "--model 'unclosed",
                "-e",
                "fix it",
            ],
            "cannot be split",
        ),
        (
            &[
                "--net",
                "host",
                "--cmd",
                "true",
                "--agent-flags",
                "--model x",
            ],
            "agentFlags is for the agent runtime's prompt",
        ),
    ];
    for (flags, want) in cases {
        let o = isol8_in(&dir)
            .args(["run", "-r", "agent"])
            .args(flags)
            .output()
            .expect("run");
        one_error_line(&o, want);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--url` without `remoteCode.enabled` is refused by the engine, so this case needs the
/// daemon (the flags above are refused before it is reached).
#[isol8_testkit::test(docker)]
fn a_code_url_without_remote_code_enabled_fails_before_anything_runs() {
    let dir = temp_dir("url");
    let o = isol8_in(&dir)
        .args(["run", "-r", "python", "--url", "https://example.com/x.py"])
        .output()
        .expect("run");
    one_error_line(&o, "remoteCode.enabled");
    let _ = std::fs::remove_dir_all(&dir);
}

#[isol8_testkit::test(docker)]
fn a_directory_is_injected_without_vcs_dependencies_or_virtualenvs() {
    let dir = temp_dir("files");
    let project = dir.join("project");
    for (path, content) in [
        ("main.py", "print('main')"),
        ("pkg/util.py", "X = 1"),
        ("pkg/deep/data.txt", "deep"),
        (".git/config", "[core]"),
        ("node_modules/left-pad/index.js", "x"),
        ("venv/pyvenv.cfg", "home = /usr"),
        ("env2/pyvenv.cfg", "home = /usr"),
        ("pkg/__pycache__/util.pyc", "x"),
    ] {
        let p = project.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }
    let o = isol8_in(&dir)
        .args(["run", "-r", "bash", "--files"])
        .arg(&project)
        .args(["-e", "cd /sandbox && find . -type f | sort"])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "./main.py\n./pkg/deep/data.txt\n./pkg/util.py\n",
        "{}",
        text(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[isol8_testkit::test(docker)]
fn filtered_network_flags_reach_the_proxy_and_log() {
    let dir = temp_dir("net");
    let code = "import urllib.request as u\n\
                for url in ['http://example.com/', 'http://10.0.0.1/']:\n\
                \x20   try: u.urlopen(url, timeout=20)\n\
                \x20   except Exception as e: print(url, getattr(e, 'code', e))";
    let o = isol8_in(&dir)
        .args([
            "run",
            "-r",
            "python",
            "--net",
            "filtered",
            "--deny",
            r"^example\.com$",
        ])
        .args(["--log-network", "-e", code])
        .output()
        .expect("run");
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    assert!(
        out.contains("http://example.com/ 403") && out.contains("http://10.0.0.1/ 403"),
        "{out}{err}"
    );
    assert!(err.contains("[network] BLOCK GET example.com/"), "{err}");
    assert!(err.contains("[network] BLOCK GET 10.0.0.1/"), "{err}");

    // --persistent: a persistent-mode container for this run; state within it works.
    let o = isol8_in(&dir)
        .args([
            "run",
            "-r",
            "bash",
            "--persistent",
            "-e",
            "echo kept > /sandbox/f && cat /sandbox/f",
        ])
        .output()
        .expect("run");
    assert_eq!(text(&o.stdout), "kept\n", "{}", text(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
