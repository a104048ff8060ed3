//! One execution in one sandbox: the state machine from the `Exec` frame to the result.
//!
//! A run takes a sandbox from the pool (or the persistent session, see [`super::session`]),
//! sends one `Exec` frame and turns the agent's frames into messages for its consumer:
//! `Output` frames become masked stdout/stderr events tagged with their phase, `Exited`
//! becomes the summary (after the output-cap trailers and the timeout marker), and
//! `ExecFailed` becomes the agent's refusal. Around that loop it enforces what the agent
//! cannot: a watchdog past the request's timeout (a frozen or vanished container is not
//! the program's timeout), a consumer that went away (the run stops at once and its
//! sandbox is discarded), an OOM-killed or dead container. A sandbox that ended cleanly
//! goes back to the pool; any other is destroyed.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use isol8_protocol::agent::{self, ExecFailed, Exited, Frame, Kind, StepPhase, Stream};
use isol8_protocol::{
    ExecutionResult, ExitReason, NetworkLog, Phase, ResourceUsage, StreamEvent, StreamEventType,
};
use tokio::sync::{mpsc, OwnedMutexGuard};

use super::host_config::HostConfig;
use super::launch::Launched;
use super::pool::{self, PoolKey};
use super::sandbox::{self, Sandbox};
use super::session::Session;
use super::Inner;
use crate::control::Control;
use crate::engine::EventStream;
use crate::error::SandboxError;
use crate::outcome::{self, ProxyTraffic};
use crate::output::{truncation_trailer, Secrets, TextStream, TIMEOUT_EVENT, TIMEOUT_TRAILER};
use crate::prepare::Prepared;
use crate::settings::SandboxSettings;
use crate::{Error, Result};

/// Extra time the engine gives the agent past the request's timeout before killing the
/// container itself.
pub(super) const WATCHDOG_GRACE: Duration = Duration::from_secs(5);

/// Bytes of setup output kept for the error of a failed package install.
const SETUP_TAIL: usize = 4096;

/// The last `n` non-empty lines of `text`, joined by newlines.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What a run reports to whoever consumes it.
pub(super) enum Msg {
    Event(StreamEvent),
    /// The run's end, with its audit record (if auditing), written when the consumer
    /// takes this message (or it is dropped unread).
    Done(Box<Summary>, Option<QueuedRecord>),
    Failed(Error, Option<QueuedRecord>),
}

/// An execution's finished audit record, queued to the log when this is dropped: when the
/// consumer takes the run's last message, so every output event before it has been
/// handled (a CLI printing output and an audit log writing to the same stdout keep that
/// order), and still before the consumer hears the end (a caller that flushes the log
/// after getting its result finds the record written). A message dropped unread (the
/// consumer went away) queues it too.
pub(super) struct QueuedRecord(Option<(crate::audit::AuditLog, crate::audit::AuditRecord)>);

impl Drop for QueuedRecord {
    fn drop(&mut self) {
        if let Some((log, record)) = self.0.take() {
            log.record(record);
        }
    }
}

/// How a run ended, for the buffered result.
pub(super) struct Summary {
    exit_code: i32,
    /// The phase the run ended in (its `exit` event says so).
    phase: Phase,
    truncated: bool,
    duration_ms: u64,
    container_id: String,
    files: Option<BTreeMap<String, String>>,
    masked_files: Option<Vec<String>>,
    network_logs: Option<Vec<NetworkLog>>,
    /// Absent when the agent measured nothing.
    resource_usage: Option<ResourceUsage>,
    exit_reason: ExitReason,
    /// The egress summary for the audit record (only when auditing).
    audit_network: Option<crate::audit::NetworkSummary>,
}

