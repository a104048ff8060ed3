//! The proxy of one sandbox: the [`Egress`] handle that owns its socket directory and
//! serving task, the per-execution [`State`] the engine switches with [`begin`] and
//! [`finish`], and the host directories the sockets live in.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use isol8_protocol::NetworkLog;
use tokio::net::UnixListener;

use super::conn::{self, Budget, Listener};
use super::{AddressPolicy, Net, Rules, SOCKET_NAME};
use crate::stats::Observer;

/// What the proxy of one sandbox applies right now.
#[derive(Debug)]
pub struct State {
    /// Bumped at every execution start: a connection logs only into the execution it
    /// started in.
    pub(super) generation: u64,
    pub(super) rules: Arc<Rules>,
    pub(super) logs: Option<Vec<NetworkLog>>,
    /// The addresses this proxy may dial (the engine's, fixed for the proxy's life).
    pub(super) policy: Arc<AddressPolicy>,
    /// Told of every request allowed or refused (see [`observe`]).
    pub(super) observer: Option<Observer>,
    /// The span of the current execution ([`crate::trace`]): connections accepted while
    /// it runs, and their log lines, are inside it. None between executions.
    pub(super) span: tracing::Span,
    /// Bytes relayed for the current execution (new at every [`begin`], so a connection
    /// left over from an earlier execution counts into that one's, never this one's).
    pub(super) traffic: Arc<Traffic>,
}

/// Bytes one execution's connections moved through the proxy, counted on the sandbox's
/// side (request heads, bodies, tunnels and the proxy's own replies).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes the proxy wrote to the sandbox.
    pub(super) into_sandbox: AtomicU64,
    /// Bytes the proxy read from the sandbox.
    pub(super) out_of_sandbox: AtomicU64,
}

impl State {
    /// The state of a new proxy: nothing admitted until an execution begins.
    pub fn new(policy: Arc<AddressPolicy>) -> State {
        State {
            generation: 0,
            rules: Arc::new(Rules::deny_all()),
            logs: None,
            policy,
            observer: None,
            span: tracing::Span::none(),
            traffic: Arc::default(),
        }
    }
}

/// Shared handle on a proxy's [`State`].
pub type Shared = Arc<Mutex<State>>;

/// Makes the proxy tell `observer` of every request it allows or refuses (for the whole
/// life of the proxy; `None`: nobody).
pub fn observe(shared: &Shared, observer: Option<Observer>) {
    if let Ok(mut s) = shared.lock() {
        s.observer = observer;
    }
}

/// Sets the rules (and log) of a new execution; its connections run in the current span
/// (the execution's).
pub fn begin(shared: &Shared, rules: Arc<Rules>, log: bool) {
    if let Ok(mut s) = shared.lock() {
        s.generation += 1;
        s.rules = rules;
        s.logs = log.then(Vec::new);
        s.span = tracing::Span::current();
        s.traffic = Arc::default();
    }
}

/// Bytes the current execution's connections moved so far: (into the sandbox, out of
/// it). Read it before [`finish`]; zero between executions.
pub fn traffic(shared: &Shared) -> (u64, u64) {
    match shared.lock() {
        Ok(s) => (
            s.traffic.into_sandbox.load(Ordering::Relaxed),
            s.traffic.out_of_sandbox.load(Ordering::Relaxed),
        ),
        Err(_) => (0, 0),
    }
}

/// The span of the execution the proxy serves now (none between executions).
pub fn current_span(shared: &Shared) -> tracing::Span {
    shared
        .lock()
        .map(|s| s.span.clone())
        .unwrap_or_else(|_| tracing::Span::none())
}

/// Ends the current execution: nothing is admitted until the next [`begin`]; returns
/// the execution's log when it asked for one.
pub fn finish(shared: &Shared) -> Option<Vec<NetworkLog>> {
    let mut s = shared.lock().ok()?;
    s.generation += 1;
    s.rules = Arc::new(Rules::deny_all());
    s.span = tracing::Span::none();
    s.logs.take()
}

/// The proxy of one sandbox: its socket directory on the host and the task serving it.
/// Dropping it stops the proxy, cuts its connections and removes the directory.
#[derive(Debug)]
pub struct Egress {
    dir: PathBuf,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Egress {
    /// Binds a new proxy socket in a fresh directory under [`socket_base`]; the proxy
    /// dials through `net` only addresses that `policy` admits.
    pub fn bind(net: Arc<dyn Net>, policy: Arc<AddressPolicy>) -> io::Result<Egress> {
        use std::os::unix::fs::PermissionsExt;
        let (dir, listener) = bind_in_fresh_dir(&socket_base(), 0o755, SOCKET_NAME)?;
        let socket = dir.join(SOCKET_NAME);
        // The agent relays as root, but any user in the sandbox may use the proxy: the
        // socket grants nothing the relay does not.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))?;
        Ok(Egress::serve(dir, listener, net, policy, Budget::global()))
    }

    /// Serves clients of `listener` in a new task, with `dir` as the socket directory
    /// (removed when the proxy is dropped) and connections counted against `budget`.
    pub fn serve<L: Listener>(
        dir: PathBuf,
        listener: L,
        net: Arc<dyn Net>,
        policy: Arc<AddressPolicy>,
        budget: Arc<Budget>,
    ) -> Egress {
        let shared: Shared = Arc::new(Mutex::new(State::new(policy)));
        let task = tokio::spawn(conn::accept_loop(listener, net, shared.clone(), budget));
        Egress { dir, shared, task }
    }

    /// False once the proxy has stopped accepting for good (its socket failed, or its
    /// task ended otherwise): a sandbox whose proxy is not running must not be used again.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// The host directory to mount at [`super::SOCKET_DIR_IN_SANDBOX`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state the engine switches per execution.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Binds a Unix socket called `name` in a new directory of mode `mode` below `base`
/// (created if missing), named after this process (`PID-uuid`) so that a later engine
/// can remove what a killed one left ([`reap_stale_dirs_in`]). Must be called within a
/// Tokio runtime. Returns the directory and the listener; nothing is left on error.
pub fn bind_in_fresh_dir(
    base: &Path,
    mode: u32,
    name: &str,
) -> io::Result<(PathBuf, UnixListener)> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(base)?;
    let dir = base.join(format!(
        "{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::DirBuilder::new().mode(mode).create(&dir)?;
    match UnixListener::bind(dir.join(name)) {
        Ok(l) => Ok((dir, l)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// Removes socket directories left by engine processes that no longer exist (killed
/// before they could clean up); returns how many were removed.
pub fn reap_stale_dirs() -> usize {
    reap_stale_dirs_in(&socket_base())
}

/// [`reap_stale_dirs`] for the directories below `base` named `PID-…`.
pub fn reap_stale_dirs_in(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Host directory holding the per-sandbox socket directories.
pub fn socket_base() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        PathBuf::from("/run/isol8/egress")
    } else {
        std::env::temp_dir()
            .join(format!("isol8-{uid}"))
            .join("egress")
    }
}
