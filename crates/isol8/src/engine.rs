//! The [`Engine`] trait: the one interface the CLI, the server and the remote client drive.

use std::future::Future;
use std::pin::Pin;

use futures_util::Stream;
use isol8_protocol::{EngineOptions, ExecutionRequest, ExecutionResult, StreamEvent};

use crate::control::Controller;
use crate::Result;

/// Events of a streamed execution. Ends with exactly one `exit` event (which carries the
/// execution's `resourceUsage`, where measured, and `exitReason`; a non-normal reason is
/// announced by an `error` event before it — see [`crate::outcome`]). A sandbox that went
/// away under the running program (its container died, the daemon went away) is such a
/// reason: an `error` event `sandbox lost: …`, then the `exit` with `exitReason`
/// `sandboxLost`. Only when no program ran to an end — the sandbox unresponsive (paused),
/// the engine stopped, or lost outside the run — does it end with an `error` event whose
/// data starts with `sandbox lost: ` or `sandbox unresponsive: ` and no `exit` event
/// ([`crate::Error::is_sandbox_lost`]), because there is no exit code to report.
pub type EventStream = Pin<Box<dyn Stream<Item = StreamEvent> + Send>>;

/// The buffered result of a running execution ([`Engine::execute_interactive_buffered`]).
/// Dropping it kills the execution.
pub type PendingResult = Pin<Box<dyn Future<Output = Result<ExecutionResult>> + Send>>;

/// Something that runs [`ExecutionRequest`]s in sandboxes: the local `DockerEngine`, the
/// `RemoteEngine` of an `isol8 serve`, or a test double.
///
/// Per-request options (`options`) are laid over the engine's own, field by field
/// ([`EngineOptions::overlay`]): they can only narrow what the engine was set up with.
/// Empty options mean the engine's own settings. In a persistent engine (a session) the
/// container outlives each execution, so only the per-execution options (`timeoutMs`,
/// `maxOutputSize`, `secrets`, `networkFilter`, `logNetwork`) may differ from the
/// engine's; an option that would change the container (`memoryLimit`, `network`,
/// `image`… see [`crate::settings::SandboxSettings::container_difference`]) is refused
/// with [`crate::Error::InvalidRequest`] naming it.
#[async_trait::async_trait]
pub trait Engine: Send + Sync {
    /// Prepares the engine (checks the daemon or server; warms the pools it was asked to).
    async fn start(&self) -> Result<()>;

    /// Stops the engine: running executions are killed and every container it owns removed.
    async fn stop(&self) -> Result<()>;

    /// Runs a request to completion with the engine's own options; the buffered result.
    async fn execute(&self, req: ExecutionRequest) -> Result<ExecutionResult> {
        self.execute_with(req, &EngineOptions::default()).await
    }

    /// Runs a request to completion with `options` laid over the engine's.
    async fn execute_with(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<ExecutionResult>;

    /// Runs a request with the engine's own options, yielding output as it is produced.
    ///
    /// Validation errors (and, for the local engine, a queue timeout or a stopped engine)
    /// are returned before anything runs; other failures after that arrive as an `error`
    /// event followed by the `exit` event, or, when the sandbox was lost, as a final
    /// `error` event with no `exit` (see [`EventStream`]). Dropping the stream kills the
    /// execution.
    async fn execute_stream(&self, req: ExecutionRequest) -> Result<EventStream> {
        self.execute_stream_with(req, &EngineOptions::default())
            .await
    }

    /// [`Engine::execute_stream`] with `options` laid over the engine's.
    async fn execute_stream_with(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<EventStream>;

    /// Streams a request whose standard input stays open: the [`Controller`] feeds it
    /// (bytes, then end-of-file) and delivers signals to the program while it runs. The
    /// request's `stdin`, if any, comes first. Every other way to run a request gives the
    /// program the request's `stdin` (if any) and then end-of-file at once.
    async fn execute_interactive(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<(EventStream, Controller)>;

    /// [`Engine::execute_interactive`] with a buffered result: the program's standard
    /// input stays open for the [`Controller`] (the request's `stdin` first), and the
    /// [`PendingResult`] resolves to the [`ExecutionResult`] once the program ends. For a
    /// caller that forwards a stream it does not want to wait for before the program
    /// starts (`isol8 run` forwarding its own standard input).
    ///
    /// Errors before anything runs are returned at once, as by
    /// [`Engine::execute_interactive`]. The default is [`crate::Error::NotSupported`]:
    /// the caller can then read its input to the end and use [`Engine::execute_with`].
    async fn execute_interactive_buffered(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<(PendingResult, Controller)> {
        let _ = (req, options);
        Err(crate::Error::NotSupported(
            "this engine cannot feed a buffered execution's input while it runs; pass the input as the request's `stdin`".into(),
        ))
    }

    /// Writes a file into the persistent session (binary-safe; the path must lie below
    /// `/sandbox`, `/tmp` or `/dev/shm`).
    async fn put_file(&self, path: &str, content: &[u8]) -> Result<()>;

    /// Reads a file from the persistent session (refusing symlinks and non-files).
    async fn get_file(&self, path: &str) -> Result<Vec<u8>>;
}

/// Decodes the base64 `files` of a result.
pub fn decode_file(content: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(content)
        .map_err(|source| crate::error::SandboxError::DecodeFile { source }.into())
}
