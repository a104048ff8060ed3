//! [`DockerEngine`]: the [`Engine`] on a local Docker daemon.
//!
//! An execution takes a sandbox from the warm [`pool`] (or starts one: create, attach,
//! start, wait for the agent's hello — see [`sandbox`]), sends one `Exec` frame, turns
//! the agent's `Output` frames into [`StreamEvent`]s as they arrive, and gives the sandbox
//! back when the agent reports `Exited` (reset and reused with the `fast` strategy,
//! destroyed with `secure` or when anything went wrong). Docker is only asked to create,
//! attach, start, inspect and remove: programs never go through `docker exec`.

pub mod pool;
pub mod sandbox;
pub mod slots;
mod watch;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bollard::models::HostConfig;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
pub use bollard::Docker;
use isol8_protocol::agent::{self, ExecFailed, Exited, Frame, Kind, StepPhase, Stream};
use isol8_protocol::{
    EngineOptions, ExecutionRequest, ExecutionResult, NetworkLog, NetworkMode, Phase, StreamEvent,
    StreamEventType,
};
use tokio::sync::{mpsc, watch as signal, OwnedMutexGuard, OwnedSemaphorePermit};

use crate::engine::{Engine, EventStream};
use crate::limits::SandboxSettings;
use crate::output::{truncation_trailer, Secrets, TextStream, TIMEOUT_EVENT, TIMEOUT_TRAILER};
use crate::prepare::{prepare, Prepared};
use crate::runtime::RuntimeRegistry;
use crate::{Error, Result};

pub use pool::{PoolKey, PoolStats};
pub use sandbox::{host_config, SANDBOX_UID};
pub use slots::Slots;

/// Extra time the engine gives the agent past the request's timeout before killing the
/// container itself.
const WATCHDOG_GRACE: Duration = Duration::from_secs(5);

/// Bytes of setup output kept for the error of a failed package install.
const SETUP_TAIL: usize = 4096;

/// The last `n` non-empty lines of `text`, joined by newlines.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
/// Default bound on concurrent executions.
pub const DEFAULT_MAX_CONCURRENT: usize = 10;

/// Connects to the local Docker daemon (`DOCKER_HOST` or the default socket) and
/// negotiates the API version, so daemons from 20.10 (API 1.41) up to current work.
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults().map_err(|e| Error::DockerUnavailable {
        detail: e.to_string(),
    })?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| Error::DockerUnavailable {
            detail: e.to_string(),
        })?;
    docker.ping().await.map_err(|e| Error::DockerUnavailable {
        detail: e.to_string(),
    })?;
    Ok(docker)
}

/// The local Docker engine.
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
    docker: Docker,
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
    session: Arc<tokio::sync::Mutex<Option<Session>>>,
    max_file_bytes: u64,
    /// What the engine was connected with (sessions of a server start from it).
    config: EngineConfig,
    code_fetcher: crate::remote_code::CodeFetcher,
    /// The addresses egress may dial (proxy and `codeUrl` fetcher).
    address_policy: Arc<crate::egress::AddressPolicy>,
}

