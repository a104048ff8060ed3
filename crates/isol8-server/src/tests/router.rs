//! Request validation, error shapes, server failures (answered without internals,
//! logged with the ids) and draining, over the fake.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use super::fake::INTERNAL;
use super::{call, call_full, delete, error_of, execute, get, post, retry_after, server, KEY};

#[tokio::test]
async fn bad_bodies_get_json_errors_with_the_right_status() {
    let s = server();
    let cases: Vec<(Body, StatusCode, &str)> = vec![
        (Body::from("{not json"), StatusCode::BAD_REQUEST, ""),
        (Body::from(json!({"request": {"code": "x"}}).to_string()), StatusCode::BAD_REQUEST, "runtime"),
        (Body::from(json!({"request": {"runtime": 5, "code": "x"}}).to_string()), StatusCode::BAD_REQUEST, "runtime"),
        (Body::from(json!({"request": {"runtime": "cobol", "code": "x"}}).to_string()), StatusCode::BAD_REQUEST, "available runtimes"),
        (Body::from(json!({"request": {"runtime": "bash"}}).to_string()), StatusCode::BAD_REQUEST, "`code` or `cmd`"),
        (
            Body::from(json!({"request": {"runtime": "bash", "code": "echo"}, "options": {"memoryLimit": "12q"}}).to_string()),
            StatusCode::BAD_REQUEST,
            "memoryLimit",
        ),
        (
            Body::from(json!({"request": {"runtime": "bash", "code": "echo"}, "options": {"network": "bridge"}}).to_string()),
            StatusCode::BAD_REQUEST,
            "network",
        ),
        (
            Body::from(json!({"request": {"runtime": "bash", "code": "echo"}, "sessionId": "../x"}).to_string()),
            StatusCode::BAD_REQUEST,
            "sessionId must be 1-128 characters",
        ),
        (Body::from(vec![b' '; crate::MAX_BODY_BYTES + 10]), StatusCode::PAYLOAD_TOO_LARGE, ""),
    ];
    for (body, want, needle) in cases {
        let (status, v) = call(&s.state, post("/execute", Some(KEY), body)).await;
        assert_eq!(status, want, "{v}");
        assert!(error_of(&v).contains(needle), "{v}");
    }
    // Not JSON at all, whatever the content type says: 400 naming the problem.
    for content_type in [Some("text/plain"), Some("application/json"), None] {
        let mut plain = Request::post("/execute").header("authorization", format!("Bearer {KEY}"));
        if let Some(t) = content_type {
            plain = plain.header("content-type", t);
        }
        let (status, v) = call(&s.state, plain.body(Body::from("print(1)")).expect("req")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{content_type:?}: {v}");
        assert!(
            error_of(&v).starts_with("the request body is not valid JSON"),
            "{v}"
        );
    }
    // A wrong field is named by its path.
    let (_, v) = call(
        &s.state,
        post(
            "/execute",
            Some(KEY),
            json!({"request": {"runtime": 5, "code": "x"}}).to_string(),
        ),
    )
    .await;
    assert!(
        error_of(&v).starts_with("request.runtime: invalid type"),
        "{v}"
    );
    assert_eq!(
        call(
            &s.state,
            Request::get("/no/such/route")
                .body(Body::empty())
                .expect("req")
        )
        .await,
        (StatusCode::NOT_FOUND, json!({"error": "Not found"}))
    );
    let (status, v) = call(&s.state, get("/file?sessionId=nope&path=/sandbox/x", KEY)).await;
    assert_eq!(
        (status, v),
        (StatusCode::NOT_FOUND, json!({"error": "Session not found"}))
    );
    for uri in ["/file?path=/sandbox/x", "/file?sessionId=s", "/file"] {
        assert_eq!(
            call(&s.state, get(uri, KEY)).await,
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "Missing sessionId or path"})
            ),
            "{uri}"
        );
    }
    assert_eq!(
        call(&s.state, delete("/session/nope", KEY)).await,
        (StatusCode::OK, json!({"ok": true})),
        "delete is idempotent"
    );
    // None of these reached the engine.
    assert!(s.fake.seen.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn execute_answers_the_engines_result_with_the_clients_options_applied() {
    let s = server();
    let body = json!({
        "request": {"runtime": "bash", "code": "echo one\nerr two\nexit 3"},
        "options": {"memoryLimit": "128m"},
    });
    let (status, v) = call(&s.state, post("/execute", Some(KEY), body.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["stdout"].as_str(),
            v["stderr"].as_str(),
            v["exitCode"].as_i64()
        ),
        (Some("one\n"), Some("two\n"), Some(3))
    );
    assert!(
        v["executionId"].is_string() && v["runtime"] == "bash",
        "{v}"
    );
    let seen = s.fake.seen.lock().expect("lock");
    assert_eq!(seen[0].1.memory_limit.as_deref(), Some("128m"));
}

/// Where captured log lines go.
#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged while the returned guard lives (this thread: the tests' runtime is
/// single-threaded).
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(buf.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

/// [`capture_logs`] as JSON lines with their spans, all levels; read with [`json_lines`].
fn capture_json_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(buf.clone());
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_span_list(true)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

/// The captured JSON lines.
fn json_lines(buf: &Arc<Mutex<Vec<u8>>>) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&buf.lock().expect("lock"))
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The `request` span of a captured line.
fn request_span(line: &serde_json::Value) -> &serde_json::Value {
    line["spans"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "request"))
        .unwrap_or_else(|| panic!("not in a request span: {line}"))
}