impl Summary {
    /// Sets the result fields this summary decides but files and network logs (which
    /// [`collect`] moves): exit code, duration, truncation, container, resource usage and
    /// exit reason. The audit record
    /// reads its `exitCode`, `exitReason` and `resourceUsage` from a result filled here,
    /// so a field added here reaches both.
    fn fill_status(&self, result: &mut ExecutionResult) {
        result.exit_code = self.exit_code;
        result.duration_ms = self.duration_ms;
        result.truncated = self.truncated;
        result.container_id = Some(self.container_id.clone());
        result.resource_usage = self.resource_usage.clone();
        result.exit_reason = Some(self.exit_reason);
    }
}

/// An execution's audit record in the making, and the output it saw (with
/// `includeOutput`). Dropped unfinished (the launch or the run was dropped), it is
/// written as cancelled; [`Audit::disarm`] drops it without a record.
pub(super) struct Audit(Option<AuditParts>);

struct AuditParts {
    log: crate::audit::AuditLog,
    draft: crate::audit::Draft,
    /// Stdout and stderr as sent to the consumer (masked), when `includeOutput`.
    output: Option<Mutex<(String, String)>>,
}

impl Audit {
    pub(super) fn new(log: crate::audit::AuditLog, draft: crate::audit::Draft) -> Audit {
        let output = log
            .settings()
            .include_output
            .then(|| Mutex::new((String::new(), String::new())));
        Audit(Some(AuditParts { log, draft, output }))
    }

    /// Drops the record unwritten (the refusal is recorded by whoever reports it).
    pub(super) fn disarm(mut self) {
        self.0 = None;
    }

    /// Keeps an output event's text (with `includeOutput`).
    fn saw(&self, ev: &StreamEvent) {
        let Some(out) = self.0.as_ref().and_then(|p| p.output.as_ref()) else {
            return;
        };
        let Ok(mut out) = out.lock() else { return };
        match ev.kind {
            StreamEventType::Stdout => out.0.push_str(&ev.data),
            StreamEventType::Stderr => out.1.push_str(&ev.data),
            _ => {}
        }
    }

    /// Completes the record with how the run ended (`error` already masked; `None`:
    /// cancelled); it is queued when the returned value is dropped.
    fn finish(mut self, ended: std::result::Result<&Summary, Option<&Error>>) -> QueuedRecord {
        let Some(AuditParts { log, draft, output }) = self.0.take() else {
            return QueuedRecord(None);
        };
        let mut record = match ended {
            Ok(summary) => {
                let mut result = ExecutionResult::default();
                summary.fill_status(&mut result);
                draft.completed(log.settings(), &result, summary.audit_network.clone())
            }
            Err(e) => draft.ended_early(e),
        };
        if let Some((stdout, stderr)) = output.and_then(|o| o.into_inner().ok()) {
            record.stdout = Some(stdout);
            record.stderr = Some(stderr);
        }
        QueuedRecord(Some((log, record)))
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        if self.0.is_some() {
            drop(Audit(self.0.take()).finish(Err(None)));
        }
    }
}

/// One execution in one sandbox.
pub(super) struct Run {
    pub(super) inner: Arc<Inner>,
    pub(super) tx: mpsc::Sender<Msg>,
    /// The execution's span (see [`crate::trace`]): the container is recorded on it.
    pub(super) span: tracing::Span,
    /// Settings of this execution (the engine's, or per-request options over them).
    pub(super) settings: Arc<SandboxSettings>,
    /// The `HostConfig` those settings give.
    pub(super) host: HostConfig,
    /// Its [`PoolKey::hash_of`].
    pub(super) host_hash: String,
    /// Stdin and signals for an interactive execution.
    pub(super) control: Option<tokio::sync::Mutex<mpsc::Receiver<Control>>>,
    /// What the egress proxy admits during this execution (`filtered` network).
    pub(super) egress_rules: Option<Arc<crate::egress::Rules>>,
    /// The end of the setup phase's output (for a failed install's error).
    pub(super) setup_tail: Mutex<String>,
    /// This execution's secrets: masked in its output, network log, files and errors.
    pub(super) secrets: Secrets,
    /// Its audit record in the making (when auditing).
    pub(super) audit: Option<Audit>,
}

