//! `isol8 serve`: the isol8 HTTP API (SPEC section 7) on one shared warm pool.
//!
//! [`app`] builds the router, separate from any socket, so tests drive it with
//! `tower::ServiceExt::oneshot`. Ephemeral requests run on the server's shared
//! [`DockerEngine`] (its warm pool serves every client); a request with a `sessionId`
//! runs in that session's persistent container, created on first use and owned by the
//! key that created it.
//!
//! This version authenticates with the master key only; database keys, tenants beyond
//! the master key, server policy and WebSocket streaming come next.

pub mod policy;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use base64::Engine as _;
use futures_util::StreamExt;
use isol8::docker::EngineConfig;
use isol8::{DockerEngine, Engine, EngineOptions, ExecutionRequest};
use isol8_protocol::options::Mode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;

/// Largest request body accepted (files travel base64 inside JSON).
pub const MAX_BODY_BYTES: usize = 48 << 20;

/// Server version reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One persistent session.
struct Session {
    engine: DockerEngine,
    owner: String,
    last_accessed: chrono::DateTime<chrono::Utc>,
}

/// Everything the handlers share.
pub struct AppState {
    engine: DockerEngine,
    options: EngineOptions,
    master_key: String,
    sessions: Mutex<HashMap<String, Session>>,
    policy: isol8::config::ServerPolicy,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State around a shared engine; `options` are the defaults for session engines.
    pub fn new(engine: DockerEngine, options: EngineOptions, master_key: String) -> Arc<AppState> {
        Self::with_policy(
            engine,
            options,
            master_key,
            isol8::config::ServerPolicy::default(),
        )
    }

    /// State whose clients are held to `policy` (see [`policy::check`]).
    pub fn with_policy(
        engine: DockerEngine,
        options: EngineOptions,
        master_key: String,
        policy: isol8::config::ServerPolicy,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            engine,
            options,
            master_key,
            sessions: Mutex::new(HashMap::new()),
            policy,
        })
    }

    fn allow(&self, req: &ExecutionRequest, opts: &EngineOptions) -> Result<(), ApiError> {
        policy::check(&self.policy, req, opts).map_err(ApiError::bad_request)
    }

    /// Removes idle sessions (no execution running) not used for `max_age`; checks
    /// every `max_age / 4` (at least every 30 s). Runs until the state is dropped.
    pub fn spawn_pruner(state: &Arc<AppState>, max_age: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(state);
        let period = (max_age / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(state) = weak.upgrade() else { return };
                state.prune(max_age).await;
            }
        })
    }

    /// Removes sessions idle for longer than `max_age`; a session with an execution
    /// running is never pruned. Returns how many were removed.
    pub async fn prune(&self, max_age: Duration) -> usize {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        let expired: Vec<(String, Session)> = {
            let mut sessions = self.sessions.lock().await;
            let ids: Vec<String> = sessions
                .iter()
                .filter(|(_, s)| s.engine.running() == 0 && s.last_accessed < cutoff)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| sessions.remove(&id).map(|s| (id, s)))
                .collect()
        };
        let n = expired.len();
        for (id, s) in expired {
            tracing::info!(session = %id, "pruning idle session");
            let _ = s.engine.stop().await;
        }
        n
    }

    /// The shared engine that serves ephemeral requests.
    pub fn engine(&self) -> &DockerEngine {
        &self.engine
    }

    /// Stops every session and the shared engine, removing all their containers.
    pub async fn shutdown(&self) {
        let sessions: Vec<Session> = self.sessions.lock().await.drain().map(|(_, s)| s).collect();
        for s in sessions {
            let _ = s.engine.stop().await;
        }
        let _ = self.engine.stop().await;
    }
}

/// An error answered as `{"error": message}` with a status.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad_request(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<isol8::Error> for ApiError {
    fn from(e: isol8::Error) -> Self {
        let status = match &e {
            isol8::Error::QueueTimeout { .. }
            | isol8::Error::Stopped
            | isol8::Error::DockerUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            e if e.is_user_error() => StatusCode::BAD_REQUEST,
            isol8::Error::ImageMissing { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// `Json` whose rejections (malformed JSON, wrong types, missing fields, too large) are
/// JSON errors with the right status.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => {
                let status = match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    _ => StatusCode::BAD_REQUEST,
                };
                Err(ApiError(status, rejection.body_text()))
            }
        }
    }
}

