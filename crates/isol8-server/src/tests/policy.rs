//! The server policy through the router, over the fake: refusals are 400s naming the
//! field and the cap, before anything runs.

use axum::http::StatusCode;
use serde_json::json;

use super::{call, error_of, post, server_with, KEY};
use crate::ServerSettings;

#[tokio::test]
async fn the_server_policy_caps_what_clients_ask_for_before_anything_runs() {
    let policy = isol8::config::ServerPolicy {
        max_timeout_ms: Some(2000),
        ..Default::default()
    };
    let mut options = isol8::EngineOptions::default();
    crate::policy::bound_defaults(&policy, &mut options).expect("valid policy");
    let s = server_with(
        options,
        ServerSettings {
            policy,
            ..Default::default()
        },
    );
    let cases = [
        (
            json!({"request": {"runtime": "bash", "code": "echo", "timeoutMs": 60000}}),
            "request.timeoutMs 60000 exceeds the server's limit of 2000 ms",
        ),
        (
            json!({"request": {"runtime": "bash", "code": "echo"}, "options": {"network": "host"}}),
            "options.network `host` is not allowed by this server",
        ),
        (
            json!({"request": {"runtime": "bash", "code": "echo"}, "options": {"image": "alpine"}}),
            "options.image: this server does not accept custom images",
        ),
        (
            json!({"request": {"runtime": "bash", "code": "echo"}, "options": {"security": {"seccomp": "unconfined"}}}),
            "options.security.seccomp `unconfined` is not allowed by this server (it uses `strict`)",
        ),
        (
            json!({"request": {"runtime": "bash", "code": "echo"}, "options": {"memoryLimit": "2g"}}),
            "options.memoryLimit 2g exceeds the server's limit of 512m",
        ),
        (
            // Refused in a session too: the policy sees the client's options first.
            json!({"request": {"runtime": "bash", "code": "echo"}, "options": {"network": "host"}, "sessionId": "s"}),
            "options.network `host`",
        ),
    ];
    for (body, want) in cases {
        let (status, v) = call(&s.state, post("/execute", Some(KEY), body.to_string())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(error_of(&v).starts_with(want), "{v}");
        let (status, _) = call(
            &s.state,
            post("/execute/stream", Some(KEY), body.to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "streamed too");
    }
    assert!(s.fake.seen.lock().expect("lock").is_empty(), "nothing ran");
    assert!(s.fake.sessions().is_empty(), "no session was created");
    let ok = json!({"request": {"runtime": "bash", "code": "echo fine", "timeoutMs": 1500}});
    let (status, v) = call(&s.state, post("/execute", Some(KEY), ok.to_string())).await;
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("fine\n")),
        "{v}"
    );
}
