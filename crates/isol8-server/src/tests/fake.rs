//! An in-memory [`Backend`]: no Docker, no containers, but the engine's real request
//! validation ([`isol8::prepare::prepare`] on the settings the options resolve to), and
//! a tiny script language in `code`, one command per line:
//!
//! * `echo TEXT` / `err TEXT`: a line on stdout / stderr;
//! * `exit N`: ends with exit code N (default 0 at the end of the script);
//! * `write PATH TEXT` / `cat PATH`: a file of the engine's sandbox (a session keeps its
//!   files; the shared engine forgets them after each run);
//! * `wait`: blocks until [`Fake::release`] (so an execution is running meanwhile);
//! * `read`: reads a line of stdin — the request's `stdin`, then (interactive runs) the
//!   `stdin` controls — and echoes it upper-cased; at end-of-file the run ends with 1;
//! * `trap`: waits for a signal (interactive runs) and ends with 128 + its number;
//! * `timeout`: ends as a run killed by its timeout does (the timeout `error` event and
//!   137; a buffered result's stderr gets the timeout trailer);
//! * `lose` / `pause` / `break`: the sandbox is lost / unresponsive / fails, with an
//!   error full of internal details (container ids, daemon paths) a client must not see.
//! * `usage CPU_PERCENT MEMORY_MB PEAK_MB IN OUT`: the run reports these figures as its
//!   `resourceUsage`, and an `exitReason` (`exited` unless another line says otherwise);
//!   runs without such a line report neither, as the tests written before them expect;
//! * `oom` / `died`: ends as the engine ends a run killed at its memory limit (the
//!   `MEMORY LIMIT EXCEEDED` error event, 137, `memoryLimit`) / whose sandbox died under
//!   it (a `sandbox lost: …` error event full of internals, 137, `sandboxLost`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use isol8::settings::SandboxSettings;
use isol8::{
    EngineOptions, EventStream, ExecutionRequest, ExecutionResult, Phase, RuntimeRegistry,
    StreamEvent,
};
use isol8_protocol::{ExitReason, ResourceUsage};
use tokio::sync::{mpsc, watch};

use crate::backend::{Backend, Cleaned, Control, Controller, Executor, Tally};
use isol8::Engine;

/// Internal text the fake's failures carry (must never reach a client).
pub const INTERNAL: &str = "container 4f2a9c0d1e2b at /var/lib/docker/overlay2/secret";

/// What the shared engine and its sessions have in common.
#[derive(Debug)]
struct Shared {
    /// Executions holding a slot.
    in_use: AtomicUsize,
    /// Closed slots refuse new executions.
    closed: AtomicBool,
    /// `wait` returns once this is true.
    released: watch::Sender<bool>,
    /// Session engines created, in order.
    sessions: Mutex<Vec<Arc<Fake>>>,
}

/// An engine of the fake backend (the shared one, or a session's).
#[derive(Debug)]
pub struct Fake {
    shared: Arc<Shared>,
    options: EngineOptions,
    settings: SandboxSettings,
    persistent: bool,
    running: Arc<AtomicUsize>,
    stopped: AtomicBool,
    /// The session's files.
    files: Mutex<HashMap<String, String>>,
    /// Executions seen: the request and the options it ran with.
    pub seen: Mutex<Vec<(ExecutionRequest, EngineOptions)>>,
}

impl Fake {
    /// A shared engine with these options.
    pub fn new(options: EngineOptions) -> Arc<Fake> {
        let shared = Arc::new(Shared {
            in_use: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            released: watch::channel(false).0,
            sessions: Mutex::new(Vec::new()),
        });
        Arc::new(Fake::with(shared, options, false))
    }

