//! `isol8 serve`'s log and traces as an operator's tools read them, on the real binary
//! against the real daemon: `--log-format json` lines (every line one JSON object, the
//! lines of an execution carrying its id, runtime, container and tenant), and the
//! OpenTelemetry export to an OTLP/HTTP receiver this test runs on loopback (spans of
//! the request and of its execution, flushed at shutdown; nothing exported, no exporter
//! thread, without the variable).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::serve::Server;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use serde_json::{json, Value};

/// Reads the server's log lines until one contains `needle` (at most `within`);
/// returns every line read.
fn lines_until(s: &Server, needle: &str, within: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match s.log.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(needle);
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Err(e) => panic!("no `{needle}` in the server's log ({e}): {seen:#?}"),
        }
    }
}

#[isol8_testkit::test(docker)]
fn json_log_lines_carry_the_execution_and_request_they_belong_to() {
    let s = Server::start_full(
        None,
        &["--log-format", "json"],
        &[("RUST_LOG", "info,isol8=debug")],
    );
    let (status, r) = s.post(
        "/execute",
        json!({"request": {"runtime": "python", "code": "print(6*7)"}}),
    );
    assert_eq!((status, r["stdout"].as_str()), (200, Some("42\n")), "{r}");
    let id = r["executionId"].as_str().expect("executionId").to_string();
    let container = r["containerId"].as_str().expect("containerId").to_string();
    let lines = lines_until(&s, "request answered", Duration::from_secs(60));
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for v in &parsed {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v[key].is_string(), "no {key}: {v}");
        }
        assert!(v["fields"].is_object() && v["span"].is_object(), "{v}");
        assert!(v["spans"].is_array(), "{v}");
    }
    let in_execution: Vec<&Value> = parsed
        .iter()
        .filter(|v| v["span"]["execution_id"] == id.as_str())
        .collect();
    let messages: Vec<&str> = in_execution
        .iter()
        .filter_map(|v| v["message"].as_str())
        .collect();
    assert!(
        messages.contains(&"sandbox acquired") && messages.contains(&"execution finished"),
        "{parsed:#?}"
    );
    for v in &in_execution {
        let span = &v["span"];
        assert_eq!(span["runtime"], "python", "{v}");
        assert_eq!(span["tenant"], "master", "{v}");
        assert_eq!(span["route"], "/execute", "{v}");
        assert_eq!(span["method"], "POST", "{v}");
        // The request's id is the execution's: a 5xx names the id the log has.
        assert_eq!(span["request_id"], id.as_str(), "{v}");
        assert_eq!(v["spans"], json!(["request", "execution"]), "{v}");
        if v["message"] == "execution finished" {
            assert_eq!(span["container_id"], container.as_str(), "{v}");
            assert_eq!(v["fields"]["exit_code"], 0, "{v}");
        }
    }
    // Every engine line logged while the execution ran is in its span.
    let first = parsed
        .iter()
        .position(|v| v["message"] == "sandbox acquired")
        .expect("acquired");
    let last = parsed
        .iter()
        .position(|v| v["message"] == "execution finished")
        .expect("finished");
    for v in &parsed[first..=last] {
        let target = v["target"].as_str().unwrap_or("");
        if target.starts_with("isol8::") && target != "isol8::docker::watch" {
            assert_eq!(v["span"]["execution_id"], id.as_str(), "{v}");
        }
    }
    let answered = parsed.last().expect("answer line");
    assert_eq!(answered["fields"]["status"], 200, "{answered}");
    assert_eq!(answered["span"]["request_id"], id.as_str(), "{answered}");

    // Over the WebSocket route (what `isol8 run --host` uses): the socket is served in a
    // task of its own, still inside the request's span and with its tenant.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_isol8"))
        .args(["run", "--host", &s.base, "-r", "bash", "-e", "echo over-ws"])
        .env("ISOL8_API_KEY", common::serve::KEY)
        .output()
        .expect("isol8 run --host");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over-ws\n", "{out:?}");
    let lines = lines_until(&s, "execution finished", Duration::from_secs(60));
    let finished: Value = serde_json::from_str(lines.last().expect("line")).expect("JSON");
    let span = &finished["span"];
    assert_eq!(span["route"], "/execute/ws", "{finished}");
    assert_eq!(span["tenant"], "master", "{finished}");
    assert_eq!(span["runtime"], "bash", "{finished}");
    assert_eq!(span["request_id"], span["execution_id"], "{finished}");
    assert_ne!(span["execution_id"], id.as_str(), "{finished}");
    s.stop();
}

/// What the receiver got: every span of every export, with the resource's service name.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