/// Why a run ended without a summary.
pub(super) enum Stop {
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

impl From<SandboxError> for Stop {
    fn from(e: SandboxError) -> Self {
        Stop::Failed(e.into())
    }
}

/// How the agent's part of a run ended.
pub(super) enum Ending {
    /// The agent reported `Exited`: the sandbox can be reset and reused.
    Clean(Exited),
    /// The sandbox must be destroyed (watchdog fired, OOM killed the agent…).
    Dirty(Exited),
    /// The sandbox went away under the running program (its container died, or the
    /// daemon went away): the run has a result (exit reason `sandboxLost`, status 137,
    /// the output that arrived) and the sandbox is destroyed.
    Lost(Exited),
}

/// What the engine saw of an execution besides the agent's frames.
#[derive(Default)]
pub(super) struct Relayed {
    /// The egress proxy's log of the execution (with `logNetwork`).
    pub(super) logs: Option<Vec<NetworkLog>>,
    /// Bytes the egress proxy relayed for the execution.
    pub(super) traffic: ProxyTraffic,
}

impl Run {
    /// Runs the execution: in the persistent session when `session` is given (held by
    /// this execution), else in a pooled sandbox.
    ///
    /// The audit record (if any) rides on the run's last message and is queued when the
    /// consumer takes it ([`QueuedRecord`]): after the output events before it were
    /// handled, before the consumer hears the end, so a caller that flushes the log
    /// after getting its result finds the record written.
    pub(super) async fn execute(
        mut self,
        prepared: Prepared,
        session: Option<OwnedMutexGuard<Option<Session>>>,
    ) {
        let key = PoolKey::with_hash(&prepared.image, &self.host_hash);
        let outcome = match session {
            Some(guard) => self.drive_session(&prepared, guard).await,
            None => self.drive(&key, &prepared).await,
        };
        let audit = self.audit.take();
        match outcome {
            Ok(summary) => {
                tracing::debug!(
                    exit_code = summary.exit_code,
                    duration_ms = summary.duration_ms,
                    truncated = summary.truncated,
                    "execution finished"
                );
                let record = self.ride(audit.map(|a| a.finish(Ok(&summary))));
                let _ = self.tx.send(Msg::Done(Box::new(summary), record)).await;
            }
            Err(Stop::Failed(e)) | Err(Stop::Unsent(e)) => {
                let e = if self.inner.is_stopped() {
                    Error::Stopped
                } else {
                    e
                };
                let e = self.secrets.mask_error(e);
                tracing::debug!(error = %e, "execution failed");
                let record = self.ride(audit.map(|a| a.finish(Err(Some(&e)))));
                let _ = self.tx.send(Msg::Failed(e, record)).await;
            }
            // No consumer: dropping the audit records the run as cancelled now.
            Err(Stop::Gone) => drop(audit),
        }
    }

    /// The audit record to send with the run's last message: none (written now, as
    /// `filter` drops it) when the engine is stopping, whose `stop` writes the records of
    /// the runs it cuts off before it returns, whether or not their consumers read on.
    fn ride(&self, record: Option<QueuedRecord>) -> Option<QueuedRecord> {
        record.filter(|_| !self.inner.is_stopped())
    }

    async fn emit(&self, ev: StreamEvent) -> Result<(), Stop> {
        if let Some(a) = &self.audit {
            a.saw(&ev);
        }
        self.tx.send(Msg::Event(ev)).await.map_err(|_| Stop::Gone)
    }

