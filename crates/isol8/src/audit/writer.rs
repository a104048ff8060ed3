//! [`AuditLog`]: the handle executions record through, its writer thread, the daily
//! files and the `postLogScript` runner (see the parent module for the guarantees).

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};

use super::{file_name, prune, AuditRecord, AuditSettings, SCRIPT_TIMEOUT};
use crate::config::{AuditConfig, AuditDestination};
use crate::{Error, Result};

/// The time the writer names files and prunes by (injectable for tests).
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What the writer thread is asked to do.
enum Cmd {
    Record(Box<AuditRecord>),
    /// Called once every command sent before it is written and flushed.
    Flush(Box<dyn FnOnce() + Send>),
}

/// The audit log: cheap to clone (clones share the writer). Records are written in the
/// order they are recorded. Dropping the last clone writes what is queued and stops the
/// writer.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

struct Shared {
    settings: AuditSettings,
    tx: Option<mpsc::Sender<Cmd>>,
    writer: Option<JoinHandle<()>>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl AuditLog {
    /// The log the `audit` section describes; `None` when auditing is off. Creates the
    /// directory and today's file (filesystem) and prunes old files. Errors name the key
    /// (`audit.logDir`, `audit.postLogScript`).
    pub fn open(config: &AuditConfig) -> Result<Option<AuditLog>> {
        match AuditSettings::resolve(config)? {
            None => Ok(None),
            Some(s) => AuditLog::start(s, Arc::new(SystemClock), None).map(Some),
        }
    }

    /// A log with these settings and `clock`; `out` replaces standard output for the
    /// `stdout` destination (tests).
    pub fn start(
        settings: AuditSettings,
        clock: Arc<dyn Clock>,
        out: Option<Box<dyn Write + Send>>,
    ) -> Result<AuditLog> {
        let sink = match settings.destination {
            AuditDestination::Stdout => {
                Sink::Stream(out.unwrap_or_else(|| Box::new(std::io::stdout())))
            }
            AuditDestination::Filesystem => {
                let bad = |e: std::io::Error| {
                    Error::option(
                        "audit.logDir",
                        format!(
                            "cannot write audit files in `{}`: {e}; create it or pick a writable directory",
                            settings.dir.display()
                        ),
                    )
                };
                {
                    use std::os::unix::fs::DirBuilderExt as _;
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&settings.dir)
                        .map_err(bad)?;
                }
                let today = clock.now().date_naive();
                prune(&settings.dir, today, settings.retention_days);
                let file = open_day(&settings.dir, today).map_err(bad)?;
                Sink::Files {
                    dir: settings.dir.clone(),
                    current: Some((today, file)),
                    retention_days: settings.retention_days,
                }
            }
        };
        let script = settings.post_log_script.clone().map(ScriptRunner::spawn);
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("isol8-audit".into())
            .spawn(move || write_loop(rx, sink, clock, script))
            .map_err(|e| Error::option("audit", format!("cannot start the audit writer: {e}")))?;
        Ok(AuditLog {
            shared: Arc::new(Shared {
                settings,
                tx: Some(tx),
                writer: Some(writer),
            }),
        })
    }

    /// What this log does.
    pub fn settings(&self) -> &AuditSettings {
        &self.shared.settings
    }

    /// Queues `record` for writing and returns at once (never blocks on I/O).
    pub fn record(&self, record: AuditRecord) {
        if let Some(tx) = &self.shared.tx {
            let _ = tx.send(Cmd::Record(Box::new(record)));
        }
    }

    /// Waits until every record queued before this call is written and flushed.
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel::<()>();
        if self.send_flush(Box::new(move || {
            let _ = done.send(());
        })) {
            let _ = wait.await;
        }
    }

    /// [`AuditLog::flush`] for synchronous code (not on an async worker thread).
    pub fn flush_blocking(&self) {
        let (done, wait) = mpsc::sync_channel::<()>(1);
        if self.send_flush(Box::new(move || {
            let _ = done.send(());
        })) {
            let _ = wait.recv();
        }
    }

    fn send_flush(&self, then: Box<dyn FnOnce() + Send>) -> bool {
        self.shared
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Cmd::Flush(then)).is_ok())
    }
}

/// Opens (creating, mode 0600) the daily file of `date` for appending.
fn open_day(dir: &std::path::Path, date: NaiveDate) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(file_name(date)))
}

/// Where the writer puts lines.
enum Sink {
    Files {
        dir: PathBuf,
        current: Option<(NaiveDate, File)>,
        retention_days: u32,
    },
    Stream(Box<dyn Write + Send>),
}

