//! The fallback streaming route `POST /execute/stream`: its server-sent events decoded
//! into stream events.

use futures_util::StreamExt;
use isol8_protocol::StreamEvent;

use super::ended_early;

/// The events of `POST /execute/stream`, decoded from its server-sent events (the
/// `sse-stream` crate splits the blocks): each block's `data` is one JSON
/// [`StreamEvent`]; blocks without one (keep-alive comments) or with data that is not an
/// event are skipped. Nothing is read after the `exit` event. A stream cut before it
/// ends with an error event saying why, unless its last event already was one (the
/// server's `sandbox lost: …`).
pub(super) fn sse_stream_events<S>(sse: S) -> impl futures_util::Stream<Item = StreamEvent> + Send
where
    S: futures_util::Stream<Item = std::result::Result<sse_stream::Sse, sse_stream::Error>>
        + Send
        + 'static,
{
    use isol8_protocol::StreamEventType;
    futures_util::stream::unfold(
        (Box::pin(sse), false, false),
        |(mut sse, done, after_error)| async move {
            if done {
                return None;
            }
            loop {
                match sse.next().await {
                    Some(Ok(block)) => {
                        let Some(event) = block
                            .data
                            .as_deref()
                            .and_then(|d| serde_json::from_str::<StreamEvent>(d).ok())
                        else {
                            continue;
                        };
                        let ended = event.kind == StreamEventType::Exit;
                        let after_error = event.kind == StreamEventType::Error;
                        return Some((vec![event], (sse, ended, after_error)));
                    }
                    Some(Err(e)) => {
                        let why = match e {
                            sse_stream::Error::Body(cause) => cause.to_string(),
                            other => other.to_string(),
                        };
                        let event = StreamEvent::error(format!("stream interrupted: {why}"));
                        return Some((vec![event], (sse, true, true)));
                    }
                    // Ended before the exit event: the sandbox was lost (the server's last
                    // event says so) or the connection broke.
                    None => {
                        let why = "the server closed the stream early";
                        return Some((ended_early(after_error, why), (sse, true, true)));
                    }
                }
            }
        },
    )
    .flat_map(futures_util::stream::iter)
}
