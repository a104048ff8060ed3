//! `isol8 serve`: the isol8 HTTP API (SPEC section 7) on one shared warm pool.
//!
//! [`app`] builds the router, separate from any socket, so tests drive it with
//! `tower::ServiceExt::oneshot`. Ephemeral requests run on the server's shared
//! [`DockerEngine`] (its warm pool serves every client); a request with a `sessionId`
//! runs in that session's persistent container, created on first use and owned by the
//! tenant of the key that created it.
//!
//! Callers authenticate with the master key or, when a key store is configured
//! ([`keys`]), with a database key: the key's tenant owns the sessions it creates, and
//! key management (`/auth/*`) and `/cleanup` need the master key.
//!
//! Load: every execution, ephemeral or in a session, draws from one budget of
//! `maxConcurrent` slots (session engines are [`DockerEngine::sibling`]s of the shared
//! engine); sessions are capped in total and per tenant (`serverPolicy.maxSessions`,
//! `maxSessionsPerTenant`: 429). Every 429 and 503 carries `Retry-After`. Shutdown is
//! [`AppState::drain`] (queued and new requests: 503 at once; running executions go
//! on), then [`AppState::shutdown`] (kill and remove everything).

pub mod keys;
pub mod net;
pub mod policy;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
use isol8::{DockerEngine, Engine, EngineOptions, ExecutionRequest};
use isol8_protocol::options::Mode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;

/// Largest request body accepted (files travel base64 inside JSON).
pub const MAX_BODY_BYTES: usize = 48 << 20;

/// Server version reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default bound on receiving a whole request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Lifetime of a key issued by `POST /auth/login` when neither the body nor
/// `auth.defaultTtlMs` gives one.
pub const DEFAULT_LOGIN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The tenant of the master key.
pub const MASTER_TENANT: &str = "master";

/// Sessions alive at once when `serverPolicy.maxSessions` is not set.
pub const DEFAULT_MAX_SESSIONS: usize = 32;

/// Sessions one tenant may hold when `serverPolicy.maxSessionsPerTenant` is not set.
pub const DEFAULT_MAX_SESSIONS_PER_TENANT: usize = 16;

/// `Retry-After` (seconds) of a 503: no slot in time, shutting down, Docker or the key
/// store unreachable.
pub const RETRY_AFTER_BUSY_SECS: u32 = 1;

/// `Retry-After` (seconds) of a 429: the session caps are reached (a session frees up
/// only when one is deleted or pruned).
pub const RETRY_AFTER_SESSIONS_SECS: u32 = 5;

/// Server settings beyond the engine and the master key.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Caps on what clients may request.
    pub policy: isol8::config::ServerPolicy,
    /// Database keys (none: the master key only).
    pub keys: Option<keys::Keys>,
    /// Bound on receiving a request body; a slower client gets 408.
    pub body_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            policy: isol8::config::ServerPolicy::default(),
            keys: None,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// Sessions are keyed by tenant and id: each tenant has its own namespace of session
/// ids, so two tenants may both use `job-1` and neither can observe the other's.
type SessionKey = (String, String);

fn session_key(caller: &Caller, id: &str) -> SessionKey {
    (caller.tenant.clone(), id.to_string())
}

/// One persistent session (its tenant is the first half of its key).
struct Session {
    engine: DockerEngine,
    last_accessed: chrono::DateTime<chrono::Utc>,
}