impl Sink {
    /// Writes one whole line; returns the file written (filesystem).
    fn write_line(&mut self, line: &[u8], clock: &dyn Clock) -> std::io::Result<Option<PathBuf>> {
        match self {
            Sink::Stream(out) => {
                out.write_all(line)?;
                Ok(None)
            }
            Sink::Files {
                dir,
                current,
                retention_days,
            } => {
                let today = clock.now().date_naive();
                if current.as_ref().map(|(d, _)| *d) != Some(today) {
                    // A new day: a new file, and the old ones pruned.
                    *current = None;
                    prune(dir, today, *retention_days);
                    *current = Some((today, open_day(dir, today)?));
                }
                let Some((_, file)) = current.as_mut() else {
                    return Ok(None);
                };
                file.write_all(line)?;
                Ok(Some(dir.join(file_name(today))))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stream(out) => out.flush(),
            Sink::Files { current, .. } => match current {
                Some((_, f)) => f.flush(),
                None => Ok(()),
            },
        }
    }
}

/// The writer thread: records in order, one `write_all` per line, a flush per batch,
/// the script told after each batch that wrote to a file. Ends when every handle is
/// gone and the queue is empty.
fn write_loop(
    rx: mpsc::Receiver<Cmd>,
    mut sink: Sink,
    clock: Arc<dyn Clock>,
    script: Option<ScriptRunner>,
) {
    let mut acks: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut written: Option<PathBuf> = None;
        let mut next = Some(first);
        while let Some(cmd) = next {
            match cmd {
                Cmd::Record(record) => match serde_json::to_vec(&record) {
                    Ok(mut line) => {
                        line.push(b'\n');
                        match sink.write_line(&line, clock.as_ref()) {
                            Ok(Some(path)) => written = Some(path),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::error!(execution = %record.execution_id, error = %e, "cannot write an audit record")
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(execution = %record.execution_id, error = %e, "cannot encode an audit record")
                    }
                },
                Cmd::Flush(then) => acks.push(then),
            }
            // Drain what is already queued into this batch (bounded, so acks are timely).
            next = if acks.len() < 64 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if let Err(e) = sink.flush() {
            tracing::error!(error = %e, "cannot flush the audit log");
        }
        for ack in acks.drain(..) {
            ack();
        }
        if let (Some(script), Some(path)) = (&script, written) {
            script.notify(path);
        }
    }
    let _ = sink.flush();
    if let Some(script) = script {
        script.close();
    }
}

/// Runs `postLogScript` on a thread of its own: one process at a time, coalescing the
/// writes made while one runs into one more run.
struct ScriptRunner {
    state: Arc<(Mutex<ScriptState>, Condvar)>,
}

#[derive(Default)]
struct ScriptState {
    pending: Option<PathBuf>,
    closed: bool,
}

impl ScriptRunner {
    fn spawn(script: PathBuf) -> ScriptRunner {
        let state: Arc<(Mutex<ScriptState>, Condvar)> = Arc::default();
        let shared = state.clone();
        let spawned = std::thread::Builder::new()
            .name("isol8-audit-script".into())
            .spawn(move || loop {
                let path = {
                    let (lock, cv) = &*shared;
                    let Ok(mut s) = lock.lock() else { return };
                    loop {
                        if let Some(p) = s.pending.take() {
                            break p;
                        }
                        if s.closed {
                            return;
                        }
                        s = match cv.wait(s) {
                            Ok(s) => s,
                            Err(_) => return,
                        };
                    }
                };
                run_script(&script, &path);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the audit postLogScript runner");
        }
        ScriptRunner { state }
    }

    fn notify(&self, path: PathBuf) {
        let (lock, cv) = &*self.state;
        if let Ok(mut s) = lock.lock() {
            s.pending = Some(path);
            cv.notify_one();
        }
    }

    fn close(&self) {
        let (lock, cv) = &*self.state;
        if let Ok(mut s) = lock.lock() {
            s.closed = true;
            cv.notify_one();
        }
    }
}

/// Runs the script once with `path`, killing it after [`SCRIPT_TIMEOUT`].
fn run_script(script: &std::path::Path, path: &std::path::Path) {
    use std::process::{Command, Stdio};
    let mut child = match Command::new(script)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(script = %script.display(), error = %e, "cannot run the audit postLogScript");
            return;
        }
    };
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    tracing::warn!(script = %script.display(), %status, "the audit postLogScript failed");
                }
                return;
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                tracing::warn!(script = %script.display(), "the audit postLogScript ran too long; killed");
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            Err(e) => {
                tracing::warn!(script = %script.display(), error = %e, "cannot wait for the audit postLogScript");
                return;
            }
        }
    }
}
