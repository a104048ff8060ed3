//! The server policy against a real engine: what a client leaves out or sends empty
//! cannot remove what the operator set, and a server without `serverPolicy` still caps
//! every limit (and so its own memory).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use isol8::EngineOptions;
use isol8_protocol::options::SecurityOptions;
use isol8_server::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

const KEY: &str = "test-master-key-0123456789";

/// A runtime the daemon knows under a name other than its default (`runc`): a container
/// created with it reports it in `HostConfig.Runtime`, one created without it `runc`.
const OPERATOR_RUNTIME: &str = "io.containerd.runc.v2";

async fn call(state: &Arc<AppState>, body: Value) -> (StatusCode, Value) {
    let req = Request::post("/execute")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = app(state.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, value)
}

/// A server whose operator options are `options` and which has no `serverPolicy`.
async fn server(options: EngineOptions) -> Arc<AppState> {
    let engine = isol8_testkit::engine(options.clone()).await;
    AppState::new(engine, options, KEY.into())
}

async fn runtime_of(_state: &AppState, container: &str) -> Option<String> {
    isol8::docker::connect()
        .await
        .expect("the daemon the server uses")
        .inspect_container(container, None)
        .await
        .expect("inspect the run's container")
        .host_config
        .and_then(|h| h.runtime)
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn an_empty_client_security_object_keeps_the_operators_oci_runtime() {
    let operator = EngineOptions {
        security: Some(SecurityOptions {
            runtime: Some(OPERATOR_RUNTIME.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let state = server(operator).await;
    // Each of these used to replace the operator's whole `security` object (or filter):
    // the run then went to the daemon's default runtime.
    for options in [
        json!({"security": {}}),
        json!({"security": {"seccomp": "strict"}}),
        json!({"security": {}, "networkFilter": {}, "memoryLimit": "256m"}),
        json!({"security": {"runtime": OPERATOR_RUNTIME}}),
    ] {
        let (status, v) = call(
            &state,
            json!({"request": {"runtime": "bash", "code": "echo ran"}, "options": options}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{options}: {v}");
        assert_eq!(v["stdout"], "ran\n");
        let id = v["containerId"].as_str().expect("containerId");
        // The container is pooled after the run, so Docker still describes it.
        assert_eq!(
            runtime_of(&state, id).await.as_deref(),
            Some(OPERATOR_RUNTIME),
            "{options}: the run left the operator's runtime"
        );
    }
    // Naming another runtime (the daemon's default included) is refused outright.
    for runtime in ["runc", "kata"] {
        let (status, v) = call(
            &state,
            json!({"request": {"runtime": "bash", "code": "echo ran"},
                   "options": {"security": {"runtime": runtime}}}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("security.runtime")),
            "{v}"
        );
    }
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn without_a_policy_every_limit_is_capped_at_the_servers_own() {
    let state = server(EngineOptions::default()).await;
    let run = |options: Value| json!({"request": {"runtime": "bash", "code": "true"}, "options": options});
    let cases = [
        (
            run(json!({"memoryLimit": "16g"})),
            "options.memoryLimit 16g exceeds the server's limit of 512m",
        ),
        (
            run(json!({"cpuLimit": 64})),
            "options.cpuLimit 64 exceeds the server's limit of 1",
        ),
        (
            run(json!({"pidsLimit": 100000})),
            "options.pidsLimit 100000 exceeds the server's limit of 64",
        ),
        (
            run(json!({"maxOutputSize": 1_099_511_627_776_u64})),
            "limit of 1048576 bytes",
        ),
        (
            run(json!({"timeoutMs": 86_400_000})),
            "options.timeoutMs 86400000 exceeds the server's limit of 30000 ms",
        ),
        (
            run(json!({"sandboxSize": "64g"})),
            "options.sandboxSize 64g exceeds",
        ),
        (
            json!({"request": {"runtime": "bash", "code": "true", "timeoutMs": 86_400_000}}),
            "request.timeoutMs 86400000 exceeds the server's limit of 30000 ms",
        ),
        // Values that would reach Docker as "no limit".
        (run(json!({"cpuLimit": 4e-10})), "cpuLimit"),
        (run(json!({"pidsLimit": 0})), "pidsLimit"),
        (run(json!({"pidsLimit": -1})), "pidsLimit"),
        (run(json!({"memoryLimit": "0"})), "memoryLimit"),
        (run(json!({"maxOutputSize": 0})), "maxOutputSize"),
        (run(json!({"timeoutMs": 0})), "timeoutMs"),
    ];
    for (body, want) in cases {
        let (status, v) = call(&state, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(want)),
            "{body}: {v}"
        );
    }
    // Narrowing is fine and takes effect.
    let (status, v) = call(
        &state,
        json!({"request": {"runtime": "bash", "code": "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max"},
               "options": {"pidsLimit": 32, "cpuLimit": 0.01, "memoryLimit": "64m"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["stdout"], "32\n", "{v}");
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_flood_of_output_leaves_the_servers_memory_bounded_by_the_cap() {
    let state = server(EngineOptions::default()).await;
    // A client asking for a 1 TiB output cap is refused, so 800 MiB of output is cut at
    // the server's 1 MiB and never held whole.
    let body = |options: Value| {
        json!({"request": {"runtime": "bash", "timeoutMs": 30000,
            "code": "head -c 838860800 /dev/zero | tr '\\0' x"}, "options": options})
    };
    let (status, _) = call(&state, body(json!({"maxOutputSize": 1_u64 << 40}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let before = isol8_testkit::peak_rss_mb();
    let (status, v) = call(&state, body(json!({}))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        &v.to_string()[..200.min(v.to_string().len())]
    );
    let stdout = v["stdout"].as_str().expect("stdout");
    assert!(stdout.len() < 1_100_000, "{} bytes", stdout.len());
    assert!(
        stdout.contains("--- OUTPUT TRUNCATED (838860800 bytes, limit: 1048576) ---"),
        "{}",
        &stdout[stdout.len().saturating_sub(200)..]
    );
    assert_eq!(v["truncated"], true);
    let grown = isol8_testkit::peak_rss_mb() - before;
    assert!(
        grown < 64.0,
        "server memory grew by {grown} MiB for 800 MiB of output"
    );
    state.shutdown().await;
}
