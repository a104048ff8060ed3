//! [`DockerEngine`]: the [`Engine`] on a container daemon (Docker, through
//! [`ContainerApi`]).
//!
//! An execution is admitted (`launch`: options, `codeUrl`, validation, the wait for a
//! slot), takes a sandbox from the warm [`pool`] (or starts one: create, attach, start,
//! wait for the agent's hello — see [`sandbox`]), sends one `Exec` frame, turns the
//! agent's `Output` frames into [`StreamEvent`](isol8_protocol::StreamEvent)s as they
//! arrive (`run`), and gives the sandbox back when the agent reports `Exited` (reset and
//! reused with the `fast` strategy, destroyed with `secure` or when anything went wrong).
//! A persistent session keeps one container instead (`session`). The daemon is only
//! asked to create, attach, start, inspect, list and remove: programs never go through
//! `docker exec`.
//!
//! One file per step: [`engine_config`] (building an engine), `launch` (admitting a
//! request), [`pool`], [`sandbox`], `run` (one execution's state machine), `session`
//! (persistent mode), [`host_config`](mod@host_config) (the container's `HostConfig`), [`housekeeping`]
//! (cleanup, orphans, covering images, the doctor's daemon checks), `watch` (Docker's
//! events), [`slots`] (`maxConcurrent`), and [`backend`]: the [`ContainerApi`] trait,
//! its Docker implementation and the in-memory fake the unit tests (`tests`) run on.

pub mod backend;
pub mod data_socket;
pub mod engine_config;
pub mod host_config;
pub mod housekeeping;
mod launch;
pub mod pool;
mod run;
pub mod sandbox;
mod session;
pub mod slots;

pub use crate::engine::decode_file;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use isol8_protocol::{EngineOptions, ExecutionRequest, ExecutionResult};
use tokio::sync::watch as signal;

use crate::engine::{Engine, EventStream};
use crate::error::SandboxError;
use crate::runtime::RuntimeRegistry;
use crate::settings::SandboxSettings;
use crate::{Error, Result};

pub use backend::bollard::{connect, doctor, Docker};
pub use backend::ContainerApi;
pub use engine_config::EngineConfig;
pub use host_config::{host_config, HostConfig};
pub use isol8_protocol::layout::SANDBOX_UID;
pub use pool::{PoolKey, PoolStats};
pub use slots::Slots;

/// The controls of an interactive run (they are not Docker's: see [`crate::control`]).
pub use crate::control::{signal_number, Control, Controller};

/// Default bound on concurrent executions.
pub const DEFAULT_MAX_CONCURRENT: usize = crate::config::Config::DEFAULT_MAX_CONCURRENT as usize;