/// Body of `POST /execute` and `POST /execute/stream`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteBody {
    /// The execution request.
    pub request: ExecutionRequest,
    /// Per-request options laid over the server's.
    #[serde(default)]
    pub options: Option<EngineOptions>,
    /// Run in this persistent session (created on first use).
    #[serde(default)]
    pub session_id: Option<String>,
}

/// Body of `POST /file`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutFileBody {
    session_id: String,
    path: String,
    content: String,
}

/// Query of `GET /file`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetFileQuery {
    session_id: String,
    path: String,
}

/// One entry of `GET /sessions`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionInfo {
    id: String,
    is_active: bool,
    last_accessed_at: String,
}

/// Who is calling (the master key is the only tenant in this version).
#[derive(Debug, Clone)]
struct Caller(String);

/// Compares two byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

async fn auth(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "Missing Authorization header"})),
        )
            .into_response();
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(token.as_bytes(), state.master_key.as_bytes()) {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": "Invalid API key"})),
        )
            .into_response();
    }
    req.extensions_mut().insert(Caller("master".into()));
    next.run(req).await
}

/// The router of the isol8 API.
pub fn app(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/execute", post(execute))
        .route("/execute/stream", post(execute_stream))
        .route("/execute/ws", get(execute_ws))
        .route("/file", post(put_file).get(get_file))
        .route("/sessions", get(list_sessions))
        .route("/session/{id}", delete(delete_session))
        .route("/cleanup", post(cleanup))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .merge(protected)
        .fallback(|| async { ApiError::not_found("Not found") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The OpenAPI description of every route.
pub fn openapi_document() -> serde_json::Value {
    let json_body = |schema: &str| json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    let ok = |desc: &str| json!({"description": desc, "content": {"application/json": {}}});
    let errors = json!({
        "400": {"description": "bad input: {\"error\": message}"},
        "401": {"description": "{\"error\":\"Missing Authorization header\"}"},
        "403": {"description": "{\"error\":\"Invalid API key\"}"},
        "404": {"description": "unknown session or route"},
        "413": {"description": "body too large"},
        "503": {"description": "no execution slot within the request's timeout, or the engine is stopping"}
    });
    let with_errors = |mut responses: serde_json::Value| {
        if let (Some(r), Some(e)) = (responses.as_object_mut(), errors.as_object()) {
            r.extend(e.clone());
        }
        responses
    };
    json!({
        "openapi": "3.0.3",
        "info": {"title": "isol8", "version": VERSION, "description": "Run untrusted code in hardened sandboxes."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "ExecuteBody": {"type": "object", "required": ["request"], "properties": {
                    "request": {"type": "object", "description": "ExecutionRequest (runtime, code | cmd, timeoutMs, env, stdin, files, outputPaths, setupScript, workdir, fileExtension…)"},
                    "options": {"type": "object", "description": "engine options (memoryLimit, cpuLimit, pidsLimit, timeoutMs, maxOutputSize, network, secrets, security…)"},
                    "sessionId": {"type": "string"}}},
                "PutFile": {"type": "object", "required": ["sessionId", "path", "content"], "properties": {
                    "sessionId": {"type": "string"}, "path": {"type": "string"}, "content": {"type": "string", "format": "byte"}}},
                "Cleanup": {"type": "object", "properties": {"images": {"type": "boolean"}}}
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/health": {"get": {"security": [], "summary": "liveness and version", "responses": {"200": ok("{status, version}")}}},
            "/openapi.json": {"get": {"security": [], "summary": "this document", "responses": {"200": ok("OpenAPI 3")}}},
            "/execute": {"post": {"summary": "run and return the ExecutionResult", "requestBody": json_body("ExecuteBody"), "responses": with_errors(json!({"200": ok("ExecutionResult")}))}},
            "/execute/stream": {"post": {"summary": "run and stream StreamEvents as server-sent events", "requestBody": json_body("ExecuteBody"), "responses": with_errors(json!({"200": {"description": "text/event-stream of `data: <StreamEvent>`", "content": {"text/event-stream": {}}}}))}},
            "/execute/ws": {"get": {"summary": "WebSocket: send {type:execute}, then {type:stdin,data} / {type:signal,signal}; receive StreamEvents; close 1000 when done, 1003 on invalid messages", "responses": {"101": {"description": "switching protocols"}}}},
            "/file": {
                "post": {"summary": "write a file into a session", "requestBody": json_body("PutFile"), "responses": with_errors(json!({"200": ok("{ok: true}")}))},
                "get": {"summary": "read a file from a session", "parameters": [
                    {"name": "sessionId", "in": "query", "required": true, "schema": {"type": "string"}},
                    {"name": "path", "in": "query", "required": true, "schema": {"type": "string"}}],
                    "responses": with_errors(json!({"200": ok("{content: base64}")}))}
            },
            "/sessions": {"get": {"summary": "the caller's sessions", "responses": with_errors(json!({"200": ok("{sessions: [{id, isActive, lastAccessedAt}]}")}))}},
            "/session/{id}": {"delete": {"summary": "stop a session (idempotent)", "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}], "responses": with_errors(json!({"200": ok("{ok: true}")}))}},
            "/cleanup": {"post": {"summary": "remove this server's containers (master key)", "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Cleanup"}}}}, "responses": with_errors(json!({"200": ok("{containers, images}")}))}}
        }
    })
}

async fn openapi() -> impl IntoResponse {
    axum::Json(openapi_document())
}

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok", "version": VERSION}))
}

