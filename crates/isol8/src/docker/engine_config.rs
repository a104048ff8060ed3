//! Building a [`DockerEngine`]: its settings ([`EngineConfig`]), what can be checked
//! before any daemon is contacted, and the constructors — on the local Docker daemon
//! ([`DockerEngine::connect_with`]), on any [`ContainerApi`]
//! ([`DockerEngine::with_backend`]), or as a sibling sharing an engine's client and slots
//! ([`DockerEngine::sibling`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use isol8_protocol::options::Mode;
use isol8_protocol::EngineOptions;
use tokio::sync::watch as signal;

use super::backend::ContainerApi;
use super::host_config::{host_config, HostConfig};
use super::pool::{self, PoolKey};
use super::slots::Slots;
use super::{watch, DockerEngine, Inner, DEFAULT_MAX_CONCURRENT};
use crate::audit::AuditLog;
use crate::code_url::CodeFetcher;
use crate::config::{AuditConfig, Config, RemoteCodeConfig};
use crate::egress::AddressPolicy;
use crate::runtime::RuntimeRegistry;
use crate::settings::SandboxSettings;
use crate::{Error, Result};

/// Settings for [`DockerEngine::connect_with`].
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Engine options (defaults from SPEC section 3 where unset).
    pub options: EngineOptions,
    /// The runtime registry (the six built-ins by default).
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
    pub remote_code: RemoteCodeConfig,
    /// Addresses or CIDR ranges egress may dial although they are special-purpose
    /// (config `network.exemptRanges`; see [`AddressPolicy`]).
    pub exempt_ranges: Vec<String>,
    /// Told what the engine does (slot waits, sandboxes taken and started, runs,
    /// containers created and removed, failed resets, egress decisions); shared with
    /// sibling engines. `None`: nothing is reported.
    pub observer: Option<crate::stats::Observer>,
    /// Asks the agent not to measure executions (`ExecSpec::measure_usage` false, so
    /// results have no `resourceUsage`). Only for `isol8 bench`, which prices measuring
    /// by running the same warm execution with and without it.
    #[doc(hidden)]
    pub skip_usage: bool,
    /// Starts every program fresh and plain: the engine runs its registry's
    /// [`crate::runtime::RuntimeRegistry::plain_starts`], so pooled sandboxes keep no
    /// pre-started interpreter and no program loads the teardown library. For
    /// comparisons (`isol8 bench`, the differential tests) and as a way out should a
    /// program depend on starting fresh.
    pub fresh_starts: bool,
    /// Carries every frame over the container's attached stdio, as over a remote daemon:
    /// no data socket ([`crate::docker::data_socket`]). For comparisons (`isol8 bench`)
    /// and tests of that path.
    pub stdio_frames: bool,
    /// The audit log settings (config `audit`): when enabled and `audit_log` is unset,
    /// the engine opens its [`AuditLog`] when it is built (errors name the key).
    pub audit: AuditConfig,
    /// An audit log already open (shared with sibling engines; tests inject one with
    /// their own clock or output). Wins over `audit`.
    pub audit_log: Option<AuditLog>,
}

impl EngineConfig {
    /// The engine a configuration file describes: its options, `maxConcurrent`,
    /// `caBundle`, `remoteCode` and `network.exemptRanges`.
    pub fn from_config(config: &Config) -> EngineConfig {
        EngineConfig {
            options: config.engine_options(),
            max_concurrent: config.max_concurrent.map(|n| n as usize),
            ca_bundle: config.ca_bundle.clone(),
            remote_code: config.remote_code.clone(),
            exempt_ranges: config.network.exempt_ranges.clone(),
            audit: config.audit.clone(),
            ..Default::default()
        }
    }
}

/// What an engine is made of that needs no daemon, checked before connecting.
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
        let mut registry = config.registry.clone().unwrap_or_default();
        if config.fresh_starts {
            registry = registry.plain_starts();
        }
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

