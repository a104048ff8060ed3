//! Unit tests of the remote client: decoding server-sent events, and checking its URL
//! and key.

use futures_util::StreamExt;

use super::*;

/// The events decoded from server-sent-event bytes arriving in `chunks`.
async fn decoded(chunks: &[&str]) -> Vec<StreamEvent> {
    let bytes = futures_util::stream::iter(
        chunks
            .iter()
            .map(|c| Ok::<_, std::io::Error>(std::io::Cursor::new(c.as_bytes().to_vec())))
            .collect::<Vec<_>>(),
    );
    sse_stream_events(sse_stream::SseByteStream::new(bytes))
        .collect()
        .await
}

fn event(kind: isol8_protocol::StreamEventType, data: &str) -> StreamEvent {
    StreamEvent {
        kind,
        data: data.into(),
        phase: None,
        resource_usage: None,
        exit_reason: None,
    }
}

#[tokio::test]
async fn server_sent_events_are_split_on_blank_lines() {
    use isol8_protocol::StreamEventType::{Exit, Stdout};
    // Events split across chunks, a keep-alive comment, and an event after `exit`
    // that is never read.
    let events = decoded(&[
        "data: {\"type\":\"stdout\",\"data\":\"a\"}\n\ndata: {\"type\":\"stdout\",",
        "\"data\":\"b\"}\n\n: keep-alive\n\ndata: {\"type\":\"exit\",\"data\":\"0\"}\n\n",
        "data: {\"type\":\"stdout\",\"data\":\"late\"}\n\n",
    ])
    .await;
    assert_eq!(
        events,
        vec![event(Stdout, "a"), event(Stdout, "b"), event(Exit, "0")]
    );
}

#[tokio::test]
async fn a_stream_cut_before_exit_ends_with_one_error_and_no_exit() {
    use isol8_protocol::StreamEventType::{Error, Stdout};
    // Cut mid-run (and mid-event): the client says so.
    let events = decoded(&["data: {\"type\":\"stdout\",\"data\":\"a\"}\n\ndata: {\"ty"]).await;
    assert_eq!(
        events,
        vec![
            event(Stdout, "a"),
            event(Error, "the server closed the stream early")
        ]
    );
    // Cut after the server's own error (a lost sandbox): nothing is added.
    let lost = "sandbox lost: the sandbox container stopped unexpectedly";
    let events = decoded(&[&format!(
        "data: {{\"type\":\"error\",\"data\":\"{lost}\"}}\n\n"
    )])
    .await;
    assert_eq!(events, vec![event(Error, lost)]);
}

#[test]
fn urls_and_keys_are_checked() {
    assert!(RemoteEngine::new("ftp://x", "k", None, EngineOptions::default()).is_err());
    assert!(RemoteEngine::new("http://x", "", None, EngineOptions::default()).is_err());
    assert!(RemoteEngine::new(
        "http://127.0.0.1:3000/",
        "k",
        None,
        EngineOptions::default()
    )
    .is_ok());
}

#[test]
fn stdin_chunks_keep_a_character_split_between_them_whole() {
    use super::ws::whole_utf8;
    // "é" (2 bytes) and "€" (3 bytes) cut across chunks.
    let text = "aé€z".as_bytes();
    let mut pending = Vec::new();
    let mut out = String::new();
    for chunk in [&text[..2], &text[2..4], &text[4..5], &text[5..]] {
        pending.extend_from_slice(chunk);
        out.push_str(&whole_utf8(&mut pending));
    }
    assert_eq!(out, "aé€z");
    assert!(pending.is_empty());
    // Invalid bytes become U+FFFD; a cut-off character waits.
    let mut pending = vec![b'x', 0xff, b'y', 0xe2, 0x82];
    assert_eq!(whole_utf8(&mut pending), "x\u{fffd}y");
    assert_eq!(pending, [0xe2, 0x82]);
}

#[tokio::test]
async fn the_exit_events_usage_and_reason_are_decoded_and_collected() {
    use isol8_protocol::{ExitReason, ResourceUsage, StreamEventType};
    let usage = ResourceUsage {
        cpu_percent: 12.5,
        memory_mb: 3.25,
        peak_memory_mb: 4.0,
        network_bytes_in: 100,
        network_bytes_out: 20,
    };
    let exit = r#"{"type":"exit","data":"139","phase":"code","resourceUsage":{"cpuPercent":12.5,"memoryMB":3.25,"peakMemoryMB":4.0,"networkBytesIn":100,"networkBytesOut":20},"exitReason":"signal"}"#;
    let events = decoded(&[
        "data: {\"type\":\"stdout\",\"data\":\"a\"}\n\n",
        "data: {\"type\":\"error\",\"data\":\"KILLED BY SIGNAL SIGSEGV\",\"phase\":\"code\"}\n\n",
        &format!("data: {exit}\n\n"),
    ])
    .await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2].kind, StreamEventType::Exit);
    assert_eq!(events[2].resource_usage.as_ref(), Some(&usage));
    assert_eq!(events[2].exit_reason, Some(ExitReason::Signal));

    // Collected into a result: the reason's error event is not a failure.
    let result = collect_result(
        Box::pin(futures_util::stream::iter(events)),
        "python".into(),
    )
    .await
    .expect("a result");
    assert_eq!(result.exit_code, 139);
    assert_eq!(result.resource_usage, Some(usage));
    assert_eq!(result.exit_reason, Some(ExitReason::Signal));
    assert_eq!(result.stdout, "a");

    // A lost sandbox's error followed by an exit with its reason: a result.
    let lost = vec![
        event(StreamEventType::Error, "sandbox lost: the container died"),
        event(StreamEventType::Exit, "137").with_outcome(None, Some(ExitReason::SandboxLost)),
    ];
    let result = collect_result(Box::pin(futures_util::stream::iter(lost)), "bash".into())
        .await
        .expect("a result");
    assert_eq!(result.exit_reason, Some(ExitReason::SandboxLost));
    assert_eq!(result.resource_usage, None);

    // An error and an exit without a reason (a failed run, or an older server): an error.
    let failed = vec![
        event(StreamEventType::Error, "package install failed"),
        event(StreamEventType::Exit, "1"),
    ];
    let err = collect_result(Box::pin(futures_util::stream::iter(failed)), "bash".into())
        .await
        .expect_err("failed");
    assert!(err.to_string().contains("package install failed"), "{err}");
}