/// Everything the handlers share.
pub struct AppState {
    engine: DockerEngine,
    options: EngineOptions,
    master_key: String,
    /// Held only for map operations, never across a Docker call.
    sessions: Mutex<HashMap<SessionKey, Session>>,
    policy: isol8::config::ServerPolicy,
    keys: Option<keys::Keys>,
    body_timeout: Duration,
    /// Set by [`AppState::drain`]: new requests get 503.
    draining: AtomicBool,
    /// WebSocket executions whose socket is still open.
    websockets: AtomicUsize,
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
        Self::with_settings(
            engine,
            options,
            master_key,
            ServerSettings {
                policy,
                ..Default::default()
            },
        )
    }

    /// State with every setting: policy, database keys, body timeout.
    pub fn with_settings(
        engine: DockerEngine,
        options: EngineOptions,
        master_key: String,
        settings: ServerSettings,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            engine,
            options,
            master_key,
            sessions: Mutex::new(HashMap::new()),
            policy: settings.policy,
            keys: settings.keys,
            body_timeout: settings.body_timeout,
            draining: AtomicBool::new(false),
            websockets: AtomicUsize::new(0),
        })
    }

    /// Checks `req` and the client's `opts` against the policy, on the settings the run
    /// would actually get: `opts` laid over the shared engine's options and resolved.
    fn allow(&self, req: &ExecutionRequest, opts: &EngineOptions) -> Result<(), ApiError> {
        let merged = self.engine.settings_with(opts)?;
        policy::check(&self.policy, req, opts, self.engine.settings(), &merged)
            .map_err(|e| ApiError::bad_request(e.to_string()))
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
        let expired: Vec<(SessionKey, Session)> = {
            let mut sessions = self.sessions.lock().await;
            let ids: Vec<SessionKey> = sessions
                .iter()
                .filter(|(_, s)| s.engine.running() == 0 && s.last_accessed < cutoff)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| sessions.remove(&id).map(|s| (id, s)))
                .collect()
        };
        let n = expired.len();
        for ((tenant, id), s) in expired {
            tracing::info!(session = %id, tenant = %tenant, "pruning idle session");
            let _ = s.engine.stop().await;
        }
        n
    }

    /// The shared engine that serves ephemeral requests.
    pub fn engine(&self) -> &DockerEngine {
        &self.engine
    }

    /// First step of a graceful shutdown: from now on every request gets 503 (with
    /// `Retry-After`), and executions queued for a slot or for their session are refused
    /// at once with 503; executions already running go on. Irreversible.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.engine.slots().close();
    }

    /// The answer to an engine error: while draining, an execution refused because the
    /// slots closed says the server is shutting down.
    fn refusal(&self, e: isol8::Error) -> ApiError {
        match e {
            isol8::Error::Stopped if self.is_draining() => shutting_down(),
            e => e.into(),
        }
    }

    /// True once [`AppState::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Executions holding a slot right now, on the shared engine and in every session.
    pub fn executing(&self) -> usize {
        self.engine.slots().in_use()
    }

    /// WebSocket executions whose socket is still open (they outlive their HTTP request,
    /// so a graceful shutdown waits for them separately).
    pub fn open_websockets(&self) -> usize {
        self.websockets.load(Ordering::SeqCst)
    }

    /// Stops every session and the shared engine at once: running executions are killed
    /// (buffered requests get 503, streams a final `sandbox lost` error) and every
    /// container removed.
    pub async fn shutdown(&self) {
        self.drain();
        let sessions: Vec<Session> = self.sessions.lock().await.drain().map(|(_, s)| s).collect();
        let stops = sessions
            .iter()
            .map(|s| &s.engine)
            .chain(std::iter::once(&self.engine))
            .map(|e| e.stop());
        futures_util::future::join_all(stops).await;
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
    fn forbidden(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::FORBIDDEN, msg.into())
    }
    fn too_many(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::TOO_MANY_REQUESTS, msg.into())
    }
}