    fn with(shared: Arc<Shared>, options: EngineOptions, persistent: bool) -> Fake {
        let settings = SandboxSettings::resolve(&options).expect("valid fake options");
        Fake {
            shared,
            options,
            settings,
            persistent,
            running: Arc::new(AtomicUsize::new(0)),
            stopped: AtomicBool::new(false),
            files: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Lets every `wait` (now and later) go on.
    pub fn release(&self) {
        self.shared.released.send_replace(true);
    }

    /// The session engines created so far.
    pub fn sessions(&self) -> Vec<Arc<Fake>> {
        self.shared.sessions.lock().expect("lock").clone()
    }

    /// The options the engine was made with (a session's: the server's with the
    /// creating client's laid over them).
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// True once stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// The settings with `options` laid over the engine's own, as `DockerEngine` does.
    fn resolve(&self, options: &EngineOptions) -> isol8::Result<Arc<SandboxSettings>> {
        Ok(Arc::new(SandboxSettings::resolve(
            &self.options.overlay(options),
        )?))
    }

    /// Checks the request as the engine would, and takes a slot.
    fn launch(
        &self,
        req: &ExecutionRequest,
        options: &EngineOptions,
    ) -> isol8::Result<(Vec<String>, Active)> {
        if self.is_stopped() || self.shared.closed.load(Ordering::SeqCst) {
            return Err(isol8::Error::Stopped);
        }
        let settings = self.resolve(options)?;
        if self.persistent {
            // As a session's engine does: its container is fixed.
            self.settings.same_container(&settings)?;
        }
        isol8::prepare::prepare(req, &RuntimeRegistry::default(), &settings)?;
        self.seen
            .lock()
            .expect("lock")
            .push((req.clone(), options.clone()));
        let script = req
            .code
            .as_deref()
            .or(req.cmd.as_deref())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        Ok((script, Active::new(&self.shared, &self.running)))
    }

    /// Runs a script with the request's `stdin`, sending its events; `None` control: not
    /// interactive (stdin ends after the request's).
    async fn run(
        &self,
        script: Vec<String>,
        stdin: Option<String>,
        events: mpsc::Sender<StreamEvent>,
        control: Option<mpsc::Receiver<Control>>,
    ) -> isol8::Result<Ended> {
        let mut outcome = Outcome::default();
        let code = self
            .run_script(script, stdin, events, control, &mut outcome)
            .await?;
        Ok(Ended {
            code,
            reason: outcome.usage.is_some().then_some(ExitReason::Exited),
            usage: outcome.usage,
        }
        .with(outcome.reason))
    }

    /// [`Fake::run`]'s script loop; what the script says about the run's outcome goes
    /// into `outcome`.
    async fn run_script(
        &self,
        script: Vec<String>,
        stdin: Option<String>,
        events: mpsc::Sender<StreamEvent>,
        mut control: Option<mpsc::Receiver<Control>>,
        outcome: &mut Outcome,
    ) -> isol8::Result<i32> {
        let mut released = self.shared.released.subscribe();
        let mut stdin: std::collections::VecDeque<String> = stdin
            .unwrap_or_default()
            .split_inclusive('\n')
            .map(str::to_string)
            .collect();
        for line in script {
            let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let event = match cmd {
                "echo" => StreamEvent::stdout(format!("{arg}\n"), Phase::Code),
                "err" => StreamEvent::stderr(format!("{arg}\n"), Phase::Code),
                "exit" => return Ok(arg.parse().unwrap_or(1)),
                "usage" => {
                    let n: Vec<f64> = arg
                        .split_whitespace()
                        .map(|x| x.parse().unwrap_or(0.0))
                        .collect();
                    let at = |i: usize| n.get(i).copied().unwrap_or(0.0);
                    outcome.usage = Some(ResourceUsage {
                        cpu_percent: at(0),
                        memory_mb: at(1),
                        peak_memory_mb: at(2),
                        network_bytes_in: at(3) as u64,
                        network_bytes_out: at(4) as u64,
                    });
                    continue;
                }
                "oom" | "died" => {
                    let (data, reason) = if cmd == "oom" {
                        (
                            isol8::outcome::MEMORY_LIMIT_EVENT.to_string(),
                            ExitReason::MemoryLimit,
                        )
                    } else {
                        (
                            format!("sandbox lost: {INTERNAL} died (exit code 137)"),
                            ExitReason::SandboxLost,
                        )
                    };
                    let _ = events
                        .send(StreamEvent::error(data).in_phase(Phase::Code))
                        .await;
                    outcome.reason = Some(reason);
                    return Ok(137);
                }
                "timeout" => {
                    let ev = StreamEvent::error(isol8::output::TIMEOUT_EVENT).in_phase(Phase::Code);
                    let _ = events.send(ev).await;
                    return Ok(137);
                }
                "write" => {
                    let (path, text) = arg.split_once(' ').unwrap_or((arg, ""));
                    self.files
                        .lock()
                        .expect("lock")
                        .insert(path.to_string(), text.to_string());
                    continue;
                }
                "cat" => {
                    let text = self.files.lock().expect("lock").get(arg).cloned();
                    match text {
                        Some(t) => StreamEvent::stdout(t, Phase::Code),
                        None => StreamEvent::stderr(format!("cat: {arg}: missing\n"), Phase::Code),
                    }
                }
                "wait" => {
                    tokio::select! {
                        _ = released.wait_for(|r| *r) => {}
                        _ = events.closed() => return Ok(137),
                    }
                    continue;
                }
                "read" if !stdin.is_empty() => StreamEvent::stdout(
                    stdin.pop_front().unwrap_or_default().to_uppercase(),
                    Phase::Code,
                ),
                "read" if control.is_none() => return Ok(1),
                "read" | "trap" => {
                    let Some(rx) = control.as_mut() else {
                        return Err(isol8::Error::InvalidRequest(format!(
                            "`{cmd}` needs an interactive run"
                        )));
                    };
                    match (cmd, rx.recv().await) {
                        ("read", Some(Control::Stdin(data))) => StreamEvent::stdout(
                            String::from_utf8_lossy(&data).to_uppercase(),
                            Phase::Code,
                        ),
                        (_, Some(Control::Signal(n))) => return Ok(128 + n),
                        _ => return Ok(1),
                    }
                }
                "lose" => return Err(isol8::Error::SandboxLost(format!("{INTERNAL} was killed"))),
                "pause" => {
                    return Err(isol8::Error::SandboxUnresponsive(format!(
                        "{INTERNAL} is paused"
                    )))
                }
                "break" => {
                    return Err(isol8::Error::Sandbox(
                        isol8::error::SandboxError::DiedAtStart {
                            why: format!("agent frame from {INTERNAL}"),
                        },
                    ))
                }
                other => {
                    return Err(isol8::Error::InvalidRequest(format!(
                        "fake: unknown command `{other}`"
                    )))
                }
            };
            if events.send(event).await.is_err() {
                return Ok(137);
            }
        }
        Ok(0)
    }

    /// Starts a run in a task; its events end as the engine's do (an `exit`, or a final
    /// `sandbox lost: …` error and no exit).
    fn spawn(
        self: &Arc<Self>,
        script: Vec<String>,
        stdin: Option<String>,
        active: Active,
        control: Option<mpsc::Receiver<Control>>,
    ) -> EventStream {
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            let _active = active;
            let end = match this.run(script, stdin, tx.clone(), control).await {
                Ok(ended) => vec![StreamEvent::exit(ended.code)
                    .in_phase(Phase::Code)
                    .with_outcome(ended.usage, ended.reason)],
                Err(e) if e.is_sandbox_lost() => {
                    vec![StreamEvent::error(e.to_string()).in_phase(Phase::Code)]
                }
                Err(e) => vec![
                    StreamEvent::error(e.to_string()).in_phase(Phase::Code),
                    StreamEvent::exit(1).in_phase(Phase::Code),
                ],
            };
            for ev in end {
                let _ = tx.send(ev).await;
            }
        });
        Box::pin(tokio_stream(rx))
    }
}