fn text_of(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP/HTTP receiver on loopback (`POST /v1/traces`, protobuf), on a thread of its
/// own; returns its base URL and what it received.
fn otlp_receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let sink = got.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let sink = sink.clone();
                    async move {
                        let req = ExportTraceServiceRequest::decode(body.as_ref())
                            .expect("an OTLP protobuf export");
                        let mut got = sink.lock().expect("lock");
                        for rs in req.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| r.attributes.iter())
                                .find(|kv| kv.key == "service.name")
                                .map(text_of)
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for span in ss.spans {
                                    got.push(Received {
                                        service: service.clone(),
                                        name: span.name.clone(),
                                        trace_id: span.trace_id.clone(),
                                        span_id: span.span_id.clone(),
                                        parent_span_id: span.parent_span_id.clone(),
                                        attributes: span
                                            .attributes
                                            .iter()
                                            .map(|kv| (kv.key.clone(), text_of(kv)))
                                            .collect(),
                                    });
                                }
                            }
                        }
                        // An empty ExportTraceServiceResponse.
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                            Vec::<u8>::new(),
                        )
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app).await.expect("receiver");
        });
    });
    (base, got)
}

/// The names of the threads of process `pid` (Linux truncates them to 15 bytes).
fn threads_of(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

#[isol8_testkit::test(docker)]
fn spans_of_the_request_and_its_execution_reach_an_otlp_receiver_flushed_at_shutdown() {
    let (endpoint, got) = otlp_receiver();
    // A batch delay far past the test: what arrives was flushed by the shutdown.
    let s = Server::start_full(
        None,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    assert!(
        threads_of(s.child.id())
            .iter()
            .any(|t| t.starts_with("OpenTelemetry")),
        "no exporter thread: {:?}",
        threads_of(s.child.id())
    );
    let (status, r) = s.post(
        "/execute",
        json!({"request": {"runtime": "bash", "code": "echo traced"}}),
    );
    assert_eq!(
        (status, r["stdout"].as_str()),
        (200, Some("traced\n")),
        "{r}"
    );
    let id = r["executionId"].as_str().expect("executionId").to_string();
    s.stop();
    let spans = got.lock().expect("lock").clone();
    let execution = spans
        .iter()
        .find(|s| s.name == "execution" && s.attributes.get("execution_id") == Some(&id))
        .unwrap_or_else(|| panic!("no execution span for {id}: {spans:#?}"));
    assert_eq!(execution.attributes["runtime"], "bash", "{execution:?}");
    assert_eq!(execution.attributes["tenant"], "master", "{execution:?}");
    assert_eq!(
        Some(&execution.attributes["container_id"]),
        r["containerId"].as_str().map(str::to_string).as_ref(),
        "{execution:?}"
    );
    let request = spans
        .iter()
        .find(|s| s.name == "request" && s.attributes.get("request_id") == Some(&id))
        .unwrap_or_else(|| panic!("no request span for {id}: {spans:#?}"));
    assert_eq!(request.attributes["route"], "/execute", "{request:?}");
    assert_eq!(request.attributes["method"], "POST", "{request:?}");
    assert_eq!(request.attributes["status"], "200", "{request:?}");
    assert_eq!(execution.trace_id, request.trace_id, "one trace");
    assert_eq!(
        execution.parent_span_id, request.span_id,
        "the request's child"
    );
    assert!(spans.iter().all(|s| s.service == "isol8"), "{spans:#?}");

    // OTEL_SERVICE_NAME names the service instead.
    let (endpoint, got) = otlp_receiver();
    let s = Server::start_full(
        None,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "sandbox-eu"),
        ],
    );
    let (status, _) = s.post(
        "/execute",
        json!({"request": {"runtime": "bash", "code": "echo named"}}),
    );
    assert_eq!(status, 200);
    s.stop();
    let spans = got.lock().expect("lock").clone();
    assert!(!spans.is_empty());
    assert!(
        spans.iter().all(|s| s.service == "sandbox-eu"),
        "{spans:#?}"
    );
}

#[isol8_testkit::test(docker)]
fn without_the_endpoint_variable_there_is_no_exporter_thread() {
    let s = Server::start_full(None, &[], &[("OTEL_SERVICE_NAME", "unused")]);
    let (status, _) = s.post(
        "/execute",
        json!({"request": {"runtime": "bash", "code": "echo quiet"}}),
    );
    assert_eq!(status, 200);
    let threads = threads_of(s.child.id());
    assert!(
        !threads
            .iter()
            .any(|t| t.starts_with("OpenTelemetry") || t.starts_with("reqwest-intern")),
        "{threads:?}"
    );
    s.stop();
}