    /// Runs the execution in a pooled sandbox (warm, or started for it), and gives the
    /// sandbox back (clean) or destroys it.
    async fn drive(&self, key: &PoolKey, prepared: &Prepared) -> Result<Summary, Stop> {
        let runtime = &prepared.runtime.name;
        let asked = std::time::Instant::now();
        let (mut sb, warm, _lease) = pool::acquire(&self.inner, key, runtime, &self.host).await?;
        let took = asked.elapsed();
        self.span
            .record("container_id", tracing::field::display(&sb.id));
        tracing::debug!(warm, wait_ms = took.as_millis() as u64, "sandbox acquired");
        self.inner
            .observe(|o| o.sandbox_acquired(runtime, took, warm));
        let exec = Frame::json(Kind::Exec, &prepared.spec);
        let (mut result, mut relayed) = self.send_and_relay(&mut sb, prepared, &exec).await;
        if let Err(Stop::Unsent(e)) = result {
            if !warm {
                sb.destroy(&self.inner).await;
                return Err(Stop::Failed(e));
            }
            // A pooled sandbox that died while idle: replace it with a fresh one.
            tracing::warn!(container = %sb.id, error = %e, "pooled sandbox is dead; starting a new one");
            let fresh =
                match Sandbox::start(&self.inner, &key.image, runtime, self.host.clone()).await {
                    Ok(fresh) => fresh,
                    Err(e) => {
                        sb.destroy(&self.inner).await;
                        return Err(Stop::Failed(e));
                    }
                };
            std::mem::replace(&mut sb, fresh).destroy(&self.inner).await;
            self.span
                .record("container_id", tracing::field::display(&sb.id));
            (result, relayed) = self.send_and_relay(&mut sb, prepared, &exec).await;
            if let Err(Stop::Unsent(e)) = result {
                sb.destroy(&self.inner).await;
                return Err(Stop::Failed(e));
            }
        }
        let id = sb.id.clone();
        let ended = match result {
            Ok(Ending::Clean(exited)) => {
                if self.settings.persist {
                    sandbox::forget(&self.inner, &id);
                } else {
                    pool::release(&self.inner, key.clone(), sb, true);
                }
                (exited, false)
            }
            Ok(Ending::Dirty(exited)) => {
                self.discard(sb).await;
                (exited, false)
            }
            Ok(Ending::Lost(exited)) => {
                self.discard(sb).await;
                (exited, true)
            }
            Err(e) => {
                self.discard(sb).await;
                return Err(e);
            }
        };
        self.finish(ended, id, prepared, relayed).await
    }

    /// Sends the exec frame and relays the execution, with the sandbox's egress proxy (if
    /// any) applying this execution's rules for exactly that long. A failure to send is
    /// [`Stop::Unsent`], so a dead pooled sandbox can be replaced.
    pub(super) async fn send_and_relay(
        &self,
        sb: &mut Sandbox,
        prepared: &Prepared,
        exec: &Frame,
    ) -> (Result<Ending, Stop>, Relayed) {
        if let (Some(e), Some(rules)) = (&sb.egress, &self.egress_rules) {
            // The audit record summarises the proxy's log even without `logNetwork`.
            let log = self.settings.log_network || self.audit.is_some();
            crate::egress::begin(e.shared(), rules.clone(), log);
        }
        let result = match sb.send(exec).await {
            Ok(()) => {
                let sent = std::time::Instant::now();
                let ended = self.relay(sb, prepared).await;
                let took = sent.elapsed();
                self.inner
                    .observe(|o| o.run_finished(&prepared.runtime.name, took));
                ended
            }
            Err(e) => Err(Stop::Unsent(e)),
        };
        let relayed = match &sb.egress {
            Some(e) => {
                let (into_sandbox, out_of_sandbox) = crate::egress::traffic(e.shared());
                Relayed {
                    logs: crate::egress::finish(e.shared()),
                    traffic: ProxyTraffic {
                        into_sandbox,
                        out_of_sandbox,
                    },
                }
            }
            None => Relayed::default(),
        };
        (result, relayed)
    }