/// What a script said about its run's outcome.
#[derive(Debug, Default)]
struct Outcome {
    usage: Option<ResourceUsage>,
    reason: Option<ExitReason>,
}

/// How a fake run ended.
#[derive(Debug)]
struct Ended {
    code: i32,
    reason: Option<ExitReason>,
    usage: Option<ResourceUsage>,
}

impl Ended {
    /// This ending, with `reason` when the script gave one.
    fn with(mut self, reason: Option<ExitReason>) -> Ended {
        if reason.is_some() {
            self.reason = reason;
        }
        self
    }
}

/// A receiver as a stream.
fn tokio_stream(
    mut rx: mpsc::Receiver<StreamEvent>,
) -> impl futures_util::Stream<Item = StreamEvent> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A running execution: a slot and a `running` count, released when dropped.
#[derive(Debug)]
struct Active(Arc<Shared>, Arc<AtomicUsize>);

impl Active {
    fn new(shared: &Arc<Shared>, running: &Arc<AtomicUsize>) -> Active {
        shared.in_use.fetch_add(1, Ordering::SeqCst);
        running.fetch_add(1, Ordering::SeqCst);
        Active(shared.clone(), running.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::SeqCst);
        self.1.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The [`Executor`] of a fake engine held in an `Arc` (runs are spawned tasks).
#[derive(Debug, Clone)]
pub struct FakeRef(pub Arc<Fake>);

#[async_trait::async_trait]
impl Engine for FakeRef {
    async fn start(&self) -> isol8::Result<()> {
        Ok(())
    }

    async fn execute_with(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> isol8::Result<ExecutionResult> {
        let (script, active) = self.0.launch(&req, options)?;
        let req_stdin = req.stdin.clone();
        let (tx, mut rx) = mpsc::channel(16);
        let this = self.0.clone();
        let run = tokio::spawn(async move {
            let _active = active;
            this.run(script, req_stdin, tx, None).await
        });
        let mut result = ExecutionResult {
            runtime: req.runtime.clone(),
            execution_id: uuid::Uuid::new_v4().to_string(),
            container_id: Some("fake".into()),
            ..Default::default()
        };
        while let Some(ev) = rx.recv().await {
            match ev.kind {
                isol8::StreamEventType::Stdout => result.stdout.push_str(&ev.data),
                isol8::StreamEventType::Stderr => result.stderr.push_str(&ev.data),
                isol8::StreamEventType::Error if ev.data == isol8::output::TIMEOUT_EVENT => {
                    result.stderr.push_str(isol8::output::TIMEOUT_TRAILER)
                }
                _ => {}
            }
        }
        let ended = run.await.map_err(|e| {
            isol8::Error::Sandbox(isol8::error::SandboxError::DiedAtStart { why: e.to_string() })
        })??;
        result.exit_code = ended.code;
        result.resource_usage = ended.usage;
        result.exit_reason = ended.reason;
        Ok(result)
    }

    async fn execute_stream_with(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> isol8::Result<EventStream> {
        let (script, active) = self.0.launch(&req, options)?;
        Ok(self.0.spawn(script, req.stdin.clone(), active, None))
    }

    async fn execute_interactive(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> isol8::Result<(EventStream, Controller)> {
        let (script, active) = self.0.launch(&req, options)?;
        let (controller, rx) = Controller::channel();
        let events = self.0.spawn(script, req.stdin.clone(), active, Some(rx));
        Ok((events, controller))
    }

    async fn put_file(&self, path: &str, content: &[u8]) -> isol8::Result<()> {
        let path = isol8::prepare::writable_path("path", path)?;
        self.0.files.lock().expect("lock").insert(
            path,
            String::from_utf8(content.to_vec())
                .map_err(|_| isol8::Error::InvalidRequest("fake: text files only".into()))?,
        );
        Ok(())
    }

    async fn get_file(&self, path: &str) -> isol8::Result<Vec<u8>> {
        let path = isol8::prepare::writable_path("path", path)?;
        match self.0.files.lock().expect("lock").get(&path) {
            Some(t) => Ok(t.clone().into_bytes()),
            None => Err(isol8::Error::InvalidRequest(format!(
                "`{path}` does not exist"
            ))),
        }
    }

    async fn stop(&self) -> isol8::Result<()> {
        self.0.stopped.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl Executor for FakeRef {
    fn running(&self) -> usize {
        self.0.running.load(Ordering::SeqCst)
    }

    fn live_containers(&self) -> Vec<String> {
        if self.0.is_stopped() {
            return Vec::new();
        }
        let n = if self.0.persistent {
            usize::from(!self.0.seen.lock().expect("lock").is_empty())
        } else {
            self.running()
        };
        (0..n).map(|i| format!("fake-{i}")).collect()
    }
}

#[async_trait::async_trait]
impl Backend for FakeRef {
    fn settings(&self) -> &SandboxSettings {
        &self.0.settings
    }

    fn settings_with(&self, options: &EngineOptions) -> isol8::Result<Arc<SandboxSettings>> {
        self.0.resolve(options)
    }

    fn executing(&self) -> usize {
        self.0.shared.in_use.load(Ordering::SeqCst)
    }

    fn close_slots(&self) {
        self.0.shared.closed.store(true, Ordering::SeqCst);
    }

    fn new_session(&self, options: EngineOptions) -> isol8::Result<Arc<dyn Executor>> {
        let session = Arc::new(Fake::with(self.0.shared.clone(), options, true));
        self.0
            .shared
            .sessions
            .lock()
            .expect("lock")
            .push(session.clone());
        Ok(Arc::new(FakeRef(session)))
    }

    /// Removes its live "containers"; with `images`, two images, and a third that is
    /// in use and cannot be removed.
    async fn cleanup(&self, images: bool) -> isol8::Result<Cleaned> {
        let containers = Tally {
            removed: self.live_containers().len(),
            ..Default::default()
        };
        let images = images.then(|| {
            let mut t = Tally::default();
            t.count::<&str>("isol8:python", Ok(()));
            t.count::<&str>("isol8:bash", Ok(()));
            t.count("isol8:node", Err("image is in use by a running container"));
            t
        });
        Ok(Cleaned { containers, images })
    }
}
