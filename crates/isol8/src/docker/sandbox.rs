//! One sandbox container with its agent: created hardened, attached, started, and ready
//! once the agent has said hello. Frames go in and come back over the sandbox's data
//! socket ([`super::data_socket`]) or, when there is none, through the attached stdin
//! and stdout; the container is never asked to `exec`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use isol8_protocol::agent::{
    Frame, FrameDecoder, Hello, Kind, ResetDone, ResetSpec, PROTOCOL_VERSION,
};
use isol8_protocol::layout;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::data_socket::DataSocket;
use super::host_config::Mount;

use super::backend::{ApiStream, ContainerSpec, Output};
use super::host_config::HostConfig;
use super::Inner;
use crate::egress::{self, Egress};
use crate::error::{ApiError, SandboxError};
use crate::{
    Error, Result, LABEL_HOST, LABEL_MANAGED, LABEL_OWNER, LABEL_PERSIST, LABEL_PID, LABEL_RUNTIME,
};

/// How long the agent may take to say hello after the container starts.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a reset may take before the sandbox is given up.
const RESET_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the engine waits for the agent's data socket connection after a hello that
/// says it connected (the connection is already queued by then).
const DATA_ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes read from the data socket at once.
const DATA_READ: usize = 64 << 10;

/// Bytes of the agent's stderr kept for error messages.
const AGENT_LOG: usize = 8192;

