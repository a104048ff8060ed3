//! The routes as the reference server (isol8 v0.20) answers them, over the fake: `mode`
//! in options, sessions made from the client's options, the master key over every
//! tenant's sessions, `/cleanup`'s shape, `Authorization` and JSON bodies read as the
//! reference reads them, file paths in `/tmp` and `/dev/shm`, and the phase of `exit`
//! and `error` events.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use isol8_protocol::options::Mode;
use serde_json::{json, Value};

use super::{call, delete, error_of, get, post, server, server_with, KEY};
use crate::auth::bearer_token;
use crate::keys::{self, Keys};
use crate::{AppState, ServerSettings};

/// `POST /execute` of a bash script (the fake's language) with `extra` fields merged in.
fn run(key: &str, code: &str, extra: Value) -> Request<Body> {
    let mut body = json!({"request": {"runtime": "bash", "code": code}});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    post("/execute", Some(key), body.to_string())
}

#[tokio::test]
async fn options_mode_is_accepted_and_the_session_id_decides() {
    let s = server();
    // `mode: persistent` without a session (the reference CLI sends it with
    // --session-id): accepted, and the run is ephemeral on the shared engine.
    for path in ["/execute", "/execute/stream"] {
        let body = json!({
            "request": {"runtime": "bash", "code": "echo hi"},
            "options": {"mode": "persistent"},
        });
        let (status, v) = call(&s.state, post(path, Some(KEY), body.to_string())).await;
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
    }
    assert!(
        s.fake.sessions().is_empty(),
        "no session without a sessionId"
    );
    let seen = s.fake.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|(_, o)| o.mode.is_none()), "{seen:?}");
    // `mode: ephemeral` with a sessionId: the session it names.
    for mode in ["ephemeral", "persistent"] {
        let (status, v) = call(
            &s.state,
            run(
                KEY,
                "write /sandbox/f kept\ncat /sandbox/f",
                json!({"options": {"mode": mode}, "sessionId": "s-1"}),
            ),
        )
        .await;
        assert_eq!(
            (status, v["stdout"].as_str()),
            (StatusCode::OK, Some("kept"))
        );
    }
    assert_eq!(s.fake.sessions().len(), 1, "both ran in s-1");
    assert_eq!(s.fake.sessions()[0].options().mode, Some(Mode::Persistent));
}