    /// Destroys a sandbox that must not be reused (kept with `persist`).
    async fn discard(&self, sb: Sandbox) {
        if self.settings.persist {
            sandbox::forget(&self.inner, &sb.id);
        } else {
            sb.destroy(&self.inner).await;
        }
    }

    /// Relays the agent's frames as events until the execution ends.
    async fn relay(&self, sb: &mut Sandbox, prepared: &Prepared) -> Result<Ending, Stop> {
        // One masking text per stream across all phases: a secret split between the
        // setup's output and the code's is still one secret.
        let mut texts = [
            TextStream::new(&self.secrets),
            TextStream::new(&self.secrets),
        ];
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_millis(prepared.spec.timeout_ms) + WATCHDOG_GRACE;
        // What the engine knows of a run the agent could not report on.
        let ran_for = || Exited {
            exit_code: 137,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ..Default::default()
        };
        let exited = loop {
            let next = tokio::time::timeout_at(deadline, sb.next_frame());
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
                        // A paused container's program may never have run: an error.
                        if matches!(e, Error::SandboxUnresponsive(_) | Error::Stopped) {
                            return Err(Stop::Failed(e));
                        }
                        return self.lost(e, ran_for()).await;
                    }
                    tracing::warn!(container = %sb.id, "agent missed the deadline; killing the sandbox");
                    let exited = Exited {
                        timed_out: true,
                        signal: Some(9),
                        ..ran_for()
                    };
                    self.flush_texts(&mut texts).await?;
                    self.emit(StreamEvent::error(TIMEOUT_EVENT).in_phase(Phase::Code))
                        .await?;
                    return Ok(Ending::Dirty(exited));
                }
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) => {
                    if sb.oom_killed(&self.inner).await {
                        // The kernel killed the whole container (agent included) for
                        // memory: the memory limit ended the program.
                        self.flush_texts(&mut texts).await?;
                        self.emit(
                            StreamEvent::error(outcome::MEMORY_LIMIT_EVENT).in_phase(Phase::Code),
                        )
                        .await?;
                        return Ok(Ending::Dirty(Exited {
                            oom_killed: true,
                            signal: Some(9),
                            ..ran_for()
                        }));
                    }
                    let e = sb.died(&self.inner).await;
                    if matches!(e, Error::Stopped) {
                        return Err(Stop::Failed(e));
                    }
                    self.flush_texts(&mut texts).await?;
                    return self.lost(e, ran_for()).await;
                }
                Ok(Err(e)) => return Err(e.into()),
            };
            match frame.kind {
                Kind::Output => {
                    let (stream, phase, data) = agent::decode_output(&frame.payload)
                        .map_err(|source| SandboxError::BadFrame { source })?;
                    let released = texts[text_slot(stream)].push(phase, data);
                    self.emit_texts(stream, released).await?;
                }
                Kind::Exited => {
                    break frame
                        .parse::<Exited>()
                        .map_err(|source| SandboxError::BadFrame { source })?
                }
                Kind::ExecFailed => {
                    let failed: ExecFailed = frame
                        .parse()
                        .map_err(|source| SandboxError::BadFrame { source })?;
                    return Err(Error::InvalidRequest(failed.message).into());
                }
                kind => {
                    return Err(SandboxError::UnexpectedFrame {
                        kind,
                        during: "from the agent",
                    }
                    .into())
                }
            }
        };
        self.flush_texts(&mut texts).await?;
        let phase = exited.phase.unwrap_or(StepPhase::Code);
        let ended_in = wire_phase(phase);
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
            self.emit(StreamEvent::error(TIMEOUT_EVENT).in_phase(ended_in))
                .await?;
        }
        let reason = outcome::exit_reason(&exited, false);
        if let Some(data) = outcome::reason_event(reason, outcome::ended_by_signal(&exited)) {
            self.emit(StreamEvent::error(data).in_phase(ended_in))
                .await?;
        }
        Ok(Ending::Clean(exited))
    }

    /// Ends a run whose sandbox went away under the program (`why`): its stream gets
    /// the `sandbox lost: …` error, and the run a result with exit reason `sandboxLost`.
    async fn lost(&self, why: Error, exited: Exited) -> Result<Ending, Stop> {
        let why = self.secrets.mask_error(why);
        self.emit(lost_event(&why)).await?;
        Ok(Ending::Lost(exited))
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

    /// The summary of an execution the agent reported ended: a failed install becomes
    /// [`Error::PackageInstall`]; network logs and files are masked.
    pub(super) async fn finish(
        &self,
        (exited, lost): (Exited, bool),
        container_id: String,
        prepared: &Prepared,
        relayed: Relayed,
    ) -> Result<Summary, Stop> {
        let Relayed {
            logs: network_logs,
            traffic,
        } = relayed;
        for (path, reason) in &exited.file_errors {
            let (path, reason) = (self.secrets.mask_str(path), self.secrets.mask_str(reason));
            tracing::debug!(%path, %reason, "output path not read");
        }
        if prepared.installs
            && exited.steps_run == 1
            && exited.exit_code != 0
            && !exited.timed_out
            && !exited.oom_killed
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
        let exit_reason = outcome::exit_reason(&exited, lost);
        let resource_usage = exited
            .usage
            .as_ref()
            .map(|u| outcome::resource_usage(u, traffic));
        let audit_network = self.audit.as_ref().map(|_| {
            crate::audit::NetworkSummary::new(
                prepared.network,
                network_logs.as_deref(),
                &self.secrets,
            )
        });
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
        let program = std::time::Duration::from_micros(exited.duration_us);
        self.inner
            .observe(|o| o.program_finished(&prepared.runtime.name, program));
        Ok(Summary {
            exit_reason,
            resource_usage,
            exit_code: exited.exit_code,
            phase: wire_phase(exited.phase.unwrap_or(StepPhase::Code)),
            truncated: exited.stdout.truncated || exited.stderr.truncated,
            duration_ms: exited.duration_ms,
            container_id,
            files,
            masked_files,
            network_logs,
            audit_network,
        })
    }

    async fn emit_text(&self, stream: Stream, phase: StepPhase, text: String) -> Result<(), Stop> {
        if text.is_empty() {
            return Ok(());
        }
        if phase == StepPhase::Setup {
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
        }
        let phase = wire_phase(phase);
        self.emit(match stream {
            Stream::Stdout => StreamEvent::stdout(text, phase),
            Stream::Stderr => StreamEvent::stderr(text, phase),
        })
        .await
    }
}

