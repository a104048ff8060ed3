//! `isol8 run` secrets: `--secret NAME` from the environment and `--secret-file`, so a
//! value need not be on the command line (which other local users can read), and masking
//! across the setup and code phases.

mod common;

use common::{isol8_in, text};
use std::process::Output;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("isol8-secrets-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn one_error_line(o: &Output, want: &str) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: ") && err.contains(want), "{err}");
}

#[test]
fn secret_flags_that_cannot_work_fail_before_anything_runs_and_never_quote_values() {
    let dir = temp_dir("bad");
    let file = dir.join("secrets.env");
    std::fs::write(
        &file,
        "# comment\n\nGOOD=fine-value\nISOL8_TEST_UNSET_VAR\n",
    )
    .expect("write");
    let file_arg = file.display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--secret", "ISOL8_TEST_UNSET_VAR"],
            "$ISOL8_TEST_UNSET_VAR is not set",
        ),
        (&["--secret-file", &file_arg], "line 4"),
        (
            &["--secret-file", "/nonexistent/secrets.env"],
            "cannot read `/nonexistent/secrets.env`",
        ),
        (&["--secret", "TOK="], "`TOK` has an empty value"),
    ];
    for (flags, want) in cases {
        let o = isol8_in(&dir)
            .env_remove("ISOL8_TEST_UNSET_VAR")
            .args(["run", "-r", "bash"])
            .args(flags)
            .args(["-e", "true"])
            .output()
            .expect("run");
        one_error_line(&o, want);
        assert!(
            !text(&o.stderr).contains("fine-value"),
            "{}",
            text(&o.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[isol8_testkit::test(docker)]
fn secrets_come_from_the_environment_or_a_file_and_are_masked() {
    let dir = temp_dir("run");
    let file = dir.join("secrets.env");
    std::fs::write(
        &file,
        "# tokens for the job\n\nFROM_FILE=file-secret-4b1d\nWITH_EQUALS=a=b=c\r\nFROM_ENV_IN_FILE\n",
    )
    .expect("write");
    let o = isol8_in(&dir)
        .env("TOK", "env-secret-9c2e")
        .env("FROM_ENV_IN_FILE", "env-file-secret-77aa")
        .args(["run", "-r", "bash", "--secret", "TOK", "--secret-file"])
        .arg(&file)
        .args([
            "-e",
            r#"echo "$TOK ${#TOK}"; echo "$FROM_FILE ${#FROM_FILE}"; echo "${#WITH_EQUALS}"; echo "$FROM_ENV_IN_FILE""#,
        ])
        .output()
        .expect("run");
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // The values reached the program (their lengths) and were masked in its output; the
    // file's value is the rest of the line verbatim (with `=` inside, CRLF ended).
    assert_eq!(out, "*** 15\n*** 16\n5\n***\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[isol8_testkit::test(docker)]
fn a_secret_printed_half_by_setup_and_half_by_code_is_masked() {
    let dir = temp_dir("phases");
    for stream in ["--no-stream", "--json"] {
        let o = isol8_in(&dir)
            .args([
                "run",
                "-r",
                "python",
                stream,
                "--secret",
                "TOK=hunter2secret",
                "--setup",
                "printf hunter2",
                "-e",
                "print(\"secret\")",
            ])
            .output()
            .expect("run");
        let out = text(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert!(!out.contains("hunter2"), "{out}");
        if stream == "--json" {
            let v: serde_json::Value = serde_json::from_str(&out).expect("json");
            assert_eq!(v["stdout"], "***\n", "{out}");
        } else {
            assert_eq!(out, "***\n");
        }
    }
    // Streaming (the default).
    let o = isol8_in(&dir)
        .args([
            "run",
            "-r",
            "python",
            "--secret",
            "TOK=hunter2secret",
            "--setup",
            "printf hunter2",
            "-e",
            "print(\"secret\")",
        ])
        .output()
        .expect("run");
    assert_eq!(text(&o.stdout), "***\n", "{}", text(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
