//! `isol8-agent`: PID 1 of every isol8 sandbox container.
//!
//! The engine attaches to the container's stdin and stdout and speaks the frame protocol
//! of [`isol8_protocol::agent`]: the hello goes out on stdout, and every frame after it
//! over the engine's data socket when the container's environment names one and the
//! agent could connect (stdin and stdout otherwise). For each `Exec` the agent writes the request's files,
//! runs each step as the unprivileged sandbox user in its own session, streams output
//! frames as the program writes, enforces the timeout and the output cap, kills every
//! process of the sandbox user when a step ends, reads the output files back, and reports
//! `Exited`.
//!
//! Threads: the main thread reads the engine's frames itself ([`inbox`]: one `ppoll` on
//! the engine's stream, an `eventfd` the other threads bump and the running step's
//! `pidfd`, through which it reaps the step's process unless the reaper was first), one
//! reaps children (`wait4`, driven by `SIGCHLD` through `sigwait`), two read a step's
//! stdout and stderr pipes, one may feed its stdin, one writes and reads the request's
//! files with the sandbox user's filesystem identity, and one samples the programs'
//! memory while steps run, killing them above `memoryLimit` ([`usage::watch`]). All frames go out through one lock on stdout,
//! so they never interleave. The main thread runs executions one at a time, measuring
//! each ([`usage`]: CPU, memory, network, OOM kills, the ending signal).
//!
//! The agent runs as root with only CAP_SETUID, CAP_SETGID, CAP_SETPCAP and CAP_KILL.
//! Everything that touches the sandbox user's files, and every signal to chosen
//! processes, is done *as that user*, by a short lived child (see
//! [`proc::signal_as_sandbox`] and the `__files` helper mode) or a thread with that
//! user's filesystem identity ([`files`]), so the agent needs no CAP_DAC_OVERRIDE and the
//! kernel's own permission checks apply. The one exception is the kill of everything
//! the sandbox runs at the end of each step and in a reset: as PID 1 of the container's
//! PID namespace the agent sends that `SIGKILL` to all other processes itself
//! ([`proc::may_kill_directly`] says why CAP_KILL adds no power to CAP_SETUID's).

mod files;
mod inbox;
mod prestart;
mod proc;
mod relay;
mod seccomp;
mod spawn;
mod usage;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use isol8_protocol::agent::{
    self, ExecFailed, ExecSpec, Exited, Frame, Hello, Kind, PrestartSpec, Prestarted, ResetDone,
    ResetSpec, SignalSpec, StepPhase, Stream, StreamStats, PROTOCOL_VERSION,
};

use crate::proc::{Identity, Reaper};

/// Messages to the main thread.
enum Event {
    /// A frame from the engine.
    Frame(Frame),
    /// The engine closed our stdin (or sent garbage): shut down.
    EngineGone(String),
    /// A child was reaped: pid, raw wait status, and its peak resident set in bytes.
    Reaped(libc::pid_t, i32, u64),
    /// An output pipe reached end of file, with its final counts.
    PipeClosed(Stream, StreamStats),
    /// The watched step's process exited ([`inbox::Inbox::watch_exit`]): its `pidfd`, to
    /// reap it by (unless the reaper did first).
    Exited(OwnedFd),
}

/// The single writer of frames to the engine: the data socket, or stdout.
#[derive(Clone)]
struct Out(Arc<Mutex<Box<dyn Write + Send>>>);

impl Out {
    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(bytes)?;
        out.flush()
    }

    fn frame(&self, frame: &Frame) {
        if let Err(e) = self.send(&frame.encode()) {
            fatal(&format!("cannot write to the engine: {e}"));
        }
    }
}

/// Logs to stderr (never stdout, which carries frames).
fn log(msg: &str) {
    let _ = writeln!(io::stderr(), "isol8-agent: {msg}");
}

/// The engine is gone or the stream is corrupt: nothing sensible is left to do.
fn fatal(msg: &str) -> ! {
    log(msg);
    std::process::exit(2);
}

/// How long [`spawn_step_thread`] keeps trying while the process limit is full.
const THREAD_SLOT_WAIT: Duration = Duration::from_secs(10);