/// The wire's name of an agent step's phase.
fn wire_phase(phase: StepPhase) -> Phase {
    match phase {
        StepPhase::Setup => Phase::Setup,
        StepPhase::Code => Phase::Code,
    }
}

/// The phase an execution that failed with `e` ended in: a failed package install is
/// the setup's; any other failure is reported against the code.
fn failed_phase(e: &Error) -> Phase {
    match e {
        Error::PackageInstall { .. } => Phase::Setup,
        _ => Phase::Code,
    }
}

/// Index of a stream's [`TextStream`] in a run.
fn text_slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// The message that ends a run whose consumer saw no result.
fn ended_without_result() -> Error {
    Error::SandboxLost("the execution ended without a result".into())
}

/// Collects a run's messages into a buffered result.
pub(super) async fn collect(launched: Launched) -> Result<ExecutionResult> {
    let Launched {
        mut rx,
        runtime,
        execution_id,
    } = launched;
    let started = chrono::Utc::now();
    let mut result = ExecutionResult {
        execution_id,
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
            Msg::Done(summary, record) => {
                drop(record);
                summary.fill_status(&mut result);
                result.files = summary.files;
                result.masked_files = summary.masked_files;
                result.network_logs = summary.network_logs;
                return Ok(result);
            }
            Msg::Failed(e, record) => {
                drop(record);
                return Err(e);
            }
        }
    }
    Err(ended_without_result())
}

