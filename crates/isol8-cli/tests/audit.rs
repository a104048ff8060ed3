//! `isol8 run` with an `audit` configuration: the run's record is written before the
//! process exits (to the day's file, or to standard output after the program's output),
//! and a bad `audit` key stops the command with an error naming it.

mod common;

use common::{isol8_in, text};

fn dir_with(config: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("isol8-cli-audit-")
        .tempdir()
        .expect("temp dir");
    std::fs::write(dir.path().join("isol8.config.json"), config).expect("write");
    dir
}

#[test]
fn a_bad_audit_key_stops_run_with_an_error_naming_it() {
    let dir = dir_with(
        r#"{"audit": {"enabled": true, "logDir": "logs", "postLogScript": "./missing-hook.sh"}}"#,
    );
    let o = isol8_in(dir.path())
        .args(["run", "-r", "bash", "-e", "echo hi"])
        .output()
        .expect("run isol8");
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("audit.postLogScript"), "{err}");
    assert!(text(&o.stdout).is_empty(), "nothing ran");
}

#[isol8_testkit::test(docker)]
fn isol8_run_writes_its_record_before_it_exits() {
    let dir = dir_with(r#"{"audit": {"enabled": true, "logDir": "logs"}}"#);
    let o = isol8_in(dir.path())
        .args(["run", "-r", "bash", "-e", "echo hi; exit 5"])
        .output()
        .expect("run isol8");
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "hi\n",
        "the filesystem destination keeps stdout clean"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("logs"))
        .expect("the log directory")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text_of = std::fs::read_to_string(&files[0]).expect("read");
    let lines: Vec<serde_json::Value> = text_of
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{text_of}");
    assert_eq!(lines[0]["outcome"], "completed");
    assert_eq!(lines[0]["exitCode"], 5);
    assert_eq!(lines[0]["runtime"], "bash");

    // The stdout destination: the record follows the program's output.
    let dir = dir_with(r#"{"audit": {"enabled": true, "destination": "stdout"}}"#);
    let o = isol8_in(dir.path())
        .args(["run", "-r", "bash", "-e", "echo hi"])
        .output()
        .expect("run isol8");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("hi"));
    let rec: serde_json::Value =
        serde_json::from_str(lines.next().expect("the record")).expect("a JSON line");
    assert_eq!(rec["outcome"], "completed");
    assert_eq!(lines.next(), None, "{out}");
    assert!(!dir.path().join(".isol8_audit").exists());
}
