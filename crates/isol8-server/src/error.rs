//! [`ApiError`]: every way a request can fail, mapped to its status code in one place
//! ([`ApiError::status`]) and answered as `{"error": message}`.
//!
//! 4xx answers say what was wrong with the request, in the texts clients rely on
//! (`Missing Authorization header`, `Invalid API key`…). 5xx answers never carry the
//! engine's or a database's internal text (Docker errors, container ids, agent logs,
//! connection details): they say what kind of failure it was and name the request's
//! execution id, and the server log has the details under that id (and the client's
//! `X-Request-Id`, when it sent one). Every 503 and 429 carries `Retry-After`.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::keys::{StoreError, MAX_TTL};
use crate::policy::PolicyError;
use crate::trace::Trace;

/// `Retry-After` (seconds) of a 503: no slot in time, shutting down, Docker or the key
/// store unreachable.
pub const RETRY_AFTER_BUSY_SECS: u32 = 1;

/// `Retry-After` (seconds) of a 429: the session caps are reached (a session frees up
/// only when one is deleted or pruned).
pub const RETRY_AFTER_SESSIONS_SECS: u32 = 5;

/// The body of every error answer: `{"error": message}`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Authentication or authorisation (401, 403).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request's body, query or fields (400, 408, 413, 415).
    #[error(transparent)]
    Input(#[from] InputError),
    /// Refused by the server policy (400).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Session ids, lookups and caps (400, 404, 409, 429).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Database key management (400, 404).
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The engine refused or failed the request; status by the error's kind (400 for
    /// the request's own mistakes, 503 busy or unreachable, 500 otherwise).
    #[error("{source}")]
    Engine {
        /// The engine's error (logged, never sent on a 5xx).
        source: isol8::Error,
        /// The request it failed.
        trace: Trace,
    },
    /// The API key store failed (503).
    #[error("{source}")]
    KeyStore {
        /// The store's error (logged, never sent).
        source: StoreError,
        /// The request it failed.
        trace: Trace,
    },
    /// The server is draining for shutdown (503).
    #[error("the server is shutting down; retry later or on another instance")]
    ShuttingDown,
    /// No such route (404).
    #[error("Not found")]
    NoRoute,
}

/// Who may call (401, 403).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("Missing Authorization header")]
    MissingHeader,
    /// A key that is not the master key nor a valid database key (unknown, revoked and
    /// expired keys all get this same answer).
    #[error("Invalid API key")]
    InvalidKey,
    /// A database key on a master-only route (the text isol8 v0.20 answers).
    #[error("Master key required for this operation")]
    MasterKeyRequired,
    /// A database key revoking another key.
    #[error("Master key required for this operation: a database key may only revoke itself")]
    RevokeOther,
    /// A database key naming another tenant's sessions (`tenantId`).
    #[error("tenantId: a database key addresses only its own tenant's sessions; other tenants' need the master key")]
    OtherTenant,
}

/// What is wrong with the request's body, query or fields.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The body or query was refused while being read or parsed (malformed JSON, wrong
    /// types, missing fields, too large, wrong content type); `status` is 400, 413 or 415.
    #[error("{message}")]
    Rejected {
        /// The status for it.
        status: StatusCode,
        /// The parser's explanation.
        message: String,
    },
    /// The body was not received within the server's body timeout (408).
    #[error("the request body was not received within {} s", .0.as_secs_f64())]
    BodyTimeout(Duration),
    /// A field that must be base64 is not.
    #[error("content is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// A key name or tenant outside 1-128 printable characters.
    #[error("{0} must be 1-128 printable characters")]
    Label(&'static str),
    /// `POST /auth/keys` without a name, or with an empty one (the text isol8 v0.20
    /// answers).
    #[error("name is required")]
    NameRequired,
    /// A key lifetime outside 1 ms to ten years.
    #[error("ttlMs must be between 1 and {} (ten years)", MAX_TTL.as_millis())]
    Ttl,
}

/// Session ids, lookups and caps.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The id is not 1-128 characters of letters, digits, `-`, `_`, `.` (400).
    #[error("sessionId must be 1-128 characters of letters, digits, '-', '_' or '.'")]
    InvalidId,
    /// The caller's tenant has no session with this id (404; the reference's words).
    #[error("Session not found")]
    NotFound(String),
    /// A `tenantId` that is not 1-128 printable characters (400).
    #[error("tenantId must be 1-128 printable characters")]
    InvalidTenant,
    /// The master key named, without `tenantId`, an id several tenants hold (409).
    #[error("several tenants have a session `{id}` ({tenants}); name one with tenantId")]
    Ambiguous {
        /// The session id.
        id: String,
        /// The tenants holding it, comma-separated.
        tenants: String,
    },
    /// `serverPolicy.maxSessions` reached (429).
    #[error("the server holds its maximum of {0} sessions (serverPolicy.maxSessions); delete one or retry later")]
    ServerFull(usize),
    /// `serverPolicy.maxSessionsPerTenant` reached (429).
    #[error("you hold the maximum of {0} sessions per tenant (serverPolicy.maxSessionsPerTenant); delete one or retry later")]
    TenantFull(usize),
}