#[tokio::test]
async fn every_request_is_served_in_a_span_naming_its_route_ids_tenant_and_status() {
    let s = server();
    let (logs, _guard) = capture_json_logs();
    let mut req = execute(KEY, "echo partial\nbreak", None);
    req.headers_mut()
        .insert("x-request-id", "client-7".parse().expect("header"));
    let (status, _, v) = call_full(&s.state, req).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    let message = error_of(&v);
    let id = message
        .rsplit("(execution ")
        .next()
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no execution id: {v}"));
    let lines = json_lines(&logs);
    let failed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request failed")
        .unwrap_or_else(|| panic!("no failure line: {lines:?}"));
    let span = request_span(failed);
    assert_eq!(span["request_id"], id, "{failed}");
    assert_eq!(span["client_request_id"], "client-7", "{failed}");
    assert_eq!(span["tenant"], "master", "{failed}");
    assert_eq!(span["route"], "/execute", "{failed}");
    assert_eq!(span["method"], "POST", "{failed}");
    let answered = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request answered")
        .unwrap_or_else(|| panic!("no answer line: {lines:?}"));
    assert_eq!(answered["fields"]["status"], 500, "{answered}");
    assert_eq!(request_span(answered)["status"], 500, "{answered}");
    assert_eq!(request_span(answered)["request_id"], id, "{answered}");
    // A request refused before the key check has no tenant, and its own id.
    let (status, _, _) = call_full(&s.state, get("/sessions", "wrong-key")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let lines = json_lines(&logs);
    let refused = lines
        .iter()
        .rev()
        .find(|l| l["fields"]["message"] == "request answered")
        .expect("answer line");
    let span = request_span(refused);
    assert_eq!(span["route"], "/sessions", "{refused}");
    assert_eq!(span["status"], 403, "{refused}");
    assert!(span.get("tenant").is_none(), "{refused}");
    assert_ne!(span["request_id"], id, "{refused}");
}

#[tokio::test]
async fn a_sandbox_failure_is_a_500_naming_the_execution_with_the_details_only_in_the_log() {
    let s = server();
    let (logs, _guard) = capture_logs();
    for (code, prefix) in [
        ("lose", "sandbox lost: "),
        ("pause", "sandbox unresponsive: "),
        ("break", "the sandbox failed"),
    ] {
        let mut req = execute(KEY, &format!("echo partial\n{code}"), None);
        req.headers_mut().insert(
            "x-request-id",
            format!("client-{code}").parse().expect("header"),
        );
        let (status, headers, v) = call_full(&s.state, req).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
        assert!(retry_after(&headers).is_none());
        let message = error_of(&v);
        assert!(message.starts_with(prefix), "{v}");
        assert!(
            !message.contains("4f2a9c") && !message.contains("/var/lib"),
            "{v}"
        );
        let id = message
            .rsplit("(execution ")
            .next()
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no execution id: {v}"));
        assert_eq!(id.len(), 36, "{id}");
        let text = String::from_utf8_lossy(&logs.lock().expect("lock")).into_owned();
        let line = text
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("no log line for {id}: {text}"));
        assert!(
            line.contains(INTERNAL) && line.contains(&format!("client-{code}")),
            "{line}"
        );
    }
}

#[tokio::test]
async fn draining_refuses_everything_with_503_and_retry_after() {
    let s = server();
    let running = tokio::spawn({
        let state = s.state.clone();
        async move { call(&state, execute(KEY, "wait\necho done", None)).await }
    });
    super::until("the execution holds a slot", || s.state.executing() == 1).await;
    s.state.drain();
    for req in [
        execute(KEY, "echo hi", None),
        Request::get("/health").body(Body::empty()).expect("req"),
        get("/sessions", KEY),
    ] {
        let (status, headers, v) = call_full(&s.state, req).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert!(error_of(&v).contains("shutting down"), "{v}");
        assert!(retry_after(&headers).is_some_and(|s| s >= 1));
    }
    // The running execution goes on.
    s.fake.release();
    let (status, v) = running.await.expect("join");
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("done\n"))
    );
    assert_eq!(s.state.executing(), 0);
    s.state.shutdown().await;
    assert!(s.fake.is_stopped());
}
