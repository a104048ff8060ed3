//! [`DockerEngine`]: the [`Engine`] on a local Docker daemon.
//!
//! One execution: create a hardened container from the runtime's image (the agent is its
//! entrypoint), attach to its stdio, start it, wait for the agent's `Hello`, send one
//! `Exec` frame, turn the agent's `Output` frames into [`StreamEvent`]s as they arrive, and
//! remove the container when the agent reports `Exited` — or when anything fails, the
//! consumer goes away, or the engine is stopped. Docker is only asked to create, attach,
//! start, inspect and remove: the program itself never goes through `docker exec`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use isol8_protocol::agent::{
    self, ExecFailed, Exited, Frame, FrameDecoder, Hello, Kind, StepPhase, Stream, PROTOCOL_VERSION,
};
use isol8_protocol::{
    EngineOptions, ExecutionRequest, ExecutionResult, NetworkMode, Phase, StreamEvent,
    StreamEventType,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Semaphore};

use crate::engine::{Engine, EventStream};
use crate::limits::SandboxSettings;
use crate::output::{truncation_trailer, TextStream, TIMEOUT_EVENT, TIMEOUT_TRAILER};
use crate::prepare::{prepare, Prepared};
use crate::runtime::RuntimeRegistry;
use crate::{Error, Result, LABEL_MANAGED, LABEL_OWNER, LABEL_PID, LABEL_RUNTIME};

/// Uid and gid of the sandbox user inside every image.
pub const SANDBOX_UID: u32 = 1000;

/// How long the agent may take to say hello after the container starts.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);
/// Extra time the engine gives the agent past the request's timeout before killing the
/// container itself.
const WATCHDOG_GRACE: Duration = Duration::from_secs(5);
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

struct Inner {
    docker: Docker,
    registry: RuntimeRegistry,
    settings: SandboxSettings,
    owner: String,
    live: Mutex<HashSet<String>>,
    stopped: AtomicBool,
    slots: Semaphore,
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

/// Builder-style settings for [`DockerEngine::connect_with`].
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Engine options (defaults from SPEC section 3 where unset).
    pub options: EngineOptions,
    /// The runtime registry (the five built-ins by default).
    pub registry: Option<RuntimeRegistry>,
    /// Bound on concurrent executions (default 10).
    pub max_concurrent: Option<usize>,
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

    /// Connects with full control over options, runtimes and concurrency.
    pub async fn connect_with(config: EngineConfig) -> Result<Self> {
        let settings = SandboxSettings::resolve(&config.options)?;
        // Fail early on an unreadable custom profile.
        crate::seccomp::security_opt(settings.seccomp, settings.custom_profile_path.as_deref())?;
        let max = config.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT);
        if max == 0 {
            return Err(Error::option("maxConcurrent", "must be at least 1"));
        }
        let docker = connect().await?;
        Ok(DockerEngine {
            inner: Arc::new(Inner {
                docker,
                registry: config.registry.unwrap_or_default(),
                settings,
                owner: format!("engine-{}", uuid::Uuid::new_v4().simple()),
                live: Mutex::new(HashSet::new()),
                stopped: AtomicBool::new(false),
                slots: Semaphore::new(max),
            }),
        })
    }

    /// The Docker client.
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// The id in the `isol8.owner` label of this engine's containers.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The runtime registry.
    pub fn registry(&self) -> &RuntimeRegistry {
        &self.inner.registry
    }

    /// The resolved sandbox settings.
    pub fn settings(&self) -> &SandboxSettings {
        &self.inner.settings
    }

    /// Containers this engine currently owns.
    pub fn live_containers(&self) -> Vec<String> {
        self.inner
            .live
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Validates the request and spawns its run; messages arrive on the returned channel.
    async fn launch(&self, req: &ExecutionRequest) -> Result<(mpsc::Receiver<Msg>, String)> {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(Error::Stopped);
        }
        let prepared = prepare(req, &self.inner.registry, &self.inner.settings)?;
        let (tx, rx) = mpsc::channel(64);
        let inner = self.inner.clone();
        let runtime = prepared.runtime.name.clone();
        tokio::spawn(async move {
            let permit = inner.slots.acquire().await;
            if permit.is_err() {
                let _ = tx.send(Msg::Failed(Error::Stopped)).await;
                return;
            }
            let run = Run {
                inner: inner.clone(),
                tx: tx.clone(),
                container: None,
            };
            run.execute(prepared).await;
        });
        Ok((rx, runtime))
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
    timed_out: bool,
    truncated: bool,
    duration_ms: u64,
    container_id: String,
    files: Option<std::collections::BTreeMap<String, String>>,
}

