//! [`RemoteEngine`]: the [`Engine`] of an isol8 server, spoken over its HTTP API.
//!
//! Buffered executions use `POST /execute`; streaming uses `GET /execute/ws` (WebSocket)
//! and falls back to `POST /execute/stream` (server-sent events) when the upgrade fails,
//! e.g. behind a proxy that does not pass WebSockets; files use `/file`. With a session
//! id every call runs in that server-side persistent session, and `stop` deletes it.
//!
//! Streams end like the local engine's: with one `exit` event, or — when the sandbox was
//! lost on the server (`sandbox lost: …` and a WebSocket close 1011) or the connection
//! broke — with an `error` event and no `exit`: no exit code is made up. The server's
//! `sandbox lost` / `sandbox unresponsive` answers become [`Error::SandboxLost`] /
//! [`Error::SandboxUnresponsive`].

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use isol8_protocol::{EngineOptions, ExecutionRequest, ExecutionResult, StreamEvent};
use serde_json::{json, Value};

use crate::control::{signal_name, Control, Controller};
use crate::engine::{Engine, EventStream};
use crate::{Error, Result};

/// How a streamed execution reached the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTransport {
    /// `GET /execute/ws`.
    WebSocket,
    /// `POST /execute/stream` (the fallback).
    ServerSentEvents,
}

/// A client of `isol8 serve`.
#[derive(Debug, Clone)]
pub struct RemoteEngine {
    base: String,
    key: String,
    session_id: Option<String>,
    options: EngineOptions,
    http: reqwest::Client,
    /// 0: no stream yet; 1: WebSocket; 2: SSE.
    last_transport: Arc<AtomicU8>,
}

impl RemoteEngine {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:3000`) using `key`.
    pub fn new(
        base: &str,
        key: &str,
        session_id: Option<String>,
        options: EngineOptions,
    ) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::InvalidRequest(format!(
                "server URL `{base}` must start with http:// or https://"
            )));
        }
        if key.is_empty() {
            return Err(Error::InvalidRequest(
                "an API key is required to talk to an isol8 server".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::Remote {
                status: 0,
                message: e.to_string(),
            })?;
        Ok(RemoteEngine {
            base,
            key: key.to_string(),
            session_id,
            options,
            http,
            last_transport: Arc::new(AtomicU8::new(0)),
        })
    }

    /// How the last `execute_stream` travelled (`None` before the first).
    pub fn last_stream_transport(&self) -> Option<StreamTransport> {
        match self.last_transport.load(Ordering::Relaxed) {
            1 => Some(StreamTransport::WebSocket),
            2 => Some(StreamTransport::ServerSentEvents),
            _ => None,
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /sessions`: the caller's sessions (`{id, isActive, lastAccessedAt}`).
    pub async fn list_sessions(&self) -> Result<Vec<Value>> {
        let v = self.call(self.http.get(self.url("/sessions"))).await?;
        Ok(v["sessions"].as_array().cloned().unwrap_or_default())
    }

    /// `DELETE /session/:id`: stops a session (fine if it does not exist).
    pub async fn delete_session(&self, id: &str) -> Result<()> {
        self.call(self.http.delete(self.url(&format!("/session/{id}"))))
            .await
            .map(drop)
    }

    /// `POST /auth/login` with `body`: a new key acting as the caller, with its metadata.
    pub async fn login(&self, body: &Value) -> Result<Value> {
        self.call(self.http.post(self.url("/auth/login")).json(body))
            .await
    }

    /// `DELETE /auth/keys/:id`: revokes a key (a database key may revoke itself).
    pub async fn revoke_key(&self, id: &str) -> Result<()> {
        self.call(self.http.delete(self.url(&format!("/auth/keys/{id}"))))
            .await
            .map(drop)
    }