/// A started container whose agent is waiting for frames.
pub struct Sandbox {
    /// Container id.
    pub id: String,
    output: ApiStream<Output>,
    /// Where frames go: the data socket, or the attached stdin.
    input: Pin<Box<dyn AsyncWrite + Send>>,
    /// Where frames come from when the agent uses the data socket (the attached output
    /// then carries only the agent's log, and its end means the container stopped).
    data: Option<tokio::net::unix::OwnedReadHalf>,
    /// The attached output ended (the container stopped); what the data socket still
    /// holds is read to its end.
    output_ended: bool,
    read_buf: Vec<u8>,
    decoder: FrameDecoder,
    /// The agent's stderr (last few KiB), for error messages.
    pub agent_log: String,
    /// Executions served so far.
    pub uses: u32,
    /// The egress proxy of a `filtered` sandbox (dropped with it).
    pub egress: Option<Egress>,
    /// False when a reset cannot return the container to a fresh state (its root
    /// filesystem is writable, so any path the sandbox user can write may keep data):
    /// such a container serves one execution and is destroyed.
    pub resettable: bool,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.id)
            .field("uses", &self.uses)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Creates, attaches and starts a container of `image`, and waits for the agent.
    /// The container is registered with the engine before anything can fail, so it is
    /// removed whatever happens next.
    pub async fn start(
        inner: &Inner,
        image: &str,
        runtime: &str,
        mut host: HostConfig,
    ) -> Result<Sandbox> {
        // A `filtered` sandbox gets a proxy of its own, listening on a socket in a host
        // directory that is mounted where the placeholder says.
        let mut egress = None;
        if let Some(m) = host
            .mounts
            .iter_mut()
            .flatten()
            .find(|m| m.source == egress::MOUNT_PLACEHOLDER)
        {
            let e = Egress::bind(
                std::sync::Arc::new(egress::SystemNet),
                inner.address_policy.clone(),
            )
            .map_err(|source| SandboxError::StartEgress { source })?;
            crate::egress::observe(e.shared(), inner.config.observer.clone());
            m.source = e.dir().to_string_lossy().into_owned();
            egress = Some(e);
        }
        // The data socket, where the daemon can mount the engine's files.
        let mut data = None;
        if inner.api.shares_host_files() && !inner.config.stdio_frames {
            match DataSocket::bind() {
                Ok(d) => {
                    host.mounts.get_or_insert_with(Vec::new).push(Mount {
                        source: d.dir().to_string_lossy().into_owned(),
                        target: layout::DATA_SOCKET_DIR.to_string(),
                        read_only: true,
                    });
                    data = Some(d);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot bind a data socket; frames go through the attached stdio")
                }
            }
        }
        let resettable = host.readonly_rootfs == Some(true);
        let seccomp_filter = host.seccomp_filter;
        let id = create(
            inner,
            image,
            runtime,
            host,
            egress.is_some(),
            data.is_some(),
        )
        .await?;
        match Self::attach_and_start(inner, id.clone(), data, seccomp_filter).await {
            Ok(mut sb) => {
                sb.egress = egress;
                sb.resettable = resettable;
                Ok(sb)
            }
            Err(e) => {
                remove(inner, &id).await;
                Err(e)
            }
        }
    }

    async fn attach_and_start(
        inner: &Inner,
        id: String,
        data: Option<DataSocket>,
        seccomp_filter: bool,
    ) -> Result<Sandbox> {
        let attached = inner
            .api
            .attach_container(&id)
            .await
            .map_err(|e| Error::docker("attach container", e))?;
        inner
            .api
            .start_container(&id)
            .await
            .map_err(|e| Error::docker("start container", e))?;
        let mut sb = Sandbox {
            id,
            output: attached.output,
            input: attached.input,
            data: None,
            output_ended: false,
            read_buf: Vec::new(),
            decoder: FrameDecoder::new(),
            agent_log: String::new(),
            uses: 0,
            egress: None,
            resettable: false,
        };
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, sb.next_frame()).await {
            Err(_) => {
                return Err(SandboxError::HelloTimeout {
                    secs: HELLO_TIMEOUT.as_secs(),
                }
                .into())
            }
            Ok(Ok(Some(f))) if f.kind == Kind::Hello => f,
            Ok(Ok(Some(f))) => return Err(SandboxError::FrameBeforeHello { kind: f.kind }.into()),
            // Died before it was ever used: a failed start, not a lost run.
            Ok(Ok(None)) => {
                return Err(match sb.died(inner).await {
                    Error::SandboxLost(why) => SandboxError::DiedAtStart { why }.into(),
                    e => e,
                })
            }
            Ok(Err(e)) => return Err(e),
        };
        let hello: Hello = hello
            .parse()
            .map_err(|source| SandboxError::BadFrame { source })?;
        if hello.protocol != PROTOCOL_VERSION {
            return Err(SandboxError::ProtocolMismatch {
                agent: hello.protocol,
                engine: PROTOCOL_VERSION,
            }
            .into());
        }
        if seccomp_filter && !hello.seccomp_filter {
            return Err(SandboxError::SeccompFilter.into());
        }
        if hello.data_socket {
            let source = || std::io::Error::other("the engine offered no data socket");
            let mut data = data.ok_or_else(|| SandboxError::DataSocket { source: source() })?;
            let stream = data
                .accept(DATA_ACCEPT_TIMEOUT)
                .await
                .map_err(|source| SandboxError::DataSocket { source })?;
            // The directory goes with `data`: nothing else may connect.
            drop(data);
            let (read, write) = stream.into_split();
            sb.input = Box::pin(write);
            sb.data = Some(read);
            sb.read_buf = vec![0; DATA_READ];
        } else if data.is_some() {
            tracing::debug!(container = %sb.id, "the agent did not use the data socket; frames go through the attached stdio");
        }
        Ok(sb)
    }

    /// Closes the attach streams, then removes the container. The order matters: a
    /// daemon whose attach copy is blocked on a full, unread stream (a flood of output
    /// the consumer stopped reading) does not finish removing the container until that
    /// stream goes away.
    pub async fn destroy(self, inner: &Inner) {
        let id = self.id.clone();
        drop(self);
        remove(inner, &id).await;
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<()> {
        let bytes = frame.encode();
        let fail = |source| SandboxError::Send { source };
        self.input.write_all(&bytes).await.map_err(fail)?;
        self.input.flush().await.map_err(fail)?;
        Ok(())
    }

    /// Keeps the end of the agent's stderr (and logs it).
    fn log_agent(&mut self, message: &[u8]) {
        let text = String::from_utf8_lossy(message);
        tracing::debug!(target: "isol8::agent", container = %self.id, "{}", text.trim_end());
        if self.agent_log.len() < AGENT_LOG {
            self.agent_log.push_str(&text);
        }
    }

    /// The next frame from the agent; `Ok(None)` when the container's output ended.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(f) = self
                .decoder
                .next_frame()
                .map_err(|source| SandboxError::Decode { source })?
            {
                return Ok(Some(f));
            }
            let Some(data) = self.data.as_mut() else {
                match self.output.next().await {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(Error::docker("read sandbox output", e)),
                    Some(Ok(Output::Stdout(bytes))) => self.decoder.push(&bytes),
                    Some(Ok(Output::Stderr(bytes))) => self.log_agent(&bytes),
                }
                continue;
            };
            // Frames from the socket; the attached output meanwhile, for the agent's log
            // and to learn that the container stopped.
            let (buf, output, ended) = (&mut self.read_buf, &mut self.output, self.output_ended);
            let got = tokio::select! {
                biased;
                n = data.read(buf) => Ok(n),
                item = output.next(), if !ended => Err(item),
            };
            match got {
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(n)) => {
                    let (decoder, buf) = (&mut self.decoder, &self.read_buf);
                    decoder.push(&buf[..n]);
                }
                Ok(Err(source)) => return Err(SandboxError::Receive { source }.into()),
                Err(None) => self.output_ended = true,
                Err(Some(Err(e))) => return Err(Error::docker("read sandbox output", e)),
                Err(Some(Ok(Output::Stdout(bytes) | Output::Stderr(bytes)))) => {
                    self.log_agent(&bytes)
                }
            }
        }
    }

    /// False when the container's output has already ended or failed: the container died
    /// while the sandbox waited in the pool (killed from outside, OOM, or the Docker daemon
    /// was restarted, which stops every container); or when the sandbox's egress proxy
    /// has stopped, so its filtered network would only reset connections. Never waits.
    pub fn is_alive(&mut self) -> bool {
        use futures_util::FutureExt;
        if self.egress.as_ref().is_some_and(|e| !e.is_running()) {
            return false;
        }
        loop {
            match self.output.next().now_or_never() {
                // Nothing to read: still attached.
                None => return true,
                Some(None) | Some(Some(Err(_))) => return false,
                Some(Some(Ok(Output::Stdout(bytes)))) => self.decoder.push(&bytes),
                Some(Some(Ok(Output::Stderr(bytes)))) => self.log_agent(&bytes),
            }
        }
    }

    /// Asks the agent to return the sandbox to its pristine state; Ok only if it says
    /// nothing is left.
    pub async fn reset(&mut self) -> Result<()> {
        let spec = ResetSpec {
            wipe: layout::WIPED_DIRS.iter().map(|d| d.to_string()).collect(),
        };
        self.send(&Frame::json(Kind::Reset, &spec)).await?;
        let frame = tokio::time::timeout(RESET_TIMEOUT, self.next_frame())
            .await
            .map_err(|_| SandboxError::ResetTimeout)??
            .ok_or(SandboxError::EndedDuringReset)?;
        if frame.kind != Kind::ResetDone {
            return Err(SandboxError::UnexpectedFrame {
                kind: frame.kind,
                during: "during reset",
            }
            .into());
        }
        let done: ResetDone = frame
            .parse()
            .map_err(|source| SandboxError::BadFrame { source })?;
        match done.ok {
            true => Ok(()),
            false => Err(SandboxError::ResetFailed {
                problem: done.problem.unwrap_or_default(),
            }
            .into()),
        }
    }

    /// Asks the agent to keep an interpreter waiting for the next execution (see
    /// [`PrestartSpec`](isol8_protocol::agent::PrestartSpec)) and waits until it does.
    /// Only for a sandbox nothing has run in since it started or was reset. `Ok(Some(why))`
    /// when the agent could not (the sandbox stays usable; its programs start fresh);
    /// errors when the agent is gone or does not answer in time (the sandbox is then of
    /// no use).
    pub async fn prestart(
        &mut self,
        spec: &isol8_protocol::agent::PrestartSpec,
    ) -> Result<Option<String>> {
        self.send(&Frame::json(Kind::Prestart, spec)).await?;
        // The agent's own limit, and a margin for the frame's way back.
        let limit = Duration::from_millis(isol8_protocol::agent::PRESTART_READY_TIMEOUT_MS)
            + Duration::from_secs(5);
        let frame = tokio::time::timeout(limit, self.next_frame())
            .await
            .map_err(|_| SandboxError::PrestartTimeout {
                secs: limit.as_secs(),
            })??
            .ok_or(SandboxError::EndedDuringPrestart)?;
        if frame.kind != Kind::Prestarted {
            return Err(SandboxError::UnexpectedFrame {
                kind: frame.kind,
                during: "while an interpreter was pre-started",
            }
            .into());
        }
        let done: isol8_protocol::agent::Prestarted = frame
            .parse()
            .map_err(|source| SandboxError::BadFrame { source })?;
        Ok(match done.ok {
            true => None,
            false => Some(done.problem.unwrap_or_default()),
        })
    }

    /// True when the container was killed by its memory limit.
    pub async fn oom_killed(&mut self, inner: &Inner) -> bool {
        let state = inner.api.inspect_container(&self.id).await.ok();
        state.is_some_and(|s| s.oom_killed)
    }

    /// Describes why the sandbox went away without finishing.
    pub async fn died(&mut self, inner: &Inner) -> Error {
        if inner.is_stopped() {
            return Error::Stopped;
        }
        let state = match inner.api.inspect_container(&self.id).await {
            Ok(state) => Some(state),
            // The daemon itself went away (stopped or restarting): say that, not merely
            // that the container stopped.
            Err(e @ ApiError::Unreachable(_)) => {
                return Error::DockerUnavailable {
                    detail: format!("lost it while the sandbox ran: {e}"),
                }
            }
            Err(_) => None,
        };
        let code = state
            .and_then(|s| s.exit_code)
            .map(|c| format!(" (exit code {c})"))
            .unwrap_or_default();
        let log = self.agent_log.trim();
        let log = if log.is_empty() {
            String::new()
        } else {
            format!(": {}", log.lines().last().unwrap_or(log))
        };
        Error::SandboxLost(format!(
            "the sandbox container stopped unexpectedly{code}{log}"
        ))
    }

    /// Called when the agent missed its deadline (the program's timeout plus the
    /// watchdog's grace): asks the daemon why. A paused (frozen) container is
    /// [`Error::SandboxUnresponsive`] and a container that is no longer running is
    /// [`Error::SandboxLost`] — neither is the program's timeout, since the program may
    /// never have run. `None` when the container is running normally (a late agent: the
    /// program did use up its time).
    pub async fn unresponsive(&mut self, inner: &Inner) -> Option<Error> {
        let state = match inner.api.inspect_container(&self.id).await {
            Ok(state) => state,
            Err(e) => {
                return Some(match Error::docker("inspect container", e) {
                    e @ Error::DockerUnavailable { .. } => e,
                    e => Error::SandboxLost(format!(
                        "the sandbox container did not answer and cannot be inspected: {e}"
                    )),
                })
            }
        };
        let short = &self.id[..12.min(self.id.len())];
        if state.paused {
            return Some(Error::SandboxUnresponsive(format!(
                "container {short} is paused (frozen), so its agent could not answer and the code may never have run; the sandbox is discarded, retry the execution"
            )));
        }
        if !state.running {
            return Some(self.died(inner).await);
        }
        None
    }
}

