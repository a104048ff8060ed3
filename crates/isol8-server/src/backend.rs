//! The one interface through which the server drives sandboxes: [`Backend`] (the shared
//! engine: the policy's settings, the execution slots, the session factory and cleanup)
//! over [`Executor`] (what runs executions: the shared engine and each session's).
//!
//! [`isol8::DockerEngine`] implements both here; the router never names it. Tests drive
//! the router over an in-memory fake (`src/tests/fake.rs`), so auth, errors, keys,
//! tenancy, policy, OpenAPI, SSE and WebSocket framing are tested without Docker.

use std::fmt;
use std::sync::Arc;

use isol8::limits::SandboxSettings;
use isol8::{DockerEngine, EngineOptions, EventStream, ExecutionRequest, ExecutionResult};

/// Input for a running interactive execution, and signal names (`SIGINT`…) to numbers.
pub use isol8::docker::{signal_number, Control};

/// Feeds a running interactive execution (the WebSocket route's stdin and signals).
#[async_trait::async_trait]
pub trait Controls: Send + Sync {
    /// Sends input; false once the execution has ended.
    async fn send(&self, control: Control) -> bool;
}

/// An execution started interactively: its events, and its input.
pub type Interactive = (EventStream, Box<dyn Controls>);

/// Runs executions: the shared engine (ephemeral requests, with the client's options
/// laid over the server's) or one session's (its persistent container, with empty
/// options). Errors are the engine's; the router maps them to statuses.
#[async_trait::async_trait]
pub trait Executor: Send + Sync + fmt::Debug {
    /// Runs `req` to completion with `options` laid over the engine's.
    async fn execute(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> isol8::Result<ExecutionResult>;

    /// Runs `req`, yielding its events as they come (see [`EventStream`]). Dropping the
    /// stream kills the execution.
    async fn execute_stream(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> isol8::Result<EventStream>;

    /// Runs `req` with its standard input open to [`Controls`], which also deliver
    /// signals.
    async fn execute_interactive(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> isol8::Result<Interactive>;

    /// Writes a file into the session's sandbox (a path inside `/sandbox`).
    async fn put_file(&self, path: &str, content: &[u8]) -> isol8::Result<()>;

    /// Reads a file from the session's sandbox (regular files only).
    async fn get_file(&self, path: &str) -> isol8::Result<Vec<u8>>;

    /// Executions launched and not yet ended (queued, waiting or running).
    fn running(&self) -> usize;

    /// Ids of the containers this engine owns now.
    fn live_containers(&self) -> Vec<String>;

    /// Kills running executions and removes every container of this engine.
    async fn stop(&self) -> isol8::Result<()>;
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

#[async_trait::async_trait]
impl Controls for isol8::docker::Controller {
    async fn send(&self, control: Control) -> bool {
        isol8::docker::Controller::send(self, control).await
    }
}

#[async_trait::async_trait]
impl Executor for DockerEngine {
    async fn execute(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> isol8::Result<ExecutionResult> {
        self.execute_with(req, options).await
    }

    async fn execute_stream(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> isol8::Result<EventStream> {
        self.execute_stream_with(req, options).await
    }

    async fn execute_interactive(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> isol8::Result<Interactive> {
        let (events, controller) =
            DockerEngine::execute_interactive(self, req, Some(options)).await?;
        Ok((events, Box::new(controller)))
    }

    async fn put_file(&self, path: &str, content: &[u8]) -> isol8::Result<()> {
        isol8::Engine::put_file(self, path, content).await
    }

    async fn get_file(&self, path: &str) -> isol8::Result<Vec<u8>> {
        isol8::Engine::get_file(self, path).await
    }

    fn running(&self) -> usize {
        DockerEngine::running(self)
    }

    fn live_containers(&self) -> Vec<String> {
        DockerEngine::live_containers(self)
    }

    async fn stop(&self) -> isol8::Result<()> {
        isol8::Engine::stop(self).await
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