    /// Streams over `GET /execute/ws`, forwarding `control` (stdin, end-of-file,
    /// signals) to the server while the program runs. `Ok(None)`: the upgrade failed
    /// (use SSE).
    async fn ws_stream(
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
            Err(e) => {
                tracing::debug!("WebSocket upgrade at {url} failed ({e}); falling back to SSE");
                return Ok(None);
            }
        };
        let (mut sink, mut ws) = ws.split();
        let mut msg = self.body(req, options);
        msg["type"] = json!("execute");
        sink.send(Message::Text(msg.to_string().into()))
            .await
            .map_err(|e| Error::Remote {
                status: 0,
                message: format!("WebSocket send failed: {e}"),
            })?;
        // Controls go out on the same socket while events come in; the task ends when
        // the controller is dropped or the socket closes.
        let interactive = control.is_some();
        let sink = match control {
            Some(mut control) => {
                tokio::spawn(async move {
                    while let Some(c) = control.recv().await {
                        let msg = match c {
                            Control::Stdin(data) => {
                                json!({"type": "stdin", "data": String::from_utf8_lossy(&data)})
                            }
                            Control::CloseStdin => {
                                json!({"type": "stdin", "data": "", "eof": true})
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

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The body of an execute call: the request, this client's options with `options`
    /// laid over them, and the session id.
    fn body(&self, req: &ExecutionRequest, options: &EngineOptions) -> Value {
        let mut body = json!({ "request": req, "options": self.options.overlay(options) });
        if let Some(id) = &self.session_id {
            body["sessionId"] = json!(id);
        }
        body
    }

    /// Sends a request and decodes a JSON answer, turning `{"error": …}` into an error.
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let resp = req
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| unreachable_server(&self.base, e))?;
        let status = resp.status();
        let value: Value = resp.json().await.map_err(|e| Error::Remote {
            status: status.as_u16(),
            message: e.to_string(),
        })?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(remote_error(status.as_u16(), &value))
        }
    }
}

fn unreachable_server(base: &str, e: reqwest::Error) -> Error {
    Error::Remote {
        status: 0,
        message: format!("cannot reach the isol8 server at {base}: {e}"),
    }
}

fn remote_error(status: u16, value: &Value) -> Error {
    let message = value["error"]
        .as_str()
        .unwrap_or("the server answered without an error message")
        .to_string();
    match status {
        400 => Error::InvalidRequest(message),
        _ => server_error(status, message),
    }
}

/// A server failure; the server's `sandbox lost: …` and `sandbox unresponsive: …` keep
/// their meaning.
fn server_error(status: u16, message: String) -> Error {
    if let Some(why) = message.strip_prefix("sandbox lost: ") {
        return Error::SandboxLost(why.to_string());
    }
    if let Some(why) = message.strip_prefix("sandbox unresponsive: ") {
        return Error::SandboxUnresponsive(why.to_string());
    }
    Error::Remote { status, message }
}

/// The end of a stream cut before its exit event: nothing more when its last event was
/// already the error saying why, else an error event with `why`. Never an `exit`: the
/// program's exit code is unknown.
fn ended_early(after_error: bool, why: impl Into<String>) -> Vec<StreamEvent> {
    if after_error {
        Vec::new()
    } else {
        vec![StreamEvent::error(why)]
    }
}

/// The events of `POST /execute/stream`, decoded from its server-sent events (the
/// `sse-stream` crate splits the blocks): each block's `data` is one JSON
/// [`StreamEvent`]; blocks without one (keep-alive comments) or with data that is not an
/// event are skipped. Nothing is read after the `exit` event. A stream cut before it
/// ends with an error event saying why, unless its last event already was one (the
/// server's `sandbox lost: …`).
fn sse_stream_events<S>(sse: S) -> impl futures_util::Stream<Item = StreamEvent> + Send
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

#[async_trait::async_trait]
impl Engine for RemoteEngine {
    async fn start(&self) -> Result<()> {
        let resp = self
            .http
            .get(self.url("/health"))
            .send()
            .await
            .map_err(|e| unreachable_server(&self.base, e))?;
        if !resp.status().is_success() {
            return Err(Error::Remote {
                status: resp.status().as_u16(),
                message: "health check failed".into(),
            });
        }
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        if let Some(id) = &self.session_id {
            self.call(self.http.delete(self.url(&format!("/session/{id}"))))
                .await?;
        }
        Ok(())
    }

    async fn execute_with(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<ExecutionResult> {
        let value = self
            .call(
                self.http
                    .post(self.url("/execute"))
                    .json(&self.body(&req, options)),
            )
            .await?;
        serde_json::from_value(value).map_err(|e| Error::Remote {
            status: 200,
            message: format!("bad result: {e}"),
        })
    }

    async fn execute_stream_with(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<EventStream> {
        if let Some(stream) = self.ws_stream(&req, options, None).await? {
            self.last_transport.store(1, Ordering::Relaxed);
            return Ok(stream);
        }
        self.last_transport.store(2, Ordering::Relaxed);
        let resp = self
            .http
            .post(self.url("/execute/stream"))
            .bearer_auth(&self.key)
            .json(&self.body(&req, options))
            .send()
            .await
            .map_err(|e| unreachable_server(&self.base, e))?;
        let status = resp.status();
        if !status.is_success() {
            let value: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(remote_error(status.as_u16(), &value));
        }
        let events = sse_stream_events(sse_stream::SseByteStream::new(resp.bytes_stream()));
        Ok(Box::pin(events))
    }

    /// Over the WebSocket route only: server-sent events carry nothing back to the
    /// server, so without a WebSocket this is [`Error::NotSupported`].
    async fn execute_interactive(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<(EventStream, Controller)> {
        let (controller, rx) = Controller::channel();
        match self.ws_stream(&req, options, Some(rx)).await? {
            Some(stream) => {
                self.last_transport.store(1, Ordering::Relaxed);
                Ok((stream, controller))
            }
            None => Err(Error::NotSupported(format!(
                "interactive input needs the WebSocket route of {}, and the upgrade failed (a proxy in between that does not pass WebSockets?)",
                self.base
            ))),
        }
    }

    async fn put_file(&self, path: &str, content: &[u8]) -> Result<()> {
        use base64::Engine as _;
        let id = self
            .session_id
            .as_ref()
            .ok_or_else(|| Error::InvalidRequest("put_file needs a session id".into()))?;
        let body = json!({"sessionId": id, "path": path, "content": base64::engine::general_purpose::STANDARD.encode(content)});
        self.call(self.http.post(self.url("/file")).json(&body))
            .await?;
        Ok(())
    }

    async fn get_file(&self, path: &str) -> Result<Vec<u8>> {
        let id = self
            .session_id
            .as_ref()
            .ok_or_else(|| Error::InvalidRequest("get_file needs a session id".into()))?;
        let value = self
            .call(
                self.http
                    .get(self.url("/file"))
                    .query(&[("sessionId", id.as_str()), ("path", path)]),
            )
            .await?;
        crate::engine::decode_file(value["content"].as_str().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
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
}
