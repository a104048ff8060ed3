//! Admitting a request: everything between `execute` and the spawned [`Run`] — the
//! per-request options laid over the engine's, the `codeUrl` fetched, a built image that
//! covers `installPackages` looked up, the request validated and prepared, the secrets
//! compiled, and the wait for the session and for an execution slot. Whatever fails
//! here is returned as an error before anything runs (masked: it may quote request text).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use isol8_protocol::options::Mode;
use isol8_protocol::{EngineOptions, ExecutionRequest, NetworkMode};
use tokio::sync::{mpsc, OwnedMutexGuard, OwnedSemaphorePermit};
use tracing::Instrument as _;

use super::host_config::{host_config, HostConfig};
use super::pool::PoolKey;
use super::run::{event_stream, Msg, Run, RunTask};
use super::session::Session;
use super::{Active, DockerEngine};
use crate::control::{Control, Controller};
use crate::engine::EventStream;
use crate::output::Secrets;
use crate::prepare::prepare;
use crate::settings::SandboxSettings;
use crate::{Error, Result};

/// A launched run: its messages, the name of its runtime and its execution id.
pub(super) struct Launched {
    pub(super) rx: mpsc::Receiver<Msg>,
    pub(super) runtime: String,
    pub(super) execution_id: String,
}

/// Settings with the `HostConfig` they give and its pool hash.
fn with_host(settings: SandboxSettings) -> Result<(Arc<SandboxSettings>, HostConfig, String)> {
    let host = host_config(&settings)?;
    let hash = PoolKey::hash_of(&host);
    Ok((Arc::new(settings), host, hash))
}

impl DockerEngine {
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