/// A launched run, not yet polled: a task of its own ([`RunTask::spawn`]), or polled by
/// the task that waits for its result ([`RunTask::drive`]). Driven, it saves the hand-offs
/// between threads a task of its own costs when the caller's task runs on another thread
/// (a `block_on` caller, or another worker): one before the run is first polled, one for
/// every message the caller is woken for. A driven run whose caller is dropped before it
/// ends goes on as a task of its own, so it still gives back or destroys its sandbox and
/// writes its audit record, as a spawned run whose consumer went away does.
pub(super) struct RunTask(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl RunTask {
    pub(super) fn new(run: impl Future<Output = ()> + Send + 'static) -> RunTask {
        RunTask(Some(Box::pin(run)))
    }

    /// Runs it as a task of its own.
    pub(super) fn spawn(mut self) {
        if let Some(run) = self.0.take() {
            tokio::spawn(run);
        }
    }

    /// Polls the run together with `consumer` (which reads its messages) in the calling
    /// task, the run first, and returns what `consumer` returns; a run that is not over by
    /// then is spawned to finish.
    pub(super) async fn drive<T>(mut self, consumer: impl Future<Output = T>) -> T {
        let mut consumer = std::pin::pin!(consumer);
        std::future::poll_fn(|cx| {
            if let Some(run) = self.0.as_mut() {
                if run.as_mut().poll(cx).is_ready() {
                    self.0 = None;
                }
            }
            consumer.as_mut().poll(cx)
        })
        .await
    }
}

impl Drop for RunTask {
    fn drop(&mut self) {
        if let Some(run) = self.0.take() {
            // Outside a runtime (it shut down) the run is dropped, as its task would be.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(run);
            }
        }
    }
}

/// Turns a run's messages into stream events ending with exactly one `exit` (with the
/// run's `resourceUsage` and `exitReason`) — except when the run failed because its
/// sandbox was lost without a result ([`Error::is_sandbox_lost`]): then the last event is
/// an `error` whose data starts with `sandbox lost: ` or `sandbox unresponsive: `, and no
/// `exit` follows, since no exit code exists. Every `exit` and `error` event carries the
/// phase the execution ended in (`setup` or `code`).
pub(super) fn event_stream(Launched { rx, .. }: Launched) -> EventStream {
    let stream = futures_util::stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        // A final message's audit record goes to its log as the arm drops it: after every
        // output event before it was handled, before the consumer sees the end.
        let events = match rx.recv().await {
            Some(Msg::Event(ev)) => return Some((vec![ev], (rx, false))),
            Some(Msg::Done(s, record)) => {
                drop(record);
                vec![StreamEvent::exit(s.exit_code)
                    .in_phase(s.phase)
                    .with_outcome(s.resource_usage, Some(s.exit_reason))]
            }
            Some(Msg::Failed(e, record)) if e.is_sandbox_lost() => {
                drop(record);
                vec![lost_event(&e)]
            }
            Some(Msg::Failed(e, record)) => {
                drop(record);
                let phase = failed_phase(&e);
                vec![
                    StreamEvent::error(e.to_string()).in_phase(phase),
                    StreamEvent::exit(1).in_phase(phase),
                ]
            }
            None => vec![lost_event(&ended_without_result())],
        };
        Some((events, (rx, true)))
    })
    .flat_map(futures_util::stream::iter);
    Box::pin(stream)
}

/// The final `error` event of a run whose sandbox was lost (phase `code`: the run was
/// cut off by the infrastructure, not by a setup step).
pub(crate) fn lost_event(e: &Error) -> StreamEvent {
    let ev = match e {
        Error::SandboxLost(_) | Error::SandboxUnresponsive(_) => StreamEvent::error(e.to_string()),
        other => StreamEvent::error(format!("sandbox lost: {other}")),
    };
    ev.in_phase(Phase::Code)
}
