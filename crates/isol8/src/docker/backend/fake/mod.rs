//! An in-memory container daemon for tests: [`FakeDocker`] implements
//! [`ContainerApi`](super::ContainerApi) with containers whose agent (`agent.rs`) speaks
//! the real frame protocol over in-process pipes and runs small scripts instead of
//! programs (see [Scripts](#scripts)). An engine built on it
//! ([`crate::DockerEngine::with_backend`]) runs its real pool, run state machine and
//! sessions with no Docker daemon.
//!
//! Tests script what is hard to provoke on a real daemon: containers that die, are
//! OOM-killed, are paused, or whose stdin breaks while their output stays open (a
//! container dying between acquire and exec); creates that fail; agents that never say
//! hello or speak another protocol; resets that fail, hang or kill the container; and
//! gates that hold starts or resets until the test releases them. Every container and
//! removal is recorded for assertions.
//!
//! # Scripts
//!
//! What a fake container runs instead of a step's program: the argument after `-c` / `-e`
//! in its argv (inline code, `cmd`, a setup script), or the content of the file its last
//! argument names (code written to a file), read as a script; a custom image's setup step
//! runs the file at [`crate::IMAGE_SETUP_SCRIPT`] if there is one, else nothing. Any other step is a package
//! installer: it succeeds (printing `installed …`) unless a package name starts with
//! `fail`. A script is one command per line; for example, the request
//! `{"runtime": "bash", "code": "echo hi\nexit 3"}` prints `hi` and exits with 3.
//!
//! | line | effect |
//! |---|---|
//! | `echo TEXT` / `err TEXT` | `TEXT` and a newline on stdout / stderr (`\n`, `\t` escapes) |
//! | `log TEXT` | `TEXT` and a newline on the agent's own stderr (its log, relayed as `isol8::agent` debug lines) |
//! | `print TEXT` | `TEXT` on stdout, no newline: one output chunk per line |
//! | `exit N` | ends the step with code `N` (default 0 at the end of the script) |
//! | `sleep MS` | waits `MS` milliseconds (a signal ends it) |
//! | `hang` | waits until the timeout, a signal or the container's end |
//! | `freeze` | the agent stops answering altogether (only the engine's watchdog ends it) |
//! | `flood N` | `N` bytes of `x` on stdout, in chunks of at most 64 KiB |
//! | `spew` | stdout lines forever |
//! | `cat` | the step's stdin to stdout (interactive: until `StdinClose`) |
//! | `wait-signal` | waits for a `Signal` frame, ends with 128 + its number |
//! | `env NAME` | the value of the environment variable `NAME`, then a newline |
//! | `write PATH TEXT` / `read PATH` | writes / prints a file of the container |
//! | `die` / `oom` | the container dies (killed / by its memory limit) mid-step |
//! | `refuse MESSAGE` | first line of the code step: the agent answers `ExecFailed` |
//! | `usage CPU_US WALL_US MEM PEAK RX TX` | the run's `Exited` reports these usage figures (microseconds, bytes), unless the request asked not to measure |
//! | `oom-kill` | the program is OOM-killed and the agent survives: the step ends with 137, `oom_killed` and signal 9 |
//! | `kill-self N` | the program dies of signal `N`: the step ends with 128 + `N`, signal `N` reported |
//!
//! A run ended by its timeout reports signal 9, as the real agent does.
//!
//! Available to this crate's unit tests and, with the `testing` feature, to other
//! crates' tests.

mod agent;
mod api;
mod pipes;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::DuplexStream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::AbortHandle;

use self::pipes::{Chunk, Pipes};
use super::{ContainerEvent, ContainerSpec, ImageSummary};
use crate::error::ApiError;

/// How new agents greet the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HelloMode {
    /// A proper hello.
    #[default]
    Normal,
    /// No hello ever (the engine's start times out).
    Silent,
    /// A hello with another protocol version.
    WrongProtocol,
    /// A proper hello from an agent that installed no seccomp filter, whatever the
    /// container's environment asked for.
    NoSeccompFilter,
    /// The container writes a line to stderr and exits (code 1) before any hello.
    DieAtStart,
}

/// How agents answer a reset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ResetMode {
    /// The writable directories are wiped and the reset succeeds.
    #[default]
    Clean,
    /// The reset reports this problem.
    Fail(String),
    /// No answer, ever (the engine's reset times out).
    Hang,
    /// The container dies.
    Die,
}