    /// Runs a request whose standard input stays open for [`Controller`] input, and which
    /// accepts signals while it runs (the server's WebSocket route).
    pub(super) async fn launch_interactive(
        &self,
        req: &ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<(EventStream, Controller)> {
        let (run, controller) = self.launch_controlled(req, options).await?;
        Ok((event_stream(run), controller))
    }

    /// Validates the request and spawns its run with its standard input open for the
    /// returned [`Controller`] (signals too); messages arrive on the returned channel.
    pub(super) async fn launch_controlled(
        &self,
        req: &ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<(Launched, Controller)> {
        let (controller, rx) = Controller::channel();
        let (id, span) = crate::trace::execution_span(&req.runtime);
        let launched = self
            .launch_with(req, Some(options), Some(rx), id.clone(), span.clone())
            .instrument(span.clone())
            .await;
        match launched {
            Ok((run, task)) => {
                task.spawn();
                Ok((run, controller))
            }
            Err(e) => Err(self
                .refuse(req, Some(options), id, e)
                .instrument(span)
                .await),
        }
    }

    /// Validates the request and spawns its run; messages arrive on the returned channel.
    pub(super) async fn launch(
        &self,
        req: &ExecutionRequest,
        overrides: Option<&EngineOptions>,
    ) -> Result<Launched> {
        let (run, task) = self.launch_unspawned(req, overrides).await?;
        task.spawn();
        Ok(run)
    }

    /// Validates the request and returns its run's messages and the run itself, which
    /// the caller polls ([`RunTask::drive`]) or spawns.
    pub(super) async fn launch_unspawned(
        &self,
        req: &ExecutionRequest,
        overrides: Option<&EngineOptions>,
    ) -> Result<(Launched, RunTask)> {
        let (id, span) = crate::trace::execution_span(&req.runtime);
        let launched = self
            .launch_with(req, overrides, None, id.clone(), span.clone())
            .instrument(span.clone())
            .await;
        match launched {
            Ok(run) => Ok(run),
            Err(e) => Err(self.refuse(req, overrides, id, e).instrument(span).await),
        }
    }

    /// A refused launch's error, masked ([`DockerEngine::mask_launch_error`]), after
    /// recording the refusal in the audit log (if any).
    async fn refuse(
        &self,
        req: &ExecutionRequest,
        overrides: Option<&EngineOptions>,
        id: String,
        e: Error,
    ) -> Error {
        let e = self.mask_launch_error(overrides, e).await;
        if let Some(log) = &self.inner.audit {
            let secrets = self.execution_secrets(overrides).await.unwrap_or_default();
            let network = overrides
                .and_then(|o| o.network)
                .or(Some(self.inner.settings.network));
            let draft = crate::audit::Draft::new(log.settings(), id, req, &secrets, network);
            log.record(draft.refused(&e.to_string(), &secrets));
        }
        e
    }

    /// The secrets an execution with these options would have (the engine's and the
    /// request's), compiled.
    async fn execution_secrets(&self, overrides: Option<&EngineOptions>) -> Result<Secrets> {
        let values: Vec<String> = self
            .inner
            .settings
            .secrets
            .values()
            .chain(overrides.into_iter().flat_map(|o| o.secrets.values()))
            .cloned()
            .collect();
        Secrets::compile(values).await
    }

    /// A refused launch's error with every secret the execution would have had (the
    /// engine's and the request's) masked: `codeUrl`, `prepare` and option errors can
    /// quote request text.
    async fn mask_launch_error(&self, overrides: Option<&EngineOptions>, e: Error) -> Error {
        match self.execution_secrets(overrides).await {
            Ok(secrets) => secrets.mask_error(e),
            // Secrets too large to compile: that is the error to report.
            Err(too_big) => too_big,
        }
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
        let covering = super::housekeeping::covering_image(
            self.inner.api.as_ref(),
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
        execution_id: String,
        span: tracing::Span,
    ) -> Result<(Launched, RunTask)> {
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
                let own = self.inner.settings.mode;
                if o.mode.is_some_and(|m| m != own) {
                    return Err(Error::InvalidRequest(match own {
                        Mode::Ephemeral => {
                            "per-request options cannot switch to persistent mode; use a session"
                                .into()
                        }
                        Mode::Persistent => "options.mode: a persistent session's executions cannot be ephemeral; use an engine without a session".into(),
                    }));
                }
                let settings = self.settings_with(o)?;
                if own == Mode::Persistent {
                    // The session's container is fixed: only per-execution options may
                    // differ from the session's own.
                    self.inner.settings.same_container(&settings)?;
                }
                with_host((*settings).clone())?
            }
        };
        // The runtime's own defaults (the agent's larger process limit and `/sandbox`)
        // where the options left those unset: a sandbox of that kind is needed.
        let defaults = &self.inner.registry.get(&req.runtime)?.defaults;
        let (settings, host, host_hash) = match settings.for_runtime(defaults)? {
            Some(s) => with_host(s)?,
            None => (settings, host, host_hash),
        };
        // Compiled once for the whole execution: every stream, log, file and error of it.
        let secrets = Secrets::compile(settings.secrets.values().cloned().collect()).await?;
        let (owned, settings) = self.resolve_request(req, settings).await?;
        let req = owned.as_ref().unwrap_or(req);
        let mut prepared = prepare(req, &self.inner.registry, &settings)?;
        prepared.spec.interactive = control.is_some();
        prepared.spec.measure_usage = !self.inner.config.skip_usage;
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
        //
        // The audit record starts here (only when auditing), with the code as it will run:
        // if this future is dropped while it waits (the client went away), the record is
        // written as cancelled; a refusal while waiting is recorded by `refuse` instead.
        let audit = self.inner.audit.as_ref().map(|log| {
            let mut draft = crate::audit::Draft::new(
                log.settings(),
                execution_id.clone(),
                req,
                &secrets,
                Some(prepared.network),
            );
            draft.record.image = Some(prepared.image.clone());
            super::run::Audit::new(log.clone(), draft)
        });
        let waited = async {
            let session = if self.inner.settings.mode == Mode::Persistent {
                Some(self.session_turn().await?)
            } else {
                None
            };
            let permit = self
                .slot(Duration::from_millis(prepared.spec.timeout_ms))
                .await?;
            Ok::<_, Error>((session, permit))
        }
        .await;
        let (session, permit) = match waited {
            Ok(w) => w,
            Err(e) => {
                if let Some(a) = audit {
                    a.disarm();
                }
                return Err(e);
            }
        };
        let control = control.map(tokio::sync::Mutex::new);
        let (tx, rx) = mpsc::channel(64);
        let inner = self.inner.clone();
        let runtime = prepared.runtime.name.clone();
        let run_span = span.clone();
        let run = async move {
            Run {
                inner: inner.clone(),
                tx,
                span: run_span,
                settings,
                host,
                host_hash,
                control,
                egress_rules,
                setup_tail: Mutex::new(String::new()),
                secrets,
                audit,
            }
            .execute(prepared, session)
            .await;
            drop(permit);
            drop(active);
        };
        // The run carries the execution's span explicitly, wherever it is polled.
        Ok((
            Launched {
                rx,
                runtime,
                execution_id,
            },
            RunTask::new(run.instrument(span)),
        ))
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

    /// Waits up to `wait` for an execution slot (see [`super::Slots`]).
    async fn slot(&self, wait: Duration) -> Result<OwnedSemaphorePermit> {
        let queued = std::time::Instant::now();
        let permit = tokio::select! {
            biased;
            _ = self.inner.halted() => Err(Error::Stopped),
            permit = self.inner.slots.acquire(wait) => permit,
        }?;
        let waited = queued.elapsed();
        self.inner.observe(|o| o.queue_wait(waited));
        Ok(permit)
    }
}
