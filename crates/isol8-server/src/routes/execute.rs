//! `POST /execute` (buffered), `POST /execute/stream` (server-sent events) and
//! `GET /execute/ws` (WebSocket: events out; stdin and signals in when the client asks
//! for an interactive run).
//!
//! Standard input follows one rule on every route: the program reads the request's
//! `stdin` (if any) and then end-of-file. Only a WebSocket `execute` message with
//! `interactive: true` keeps it open for `stdin` messages until one says `eof: true`.
//!
//! A request runs on the shared engine with the client's options laid over the server's
//! (after the policy check), or, with a `sessionId`, in that session's persistent
//! container: created on first use from the client's options (checked by the policy
//! like an ephemeral run's); each later execution applies its own per-execution options
//! (`timeoutMs`, `maxOutputSize`, `secrets`, `networkFilter`, `logNetwork`) and, as the
//! reference server does, leaves the session's container as it was made (`memoryLimit`,
//! `network`, `image`… of a later request are ignored: the reference CLI sends its
//! defaults with every call). `options.mode` is accepted and ignored too: `sessionId`
//! decides. Dropping a stream (client gone) kills its execution.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use isol8::{EngineOptions, ExecutionRequest, ExecutionResult, StreamEvent, StreamEventType};
use serde::Deserialize;

use isol8::audit::AuditCaller;

use crate::backend::{signal_number, Control, Executor};
use crate::caller::Caller;
use crate::error::{lost_message, unresponsive_message, ApiError};
use crate::extractors::ApiJson;
use crate::metrics::Execution;
use crate::state::AppState;
use crate::trace::Trace;

/// Body of `POST /execute` and `POST /execute/stream`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteBody {
    /// The execution request.
    pub request: ExecutionRequest,
    /// Per-request options laid over the server's (checked by `serverPolicy`). A new
    /// session is made from them; in an existing one only the per-execution options
    /// (`timeoutMs`, `maxOutputSize`, `secrets`, `networkFilter`, `logNetwork`) apply.
    /// `mode` is accepted and ignored: `sessionId` decides.
    #[serde(default)]
    pub options: Option<EngineOptions>,
    /// Run in this persistent session (created on first use).
    #[serde(default)]
    pub session_id: Option<String>,
    /// The tenant whose session `sessionId` names (an isol8 addition): the master key
    /// may name any tenant, a database key only its own. Absent: the caller's own
    /// session, or, for the master key, the one session of any tenant with that id.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// Messages a WebSocket client sends on `GET /execute/ws`. A message whose `type` is none
/// of these gets an `error` event and the socket stays open; `stdin` and `signal`
/// messages before `execute`, or during a run that is not interactive, are ignored.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WsIn {
    /// Start the execution (one per socket).
    Execute {
        /// The execution request. Its `stdin`, if any, is the program's first input.
        request: Box<ExecutionRequest>,
        /// Per-request options laid over the server's.
        #[serde(default)]
        options: Option<Box<EngineOptions>>,
        /// Run in this persistent session (created on first use).
        #[serde(default, rename = "sessionId")]
        session_id: Option<String>,
        /// Keep the program's standard input open after `request.stdin` for `stdin`
        /// messages, until one with `eof: true`, and deliver `signal` messages; an isol8
        /// addition. Absent or `false`: the program reads `request.stdin` (if any) and
        /// then end-of-file, as on `POST /execute`, and `stdin` and `signal` messages are
        /// ignored.
        #[serde(default)]
        interactive: bool,
        /// The tenant whose session `sessionId` names, as `tenantId` of `POST /execute`.
        #[serde(default, rename = "tenantId")]
        tenant_id: Option<String>,
    },
    /// Feed the running program's stdin (interactive runs only).
    Stdin {
        /// Text for standard input.
        #[serde(default)]
        data: String,
        /// Close standard input after `data` (end-of-file), so a program that reads to
        /// the end finishes; an isol8 addition (absent: `false`, stdin stays open).
        #[serde(default)]
        eof: bool,
    },
    /// Interrupt the running program (interactive runs only).
    Signal {
        /// `SIGINT` or `SIGTERM` (also `SIGKILL`, `SIGHUP`, `SIGQUIT`).
        signal: String,
    },
}

/// Where a request runs, after the policy check: in its session (of the `tenantId` the
/// request named, if any), or on the shared engine; and with what per-request options
/// (the client's, `mode` dropped: `sessionId` decides, as in the reference).
async fn route_in(
    state: &AppState,
    caller: &Caller,
    request: &ExecutionRequest,
    options: Option<EngineOptions>,
    session_id: Option<&str>,
    tenant: Option<&str>,
    trace: &Trace,
) -> Result<(Arc<dyn Executor>, EngineOptions), ApiError> {
    let mut options = options.unwrap_or_default();
    options.mode = None;
    let routed = route_checked(state, caller, request, &options, session_id, tenant, trace).await;
    if let Err(e) = &routed {
        // Refused here, before the engine saw it: the engine cannot record it.
        state.audit_refused(request, &options, e);
    }
    routed
}