/// One execution in one container.
struct Run {
    inner: Arc<Inner>,
    tx: mpsc::Sender<Msg>,
    container: Option<String>,
}

/// The consumer went away: stop the run.
struct Gone;

impl Run {
    async fn execute(mut self, prepared: Prepared) {
        let outcome = self.drive(prepared).await;
        if let Some(id) = self.container.take() {
            if !self.inner.settings.persist {
                remove_container(&self.inner, &id).await;
            }
        }
        match outcome {
            Ok(summary) => {
                let _ = self.tx.send(Msg::Done(Box::new(summary))).await;
            }
            Err(Some(e)) => {
                let e = if self.inner.stopped.load(Ordering::SeqCst) {
                    Error::Stopped
                } else {
                    e
                };
                let _ = self.tx.send(Msg::Failed(e)).await;
            }
            Err(None) => {} // consumer gone
        }
    }

    async fn emit(&self, ev: StreamEvent) -> Result<(), Gone> {
        self.tx.send(Msg::Event(ev)).await.map_err(|_| Gone)
    }

    /// Runs the execution; `Err(None)` means the consumer went away.
    async fn drive(&mut self, prepared: Prepared) -> Result<Summary, Option<Error>> {
        let inner = self.inner.clone();
        let docker = &inner.docker;
        let settings = &inner.settings;
        let id = create_container(&inner, &prepared).await?;
        self.container = Some(id.clone());

        let attach = docker
            .attach_container(
                &id,
                Some(
                    AttachContainerOptionsBuilder::default()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .build(),
                ),
            )
            .await
            .map_err(|e| Error::docker("attach container", e))?;
        let mut output = attach.output;
        let mut input = attach.input;
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| Error::docker("start container", e))?;

        let mut decoder = FrameDecoder::new();
        let mut agent_log = String::new();
        // Wait for the agent's hello.
        let hello = tokio::time::timeout(
            HELLO_TIMEOUT,
            next_frame(&mut output, &mut decoder, &mut agent_log),
        )
        .await;
        let hello = match hello {
            Err(_) => {
                return Err(Some(Error::Sandbox(
                    "the sandbox agent did not start within 20 s".into(),
                )))
            }
            Ok(Ok(Some(f))) if f.kind == Kind::Hello => f,
            Ok(Ok(Some(f))) => {
                return Err(Some(Error::Sandbox(format!(
                    "agent sent {:?} before hello",
                    f.kind
                ))))
            }
            Ok(Ok(None)) => return Err(Some(self.died(&id, &agent_log).await)),
            Ok(Err(e)) => return Err(Some(e)),
        };
        let hello: Hello = hello.parse().map_err(|e| Error::Sandbox(e.to_string()))?;
        if hello.protocol != PROTOCOL_VERSION {
            return Err(Some(Error::Sandbox(format!(
                "the image's agent speaks protocol {} but this engine speaks {}; rebuild the images with `isol8 setup --force`",
                hello.protocol, PROTOCOL_VERSION
            ))));
        }
        let exec = Frame::json(Kind::Exec, &prepared.spec).encode();
        input
            .write_all(&exec)
            .await
            .map_err(|e| Error::Sandbox(format!("cannot send the request to the agent: {e}")))?;
        input
            .flush()
            .await
            .map_err(|e| Error::Sandbox(format!("cannot send the request to the agent: {e}")))?;