/// Starts a thread running `work` for a step that is already running. Threads count
/// against the sandbox's process limit (`pidsLimit`), which a program that forks without
/// end fills within milliseconds of its start, possibly before the agent started the
/// step's reader threads: so while `clone` says `EAGAIN`, this retries every millisecond
/// for up to [`THREAD_SLOT_WAIT`] (slots free up as the program's processes end, and the
/// timeout's kill frees them all). Ends the agent, as `thread::spawn` would, when none
/// frees up or on any other error.
fn spawn_step_thread<F: FnOnce() + Send + 'static>(work: F) {
    // A failed spawn drops its closure: the work waits here for the next attempt.
    let slot = Arc::new(Mutex::new(Some(work)));
    let deadline = Instant::now() + THREAD_SLOT_WAIT;
    loop {
        let mine = Arc::clone(&slot);
        let started = thread::Builder::new().spawn(move || {
            let work = mine.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(work) = work {
                work();
            }
        });
        match started {
            Ok(_) => return,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => fatal(&format!("cannot start a thread for the step: {e}")),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(files::HELPER_ARG) {
        std::process::exit(files::helper_main());
    }
    // First of all: every other thread and process of the sandbox starts after this.
    let seccomp_filter = seccomp::install_if_asked()
        .unwrap_or_else(|e| fatal(&format!("cannot install the seccomp filter: {e}")));
    proc::harden_self();
    let mut ident = Identity::from_env();
    // Before any thread starts, so that every thread and child inherits the empty set.
    if ident.drop_privileges {
        match proc::clear_bounding_set() {
            Ok(()) => ident.bounding_set_clear = true,
            Err(e) => log(&format!(
                "cannot empty the capability bounding set ({e}); each child clears its own"
            )),
        }
    }
    ident.kill_directly = proc::may_kill_directly(&ident);
    // SIGCHLD must be blocked before any thread starts so that only the reaper sees it.
    proc::block_sigchld();
    let mut relay = None;
    if let Ok(socket) = std::env::var(isol8_protocol::layout::EGRESS_SOCKET_ENV) {
        // Before any user code exists, so nothing else can hold the port.
        match relay::start(socket.into(), isol8_protocol::layout::EGRESS_PORT) {
            Ok(r) => relay = Some(r),
            Err(e) => log(&format!("cannot start the egress relay: {e}")),
        }
    }

    // The engine's frames come from the data socket when the engine offers one: frames
    // after the hello bypass the container runtime's stdio relay. Connected before any
    // user code exists; the engine accepts one connection and removes the socket.
    let data = std::env::var(isol8_protocol::layout::DATA_SOCKET_ENV)
        .ok()
        .and_then(
            |path| match std::os::unix::net::UnixStream::connect(&path) {
                Ok(s) => Some(s),
                Err(e) => {
                    log(&format!(
                        "cannot connect to the data socket {path} ({e}); using stdio"
                    ));
                    None
                }
            },
        );
    let data_socket = data.is_some();
    let (input, output): (OwnedFd, Box<dyn Write + Send>) =
        match data.map(|s| s.try_clone().map(|r| (r, s))) {
            Some(Ok((r, w))) => (OwnedFd::from(r), Box::new(w)),
            Some(Err(e)) => fatal(&format!("cannot use the data socket: {e}")),
            // SAFETY: the agent reads its stdin only here (children get their own).
            None => (unsafe { OwnedFd::from_raw_fd(0) }, Box::new(io::stdout())),
        };
    let (inbox, tx) = inbox::Inbox::new(input)
        .unwrap_or_else(|e| fatal(&format!("cannot create the event descriptor: {e}")));
    let reaper = Reaper::start(tx.clone());
    let out = Out(Arc::new(Mutex::new(output)));
    // Before any program runs: the baseline is what the container holds without one.
    let meter = usage::Meter::start(&ident, &reaper);
    // Counted before the hello, so before anything can connect to the relay (and after
    // the meter opened its files).
    let fd_baseline = proc::open_fds();
    // The hello always goes through stdout: it tells the engine where the rest goes.
    let hello = Frame::json(
        Kind::Hello,
        &Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            data_socket,
            seccomp_filter,
        },
    );
    let mut stdout = io::stdout();
    if let Err(e) = stdout
        .write_all(&hello.encode())
        .and_then(|()| stdout.flush())
    {
        fatal(&format!("cannot write to the engine: {e}"));
    }

    let clean_root = files::change_time(&ident.root);
    let mut agent = Agent {
        ident,
        out,
        tx,
        inbox,
        reaper,
        relay,
        clean_root,
        fd_baseline,
        meter,
        rss_peak: 0,
        waiting: None,
        discarded: Vec::new(),
    };
    loop {
        match agent.inbox.recv() {
            Event::Frame(f) if f.kind == Kind::Exec => match f.parse::<ExecSpec>() {
                Ok(spec) => agent.execute(spec),
                Err(e) => agent.fail(&format!("invalid exec request: {e}")),
            },
            Event::Frame(f) if f.kind == Kind::Reset => match f.parse::<ResetSpec>() {
                Ok(spec) => agent.reset(&spec),
                Err(e) => agent.reset_done(Some(format!("invalid reset request: {e}"))),
            },
            Event::Frame(f) if f.kind == Kind::Prestart => match f.parse::<PrestartSpec>() {
                Ok(spec) => agent.prestart(spec),
                Err(e) => log(&format!("invalid prestart request: {e}")),
            },
            Event::Frame(f) => log(&format!("ignoring {:?} frame: nothing is running", f.kind)),
            Event::EngineGone(why) => agent.shutdown(&why),
            Event::Reaped(pid, ..) => agent.reaped_while_idle(pid),
            Event::PipeClosed(..) | Event::Exited(_) => {}
        }
    }
}