/// Checks a client-chosen `sessionId` (public for the request fuzzer in `fuzz/`).
pub fn check_session_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "sessionId must be 1-128 characters of letters, digits, '-', '_' or '.'",
        ))
    }
}

/// The engine of session `id` for `caller`, created (persistent mode) if `create`.
async fn session_engine(
    state: &AppState,
    caller: &Caller,
    id: &str,
    create: bool,
) -> Result<DockerEngine, ApiError> {
    check_session_id(id)?;
    let mut sessions = state.sessions.lock().await;
    if let Some(s) = sessions.get_mut(id) {
        // Another tenant's session does not exist as far as this caller can tell.
        if s.owner != caller.0 {
            return Err(ApiError::not_found(format!("session `{id}` not found")));
        }
        s.last_accessed = chrono::Utc::now();
        return Ok(s.engine.clone());
    }
    if !create {
        return Err(ApiError::not_found(format!("session `{id}` not found")));
    }
    let options = EngineOptions {
        mode: Some(Mode::Persistent),
        ..state.options.clone()
    };
    let engine = DockerEngine::connect_with(EngineConfig {
        options,
        ..Default::default()
    })
    .await?;
    sessions.insert(
        id.to_string(),
        Session {
            engine: engine.clone(),
            owner: caller.0.clone(),
            last_accessed: chrono::Utc::now(),
        },
    );
    Ok(engine)
}

/// Where a request runs, after the policy check: in its session (whose engine carries the
/// server's options; the client's are not applied there) or on the shared engine with
/// the client's options.
async fn route(
    state: &AppState,
    caller: &Caller,
    request: &ExecutionRequest,
    options: Option<EngineOptions>,
    session_id: Option<&str>,
) -> Result<(DockerEngine, EngineOptions), ApiError> {
    let options = options.unwrap_or_default();
    state.allow(request, &options)?;
    match session_id {
        Some(id) => Ok((
            session_engine(state, caller, id, true).await?,
            EngineOptions::default(),
        )),
        None => Ok((state.engine.clone(), options)),
    }
}