        let secrets: Vec<&str> = settings.secrets.values().map(String::as_str).collect();
        let mut texts: HashMap<(u8, u8), TextStream> = HashMap::new();
        let mut last_phase = [None::<StepPhase>; 3];
        let deadline =
            Instant::now() + Duration::from_millis(prepared.spec.timeout_ms) + WATCHDOG_GRACE;
        let exited: Exited = loop {
            let frame = match tokio::time::timeout_at(
                deadline.into(),
                next_frame(&mut output, &mut decoder, &mut agent_log),
            )
            .await
            {
                Err(_) => {
                    // The agent did not enforce the timeout: kill the whole sandbox.
                    tracing::warn!(container = %id, "agent missed the deadline; killing the container");
                    break Exited {
                        exit_code: 137,
                        timed_out: true,
                        ..Default::default()
                    };
                }
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) => {
                    if let Some(oom) = self.oom_killed(&id).await {
                        break oom;
                    }
                    return Err(Some(self.died(&id, &agent_log).await));
                }
                Ok(Err(e)) => return Err(Some(e)),
            };
            match frame.kind {
                Kind::Output => {
                    let (stream, phase, data) = agent::decode_output(&frame.payload)
                        .map_err(|e| Error::Sandbox(e.to_string()))?;
                    let slot = stream as usize;
                    // A phase change flushes what the previous phase held back.
                    if let Some(prev) = last_phase[slot] {
                        if prev != phase {
                            if let Some(t) = texts.get_mut(&(stream as u8, prev as u8)) {
                                let rest = t.finish();
                                self.emit_text(stream, prev, rest).await.map_err(|_| None)?;
                            }
                        }
                    }
                    last_phase[slot] = Some(phase);
                    let text = texts
                        .entry((stream as u8, phase as u8))
                        .or_insert_with(|| TextStream::new(secrets.iter().copied()))
                        .push(data);
                    self.emit_text(stream, phase, text)
                        .await
                        .map_err(|_| None)?;
                }
                Kind::Exited => break frame.parse().map_err(|e| Error::Sandbox(e.to_string()))?,
                Kind::ExecFailed => {
                    let failed: ExecFailed =
                        frame.parse().map_err(|e| Error::Sandbox(e.to_string()))?;
                    return Err(Some(Error::InvalidRequest(failed.message)));
                }
                other => {
                    return Err(Some(Error::Sandbox(format!(
                        "unexpected {other:?} frame from the agent"
                    ))))
                }
            }
        };
        drop(input);
        for stream in [Stream::Stdout, Stream::Stderr] {
            if let Some(phase) = last_phase[stream as usize] {
                if let Some(t) = texts.get_mut(&(stream as u8, phase as u8)) {
                    let rest = t.finish();
                    self.emit_text(stream, phase, rest)
                        .await
                        .map_err(|_| None)?;
                }
            }
        }
        let phase = exited.phase.map(to_phase).unwrap_or(Phase::Code);
        for (stream, stats) in [
            (Stream::Stdout, exited.stdout),
            (Stream::Stderr, exited.stderr),
        ] {
            if stats.truncated {
                let trailer = format!(
                    "\n{}\n",
                    truncation_trailer(stats.total_bytes, settings.max_output)
                );
                self.emit_text(stream, to_step(phase), trailer)
                    .await
                    .map_err(|_| None)?;
            }
        }
        if exited.timed_out {
            self.emit(StreamEvent::error(TIMEOUT_EVENT))
                .await
                .map_err(|_| None)?;
        }
        let mut files = exited.files;
        for (path, reason) in exited.file_errors {
            tracing::debug!(%path, %reason, "output path not read");
        }
        Ok(Summary {
            exit_code: exited.exit_code,
            timed_out: exited.timed_out,
            truncated: exited.stdout.truncated || exited.stderr.truncated,
            duration_ms: exited.duration_ms,
            container_id: id,
            files: if prepared.spec.output_paths.is_empty() {
                None
            } else {
                Some(std::mem::take(&mut files))
            },
        })
    }

    async fn emit_text(&self, stream: Stream, phase: StepPhase, text: String) -> Result<(), Gone> {
        if text.is_empty() {
            return Ok(());
        }
        let phase = to_phase(phase);
        self.emit(match stream {
            Stream::Stdout => StreamEvent::stdout(text, phase),
            Stream::Stderr => StreamEvent::stderr(text, phase),
        })
        .await
    }

    /// The container's memory limit killed the agent or the program.
    async fn oom_killed(&self, id: &str) -> Option<Exited> {
        let info = self.inner.docker.inspect_container(id, None).await.ok()?;
        let state = info.state?;
        if state.oom_killed == Some(true) {
            Some(Exited {
                exit_code: 137,
                ..Default::default()
            })
        } else {
            None
        }
    }

    /// Describes why the sandbox went away without finishing.
    async fn died(&self, id: &str, agent_log: &str) -> Error {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Error::Stopped;
        }
        let state = self
            .inner
            .docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|i| i.state);
        let code = state
            .as_ref()
            .and_then(|s| s.exit_code)
            .map(|c| format!(" (exit code {c})"))
            .unwrap_or_default();
        let log = agent_log.trim();
        let log = if log.is_empty() {
            String::new()
        } else {
            format!(": {}", log.lines().last().unwrap_or(log))
        };
        Error::Sandbox(format!(
            "the sandbox container stopped unexpectedly{code}{log}"
        ))
    }
}