struct Agent {
    ident: Identity,
    out: Out,
    /// Sends to the main thread's inbox (for the pipe readers).
    tx: inbox::Notifier,
    /// Frames and the other threads' messages ([`inbox`]).
    inbox: inbox::Inbox,
    reaper: Reaper,
    /// The egress relay of a `filtered` sandbox.
    relay: Option<relay::Relay>,
    /// [`files::change_time`] of the sandbox root when it was last known clean.
    clean_root: Option<(i64, i64)>,
    /// Descriptors the agent held when it started serving; a reset fails if it holds more.
    fd_baseline: usize,
    /// Measures executions and holds programs to their memory limit.
    meter: usage::Meter,
    /// Highest `ru_maxrss` of the processes reaped during the current execution, bytes.
    rss_peak: u64,
    /// The pre-started interpreter waiting for the next execution ([`prestart`]).
    waiting: Option<prestart::Waiting>,
    /// Pre-started interpreters killed unused whose exit is still to be reaped: not the
    /// programs of any execution, so their exit and memory count for none.
    discarded: Vec<libc::pid_t>,
}

/// Where the IPC namespace's POSIX message queues appear (Docker mounts it in every
/// container with a private IPC namespace).
const MQUEUE_DIR: &str = isol8_protocol::layout::MQUEUE_DIR;

/// State of the step being run.
struct Running {
    pid: libc::pid_t,
    status: Option<i32>,
    /// When its wait status came (the program's end, for `durationMs`).
    ended: Option<Instant>,
    stdin: Option<File>,
    open_pipes: usize,
}

/// How a step ended.
struct StepEnd {
    /// Exit code (128+N for signal N; 137 after the timeout).
    code: i32,
    /// The timeout fired.
    timed_out: bool,
    /// The signal that ended the step's process (9 after the timeout).
    signal: Option<i32>,
    /// From starting the step (or handing it to a pre-started interpreter) until its
    /// process ended or the timeout fired: the killing of what it left and the draining
    /// of its pipes are the agent's time, not the program's.
    took: Duration,
}

impl Agent {
    /// Starts a pre-started interpreter (replacing one already waiting, which is killed)
    /// and answers once it waits, or could not be started.
    fn prestart(&mut self, spec: PrestartSpec) {
        self.discard_waiting();
        let problem = match prestart::start(&self.ident, &self.reaper, spec) {
            Ok(w) => {
                self.waiting = Some(w);
                None
            }
            Err(e) => {
                let problem = format!("cannot pre-start an interpreter: {e}");
                log(&problem);
                Some(problem)
            }
        };
        self.out.frame(&Frame::json(
            Kind::Prestarted,
            &Prestarted {
                ok: problem.is_none(),
                problem,
            },
        ));
    }

    /// Kills the waiting interpreter, if any, unused.
    fn discard_waiting(&mut self) {
        if let Some(w) = self.waiting.take() {
            self.discarded.push(w.discard(&self.ident, &self.reaper));
        }
    }

    /// A process ended between executions: a discarded interpreter, or the waiting one
    /// (which then cannot serve: the next execution starts fresh).
    fn reaped_while_idle(&mut self, pid: libc::pid_t) {
        if self.forget_discarded(pid) {
            return;
        }
        if self.waiting.as_ref().is_some_and(|w| w.pid == pid) {
            log("the pre-started interpreter ended while it waited");
            self.waiting = None;
        }
    }