/// The container of a persistent session, bound to the runtime it was created for.
struct Session {
    sandbox: sandbox::Sandbox,
    runtime: String,
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
    /// its own with a fresh client, since the async runtime may be shutting down.
    fn drop(&mut self) {
        let ids: Vec<String> = self
            .live
            .get_mut()
            .map(|l| l.drain().collect())
            .unwrap_or_default();
        if ids.is_empty() || self.settings.persist {
            return;
        }
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(docker) = Docker::connect_with_local_defaults() else {
                    return;
                };
                let opts = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                for id in ids {
                    let _ = docker.remove_container(&id, Some(opts.clone())).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Settings for [`DockerEngine::connect_with`].
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Engine options (defaults from SPEC section 3 where unset).
    pub options: EngineOptions,
    /// The runtime registry (the five built-ins by default).
    pub registry: Option<RuntimeRegistry>,
    /// Bound on concurrent executions (default 10); ignored when `slots` is given.
    pub max_concurrent: Option<usize>,
    /// Execution slots shared with other engines (see [`Slots`]); `None`: a budget of
    /// `max_concurrent` of its own.
    pub slots: Option<Slots>,
    /// Runtimes whose pools `start()` fills before returning.
    pub prewarm: Vec<String>,
    /// Largest file `put_file` / `get_file` move (default 16 MiB, at most 32 MiB).
    pub max_file_bytes: Option<u64>,
    /// A PEM CA bundle on the host trusted inside every sandbox (config `caBundle`), for
    /// TLS-intercepting proxies between this host and the package registries.
    pub ca_bundle: Option<String>,
    /// Policy for `codeUrl` (config `remoteCode`; off by default).
    pub remote_code: crate::config::RemoteCodeConfig,
    /// Addresses or CIDR ranges egress may dial although they are special-purpose
    /// (config `network.exemptRanges`; see [`crate::egress::AddressPolicy`]).
    pub exempt_ranges: Vec<String>,
}

impl EngineConfig {
    /// The engine a configuration file describes: its options, `maxConcurrent`,
    /// `caBundle`, `remoteCode` and `network.exemptRanges`.
    pub fn from_config(config: &crate::config::Config) -> EngineConfig {
        EngineConfig {
            options: config.engine_options(),
            max_concurrent: config.max_concurrent.map(|n| n as usize),
            ca_bundle: config.ca_bundle.clone(),
            remote_code: config.remote_code.clone(),
            exempt_ranges: config.network.exempt_ranges.clone(),
            ..Default::default()
        }
    }
}

/// What an engine is made of that needs no Docker daemon, checked before connecting.
struct Parts {
    settings: SandboxSettings,
    host: HostConfig,
    registry: RuntimeRegistry,
    max_file_bytes: u64,
}

impl Parts {
    /// Resolves and checks `config` (with its CA bundle already checked).
    fn new(config: &EngineConfig, ca_bundle: Option<String>) -> Result<Parts> {
        let mut settings = SandboxSettings::resolve(&config.options)?;
        settings.ca_bundle = ca_bundle;
        let host = host_config(&settings)?;
        if config.slots.is_none() && config.max_concurrent == Some(0) {
            return Err(Error::option("maxConcurrent", "must be at least 1"));
        }
        let max_file_bytes = config
            .max_file_bytes
            .unwrap_or(crate::prepare::MAX_OUTPUT_FILE);
        if max_file_bytes == 0 || max_file_bytes > 32 << 20 {
            return Err(Error::option(
                "maxFileBytes",
                "must be between 1 byte and 32 MiB",
            ));
        }
        let registry = config.registry.clone().unwrap_or_default();
        for r in &config.prewarm {
            registry.get(r)?;
        }
        Ok(Parts {
            settings,
            host,
            registry,
            max_file_bytes,
        })
    }
}

impl DockerEngine {
    /// Connects with these options and the built-in runtimes.
    pub async fn connect(options: EngineOptions) -> Result<Self> {
        Self::connect_with(EngineConfig {
            options,
            ..Default::default()
        })
        .await
    }

    /// Connects with full control over options, runtimes, concurrency and prewarming.
    /// Removes containers orphaned by dead isol8 processes of this host first.
    pub async fn connect_with(config: EngineConfig) -> Result<Self> {
        // Everything that can be checked without the daemon is checked first.
        let ca_bundle = config
            .ca_bundle
            .as_deref()
            .map(check_ca_bundle)
            .transpose()?;
        let parts = Parts::new(&config, ca_bundle)?;
        let address_policy = Arc::new(crate::egress::AddressPolicy::new(&config.exempt_ranges)?);
        let code_fetcher =
            crate::remote_code::CodeFetcher::new(&config.remote_code, address_policy.clone())?;
        let slots = match &config.slots {
            Some(s) => s.clone(),
            None => Slots::new(config.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT))?,
        };
        let docker = connect().await?;
        // A crashed engine of this host may have left containers behind: remove them,
        // and the proxy socket directories of its filtered sandboxes.
        if let Err(e) = crate::maintenance::reap_orphans(&docker).await {
            tracing::warn!(error = %e, "could not look for orphaned containers");
        }
        crate::egress::reap_stale_dirs();
        // Proxies and streams need descriptors; a low soft limit (1024) would make accepts
        // fail under load. Once per process.
        if let Err(e) = crate::egress::raise_open_files_limit() {
            tracing::warn!(error = %e, "cannot read the open-files limit");
        }
        Ok(Self::assemble(
            docker,
            config,
            parts,
            address_policy,
            code_fetcher,
            slots,
        ))
    }

    /// An engine with `options` (instead of this engine's) that shares this engine's
    /// Docker client, runtimes, address policy, `codeUrl` policy, CA bundle and
    /// execution slots: its executions count against the same `maxConcurrent`. Its
    /// containers get an owner label of their own. No Docker call is made (no
    /// connection, no orphan reaping), so it is cheap to create under a lock: how a
    /// server creates its session engines.
    pub fn sibling(&self, options: EngineOptions) -> Result<DockerEngine> {
        let config = EngineConfig {
            options,
            prewarm: Vec::new(),
            slots: Some(self.inner.slots.clone()),
            ..self.inner.config.clone()
        };
        let parts = Parts::new(&config, self.inner.settings.ca_bundle.clone())?;
        Ok(Self::assemble(
            self.inner.docker.clone(),
            config,
            parts,
            self.inner.address_policy.clone(),
            self.inner.code_fetcher.clone(),
            self.inner.slots.clone(),
        ))
    }

    fn assemble(
        docker: Docker,
        config: EngineConfig,
        parts: Parts,
        address_policy: Arc<crate::egress::AddressPolicy>,
        code_fetcher: crate::remote_code::CodeFetcher,
        slots: Slots,
    ) -> DockerEngine {
        let Parts {
            settings,
            host,
            registry,
            max_file_bytes,
        } = parts;
        let pooled = settings.mode != isol8_protocol::options::Mode::Persistent;
        let inner = Arc::new(Inner {
            docker,
            registry,
            pool: pool::Pool::new(settings.pool_strategy, settings.pool_size),
            settings: Arc::new(settings),
            options: config.options.clone(),
            host_hash: PoolKey::hash_of(&host),
            host,
            owner: format!("engine-{}", uuid::Uuid::new_v4().simple()),
            live: Mutex::new(HashSet::new()),
            flagged: Mutex::new(HashSet::new()),
            stopped: AtomicBool::new(false),
            halt: signal::Sender::new(false),
            slots,
            active: AtomicUsize::new(0),
            prewarm: config.prewarm.clone(),
            session: Arc::new(tokio::sync::Mutex::new(None)),
            max_file_bytes,
            config,
            code_fetcher,
            address_policy,
        });
        // Pooled sandboxes are watched so a paused or dead one is never handed out.
        if pooled {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(watch::run(
                    Arc::downgrade(&inner),
                    inner.docker.clone(),
                    inner.owner.clone(),
                    inner.halt.subscribe(),
                ));
            }
        }
        DockerEngine { inner }
    }

    /// The Docker client.
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
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