#[tokio::test]
async fn a_session_is_made_from_the_clients_options_and_later_executions_apply_theirs() {
    let s = server_with(
        isol8::EngineOptions {
            timeout_ms: Some(30_000),
            ..Default::default()
        },
        ServerSettings {
            policy: isol8::config::ServerPolicy {
                max_secrets: Some(2),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    // Over the policy on first use: refused, and no session is made.
    let (status, v) = call(
        &s.state,
        run(
            KEY,
            "echo",
            json!({"sessionId": "s", "options": {"secrets": {"A": "1", "B": "2", "C": "3"}}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(error_of(&v).contains("serverPolicy.maxSecrets"), "{v}");
    assert!(s.fake.sessions().is_empty());

    let first = json!({"sessionId": "s", "options": {
        "secrets": {"TOKEN": "first-secret"}, "memoryLimit": "128m", "timeoutMs": 5000,
    }});
    let (status, v) = call(&s.state, run(KEY, "echo one", first)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let session = s.fake.sessions()[0].clone();
    let made = session.options();
    assert_eq!(
        (
            made.secrets.get("TOKEN").map(String::as_str),
            made.memory_limit.as_deref(),
            made.timeout_ms,
            made.mode,
        ),
        (
            Some("first-secret"),
            Some("128m"),
            Some(5000),
            Some(Mode::Persistent)
        ),
        "the session is made from the client's options over the server's"
    );

    // A later execution's per-execution options reach the engine with it.
    let later = json!({"sessionId": "s", "options": {
        "secrets": {"OTHER": "later-secret"}, "timeoutMs": 2000, "maxOutputSize": 4096,
    }});
    let (status, v) = call(&s.state, run(KEY, "echo two", later)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, options) = session.seen.lock().expect("lock")[1].clone();
    assert_eq!(
        (
            options.secrets.get("OTHER").map(String::as_str),
            options.timeout_ms,
            options.max_output_size
        ),
        (Some("later-secret"), Some(2000), Some(4096))
    );

    // What the container was made with stays, as the reference server keeps it: a later
    // request's container options (the reference CLI sends its defaults with every
    // call) are not passed on; its per-execution ones are.
    let later = json!({"sessionId": "s", "options": {
        "mode": "persistent", "network": "filtered", "memoryLimit": "512m", "cpuLimit": 1.0,
        "persist": false, "timeoutMs": 3000, "networkFilter": {"whitelist": [], "blacklist": []},
    }});
    let (status, v) = call(&s.state, run(KEY, "echo three", later)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, options) = session.seen.lock().expect("lock")[2].clone();
    assert_eq!(
        options,
        isol8::EngineOptions {
            timeout_ms: Some(3000),
            network_filter: Some(Default::default()),
            ..Default::default()
        }
    );
    // The policy still sees the whole request: over a cap is refused.
    let (status, v) = call(
        &s.state,
        run(
            KEY,
            "echo",
            json!({"sessionId": "s", "options": {"memoryLimit": "2g"}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        error_of(&v).contains("options.memoryLimit 2g exceeds"),
        "{v}"
    );
    assert_eq!(s.fake.sessions().len(), 1, "the same session throughout");
    assert!(!session.is_stopped());
}

/// A server with a key store; returns it and one key per tenant (`alpha`, `beta`).
async fn with_tenants(dir: &std::path::Path) -> (Arc<AppState>, String, String) {
    let store = keys::open(dir.join("auth.db").to_str().expect("utf-8"))
        .await
        .expect("store");
    let state = server_with(
        Default::default(),
        ServerSettings {
            keys: Some(Keys::new(store, None)),
            ..Default::default()
        },
    )
    .state;
    let mut issued = Vec::new();
    for tenant in ["alpha", "beta"] {
        // The key route's tenant field: `tenantId` (the reference's name) where the key
        // store takes it, `tenant` before.
        let mut created = None;
        for field in ["tenantId", "tenant"] {
            let body = json!({"name": tenant, field: tenant}).to_string();
            let (status, v) = call(&state, post("/auth/keys", Some(KEY), body)).await;
            if status == StatusCode::CREATED {
                created = v["key"].as_str().map(str::to_string);
                break;
            }
        }
        issued.push(created.expect("a key for the tenant"));
    }
    let b = issued.pop().expect("beta");
    let a = issued.pop().expect("alpha");
    (state, a, b)
}

#[tokio::test]
async fn the_master_key_sees_lists_and_deletes_every_tenants_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, a, b) = with_tenants(dir.path()).await;
    let write = |who: &str| format!("write /sandbox/owner {who}");
    for (key, id, who) in [
        (&a, "job-1", "alpha"),
        (&b, "job-1", "beta"),
        (&b, "job-2", "beta"),
    ] {
        let (status, v) = call(&state, run(key, &write(who), json!({"sessionId": id}))).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let listed = |v: &Value| -> Vec<(String, String)> {
        v["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .map(|s| {
                assert!(
                    s["isActive"].is_boolean() && s["lastAccessedAt"].is_string(),
                    "{s}"
                );
                (
                    s["tenantId"].as_str().expect("tenantId").to_string(),
                    s["id"].as_str().expect("id").to_string(),
                )
            })
            .collect()
    };
    let pair = |t: &str, i: &str| (t.to_string(), i.to_string());
    let (_, v) = call(&state, get("/sessions", KEY)).await;
    assert_eq!(
        listed(&v),
        [
            pair("alpha", "job-1"),
            pair("beta", "job-1"),
            pair("beta", "job-2")
        ]
    );
    // A database key sees only its tenant's.
    let (_, v) = call(&state, get("/sessions", &a)).await;
    assert_eq!(listed(&v), [pair("alpha", "job-1")]);

    let file = |q: &str| format!("/file?path=/sandbox/owner&{q}");
    // By id alone, the master key reaches the one tenant holding it…
    assert_eq!(
        call(&state, get(&file("sessionId=job-2"), KEY)).await,
        (StatusCode::OK, json!({"content": "YmV0YQ=="}))
    );
    // …and is told to choose when several do.
    let (status, v) = call(&state, get(&file("sessionId=job-1"), KEY)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(
        error_of(&v).contains("(alpha, beta); name one with tenantId"),
        "{v}"
    );
    assert_eq!(
        call(&state, get(&file("sessionId=job-1&tenantId=alpha"), KEY)).await,
        (StatusCode::OK, json!({"content": "YWxwaGE="}))
    );
    let (status, v) = call(
        &state,
        run(
            KEY,
            "cat /sandbox/owner",
            json!({"sessionId": "job-1", "tenantId": "beta"}),
        ),
    )
    .await;
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("beta"))
    );
    let put =
        json!({"sessionId": "job-1", "tenantId": "alpha", "path": "/tmp/n", "content": "bg=="});
    assert_eq!(
        call(&state, post("/file", Some(KEY), put.to_string())).await,
        (StatusCode::OK, json!({"ok": true}))
    );

    // A database key naming another tenant is refused, on every route that takes one.
    let other = "tenantId: a database key addresses only its own tenant's sessions";
    for req in [
        get(&file("sessionId=job-1&tenantId=alpha"), &b),
        delete("/session/job-1?tenantId=alpha", &b),
        run(
            &b,
            "echo",
            json!({"sessionId": "job-1", "tenantId": "alpha"}),
        ),
        post(
            "/file",
            Some(&b),
            json!({"sessionId": "job-1", "tenantId": "alpha", "path": "x", "content": ""})
                .to_string(),
        ),
    ] {
        let (status, v) = call(&state, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert!(error_of(&v).starts_with(other), "{v}");
    }
    // Its own tenant named explicitly is fine.
    let (status, _) = call(&state, get(&file("sessionId=job-1&tenantId=beta"), &b)).await;
    assert_eq!(status, StatusCode::OK);

    // The master key deletes another tenant's session: by id alone when unambiguous,
    // else with tenantId.
    assert_eq!(
        call(&state, delete("/session/job-2", KEY)).await,
        (StatusCode::OK, json!({"ok": true}))
    );
    let (status, _) = call(&state, delete("/session/job-1", KEY)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = call(&state, delete("/session/job-1?tenantId=alpha", KEY)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, v) = call(&state, get("/sessions", KEY)).await;
    assert_eq!(listed(&v), [pair("beta", "job-1")]);
    // Now job-1 is beta's alone: the master key reaches it by id.
    let (_, v) = call(
        &state,
        run(KEY, "cat /sandbox/owner", json!({"sessionId": "job-1"})),
    )
    .await;
    assert_eq!(v["stdout"], "beta");
    // A new id used by the master key is the master tenant's own.
    let (status, _) = call(&state, run(KEY, "echo", json!({"sessionId": "mine"}))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, v) = call(&state, get("/sessions", KEY)).await;
    assert_eq!(
        listed(&v),
        [pair("beta", "job-1"), pair(crate::MASTER_TENANT, "mine")]
    );
    let (_, v) = call(&state, get("/sessions", &b)).await;
    assert_eq!(listed(&v), [pair("beta", "job-1")]);
    // A tenantId that cannot be one.
    let (status, v) = call(&state, delete("/session/x?tenantId=", KEY)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}

#[test]
fn the_authorization_header_is_read_as_the_reference_reads_it() {
    for (header, key) in [
        ("Bearer k-1", "k-1"),
        ("bearer k-1", "k-1"),
        ("BEARER k-1", "k-1"),
        ("BeArEr \t  k-1", "k-1"),
        ("k-1", "k-1"),
        ("Basic k-1", "Basic k-1"),
        ("Bearerk-1", "Bearerk-1"),
        ("Bearer", "Bearer"),
        ("Bear", "Bear"),
        ("", ""),
    ] {
        assert_eq!(bearer_token(header), key, "{header:?}");
    }
}

#[tokio::test]
async fn authorization_schemes_and_bodies_without_a_content_type_are_served() {
    let s = server();
    let body = json!({"request": {"runtime": "bash", "code": "echo hi"}}).to_string();
    for (auth, want) in [
        (format!("bearer {KEY}"), StatusCode::OK),
        (format!("BEARER   {KEY}"), StatusCode::OK),
        (KEY.to_string(), StatusCode::OK),
        (format!("Basic {KEY}"), StatusCode::FORBIDDEN),
        (format!("Bearer{KEY}"), StatusCode::FORBIDDEN),
    ] {
        // No Content-Type at all, as a bare `fetch` with a string body sends.
        let req = Request::post("/execute")
            .header("authorization", &auth)
            .body(Body::from(body.clone()))
            .expect("req");
        let (status, v) = call(&s.state, req).await;
        assert_eq!(status, want, "{auth}: {v}");
        if want == StatusCode::OK {
            assert_eq!(v["stdout"], "hi\n");
        }
    }
    // The other JSON routes too, whatever the content type.
    let (status, _) = call(&s.state, run(KEY, "echo", json!({"sessionId": "s"}))).await;
    assert_eq!(status, StatusCode::OK);
    for (path, body) in [
        (
            "/file",
            json!({"sessionId": "s", "path": "/sandbox/a", "content": "aGk="}).to_string(),
        ),
        ("/cleanup", json!({"images": false}).to_string()),
        ("/execute/stream", body.clone()),
    ] {
        let req = Request::post(path)
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "text/plain;charset=UTF-8")
            .body(Body::from(body))
            .expect("req");
        let (status, v) = call(&s.state, req).await;
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
    }
    // Still JSON: anything else is 400.
    let req = Request::post("/execute")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::from("runtime=bash&code=echo"))
        .expect("req");
    let (status, v) = call(&s.state, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn files_and_output_paths_may_be_in_tmp_and_dev_shm_but_never_escape() {
    let s = server();
    let (status, v) = call(
        &s.state,
        run(
            KEY,
            "echo",
            json!({"sessionId": "f", "request": {
                "runtime": "bash", "code": "echo",
                "files": {"/tmp/in.txt": "a", "/dev/shm/seg": "b", "rel.txt": "c"},
                "outputPaths": ["/tmp/out.txt", "/dev/shm/out"],
            }}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    for path in ["/tmp/x.bin", "/dev/shm/x", "/sandbox/x", "x"] {
        let put = json!({"sessionId": "f", "path": path, "content": "aGk="});
        assert_eq!(
            call(&s.state, post("/file", Some(KEY), put.to_string())).await,
            (StatusCode::OK, json!({"ok": true})),
            "{path}"
        );
        let (status, v) = call(
            &s.state,
            get(&format!("/file?sessionId=f&path={path}"), KEY),
        )
        .await;
        assert_eq!(
            (status, v),
            (StatusCode::OK, json!({"content": "aGk="})),
            "{path}"
        );
    }
    // Escapes from each directory, its own name, and near misses: refused before the
    // engine is asked.
    for path in [
        "/tmp/../etc/passwd",
        "/dev/shm/../../etc/passwd",
        "/sandbox/../../proc/1/environ",
        "../etc/passwd",
        "/tmp",
        "/dev/shm",
        "/dev/mqueue/q",
        "/tmpx/a",
        "/etc/hosts",
    ] {
        let put = json!({"sessionId": "f", "path": path, "content": "aGk="});
        let (status, v) = call(&s.state, post("/file", Some(KEY), put.to_string())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {v}");
        let (status, v) = call(
            &s.state,
            run(
                KEY,
                "echo",
                json!({"request": {"runtime": "bash", "code": "echo", "outputPaths": [path]}}),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert!(error_of(&v).starts_with("output path"), "{v}");
        let (status, v) = call(
            &s.state,
            run(
                KEY,
                "echo",
                json!({"request": {"runtime": "bash", "code": "echo", "files": {path: "x"}}}),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {v}");
    }
    // The working directory stays in /sandbox.
    let (status, v) = call(
        &s.state,
        run(
            KEY,
            "echo",
            json!({"request": {"runtime": "bash", "code": "echo", "workdir": "/tmp"}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn exit_and_error_events_carry_their_phase_on_every_stream() {
    let s = server();
    for (code, want) in [
        (
            "echo hi\nexit 3",
            vec![json!({"type": "exit", "data": "3", "phase": "code"})],
        ),
        (
            "break",
            vec![
                json!({"type": "error", "phase": "code"}),
                json!({"type": "exit", "data": "1", "phase": "code"}),
            ],
        ),
    ] {
        let body = json!({"request": {"runtime": "bash", "code": code}}).to_string();
        let req = post("/execute/stream", Some(KEY), body);
        let resp = tower::ServiceExt::oneshot(crate::app(s.state.clone()), req)
            .await
            .expect("infallible");
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes();
        let closing: Vec<Value> = String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str::<Value>(d).expect("event"))
            .filter(|e| e["type"] == "exit" || e["type"] == "error")
            .map(|mut e| {
                if e["type"] == "error" {
                    // The message is the server's (no internals); the shape is checked.
                    assert!(e["data"].is_string(), "{e}");
                    e.as_object_mut().map(|o| o.remove("data"));
                }
                e
            })
            .collect();
        assert_eq!(closing, want, "{code}");
    }
}

#[tokio::test]
async fn a_websocket_execute_names_the_tenant_of_its_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, a, b) = with_tenants(dir.path()).await;
    for (key, who) in [(&a, "alpha"), (&b, "beta")] {
        let code = format!("write /sandbox/owner {who}");
        let (status, v) = call(&state, run(key, &code, json!({"sessionId": "job-1"}))).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let url = super::stream::listen(&state).await;
    let message = |tenant: Option<&str>| {
        let mut m = json!({"type": "execute", "sessionId": "job-1",
            "request": {"runtime": "bash", "code": "cat /sandbox/owner"}});
        if let Some(t) = tenant {
            m["tenantId"] = json!(t);
        }
        m
    };
    // The master key names each tenant's `job-1` with `tenantId`…
    for who in ["alpha", "beta"] {
        let mut ws = super::stream::connect(&url).await;
        super::stream::send(&mut ws, message(Some(who))).await;
        let (events, _) = super::stream::drain_close(&mut ws).await;
        assert_eq!(events[0]["type"], "stdout", "{events:?}");
        assert_eq!(events[0]["data"], who, "{events:?}");
    }
    // …and without it, where two tenants hold the id, is told to choose.
    let mut ws = super::stream::connect(&url).await;
    super::stream::send(&mut ws, message(None)).await;
    let (events, _) = super::stream::drain_close(&mut ws).await;
    assert!(
        events.iter().any(|e| e["type"] == "error"
            && e["data"]
                .as_str()
                .is_some_and(|d| d.contains("name one with tenantId"))),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e["type"] == "exit"), "{events:?}");
}