fn to_phase(p: StepPhase) -> Phase {
    match p {
        StepPhase::Setup => Phase::Setup,
        StepPhase::Code => Phase::Code,
    }
}

fn to_step(p: Phase) -> StepPhase {
    match p {
        Phase::Setup => StepPhase::Setup,
        Phase::Code => StepPhase::Code,
    }
}

type OutputStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// Reads the next agent frame from the attached output; `Ok(None)` when the stream ended.
async fn next_frame(
    output: &mut OutputStream,
    decoder: &mut FrameDecoder,
    agent_log: &mut String,
) -> Result<Option<Frame>> {
    loop {
        if let Some(f) = decoder
            .next_frame()
            .map_err(|e| Error::Sandbox(format!("agent protocol error: {e}")))?
        {
            return Ok(Some(f));
        }
        match output.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(Error::docker("read sandbox output", e)),
            Some(Ok(LogOutput::StdOut { message })) => decoder.push(&message),
            Some(Ok(LogOutput::StdErr { message })) => {
                let text = String::from_utf8_lossy(&message);
                tracing::debug!(target: "isol8::agent", "{}", text.trim_end());
                if agent_log.len() < 8192 {
                    agent_log.push_str(&text);
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

/// The `HostConfig` implementing SPEC section 4 for these settings.
pub fn host_config(settings: &SandboxSettings) -> Result<HostConfig> {
    let seccomp =
        crate::seccomp::security_opt(settings.seccomp, settings.custom_profile_path.as_deref())?;
    let tmpfs = HashMap::from([
        (
            "/sandbox".to_string(),
            format!(
                "rw,exec,nosuid,nodev,size={},uid={SANDBOX_UID},gid={SANDBOX_UID},mode=0755",
                settings.sandbox_bytes
            ),
        ),
        (
            "/tmp".to_string(),
            format!(
                "rw,noexec,nosuid,nodev,size={},mode=1777",
                settings.tmp_bytes
            ),
        ),
    ]);
    Ok(HostConfig {
        network_mode: Some(match settings.network {
            NetworkMode::Host => "host".to_string(),
            _ => "none".to_string(),
        }),
        readonly_rootfs: Some(settings.readonly_root_fs),
        tmpfs: Some(tmpfs),
        cap_drop: Some(vec!["ALL".to_string()]),
        cap_add: Some(vec![
            "SETUID".to_string(),
            "SETGID".to_string(),
            "SETPCAP".to_string(),
        ]),
        security_opt: Some(vec!["no-new-privileges:true".to_string(), seccomp]),
        memory: Some(settings.memory_bytes),
        memory_swap: Some(settings.memory_bytes),
        nano_cpus: Some(settings.nano_cpus),
        pids_limit: Some(settings.pids_limit),
        ipc_mode: Some("private".to_string()),
        shm_size: Some(64 << 20),
        ulimits: Some(vec![
            ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(4096),
                hard: Some(4096),
            },
            ResourcesUlimits {
                name: Some("core".into()),
                soft: Some(0),
                hard: Some(0),
            },
        ]),
        init: Some(false),
        ..Default::default()
    })
}

async fn create_container(inner: &Arc<Inner>, prepared: &Prepared) -> Result<String> {
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_OWNER.to_string(), inner.owner.clone()),
        (LABEL_RUNTIME.to_string(), prepared.runtime.name.clone()),
        (LABEL_PID.to_string(), std::process::id().to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(prepared.image.clone()),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(false),
        tty: Some(false),
        working_dir: Some("/sandbox".to_string()),
        network_disabled: Some(inner.settings.network == NetworkMode::None),
        labels: Some(labels),
        host_config: Some(host_config(&inner.settings)?),
        ..Default::default()
    };
    let name = format!("isol8-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let created = inner
        .docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await;
    let created = match created {
        Ok(c) => c,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            return Err(Error::ImageMissing {
                image: prepared.image.clone(),
                runtime: prepared.runtime.name.clone(),
            });
        }
        Err(e) => return Err(Error::docker("create container", e)),
    };
    if let Ok(mut live) = inner.live.lock() {
        live.insert(created.id.clone());
    }
    // A stop() that raced with this creation must not leave the container behind.
    if inner.stopped.load(Ordering::SeqCst) {
        remove_container(inner, &created.id).await;
        return Err(Error::Stopped);
    }
    Ok(created.id)
}

async fn remove_container(inner: &Inner, id: &str) {
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match inner.docker.remove_container(id, Some(opts)).await {
        Ok(()) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        // 409: removal already in progress (e.g. stop() raced with the run's own cleanup).
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {}
        Err(e) => tracing::warn!(container = %id, error = %e, "could not remove container"),
    }
    if let Ok(mut live) = inner.live.lock() {
        live.remove(id);
    }
}

#[async_trait::async_trait]
impl Engine for DockerEngine {
    async fn start(&self) -> Result<()> {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(Error::Stopped);
        }
        self.inner
            .docker
            .ping()
            .await
            .map_err(|e| Error::DockerUnavailable {
                detail: e.to_string(),
            })?;
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.slots.close();
        let ids = self.live_containers();
        futures_util::future::join_all(ids.iter().map(|id| remove_container(&self.inner, id)))
            .await;
        Ok(())
    }

    async fn execute(&self, req: ExecutionRequest) -> Result<ExecutionResult> {
        let started = chrono::Utc::now();
        let (mut rx, runtime) = self.launch(&req).await?;
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
                    let _ = summary.timed_out;
                    return Ok(result);
                }
                Msg::Failed(e) => return Err(e),
            }
        }
        Err(Error::Sandbox(
            "the execution ended without a result".into(),
        ))
    }

    async fn execute_stream(&self, req: ExecutionRequest) -> Result<EventStream> {
        let (rx, _) = self.launch(&req).await?;
        let stream = futures_util::stream::unfold((rx, false), |(mut rx, done)| async move {
            if done {
                return None;
            }
            match rx.recv().await {
                Some(Msg::Event(ev)) => Some((vec![ev], (rx, false))),
                Some(Msg::Done(s)) => Some((vec![StreamEvent::exit(s.exit_code)], (rx, true))),
                Some(Msg::Failed(e)) => Some((
                    vec![StreamEvent::error(e.to_string()), StreamEvent::exit(1)],
                    (rx, true),
                )),
                None => Some((
                    vec![
                        StreamEvent::error("the execution ended without a result"),
                        StreamEvent::exit(1),
                    ],
                    (rx, true),
                )),
            }
        })
        .flat_map(futures_util::stream::iter);
        Ok(Box::pin(stream))
    }
}

/// Decodes the base64 `files` of a result.
pub fn decode_file(content: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(content)
        .map_err(|e| Error::Sandbox(format!("invalid base64 in result file: {e}")))
}