    /// True (and forgotten) when `pid` is a discarded interpreter.
    fn forget_discarded(&mut self, pid: libc::pid_t) -> bool {
        let before = self.discarded.len();
        self.discarded.retain(|p| *p != pid);
        self.discarded.len() != before
    }

    fn shutdown(&mut self, why: &str) -> ! {
        log(&format!("shutting down: {why}"));
        proc::kill_all(&self.ident, &self.reaper);
        std::process::exit(0);
    }

    /// Returns the sandbox to the state of a fresh one, so the next execution finds
    /// nothing of this one: no process (of any uid, in a container), no relayed
    /// connection, no file in the writable directories, no POSIX message queue, no System
    /// V IPC object, nothing attached to the sandbox root, no extra descriptor held by the
    /// agent. Reports what was left, if anything; the engine then destroys the sandbox.
    fn reset(&mut self, spec: &ResetSpec) {
        // A reset always follows an execution, which consumed or discarded it; whatever
        // the order of frames, a reset never leaves one behind.
        self.discard_waiting();
        let whole = proc::owns_namespaces();
        let mut problems = Vec::new();
        // Every step already ends with a kill of everything the sandbox user runs, so
        // usually nothing is left; verify, and kill again until nothing is.
        let mut processes = proc::remaining(&self.ident);
        for attempt in 0..20 {
            if processes.alive.is_empty() {
                break;
            }
            proc::kill_all(&self.ident, &self.reaper);
            // Processes of another uid (only root's can exist: the agent's own kind) are
            // killed by the agent itself. A direct kill_all already reached them; with
            // the helper, this fails harmlessly for the sandbox user's, which the helper
            // took care of.
            if whole && !self.ident.kill_directly {
                for pid in &processes.alive {
                    // SAFETY: kill with integer arguments.
                    unsafe { libc::kill(*pid, libc::SIGKILL) };
                }
            }
            // Until they have ended (a holder of the teardown library is freeing the
            // program's memory), a little longer at each attempt.
            proc::wait_ended(&processes.alive, Duration::from_millis(attempt + 1));
            processes = proc::remaining(&self.ident);
        }
        let no_processes = processes.alive.is_empty();
        if !no_processes {
            problems.push(format!("processes survived: {:?}", processes.alive));
        }
        // Connections relayed for executions that are over.
        if let Some(relay) = &self.relay {
            if let Err(e) = relay.close_all() {
                problems.push(e);
            }
        }
        let mut wipe = spec.wipe.clone();
        if whole {
            // Message queues live in the container's IPC namespace and outlive processes;
            // they can only be listed (and so removed) where their filesystem is mounted.
            if files::is_mqueue_fs(MQUEUE_DIR) {
                if !wipe.iter().any(|d| d == MQUEUE_DIR) {
                    wipe.push(MQUEUE_DIR.to_string());
                }
            } else {
                problems.push(format!(
                    "cannot check POSIX message queues: {MQUEUE_DIR} is not an mqueue mount"
                ));
            }
        }
        if files::needs_wipe(&self.ident, &wipe, self.clean_root) {
            if let Err(e) = files::reset_all(&self.ident, &self.reaper, &wipe, no_processes) {
                problems.push(e);
            }
            if whole {
                // The helper removed what the sandbox user created or owns; an object
                // handed to root with IPC_SET is the agent's to remove.
                files::remove_ipc_of(0);
            }
            self.clean_root = files::change_time(&self.ident.root);
        }
        // The IPC namespace is the container's own: nothing may remain in it. (Outside a
        // container only the sandbox user's objects are the agent's business.)
        let uid = self.ident.uid;
        let left: Vec<String> = files::ipc_objects()
            .into_iter()
            .filter(|o| whole || o.uid == uid || o.cuid == uid)
            .map(|o| o.to_string())
            .collect();
        if !left.is_empty() {
            problems.push(format!("System V IPC objects remain: {}", left.join(", ")));
        }
        // A killed process keeps its /proc entry until the reaper thread collects it,
        // which may not have run yet: the next execution must not find even that. With
        // nothing alive no process can end any more, so an empty list stays empty.
        if no_processes {
            let deadline = Instant::now() + Duration::from_secs(1);
            let mut pause = Duration::from_micros(100);
            while !processes.ended.is_empty() && Instant::now() < deadline {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
                processes = proc::remaining(&self.ident);
            }
            if !processes.ended.is_empty() {
                problems.push(format!("ended processes not reaped: {:?}", processes.ended));
            }
        }
        if let Err(e) = self.check_descriptors() {
            problems.push(e);
        }
        self.reset_done(if problems.is_empty() {
            None
        } else {
            Some(problems.join("; "))
        });
    }

