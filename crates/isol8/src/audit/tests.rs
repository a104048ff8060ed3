//! The audit log on its own: settings and the keys their errors name, daily file names
//! and pruning on an injected clock, the stdout destination, `postLogScript` (its
//! argument, a slow script that blocks nothing, one run at a time), masking in drafts,
//! and many threads recording at once. The engine's records are tested in
//! `docker/tests/audit.rs`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use isol8_protocol::{ExecutionRequest, NetworkMode};

use super::*;

/// A clock the test sets.
#[derive(Debug)]
struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> Arc<TestClock> {
        Arc::new(TestClock(Mutex::new(
            Utc.with_ymd_and_hms(y, m, d, h, min, 0)
                .single()
                .expect("a date"),
        )))
    }
    fn set(&self, y: i32, m: u32, d: u32, h: u32, min: u32) {
        *self.0.lock().expect("clock") = Utc
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .expect("a date");
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock")
    }
}

/// Standard output stand-in.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buf").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn settings(dir: &Path) -> AuditSettings {
    AuditSettings::resolve(&AuditConfig {
        enabled: Some(true),
        log_dir: Some(dir.to_string_lossy().into_owned()),
        ..Default::default()
    })
    .expect("valid")
    .expect("enabled")
}

fn record(id: &str) -> AuditRecord {
    let req = ExecutionRequest {
        runtime: "python".into(),
        code: Some("print(1)".into()),
        ..Default::default()
    };
    let s = AuditSettings {
        include_code: false,
        ..settings(Path::new("/unused"))
    };
    Draft::new(
        &s,
        id.into(),
        &req,
        &Secrets::default(),
        Some(NetworkMode::None),
    )
    .refused("no", &Secrets::default())
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a date")
}

/// The lines of a file (none when it does not exist).
fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect()
}

/// Waits (generously) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting until {what}");
}

#[test]
fn auditing_is_off_unless_enabled() {
    assert!(AuditLog::open(&AuditConfig::default())
        .expect("ok")
        .is_none());
    let off = AuditConfig {
        enabled: Some(false),
        include_code: Some(true),
        ..Default::default()
    };
    assert!(AuditLog::open(&off).expect("ok").is_none());
}

#[test]
fn settings_take_the_reference_defaults() {
    let s = AuditSettings::resolve(&AuditConfig {
        enabled: Some(true),
        ..Default::default()
    })
    .expect("ok")
    .expect("on");
    assert_eq!(s.destination, AuditDestination::Filesystem);
    assert!(s.track_resources);
    assert_eq!(s.retention_days, 90);
    assert!(!s.include_code && !s.include_output);
    assert!(s.post_log_script.is_none());
    // logDir: ISOL8_AUDIT_DIR, else ./.isol8_audit (the environment is not touched here).
    match std::env::var_os(DIR_ENV) {
        Some(d) if !d.is_empty() => assert_eq!(s.dir, PathBuf::from(d)),
        _ => assert_eq!(s.dir, PathBuf::from(DEFAULT_DIR)),
    }
}

