//! [`AppState`]: what every handler shares — the backend (shared engine), the server's
//! settings (master key, policy, key store, body timeout), the sessions, and the
//! draining flag of a graceful shutdown.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use isol8::{DockerEngine, EngineOptions, ExecutionRequest};

use crate::backend::{Backend, Executor};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::keys;
use crate::metrics::Metrics;
use crate::policy;
use crate::sessions::Sessions;
use crate::trace::Trace;

/// Default bound on receiving a whole request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Server settings beyond the engine and the master key.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Caps on what clients may request.
    pub policy: isol8::config::ServerPolicy,
    /// Database keys (none: the master key only).
    pub keys: Option<keys::Keys>,
    /// Bound on receiving a request body; a slower client gets 408.
    pub body_timeout: Duration,
    /// What `GET /metrics` shows. For the engine's figures, the same value must be the
    /// engine's observer (`EngineConfig::observer`), as `isol8 serve` makes it.
    pub metrics: Arc<Metrics>,
    /// Serve `GET /metrics` without an API key (config `metrics.public`).
    pub metrics_public: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            policy: isol8::config::ServerPolicy::default(),
            keys: None,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            metrics: Arc::new(Metrics::new()),
            metrics_public: false,
        }
    }
}

/// Everything the handlers share.
pub struct AppState {
    /// The shared engine, as the server drives it.
    backend: Arc<dyn Backend>,
    /// The same engine, as what runs ephemeral requests.
    shared: Arc<dyn Executor>,
    /// The defaults of session engines.
    options: EngineOptions,
    master_key: String,
    pub(crate) sessions: Sessions,
    policy: isol8::config::ServerPolicy,
    keys: Option<keys::Keys>,
    body_timeout: Duration,
    /// Set by [`AppState::drain`]: new requests get 503.
    draining: AtomicBool,
    /// WebSocket executions whose socket is still open.
    websockets: AtomicUsize,
    metrics: Arc<Metrics>,
    metrics_public: bool,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State around a shared Docker engine; `options` are the defaults for session
    /// engines.
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
        Self::with_backend(Arc::new(engine), options, master_key, settings)
    }

    /// State over any [`Backend`] (the Docker engine, or a test's fake).
    pub fn with_backend<B: Backend + 'static>(
        backend: Arc<B>,
        options: EngineOptions,
        master_key: String,
        settings: ServerSettings,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            shared: backend.clone(),
            backend,
            options,
            master_key,
            sessions: Sessions::new(&settings.policy),
            policy: settings.policy,
            keys: settings.keys,
            body_timeout: settings.body_timeout,
            draining: AtomicBool::new(false),
            websockets: AtomicUsize::new(0),
            metrics: settings.metrics,
            metrics_public: settings.metrics_public,
        })
    }

    /// The shared engine that serves ephemeral requests.
    pub fn engine(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The shared engine as what runs ephemeral requests.
    pub(crate) fn shared(&self) -> Arc<dyn Executor> {
        self.shared.clone()
    }

    /// The engine of the session `id` that `caller` addresses (in `tenant`, if named);
    /// with `create` (the client's options, already checked by the policy), a new
    /// persistent one made with them when there is none (within the caps; see
    /// [`Sessions`]); the flag says it was made now.
    pub(crate) async fn session(
        &self,
        caller: &Caller,
        id: &str,
        tenant: Option<&str>,
        create: Option<&EngineOptions>,
        trace: &Trace,
    ) -> Result<(Arc<dyn Executor>, bool), ApiError> {
        self.sessions
            .session(
                self.engine(),
                &self.options,
                caller,
                id,
                tenant,
                create,
                trace,
            )
            .await
    }

    /// What `GET /metrics` shows.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// True when `GET /metrics` needs no API key.
    pub fn metrics_public(&self) -> bool {
        self.metrics_public
    }

    pub(crate) fn master_key(&self) -> &str {
        &self.master_key
    }

    pub(crate) fn keys(&self) -> Option<&keys::Keys> {
        self.keys.as_ref()
    }

    pub(crate) fn body_timeout(&self) -> Duration {
        self.body_timeout
    }

    /// Checks `req` and the client's `opts` against the policy, on the settings the run
    /// would actually get: `opts` laid over the shared engine's options and resolved.
    pub(crate) fn allow(
        &self,
        req: &ExecutionRequest,
        opts: &EngineOptions,
        trace: &Trace,
    ) -> Result<(), ApiError> {
        let merged = self
            .backend
            .settings_with(opts)
            .map_err(|e| ApiError::engine(e, trace))?;
        policy::check(&self.policy, req, opts, self.backend.settings(), &merged)?;
        Ok(())
    }

    /// Records a request the server refused before the engine saw it (policy, sessions,
    /// a bad option) in the audit log, if there is one: with the caller of the current
    /// [`isol8::audit::scope`], secrets (the server's and the request's) masked.
    pub(crate) fn audit_refused(&self, req: &ExecutionRequest, opts: &EngineOptions, e: &ApiError) {
        let Some(log) = self.backend.audit_log() else {
            return;
        };
        let settings = self.backend.settings();
        let secrets = isol8::output::Secrets::new(
            settings
                .secrets
                .values()
                .chain(opts.secrets.values())
                .map(String::as_str),
        )
        .unwrap_or_default();
        let network = opts.network.or(Some(settings.network));
        let draft = isol8::audit::Draft::new(
            log.settings(),
            isol8::audit::execution_id(),
            req,
            &secrets,
            network,
        );
        log.record(draft.refused(&e.client_message(), &secrets));
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
        let expired = self.sessions.take_idle(max_age).await;
        let n = expired.len();
        for ((tenant, id), s) in expired {
            tracing::info!(session = %id, tenant = %tenant, "pruning idle session");
            let _ = s.engine.stop().await;
        }
        n
    }

    /// First step of a graceful shutdown: from now on every request gets 503 (with
    /// `Retry-After`), and executions queued for a slot or for their session are refused
    /// at once with 503; executions already running go on. Irreversible.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.backend.close_slots();
    }

    /// The answer to an engine error: while draining, an execution refused because the
    /// slots closed says the server is shutting down.
    pub(crate) fn refusal(&self, e: isol8::Error, trace: &Trace) -> ApiError {
        match e {
            isol8::Error::Stopped if self.is_draining() => ApiError::ShuttingDown,
            e => ApiError::engine(e, trace),
        }
    }

    /// True once [`AppState::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Executions holding a slot right now, on the shared engine and in every session.
    pub fn executing(&self) -> usize {
        self.backend.executing()
    }

    /// WebSocket executions whose socket is still open (they outlive their HTTP request,
    /// so a graceful shutdown waits for them separately).
    pub fn open_websockets(&self) -> usize {
        self.websockets.load(Ordering::SeqCst)
    }

    /// Counts an open WebSocket execution for as long as the guard lives.
    pub(crate) fn open_websocket(self: &Arc<Self>) -> OpenSocket {
        self.websockets.fetch_add(1, Ordering::SeqCst);
        OpenSocket(self.clone())
    }

    /// Stops every session and the shared engine at once: running executions are killed
    /// (buffered requests get 503, streams a final `sandbox lost` error) and every
    /// container removed.
    pub async fn shutdown(&self) {
        self.drain();
        let sessions = self.sessions.take_all().await;
        let stops = sessions
            .iter()
            .map(|s| &s.engine)
            .chain(std::iter::once(&self.shared))
            .map(|e| e.stop());
        futures_util::future::join_all(stops).await;
    }
}

/// An open WebSocket execution, counted by [`AppState::open_websockets`] until dropped.
#[derive(Debug)]
pub(crate) struct OpenSocket(Arc<AppState>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.websockets.fetch_sub(1, Ordering::SeqCst);
    }
}
