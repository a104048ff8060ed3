//! [`RemoteEngine`]: the [`Engine`] of an isol8 server, spoken over its HTTP API.
//!
//! Buffered executions use `POST /execute`; streaming uses `GET /execute/ws` (WebSocket)
//! and falls back to `POST /execute/stream` (server-sent events) when the upgrade fails,
//! e.g. behind a proxy that does not pass WebSockets; files use `/file`. With a session
//! id every call runs in that server-side persistent session, and `stop` deletes it.
//!
//! Standard input: a buffered or streamed execution reads the request's `stdin` (if any)
//! and then end-of-file; an interactive one (`execute_interactive`, and its buffered
//! form `execute_interactive_buffered`) asks the server for `interactive: true` and keeps
//! it open for its [`Controller`], so it needs the WebSocket route.
//!
//! Streams end like the local engine's: with one `exit` event, or — when the sandbox was
//! lost on the server (`sandbox lost: …` and a WebSocket close 1011) or the connection
//! broke — with an `error` event and no `exit`: no exit code is made up. The server's
//! `sandbox lost` / `sandbox unresponsive` answers become [`Error::SandboxLost`] /
//! [`Error::SandboxUnresponsive`].
//!
//! This file holds [`RemoteEngine`], its plain HTTP calls and its [`Engine`]
//! implementation; the WebSocket stream is read in `ws.rs`, the server-sent events of the
//! fallback in `sse.rs`.

mod sse;
#[cfg(test)]
mod tests;
mod ws;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use isol8_protocol::{EngineOptions, ExecutionRequest, ExecutionResult, StreamEvent};
use serde_json::{json, Value};

use crate::control::Controller;
use crate::engine::{Engine, EventStream, PendingResult};
use crate::{Error, Result};
use sse::sse_stream_events;

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

    /// `POST /auth/login` with `body` (`{name?, tenantId?, ttlMs?}`): a new key, answered as
    /// `{token, expiresAt, keyId}`.
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

    /// Over the WebSocket route only, like [`Engine::execute_interactive`]. The result is
    /// what the stream carries: output, exit code, resource usage and exit reason (on the
    /// `exit` event), truncation (the engine's trailer in the output) and the duration
    /// this client saw; output files, network logs and the container id are not
    /// streamed, so they are absent.
    async fn execute_interactive_buffered(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<(PendingResult, Controller)> {
        let runtime = req.runtime.clone();
        let (events, controller) = self.execute_interactive(req, options).await?;
        Ok((Box::pin(collect_result(events, runtime)), controller))
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

/// The buffered result of a streamed execution, as far as its events tell it: stdout,
/// stderr (the timeout marker becomes the trailer a buffered result has), the exit code,
/// the `exit` event's `resourceUsage` and `exitReason`, truncation (the engine's trailer
/// in the output) and the duration this client saw. A stream that fails — an `error`
/// event other than one announcing how the run ended, with no `exit` event giving an
/// `exitReason`, or no `exit` event at all — is an error, as `POST /execute` would
/// answer one.
pub(super) async fn collect_result(
    mut events: EventStream,
    runtime: String,
) -> Result<ExecutionResult> {
    use crate::output::{TIMEOUT_EVENT, TIMEOUT_TRAILER, TRUNCATION_MARK};
    use futures_util::StreamExt;
    use isol8_protocol::StreamEventType;
    let started = std::time::Instant::now();
    let mut result = ExecutionResult {
        execution_id: uuid::Uuid::new_v4().to_string(),
        runtime,
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ..Default::default()
    };
    let mut failure = None;
    let mut exit = None;
    while let Some(ev) = events.next().await {
        match ev.kind {
            StreamEventType::Stdout => result.stdout.push_str(&ev.data),
            StreamEventType::Stderr => result.stderr.push_str(&ev.data),
            StreamEventType::Error if ev.data == TIMEOUT_EVENT => {
                if !result.stderr.is_empty() && !result.stderr.ends_with('\n') {
                    result.stderr.push('\n');
                }
                result.stderr.push_str(TIMEOUT_TRAILER);
            }
            // How the run ended (memory limit, signal, output cap): not a failure.
            StreamEventType::Error if crate::outcome::is_reason_event(&ev.data) => {}
            StreamEventType::Error => {
                failure.get_or_insert(ev.data);
            }
            StreamEventType::Exit => {
                exit = Some(ev.data.parse().unwrap_or(1));
                result.resource_usage = ev.resource_usage;
                result.exit_reason = ev.exit_reason;
            }
        }
    }
    // An `exit` that says why the program ended closes a run that has a result (a lost
    // sandbox's `sandbox lost: …` error before it only announced that ending).
    if let Some(message) = failure.filter(|_| result.exit_reason.is_none()) {
        return Err(server_error(0, message));
    }
    result.exit_code = exit.ok_or_else(|| Error::Remote {
        status: 0,
        message: "the stream ended without an exit event".into(),
    })?;
    result.truncated =
        result.stdout.contains(TRUNCATION_MARK) || result.stderr.contains(TRUNCATION_MARK);
    result.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(result)
}