#[test]
fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let err = |c: AuditConfig| -> String {
        match AuditLog::open(&AuditConfig {
            enabled: Some(true),
            ..c
        }) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    };
    let missing = err(AuditConfig {
        post_log_script: Some("/nonexistent/hook.sh".into()),
        log_dir: Some(dir.path().to_string_lossy().into()),
        ..Default::default()
    });
    assert!(missing.contains("`audit.postLogScript`"), "{missing}");
    let plain = dir.path().join("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\n").expect("write");
    let not_exec = err(AuditConfig {
        post_log_script: Some(plain.to_string_lossy().into()),
        log_dir: Some(dir.path().to_string_lossy().into()),
        ..Default::default()
    });
    assert!(
        not_exec.contains("`audit.postLogScript`") && not_exec.contains("chmod +x"),
        "{not_exec}"
    );
    let script = executable(dir.path(), "ok.sh", "true");
    let on_stdout = err(AuditConfig {
        destination: Some(AuditDestination::Stdout),
        post_log_script: Some(script.to_string_lossy().into()),
        ..Default::default()
    });
    assert!(on_stdout.contains("`audit.postLogScript`"), "{on_stdout}");
    let empty = err(AuditConfig {
        log_dir: Some(" ".into()),
        ..Default::default()
    });
    assert!(empty.contains("`audit.logDir`"), "{empty}");
    // A directory that cannot be created (its parent is a file).
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    let unwritable = err(AuditConfig {
        log_dir: Some(file.join("sub").to_string_lossy().into()),
        ..Default::default()
    });
    assert!(unwritable.contains("`audit.logDir`"), "{unwritable}");
    // And in the configuration file, the parser names the key.
    for (json, key) in [
        (r#"{"audit": {"destination": "s3"}}"#, "audit.destination"),
        (r#"{"audit": {"retentionDays": -1}}"#, "audit.retentionDays"),
        (r#"{"audit": {"includeCode": "yes"}}"#, "audit.includeCode"),
        (r#"{"audit": {"logdir": "x"}}"#, "audit.logdir"),
    ] {
        let e = crate::config::Config::from_json_str(json)
            .expect_err("refused")
            .to_string();
        assert!(e.contains(key), "{json}: {e}");
    }
}

/// An executable shell script in `dir`.
fn executable(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn records_go_to_the_daily_file_of_the_utc_date_and_a_new_day_opens_a_new_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = TestClock::at(2026, 1, 2, 23, 59);
    let log = AuditLog::start(settings(dir.path()), clock.clone(), None).expect("open");
    log.record(record("a"));
    log.flush_blocking();
    clock.set(2026, 1, 3, 0, 1);
    log.record(record("b"));
    log.flush_blocking();
    let day1 = lines(&dir.path().join("executions-2026-01-02.jsonl"));
    let day2 = lines(&dir.path().join("executions-2026-01-03.jsonl"));
    assert_eq!(day1.len(), 1);
    assert_eq!(day1[0]["executionId"], "a");
    assert_eq!(day2.len(), 1);
    assert_eq!(day2[0]["executionId"], "b");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("executions-2026-01-02.jsonl"))
        .expect("file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "audit files are private: {mode:o}");
}

#[test]
fn file_names_parse_back_to_their_date() {
    assert_eq!(file_name(date(2026, 3, 4)), "executions-2026-03-04.jsonl");
    assert_eq!(
        file_date("executions-2026-03-04.jsonl"),
        Some(date(2026, 3, 4))
    );
    for other in [
        "executions.log",
        "executions-2026-13-01.jsonl",
        "notes-2026-01-01.jsonl",
        "executions-2026-01-01.jsonl.bak",
    ] {
        assert_eq!(file_date(other), None, "{other}");
    }
}

#[test]
fn old_files_are_pruned_at_open_and_when_the_day_changes_and_other_files_stay() {
    let dir = tempfile::tempdir().expect("tmp");
    let touch = |name: &str| std::fs::write(dir.path().join(name), "{}\n").expect("write");
    let exists = |name: &str| dir.path().join(name).exists();
    touch("executions-2025-12-25.jsonl"); // 11 days before 2026-01-05: deleted
    touch("executions-2025-12-26.jsonl"); // exactly 10 days: kept
    touch("executions-2026-01-01.jsonl");
    touch("notes.log");
    touch("executions.log");
    let s = AuditSettings {
        retention_days: 10,
        ..settings(dir.path())
    };
    let clock = TestClock::at(2026, 1, 5, 12, 0);
    let log = AuditLog::start(s, clock.clone(), None).expect("open");
    assert!(!exists("executions-2025-12-25.jsonl"));
    assert!(exists("executions-2025-12-26.jsonl"));
    assert!(exists("executions-2026-01-01.jsonl"));
    assert!(
        exists("executions-2026-01-05.jsonl"),
        "today's file is created at open"
    );
    // Days later, the first write of the new day prunes again.
    clock.set(2026, 1, 12, 0, 0);
    log.record(record("x"));
    log.flush_blocking();
    assert!(!exists("executions-2025-12-26.jsonl"));
    assert!(!exists("executions-2026-01-01.jsonl"), "11 days old");
    assert!(exists("executions-2026-01-05.jsonl"), "7 days old: kept");
    assert!(exists("executions-2026-01-12.jsonl"));
    // Files that are not daily audit files are never touched.
    assert!(exists("notes.log") && exists("executions.log"));
    // retentionDays 0 keeps everything.
    assert_eq!(prune(dir.path(), date(2040, 1, 1), 0), 0);
    assert!(exists("executions-2026-01-05.jsonl"));
}

#[test]
fn the_stdout_destination_writes_one_json_line_per_record() {
    let out = Buf::default();
    let s = AuditSettings {
        destination: AuditDestination::Stdout,
        ..settings(Path::new("/nonexistent/never-created"))
    };
    let log = AuditLog::start(s, Arc::new(SystemClock), Some(Box::new(out.clone()))).expect("open");
    for id in ["one", "two", "three"] {
        log.record(record(id));
    }
    log.flush_blocking();
    let text = String::from_utf8(out.0.lock().expect("buf").clone()).expect("utf-8");
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["executionId"].as_str().expect("id").to_string()
        })
        .collect();
    assert_eq!(ids, ["one", "two", "three"]);
    assert!(!Path::new("/nonexistent/never-created").exists());
}

#[test]
fn dropping_the_last_handle_writes_what_is_queued() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = TestClock::at(2026, 2, 1, 8, 0);
    let log = AuditLog::start(settings(dir.path()), clock, None).expect("open");
    for i in 0..500 {
        log.record(record(&format!("r{i}")));
    }
    drop(log); // no flush: the drop drains the queue and joins the writer
    assert_eq!(
        lines(&dir.path().join("executions-2026-02-01.jsonl")).len(),
        500
    );
}