    /// Fails if the agent holds more descriptors than when it started serving (a pipe or
    /// connection of a finished execution). Threads that are about to drop one (a stdin
    /// writer seeing EPIPE) get a few milliseconds.
    fn check_descriptors(&self) -> Result<(), String> {
        let mut open = proc::open_fds();
        for attempt in 0..10 {
            if open <= self.fd_baseline {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(attempt + 1));
            open = proc::open_fds();
        }
        Err(format!(
            "the agent holds {open} file descriptors, {} at start",
            self.fd_baseline
        ))
    }

    fn reset_done(&self, problem: Option<String>) {
        self.out.frame(&Frame::json(
            Kind::ResetDone,
            &ResetDone {
                ok: problem.is_none(),
                problem,
            },
        ));
    }

    fn fail(&self, message: &str) {
        self.out.frame(&Frame::json(
            Kind::ExecFailed,
            &ExecFailed {
                message: message.to_string(),
            },
        ));
    }

    fn execute(&mut self, spec: ExecSpec) {
        // The waiting interpreter serves this execution's only step, or nobody: it is
        // killed before anything of the execution (even a file) is touched.
        let mut warm = match self.waiting.take() {
            Some(w)
                if spec.protocol == PROTOCOL_VERSION
                    && spec.steps.len() == 1
                    && spec.steps[0].phase == StepPhase::Code
                    && w.spec().serves(
                        &spec.steps[0].argv,
                        &spec.env,
                        &spec.cwd,
                        spec.stdin.is_some() || spec.interactive,
                    ) =>
            {
                Some(w)
            }
            other => {
                self.waiting = other;
                self.discard_waiting();
                None
            }
        };
        if spec.protocol != PROTOCOL_VERSION {
            return self.fail(&format!(
                "engine speaks protocol {} but this agent speaks {PROTOCOL_VERSION}",
                spec.protocol
            ));
        }
        // No steps is a pure file transfer (put_file / get_file); nothing at all is a
        // mistake.
        if spec.steps.is_empty() && spec.files.is_empty() && spec.output_paths.is_empty() {
            return self.fail("nothing to run");
        }
        if let Err(e) = files::write_all(&self.ident, &spec.cwd, &spec.files) {
            return self.fail(&e);
        }
        let deadline = Instant::now() + Duration::from_millis(spec.timeout_ms);
        let mut stats = [StreamStats::default(); 2];
        let mut exited = Exited::default();
        // A pure file transfer runs nothing: nothing to measure or watch.
        let runs = !spec.steps.is_empty();
        let begun = self.meter.begin(
            runs && spec.measure_usage,
            spec.memory_limit_bytes.filter(|_| runs),
        );
        self.rss_peak = 0;
        for step in &spec.steps {
            let outcome = self.run_step(&spec, step, deadline, &mut stats, warm.take());
            exited.phase = Some(step.phase);
            exited.steps_run += 1;
            let took = match outcome {
                Ok(end) => {
                    exited.exit_code = end.code;
                    exited.timed_out = end.timed_out;
                    exited.signal = end.signal;
                    end.took
                }
                Err(e) => {
                    self.meter.end(begun, self.rss_peak);
                    return self.fail(&e);
                }
            };
            if step.phase == StepPhase::Code || exited.duration_us == 0 {
                exited.duration_ms = took.as_millis() as u64;
                exited.duration_us = took.as_micros() as u64;
            }
            if exited.timed_out || (step.phase == StepPhase::Setup && exited.exit_code != 0) {
                break;
            }
        }
        let measured = self.meter.end(begun, self.rss_peak);
        exited.usage = measured.usage;
        exited.oom_killed = measured.oom_killed;
        exited.stdout = stats[0];
        exited.stderr = stats[1];
        if !spec.output_paths.is_empty() {
            let (files, errors) =
                files::read_all(&self.ident, &spec.output_paths, spec.max_read_bytes);
            exited.files = files;
            exited.file_errors = errors;
        }
        self.out.frame(&Frame::json(Kind::Exited, &exited));
    }