/// What a failing create reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateFailure {
    /// The image does not exist (404).
    MissingImage,
    /// The daemon cannot be reached.
    Unreachable,
    /// Some other daemon error (500).
    Failed,
}

/// The lifecycle state of a fake container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Created,
    Running,
    Paused,
    Exited { code: i64, oom: bool },
}

/// The agent ends of an attached container's pipes, until it starts.
struct AgentEnds {
    stdin: DuplexStream,
    out: mpsc::Sender<Chunk>,
}

struct Container {
    spec: ContainerSpec,
    status: Status,
    pipes: Arc<Pipes>,
    ends: Option<AgentEnds>,
    tasks: Vec<AbortHandle>,
    files: agent::Files,
    paused: watch::Sender<bool>,
    execs: usize,
    resets: usize,
}

#[derive(Default)]
struct State {
    created: usize,
    containers: BTreeMap<String, Container>,
    removed: Vec<String>,
    images: Vec<ImageSummary>,
    missing_images: BTreeSet<String>,
    create_failures: Vec<CreateFailure>,
    hello: HelloMode,
    reset: ResetMode,
    unreachable: bool,
}

struct Shared {
    state: Mutex<State>,
    events: broadcast::Sender<(ContainerEvent, BTreeMap<String, String>)>,
    /// False while new agents must wait before saying hello.
    starts_open: watch::Sender<bool>,
    /// False while resets must wait before answering.
    resets_open: watch::Sender<bool>,
}

/// A handle on the fake daemon, given to agents (so they can die, count, wait on gates).
#[derive(Clone)]
struct Daemon(Arc<Shared>);

/// The in-memory daemon. Cheap to clone (clones are the same daemon).
#[derive(Clone)]
pub struct FakeDocker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FakeDocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDocker")
            .field("containers", &self.running().len())
            .finish_non_exhaustive()
    }
}

impl Default for FakeDocker {
    fn default() -> Self {
        Self::new()
    }
}

impl Daemon {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn started_gate(&self) {
        let _ = self.0.starts_open.subscribe().wait_for(|open| *open).await;
    }

    async fn reset_gate(&self) {
        let _ = self.0.resets_open.subscribe().wait_for(|open| *open).await;
    }

    fn hello_mode(&self) -> HelloMode {
        self.lock().hello
    }

    fn reset_mode(&self) -> ResetMode {
        self.lock().reset.clone()
    }

    fn count_exec(&self, id: &str) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.execs += 1;
        }
    }

    fn count_reset(&self, id: &str) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.resets += 1;
        }
    }

    fn emit(&self, id: &str, labels: &BTreeMap<String, String>, actions: &[&str]) {
        for action in actions {
            let event = ContainerEvent {
                id: id.to_string(),
                action: action.to_string(),
            };
            let _ = self.0.events.send((event, labels.clone()));
        }
    }

    /// The container's main process ended with `code` (killed by the memory limit when
    /// `oom`): its output ends, its stdin breaks, its agent stops.
    fn die(&self, id: &str, code: i64, oom: bool) {
        let mut state = self.lock();
        let Some(c) = state.containers.get_mut(id) else {
            return;
        };
        if matches!(c.status, Status::Exited { .. }) {
            return;
        }
        c.status = Status::Exited { code, oom };
        c.pipes.dead.store(true, Ordering::SeqCst);
        c.pipes.waker.wake();
        for t in c.tasks.drain(..) {
            t.abort();
        }
        let labels = c.spec.labels.clone();
        drop(state);
        let actions: &[&str] = if oom {
            &["oom", "die"]
        } else {
            &["kill", "die"]
        };
        self.emit(id, &labels, actions);
    }
}