#[test]
fn the_post_log_script_runs_with_the_path_of_the_file_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let logs = dir.path().join("logs");
    let calls = dir.path().join("calls");
    let script = executable(
        dir.path(),
        "hook.sh",
        &format!("echo \"$1\" >> '{}'", calls.display()),
    );
    let s = AuditSettings {
        post_log_script: Some(script),
        ..settings(&logs)
    };
    let log = AuditLog::start(s, TestClock::at(2026, 4, 1, 10, 0), None).expect("open");
    log.record(record("a"));
    log.flush_blocking();
    eventually("the script ran", || calls.exists());
    let got = std::fs::read_to_string(&calls).expect("calls");
    assert_eq!(
        got.trim(),
        logs.join("executions-2026-04-01.jsonl").to_string_lossy()
    );
}

#[test]
fn a_slow_post_log_script_blocks_no_write_and_runs_once_at_a_time() {
    let dir = tempfile::tempdir().expect("tmp");
    let logs = dir.path().join("logs");
    let calls = dir.path().join("calls");
    let release = dir.path().join("release");
    // Each run notes its argument, then waits until the test releases it.
    let script = executable(
        dir.path(),
        "slow.sh",
        &format!(
            "echo \"$1\" >> '{}'\nwhile [ ! -e '{}' ]; do sleep 0.02; done",
            calls.display(),
            release.display()
        ),
    );
    let s = AuditSettings {
        post_log_script: Some(script),
        ..settings(&logs)
    };
    let clock = TestClock::at(2026, 5, 1, 10, 0);
    let log = AuditLog::start(s, clock.clone(), None).expect("open");
    let calls_now = || -> Vec<String> {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    log.record(record("first"));
    log.flush_blocking();
    eventually("the script started", || calls_now().len() == 1);
    // The script is stuck: writing goes on (a flush that waited for it would hang here).
    for i in 0..50 {
        log.record(record(&format!("more{i}")));
        log.flush_blocking();
    }
    let day1 = logs.join("executions-2026-05-01.jsonl");
    assert_eq!(lines(&day1).len(), 51);
    assert_eq!(
        calls_now().len(),
        1,
        "a second run started while the first was running"
    );
    std::fs::write(&release, "").expect("release");
    // The 50 writes made while it ran lead to one more run, not 50.
    eventually("the coalesced run started", || calls_now().len() >= 2);
    clock.set(2026, 5, 2, 0, 0);
    log.record(record("next-day"));
    log.flush_blocking();
    let day2 = logs.join("executions-2026-05-02.jsonl");
    eventually("the run for the next day's file", || {
        calls_now().last().map(String::as_str) == Some(&*day2.to_string_lossy())
    });
    let d1 = day1.to_string_lossy().into_owned();
    let d2 = day2.to_string_lossy().into_owned();
    assert_eq!(calls_now(), [d1.clone(), d1, d2]);
}

#[test]
fn drafts_mask_secrets_in_code_and_metadata_and_hash_the_code() {
    let secrets = Secrets::new(["hunter2"]).expect("secrets");
    let req = ExecutionRequest {
        runtime: "bash".into(),
        code: Some("echo hunter2".into()),
        metadata: [("userId".to_string(), "u-hunter2".to_string())].into(),
        ..Default::default()
    };
    let with_code = AuditSettings {
        include_code: true,
        ..settings(Path::new("/unused"))
    };
    let d = Draft::new(
        &with_code,
        "id".into(),
        &req,
        &secrets,
        Some(NetworkMode::Filtered),
    );
    assert_eq!(d.record.code.as_deref(), Some("echo ***"));
    assert_eq!(d.record.user_id, "u-***");
    assert_eq!(d.record.metadata["userId"], "u-***");
    // SHA-256 of the code as sent (not of the masked text).
    assert_eq!(d.record.code_hash, sha256_hex("echo hunter2"));
    assert_eq!(
        sha256_hex("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let r = d.refused("bad value hunter2", &secrets);
    assert_eq!(r.error.as_deref(), Some("bad value ***"));
    assert_eq!(r.outcome, Outcome::Refused);
    let without = Draft::new(
        &settings(Path::new("/unused")),
        "id".into(),
        &req,
        &secrets,
        None,
    );
    assert!(without.record.code.is_none(), "code only with includeCode");
    let v = serde_json::to_value(&without.record).expect("json");
    assert!(v.get("code").is_none() && v.get("stdout").is_none(), "{v}");
    // A `cmd` is hashed when there is no code.
    let cmd = ExecutionRequest {
        runtime: "bash".into(),
        cmd: Some("ls".into()),
        ..Default::default()
    };
    let d = Draft::new(&with_code, "id".into(), &cmd, &Secrets::default(), None);
    assert_eq!(d.record.code_hash, sha256_hex("ls"));
}

#[test]
fn the_network_summary_counts_decisions_and_names_hosts_masked() {
    let log = |host: &str, action: &str| isol8_protocol::NetworkLog {
        timestamp: String::new(),
        method: "CONNECT".into(),
        host: host.into(),
        path: String::new(),
        action: action.into(),
        duration_ms: 0,
    };
    let logs = [
        log("pypi.org", "ALLOW"),
        log("pypi.org", "ALLOW"),
        log("evil-s3cret.example", "BLOCK"),
    ];
    let secrets = Secrets::new(["s3cret"]).expect("secrets");
    let s = NetworkSummary::new(NetworkMode::Filtered, Some(&logs), &secrets);
    assert_eq!(
        (s.requests, s.allowed, s.blocked),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(
        s.hosts,
        Some(vec!["evil-***.example".to_string(), "pypi.org".to_string()])
    );
    let none = NetworkSummary::new(NetworkMode::None, None, &secrets);
    assert_eq!(
        serde_json::to_value(&none).expect("json"),
        serde_json::json!({"mode": "none"})
    );
}

#[test]
fn records_from_many_threads_are_all_written_once_on_whole_lines() {
    let dir = tempfile::tempdir().expect("tmp");
    let log =
        AuditLog::start(settings(dir.path()), TestClock::at(2026, 6, 1, 0, 0), None).expect("open");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    log.record(record(&format!("t{t}-{i}")));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    log.flush_blocking();
    let all = lines(&dir.path().join("executions-2026-06-01.jsonl"));
    assert_eq!(all.len(), 4000);
    let ids: std::collections::HashSet<&str> = all
        .iter()
        .map(|v| v["executionId"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 4000);
}

#[test]
fn a_completed_record_copies_exit_reason_and_resource_usage_only_with_track_resources() {
    let req = ExecutionRequest {
        runtime: "python".into(),
        code: Some("x".into()),
        ..Default::default()
    };
    let usage = isol8_protocol::ResourceUsage {
        cpu_percent: 12.5,
        memory_mb: 30.0,
        peak_memory_mb: 128.0,
        network_bytes_in: 10,
        network_bytes_out: 20,
    };
    let result = isol8_protocol::ExecutionResult {
        exit_code: 137,
        duration_ms: 42,
        truncated: true,
        container_id: Some("c1".into()),
        exit_reason: Some(isol8_protocol::ExitReason::MemoryLimit),
        resource_usage: Some(usage.clone()),
        ..Default::default()
    };
    let tracking = settings(Path::new("/unused"));
    let draft = || Draft::new(&tracking, "id".into(), &req, &Secrets::default(), None);
    let r = draft().completed(&tracking, &result, None);
    let v = serde_json::to_value(&r).expect("json");
    assert_eq!(v["outcome"], "completed");
    assert_eq!(v["exitCode"], 137);
    assert_eq!(v["exitReason"], "memoryLimit");
    assert_eq!(v["durationMs"], 42);
    assert_eq!(v["truncated"], true);
    assert_eq!(v["containerId"], "c1");
    assert_eq!(
        v["resourceUsage"],
        serde_json::json!({"cpuPercent": 12.5, "memoryMB": 30.0, "peakMemoryMB": 128.0,
                           "networkBytesIn": 10, "networkBytesOut": 20})
    );
    let untracked = AuditSettings {
        track_resources: false,
        ..settings(Path::new("/unused"))
    };
    let r = draft().completed(&untracked, &result, None);
    assert!(r.resource_usage.is_none(), "trackResources: false drops it");
    assert_eq!(r.exit_reason, Some(isol8_protocol::ExitReason::MemoryLimit));
    // A result without them: absent, not null.
    let bare = draft().completed(&tracking, &isol8_protocol::ExecutionResult::default(), None);
    let v = serde_json::to_value(&bare).expect("json");
    assert!(
        v.get("exitReason").is_none() && v.get("resourceUsage").is_none(),
        "{v}"
    );
    // A lost sandbox and a cancelled run.
    let lost = crate::Error::SandboxLost("container killed".into());
    let r = draft().ended_early(Some(&lost));
    assert_eq!(
        (r.outcome, r.exit_reason),
        (
            Outcome::Failed,
            Some(isol8_protocol::ExitReason::SandboxLost)
        )
    );
    let r = draft().ended_early(None);
    assert_eq!(
        (r.outcome, r.exit_reason, r.error),
        (Outcome::Cancelled, None, None)
    );
}