/// [`Parts`] and the rest of an engine's checked configuration.
struct Checked {
    parts: Parts,
    address_policy: Arc<AddressPolicy>,
    code_fetcher: CodeFetcher,
    slots: Slots,
    audit: Option<AuditLog>,
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
        let checked = Self::check(&config)?;
        let docker = super::connect().await?;
        Self::build(Arc::new(docker), config, checked).await
    }

    /// An engine on `backend` instead of the local Docker daemon, otherwise what
    /// [`DockerEngine::connect_with`] makes: the configuration is checked the same way
    /// and orphaned containers of dead isol8 processes are reaped through the backend.
    /// With the in-memory backend of the `testing` feature (`docker::fake`), an engine
    /// that runs the real agent protocol with no daemon at all.
    pub async fn with_backend(
        backend: Arc<dyn ContainerApi>,
        config: EngineConfig,
    ) -> Result<Self> {
        let checked = Self::check(&config)?;
        Self::build(backend, config, checked).await
    }

    /// Checks everything that needs no daemon: the CA bundle, options, limits, runtimes,
    /// exempt ranges, the `codeUrl` policy and the slots.
    fn check(config: &EngineConfig) -> Result<Checked> {
        let ca_bundle = config
            .ca_bundle
            .as_deref()
            .map(check_ca_bundle)
            .transpose()?;
        let parts = Parts::new(config, ca_bundle)?;
        let address_policy = Arc::new(AddressPolicy::new(&config.exempt_ranges)?);
        let code_fetcher = CodeFetcher::new(&config.remote_code, address_policy.clone())?;
        let slots = match &config.slots {
            Some(s) => s.clone(),
            None => Slots::new(config.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT))?,
        };
        let audit = match &config.audit_log {
            Some(log) => Some(log.clone()),
            None => AuditLog::open(&config.audit)?,
        };
        Ok(Checked {
            parts,
            address_policy,
            code_fetcher,
            slots,
            audit,
        })
    }

    async fn build(
        api: Arc<dyn ContainerApi>,
        config: EngineConfig,
        checked: Checked,
    ) -> Result<Self> {
        // A crashed engine of this host may have left containers behind: remove them,
        // and the proxy socket directories of its filtered sandboxes.
        if let Err(e) = super::housekeeping::reap_orphans(api.as_ref()).await {
            tracing::warn!(error = %e, "could not look for orphaned containers");
        }
        crate::egress::reap_stale_dirs();
        super::data_socket::reap_stale_dirs();
        // Proxies and streams need descriptors; a low soft limit (1024) would make accepts
        // fail under load. Once per process.
        if let Err(e) = crate::egress::raise_open_files_limit() {
            tracing::warn!(error = %e, "cannot read the open-files limit");
        }
        let Checked {
            parts,
            address_policy,
            code_fetcher,
            slots,
            audit,
        } = checked;
        Ok(Self::assemble(
            api,
            config,
            parts,
            address_policy,
            code_fetcher,
            slots,
            audit,
        ))
    }

    /// An engine with `options` (instead of this engine's) that shares this engine's
    /// Docker client, runtimes, address policy, `codeUrl` policy, CA bundle and
    /// execution slots, observer and audit log: its executions count against the same
    /// `maxConcurrent`. Its
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
            self.inner.api.clone(),
            config,
            parts,
            self.inner.address_policy.clone(),
            self.inner.code_fetcher.clone(),
            self.inner.slots.clone(),
            self.inner.audit.clone(),
        ))
    }

    fn assemble(
        api: Arc<dyn ContainerApi>,
        config: EngineConfig,
        parts: Parts,
        address_policy: Arc<AddressPolicy>,
        code_fetcher: CodeFetcher,
        slots: Slots,
        audit: Option<AuditLog>,
    ) -> DockerEngine {
        let Parts {
            settings,
            host,
            registry,
            max_file_bytes,
        } = parts;
        let pooled = settings.mode != Mode::Persistent;
        let inner = Arc::new(Inner {
            api,
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
            audit,
        });
        // Pooled sandboxes are watched so a paused or dead one is never handed out.
        if pooled {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(watch::run(
                    Arc::downgrade(&inner),
                    inner.api.clone(),
                    inner.owner.clone(),
                    inner.halt.subscribe(),
                ));
            }
        }
        DockerEngine { inner }
    }
}