/// [`route_in`] once the options are the client's with `mode` dropped.
async fn route_checked(
    state: &AppState,
    caller: &Caller,
    request: &ExecutionRequest,
    options: &EngineOptions,
    session_id: Option<&str>,
    tenant: Option<&str>,
    trace: &Trace,
) -> Result<(Arc<dyn Executor>, EngineOptions), ApiError> {
    let options = options.clone();
    state.allow(request, &options, trace)?;
    match session_id {
        Some(id) => {
            let (engine, created) = state
                .session(caller, id, tenant, Some(&options), trace)
                .await?;
            // A new session was made from these options: its first execution runs on
            // them as they are. An existing one keeps its container, as the reference
            // server's do (whose CLI sends its defaults, `memoryLimit` and `network`
            // included, with every call): only the per-execution options apply.
            let options = if created {
                EngineOptions::default()
            } else {
                options.per_execution()
            };
            Ok((engine, options))
        }
        None => Ok((state.shared(), options)),
    }
}

/// Who the audit records of a request's execution name: the caller's tenant and key,
/// the session addressed, the client's request id; the execution gets the request's
/// trace id, so the result, the server's logs and the audit record share one id.
fn audit_caller(caller: &Caller, trace: &Trace, session_id: Option<&str>) -> AuditCaller {
    AuditCaller {
        tenant: Some(caller.tenant.clone()),
        key_id: caller.key_id.clone(),
        session_id: session_id.map(str::to_string),
        request_id: trace.request_id.clone(),
        execution_id: Some(trace.id.clone()),
    }
}

/// [`route`] for the body of `POST /execute` or `/execute/stream`: where it runs, with
/// what options, and the request itself.
async fn route_body(
    state: &AppState,
    caller: &Caller,
    body: ExecuteBody,
    trace: &Trace,
) -> Result<(Arc<dyn Executor>, EngineOptions, ExecutionRequest), ApiError> {
    let ExecuteBody {
        request,
        options,
        session_id,
        tenant_id,
    } = body;
    let (engine, options) = route_in(
        state,
        caller,
        &request,
        options,
        session_id.as_deref(),
        tenant_id.as_deref(),
        trace,
    )
    .await?;
    Ok((engine, options, request))
}

/// An event as the client gets it: the final event of a lost sandbox says so in the
/// words of [`ApiError::client_message`] (same prefix, no engine internals; the details
/// are logged under the execution id); every other event as it is.
fn client_event(mut ev: StreamEvent, trace: &Trace) -> StreamEvent {
    if ev.kind != StreamEventType::Error {
        return ev;
    }
    let replaced = if ev.data.starts_with("sandbox lost: ") {
        lost_message(&trace.id)
    } else if ev.data.starts_with("sandbox unresponsive: ") {
        unresponsive_message(&trace.id)
    } else {
        return ev;
    };
    tracing::error!(
        execution = %trace.id,
        request_id = trace.request_id.as_deref().unwrap_or("-"),
        error = %ev.data,
        "streamed execution lost its sandbox"
    );
    ev.data = replaced;
    ev
}

