//! The persistent session (mode `persistent`): one container, created by the first
//! execution and bound to its runtime, that keeps its files and installed packages
//! between executions. Executions and file transfers of a session take turns (the
//! session's lock); each execution is a fresh process. A container that cannot be trusted
//! any more (a run that did not end cleanly, a transfer that timed out or broke the frame
//! stream) is discarded, and the next execution starts a new one.

use std::time::Duration;

use base64::Engine as _;
use isol8_protocol::agent::{ExecFailed, ExecSpec, Exited, FileWrite, Frame, Kind};
use isol8_protocol::options::Mode;
use tokio::sync::OwnedMutexGuard;

use super::run::{Ending, Run, Stop, Summary};
use super::sandbox::Sandbox;
use super::DockerEngine;
use crate::error::SandboxError;
use crate::output::Secrets;
use crate::prepare::{transfer_spec, writable_path, Prepared};
use crate::{Error, Result};

/// The container of a persistent session, bound to the runtime it was created for.
pub(super) struct Session {
    sandbox: Sandbox,
    runtime: String,
}

impl Run {
    /// Runs the execution in the persistent session's container, creating it on first
    /// use. Executions of a session run one at a time; each is a fresh process, files
    /// and installed packages stay.
    pub(super) async fn drive_session(
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
                let sandbox =
                    Sandbox::start(&self.inner, &prepared.image, runtime, self.host.clone())
                        .await?;
                guard.insert(Session {
                    sandbox,
                    runtime: runtime.clone(),
                })
            }
        };
        let id = session.sandbox.id.clone();
        self.span
            .record("container_id", tracing::field::display(&id));
        let (result, relayed) = self
            .send_and_relay(
                &mut session.sandbox,
                prepared,
                &Frame::json(Kind::Exec, &prepared.spec),
            )
            .await;
        match result {
            Ok(Ending::Clean(exited)) => self.finish((exited, false), id, prepared, relayed).await,
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
                        self.finish((exited, false), id, prepared, relayed).await
                    }
                    Ok(Ending::Lost(exited)) => {
                        self.finish((exited, true), id, prepared, relayed).await
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }
}

/// Longest a file transfer with a session's agent may take: 15 s plus 2 s per MiB that
/// may travel (base64 content sent, or the read cap). A transfer past it means the agent
/// is stuck (paused container, a helper blocked on something the session's code planted).
fn transfer_timeout(spec: &ExecSpec) -> Duration {
    let sent: u64 = spec.files.iter().map(|f| f.content.len() as u64).sum();
    let read = if spec.output_paths.is_empty() {
        0
    } else {
        spec.max_read_bytes
    };
    Duration::from_secs(15) + Duration::from_secs(2 * ((sent + read) >> 20))
}

impl DockerEngine {
    /// `put_file`: writes a file into the session's container.
    pub(super) async fn session_put_file(&self, path: &str, content: &[u8]) -> Result<()> {
        let path = writable_path("file path", path)?;
        if content.len() as u64 > self.inner.max_file_bytes {
            return Err(Error::InvalidRequest(format!(
                "{path} is {} bytes; the limit is {} bytes",
                content.len(),
                self.inner.max_file_bytes
            )));
        }
        let file = FileWrite {
            path,
            content: base64::engine::general_purpose::STANDARD.encode(content),
            mode: None,
        };
        let spec = transfer_spec(vec![file], vec![], self.inner.max_file_bytes);
        if let Err(e) = self.transfer(spec).await {
            return Err(self.engine_secrets().await?.mask_error(e));
        }
        Ok(())
    }

    /// `get_file`: reads a file from the session's container, masked like its output.
    pub(super) async fn session_get_file(&self, path: &str) -> Result<Vec<u8>> {
        let path = writable_path("file path", path)?;
        let spec = transfer_spec(vec![], vec![path.clone()], self.inner.max_file_bytes);
        let secrets = self.engine_secrets().await?;
        let exited = match self.transfer(spec).await {
            Ok(exited) => exited,
            Err(e) => return Err(secrets.mask_error(e)),
        };
        match exited.files.get(&path) {
            // What a session's code wrote is masked like its output.
            Some(b64) => secrets.mask_owned(super::decode_file(b64)?).await,
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

    /// The engine's own secrets, compiled (for file transfers of a session).
    async fn engine_secrets(&self) -> Result<Secrets> {
        Secrets::compile(self.inner.settings.secrets.values().cloned().collect()).await
    }

    /// Sends a pure file transfer to the persistent session's agent, within
    /// [`transfer_timeout`]. A transfer that times out or breaks the frame stream discards
    /// the session's container (the next execution starts a new one), so a stuck agent
    /// never holds the session; a transfer the agent refuses leaves the session as it is.
    async fn transfer(&self, spec: ExecSpec) -> Result<Exited> {
        if self.inner.settings.mode != Mode::Persistent {
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
            Err(_) => SandboxError::TransferTimeout {
                secs: limit.as_secs(),
            }
            .into(),
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
async fn exchange(sandbox: &mut Sandbox, spec: &ExecSpec) -> Result<Exited> {
    sandbox.send(&Frame::json(Kind::Exec, spec)).await?;
    let frame = sandbox
        .next_frame()
        .await?
        .ok_or(SandboxError::SessionEnded)?;
    let bad = |source| SandboxError::BadFrame { source };
    match frame.kind {
        Kind::Exited => Ok(frame.parse().map_err(bad)?),
        Kind::ExecFailed => {
            let failed: ExecFailed = frame.parse().map_err(bad)?;
            Err(Error::InvalidRequest(failed.message))
        }
        kind => Err(SandboxError::UnexpectedFrame {
            kind,
            during: "from the agent",
        }
        .into()),
    }
}
