//! `POST /execute` (buffered), `POST /execute/stream` (server-sent events) and
//! `GET /execute/ws` (WebSocket: stdin and signals in, events out).
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

use crate::backend::{signal_number, Control, Executor};
use crate::caller::Caller;
use crate::error::{lost_message, unresponsive_message, ApiError};
use crate::extractors::ApiJson;
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

/// Messages a WebSocket client sends on `GET /execute/ws`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WsIn {
    /// Start the execution (first message).
    Execute {
        /// The execution request.
        request: Box<ExecutionRequest>,
        /// Per-request options laid over the server's.
        #[serde(default)]
        options: Option<Box<EngineOptions>>,
        /// Run in this persistent session (created on first use).
        #[serde(default, rename = "sessionId")]
        session_id: Option<String>,
    },
    /// Feed the running program's stdin.
    Stdin {
        /// Text for standard input.
        #[serde(default)]
        data: String,
        /// Close standard input after `data` (end-of-file), so a program that reads to
        /// the end finishes; an isol8 addition (absent: `false`, stdin stays open).
        #[serde(default)]
        eof: bool,
    },
    /// Interrupt the running program.
    Signal {
        /// `SIGINT` or `SIGTERM` (also `SIGKILL`, `SIGHUP`, `SIGQUIT`).
        signal: String,
    },
}

/// Where a request runs, after the policy check: in its session, or on the shared
/// engine; and with what per-request options (the client's, `mode` dropped: `sessionId`
/// decides, as in the reference).
async fn route(
    state: &AppState,
    caller: &Caller,
    request: &ExecutionRequest,
    options: Option<EngineOptions>,
    session_id: Option<&str>,
    trace: &Trace,
) -> Result<(Arc<dyn Executor>, EngineOptions), ApiError> {
    route_in(state, caller, request, options, session_id, None, trace).await
}

/// [`route`] with the `tenantId` the request named for its session, if any.
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
    let (engine, options, request) = route_body(&state, &caller, body, &trace).await?;
    let result = engine
        .execute_with(request, &options)
        .await
        .map_err(|e| state.refusal(e, &trace))?;
    Ok(axum::Json(result))
}

/// `POST /execute/stream`: the request's events as server-sent events, one
/// `data: <StreamEvent JSON>` each.
pub async fn execute_stream(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Response, ApiError> {
    let (engine, options, request) = route_body(&state, &caller, body, &trace).await?;
    let events = engine
        .execute_stream_with(request, &options)
        .await
        .map_err(|e| state.refusal(e, &trace))?;
    // Dropping this stream (client gone) drops the run's receiver: the engine kills the
    // execution and reclaims its container.
    let sse = events.map(move |ev| {
        let ev = client_event(ev, &trace);
        Ok::<_, Infallible>(Event::default().data(serde_json::to_string(&ev).unwrap_or_default()))
    });
    Ok(Sse::new(sse)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `GET /execute/ws`: upgrades, then runs the execution the first message asks for.
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

/// Close code of a WebSocket whose execution could not start: 1003 for invalid input,
/// 1013 ("try again later") when busy or shutting down, 1011 otherwise.
fn close_code(status: StatusCode) -> u16 {
    match status {
        StatusCode::BAD_REQUEST => INVALID,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => 1013,
        _ => 1011,
    }
}

/// Sends an `error` event with `message` and closes with `code`.
async fn ws_fail(socket: &mut WebSocket, code: u16, message: String) {
    let ev = StreamEvent::error(message);
    let _ = socket
        .send(Message::Text(
            serde_json::to_string(&ev).unwrap_or_default().into(),
        ))
        .await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: "".into(),
        })))
        .await;
}

/// Closes the socket for an execution that could not start (logged when it is the
/// server's failure).
async fn ws_refuse(socket: &mut WebSocket, e: ApiError) {
    e.log();
    ws_fail(socket, close_code(e.status()), e.client_message()).await;
}

async fn run_ws(mut socket: WebSocket, state: Arc<AppState>, caller: Caller, trace: Trace) {
    let _open = state.open_websocket();
    let first = match socket.recv().await {
        Some(Ok(Message::Text(t))) => serde_json::from_str::<WsIn>(&t),
        _ => return,
    };
    let (request, options, session_id) = match first {
        Ok(WsIn::Execute {
            request,
            options,
            session_id,
        }) => (request, options, session_id),
        Ok(_) => {
            return ws_fail(
                &mut socket,
                INVALID,
                "the first message must be {\"type\":\"execute\"}".into(),
            )
            .await
        }
        Err(e) => return ws_fail(&mut socket, INVALID, format!("invalid message: {e}")).await,
    };
    let started = match route(
        &state,
        &caller,
        &request,
        options.map(|o| *o),
        session_id.as_deref(),
        &trace,
    )
    .await
    {
        Ok((engine, options)) => engine
            .execute_interactive(*request, &options)
            .await
            .map_err(|e| state.refusal(e, &trace)),
        Err(e) => Err(e),
    };
    let (mut events, control) = match started {
        Ok(s) => s,
        // Refused by validation (the engine's included): like invalid input, 1003.
        Err(e) => return ws_refuse(&mut socket, e).await,
    };
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else {
                    // The stream ended without an exit event: the sandbox was lost (its
                    // last event said so). Not a normal close.
                    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1011, reason: "sandbox lost".into() }))).await;
                    return;
                };
                let last = ev.kind == StreamEventType::Exit;
                let ev = client_event(ev, &trace);
                if socket.send(Message::Text(serde_json::to_string(&ev).unwrap_or_default().into())).await.is_err() {
                    // Client gone: dropping `events` kills the execution.
                    return;
                }
                if last {
                    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
                    return;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<WsIn>(&t) {
                    Ok(WsIn::Stdin { data, eof }) => {
                        if !data.is_empty() {
                            control.send(Control::Stdin(data.into_bytes())).await;
                        }
                        if eof {
                            control.send(Control::CloseStdin).await;
                        }
                    }
                    Ok(WsIn::Signal { signal }) => match signal_number(&signal) {
                        Some(n) => { control.send(Control::Signal(n)).await; }
                        None => return ws_fail(&mut socket, INVALID, format!("unknown signal `{signal}`; use SIGINT or SIGTERM")).await,
                    },
                    Ok(WsIn::Execute { .. }) => return ws_fail(&mut socket, INVALID, "an execution is already running".into()).await,
                    Err(e) => return ws_fail(&mut socket, INVALID, format!("invalid message: {e}")).await,
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return, // disconnect kills the run
                Some(Ok(_)) => {}
            }
        }
    }
}