/// Database key management (the texts isol8 v0.20 answers).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The server has no key store (400); `isol8 serve --auth-db PATH` or
    /// `auth.enabled` gives it one.
    #[error("DB-backed auth is not enabled")]
    Disabled,
    /// No key has this id (404).
    #[error("Key not found")]
    NotFound,
}

/// The status of an engine error.
fn engine_status(e: &isol8::Error) -> StatusCode {
    match e {
        isol8::Error::QueueTimeout { .. }
        | isol8::Error::Stopped
        | isol8::Error::DockerUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        // The run was cut off by the infrastructure, not by the request.
        isol8::Error::SandboxLost(_) | isol8::Error::SandboxUnresponsive(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        e if e.is_user_error() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What a client is told about a lost sandbox (the `sandbox lost: ` prefix is what
/// clients, `RemoteEngine` included, recognise).
pub(crate) fn lost_message(id: &str) -> String {
    format!("sandbox lost: the sandbox went away while it ran (its container was killed, removed or stopped); retry the execution; see the server log (execution {id})")
}

/// What a client is told about an unresponsive sandbox (prefix `sandbox unresponsive: `).
pub(crate) fn unresponsive_message(id: &str) -> String {
    format!("sandbox unresponsive: the sandbox stopped answering (its container is paused or frozen) and was discarded; retry the execution; see the server log (execution {id})")
}

impl ApiError {
    /// An engine error of the request traced by `trace`.
    pub fn engine(source: isol8::Error, trace: &Trace) -> Self {
        ApiError::Engine {
            source,
            trace: trace.clone(),
        }
    }

    /// A key store error of the request traced by `trace`.
    pub fn key_store(source: StoreError, trace: &Trace) -> Self {
        ApiError::KeyStore {
            source,
            trace: trace.clone(),
        }
    }

    /// The status code: the one place where failures become statuses.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Auth(AuthError::MissingHeader) => StatusCode::UNAUTHORIZED,
            ApiError::Auth(_) => StatusCode::FORBIDDEN,
            ApiError::Input(InputError::Rejected { status, .. }) => *status,
            ApiError::Input(InputError::BodyTimeout(_)) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Input(_) | ApiError::Policy(_) => StatusCode::BAD_REQUEST,
            ApiError::Session(SessionError::InvalidId | SessionError::InvalidTenant) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Session(SessionError::Ambiguous { .. }) => StatusCode::CONFLICT,
            ApiError::Session(SessionError::NotFound(_)) => StatusCode::NOT_FOUND,
            ApiError::Session(SessionError::ServerFull(_) | SessionError::TenantFull(_)) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Keys(KeyError::Disabled) => StatusCode::BAD_REQUEST,
            ApiError::Keys(KeyError::NotFound) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Engine { source, .. } => engine_status(source),
            ApiError::KeyStore { .. } | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The message sent to the client: the error itself for a 4xx; for a 5xx, what kind
    /// of failure it was, never the engine's or the store's internal text.
    pub fn client_message(&self) -> String {
        match self {
            ApiError::Engine { source, trace } => match source {
                e if engine_status(e).is_client_error() => e.to_string(),
                // Neither says anything internal: the cause and what to do.
                isol8::Error::QueueTimeout { .. } | isol8::Error::Stopped => source.to_string(),
                isol8::Error::DockerUnavailable { .. } => format!(
                    "the sandbox backend is unreachable; retry later; see the server log (execution {})",
                    trace.id
                ),
                isol8::Error::SandboxLost(_) => lost_message(&trace.id),
                isol8::Error::SandboxUnresponsive(_) => unresponsive_message(&trace.id),
                _ => format!(
                    "the sandbox failed; see the server log (execution {})",
                    trace.id
                ),
            },
            ApiError::KeyStore { trace, .. } => format!(
                "the API key store is unavailable; retry later; see the server log (execution {})",
                trace.id
            ),
            other => other.to_string(),
        }
    }

    /// `Retry-After` seconds: on every 503 and 429.
    pub fn retry_after(&self) -> Option<u32> {
        match self.status() {
            StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_BUSY_SECS),
            StatusCode::TOO_MANY_REQUESTS => Some(RETRY_AFTER_SESSIONS_SECS),
            _ => None,
        }
    }

    /// Logs a server-side failure (5xx) with its details, its execution id and the
    /// client's request id; 4xx answers are the client's business and are not logged.
    pub fn log(&self) {
        let status = self.status();
        if !status.is_server_error() {
            return;
        }
        let trace = match self {
            ApiError::Engine { trace, .. } | ApiError::KeyStore { trace, .. } => Some(trace),
            _ => None,
        };
        let execution = trace.map_or("-", |t| t.id.as_str());
        let request_id = trace.and_then(|t| t.request_id.as_deref()).unwrap_or("-");
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(%execution, %request_id, status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::warn!(%execution, %request_id, status = status.as_u16(), error = %self, "request refused");
        }
    }
}

impl IntoResponse for ApiError {
    /// `{"error": message}` with the status; a 503 or 429 also carries `Retry-After`.
    /// A 5xx is logged first.
    fn into_response(self) -> Response {
        self.log();
        let mut resp = (
            self.status(),
            axum::Json(ErrorBody {
                error: self.client_message(),
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
