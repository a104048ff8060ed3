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
/// options laid over the server's) or one session's (its persistent container, with
/// empty options). Running them is the [`Engine`] trait's; the server also needs to
/// know what each is doing. Errors are the engine's; the router maps them to statuses.
pub trait Executor: Engine + fmt::Debug {
    /// Executions launched and not yet ended (queued, waiting or running).
    fn running(&self) -> usize;

    /// Ids of the containers this engine owns now.
    fn live_containers(&self) -> Vec<String>;
}

/// What the cleanup route removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Containers removed.
    pub containers: usize,
    /// Images removed.
    pub images: usize,
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

    /// Closes the execution slots: queued and new executions fail with
    /// [`isol8::Error::Stopped`] at once; running ones go on.
    fn close_slots(&self);

    /// The engine of a new persistent session with `options`, sharing this engine's
    /// slots. Must not block (it is called under the sessions lock): its container
    /// starts with its first execution.
    fn new_session(&self, options: EngineOptions) -> isol8::Result<Arc<dyn Executor>>;

    /// Removes this engine's leftover containers (only its own) and, with `images`,
    /// isol8's images.
    async fn cleanup(&self, images: bool) -> isol8::Result<Removed>;
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

    fn new_session(&self, options: EngineOptions) -> isol8::Result<Arc<dyn Executor>> {
        Ok(Arc::new(self.sibling(options)?))
    }

    async fn cleanup(&self, images: bool) -> isol8::Result<Removed> {
        // Only this server's own containers: those labelled with this engine's owner.
        let report = isol8::maintenance::cleanup(
            self.backend(),
            &isol8::maintenance::CleanupOptions {
                images,
                owner: Some(self.owner().to_string()),
            },
        )
        .await?;
        Ok(Removed {
            containers: report.containers,
            images: report.images,
        })
    }
}
