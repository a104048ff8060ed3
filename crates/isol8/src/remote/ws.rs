//! The streaming route `GET /execute/ws`: the request goes out as the first message
//! (with `interactive: true` when there are controls), controls (stdin, end-of-file,
//! signals) follow on the same socket, and events come back until the `exit` event or the
//! close that says why there is none.

use futures_util::{SinkExt, StreamExt};
use isol8_protocol::{EngineOptions, ExecutionRequest, StreamEvent};
use serde_json::json;

use super::{ended_early, server_error, RemoteEngine};
use crate::control::{signal_name, Control};
use crate::engine::EventStream;
use crate::{Error, Result};

impl RemoteEngine {
    /// Streams over `GET /execute/ws`. With `control`, the run is interactive: the
    /// program's stdin stays open and the controls (stdin, end-of-file, signals) are
    /// forwarded while it runs; without, it reads the request's `stdin` and then
    /// end-of-file. `Ok(None)`: the upgrade failed (use SSE).
    pub(super) async fn ws_stream(
        &self,
        req: &ExecutionRequest,
        options: &EngineOptions,
        control: Option<tokio::sync::mpsc::Receiver<Control>>,
    ) -> Result<Option<EventStream>> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message;
        let url = match self.base.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}/execute/ws"),
            Some((_, rest)) => format!("ws://{rest}/execute/ws"),
            None => return Ok(None),
        };
        let Ok(mut request) = url.as_str().into_client_request() else {
            return Ok(None);
        };
        let Ok(auth) = format!("Bearer {}", self.key).parse() else {
            return Ok(None);
        };
        request.headers_mut().insert("authorization", auth);
        let ws = match tokio_tungstenite::connect_async_with_config(request, None, true).await {
            Ok((ws, _)) => ws,
            // The server itself refused the key: no other route would accept it, and an
            // interactive caller must not fall back to reading all of its input first.
            Err(tokio_tungstenite::tungstenite::Error::Http(resp))
                if matches!(resp.status().as_u16(), 401 | 403) =>
            {
                let status = resp.status().as_u16();
                let value = resp
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                    .unwrap_or_default();
                if value["error"].is_string() {
                    return Err(super::remote_error(status, &value));
                }
                if control.is_some() {
                    return Err(Error::Remote {
                        status,
                        message: format!("the server refused the API key (HTTP {status})"),
                    });
                }
                // The server-sent-events request will say why.
                return Ok(None);
            }
            Err(e) => {
                tracing::debug!("WebSocket upgrade at {url} failed ({e}); falling back to SSE");
                return Ok(None);
            }
        };
        let (mut sink, mut ws) = ws.split();
        let interactive = control.is_some();
        let mut msg = self.body(req, options);
        msg["type"] = json!("execute");
        if interactive {
            msg["interactive"] = json!(true);
        }
        sink.send(Message::Text(msg.to_string().into()))
            .await
            .map_err(|e| Error::Remote {
                status: 0,
                message: format!("WebSocket send failed: {e}"),
            })?;
        // Controls go out on the same socket while events come in; the task ends when
        // the controller is dropped or the socket closes.
        let sink = match control {
            Some(mut control) => {
                tokio::spawn(async move {
                    // Bytes of a character split between two chunks wait for the rest.
                    let mut pending = Vec::new();
                    while let Some(c) = control.recv().await {
                        let msg = match c {
                            Control::Stdin(data) => {
                                pending.extend_from_slice(&data);
                                let text = whole_utf8(&mut pending);
                                if text.is_empty() {
                                    continue;
                                }
                                json!({"type": "stdin", "data": text})
                            }
                            Control::CloseStdin => {
                                let rest = String::from_utf8_lossy(&pending).into_owned();
                                pending.clear();
                                json!({"type": "stdin", "data": rest, "eof": true})
                            }
                            Control::Signal(n) => match signal_name(n) {
                                Some(name) => json!({"type": "signal", "signal": name}),
                                None => continue,
                            },
                        };
                        if sink
                            .send(Message::Text(msg.to_string().into()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                });
                None
            }
            None => Some(sink),
        };
        // The first frame tells a refused request (an error event, then a close other
        // than 1000, before anything ran) from a started one. An interactive program
        // may say nothing until it gets input, so there the refusal arrives in the
        // stream instead (an error event, then the early close).
        let mut first = Vec::new();
        loop {
            if interactive {
                break;
            }
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let Ok(ev) = serde_json::from_str::<StreamEvent>(&t) else {
                        continue;
                    };
                    if ev.kind != isol8_protocol::StreamEventType::Error {
                        first.push(ev);
                        break;
                    }
                    match ws.next().await {
                        Some(Ok(Message::Close(frame))) => {
                            let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                            return Err(match code {
                                1003 => Error::InvalidRequest(ev.data),
                                // Try again later: busy or shutting down.
                                1013 => Error::Remote {
                                    status: 503,
                                    message: ev.data,
                                },
                                _ => server_error(0, ev.data),
                            });
                        }
                        Some(Ok(Message::Text(t))) => {
                            first.push(ev);
                            first.extend(serde_json::from_str::<StreamEvent>(&t).ok());
                        }
                        _ => first.push(ev),
                    }
                    break;
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(Error::Remote {
                        status: 0,
                        message: format!("WebSocket failed: {e}"),
                    })
                }
            }
        }
        let ended = first
            .iter()
            .any(|e| e.kind == isol8_protocol::StreamEventType::Exit);
        let after_error = first
            .last()
            .is_some_and(|e| e.kind == isol8_protocol::StreamEventType::Error);
        let head = futures_util::stream::iter(first);
        let rest = futures_util::stream::unfold(
            (ws, ended, after_error, sink),
            |(mut ws, done, after_error, sink)| async move {
                if done {
                    return None;
                }
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            let Ok(ev) = serde_json::from_str::<StreamEvent>(&t) else {
                                continue;
                            };
                            let last = ev.kind == isol8_protocol::StreamEventType::Exit;
                            let error = ev.kind == isol8_protocol::StreamEventType::Error;
                            return Some((vec![ev], (ws, last, error, sink)));
                        }
                        // Closed before the exit event (1011: the sandbox was lost, and
                        // the server's last event said so).
                        Some(Ok(Message::Close(frame))) => {
                            let (code, reason) = frame
                                .map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            let events = ended_early(
                                after_error,
                                format!("the server ended the stream before the exit event (WebSocket close {code}{}{reason})", if reason.is_empty() { "" } else { ": " }),
                            );
                            return Some((events, (ws, true, true, sink)));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            let events = vec![StreamEvent::error(format!(
                                "stream interrupted: {e}"
                            ))];
                            return Some((events, (ws, true, true, sink)));
                        }
                        None => {
                            let events =
                                ended_early(after_error, "the server closed the stream early");
                            return Some((events, (ws, true, true, sink)));
                        }
                    }
                }
            },
        )
        .flat_map(futures_util::stream::iter);
        Ok(Some(Box::pin(head.chain(rest))))
    }
}

/// Takes the text at the start of `bytes` that is whole UTF-8 (an invalid sequence becomes
/// U+FFFD, as JSON text needs), leaving in `bytes` a character cut off at the end, which
/// the next chunk completes.
pub(super) fn whole_utf8(bytes: &mut Vec<u8>) -> String {
    let mut text = String::new();
    let mut rest: &[u8] = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                text.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                text.push_str(&String::from_utf8_lossy(valid));
                match e.error_len() {
                    Some(n) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        rest = &after[n..];
                    }
                    // Cut off at the end: wait for the rest.
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
        }
    }
    *bytes = rest.to_vec();
    text
}