/// Creates the container of a sandbox and registers it with the engine.
async fn create(
    inner: &Inner,
    image: &str,
    runtime: &str,
    host: HostConfig,
    egress: bool,
    data: bool,
) -> Result<String> {
    let mut labels = BTreeMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_OWNER.to_string(), inner.owner.clone()),
        (LABEL_RUNTIME.to_string(), runtime.to_string()),
        (LABEL_PID.to_string(), std::process::id().to_string()),
        (LABEL_HOST.to_string(), super::housekeeping::hostname()),
    ]);
    if inner.settings.persist {
        labels.insert(LABEL_PERSIST.to_string(), "true".to_string());
    }
    let mut env = Vec::new();
    if host.seccomp_filter {
        env.push(format!(
            "{}={}",
            isol8_protocol::seccomp::FILTER_ENV,
            isol8_protocol::seccomp::FILTER_STRICT
        ));
    }
    if egress {
        env.push(format!(
            "{}={}/{}",
            layout::EGRESS_SOCKET_ENV,
            layout::EGRESS_SOCKET_DIR,
            layout::EGRESS_SOCKET_NAME
        ));
    }
    if data {
        env.push(format!(
            "{}={}/{}",
            layout::DATA_SOCKET_ENV,
            layout::DATA_SOCKET_DIR,
            layout::DATA_SOCKET_NAME
        ));
    }
    let spec = ContainerSpec {
        name: format!("isol8-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        image: image.to_string(),
        labels,
        env,
        working_dir: layout::SANDBOX_ROOT.to_string(),
        network_disabled: host.network_mode.as_deref() == Some("none"),
        host,
    };
    let id = match inner.api.create_container(spec).await {
        Ok(id) => id,
        Err(ApiError::NotFound(_)) => {
            return Err(Error::ImageMissing {
                image: image.to_string(),
                runtime: runtime.to_string(),
            });
        }
        Err(e) => return Err(Error::docker("create container", e)),
    };
    if let Ok(mut live) = inner.live.lock() {
        live.insert(id.clone());
    }
    inner.observe(|o| o.container_created());
    // A stop() that raced with this creation must not leave the container behind.
    if inner.is_stopped() {
        remove(inner, &id).await;
        return Err(Error::Stopped);
    }
    Ok(id)
}