impl From<keys::StoreError> for ApiError {
    fn from(e: keys::StoreError) -> Self {
        tracing::error!("{e}");
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl IntoResponse for ApiError {
    /// `{"error": message}`; a 503 or 429 (busy: retry) also carries `Retry-After`.
    fn into_response(self) -> Response {
        let retry_after = match self.0 {
            StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_BUSY_SECS),
            StatusCode::TOO_MANY_REQUESTS => Some(RETRY_AFTER_SESSIONS_SECS),
            _ => None,
        };
        let mut resp = (self.0, axum::Json(json!({ "error": self.1 }))).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        resp
    }
}

impl From<isol8::Error> for ApiError {
    fn from(e: isol8::Error) -> Self {
        let status = match &e {
            isol8::Error::QueueTimeout { .. }
            | isol8::Error::Stopped
            | isol8::Error::DockerUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            // The run was cut off by the infrastructure, not by the request.
            isol8::Error::SandboxLost(_) | isol8::Error::SandboxUnresponsive(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            e if e.is_user_error() => StatusCode::BAD_REQUEST,
            isol8::Error::ImageMissing { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

fn body_timed_out(limit: Duration) -> ApiError {
    ApiError(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request body was not received within {} s",
            limit.as_secs_f64()
        ),
    )
}

/// `Json` whose rejections (malformed JSON, wrong types, missing fields, too large) are
/// JSON errors with the right status; a body not received within the server's body
/// timeout is a 408.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<Arc<AppState>> for ApiJson<T>
where
    axum::Json<T>: FromRequest<Arc<AppState>, Rejection = JsonRejection>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let limit = state.body_timeout;
        let parsed = tokio::time::timeout(limit, axum::Json::<T>::from_request(req, state))
            .await
            .map_err(|_| body_timed_out(limit))?;
        match parsed {
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

/// Who is calling: a tenant, and the database key used (none for the master key).
#[derive(Debug, Clone)]
struct Caller {
    tenant: String,
    key_id: Option<String>,
}

impl Caller {
    fn master() -> Caller {
        Caller {
            tenant: MASTER_TENANT.into(),
            key_id: None,
        }
    }

    fn is_master(&self) -> bool {
        self.key_id.is_none()
    }

    /// Refuses database keys.
    fn require_master(&self) -> Result<(), ApiError> {
        if self.is_master() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this route needs the master key"))
        }
    }
}

use keys::constant_time_eq;

fn invalid_key() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"error": "Invalid API key"})),
    )
        .into_response()
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
    let caller = if constant_time_eq(token.as_bytes(), state.master_key.as_bytes()) {
        Caller::master()
    } else if let Some(keys) = &state.keys {
        // Unknown, revoked and expired keys all look the same to the client.
        match keys.authenticate(token).await {
            Ok(Some(info)) => Caller {
                tenant: info.tenant,
                key_id: Some(info.id),
            },
            Ok(None) => return invalid_key(),
            Err(e) => return ApiError::from(e).into_response(),
        }
    } else {
        return invalid_key();
    };
    req.extensions_mut().insert(caller);
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
        .route("/auth/keys", post(create_key).get(list_keys))
        .route("/auth/keys/{id}", delete(revoke_key))
        .route("/auth/login", post(login))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .merge(protected)
        .fallback(|| async { ApiError::not_found("Not found") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_when_draining,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// While the server drains for shutdown, every request (health checks included, so load
/// balancers move away) gets 503 with `Retry-After`.
async fn refuse_when_draining(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if state.is_draining() {
        return shutting_down().into_response();
    }
    next.run(req).await
}

fn shutting_down() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is shutting down; retry later or on another instance".into(),
    )
}

/// The OpenAPI description of every route.
pub fn openapi_document() -> serde_json::Value {
    let json_body = |schema: &str| json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    let ok = |desc: &str| json!({"description": desc, "content": {"application/json": {}}});
    let schema_reply = |desc: &str, schema: &str| json!({"description": desc, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    let errors = json!({
        "400": {"description": "bad input: {\"error\": message}"},
        "401": {"description": "{\"error\":\"Missing Authorization header\"}"},
        "403": {"description": "{\"error\":\"Invalid API key\"} (unknown, revoked or expired), or a database key on a master-only route"},
        "408": {"description": "the request body was not received in time"},
        "404": {"description": "unknown session or route"},
        "413": {"description": "body too large"},
        "429": {"description": "the session caps (serverPolicy.maxSessions, maxSessionsPerTenant) are reached; carries Retry-After"},
        "500": {"description": "engine failure, e.g. `sandbox lost: …` (its container was killed from outside) or `sandbox unresponsive: …` (paused)"},
        "503": {"description": "no execution slot within the request's timeout, the server is shutting down, or Docker is unreachable; carries Retry-After"}
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
                "Cleanup": {"type": "object", "properties": {"images": {"type": "boolean"}}},
                "CreateKey": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string", "description": "label, 1-128 characters"},
                    "tenant": {"type": "string", "description": "tenant the key acts as (owner of its sessions); default: a tenant of its own (the key's id)"},
                    "ttlMs": {"type": "integer", "minimum": 1, "description": "lifetime; default auth.defaultTtlMs, else no expiry"}}},
                "Login": {"type": "object", "properties": {
                    "name": {"type": "string", "description": "label; default `login`"},
                    "tenant": {"type": "string", "description": "tenant the key acts as; default the caller's (`master`)"},
                    "ttlMs": {"type": "integer", "minimum": 1, "description": "lifetime; default auth.defaultTtlMs, else 30 days"}}},
                "KeyInfo": {"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "tenant": {"type": "string"},
                    "createdAt": {"type": "string", "format": "date-time"},
                    "expiresAt": {"type": "string", "format": "date-time", "nullable": true},
                    "revoked": {"type": "boolean"}}},
                "IssuedKey": {"allOf": [{"$ref": "#/components/schemas/KeyInfo"}, {"type": "object", "properties": {
                    "key": {"type": "string", "description": "`isol8_` + 64 hex characters; shown only in this reply"}}}]}
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/health": {"get": {"security": [], "summary": "liveness and version", "responses": {"200": ok("{status, version}")}}},
            "/openapi.json": {"get": {"security": [], "summary": "this document", "responses": {"200": ok("OpenAPI 3")}}},
            "/execute": {"post": {"summary": "run and return the ExecutionResult", "requestBody": json_body("ExecuteBody"), "responses": with_errors(json!({"200": ok("ExecutionResult")}))}},
            "/execute/stream": {"post": {"summary": "run and stream StreamEvents as server-sent events; ends with an exit event, or, when the sandbox was lost, with an error event `sandbox lost: …` and no exit event", "requestBody": json_body("ExecuteBody"), "responses": with_errors(json!({"200": {"description": "text/event-stream of `data: <StreamEvent>`", "content": {"text/event-stream": {}}}}))}},
            "/execute/ws": {"get": {"summary": "WebSocket: send {type:execute}, then {type:stdin,data} / {type:signal,signal}; receive StreamEvents; close 1000 after the exit event, 1003 on invalid messages, 1013 when busy or shutting down (retry), 1011 when the sandbox was lost (a final `sandbox lost: …` error event, no exit event)", "responses": {"101": {"description": "switching protocols"}}}},
            "/file": {
                "post": {"summary": "write a file into a session", "requestBody": json_body("PutFile"), "responses": with_errors(json!({"200": ok("{ok: true}")}))},
                "get": {"summary": "read a file from a session", "parameters": [
                    {"name": "sessionId", "in": "query", "required": true, "schema": {"type": "string"}},
                    {"name": "path", "in": "query", "required": true, "schema": {"type": "string"}}],
                    "responses": with_errors(json!({"200": ok("{content: base64}")}))}
            },
            "/sessions": {"get": {"summary": "the caller's sessions", "responses": with_errors(json!({"200": ok("{sessions: [{id, isActive, lastAccessedAt}]}")}))}},
            "/session/{id}": {"delete": {"summary": "stop a session (idempotent)", "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}], "responses": with_errors(json!({"200": ok("{ok: true}")}))}},
            "/cleanup": {"post": {"summary": "remove this server's containers (master key)", "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Cleanup"}}}}, "responses": with_errors(json!({"200": ok("{containers, images}")}))}},
            "/auth/keys": {
                "post": {"summary": "create a database key (master key); the plaintext key is returned only here", "requestBody": json_body("CreateKey"), "responses": with_errors(json!({"201": schema_reply("the key and its metadata", "IssuedKey")}))},
                "get": {"summary": "list database keys' metadata, never the keys (master key)", "responses": with_errors(json!({"200": ok("{keys: [KeyInfo]}")}))}
            },
            "/auth/keys/{id}": {"delete": {"summary": "revoke a key (idempotent); the master key revokes any, a database key only itself", "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}], "responses": with_errors(json!({"200": ok("{ok: true}")}))}},
            "/auth/login": {"post": {"summary": "issue an expiring key acting as the caller (master key), e.g. for `isol8 login`", "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Login"}}}}, "responses": with_errors(json!({"201": schema_reply("the key and its metadata", "IssuedKey")}))}}
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
    let key = session_key(caller, id);
    let mut sessions = state.sessions.lock().await;
    // Only the caller's tenant's sessions are looked at: another tenant's `id` is not
    // there, busy or not.
    if let Some(s) = sessions.get_mut(&key) {
        s.last_accessed = chrono::Utc::now();
        return Ok(s.engine.clone());
    }
    if !create {
        return Err(ApiError::not_found(format!("session `{id}` not found")));
    }
    let max_total = state
        .policy
        .max_sessions
        .map_or(DEFAULT_MAX_SESSIONS, |n| n as usize);
    if sessions.len() >= max_total {
        return Err(ApiError::too_many(format!(
            "the server holds its maximum of {max_total} sessions (serverPolicy.maxSessions); delete one or retry later"
        )));
    }
    let max_tenant = state
        .policy
        .max_sessions_per_tenant
        .map_or(DEFAULT_MAX_SESSIONS_PER_TENANT, |n| n as usize);
    if sessions.keys().filter(|(t, _)| *t == caller.tenant).count() >= max_tenant {
        return Err(ApiError::too_many(format!(
            "you hold the maximum of {max_tenant} sessions per tenant (serverPolicy.maxSessionsPerTenant); delete one or retry later"
        )));
    }
    // No Docker call under the lock: a sibling engine is created without one, and its
    // container is started by its first execution, outside this lock.
    let engine = state.engine.sibling(EngineOptions {
        mode: Some(Mode::Persistent),
        ..state.options.clone()
    })?;
    sessions.insert(
        key,
        Session {
            engine: engine.clone(),
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
    let result = engine
        .execute_with(body.request, &options)
        .await
        .map_err(|e| state.refusal(e))?;
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
    let events = engine
        .execute_stream_with(body.request, &options)
        .await
        .map_err(|e| state.refusal(e))?;
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

/// Counts an open WebSocket execution for as long as it lives.
struct OpenSocket(Arc<AppState>);

impl OpenSocket {
    fn new(state: &Arc<AppState>) -> OpenSocket {
        state.websockets.fetch_add(1, Ordering::SeqCst);
        OpenSocket(state.clone())
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.websockets.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Close code of a WebSocket whose execution could not start: 1003 for invalid input,
/// 1013 ("try again later") when busy or shutting down, 1011 otherwise.
fn close_code(status: StatusCode) -> u16 {
    match status {
        StatusCode::BAD_REQUEST => 1003,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => 1013,
        _ => 1011,
    }
}

async fn run_ws(mut socket: WebSocket, state: Arc<AppState>, caller: Caller) {
    const INVALID: u16 = 1003;
    let _open = OpenSocket::new(&state);
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
            .map_err(|e| state.refusal(e)),
        Err(ApiError(StatusCode::BAD_REQUEST, message)) => {
            return ws_fail(&mut socket, INVALID, message).await
        }
        Err(e) => Err(e),
    };
    let (mut events, control) = match started {
        Ok(s) => s,
        // Refused by validation (the engine's included): like invalid input, 1003.
        Err(ApiError(status, message)) => {
            return ws_fail(&mut socket, close_code(status), message).await
        }
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
        .filter(|((tenant, _), _)| *tenant == caller.tenant)
        .map(|((_, id), s)| SessionInfo {
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
    let removed = state
        .sessions
        .lock()
        .await
        .remove(&session_key(&caller, &id));
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
    axum::Extension(caller): axum::Extension<Caller>,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require_master()?;
    let limit = state.body_timeout;
    let body = tokio::time::timeout(limit, axum::body::Bytes::from_request(req, &state))
        .await
        .map_err(|_| body_timed_out(limit))?
        .map_err(|e| ApiError(e.status(), e.body_text()))?;
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

/// Body of `POST /auth/keys`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateKeyBody {
    name: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    ttl_ms: Option<u64>,
}

/// Body of `POST /auth/login` (every field optional; an empty body means `{}`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LoginBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    ttl_ms: Option<u64>,
}

fn key_store(state: &AppState) -> Result<&keys::Keys, ApiError> {
    state.keys.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "database keys are not enabled on this server (start it with --auth-db or set auth.enabled)",
        )
    })
}

/// Checks a name or tenant: 1-128 printable characters.
fn check_label(field: &str, v: &str) -> Result<(), ApiError> {
    if v.trim().is_empty() || v.chars().count() > 128 || v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1-128 printable characters"
        )));
    }
    Ok(())
}

