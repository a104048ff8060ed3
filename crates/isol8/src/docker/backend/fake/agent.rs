//! The agent of a fake container: it speaks the real frame protocol
//! ([`isol8_protocol::agent`]) over the container's in-process pipes — hello, `Exec`
//! with its files, steps, stdin, timeout, output cap and output paths, `Stdin`,
//! `StdinClose` and `Signal` during a run, `Reset` — and runs *scripts* instead of
//! programs.
//!
//! The script language it runs is described in the parent module's documentation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use isol8_protocol::agent::{
    self, AgentUsage, ExecFailed, ExecSpec, Exited, Frame, FrameDecoder, Hello, Kind, ResetDone,
    ResetSpec, SignalSpec, StepPhase, Stream, StreamStats, OUTPUT_CHUNK, PROTOCOL_VERSION,
};
use isol8_protocol::layout::WRITABLE_DIRS;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::pipes::Chunk;
use super::{Daemon, HelloMode, ResetMode};

/// A fake container's file system: path → content.
pub(super) type Files = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// What the agent of one container works with.
pub(super) struct Agent {
    pub(super) id: String,
    pub(super) daemon: Daemon,
    /// Chunks of the container's stdout/stderr, to the attached engine.
    pub(super) out: mpsc::Sender<Chunk>,
    /// Frames the engine wrote to the container's stdin.
    pub(super) inbox: mpsc::Receiver<Frame>,
    pub(super) files: Files,
    /// True while the container is paused: the agent neither reads nor writes.
    pub(super) paused: watch::Receiver<bool>,
    /// The container's environment asked for the strict seccomp filter (the fake has
    /// none to install; it answers as the real agent does).
    pub(super) seccomp_filter: bool,
}

/// How a step (or the whole run) ended.
enum Ending {
    Code(i32),
    /// The container died; the agent stops.
    Died,
    /// The agent stops answering.
    Freeze,
}

/// Reads frames from the container's stdin into the agent's inbox until the pipe ends.
pub(super) async fn read_stdin(mut stdin: impl AsyncRead + Unpin, inbox: mpsc::Sender<Frame>) {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => decoder.push(&buf[..n]),
        }
        while let Ok(Some(frame)) = decoder.next_frame() {
            if inbox.send(frame).await.is_err() {
                return;
            }
        }
    }
}

/// Unescapes `\n`, `\t` and `\\`.
fn unescape(text: &str) -> String {
    text.replace("\\n", "\n")
        .replace("\\t", "\t")
        .replace("\\\\", "\\")
}

/// The script a step runs, or `None` for an installer.
fn script_of(argv: &[String], files: &Files) -> Option<String> {
    if argv == crate::prepare::image_setup_argv() {
        // A custom image's setup script: the file's content if the test put one there.
        let files = files.lock().ok()?;
        let script = files.get(crate::IMAGE_SETUP_SCRIPT);
        return Some(script.map_or_else(String::new, |c| String::from_utf8_lossy(c).into_owned()));
    }
    // `-p`: the agent runtime's prompt is its script here.
    if let Some(i) = argv
        .iter()
        .position(|a| a == "-c" || a == "-e" || a == "-p")
    {
        return argv.get(i + 1).cloned();
    }
    let path = argv.last()?;
    let files = files.lock().ok()?;
    files
        .get(path)
        .map(|c| String::from_utf8_lossy(c).into_owned())
}

/// Output of one run: per-stream counts against the cap, and what its scripts said the
/// run should report (usage figures, an OOM kill, a fatal signal).
struct Counts {
    cap: u64,
    stats: [StreamStats; 2],
    usage: Option<AgentUsage>,
    oom_killed: bool,
    signal: Option<i32>,
}