/// The engine on a container daemon. Cheap to clone (clones share the engine).
#[derive(Clone)]
pub struct DockerEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DockerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerEngine")
            .field("owner", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

/// State shared by an engine's handles and its background tasks.
pub struct Inner {
    /// The container daemon.
    api: Arc<dyn ContainerApi>,
    registry: RuntimeRegistry,
    options: EngineOptions,
    settings: Arc<SandboxSettings>,
    host: HostConfig,
    /// [`PoolKey::hash_of`] of `host`, computed once.
    host_hash: String,
    owner: String,
    live: Mutex<HashSet<String>>,
    /// Live containers Docker reported paused, killed or dead ([`watch`]): never handed
    /// out. Locked after `live` when both are needed.
    flagged: Mutex<HashSet<String>>,
    stopped: AtomicBool,
    /// Becomes true on `stop`; dropped with the engine. Wakes queued executions and ends
    /// the event watcher.
    halt: signal::Sender<bool>,
    /// The execution slots, possibly shared with other engines (`maxConcurrent`).
    slots: Slots,
    /// Executions of this engine launched and not yet ended (queued ones included).
    active: AtomicUsize,
    pool: pool::Pool,
    prewarm: Vec<String>,
    /// The persistent session's sandbox (mode `persistent`), created on first use. An
    /// execution holds it from before it queues for a slot until it ends.
    session: Arc<tokio::sync::Mutex<Option<session::Session>>>,
    max_file_bytes: u64,
    /// What the engine was connected with (sessions of a server start from it).
    config: EngineConfig,
    code_fetcher: crate::code_url::CodeFetcher,
    /// The addresses egress may dial (proxy and `codeUrl` fetcher).
    address_policy: Arc<crate::egress::AddressPolicy>,
    /// Where every execution is recorded (config `audit`), shared with siblings.
    audit: Option<crate::audit::AuditLog>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("owner", &self.owner)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Tells the engine's observer (if any) something; see [`crate::stats`].
    pub(crate) fn observe(&self, f: impl FnOnce(&dyn crate::stats::EngineObserver)) {
        crate::stats::notify(&self.config.observer, f);
    }

    /// True when Docker reported the container paused, killed or dead.
    pub(crate) fn is_flagged(&self, id: &str) -> bool {
        self.flagged
            .lock()
            .map(|f| !f.is_empty() && f.contains(id))
            .unwrap_or(false)
    }

    /// Resolves once the engine is stopped (or dropped).
    async fn halted(&self) {
        let mut rx = self.halt.subscribe();
        let _ = rx.wait_for(|h| *h).await;
    }
}

/// Counts an execution as active for as long as it lives.
struct Active(Arc<Inner>);

impl Active {
    fn new(inner: &Arc<Inner>) -> Active {
        inner.active.fetch_add(1, Ordering::SeqCst);
        Active(inner.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Inner {
    /// The last handle to the engine is gone (dropped without `stop`, or its runtime shut
    /// down mid-run): remove whatever containers it still owns. This runs on a thread of
    /// its own with a fresh client ([`ContainerApi::detached`]), since the async runtime
    /// may be shutting down.
    fn drop(&mut self) {
        let ids: Vec<String> = self
            .live
            .get_mut()
            .map(|l| l.drain().collect())
            .unwrap_or_default();
        if ids.is_empty() || self.settings.persist {
            return;
        }
        let Ok(api) = self.api.detached() else {
            return;
        };
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                for id in ids {
                    let _ = api.remove_container(&id).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

impl DockerEngine {
    /// The container API the engine drives (the Docker client, or a test backend).
    pub fn backend(&self) -> &dyn ContainerApi {
        self.inner.api.as_ref()
    }

    /// The id in the `isol8.owner` label of this engine's containers.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// What this engine was connected with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The runtime registry.
    pub fn registry(&self) -> &RuntimeRegistry {
        &self.inner.registry
    }

    /// The resolved sandbox settings.
    pub fn settings(&self) -> &SandboxSettings {
        &self.inner.settings
    }

    /// This engine's executions launched and not yet ended (queued for a slot, waiting
    /// for a sandbox, or running).
    pub fn running(&self) -> usize {
        if self.inner.is_stopped() {
            return 0;
        }
        self.inner.active.load(Ordering::SeqCst)
    }

    /// The audit log this engine records its executions in, if auditing is on.
    pub fn audit_log(&self) -> Option<&crate::audit::AuditLog> {
        self.inner.audit.as_ref()
    }

    /// Waits until every audit record of an execution that already returned its result
    /// (or was refused) is written: what a process calls before it exits. Nothing
    /// without an audit log. `stop()` does it too.
    pub async fn flush_audit(&self) {
        if let Some(log) = &self.inner.audit {
            log.flush().await;
        }
    }

    /// The execution slots this engine draws from (shared with its siblings).
    pub fn slots(&self) -> &Slots {
        &self.inner.slots
    }

    /// True when Docker reported this engine's container `id` paused (frozen), killed or
    /// dead: it is never handed out again (a pooled one is evicted at once).
    pub fn sandbox_flagged(&self, id: &str) -> bool {
        self.inner.is_flagged(id)
    }

    /// Containers this engine currently owns (running, pooled or being reset).
    pub fn live_containers(&self) -> Vec<String> {
        self.inner
            .live
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The pool key of `runtime`'s sandboxes under this engine's settings.
    pub fn pool_key(&self, runtime: &str) -> Result<PoolKey> {
        let rt = self.inner.registry.get(runtime)?;
        let image = self
            .inner
            .settings
            .image
            .clone()
            .unwrap_or_else(|| rt.image.clone());
        Ok(PoolKey::with_hash(&image, &self.inner.host_hash))
    }

    /// Pool counts for `runtime`.
    pub fn pool_stats(&self, runtime: &str) -> Result<PoolStats> {
        Ok(self.inner.pool.stats(&self.pool_key(runtime)?))
    }

    /// Pool counts summed over every runtime and settings of this engine's pool.
    pub fn pool_totals(&self) -> PoolStats {
        self.inner.pool.totals()
    }

    /// Starts filling the pools of `runtimes` and waits (up to 60 s) until each has its
    /// ready sandboxes: `poolSize.clean` of them idle, or, when it cannot get there, at
    /// least one idle with none still starting or being reset.
    pub async fn prewarm(&self, runtimes: &[String]) -> Result<()> {
        let mut keys = Vec::new();
        for r in runtimes {
            let key = self.pool_key(r)?;
            pool::prewarm(&self.inner, &key, r, &self.inner.host);
            keys.push(key);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for key in keys {
            loop {
                let s = self.inner.pool.stats(&key);
                if s.idle >= self.inner.pool.clean_target()
                    || (s.warming == 0 && s.resetting == 0 && s.idle > 0)
                    || tokio::time::Instant::now() > deadline
                {
                    break;
                }
                if s.warming == 0 && s.idle == 0 && s.resetting == 0 {
                    return Err(SandboxError::Warm { image: key.image }.into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Engine for DockerEngine {
    async fn start(&self) -> Result<()> {
        if self.inner.is_stopped() {
            return Err(Error::Stopped);
        }
        self.inner
            .api
            .ping()
            .await
            .map_err(|e| Error::DockerUnavailable {
                detail: e.to_string(),
            })?;
        let prewarm = self.inner.prewarm.clone();
        self.prewarm(&prewarm).await
    }

    async fn stop(&self) -> Result<()> {
        self.inner.stopped.store(true, Ordering::SeqCst);
        // Wakes this engine's queued executions (the slots may be shared: not closed).
        self.inner.halt.send_replace(true);
        let idle = self.inner.pool.drain();
        drop(idle);
        let ids = self.live_containers();
        futures_util::future::join_all(ids.iter().map(|id| sandbox::remove(&self.inner, id))).await;
        // Sandboxes being started or reset in the background finish (and see the stop)
        // shortly; wait for them so nothing is left when stop returns.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.inner.pool.busy() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ids = self.live_containers();
        futures_util::future::join_all(ids.iter().map(|id| sandbox::remove(&self.inner, id))).await;
        if self.inner.audit.is_some() {
            // The executions cut off above record themselves as they notice (a few
            // milliseconds): give them a moment, then write every record out.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while self.inner.active.load(Ordering::SeqCst) > 0
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.flush_audit().await;
        }
        Ok(())
    }

    async fn execute(&self, req: ExecutionRequest) -> Result<ExecutionResult> {
        let (rx, task) = self.launch_unspawned(&req, None).await?;
        task.drive(run::collect(rx)).await
    }

    /// Sandboxes are only shared between executions whose resulting security settings
    /// are identical.
    async fn execute_with(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<ExecutionResult> {
        let (rx, task) = self.launch_unspawned(&req, Some(options)).await?;
        task.drive(run::collect(rx)).await
    }

    async fn execute_stream(&self, req: ExecutionRequest) -> Result<EventStream> {
        let rx = self.launch(&req, None).await?;
        Ok(run::event_stream(rx))
    }

    async fn execute_stream_with(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<EventStream> {
        let rx = self.launch(&req, Some(options)).await?;
        Ok(run::event_stream(rx))
    }

    async fn execute_interactive(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<(EventStream, Controller)> {
        self.launch_interactive(&req, options).await
    }

    async fn execute_interactive_buffered(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<(crate::engine::PendingResult, Controller)> {
        let (run, controller) = self.launch_controlled(&req, options).await?;
        Ok((Box::pin(run::collect(run)), controller))
    }

    async fn put_file(&self, path: &str, content: &[u8]) -> Result<()> {
        self.session_put_file(path, content).await
    }

    async fn get_file(&self, path: &str) -> Result<Vec<u8>> {
        self.session_get_file(path).await
    }
}
