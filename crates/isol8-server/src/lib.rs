//! `isol8 serve`: the isol8 HTTP API (SPEC section 7) on one shared warm pool.
//!
//! [`app`] builds the router, separate from any socket, so tests drive it with
//! `tower::ServiceExt::oneshot`; [`serve()`] runs a whole server process (engine, key
//! store, listener, signals, graceful shutdown). Ephemeral requests run on the server's
//! shared engine (its warm pool serves every client); a request with a `sessionId` runs
//! in that session's persistent container, created on first use from the client's
//! options and owned by the tenant of the key that created it (the master key sees every
//! tenant's); later requests in it apply their per-execution options.
//!
//! The server drives sandboxes only through [`backend::Backend`] (implemented for
//! [`isol8::DockerEngine`]), so its router is tested over a fake without Docker.
//!
//! Callers authenticate with the master key or, when a key store is configured
//! ([`keys`]), with a database key: the key's tenant owns the sessions it creates, and
//! key management (`/auth/*`) and `/cleanup` need the master key.
//!
//! Load: every execution, ephemeral or in a session, draws from one budget of
//! `maxConcurrent` slots (session engines are siblings of the shared engine); sessions
//! are capped in total and per tenant (`serverPolicy.maxSessions`,
//! `maxSessionsPerTenant`: 429). Every 429 and 503 carries `Retry-After`. Shutdown is
//! [`AppState::drain`] (queued and new requests: 503 at once; running executions go
//! on), then [`AppState::shutdown`] (kill and remove everything).
//!
//! Modules: [`state`] (what handlers share), [`sessions`], [`error`] (every failure and
//! its status), [`extractors`], [`auth`], [`routes`] (one module per route group),
//! [`openapi`], [`metrics`] (`GET /metrics`), [`backend`], [`serve`](mod@serve), [`keys`], [`policy`], [`net`].

pub mod auth;
pub mod backend;
pub mod caller;
pub mod error;
pub mod extractors;
pub mod keys;
pub mod metrics;
pub mod net;
pub mod openapi;
pub mod policy;
pub mod router;
pub mod routes;
pub mod serve;
pub mod sessions;
pub mod state;
pub mod trace;

#[cfg(test)]
mod tests;

pub use caller::MASTER_TENANT;
pub use error::{ApiError, RETRY_AFTER_BUSY_SECS, RETRY_AFTER_SESSIONS_SECS};
pub use extractors::ApiJson;
pub use openapi::openapi_document;
pub use router::app;
pub use routes::execute::ExecuteBody;
pub use routes::files::{GetFileQuery, PutFileBody};
pub use routes::health::VERSION;
pub use routes::MAX_BODY_BYTES;
pub use serve::{serve, ServeConfig, ServeError, ServeEvent};
pub use sessions::{check_session_id, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_TENANT};
pub use state::{AppState, ServerSettings, DEFAULT_BODY_TIMEOUT};