/// Force-removes a container and forgets it. A container that could not be removed (the
/// daemon was unreachable, e.g. restarting) stays in the engine's live set, so `stop` (or
/// dropping the engine) tries again instead of leaving it on the daemon.
pub async fn remove(inner: &Inner, id: &str) {
    if let Err(e) = super::housekeeping::remove_container(inner.api.as_ref(), id).await {
        tracing::warn!(container = %id, error = %e, "could not remove container");
        return;
    }
    inner.observe(|o| o.container_destroyed());
    forget(inner, id);
}

/// Stops tracking a container: it leaves the live set and the set of containers Docker
/// flagged (the locks are taken in the order the Docker events watcher takes them).
pub fn forget(inner: &Inner, id: &str) {
    if let Ok(mut live) = inner.live.lock() {
        live.remove(id);
        if let Ok(mut flagged) = inner.flagged.lock() {
            flagged.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A proxy listener whose socket has failed for good.
    struct BrokenSocket;

    #[async_trait::async_trait]
    impl egress::conn::Listener for BrokenSocket {
        type Conn = tokio::io::DuplexStream;
        async fn accept(&mut self) -> std::io::Result<Self::Conn> {
            Err(std::io::Error::from_raw_os_error(libc::EBADF))
        }
    }

    /// A sandbox whose container is attached and silent, with `egress` as its proxy.
    fn sandbox(egress: Option<Egress>) -> Sandbox {
        Sandbox {
            id: "test".into(),
            output: Box::pin(futures_util::stream::pending()),
            input: Box::pin(tokio::io::sink()),
            data: None,
            output_ended: false,
            read_buf: Vec::new(),
            decoder: FrameDecoder::new(),
            agent_log: String::new(),
            uses: 0,
            resettable: true,
            egress,
        }
    }

    #[tokio::test]
    async fn frames_come_over_the_data_socket_while_the_attached_output_carries_the_log() {
        use isol8_protocol::agent::{ResetDone, StepPhase, Stream};
        let (engine_end, mut agent_end) = tokio::net::UnixStream::pair().expect("pair");
        let (log_tx, log_rx) =
            tokio::sync::mpsc::unbounded_channel::<std::result::Result<Output, ApiError>>();
        let mut sb = sandbox(None);
        sb.output = Box::pin(futures_util::stream::unfold(log_rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let (read, write) = engine_end.into_split();
        sb.data = Some(read);
        sb.input = Box::pin(write);
        sb.read_buf = vec![0; 16];
        // The engine's frames reach the agent's end of the socket.
        let reset = Frame::json(Kind::Reset, &ResetSpec { wipe: vec![] });
        sb.send(&reset).await.expect("send");
        let mut got = vec![0; reset.encode().len()];
        agent_end.read_exact(&mut got).await.expect("read");
        assert_eq!(got, reset.encode());
        // A frame larger than one read, split across reads, with log lines in between.
        let mut bytes = Vec::new();
        isol8_protocol::agent::encode_output(
            Stream::Stdout,
            StepPhase::Code,
            b"0123456789abcdefghij",
            &mut bytes,
        );
        let done = Frame::json(
            Kind::ResetDone,
            &ResetDone {
                ok: true,
                problem: None,
            },
        );
        bytes.extend(done.encode());
        log_tx
            .send(Ok(Output::Stderr(b"agent: hi\n".to_vec())))
            .expect("log");
        agent_end.write_all(&bytes).await.expect("write");
        let first = sb.next_frame().await.expect("frame").expect("some");
        assert_eq!(first.kind, Kind::Output);
        assert_eq!(sb.next_frame().await.expect("frame"), Some(done));
        // The container stopped (its output ended) after its last frames: they are read,
        // then the end of the socket is the end.
        let last = Frame::json(
            Kind::ResetDone,
            &ResetDone {
                ok: false,
                problem: None,
            },
        );
        agent_end.write_all(&last.encode()).await.expect("write");
        drop(log_tx);
        drop(agent_end);
        assert_eq!(sb.next_frame().await.expect("frame"), Some(last));
        assert_eq!(sb.next_frame().await.expect("end"), None);
        assert!(sb.agent_log.contains("agent: hi"), "{}", sb.agent_log);
    }

    #[tokio::test]
    async fn a_sandbox_whose_egress_proxy_stopped_is_not_alive() {
        assert!(sandbox(None).is_alive());
        let live = Egress::bind(Arc::new(egress::SystemNet), Arc::default()).expect("bind");
        let mut sb = sandbox(Some(live));
        assert!(sb.is_alive(), "a running proxy keeps the sandbox usable");

        let dir = egress::socket_base().join(format!("test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let broken = Egress::serve(
            dir,
            BrokenSocket,
            Arc::new(egress::SystemNet),
            Arc::default(),
            egress::conn::Budget::new(8),
        );
        tokio::time::timeout(Duration::from_secs(30), async {
            while broken.is_running() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the accept loop ended on the failed socket");
        let mut sb = sandbox(Some(broken));
        assert!(
            !sb.is_alive(),
            "a sandbox whose proxy ended must not be handed out"
        );
    }
}