    /// Runs a request with per-request options laid over the engine's (how the server
    /// applies a client's `options`). Sandboxes are only shared between executions whose
    /// resulting security settings are identical.
    pub async fn execute_with(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<ExecutionResult> {
        let rx = self.launch(&req, Some(options)).await?;
        collect(rx).await
    }

    /// Streams a request with per-request options laid over the engine's.
    pub async fn execute_stream_with(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<EventStream> {
        let rx = self.launch(&req, Some(options)).await?;
        Ok(event_stream(rx))
    }

    /// The settings a run with these per-request options gets: `options` laid over the
    /// engine's ([`EngineOptions::overlay`], field by field, so nothing the engine set is
    /// dropped by omission), resolved and validated. This is what the server's policy
    /// checks before it runs a client's request; empty options are the engine's own
    /// settings, unresolved again. A request's `installPackages` may still switch an
    /// unset network to `filtered` when it runs.
    pub fn settings_with(&self, options: &EngineOptions) -> Result<Arc<SandboxSettings>> {
        if *options == EngineOptions::default() {
            return Ok(self.inner.settings.clone());
        }
        let mut settings = SandboxSettings::resolve(&self.inner.options.overlay(options))?;
        settings.ca_bundle = self.inner.settings.ca_bundle.clone();
        Ok(Arc::new(settings))
    }

    /// Pool counts for `runtime`.
    pub fn pool_stats(&self, runtime: &str) -> Result<PoolStats> {
        Ok(self.inner.pool.stats(&self.pool_key(runtime)?))
    }

    /// Starts filling the pools of `runtimes` and waits (up to 60 s) until each has its
    /// ready sandboxes.
    pub async fn prewarm(&self, runtimes: &[String]) -> Result<()> {
        let mut keys = Vec::new();
        for r in runtimes {
            let key = self.pool_key(r)?;
            pool::prewarm(&self.inner, &key, r, &self.inner.host);
            keys.push(key);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for key in keys {
            loop {
                let s = self.inner.pool.stats(&key);
                if s.idle >= self.clean_target()
                    || (s.warming == 0 && s.idle > 0)
                    || Instant::now() > deadline
                {
                    break;
                }
                if s.warming == 0 && s.idle == 0 && s.resetting == 0 {
                    return Err(Error::Sandbox(format!(
                        "could not warm {}: see the log",
                        key.image
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    fn clean_target(&self) -> usize {
        match self.inner.settings.pool_size {
            isol8_protocol::PoolSize::Total(n) => n as usize,
            isol8_protocol::PoolSize::Split { clean, .. } => clean as usize,
        }
    }

    /// Validates the request and spawns its run; messages arrive on the returned channel.
    async fn launch(
        &self,
        req: &ExecutionRequest,
        overrides: Option<&EngineOptions>,
    ) -> Result<(mpsc::Receiver<Msg>, String)> {
        match self.launch_with(req, overrides, None).await {
            Ok(run) => Ok(run),
            Err(e) => Err(self.mask_launch_error(overrides, e).await),
        }
    }

    /// A refused launch's error with every secret the execution would have had (the
    /// engine's and the request's) masked: `codeUrl`, `prepare` and option errors can
    /// quote request text.
    async fn mask_launch_error(&self, overrides: Option<&EngineOptions>, e: Error) -> Error {
        let values: Vec<String> = self
            .inner
            .settings
            .secrets
            .values()
            .chain(overrides.into_iter().flat_map(|o| o.secrets.values()))
            .cloned()
            .collect();
        match Secrets::compile(values).await {
            Ok(secrets) => secrets.mask_error(e),
            // Secrets too large to compile: that is the error to report.
            Err(too_big) => too_big,
        }
    }

    /// The engine's own secrets, compiled (for file transfers of a session).
    async fn engine_secrets(&self) -> Result<Secrets> {
        Secrets::compile(self.inner.settings.secrets.values().cloned().collect()).await
    }

    /// Runs a request whose standard input stays open for [`Controller`] input, and which
    /// accepts signals while it runs (the server's WebSocket route).
    pub async fn execute_interactive(
        &self,
        req: ExecutionRequest,
        options: Option<&EngineOptions>,
    ) -> Result<(EventStream, Controller)> {
        let (tx, rx) = mpsc::channel(64);
        let run = match self.launch_with(&req, options, Some(rx)).await {
            Ok(run) => run,
            Err(e) => return Err(self.mask_launch_error(options, e).await),
        };
        Ok((event_stream(run), Controller { tx }))
    }

    /// What must happen to a request before it is prepared: its `codeUrl` fetched, and
    /// its `installPackages` served by a built image that has them (which then replaces
    /// the image and drops the install). Returns the rewritten request, if any.
    async fn resolve_request(
        &self,
        req: &ExecutionRequest,
        settings: Arc<SandboxSettings>,
    ) -> Result<(Option<ExecutionRequest>, Arc<SandboxSettings>)> {
        let mut owned: Option<ExecutionRequest> = None;
        if req.code_url.is_some() || req.code_hash.is_some() {
            let mut r = req.clone();
            self.inner.code_fetcher.resolve(&mut r).await?;
            owned = Some(r);
        }
        if req.install_packages.is_empty() || settings.image.is_some() {
            return Ok((owned, settings));
        }
        let covering = crate::maintenance::covering_image(
            &self.inner.docker,
            &req.runtime,
            &req.install_packages,
        )
        .await;
        let Some(tag) = covering else {
            return Ok((owned, settings));
        };
        tracing::debug!(image = %tag, "using a built image that has the packages");
        let mut r = owned.unwrap_or_else(|| req.clone());
        r.install_packages.clear();
        let settings = SandboxSettings {
            image: Some(tag),
            ..(*settings).clone()
        };
        Ok((Some(r), Arc::new(settings)))
    }

    async fn launch_with(
        &self,
        req: &ExecutionRequest,
        overrides: Option<&EngineOptions>,
        control: Option<mpsc::Receiver<Control>>,
    ) -> Result<(mpsc::Receiver<Msg>, String)> {
        if self.inner.is_stopped() {
            return Err(Error::Stopped);
        }
        // Active (for `running()`) from now until the run ends or this future is dropped.
        let active = Active::new(&self.inner);
        // Empty per-request options (the server's usual case) are the engine's own
        // settings: no resolving or hashing on the warm path.
        let overrides = overrides.filter(|o| **o != EngineOptions::default());
        let (settings, host, host_hash) = match overrides {
            None => (
                self.inner.settings.clone(),
                self.inner.host.clone(),
                self.inner.host_hash.clone(),
            ),
            Some(o) => {
                if o.mode == Some(isol8_protocol::options::Mode::Persistent) {
                    return Err(Error::InvalidRequest(
                        "per-request options cannot switch to persistent mode; use a session"
                            .into(),
                    ));
                }
                with_host((*self.settings_with(o)?).clone())?
            }
        };
        // Compiled once for the whole execution: every stream, log, file and error of it.
        let secrets = Secrets::compile(settings.secrets.values().cloned().collect()).await?;
        let (owned, settings) = self.resolve_request(req, settings).await?;
        let req = owned.as_ref().unwrap_or(req);
        let mut prepared = prepare(req, &self.inner.registry, &settings)?;
        prepared.spec.interactive = control.is_some();
        let (settings, host, host_hash) = if prepared.network == settings.network {
            (settings, host, host_hash)
        } else {
            // installPackages chose the filtered network: a sandbox of that kind is needed.
            with_host(SandboxSettings {
                network: prepared.network,
                ..(*settings).clone()
            })?
        };
        let egress_rules = match prepared.network {
            NetworkMode::Filtered => Some(Arc::new(crate::egress::Rules::new(
                &settings.network_filter,
                &prepared.egress_hosts,
                prepared.egress_restricted,
            )?)),
            _ => None,
        };
        // Queue here, before anything is returned: a request that gets no slot (or meets a
        // stopped engine or a closed budget) is an error, not a stream that fails. A
        // session's execution first waits for the session (executions of a session run
        // one at a time), so it never holds a slot while it waits for its turn.
        let session = if self.inner.settings.mode == isol8_protocol::options::Mode::Persistent {
            Some(self.session_turn().await?)
        } else {
            None
        };
        let permit = self
            .slot(Duration::from_millis(prepared.spec.timeout_ms))
            .await?;
        let control = control.map(tokio::sync::Mutex::new);
        let (tx, rx) = mpsc::channel(64);
        let inner = self.inner.clone();
        let runtime = prepared.runtime.name.clone();
        tokio::spawn(async move {
            Run {
                inner: inner.clone(),
                tx,
                settings,
                host,
                host_hash,
                control,
                egress_rules,
                setup_tail: Mutex::new(String::new()),
                secrets,
            }
            .execute(prepared, session)
            .await;
            drop(permit);
            drop(active);
        });
        Ok((rx, runtime))
    }

    /// Waits for the persistent session to be free (no other execution or transfer in
    /// it). Refused with [`Error::Stopped`] once the engine stops or its slots close.
    async fn session_turn(&self) -> Result<OwnedMutexGuard<Option<Session>>> {
        tokio::select! {
            guard = self.inner.session.clone().lock_owned() => Ok(guard),
            _ = self.inner.halted() => Err(Error::Stopped),
            _ = self.inner.slots.wait_closed() => Err(Error::Stopped),
        }
    }

    /// Waits up to `wait` for an execution slot (see [`Slots`]).
    async fn slot(&self, wait: Duration) -> Result<OwnedSemaphorePermit> {
        tokio::select! {
            biased;
            _ = self.inner.halted() => Err(Error::Stopped),
            permit = self.inner.slots.acquire(wait) => permit,
        }
    }
}

/// What a run reports to whoever consumes it.
enum Msg {
    Event(StreamEvent),
    Done(Box<Summary>),
    Failed(Error),
}

struct Summary {
    exit_code: i32,
    truncated: bool,
    duration_ms: u64,
    container_id: String,
    files: Option<BTreeMap<String, String>>,
    masked_files: Option<Vec<String>>,
    network_logs: Option<Vec<NetworkLog>>,
}

/// One execution in one sandbox.
struct Run {
    inner: Arc<Inner>,
    tx: mpsc::Sender<Msg>,
    /// Settings of this execution (the engine's, or per-request options over them).
    settings: Arc<SandboxSettings>,
    /// The `HostConfig` those settings give.
    host: HostConfig,
    /// Its [`PoolKey::hash_of`].
    host_hash: String,
    /// Stdin and signals for an interactive execution.
    control: Option<tokio::sync::Mutex<mpsc::Receiver<Control>>>,
    /// What the egress proxy admits during this execution (`filtered` network).
    egress_rules: Option<Arc<crate::egress::Rules>>,
    /// The end of the setup phase's output (for a failed install's error).
    setup_tail: Mutex<String>,
    /// This execution's secrets: masked in its output, network log, files and errors.
    secrets: Secrets,
}

/// Input for a running interactive execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Bytes for the program's standard input.
    Stdin(Vec<u8>),
    /// Close the program's standard input.
    CloseStdin,
    /// Deliver a signal (number) to the program's process group.
    Signal(i32),
}

/// Feeds a running interactive execution (see [`DockerEngine::execute_interactive`]).
#[derive(Debug, Clone)]
pub struct Controller {
    tx: mpsc::Sender<Control>,
}

impl Controller {
    /// Sends input; false once the execution has ended.
    pub async fn send(&self, control: Control) -> bool {
        self.tx.send(control).await.is_ok()
    }
}

/// Parses a signal name (`SIGINT`, `INT`, `SIGTERM`, `SIGKILL`, `SIGHUP`, `SIGQUIT`).
pub fn signal_number(name: &str) -> Option<i32> {
    Some(match name.trim_start_matches("SIG") {
        "INT" => 2,
        "TERM" => 15,
        "KILL" => 9,
        "HUP" => 1,
        "QUIT" => 3,
        _ => return None,
    })
}

/// Why a run ended without a summary.
enum Stop {
    /// The consumer went away (client disconnect, dropped stream).
    Gone,
    /// The run failed.
    Failed(Error),
    /// The exec frame could not be sent: the agent is gone (before anything ran).
    Unsent(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

/// How the agent's part of a run ended.
enum Ending {
    /// The agent reported `Exited`: the sandbox can be reset and reused.
    Clean(Exited),
    /// The sandbox must be destroyed (watchdog fired, OOM killed the agent…).
    Dirty(Exited),
}

impl Run {
    /// Runs the execution: in the persistent session when `session` is given (held by
    /// this execution), else in a pooled sandbox.
    async fn execute(self, prepared: Prepared, session: Option<OwnedMutexGuard<Option<Session>>>) {
        let key = PoolKey::with_hash(&prepared.image, &self.host_hash);
        let outcome = match session {
            Some(guard) => self.drive_session(&prepared, guard).await,
            None => self.drive(&key, &prepared).await,
        };
        match outcome {
            Ok(summary) => {
                let _ = self.tx.send(Msg::Done(Box::new(summary))).await;
            }
            Err(Stop::Failed(e)) | Err(Stop::Unsent(e)) => {
                let e = if self.inner.is_stopped() {
                    Error::Stopped
                } else {
                    e
                };
                let _ = self.tx.send(Msg::Failed(self.secrets.mask_error(e))).await;
            }
            Err(Stop::Gone) => {}
        }
    }

    async fn emit(&self, ev: StreamEvent) -> Result<(), Stop> {
        self.tx.send(Msg::Event(ev)).await.map_err(|_| Stop::Gone)
    }

    /// Runs the execution in the persistent session's container, creating it on first
    /// use. Executions of a session run one at a time; each is a fresh process, files
    /// and installed packages stay.
    async fn drive_session(
        &self,
        prepared: &Prepared,
        mut guard: OwnedMutexGuard<Option<Session>>,
    ) -> Result<Summary, Stop> {
        let runtime = &prepared.runtime.name;
        if let Some(s) = guard.as_ref() {
            if &s.runtime != runtime {
                return Err(Error::InvalidRequest(format!(
                    "this persistent session is bound to runtime `{}`; run `{runtime}` code in a session of its own",
                    s.runtime
                ))
                .into());
            }
        }
        let session = match guard.as_mut() {
            Some(s) => s,
            None => {
                let sandbox = sandbox::Sandbox::start(
                    &self.inner,
                    &prepared.image,
                    runtime,
                    self.host.clone(),
                )
                .await?;
                guard.insert(Session {
                    sandbox,
                    runtime: runtime.clone(),
                })
            }
        };
        let id = session.sandbox.id.clone();
        let (result, logs) = self
            .send_and_relay(
                &mut session.sandbox,
                prepared,
                &Frame::json(Kind::Exec, &prepared.spec),
            )
            .await;
        match result {
            Ok(Ending::Clean(exited)) => self.finish(exited, id, prepared, logs).await,
            // The agent refused the request (bad path…) and is idle: the session lives on.
            Err(Stop::Failed(e @ Error::InvalidRequest(_))) => Err(Stop::Failed(e)),
            other => {
                // The session's container cannot be trusted any more: the next execution
                // starts a new one.
                if let Some(s) = guard.take() {
                    s.sandbox.destroy(&self.inner).await;
                }
                match other {
                    Ok(Ending::Dirty(exited)) | Ok(Ending::Clean(exited)) => {
                        self.finish(exited, id, prepared, logs).await
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn drive(&self, key: &PoolKey, prepared: &Prepared) -> Result<Summary, Stop> {
        let runtime = &prepared.runtime.name;
        let (mut sb, warm) = pool::acquire(&self.inner, key, runtime, &self.host).await?;
        let exec = Frame::json(Kind::Exec, &prepared.spec);
        let (mut result, mut logs) = self.send_and_relay(&mut sb, prepared, &exec).await;
        if let Err(Stop::Unsent(e)) = &result {
            let e = e.to_string();
            if !warm {
                sb.destroy(&self.inner).await;
                return Err(Stop::Failed(Error::Sandbox(e)));
            }
            // A pooled sandbox that died while idle: replace it with a fresh one.
            tracing::warn!(container = %sb.id, error = %e, "pooled sandbox is dead; starting a new one");
            let fresh =
                sandbox::Sandbox::start(&self.inner, &key.image, runtime, self.host.clone());
            std::mem::replace(&mut sb, fresh.await?)
                .destroy(&self.inner)
                .await;
            (result, logs) = self.send_and_relay(&mut sb, prepared, &exec).await;
            if let Err(Stop::Unsent(e)) = result {
                sb.destroy(&self.inner).await;
                return Err(Stop::Failed(e));
            }
        }
        let id = sb.id.clone();
        let ended = match result {
            Ok(Ending::Clean(exited)) => {
                if self.settings.persist {
                    self.forget(&id);
                } else {
                    pool::release(&self.inner, key.clone(), sb, true);
                }
                exited
            }
            Ok(Ending::Dirty(exited)) => {
                self.discard(sb).await;
                exited
            }
            Err(e) => {
                self.discard(sb).await;
                return Err(e);
            }
        };
        self.finish(ended, id, prepared, logs).await
    }

    /// Sends the exec frame and relays the execution, with the sandbox's egress proxy (if
    /// any) applying this execution's rules for exactly that long. A failure to send is
    /// [`Stop::Unsent`], so a dead pooled sandbox can be replaced.
    async fn send_and_relay(
        &self,
        sb: &mut sandbox::Sandbox,
        prepared: &Prepared,
        exec: &Frame,
    ) -> (Result<Ending, Stop>, Option<Vec<NetworkLog>>) {
        if let (Some(e), Some(rules)) = (&sb.egress, &self.egress_rules) {
            crate::egress::begin(e.shared(), rules.clone(), self.settings.log_network);
        }
        let result = match sb.send(exec).await {
            Ok(()) => self.relay(sb, prepared).await,
            Err(e) => Err(Stop::Unsent(e)),
        };
        let logs = sb
            .egress
            .as_ref()
            .and_then(|e| crate::egress::finish(e.shared()));
        (result, logs)
    }

    /// Destroys a sandbox that must not be reused (kept with `persist`).
    async fn discard(&self, sb: sandbox::Sandbox) {
        if self.settings.persist {
            self.forget(&sb.id);
        } else {
            sb.destroy(&self.inner).await;
        }
    }

    /// Stops tracking a container left for inspection (`persist`).
    fn forget(&self, id: &str) {
        sandbox::forget(&self.inner, id);
    }

    /// Relays the agent's frames as events until the execution ends.
    async fn relay(&self, sb: &mut sandbox::Sandbox, prepared: &Prepared) -> Result<Ending, Stop> {
        // One masking text per stream across all phases: a secret split between the
        // setup's output and the code's is still one secret.
        let mut texts = [
            TextStream::new(&self.secrets),
            TextStream::new(&self.secrets),
        ];
        let deadline =
            Instant::now() + Duration::from_millis(prepared.spec.timeout_ms) + WATCHDOG_GRACE;
        let exited = loop {
            let next = tokio::time::timeout_at(deadline.into(), sb.next_frame());
            let control = async {
                match &self.control {
                    Some(c) => c.lock().await.recv().await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                r = next => r,
                // The consumer went away (client disconnected): stop now, even if the
                // program is silent, so its sandbox is reclaimed.
                _ = self.tx.closed() => return Err(Stop::Gone),
                Some(c) = control => {
                    let frame = match c {
                        Control::Stdin(data) => Frame { kind: Kind::Stdin, payload: data },
                        Control::CloseStdin => Frame { kind: Kind::StdinClose, payload: Vec::new() },
                        Control::Signal(signal) => {
                            Frame::json(Kind::Signal, &isol8_protocol::agent::SignalSpec { signal })
                        }
                    };
                    sb.send(&frame).await?;
                    continue;
                }
            };
            let frame = match next {
                Err(_) => {
                    // A frozen or vanished container is not the program's timeout: the
                    // program may never have run.
                    if let Some(e) = sb.unresponsive(&self.inner).await {
                        tracing::warn!(container = %sb.id, error = %e, "agent missed the deadline");
                        self.flush_texts(&mut texts).await?;
                        return Err(Stop::Failed(e));
                    }
                    tracing::warn!(container = %sb.id, "agent missed the deadline; killing the sandbox");
                    let exited = Exited {
                        exit_code: 137,
                        timed_out: true,
                        ..Default::default()
                    };
                    self.flush_texts(&mut texts).await?;
                    self.emit(StreamEvent::error(TIMEOUT_EVENT)).await?;
                    return Ok(Ending::Dirty(exited));
                }
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) => {
                    if sb.oom_killed(&self.inner).await {
                        self.flush_texts(&mut texts).await?;
                        return Ok(Ending::Dirty(Exited {
                            exit_code: 137,
                            ..Default::default()
                        }));
                    }
                    return Err(sb.died(&self.inner).await.into());
                }
                Ok(Err(e)) => return Err(e.into()),
            };
            match frame.kind {
                Kind::Output => {
                    let (stream, phase, data) = agent::decode_output(&frame.payload)
                        .map_err(|e| Error::Sandbox(e.to_string()))?;
                    let released = texts[text_slot(stream)].push(phase, data);
                    self.emit_texts(stream, released).await?;
                }
                Kind::Exited => {
                    break frame
                        .parse::<Exited>()
                        .map_err(|e| Error::Sandbox(e.to_string()))?
                }
                Kind::ExecFailed => {
                    let failed: ExecFailed =
                        frame.parse().map_err(|e| Error::Sandbox(e.to_string()))?;
                    return Err(Error::InvalidRequest(failed.message).into());
                }
                other => {
                    return Err(Error::Sandbox(format!(
                        "unexpected {other:?} frame from the agent"
                    ))
                    .into())
                }
            }
        };
        self.flush_texts(&mut texts).await?;
        let phase = exited.phase.unwrap_or(StepPhase::Code);
        for (stream, stats) in [
            (Stream::Stdout, exited.stdout),
            (Stream::Stderr, exited.stderr),
        ] {
            if stats.truncated {
                let trailer = format!(
                    "\n{}\n",
                    truncation_trailer(stats.total_bytes, self.settings.max_output)
                );
                self.emit_text(stream, phase, trailer).await?;
            }
        }
        if exited.timed_out {
            self.emit(StreamEvent::error(TIMEOUT_EVENT)).await?;
        }
        Ok(Ending::Clean(exited))
    }

    /// Releases what the streams' maskers still hold (the execution's output ended).
    async fn flush_texts(&self, texts: &mut [TextStream; 2]) -> Result<(), Stop> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = texts[text_slot(stream)].finish();
            self.emit_texts(stream, rest).await?;
        }
        Ok(())
    }

    async fn emit_texts(
        &self,
        stream: Stream,
        texts: Vec<(StepPhase, String)>,
    ) -> Result<(), Stop> {
        for (phase, text) in texts {
            self.emit_text(stream, phase, text).await?;
        }
        Ok(())
    }

    async fn finish(
        &self,
        exited: Exited,
        container_id: String,
        prepared: &Prepared,
        network_logs: Option<Vec<NetworkLog>>,
    ) -> Result<Summary, Stop> {
        for (path, reason) in &exited.file_errors {
            let (path, reason) = (self.secrets.mask_str(path), self.secrets.mask_str(reason));
            tracing::debug!(%path, %reason, "output path not read");
        }
        if prepared.installs && exited.steps_run == 1 && exited.exit_code != 0 && !exited.timed_out
        {
            let installer = prepared
                .spec
                .steps
                .first()
                .and_then(|s| s.argv.first())
                .cloned()
                .unwrap_or_default();
            let output = self
                .setup_tail
                .lock()
                .map(|t| t.clone())
                .unwrap_or_default();
            return Err(Error::PackageInstall {
                installer,
                exit_code: exited.exit_code,
                output: last_lines(&output, 12),
            }
            .into());
        }
        let mut network_logs = network_logs.filter(|_| self.settings.log_network);
        if let Some(logs) = network_logs.as_mut() {
            self.secrets.mask_network_logs(logs);
        }
        let (files, masked_files) = if prepared.spec.output_paths.is_empty() {
            (None, None)
        } else {
            let (files, masked) = self.secrets.mask_files_async(exited.files).await;
            (Some(files), (!masked.is_empty()).then_some(masked))
        };
        Ok(Summary {
            exit_code: exited.exit_code,
            truncated: exited.stdout.truncated || exited.stderr.truncated,
            duration_ms: exited.duration_ms,
            container_id,
            files,
            masked_files,
            network_logs,
        })
    }

    async fn emit_text(&self, stream: Stream, phase: StepPhase, text: String) -> Result<(), Stop> {
        if text.is_empty() {
            return Ok(());
        }
        let phase = match phase {
            StepPhase::Setup => {
                if let Ok(mut tail) = self.setup_tail.lock() {
                    tail.push_str(&text);
                    if tail.len() > SETUP_TAIL {
                        let mut cut = tail.len() - SETUP_TAIL;
                        while !tail.is_char_boundary(cut) {
                            cut += 1;
                        }
                        tail.drain(..cut);
                    }
                }
                Phase::Setup
            }
            StepPhase::Code => Phase::Code,
        };
        self.emit(match stream {
            Stream::Stdout => StreamEvent::stdout(text, phase),
            Stream::Stderr => StreamEvent::stderr(text, phase),
        })
        .await
    }
}

#[async_trait::async_trait]
impl Engine for DockerEngine {
    async fn start(&self) -> Result<()> {
        if self.inner.is_stopped() {
            return Err(Error::Stopped);
        }
        self.inner
            .docker
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
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.inner.pool.busy() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ids = self.live_containers();
        futures_util::future::join_all(ids.iter().map(|id| sandbox::remove(&self.inner, id))).await;
        Ok(())
    }

    async fn execute(&self, req: ExecutionRequest) -> Result<ExecutionResult> {
        let rx = self.launch(&req, None).await?;
        collect(rx).await
    }

    async fn put_file(&self, path: &str, content: &[u8]) -> Result<()> {
        let path = crate::prepare::sandbox_path("file path", path, false)?;
        if content.len() as u64 > self.inner.max_file_bytes {
            return Err(Error::InvalidRequest(format!(
                "{path} is {} bytes; the limit is {} bytes",
                content.len(),
                self.inner.max_file_bytes
            )));
        }
        let file = isol8_protocol::agent::FileWrite {
            path,
            content: base64::engine::general_purpose::STANDARD.encode(content),
            mode: None,
        };
        if let Err(e) = self
            .transfer(crate::prepare::transfer_spec(
                vec![file],
                vec![],
                self.inner.max_file_bytes,
            ))
            .await
        {
            return Err(self.engine_secrets().await?.mask_error(e));
        }
        Ok(())
    }

    async fn get_file(&self, path: &str) -> Result<Vec<u8>> {
        let path = crate::prepare::sandbox_path("file path", path, false)?;
        let spec =
            crate::prepare::transfer_spec(vec![], vec![path.clone()], self.inner.max_file_bytes);
        let secrets = self.engine_secrets().await?;
        let exited = match self.transfer(spec).await {
            Ok(exited) => exited,
            Err(e) => return Err(secrets.mask_error(e)),
        };
        match exited.files.get(&path) {
            // What a session's code wrote is masked like its output.
            Some(b64) => secrets.mask_owned(decode_file(b64)?).await,
            None => Err(secrets.mask_error(Error::InvalidRequest(format!(
                "cannot read {path}: {}",
                exited
                    .file_errors
                    .get(&path)
                    .map(String::as_str)
                    .unwrap_or("not found")
            )))),
        }
    }

    async fn execute_stream(&self, req: ExecutionRequest) -> Result<EventStream> {
        let rx = self.launch(&req, None).await?;
        Ok(event_stream(rx))
    }
}

use futures_util::StreamExt as _;

/// Longest a file transfer with a session's agent may take: 15 s plus 2 s per MiB that
/// may travel (base64 content sent, or the read cap). A transfer past it means the agent
/// is stuck (paused container, a helper blocked on something the session's code planted).
fn transfer_timeout(spec: &isol8_protocol::agent::ExecSpec) -> Duration {
    let sent: u64 = spec.files.iter().map(|f| f.content.len() as u64).sum();
    let read = if spec.output_paths.is_empty() {
        0
    } else {
        spec.max_read_bytes
    };
    Duration::from_secs(15) + Duration::from_secs(2 * ((sent + read) >> 20))
}

impl DockerEngine {
    /// Sends a pure file transfer to the persistent session's agent, within
    /// [`transfer_timeout`]. A transfer that times out or breaks the frame stream discards
    /// the session's container (the next execution starts a new one), so a stuck agent
    /// never holds the session; a transfer the agent refuses leaves the session as it is.
    async fn transfer(&self, spec: isol8_protocol::agent::ExecSpec) -> Result<Exited> {
        if self.inner.settings.mode != isol8_protocol::options::Mode::Persistent {
            return Err(Error::InvalidRequest(
                "put_file and get_file need a persistent session (mode: persistent)".into(),
            ));
        }
        if self.inner.is_stopped() {
            return Err(Error::Stopped);
        }
        let mut guard = self.inner.session.lock().await;
        let session = guard.as_mut().ok_or_else(|| {
            Error::InvalidRequest(
                "the persistent session has no container yet: execute code first (the session is bound to the runtime of its first execution)".into(),
            )
        })?;
        let limit = transfer_timeout(&spec);
        let outcome = tokio::time::timeout(limit, exchange(&mut session.sandbox, &spec)).await;
        let err = match outcome {
            Ok(Ok(exited)) => return Ok(exited),
            Ok(Err(e @ Error::InvalidRequest(_))) => return Err(e),
            Ok(Err(e)) => e,
            Err(_) => Error::Sandbox(format!(
                "the session's sandbox did not finish a file transfer within {} s; its container was discarded with its files, and the next execution starts a new one",
                limit.as_secs()
            )),
        };
        if let Some(s) = guard.take() {
            tracing::warn!(container = %s.sandbox.id, error = %err, "file transfer failed; discarding the session's container");
            s.sandbox.destroy(&self.inner).await;
        }
        Err(err)
    }
}

/// One transfer frame out, its answer back: `Exited`, or the agent's refusal as
/// [`Error::InvalidRequest`].
async fn exchange(
    sandbox: &mut sandbox::Sandbox,
    spec: &isol8_protocol::agent::ExecSpec,
) -> Result<Exited> {
    sandbox.send(&Frame::json(Kind::Exec, spec)).await?;
    let frame = sandbox
        .next_frame()
        .await?
        .ok_or_else(|| Error::Sandbox("the session's container stopped unexpectedly".into()))?;
    match frame.kind {
        Kind::Exited => frame.parse().map_err(|e| Error::Sandbox(e.to_string())),
        Kind::ExecFailed => {
            let failed: ExecFailed = frame.parse().map_err(|e| Error::Sandbox(e.to_string()))?;
            Err(Error::InvalidRequest(failed.message))
        }
        other => Err(Error::Sandbox(format!(
            "unexpected {other:?} frame from the agent"
        ))),
    }
}

/// Index of a stream's [`TextStream`] in a run.
fn text_slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// Collects a run's messages into a buffered result.
async fn collect((mut rx, runtime): (mpsc::Receiver<Msg>, String)) -> Result<ExecutionResult> {
    let started = chrono::Utc::now();
    let mut result = ExecutionResult {
        execution_id: uuid::Uuid::new_v4().to_string(),
        runtime,
        timestamp: started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ..Default::default()
    };
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Event(ev) => match ev.kind {
                StreamEventType::Stdout => result.stdout.push_str(&ev.data),
                StreamEventType::Stderr => result.stderr.push_str(&ev.data),
                StreamEventType::Error if ev.data == TIMEOUT_EVENT => {
                    if !result.stderr.is_empty() && !result.stderr.ends_with('\n') {
                        result.stderr.push('\n');
                    }
                    result.stderr.push_str(TIMEOUT_TRAILER);
                }
                StreamEventType::Error | StreamEventType::Exit => {}
            },
            Msg::Done(summary) => {
                result.exit_code = summary.exit_code;
                result.duration_ms = summary.duration_ms;
                result.truncated = summary.truncated;
                result.container_id = Some(summary.container_id);
                result.files = summary.files;
                result.masked_files = summary.masked_files;
                result.network_logs = summary.network_logs;
                return Ok(result);
            }
            Msg::Failed(e) => return Err(e),
        }
    }
    Err(Error::SandboxLost(
        "the execution ended without a result".into(),
    ))
}

/// Turns a run's messages into stream events ending with exactly one `exit` — except
/// when the sandbox was lost ([`Error::is_sandbox_lost`]): then the last event is an
/// `error` whose data starts with `sandbox lost: ` or `sandbox unresponsive: `, and no
/// `exit` follows, since no exit code exists.
fn event_stream((rx, _): (mpsc::Receiver<Msg>, String)) -> EventStream {
    let stream = futures_util::stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        let events = match rx.recv().await {
            Some(Msg::Event(ev)) => return Some((vec![ev], (rx, false))),
            Some(Msg::Done(s)) => vec![StreamEvent::exit(s.exit_code)],
            Some(Msg::Failed(e)) if e.is_sandbox_lost() => vec![lost_event(&e)],
            Some(Msg::Failed(e)) => vec![StreamEvent::error(e.to_string()), StreamEvent::exit(1)],
            None => vec![lost_event(&Error::SandboxLost(
                "the execution ended without a result".into(),
            ))],
        };
        Some((events, (rx, true)))
    })
    .flat_map(futures_util::stream::iter);
    Box::pin(stream)
}

/// The final `error` event of a run whose sandbox was lost.
pub(crate) fn lost_event(e: &Error) -> StreamEvent {
    match e {
        Error::SandboxLost(_) | Error::SandboxUnresponsive(_) => StreamEvent::error(e.to_string()),
        other => StreamEvent::error(format!("sandbox lost: {other}")),
    }
}

/// Settings with the `HostConfig` they give and its pool hash.
fn with_host(settings: SandboxSettings) -> Result<(Arc<SandboxSettings>, HostConfig, String)> {
    let host = host_config(&settings)?;
    let hash = PoolKey::hash_of(&host);
    Ok((Arc::new(settings), host, hash))
}

/// The absolute path of a readable PEM bundle holding at least one certificate.
fn check_ca_bundle(path: &str) -> Result<String> {
    let bad = |why: String| Error::option("caBundle", why);
    let full = std::fs::canonicalize(path).map_err(|e| bad(format!("`{path}`: {e}")))?;
    let text = std::fs::read_to_string(&full).map_err(|e| bad(format!("`{path}`: {e}")))?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(bad(format!("`{path}` holds no PEM certificate")));
    }
    Ok(full.to_string_lossy().into_owned())
}

/// Decodes the base64 `files` of a result.
pub fn decode_file(content: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(content)
        .map_err(|e| Error::Sandbox(format!("invalid base64 in result file: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_per_request_options_give_the_engine_own_settings() {
        let base = EngineOptions::default();
        let own = SandboxSettings::resolve(&base).expect("defaults");
        let merged =
            SandboxSettings::resolve(&base.overlay(&EngineOptions::default())).expect("merged");
        assert_eq!(own, merged);
        let a = PoolKey::new("isol8:python", &host_config(&own).expect("host"));
        let b = PoolKey::new("isol8:python", &host_config(&merged).expect("host"));
        assert_eq!(a, b);
    }

    #[test]
    fn an_empty_client_security_object_keeps_the_operators_oci_runtime() {
        // What `isol8 serve` with `security.runtime: "runsc"` does with a client's
        // `options: {"security": {}, "networkFilter": {}}`: the container it would create
        // keeps the runtime, and the filter keeps the operator's lists.
        let operator = EngineOptions {
            security: Some(isol8_protocol::options::SecurityOptions {
                runtime: Some("runsc".into()),
                ..Default::default()
            }),
            network: Some(NetworkMode::Filtered),
            network_filter: Some(isol8_protocol::NetworkFilter {
                whitelist: vec![r"^pypi\.org$".into()],
                blacklist: vec![r"^evil\.example$".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let client: EngineOptions =
            serde_json::from_str(r#"{"security": {}, "networkFilter": {}, "memoryLimit": "256m"}"#)
                .expect("json");
        let s = SandboxSettings::resolve(&operator.overlay(&client)).expect("merged");
        assert_eq!(s.oci_runtime.as_deref(), Some("runsc"));
        let host = host_config(&s).expect("host config");
        assert_eq!(host.runtime.as_deref(), Some("runsc"));
        assert_eq!(s.network_filter.whitelist, [r"^pypi\.org$"]);
        assert_eq!(s.network_filter.blacklist, [r"^evil\.example$"]);
        assert_eq!(
            s.memory_bytes,
            256 << 20,
            "the client's own value still applies"
        );
    }
}