fn check_ttl(ttl_ms: Option<u64>) -> Result<Option<Duration>, ApiError> {
    match ttl_ms {
        None => Ok(None),
        Some(ms) if ms == 0 || Duration::from_millis(ms) > keys::MAX_TTL => {
            Err(ApiError::bad_request(format!(
                "ttlMs must be between 1 and {} (ten years)",
                keys::MAX_TTL.as_millis()
            )))
        }
        Some(ms) => Ok(Some(Duration::from_millis(ms))),
    }
}

/// The reply to a new key: the plaintext key (shown only here) and its metadata.
fn issued(key: String, info: &keys::KeyInfo) -> Response {
    let mut v = info.to_json();
    v["key"] = json!(key);
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

async fn create_key(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<Response, ApiError> {
    caller.require_master()?;
    let keys = key_store(&state)?;
    check_label("name", &body.name)?;
    if let Some(t) = &body.tenant {
        check_label("tenant", t)?;
    }
    let ttl = check_ttl(body.ttl_ms)?;
    let (key, info) = keys.create(&body.name, body.tenant.as_deref(), ttl).await?;
    tracing::info!(id = %info.id, tenant = %info.tenant, "API key created");
    Ok(issued(key, &info))
}

async fn list_keys(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    caller.require_master()?;
    let list = key_store(&state)?.store().list().await?;
    let list: Vec<serde_json::Value> = list.iter().map(keys::KeyInfo::to_json).collect();
    Ok(axum::Json(json!({ "keys": list })).into_response())
}

async fn revoke_key(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let keys = key_store(&state)?;
    // A database key may revoke itself (`isol8 logout`), nothing else.
    if !caller.is_master() && caller.key_id.as_deref() != Some(id.as_str()) {
        return Err(ApiError::forbidden(
            "a database key may only revoke itself; other keys need the master key",
        ));
    }
    if !keys.store().revoke(&id).await? {
        return Err(ApiError::not_found(format!("API key `{id}` not found")));
    }
    tracing::info!(id = %id, "API key revoked");
    Ok(axum::Json(json!({"ok": true})).into_response())
}

async fn login(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require_master()?;
    let keys = key_store(&state)?;
    let limit = state.body_timeout;
    let bytes = tokio::time::timeout(limit, axum::body::Bytes::from_request(req, &state))
        .await
        .map_err(|_| body_timed_out(limit))?
        .map_err(|e| ApiError(e.status(), e.body_text()))?;
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        LoginBody::default()
    } else {
        serde_json::from_slice::<LoginBody>(&bytes)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let name = body.name.unwrap_or_else(|| "login".into());
    check_label("name", &name)?;
    // The issued key acts as the caller: the master's tenant unless told otherwise.
    let tenant = body.tenant.unwrap_or_else(|| caller.tenant.clone());
    check_label("tenant", &tenant)?;
    let ttl = check_ttl(body.ttl_ms)?
        .or(keys.default_ttl())
        .unwrap_or(DEFAULT_LOGIN_TTL);
    let (key, info) = keys.create(&name, Some(&tenant), Some(ttl)).await?;
    tracing::info!(id = %info.id, tenant = %info.tenant, "login key issued");
    Ok(issued(key, &info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_busy_answer_carries_retry_after_and_nothing_else_does() {
        let busy = [
            isol8::Error::QueueTimeout {
                waited_ms: 10,
                max_concurrent: 1,
            },
            isol8::Error::Stopped,
            isol8::Error::DockerUnavailable {
                detail: "gone".into(),
            },
        ];
        let mut answers: Vec<ApiError> = busy.into_iter().map(ApiError::from).collect();
        answers.push(shutting_down());
        answers.push(ApiError::from(keys::StoreError {
            op: "find",
            message: "database unreachable".into(),
        }));
        answers.push(ApiError::too_many("caps"));
        for a in answers {
            let status = a.0;
            let resp = a.into_response();
            assert!(
                matches!(
                    resp.status(),
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
                ),
                "{status}"
            );
            let secs: u32 = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no Retry-After on {status}"));
            assert!(secs >= 1);
        }
        for e in [
            isol8::Error::SandboxLost("killed".into()),
            isol8::Error::SandboxUnresponsive("paused".into()),
        ] {
            let resp = ApiError::from(e).into_response();
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(resp.headers().get(header::RETRY_AFTER).is_none());
        }
        let resp = ApiError::bad_request("no").into_response();
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn session_ids_are_validated() {
        assert!(check_session_id("job-42_python.1").is_ok());
        for bad in ["", "a/b", "../x", "a b", &"x".repeat(200)] {
            assert!(check_session_id(bad).is_err(), "{bad}");
        }
    }
}