/// `POST /execute`: runs the request and answers its [`ExecutionResult`].
pub async fn execute(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<axum::Json<ExecutionResult>, ApiError> {
    let mut counted = Execution::new(state.metrics().clone(), &body.request.runtime);
    let audited = audit_caller(&caller, &trace, body.session_id.as_deref());
    let run = async {
        let (engine, options, request) = route_body(&state, &caller, body, &trace).await?;
        engine
            .execute_with(request, &options)
            .await
            .map_err(|e| state.refusal(e, &trace))
    };
    match isol8::audit::scope(audited, run).await {
        Ok(result) => {
            counted.result(&result);
            Ok(axum::Json(result))
        }
        Err(e) => {
            counted.failed(&e);
            Err(e)
        }
    }
}

/// `POST /execute/stream`: the request's events as server-sent events, one
/// `data: <StreamEvent JSON>` each.
pub async fn execute_stream(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Response, ApiError> {
    let mut counted = Execution::new(state.metrics().clone(), &body.request.runtime);
    let audited = audit_caller(&caller, &trace, body.session_id.as_deref());
    let started = async {
        let (engine, options, request) = route_body(&state, &caller, body, &trace).await?;
        engine
            .execute_stream_with(request, &options)
            .await
            .map_err(|e| state.refusal(e, &trace))
    };
    let events = match isol8::audit::scope(audited, started).await {
        Ok(events) => events,
        Err(e) => {
            counted.failed(&e);
            return Err(e);
        }
    };
    // Dropping this stream (client gone) drops the run's receiver: the engine kills the
    // execution and reclaims its container (and `counted` records an error unless the
    // exit was seen).
    let sse = events.map(move |ev| {
        counted.event(&ev);
        let ev = client_event(ev, &trace);
        Ok::<_, Infallible>(Event::default().data(serde_json::to_string(&ev).unwrap_or_default()))
    });
    Ok(Sse::new(sse)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `GET /execute/ws`: upgrades, then runs the execution the `execute` message asks for.
pub async fn execute_ws(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
) -> Response {
    ws.on_upgrade(move |socket| run_ws(socket, state, caller, trace))
}

/// Close code for invalid input.
const INVALID: u16 = 1003;

/// Close reason of a socket closed for invalid input.
const INVALID_REASON: &str = "Invalid message";

/// Close code of a WebSocket whose execution could not start: 1003 for invalid input,
/// 1013 ("try again later") when busy or shutting down, 1011 otherwise.
fn close_code(status: StatusCode) -> u16 {
    match status {
        StatusCode::BAD_REQUEST => INVALID,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => 1013,
        _ => 1011,
    }
}

/// Sends one event; false once the client is gone.
async fn send_event(socket: &mut WebSocket, ev: &StreamEvent) -> bool {
    socket
        .send(Message::Text(
            serde_json::to_string(ev).unwrap_or_default().into(),
        ))
        .await
        .is_ok()
}

/// How long a closing socket waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Closes the socket with `code` and `reason` (every close says why), then reads what
/// the client still sends until its close frame (at most [`CLOSE_WAIT`]): dropping a
/// connection with unread input would reset it, and the client could lose the last
/// events and the close.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let sent = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    if sent.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Sends an `error` event with `message` and closes with `code` and `reason`.
async fn ws_fail(socket: &mut WebSocket, code: u16, reason: &'static str, message: String) {
    send_event(socket, &StreamEvent::error(message)).await;
    close(socket, code, reason).await;
}

/// Closes the socket for an execution that could not start (logged when it is the
/// server's failure).
async fn ws_refuse(socket: &mut WebSocket, e: ApiError) {
    e.log();
    let code = close_code(e.status());
    let reason = match code {
        INVALID => "Request refused",
        1013 => "Busy, try again later",
        _ => "Server error",
    };
    ws_fail(socket, code, reason, e.client_message()).await;
}

/// A client message as read.
enum Read {
    /// A well-formed message.
    Message(WsIn),
    /// Not JSON: why.
    NotJson(String),
    /// JSON whose `type` is none of [`WsIn`]'s (or missing): the error event to send.
    Unknown(String),
    /// A known `type` (which) with a bad shape: the error message.
    Invalid(&'static str, String),
}

/// Reads one client message: JSON, then its `type`, then its fields.
fn read_message(text: &str) -> Read {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Read::NotJson(e.to_string()),
    };
    let kind = match value.get("type").and_then(serde_json::Value::as_str) {
        Some("execute") => "execute",
        Some("stdin") => "stdin",
        Some("signal") => "signal",
        Some(other) => {
            // The client's text, quoted only in part.
            let shown: String = other.chars().take(40).collect();
            return Read::Unknown(format!(
                "Unknown message type: {shown}; use execute, stdin or signal"
            ));
        }
        None => return Read::Unknown(
            "Unknown message type: none; a message needs a string `type`: execute, stdin or signal"
                .into(),
        ),
    };
    match serde_json::from_value::<WsIn>(value) {
        Ok(m) => Read::Message(m),
        Err(e) => Read::Invalid(kind, format!("invalid message: {e}")),
    }
}

/// The next message text the client sent: a text frame, or a binary frame read as text
/// (as the reference server reads them). `None` once the client closed or the
/// connection broke. Pings and pongs are skipped. Cancel-safe.
async fn next_text(socket: &mut WebSocket) -> Option<String> {
    loop {
        match socket.recv().await? {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Binary(b)) => return Some(String::from_utf8_lossy(&b).into_owned()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

async fn run_ws(mut socket: WebSocket, state: Arc<AppState>, caller: Caller, trace: Trace) {
    let _open = state.open_websocket();
    // Until `execute`: `stdin` and `signal` messages are ignored (there is no program
    // yet), a message of an unknown type gets an error event and the socket stays open.
    let (request, options, session_id, interactive, tenant_id) = loop {
        let Some(text) = next_text(&mut socket).await else {
            return;
        };
        match read_message(&text) {
            Read::Message(WsIn::Execute {
                request,
                options,
                session_id,
                interactive,
                tenant_id,
            }) => break (request, options, session_id, interactive, tenant_id),
            Read::Message(_) | Read::Invalid("stdin" | "signal", _) => {
                tracing::debug!(execution = %trace.id, "WebSocket: stdin or signal before execute, ignored");
            }
            Read::Unknown(why) => {
                if !send_event(&mut socket, &StreamEvent::error(why)).await {
                    return;
                }
            }
            Read::Invalid(_, why) => {
                return ws_fail(&mut socket, INVALID, INVALID_REASON, why).await
            }
            Read::NotJson(e) => {
                return ws_fail(
                    &mut socket,
                    INVALID,
                    "Invalid JSON",
                    format!("Invalid JSON message: {e}"),
                )
                .await
            }
        }
    };
    let mut counted = Execution::new(state.metrics().clone(), &request.runtime);
    let audited = audit_caller(&caller, &trace, session_id.as_deref());
    let started = isol8::audit::scope(audited, async {
        match route_in(
            &state,
            &caller,
            &request,
            options.map(|o| *o),
            session_id.as_deref(),
            tenant_id.as_deref(),
            &trace,
        )
        .await
        {
            // Interactive: stdin stays open for `stdin` messages, signals are delivered.
            Ok((engine, options)) if interactive => engine
                .execute_interactive(*request, &options)
                .await
                .map(|(events, control)| (events, Some(control)))
                .map_err(|e| state.refusal(e, &trace)),
            // Otherwise as on the other routes: `request.stdin` (if any), then end-of-file.
            Ok((engine, options)) => engine
                .execute_stream_with(*request, &options)
                .await
                .map(|events| (events, None))
                .map_err(|e| state.refusal(e, &trace)),
            Err(e) => Err(e),
        }
    })
    .await;
    let (mut events, control) = match started {
        Ok(s) => s,
        // Refused by validation (the engine's included): like invalid input, 1003.
        Err(e) => {
            counted.failed(&e);
            return ws_refuse(&mut socket, e).await;
        }
    };
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else {
                    // The stream ended without an exit event: the sandbox was lost (its
                    // last event said so). Not a normal close.
                    return close(&mut socket, 1011, "Sandbox lost").await;
                };
                let last = ev.kind == StreamEventType::Exit;
                counted.event(&ev);
                if !send_event(&mut socket, &client_event(ev, &trace)).await {
                    // Client gone: dropping `events` kills the execution.
                    return;
                }
                if last {
                    return close(&mut socket, 1000, "Execution complete").await;
                }
            }
            text = next_text(&mut socket) => {
                // Disconnected: dropping `events` kills the run.
                let Some(text) = text else { return };
                match read_message(&text) {
                    Read::Message(WsIn::Execute { .. }) | Read::Invalid("execute", _) => {
                        return ws_fail(&mut socket, INVALID, INVALID_REASON, "an execution is already running".into()).await
                    }
                    Read::Message(WsIn::Stdin { data, eof }) => match &control {
                        Some(control) => {
                            if !data.is_empty() {
                                control.send(Control::Stdin(data.into_bytes())).await;
                            }
                            if eof {
                                control.send(Control::CloseStdin).await;
                            }
                        }
                        None => tracing::debug!(execution = %trace.id, "WebSocket: stdin for a run that is not interactive, ignored"),
                    },
                    Read::Message(WsIn::Signal { signal }) => match (&control, signal_number(&signal)) {
                        (Some(control), Some(n)) => { control.send(Control::Signal(n)).await; }
                        (Some(_), None) => return ws_fail(&mut socket, INVALID, INVALID_REASON, format!("unknown signal `{signal}`; use SIGINT or SIGTERM")).await,
                        (None, _) => tracing::debug!(execution = %trace.id, "WebSocket: signal for a run that is not interactive, ignored"),
                    },
                    Read::Invalid(_, why) if control.is_some() => {
                        return ws_fail(&mut socket, INVALID, INVALID_REASON, why).await
                    }
                    Read::Invalid(..) => tracing::debug!(execution = %trace.id, "WebSocket: malformed stdin or signal for a run that is not interactive, ignored"),
                    Read::Unknown(why) => {
                        if !send_event(&mut socket, &StreamEvent::error(why)).await {
                            return;
                        }
                    }
                    Read::NotJson(e) => {
                        return ws_fail(&mut socket, INVALID, "Invalid JSON", format!("Invalid JSON message: {e}")).await
                    }
                }
            }
        }
    }
}
