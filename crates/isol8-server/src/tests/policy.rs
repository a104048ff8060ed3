//! The server policy through the router, over the fake: refusals are 400s naming the
//! field and the cap, before anything runs.

use axum::http::StatusCode;
use serde_json::json;

use super::{call, error_of, post, server_with, KEY};
use crate::ServerSettings;

/// A server over the fake whose operator set `policy` (its defaults bounded by it, as
/// `isol8 serve` does).
fn under(policy: isol8::config::ServerPolicy) -> super::Server {
    let mut options = isol8::EngineOptions::default();
    crate::policy::bound_defaults(&policy, &mut options).expect("valid policy");
    server_with(
        options,
        ServerSettings {
            policy,
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn the_server_policy_caps_what_clients_ask_for_before_anything_runs() {
    let policy = isol8::config::ServerPolicy {
        max_timeout_ms: Some(2000),
        ..Default::default()
    };
    let s = under(policy);
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

#[tokio::test]
async fn agent_runs_get_the_agent_rules_and_defaults_before_anything_runs() {
    // A server that allows no host network and caps processes below the agent's default.
    let policy = isol8::config::ServerPolicy {
        max_pids_limit: Some(150),
        ..Default::default()
    };
    let s = under(policy);
    let filtered = json!({"network": "filtered", "networkFilter": {"whitelist": ["^api\\.example\\.com$"], "blacklist": []}});
    let cases = [
        (
            json!({"request": {"runtime": "agent", "code": "fix it"}, "options": {"pidsLimit": 100}}),
            "the agent runtime needs network access",
        ),
        (
            json!({"request": {"runtime": "agent", "code": "fix it"}, "options": {"network": "filtered", "pidsLimit": 100}}),
            "the agent runtime on the `filtered` network needs at least one whitelist entry",
        ),
        (
            json!({"request": {"runtime": "agent", "code": "fix it"}, "options": {"network": "host", "pidsLimit": 100}}),
            "options.network `host` is not allowed by this server",
        ),
        (
            // The agent's default of 200 processes is over this server's cap.
            json!({"request": {"runtime": "agent", "code": "fix it"}, "options": filtered}),
            "options.pidsLimit 200 exceeds the server's limit of 150",
        ),
        (
            json!({"request": {"runtime": "agent", "code": "fix it", "agentFlags": "--model 'x"}, "options": {"network": "filtered", "networkFilter": {"whitelist": ["^a$"], "blacklist": []}, "pidsLimit": 100}}),
            "agentFlags `--model 'x` cannot be split",
        ),
    ];
    for (body, want) in cases {
        let (status, v) = call(&s.state, post("/execute", Some(KEY), body.to_string())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(error_of(&v).contains(want), "{want}: {v}");
    }
    assert!(s.fake.seen.lock().expect("lock").is_empty(), "nothing ran");
    // Within the cap, with a whitelist: it runs (the fake runs the prompt as its script).
    let ok = json!({"request": {"runtime": "agent", "code": "echo agent", "agentFlags": "--model stub/m"},
        "options": {"network": "filtered", "networkFilter": {"whitelist": ["^api\\.example\\.com$"], "blacklist": []}, "pidsLimit": 150}});
    let (status, v) = call(&s.state, post("/execute", Some(KEY), ok.to_string())).await;
    assert_eq!(
        (status, v["stdout"].as_str()),
        (StatusCode::OK, Some("agent\n")),
        "{v}"
    );
    // Other runtimes keep the general default (64), under the cap.
    let py = json!({"request": {"runtime": "bash", "code": "echo fine"}});
    let (status, v) = call(&s.state, post("/execute", Some(KEY), py.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{v}");
}
