//! `isol8 serve` as a real process told to stop with work in flight: SIGTERM with
//! executions running and queued (503 at once, a grace, then killed) and a second
//! signal that skips the grace.

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::serve::{containers_of, Server, KEY};
use serde_json::{json, Value};

/// A streamed execution read on a thread of its own: `started` is sent once the
/// program's output contains `started`; the thread returns every SSE event.
fn stream_on_thread(
    base: &str,
    code: &str,
    started: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<Vec<Value>> {
    let url = format!("{base}/execute/stream");
    let body = json!({"request": {"runtime": "bash", "code": code, "timeoutMs": 30000}});
    std::thread::spawn(move || {
        let resp = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(180))
            .build()
            .expect("client")
            .post(url)
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .expect("stream");
        assert_eq!(resp.status().as_u16(), 200);
        let mut events = Vec::new();
        let mut told = false;
        for line in BufReader::new(resp).lines().map_while(Result::ok) {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let ev: Value = serde_json::from_str(data).expect("event JSON");
            if !told && ev["data"].as_str().is_some_and(|d| d.contains("started")) {
                told = true;
                let _ = started.send(());
            }
            events.push(ev);
        }
        events
    })
}

/// Asserts a stream ended because its sandbox was killed: a final `sandbox lost: …`
/// error and no exit event.
fn assert_lost(events: &[Value]) {
    let last = events.last().expect("events");
    assert_eq!(last["type"], "error", "{events:?}");
    assert!(
        last["data"]
            .as_str()
            .is_some_and(|d| d.starts_with("sandbox lost: ")),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e["type"] == "exit"), "{events:?}");
}

#[isol8_testkit::test(docker)]
fn sigterm_refuses_the_queue_at_once_gives_running_executions_a_grace_then_kills_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let grace_ms = 6000;
    std::fs::write(
        dir.path().join("isol8.config.json"),
        // The executions ask for 600 s: above the server's own 30 s, so the operator allows it.
        json!({"maxConcurrent": 3, "shutdownGraceMs": grace_ms, "serverPolicy": {"maxTimeoutMs": 600_000}}).to_string(),
    )
    .expect("config");
    let mut s = Server::start_in(Some(dir.path()), &[]);
    // Three executions hold every slot: two far longer than the grace, one shorter.
    let (tx, started) = std::sync::mpsc::channel();
    let long: Vec<_> = (0..2)
        .map(|i| stream_on_thread(&s.base, &format!("echo started; sleep 30{i}"), tx.clone()))
        .collect();
    let short = stream_on_thread(&s.base, "echo started; sleep 4; echo done", tx);
    for _ in 0..3 {
        started
            .recv_timeout(Duration::from_secs(60))
            .expect("every execution starts");
    }
    // Two more queue for a slot.
    let queued: Vec<_> = (0..2)
        .map(|_| {
            let url = format!("{}/execute", s.base);
            std::thread::spawn(move || {
                let resp = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .expect("client")
                    .post(url)
                    .bearer_auth(KEY)
                    .json(&json!({"request": {"runtime": "bash", "code": "echo queued", "timeoutMs": 30000}}))
                    .send()
                    .expect("queued request");
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                (resp.status().as_u16(), retry, resp.json::<Value>().unwrap_or(Value::Null))
            })
        })
        .collect();
    // Let them reach the server's queue.
    std::thread::sleep(Duration::from_millis(1500));
    let pid = s.child.id();
    s.signal(libc::SIGTERM);
    let began = Instant::now();

    // The queued requests are refused right away, while the long runs still run.
    for q in queued {
        let (status, retry, body) = q.join().expect("queued thread");
        assert_eq!(status, 503, "{body}");
        assert!(
            retry
                .and_then(|r| r.parse::<u32>().ok())
                .is_some_and(|r| r > 0),
            "Retry-After: {body}"
        );
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("shutting down")),
            "{body}"
        );
    }
    assert!(
        long.iter().all(|t| !t.is_finished()),
        "the queue was answered only after the running executions ended"
    );
    // No new work is accepted.
    let late = reqwest::blocking::Client::new()
        .get(format!("{}/health", s.base))
        .timeout(Duration::from_secs(10))
        .send();
    assert!(
        late.map_or(true, |r| r.status().as_u16() == 503),
        "a request after SIGTERM was served"
    );

    // The short run finishes within the grace; the long ones are killed after it.
    let events = short.join().expect("short stream");
    assert!(events.iter().any(|e| e["data"] == "done\n"), "{events:?}");
    let last = events.last().expect("events");
    assert_eq!(
        (
            &last["type"],
            &last["data"],
            &last["phase"],
            &last["exitReason"]
        ),
        (
            &json!("exit"),
            &json!("0"),
            &json!("code"),
            &json!("exited")
        ),
        "{events:?}"
    );
    for l in long {
        assert_lost(&l.join().expect("long stream"));
    }
    let code = s.wait_exit(Duration::from_millis(grace_ms) + Duration::from_secs(30));
    assert_eq!(code, Some(0), "server exit status");
    eprintln!(
        "exited {:.1} s after SIGTERM (grace {} s)",
        began.elapsed().as_secs_f64(),
        grace_ms / 1000
    );
    assert_eq!(
        containers_of(pid),
        0,
        "containers of the server left after shutdown"
    );
}

#[isol8_testkit::test(docker)]
fn a_second_signal_skips_the_grace_and_still_removes_every_container() {
    // A grace far longer than the test's bound: only the second signal can end it. The
    // execution asks for 600 s, which the operator allows.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("isol8.config.json"),
        json!({"serverPolicy": {"maxTimeoutMs": 600_000}}).to_string(),
    )
    .expect("config");
    let mut s = Server::start_in(Some(dir.path()), &["--shutdown-grace-ms", "3600000"]);
    let (tx, started) = std::sync::mpsc::channel();
    let long = stream_on_thread(&s.base, "echo started; sleep 600", tx);
    started
        .recv_timeout(Duration::from_secs(60))
        .expect("the execution starts");
    let pid = s.child.id();
    s.signal(libc::SIGTERM);
    s.wait_log("shutting down", Duration::from_secs(30));
    s.signal(libc::SIGINT);
    let code = s.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0), "server exit status");
    assert_eq!(
        containers_of(pid),
        0,
        "containers left after the second signal"
    );
    assert_lost(&long.join().expect("stream"));
}