    /// Runs one step (in `warm`, the pre-started interpreter, when given); returns how it
    /// ended.
    fn run_step(
        &mut self,
        spec: &ExecSpec,
        step: &agent::Step,
        deadline: Instant,
        stats: &mut [StreamStats; 2],
        warm: Option<prestart::Waiting>,
    ) -> Result<StepEnd, String> {
        let feeds_stdin =
            step.phase == StepPhase::Code && (spec.stdin.is_some() || spec.interactive);
        let stdin_data = match (&spec.stdin, step.phase) {
            (Some(b64), StepPhase::Code) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("stdin is not valid base64: {e}"))?,
            ),
            _ => None,
        };
        let begun = Instant::now();
        let code = step.argv.last().map(String::as_str).unwrap_or("");
        let handed = warm.and_then(|w| match w.hand_over(&spec.env, code, feeds_stdin) {
            Ok(h) => Some(h),
            Err(failed) => {
                let (w, e) = *failed;
                log(&format!("cannot hand the program to the pre-started interpreter ({e}); starting it fresh"));
                self.discarded.push(w.discard(&self.ident, &self.reaper));
                None
            }
        });
        let started = match handed {
            Some(h) => h,
            None => {
                let env = prestart::with_preload(&spec.env, step.preload.as_deref());
                let child = spawn::spawn_step(
                    &self.ident,
                    &step.argv,
                    &env,
                    &spec.cwd,
                    feeds_stdin,
                    3,
                    &[],
                )
                .map_err(|e| {
                    format!(
                        "cannot start `{}`: {e}",
                        step.argv.first().map(String::as_str).unwrap_or("")
                    )
                })?;
                // The reaper collects it (its exit reaches the main thread).
                prestart::Handed {
                    pid: child.pid,
                    stdin: child.stdin.map(File::from),
                    stdout: File::from(child.stdout),
                    stderr: File::from(child.stderr),
                }
            }
        };
        // Its exit wakes this thread directly; the reaper reports it too if it is first.
        self.inbox.watch_exit(proc::pidfd(started.pid).ok());
        let mut run = Running {
            pid: started.pid,
            status: None,
            ended: None,
            stdin: started.stdin,
            open_pipes: 2,
        };
        let cap = spec.max_output_bytes;
        self.spawn_pipe_reader(started.stdout, Stream::Stdout, step.phase, cap, stats[0]);
        self.spawn_pipe_reader(started.stderr, Stream::Stderr, step.phase, cap, stats[1]);
        if let Some(data) = stdin_data {
            if let Some(mut stdin) = run.stdin.take() {
                let keep_open = spec.interactive;
                let (tx_back, rx_back) = mpsc::channel();
                spawn_step_thread(move || {
                    let _ = stdin.write_all(&data);
                    if keep_open {
                        let _ = tx_back.send(stdin);
                    }
                });
                if keep_open {
                    run.stdin = rx_back.recv().ok();
                }
            }
        }

        let mut timed_out = false;
        while run.status.is_none() {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                break;
            }
            match self.inbox.recv_timeout(deadline - now) {
                Some(ev) => self.handle(ev, &mut run, stats),
                None => {
                    timed_out = true;
                    break;
                }
            }
        }
        let took = run.ended.unwrap_or_else(Instant::now) - begun;
        run.stdin = None;
        // Nothing of this step may outlive it: background processes, double-forked
        // daemons that called setsid, processes ignoring SIGTERM. When the step's process
        // was the only one, there is nothing to kill (and no helper to start for it).
        let killed = !proc::alone();
        if killed {
            proc::kill_all(&self.ident, &self.reaper);
        }
        while run.status.is_none() || run.open_pipes > 0 {
            match self.inbox.recv_timeout(Duration::from_secs(10)) {
                Some(ev) => self.handle(ev, &mut run, stats),
                None => {
                    // Something holds a pipe open that kill_all could not reach.
                    log("step did not wind down within 10 s after kill");
                    proc::kill_all(&self.ident, &self.reaper);
                }
            }
        }
        // A killed process is a zombie until the reaper thread collects it, and the next
        // step (a session's has no reset before it) must not find even its /proc entry.
        if killed && !proc::wait_alone(Duration::from_secs(1)) {
            log("processes of the step were not gone within 1 s after kill");
        }
        self.inbox.watch_exit(None);
        let status = run.status.unwrap_or(0);
        Ok(StepEnd {
            code: if timed_out {
                137
            } else {
                proc::exit_code(status)
            },
            timed_out,
            signal: if timed_out {
                Some(libc::SIGKILL)
            } else {
                proc::end_signal(status)
            },
            took,
        })
    }

    fn handle(&mut self, ev: Event, run: &mut Running, stats: &mut [StreamStats; 2]) {
        match ev {
            Event::Reaped(pid, _, _) if self.forget_discarded(pid) => {}
            Event::Reaped(pid, status, rss) => {
                self.rss_peak = self.rss_peak.max(rss);
                if pid == run.pid {
                    run.status = Some(status);
                    run.ended = Some(Instant::now());
                }
            }
            // Reaped here first: the same as the reaper's report of it.
            Event::Exited(pidfd) => {
                if let Some((status, rss)) = proc::reap_pidfd(&pidfd) {
                    self.handle(Event::Reaped(run.pid, status, rss), run, stats);
                }
            }
            Event::PipeClosed(stream, s) => {
                stats[stream as usize - 1] = s;
                run.open_pipes = run.open_pipes.saturating_sub(1);
            }
            Event::EngineGone(why) => self.shutdown(&why),
            Event::Frame(f) => match f.kind {
                Kind::Stdin => {
                    if let Some(stdin) = run.stdin.as_mut() {
                        if stdin.write_all(&f.payload).is_err() {
                            run.stdin = None;
                        }
                    }
                }
                Kind::StdinClose => run.stdin = None,
                Kind::Signal => match f.parse::<SignalSpec>() {
                    Ok(s) => proc::signal_as_sandbox(&self.ident, &self.reaper, -run.pid, s.signal),
                    Err(e) => log(&format!("bad signal frame: {e}")),
                },
                other => log(&format!("ignoring {other:?} frame during an execution")),
            },
        }
    }

    /// Reads one output pipe, forwarding at most `cap` bytes per execution (the counts
    /// carry over between steps), and reports the totals when the pipe closes.
    fn spawn_pipe_reader(
        &self,
        mut pipe: impl io::Read + Send + 'static,
        stream: Stream,
        phase: StepPhase,
        cap: u64,
        start: StreamStats,
    ) {
        let out = self.out.clone();
        let tx = self.tx.clone();
        spawn_step_thread(move || {
            let mut stats = start;
            let mut buf = vec![0u8; agent::OUTPUT_CHUNK];
            let mut frame = Vec::with_capacity(agent::OUTPUT_CHUNK + agent::HEADER_LEN + 2);
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let (forward, truncated) = cap_chunk(stats.total_bytes, n as u64, cap);
                stats.total_bytes += n as u64;
                stats.truncated |= truncated;
                if forward > 0 {
                    frame.clear();
                    agent::encode_output(stream, phase, &buf[..forward as usize], &mut frame);
                    if let Err(e) = out.send(&frame) {
                        fatal(&format!("cannot write to the engine: {e}"));
                    }
                }
            }
            // Closed before it is reported: once the step has seen both pipes close, the
            // reset that may follow at once finds no descriptor of it still open (and
            // need not wait for this thread to get the CPU back).
            drop(pipe);
            let _ = tx.send(Event::PipeClosed(stream, stats));
        });
    }
}

/// How many of `n` new bytes may be forwarded when `already` bytes were seen before,
/// and whether some are dropped.
fn cap_chunk(already: u64, n: u64, cap: u64) -> (u64, bool) {
    let room = cap.saturating_sub(already);
    (n.min(room), n > room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_cap_cuts_exactly_at_the_limit() {
        assert_eq!(cap_chunk(0, 10, 100), (10, false));
        assert_eq!(cap_chunk(95, 10, 100), (5, true));
        assert_eq!(cap_chunk(100, 10, 100), (0, true));
        assert_eq!(cap_chunk(200, 10, 100), (0, true));
        assert_eq!(cap_chunk(90, 10, 100), (10, false));
    }

    #[test]
    fn a_step_thread_runs_its_work_once() {
        let (tx, rx) = mpsc::channel();
        spawn_step_thread(move || tx.send(thread::current().id()).expect("send"));
        let ran_on = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the work ran");
        assert_ne!(ran_on, thread::current().id());
        // The sender went with the work: nothing else will ever come.
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }
}
