//! Audit records of the server's executions: the real engine on the in-memory daemon
//! (`isol8::docker::backend::fake`) with an audit log, behind the whole router. Every
//! route's records name the caller's tenant and key id (and the session), the record's
//! execution id is the result's, and a request the server's policy refuses is recorded
//! as refused with its caller.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use futures_util::{SinkExt, StreamExt};
use isol8::audit::{AuditLog, AuditSettings, SystemClock};
use isol8::config::{AuditConfig, AuditDestination};
use isol8::docker::backend::fake::FakeDocker;
use isol8::docker::EngineConfig;
use isol8::DockerEngine;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::{call, post, KEY};
use crate::keys::{self, Keys};
use crate::{AppState, ServerSettings};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buf").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Audited {
    state: Arc<AppState>,
    log: AuditLog,
    out: Buf,
    _dir: tempfile::TempDir,
}

impl Audited {
    /// The records written so far.
    async fn records(&self) -> Vec<Value> {
        self.log.flush().await;
        String::from_utf8(self.out.0.lock().expect("buf").clone())
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

/// A server over the engine on the fake daemon, auditing to a captured stdout, with a
/// key store.
async fn audited_server() -> Audited {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Buf::default();
    let settings = AuditSettings {
        destination: AuditDestination::Stdout,
        ..AuditSettings::resolve(&AuditConfig {
            enabled: Some(true),
            log_dir: Some("/nonexistent".into()),
            ..Default::default()
        })
        .expect("valid")
        .expect("on")
    };
    let log = AuditLog::start(settings, Arc::new(SystemClock), Some(Box::new(out.clone())))
        .expect("audit log");
    let engine = DockerEngine::with_backend(
        Arc::new(FakeDocker::new()),
        EngineConfig {
            audit_log: Some(log.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("engine on the fake daemon");
    let store = keys::open(dir.path().join("auth.db").to_str().expect("utf-8"))
        .await
        .expect("key store");
    let state = AppState::with_settings(
        engine,
        Default::default(),
        KEY.into(),
        ServerSettings {
            keys: Some(Keys::new(store, None)),
            ..Default::default()
        },
    );
    Audited {
        state,
        log,
        out,
        _dir: dir,
    }
}

/// A database key of `tenant`: (key, id).
async fn key_of(state: &Arc<AppState>, tenant: &str) -> (String, String) {
    let body = json!({"name": "audit", "tenant": tenant}).to_string();
    let (status, v) = call(state, post("/auth/keys", Some(KEY), body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    (
        v["key"].as_str().expect("key").to_string(),
        v["id"].as_str().expect("id").to_string(),
    )
}

#[tokio::test]
async fn records_name_the_tenant_and_key_of_every_route_and_policy_refusals() {
    let s = audited_server().await;
    let (key, key_id) = key_of(&s.state, "acme").await;

    // Buffered, master key.
    let body = json!({"request": {"runtime": "bash", "code": "echo m"}}).to_string();
    let (status, master_result) = call(&s.state, post("/execute", Some(KEY), body)).await;
    assert_eq!(status, StatusCode::OK, "{master_result}");

    // Buffered in a session, database key.
    let body =
        json!({"request": {"runtime": "bash", "code": "exit 2"}, "sessionId": "s1"}).to_string();
    let (status, session_result) = call(&s.state, post("/execute", Some(&key), body)).await;
    assert_eq!(status, StatusCode::OK, "{session_result}");

    // Server-sent events, database key; metadata that claims another caller.
    let body = json!({"request": {"runtime": "bash", "code": "echo sse",
        "metadata": {"tenant": "other", "keyId": "forged"}}})
    .to_string();
    let (status, _) = call(&s.state, post("/execute/stream", Some(&key), body)).await;
    assert_eq!(status, StatusCode::OK);

    // Refused by the server's policy (host networking): the engine never saw it.
    let body = json!({
        "request": {"runtime": "bash", "code": "echo no", "metadata": {"userId": "u1"}},
        "options": {"network": "host"}
    })
    .to_string();
    let (status, refused) = call(&s.state, post("/execute", Some(&key), body)).await;
    assert!(status.is_client_error(), "{status} {refused}");

    // WebSocket, database key.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = crate::app(s.state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut req = format!("ws://{addr}/execute/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    req.headers_mut()
        .insert("x-request-id", "client-req-1".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    let msg = json!({"type": "execute", "request": {"runtime": "bash", "code": "echo ws"}});
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .expect("send");
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await
    .expect("the server closes the socket");

    let recs = s.records().await;
    assert_eq!(recs.len(), 5, "{recs:#?}");
    let by_code = |code: &str| -> &Value {
        let hash = isol8::audit::sha256_hex(code);
        recs.iter()
            .find(|r| r["codeHash"] == hash.as_str())
            .unwrap_or_else(|| panic!("no record of {code:?}: {recs:#?}"))
    };
    let m = by_code("echo m");
    assert_eq!(m["tenant"], "master");
    assert!(m.get("keyId").is_none(), "{m}");
    assert_eq!(m["executionId"], master_result["executionId"]);
    assert_eq!(m["outcome"], "completed");

    let sess = by_code("exit 2");
    assert_eq!(sess["tenant"], "acme");
    assert_eq!(sess["keyId"], key_id.as_str());
    assert_eq!(sess["sessionId"], "s1");
    assert_eq!(sess["exitCode"], 2);
    assert_eq!(sess["executionId"], session_result["executionId"]);

    let sse = by_code("echo sse");
    assert_eq!(sse["tenant"], "acme");
    assert_eq!(sse["keyId"], key_id.as_str());
    assert_eq!(sse["outcome"], "completed");
    // The caller is the authenticated key's: client metadata stays under `metadata`.
    assert_eq!(sse["metadata"]["tenant"], "other");
    assert_eq!(sse["metadata"]["keyId"], "forged");

    let no = by_code("echo no");
    assert_eq!(no["outcome"], "refused");
    assert_eq!(no["tenant"], "acme");
    assert_eq!(no["keyId"], key_id.as_str());
    assert_eq!(no["userId"], "u1");
    assert_eq!(no["error"], refused["error"], "the message the client got");
    assert_eq!(no["network"]["mode"], "host");

    let ws_rec = by_code("echo ws");
    assert_eq!(ws_rec["tenant"], "acme");
    assert_eq!(ws_rec["keyId"], key_id.as_str());
    assert_eq!(ws_rec["requestId"], "client-req-1");
    assert_eq!(ws_rec["outcome"], "completed");
}