impl FakeDocker {
    /// An empty daemon: every image exists, agents greet and reset normally.
    pub fn new() -> FakeDocker {
        FakeDocker {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                events: broadcast::channel(1024).0,
                starts_open: watch::Sender::new(true),
                resets_open: watch::Sender::new(true),
            }),
        }
    }

    fn daemon(&self) -> Daemon {
        Daemon(self.shared.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ids of the containers that exist (created and not removed), oldest first.
    pub fn running(&self) -> Vec<String> {
        let state = self.lock();
        let mut ids: Vec<(&String, &Container)> = state.containers.iter().collect();
        ids.sort_by_key(|(_, c)| c.spec.name.clone());
        ids.into_iter().map(|(id, _)| id.clone()).collect()
    }

    /// How many containers were created so far.
    pub fn created(&self) -> usize {
        self.lock().created
    }

    /// Ids of the containers removed so far, in order.
    pub fn removed(&self) -> Vec<String> {
        self.lock().removed.clone()
    }

    /// True when container `id` exists.
    pub fn exists(&self, id: &str) -> bool {
        self.lock().containers.contains_key(id)
    }

    /// What container `id` was created from.
    pub fn spec(&self, id: &str) -> Option<ContainerSpec> {
        self.lock().containers.get(id).map(|c| c.spec.clone())
    }

    /// `Exec` frames container `id`'s agent received.
    pub fn execs(&self, id: &str) -> usize {
        self.lock().containers.get(id).map_or(0, |c| c.execs)
    }

    /// `Reset` frames container `id`'s agent received.
    pub fn resets(&self, id: &str) -> usize {
        self.lock().containers.get(id).map_or(0, |c| c.resets)
    }

    /// `Reset` frames every container's agent received (removed ones not counted).
    pub fn resets_total(&self) -> usize {
        self.lock().containers.values().map(|c| c.resets).sum()
    }

    /// A file of container `id`.
    pub fn file(&self, id: &str, path: &str) -> Option<Vec<u8>> {
        let state = self.lock();
        let files = state.containers.get(id)?.files.lock().ok()?;
        files.get(path).cloned()
    }

    /// Kills container `id` from outside (as `docker kill` would).
    pub fn kill(&self, id: &str) {
        self.daemon().die(id, 137, false);
    }

    /// Container `id` is killed by its memory limit.
    pub fn oom_kill(&self, id: &str) {
        self.daemon().die(id, 137, true);
    }

    /// Breaks container `id`'s stdin while its output stays open: what the engine sees of
    /// a container that dies just as a frame is sent to it.
    pub fn break_stdin(&self, id: &str) {
        if let Some(c) = self.lock().containers.get(id) {
            c.pipes.stdin_broken.store(true, Ordering::SeqCst);
        }
    }

    /// Pauses (freezes) container `id`: its agent stops reading and writing.
    pub fn pause(&self, id: &str) {
        let mut state = self.lock();
        let Some(c) = state.containers.get_mut(id) else {
            return;
        };
        if c.status != Status::Running {
            return;
        }
        c.status = Status::Paused;
        c.paused.send_replace(true);
        let labels = c.spec.labels.clone();
        drop(state);
        self.daemon().emit(id, &labels, &["pause"]);
    }

    /// Resumes a paused container.
    pub fn unpause(&self, id: &str) {
        let mut state = self.lock();
        let Some(c) = state.containers.get_mut(id) else {
            return;
        };
        if c.status == Status::Paused {
            c.status = Status::Running;
            c.paused.send_replace(false);
        }
    }

    /// The next creates fail, one per entry, in order.
    pub fn fail_creates(&self, failures: &[CreateFailure]) {
        self.lock().create_failures.extend_from_slice(failures);
    }

    /// Creating a container of `image` fails with 404 from now on.
    pub fn remove_image_ref(&self, image: &str) {
        self.lock().missing_images.insert(image.to_string());
    }

    /// Adds an image to the listing (`covering_image`, cleanup).
    pub fn add_image(&self, image: ImageSummary) {
        self.lock().images.push(image);
    }

    /// How agents started from now on greet the engine.
    pub fn set_hello(&self, mode: HelloMode) {
        self.lock().hello = mode;
    }

    /// How agents answer resets from now on.
    pub fn set_reset(&self, mode: ResetMode) {
        self.lock().reset = mode;
    }

    /// While held, agents of newly started containers wait before saying hello.
    pub fn hold_starts(&self, hold: bool) {
        self.shared.starts_open.send_replace(!hold);
    }

    /// While held, agents wait before answering a reset.
    pub fn hold_resets(&self, hold: bool) {
        self.shared.resets_open.send_replace(!hold);
    }

    /// While set, every call fails as if the daemon were down.
    pub fn set_unreachable(&self, down: bool) {
        self.lock().unreachable = down;
    }

    fn check_reachable(&self) -> Result<(), ApiError> {
        match self.lock().unreachable {
            true => Err(ApiError::Unreachable(
                "connection refused (fake daemon)".into(),
            )),
            false => Ok(()),
        }
    }
}