impl Agent {
    /// Says hello, then serves frames until the container ends.
    pub(super) async fn serve(mut self) {
        self.daemon.started_gate().await;
        let mode = self.daemon.hello_mode();
        match mode {
            HelloMode::Normal | HelloMode::NoSeccompFilter => {}
            HelloMode::Silent => return std::future::pending().await,
            HelloMode::WrongProtocol => {
                let hello = Hello {
                    protocol: PROTOCOL_VERSION + 1,
                    agent_version: "fake".into(),
                    data_socket: false,
                    seccomp_filter: self.seccomp_filter,
                };
                self.send_frame(&Frame::json(Kind::Hello, &hello)).await;
                return std::future::pending().await;
            }
            HelloMode::DieAtStart => {
                self.send(Chunk::Stderr(b"agent: cannot start\n".to_vec()))
                    .await;
                self.daemon.die(&self.id, 1, false);
                return std::future::pending().await;
            }
        }
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: "fake".into(),
            // The fake daemon shares no files with the engine: stdio only.
            data_socket: false,
            seccomp_filter: self.seccomp_filter && mode != HelloMode::NoSeccompFilter,
        };
        self.send_frame(&Frame::json(Kind::Hello, &hello)).await;
        loop {
            let Some(frame) = self.next_frame().await else {
                // Stdin closed: the container lives on until it is removed.
                return std::future::pending().await;
            };
            match frame.kind {
                Kind::Exec => {
                    let Ok(spec) = frame.parse::<ExecSpec>() else {
                        self.failed("malformed exec request").await;
                        continue;
                    };
                    self.daemon.count_exec(&self.id);
                    match self.exec(&spec).await {
                        Ending::Code(_) => {}
                        Ending::Died | Ending::Freeze => return std::future::pending().await,
                    }
                }
                Kind::Reset => {
                    let wipe = frame
                        .parse::<ResetSpec>()
                        .map(|r| r.wipe)
                        .unwrap_or_default();
                    if !self.reset(&wipe).await {
                        return std::future::pending().await;
                    }
                }
                // Controls outside a run have nothing to act on.
                _ => {}
            }
        }
    }

    /// Waits while the container is paused.
    async fn thawed(&mut self) {
        let _ = self.paused.wait_for(|p| !*p).await;
    }

    /// The next frame the engine sent, once the container is not paused.
    async fn next_frame(&mut self) -> Option<Frame> {
        let frame = self.inbox.recv().await;
        self.thawed().await;
        frame
    }

    async fn send(&mut self, chunk: Chunk) {
        self.thawed().await;
        let _ = self.out.send(chunk).await;
    }

    async fn send_frame(&mut self, frame: &Frame) {
        self.send(Chunk::Stdout(frame.encode())).await;
    }

    async fn failed(&mut self, message: &str) {
        let failed = ExecFailed {
            message: message.to_string(),
        };
        self.send_frame(&Frame::json(Kind::ExecFailed, &failed))
            .await;
    }

    /// Writes the request's files, runs its steps within its timeout, reads its output
    /// paths back and reports `Exited` (or `ExecFailed`).
    async fn exec(&mut self, spec: &ExecSpec) -> Ending {
        for f in &spec.files {
            if !WRITABLE_DIRS
                .iter()
                .any(|d| f.path.starts_with(&format!("{d}/")))
            {
                self.failed(&format!(
                    "cannot write {}: outside the writable directories",
                    f.path
                ))
                .await;
                return Ending::Code(0);
            }
            let Ok(content) = base64::engine::general_purpose::STANDARD.decode(&f.content) else {
                self.failed(&format!("cannot write {}: invalid base64", f.path))
                    .await;
                return Ending::Code(0);
            };
            if let Ok(mut files) = self.files.lock() {
                files.insert(f.path.clone(), content);
            }
        }
        let code_script = spec
            .steps
            .iter()
            .rfind(|s| s.phase == StepPhase::Code)
            .and_then(|s| script_of(&s.argv, &self.files));
        if let Some(message) = code_script
            .as_deref()
            .and_then(|s| s.lines().next())
            .and_then(|l| l.trim().strip_prefix("refuse "))
        {
            self.failed(message).await;
            return Ending::Code(0);
        }
        let stdin = spec
            .stdin
            .as_ref()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .unwrap_or_default();
        let mut counts = Counts {
            cap: spec.max_output_bytes,
            stats: Default::default(),
            usage: None,
            oom_killed: false,
            signal: None,
        };
        let started = Instant::now();
        let deadline = started + std::time::Duration::from_millis(spec.timeout_ms);
        let mut exited = Exited::default();
        let mut code_started = None;
        for step in &spec.steps {
            exited.steps_run += 1;
            exited.phase = Some(step.phase);
            if step.phase == StepPhase::Code {
                code_started = Some(Instant::now());
            }
            let stdin = if step.phase == StepPhase::Code {
                Some(stdin.clone())
            } else {
                None
            };
            let run = self.step(step, spec, stdin, &mut counts);
            let ending = match tokio::time::timeout_at(deadline, run).await {
                Ok(ending) => ending,
                Err(_) => {
                    exited.timed_out = true;
                    Ending::Code(137)
                }
            };
            match ending {
                Ending::Code(code) => exited.exit_code = code,
                other => return other,
            }
            if exited.timed_out || (step.phase == StepPhase::Setup && exited.exit_code != 0) {
                break;
            }
        }
        exited.duration_ms = code_started.unwrap_or(started).elapsed().as_millis() as u64;
        exited.stdout = counts.stats[0];
        exited.stderr = counts.stats[1];
        exited.usage = counts.usage.filter(|_| spec.measure_usage);
        exited.oom_killed = counts.oom_killed;
        exited.signal = if exited.timed_out {
            Some(9)
        } else {
            counts.signal
        };
        if let Ok(files) = self.files.lock() {
            for path in &spec.output_paths {
                match files.get(path) {
                    Some(c) if c.len() as u64 <= spec.max_read_bytes => {
                        let b64 = base64::engine::general_purpose::STANDARD.encode(c);
                        exited.files.insert(path.clone(), b64);
                    }
                    Some(_) => {
                        exited
                            .file_errors
                            .insert(path.clone(), "larger than the read limit".into());
                    }
                    None => {
                        exited.file_errors.insert(path.clone(), "not found".into());
                    }
                }
            }
        }
        self.send_frame(&Frame::json(Kind::Exited, &exited)).await;
        Ending::Code(exited.exit_code)
    }

    /// Writes program output, counted against the cap (what is over it is dropped).
    async fn write(&mut self, stream: Stream, phase: StepPhase, data: &[u8], counts: &mut Counts) {
        for piece in data.chunks(OUTPUT_CHUNK) {
            let i = (stream as usize) - 1;
            let stats = &mut counts.stats[i];
            let room = counts.cap.saturating_sub(stats.total_bytes) as usize;
            stats.total_bytes += piece.len() as u64;
            if room < piece.len() {
                stats.truncated = true;
            }
            let forward = &piece[..room.min(piece.len())];
            if forward.is_empty() {
                continue;
            }
            let mut frame = Vec::with_capacity(forward.len() + agent::HEADER_LEN + 2);
            agent::encode_output(stream, phase, forward, &mut frame);
            self.send(Chunk::Stdout(frame)).await;
        }
    }

    /// Waits for `until` (or forever), while handling the run's controls: a signal ends
    /// the step (128 + its number), stdin is kept for `cat`.
    async fn idle(&mut self, until: Option<Instant>, stdin: &mut Option<Vec<u8>>) -> Option<i32> {
        loop {
            let sleep = async {
                match until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => return None,
                frame = self.next_frame() => match frame {
                    Some(f) if f.kind == Kind::Signal => {
                        let signal = f.parse::<SignalSpec>().map(|s| s.signal).unwrap_or(15);
                        return Some(128 + signal);
                    }
                    Some(f) if f.kind == Kind::Stdin => {
                        stdin.get_or_insert_with(Vec::new).extend_from_slice(&f.payload);
                    }
                    Some(_) => {}
                    None => std::future::pending::<()>().await,
                },
            }
        }
    }

    /// Runs one step.
    async fn step(
        &mut self,
        step: &agent::Step,
        spec: &ExecSpec,
        mut stdin: Option<Vec<u8>>,
        counts: &mut Counts,
    ) -> Ending {
        let phase = step.phase;
        let Some(script) = script_of(&step.argv, &self.files) else {
            // An installer.
            let failing: Vec<&String> =
                step.argv.iter().filter(|a| a.starts_with("fail")).collect();
            if let Some(p) = failing.first() {
                let line = format!("ERROR: no matching distribution found for {p}\n");
                self.write(Stream::Stderr, phase, line.as_bytes(), counts)
                    .await;
                return Ending::Code(1);
            }
            let line = format!("installed {}\n", step.argv.len());
            self.write(Stream::Stdout, phase, line.as_bytes(), counts)
                .await;
            return Ending::Code(0);
        };
        let interactive = spec.interactive && phase == StepPhase::Code;
        for line in script.lines().map(str::trim) {
            let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
            match cmd {
                "" | "#" => {}
                "echo" => {
                    let text = format!("{}\n", unescape(arg));
                    self.write(Stream::Stdout, phase, text.as_bytes(), counts)
                        .await;
                }
                "print" => {
                    let text = unescape(arg);
                    self.write(Stream::Stdout, phase, text.as_bytes(), counts)
                        .await;
                }
                "err" => {
                    let text = format!("{}\n", unescape(arg));
                    self.write(Stream::Stderr, phase, text.as_bytes(), counts)
                        .await;
                }
                "log" => {
                    // The agent's own stderr (its log), not the program's output.
                    let text = format!("{}\n", unescape(arg));
                    self.send(Chunk::Stderr(text.into_bytes())).await;
                }
                "exit" => return Ending::Code(arg.parse().unwrap_or(1)),
                "sleep" => {
                    let ms = arg.parse().unwrap_or(0);
                    let until = Instant::now() + std::time::Duration::from_millis(ms);
                    if let Some(code) = self.idle(Some(until), &mut stdin).await {
                        return Ending::Code(code);
                    }
                }
                "hang" | "wait-signal" => {
                    if let Some(code) = self.idle(None, &mut stdin).await {
                        return Ending::Code(code);
                    }
                }
                "freeze" => return Ending::Freeze,
                "flood" => {
                    let n: usize = arg.parse().unwrap_or(0);
                    let chunk = vec![b'x'; OUTPUT_CHUNK];
                    let mut left = n;
                    while left > 0 {
                        let take = left.min(OUTPUT_CHUNK);
                        self.write(Stream::Stdout, phase, &chunk[..take], counts)
                            .await;
                        left -= take;
                    }
                }
                "spew" => loop {
                    self.write(Stream::Stdout, phase, b"y\n", counts).await;
                    tokio::task::yield_now().await;
                },
                "cat" => {
                    let mut sent = 0;
                    loop {
                        let have = stdin.clone().unwrap_or_default();
                        if have.len() > sent {
                            self.write(Stream::Stdout, phase, &have[sent..], counts)
                                .await;
                            sent = have.len();
                        }
                        if !interactive {
                            break;
                        }
                        match self.next_frame().await {
                            Some(f) if f.kind == Kind::Stdin => stdin
                                .get_or_insert_with(Vec::new)
                                .extend_from_slice(&f.payload),
                            Some(f) if f.kind == Kind::StdinClose => break,
                            Some(f) if f.kind == Kind::Signal => {
                                let n = f.parse::<SignalSpec>().map(|s| s.signal).unwrap_or(15);
                                return Ending::Code(128 + n);
                            }
                            Some(_) => {}
                            None => return std::future::pending().await,
                        }
                    }
                }
                "env" => {
                    let value = spec.env.get(arg).cloned().unwrap_or_default();
                    let text = format!("{value}\n");
                    self.write(Stream::Stdout, phase, text.as_bytes(), counts)
                        .await;
                }
                "write" => {
                    let (path, text) = arg.split_once(' ').unwrap_or((arg, ""));
                    if let Ok(mut files) = self.files.lock() {
                        files.insert(path.to_string(), unescape(text).into_bytes());
                    }
                }
                "read" => {
                    let content = self.files.lock().ok().and_then(|f| f.get(arg).cloned());
                    match content {
                        Some(c) => self.write(Stream::Stdout, phase, &c, counts).await,
                        None => {
                            let text = format!("{arg}: no such file\n");
                            self.write(Stream::Stderr, phase, text.as_bytes(), counts)
                                .await;
                            return Ending::Code(1);
                        }
                    }
                }
                "die" | "oom" => {
                    self.daemon.die(&self.id, 137, cmd == "oom");
                    return Ending::Died;
                }
                "refuse" => {}
                "usage" => {
                    let n: Vec<u64> = arg
                        .split_whitespace()
                        .map(|x| x.parse().unwrap_or(0))
                        .collect();
                    let at = |i: usize| n.get(i).copied().unwrap_or(0);
                    counts.usage = Some(AgentUsage {
                        cpu_time_us: at(0),
                        wall_time_us: at(1),
                        memory_bytes: at(2),
                        peak_memory_bytes: at(3),
                        network_rx_bytes: at(4),
                        network_tx_bytes: at(5),
                    });
                }
                "oom-kill" => {
                    counts.oom_killed = true;
                    counts.signal = Some(9);
                    return Ending::Code(137);
                }
                "kill-self" => {
                    let n: i32 = arg.parse().unwrap_or(9);
                    counts.signal = Some(n);
                    return Ending::Code(128 + n);
                }
                other => {
                    let text = format!("{other}: command not found\n");
                    self.write(Stream::Stderr, phase, text.as_bytes(), counts)
                        .await;
                    return Ending::Code(127);
                }
            }
        }
        Ending::Code(0)
    }

    /// Answers a reset as the daemon's [`ResetMode`] says. False when the agent stops
    /// answering (it hangs, or the container died).
    async fn reset(&mut self, wipe: &[String]) -> bool {
        self.daemon.count_reset(&self.id);
        self.daemon.reset_gate().await;
        let done = match self.daemon.reset_mode() {
            ResetMode::Clean => {
                if let Ok(mut files) = self.files.lock() {
                    files.retain(|path, _| {
                        !wipe.iter().any(|dir| path.starts_with(&format!("{dir}/")))
                    });
                }
                ResetDone {
                    ok: true,
                    problem: None,
                }
            }
            ResetMode::Fail(problem) => ResetDone {
                ok: false,
                problem: Some(problem),
            },
            ResetMode::Hang => return false,
            ResetMode::Die => {
                self.daemon.die(&self.id, 137, false);
                return false;
            }
        };
        self.send_frame(&Frame::json(Kind::ResetDone, &done)).await;
        true
    }
}
