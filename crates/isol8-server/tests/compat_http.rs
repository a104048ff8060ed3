//! The HTTP API as a client of the reference server (isol8 v0.20, `RemoteIsol8` and
//! its CLI) uses it, against the real engine: the request and response shapes of
//! `/health`, `/execute`, `/execute/stream`, `/sessions`, `/session/{id}`, `/file` and
//! `/cleanup`, bodies sent without a `Content-Type`, `options` (with `mode`) in
//! sessions — a secret given that way arrives, masked; a later call's container options
//! leave the session's container as it was — file paths in `/tmp` and
//! `/dev/shm` with escapes from each refused, and the phase of `exit` events.
//!
//! Written from the reference's documented behaviour; `POST /cleanup` is only ever sent
//! here with `{"images": false}` (its default removes isol8's images).

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use common::router::{call, delete, get, post, state, KEY};
use http_body_util::BodyExt;
use isol8_server::AppState;
use serde_json::{json, Value};
use tower::ServiceExt;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A `POST` as a bare `fetch(url, {method, body: JSON.stringify(…)})` sends it: no
/// `Content-Type`, the scheme in lower case.
fn bare_post(path: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header("authorization", format!("bearer {KEY}"))
        .body(Body::from(body.to_string()))
        .expect("request")
}

/// The `data:` events of a server-sent event stream.
async fn sse(state: &Arc<AppState>, body: &Value) -> (StatusCode, String, Vec<Value>) {
    let resp = isol8_server::app(state.clone())
        .oneshot(bare_post("/execute/stream", body))
        .await
        .expect("infallible");
    let status = resp.status();
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let events = String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect();
    (status, kind, events)
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn health_execute_and_stream_answer_the_references_shapes() {
    let state = state().await;
    let (status, v) = call(
        &state,
        Request::get("/health").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert!(v["version"].is_string(), "{v}");

    // RemoteIsol8.execute's body: request, the client's options, no sessionId.
    let body = json!({
        "request": {"code": "print('Hello Remote')", "runtime": "python"},
        "options": {"network": "none"},
    });
    let (status, v) = call(&state, bare_post("/execute", &body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["stdout"].as_str(),
            v["stderr"].as_str(),
            v["exitCode"].as_i64()
        ),
        (Some("Hello Remote\n"), Some(""), Some(0)),
        "{v}"
    );
    assert_eq!(v["runtime"], "python");
    assert_eq!(v["truncated"], false);
    assert!(v["durationMs"].is_number(), "{v}");
    for field in ["executionId", "timestamp", "containerId"] {
        assert!(v[field].is_string(), "{field}: {v}");
    }

    // The stream: one `data: <StreamEvent>` per event; output and the exit carry their
    // phase.
    let body = json!({"request": {"runtime": "bash", "code": "echo streamed; exit 3"}});
    let (status, kind, events) = sse(&state, &body).await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::OK, "text/event-stream")
    );
    let events: Vec<Value> = events.into_iter().map(common::without_usage).collect();
    assert_eq!(
        events,
        [
            json!({"type": "stdout", "data": "streamed\n", "phase": "code"}),
            json!({"type": "exit", "data": "3", "phase": "code", "exitReason": "exited"}),
        ]
    );
    // A failing setup script ends the run in the setup phase.
    let body =
        json!({"request": {"runtime": "bash", "code": "echo never", "setupScript": "exit 4"}});
    let (_, _, events) = sse(&state, &body).await;
    assert_eq!(
        events.last().cloned().map(common::without_usage),
        Some(json!({"type": "exit", "data": "4", "phase": "setup", "exitReason": "exited"}))
    );
    // The timeout's error event says its phase too.
    let body = json!({"request": {"runtime": "bash", "code": "sleep 30", "timeoutMs": 500}});
    let (_, _, events) = sse(&state, &body).await;
    let closing: Vec<Value> = events
        .into_iter()
        .filter(|e| e["type"] != "stdout" && e["type"] != "stderr")
        .map(common::without_usage)
        .collect();
    assert_eq!(
        closing,
        [
            json!({"type": "error", "data": "EXECUTION TIMED OUT", "phase": "code"}),
            json!({"type": "exit", "data": "137", "phase": "code", "exitReason": "timeout"}),
        ]
    );
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_session_made_from_the_clients_options_gets_its_secrets_masked() {
    let state = state().await;
    // As `RemoteIsol8({…, sessionId}, {mode: "persistent", secrets})` sends every call.
    let first = "sk-first-0a1b2c3d4e5f";
    let later = "sk-later-9f8e7d6c5b4a";
    let exec = |code: &str, options: Value| json!({"request": {"runtime": "bash", "code": code}, "options": options, "sessionId": "integ-1"});
    let (status, v) = call(
        &state,
        bare_post(
            "/execute",
            &exec(
                "echo \"token=$API_TOKEN\"; printf %s \"$API_TOKEN\" > /sandbox/tok; echo kept > /sandbox/state",
                json!({"mode": "persistent", "network": "none", "memoryLimit": "256m", "secrets": {"API_TOKEN": first}}),
            ),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["stdout"], "token=***\n",
        "the secret arrived and was masked: {v}"
    );
    assert!(!v.to_string().contains(first), "{v}");

    // A later execution in the session: a secret given with it arrives too, masked; the
    // session's own is still there; its files stayed.
    let (status, v) = call(
        &state,
        bare_post(
            "/execute",
            &exec(
                "cat /sandbox/state; echo \"$API_TOKEN $LATER\"; [ \"$LATER\" = sk-later-9f8e7d6c5b4a ] && echo exact",
                json!({"mode": "persistent", "secrets": {"LATER": later}, "timeoutMs": 10000}),
            ),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["stdout"], "kept\n*** ***\nexact\n", "{v}");
    assert!(!v.to_string().contains(later), "{v}");

    // Streamed in the session, the same.
    let (status, _, events) = sse(
        &state,
        &exec("echo \"$LATER\"", json!({"secrets": {"LATER": later}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        events[0],
        json!({"type": "stdout", "data": "***\n", "phase": "code"})
    );

    // A later call as the reference CLI makes it, its defaults sent explicitly: served in
    // the same container, which keeps the memory limit it was made with (256m).
    let limit = "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes";
    let (status, v) = call(
        &state,
        bare_post(
            "/execute",
            &exec(
                &format!("cat /sandbox/state; {limit}"),
                json!({"mode": "persistent", "network": "none", "memoryLimit": "512m", "cpuLimit": 1.0,
                       "timeoutMs": 30000, "persist": false, "networkFilter": {"whitelist": [], "blacklist": []}}),
            ),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // The cgroup holds memoryLimit + the tmpfs sizes + /dev/shm + the agent's reserve
    // (docs/SECURITY.md, "Memory and the tmpfs mounts"): 256 + 512 + 256 + 64 + 32 MiB
    // for the session's 256m, where 512m would give 1376 MiB.
    assert_eq!(v["stdout"], format!("kept\n{}\n", 1120u64 << 20), "{v}");

    // The session's listing and its deletion, as the reference answers them. (The
    // streamed execution's task may still be winding down for a moment after its last
    // event: the session is idle once it has.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let v = loop {
        let (status, v) = call(&state, get("/sessions", KEY)).await;
        assert_eq!(status, StatusCode::OK);
        if v["sessions"][0]["isActive"] == false || std::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let sessions = v["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "{v}");
    assert_eq!(sessions[0]["id"], "integ-1");
    assert_eq!(sessions[0]["isActive"], false, "{v}");
    let at = sessions[0]["lastAccessedAt"]
        .as_str()
        .expect("lastAccessedAt");
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    assert_eq!(
        call(&state, delete("/session/integ-1", KEY)).await,
        (StatusCode::OK, json!({"ok": true}))
    );
    assert_eq!(
        call(&state, get("/sessions", KEY)).await,
        (StatusCode::OK, json!({"sessions": []}))
    );
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn files_move_through_sandbox_tmp_and_dev_shm() {
    let state = state().await;
    // Ephemeral: files written before the run and read back after it, in each root.
    let body = json!({"request": {
        "runtime": "bash",
        "code": "cat /tmp/in.txt /dev/shm/seg rel.txt > /tmp/out.txt; echo shm > /dev/shm/out; id -u > /sandbox/who",
        "files": {"/tmp/in.txt": "a\n", "/dev/shm/seg": "b\n", "rel.txt": "c\n"},
        "outputPaths": ["/tmp/out.txt", "/dev/shm/out", "/sandbox/who"],
    }});
    let (status, v) = call(&state, bare_post("/execute", &body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["exitCode"], 0, "{v}");
    assert_eq!(v["files"]["/tmp/out.txt"], b64("a\nb\nc\n"), "{v}");
    assert_eq!(v["files"]["/dev/shm/out"], b64("shm\n"), "{v}");
    assert_eq!(v["files"]["/sandbox/who"], b64("1000\n"), "{v}");
    // The next execution on the pool finds none of them.
    let body = json!({"request": {"runtime": "bash", "code": "ls -A /tmp /dev/shm | grep -v ':$' | grep . || echo empty"}});
    let (_, v) = call(&state, bare_post("/execute", &body)).await;
    assert_eq!(v["stdout"], "empty\n", "{v}");

    // A session: POST and GET /file in each root, as RemoteIsol8.putFile/getFile do.
    let exec =
        |code: &str| json!({"request": {"runtime": "bash", "code": code}, "sessionId": "f-1"});
    let (status, v) = call(&state, bare_post("/execute", &exec("echo started"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    for path in ["/sandbox/data.txt", "/tmp/data.txt", "/dev/shm/data.txt"] {
        let put = json!({"sessionId": "f-1", "path": path, "content": b64("remote-file-content")});
        assert_eq!(
            call(&state, bare_post("/file", &put)).await,
            (StatusCode::OK, json!({"ok": true})),
            "{path}"
        );
        let (_, v) = call(&state, bare_post("/execute", &exec(&format!("cat {path}")))).await;
        assert_eq!(v["stdout"], "remote-file-content", "{path}: {v}");
        let (status, v) = call(
            &state,
            get(&format!("/file?sessionId=f-1&path={path}"), KEY),
        )
        .await;
        assert_eq!(
            (status, v),
            (
                StatusCode::OK,
                json!({"content": b64("remote-file-content")})
            ),
            "{path}"
        );
    }
    let (status, v) = call(&state, get("/file?sessionId=f-1", KEY)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "missing path: {v}");
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn escapes_from_tmp_and_dev_shm_are_refused_for_real() {
    let state = state().await;
    let exec =
        |code: &str| json!({"request": {"runtime": "bash", "code": code}, "sessionId": "esc"});
    // The session's code plants what an attacker would: symlinks out of each root (to a
    // directory and to a file), a symlink from one root into another, a FIFO.
    let (status, v) = call(
        &state,
        bare_post(
            "/execute",
            &exec(
                "ln -s /etc /tmp/etc; ln -s /etc/hostname /dev/shm/host; mkdir /tmp/d; \
                 ln -s /sandbox /dev/shm/sb; mkfifo /tmp/fifo; ln -s /proc/1/environ /tmp/env; echo planted",
            ),
        ),
    )
    .await;
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("planted\n")),
        "{v}"
    );
    for path in [
        "/tmp/etc/hostname",
        "/dev/shm/host",
        "/dev/shm/sb/x",
        "/tmp/fifo",
        "/tmp/env",
        "/tmp/../etc/passwd",
        "/dev/shm/../../etc/passwd",
        "/tmp",
        "/dev/mqueue/q",
    ] {
        let (status, v) = call(
            &state,
            get(&format!("/file?sessionId=esc&path={path}"), KEY),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "GET {path}: {v}");
        let put = json!({"sessionId": "esc", "path": path, "content": b64("evil")});
        let (status, v) = call(&state, bare_post("/file", &put)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "POST {path}: {v}");
    }
    // Writing through the planted links changed nothing they point at.
    let put = json!({"sessionId": "esc", "path": "/tmp/etc/isol8-evil", "content": b64("x")});
    let (status, _) = call(&state, bare_post("/file", &put)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, v) = call(
        &state,
        bare_post(
            "/execute",
            &exec("test -e /etc/isol8-evil && echo leaked; test -e /sandbox/x && echo leaked; echo checked"),
        ),
    )
    .await;
    assert_eq!(v["stdout"], "checked\n", "{v}");
    // Output paths through the links: reported unread, the run itself fine.
    let body = json!({"request": {
        "runtime": "bash",
        "code": "ln -s /etc/hostname /tmp/h; ln -s /etc /dev/shm/e",
        "outputPaths": ["/tmp/h", "/dev/shm/e/hostname"],
    }});
    let (status, v) = call(&state, bare_post("/execute", &body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["files"], json!({}), "{v}");
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn cleanup_answers_the_references_shape() {
    let state = state().await;
    for id in ["c-1", "c-2"] {
        let body = json!({"request": {"runtime": "bash", "code": "true"}, "sessionId": id});
        let (status, v) = call(&state, post("/execute", Some(KEY), body.to_string())).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let (status, v) = call(&state, bare_post("/cleanup", &json!({"images": false}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(
        v["sessions"],
        json!({"removed": 2, "failed": 0, "errors": []}),
        "{v}"
    );
    assert!(v["containers"]["removed"].is_number(), "{v}");
    assert_eq!(v["containers"]["failed"], 0, "{v}");
    assert!(v.get("images").is_none(), "images were not asked for: {v}");
    assert_eq!(
        call(&state, get("/sessions", KEY)).await,
        (StatusCode::OK, json!({"sessions": []}))
    );
    state.shutdown().await;
}