async fn execute(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Response, ApiError> {
    let (engine, options) = route(
        &state,
        &caller,
        &body.request,
        body.options,
        body.session_id.as_deref(),
    )
    .await?;
    let result = engine.execute_with(body.request, &options).await?;
    Ok(axum::Json(result).into_response())
}

async fn execute_stream(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Response, ApiError> {
    let (engine, options) = route(
        &state,
        &caller,
        &body.request,
        body.options,
        body.session_id.as_deref(),
    )
    .await?;
    let events = engine.execute_stream_with(body.request, &options).await?;
    // Dropping this stream (client gone) drops the run's receiver: the engine kills the
    // execution and reclaims its container.
    let sse = events.map(|ev| {
        Ok::<_, Infallible>(Event::default().data(serde_json::to_string(&ev).unwrap_or_default()))
    });
    Ok(Sse::new(sse)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Messages a WebSocket client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum WsIn {
    /// Start the execution (first message).
    Execute {
        request: Box<ExecutionRequest>,
        #[serde(default)]
        options: Option<Box<EngineOptions>>,
        #[serde(default, rename = "sessionId")]
        session_id: Option<String>,
    },
    /// Feed the running program's stdin.
    Stdin { data: String },
    /// Interrupt the running program.
    Signal { signal: String },
}

async fn execute_ws(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Response {
    ws.on_upgrade(move |socket| run_ws(socket, state, caller))
}

/// Sends an `error` event and closes with `code`.
async fn ws_fail(socket: &mut WebSocket, code: u16, message: String) {
    let ev = isol8::StreamEvent::error(message);
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

async fn run_ws(mut socket: WebSocket, state: Arc<AppState>, caller: Caller) {
    const INVALID: u16 = 1003;
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
    )
    .await
    {
        Ok((engine, options)) => engine
            .execute_interactive(*request, Some(&options))
            .await
            .map_err(ApiError::from),
        Err(ApiError(StatusCode::BAD_REQUEST, message)) => {
            return ws_fail(&mut socket, INVALID, message).await
        }
        Err(e) => Err(e),
    };
    let (mut events, control) = match started {
        Ok(s) => s,
        Err(ApiError(_, message)) => return ws_fail(&mut socket, 1011, message).await,
    };
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { break };
                let last = ev.kind == isol8::StreamEventType::Exit;
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
                    Ok(WsIn::Stdin { data }) => { control.send(isol8::docker::Control::Stdin(data.into_bytes())).await; }
                    Ok(WsIn::Signal { signal }) => match isol8::docker::signal_number(&signal) {
                        Some(n) => { control.send(isol8::docker::Control::Signal(n)).await; }
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

async fn put_file(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    ApiJson(body): ApiJson<PutFileBody>,
) -> Result<Response, ApiError> {
    let content = base64::engine::general_purpose::STANDARD
        .decode(&body.content)
        .map_err(|e| ApiError::bad_request(format!("content is not valid base64: {e}")))?;
    let engine = session_engine(&state, &caller, &body.session_id, false).await?;
    engine.put_file(&body.path, &content).await?;
    Ok(axum::Json(json!({"ok": true})).into_response())
}

async fn get_file(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    query: Result<Query<GetFileQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let engine = session_engine(&state, &caller, &q.session_id, false).await?;
    let bytes = engine.get_file(&q.path).await?;
    Ok(
        axum::Json(json!({"content": base64::engine::general_purpose::STANDARD.encode(bytes)}))
            .into_response(),
    )
}

async fn list_sessions(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> impl IntoResponse {
    let sessions = state.sessions.lock().await;
    let mut list: Vec<SessionInfo> = sessions
        .iter()
        .filter(|(_, s)| s.owner == caller.0)
        .map(|(id, s)| SessionInfo {
            id: id.clone(),
            is_active: s.engine.running() > 0,
            last_accessed_at: s
                .last_accessed
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    axum::Json(json!({ "sessions": list }))
}

async fn delete_session(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let removed = {
        let mut sessions = state.sessions.lock().await;
        match sessions.get(&id) {
            Some(s) if s.owner == caller.0 => sessions.remove(&id),
            _ => None,
        }
    };
    if let Some(s) = removed {
        s.engine.stop().await?;
    }
    // Idempotent: deleting a session that does not exist is fine.
    Ok(axum::Json(json!({"ok": true})).into_response())
}

/// Body of `POST /cleanup`.
#[derive(Debug, Default, Deserialize)]
struct CleanupBody {
    #[serde(default)]
    images: bool,
}

async fn cleanup(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The body is optional: empty means `{}`.
    let images = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        serde_json::from_slice::<CleanupBody>(&body)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .images
    };
    let sessions: Vec<Session> = state
        .sessions
        .lock()
        .await
        .drain()
        .map(|(_, s)| s)
        .collect();
    let mut containers = 0;
    for s in sessions {
        containers += s.engine.live_containers().len();
        s.engine.stop().await?;
    }
    // Only this server's own containers: those labelled with its shared engine's owner.
    let report = isol8::maintenance::cleanup(
        state.engine.docker(),
        &isol8::maintenance::CleanupOptions {
            images,
            owner: Some(state.engine.owner().to_string()),
        },
    )
    .await?;
    Ok(
        axum::Json(json!({"containers": containers + report.containers, "images": report.images}))
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_comparison_is_exact() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn session_ids_are_validated() {
        assert!(check_session_id("job-42_python.1").is_ok());
        for bad in ["", "a/b", "../x", "a b", &"x".repeat(200)] {
            assert!(check_session_id(bad).is_err(), "{bad}");
        }
    }
}
