//! The one interface through which the server drives sandboxes: [`Backend`] (the shared
//! engine: the policy's settings, the execution slots, the session factory and cleanup)
//! over [`Executor`] (what runs executions: the shared engine and each session's).
//!
//! [`isol8::DockerEngine`] implements both here; the router never names it. Tests drive
//! the router over an in-memory fake (`src/tests/fake.rs`), so auth, errors, keys,
//! tenancy, policy, OpenAPI, SSE and WebSocket framing are tested without Docker.

use std::fmt;
use std::sync::Arc;

use isol8::settings::SandboxSettings;
use isol8::{DockerEngine, Engine, EngineOptions};

/// Input for a running interactive execution, its sender, and signal names (`SIGINT`…)
/// to numbers.
pub use isol8::control::{signal_number, Control, Controller};

/// What runs executions: the shared engine (ephemeral requests, with the client's
/// options laid over the server's) or one session's (its persistent container, made from
/// the first request's options; later requests pass only their per-execution options). Running them is the [`Engine`] trait's; the server also needs to
/// know what each is doing. Errors are the engine's; the router maps them to statuses.
pub trait Executor: Engine + fmt::Debug {
    /// Executions launched and not yet ended (queued, waiting or running).
    fn running(&self) -> usize;

    /// Ids of the containers this engine owns now.
    fn live_containers(&self) -> Vec<String>;
}

/// What one part of a cleanup did: how many things were removed, how many could not
/// be, and why (one line each, naming the thing).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Tally {
    /// Removed.
    pub removed: usize,
    /// Could not be removed.
    pub failed: usize,
    /// Why, one entry per failure: `ID: reason`.
    pub errors: Vec<String>,
}

impl Tally {
    /// Counts one outcome; a failure is recorded as `what: error`.
    pub fn count<E: fmt::Display>(&mut self, what: &str, outcome: Result<(), E>) {
        match outcome {
            Ok(()) => self.removed += 1,
            Err(e) => {
                self.failed += 1;
                self.errors.push(format!("{what}: {e}"));
            }
        }
    }
}

/// What the cleanup route's sweep of the daemon did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// This server's leftover containers.
    pub containers: Tally,
    /// isol8's images, when asked.
    pub images: Option<Tally>,
}

/// Sandboxes of the shared engine's warm pool, for `GET /metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSizes {
    /// Ready for an execution.
    pub clean: usize,
    /// Being reset after one.
    pub dirty: usize,
    /// Running an execution (the engine's containers that are none of the others).
    pub busy: usize,
    /// Being started.
    pub starting: usize,
}

/// The server's shared engine: an [`Executor`] that also holds what the whole server
/// shares (the policy's view of its settings, the execution slots every session draws
/// from) and creates the sessions' engines.
#[async_trait::async_trait]
pub trait Backend: Executor {
    /// The engine's own resolved settings (the policy's caps default to them).
    fn settings(&self) -> &SandboxSettings;

    /// The settings a run with these per-request options would get (validated): what
    /// the policy checks.
    fn settings_with(&self, options: &EngineOptions) -> isol8::Result<Arc<SandboxSettings>>;

    /// Executions holding a slot now, here and in every session.
    fn executing(&self) -> usize;

    /// The shared engine's pool, now (all zero for an engine without one).
    fn pool_sizes(&self) -> PoolSizes {
        PoolSizes::default()
    }

    /// The audit log the engine records executions in (config `audit`), for the
    /// requests the server refuses itself; `None` when auditing is off.
    fn audit_log(&self) -> Option<isol8::audit::AuditLog> {
        None
    }

    /// Closes the execution slots: queued and new executions fail with
    /// [`isol8::Error::Stopped`] at once; running ones go on.
    fn close_slots(&self);

    /// The engine of a new persistent session with `options`, sharing this engine's
    /// slots. Must not block (it is called under the sessions lock): its container
    /// starts with its first execution.
    fn new_session(&self, options: EngineOptions) -> isol8::Result<Arc<dyn Executor>>;

    /// Removes this engine's leftover containers (only its own) and, with `images`,
    /// isol8's images; a thing that cannot be removed is counted and the sweep goes on.
    /// Fails only when the daemon cannot list them.
    async fn cleanup(&self, images: bool) -> isol8::Result<Cleaned>;
}

impl Executor for DockerEngine {
    fn running(&self) -> usize {
        DockerEngine::running(self)
    }

    fn live_containers(&self) -> Vec<String> {
        DockerEngine::live_containers(self)
    }
}

#[async_trait::async_trait]
impl Backend for DockerEngine {
    fn settings(&self) -> &SandboxSettings {
        DockerEngine::settings(self)
    }

    fn settings_with(&self, options: &EngineOptions) -> isol8::Result<Arc<SandboxSettings>> {
        DockerEngine::settings_with(self, options)
    }

    fn executing(&self) -> usize {
        self.slots().in_use()
    }

    fn close_slots(&self) {
        self.slots().close();
    }

    fn audit_log(&self) -> Option<isol8::audit::AuditLog> {
        DockerEngine::audit_log(self).cloned()
    }

    fn pool_sizes(&self) -> PoolSizes {
        let t = self.pool_totals();
        let pooled = t.idle + t.resetting + t.warming;
        PoolSizes {
            clean: t.idle,
            dirty: t.resetting,
            busy: DockerEngine::live_containers(self)
                .len()
                .saturating_sub(pooled),
            starting: t.warming,
        }
    }

    fn new_session(&self, options: EngineOptions) -> isol8::Result<Arc<dyn Executor>> {
        Ok(Arc::new(self.sibling(options)?))
    }

    async fn cleanup(&self, images: bool) -> isol8::Result<Cleaned> {
        use isol8::maintenance::{list_containers, list_images, remove_container};
        let api = self.backend();
        let mut cleaned = Cleaned::default();
        // Only this server's own containers: those labelled with this engine's owner.
        for c in list_containers(api, Some(self.owner())).await? {
            let short: String = c.id.chars().take(12).collect();
            cleaned
                .containers
                .count(&short, remove_container(api, &c.id).await);
        }
        if images {
            let mut tally = Tally::default();
            for image in list_images(api).await? {
                let outcome = match api.remove_image(&image).await {
                    Ok(()) => Ok(()),
                    // Gone meanwhile (removed with another tag): nothing to count.
                    Err(isol8::error::ApiError::NotFound(_)) => continue,
                    Err(e) => Err(e),
                };
                tally.count(&image, outcome);
            }
            cleaned.images = Some(tally);
        }
        Ok(cleaned)
    }
}
