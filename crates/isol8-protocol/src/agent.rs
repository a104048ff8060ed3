//! The engine ⇄ agent frame protocol (version [`PROTOCOL_VERSION`]).
//!
//! The agent (`isol8-agent`) is PID 1 of every sandbox container. The engine attaches to
//! the container's stdin and stdout; the agent's [`Hello`] comes on stdout and every
//! later frame over the sandbox's data socket when the agent could connect to it
//! ([`crate::layout::DATA_SOCKET_ENV`]), on stdin and stdout otherwise. Both sides
//! exchange *frames*:
//!
//! ```text
//! +----------------+--------+---------------------------+
//! | length: u32 BE | kind:u8| payload (length bytes)    |
//! +----------------+--------+---------------------------+
//! ```
//!
//! `length` counts the payload only and may not exceed [`MAX_PAYLOAD`]; a larger value is a
//! protocol error and the stream must be abandoned (the container is destroyed). Unknown
//! kinds are errors too: both sides are built from the same source, and the agent announces
//! its protocol version in its first frame ([`Kind::Hello`]), which the engine checks before
//! sending anything.
//!
//! Control payloads are JSON ([`Hello`], [`ExecSpec`], [`Exited`], [`ExecFailed`],
//! [`SignalSpec`]); output payloads are raw bytes behind a two-byte prefix (see
//! [`encode_output`]) so program output is never re-encoded.
//!
//! A session looks like this:
//!
//! ```text
//! agent  -> Hello{protocol, agentVersion}
//! engine -> Exec{...}                     (files, steps, env, limits)
//! engine -> Stdin(bytes)* StdinClose?     (interactive stdin, optional)
//! agent  -> Output(stream, phase, bytes)*
//! agent  -> Exited{exitCode, timedOut, ...}   or   ExecFailed{message}
//! engine -> Reset{wipe}                    (pooled sandboxes, between executions)
//! agent  -> ResetDone{ok, problem?}
//! engine -> Prestart{...}                 (pooled sandboxes, once clean; optional)
//! agent  -> Prestarted{ok, problem?}       (once the interpreter waits, or could not)
//! ```
//!
//! A [`Kind::Prestart`] asks the agent to start an interpreter now and keep it waiting
//! for the next execution's program ([`PrestartSpec`]); the next `Exec` either hands its
//! code step to that process or, when it cannot (see [`PrestartSpec`]), kills it before
//! anything of the execution runs.
//!
//! The agent's own diagnostics go to its stderr, never into the frame stream.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Version of this frame protocol. Bumped on any incompatible change (2: [`Kind::Prestart`];
/// 3: the agent installs the strict seccomp filter, [`Hello::seccomp_filter`]).
pub const PROTOCOL_VERSION: u16 = 3;

/// The egress relay's socket variable and port, defined with the rest of the sandbox's
/// inside in [`crate::layout`] (re-exported here, where the agent protocol's users look).
pub use crate::layout::{EGRESS_PORT, EGRESS_SOCKET_ENV};

/// Size of a frame header: 4 length bytes and 1 kind byte.
pub const HEADER_LEN: usize = 5;

/// Largest payload either side accepts (64 MiB).
pub const MAX_PAYLOAD: usize = 64 << 20;

/// Largest output chunk the agent puts in one frame.
pub const OUTPUT_CHUNK: usize = 64 << 10;

/// Frame kinds. Values below `0x10` travel agent → engine, the rest engine → agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Agent is ready; JSON [`Hello`].
    Hello = 0x01,
    /// Program output; see [`encode_output`].
    Output = 0x02,
    /// The execution finished; JSON [`Exited`].
    Exited = 0x03,
    /// The execution could not be carried out; JSON [`ExecFailed`].
    ExecFailed = 0x04,
    /// Run something; JSON [`ExecSpec`].
    Exec = 0x10,
    /// Bytes for the running program's stdin.
    Stdin = 0x11,
    /// Close the running program's stdin.
    StdinClose = 0x12,
    /// Deliver a signal to the running program's process group; JSON [`SignalSpec`].
    Signal = 0x13,
    /// Return the sandbox to its pristine state for the next execution; JSON [`ResetSpec`].
    Reset = 0x14,
    /// Outcome of a reset; JSON [`ResetDone`].
    ResetDone = 0x05,
    /// Start an interpreter that waits for the next execution's code; JSON
    /// [`PrestartSpec`]. Answered by [`Kind::Prestarted`].
    Prestart = 0x15,
    /// The pre-started interpreter is waiting (or could not be started); JSON
    /// [`Prestarted`].
    Prestarted = 0x06,
}

impl Kind {
    /// Parses a kind byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Hello,
            0x02 => Kind::Output,
            0x03 => Kind::Exited,
            0x04 => Kind::ExecFailed,
            0x10 => Kind::Exec,
            0x11 => Kind::Stdin,
            0x12 => Kind::StdinClose,
            0x13 => Kind::Signal,
            0x14 => Kind::Reset,
            0x05 => Kind::ResetDone,
            0x15 => Kind::Prestart,
            0x06 => Kind::Prestarted,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload holds.
    pub kind: Kind,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame whose payload is `value` as JSON.
    pub fn json<T: Serialize>(kind: Kind, value: &T) -> Frame {
        // Serialising these plain structs cannot fail (no maps with non-string keys).
        let payload = serde_json::to_vec(value).unwrap_or_default();
        Frame { kind, payload }
    }

    /// Decodes the payload as JSON.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, FrameError> {
        serde_json::from_slice(&self.payload).map_err(|e| FrameError::BadPayload {
            kind: self.kind,
            reason: e.to_string(),
        })
    }

    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_header(self.kind, self.payload.len(), out);
        out.extend_from_slice(&self.payload);
    }

    /// The encoded frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        self.encode_into(&mut out);
        out
    }
}

fn encode_header(kind: Kind, len: usize, out: &mut Vec<u8>) {
    debug_assert!(len <= MAX_PAYLOAD);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(kind as u8);
}

/// Why a byte stream is not a valid frame sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The header announced more than [`MAX_PAYLOAD`] bytes.
    TooLarge(usize),
    /// The kind byte is not one of [`Kind`].
    UnknownKind(u8),
    /// The payload of a control frame is not the JSON expected for its kind.
    BadPayload {
        /// Kind of the offending frame.
        kind: Kind,
        /// The JSON decoder's message.
        reason: String,
    },
    /// An output payload is shorter than its two-byte prefix or names an unknown stream.
    BadOutput,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes exceeds the {MAX_PAYLOAD}-byte limit")
            }
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind 0x{k:02x}"),
            FrameError::BadPayload { kind, reason } => {
                write!(f, "malformed {kind:?} frame: {reason}")
            }
            FrameError::BadOutput => write!(f, "malformed output frame"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Incremental decoder: feed it bytes as they arrive, take complete frames out.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// After an error the decoder is unusable: the stream is out of sync.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        let kind = Kind::from_u8(avail[4]).ok_or(FrameError::UnknownKind(avail[4]))?;
        if avail.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = avail[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.start += HEADER_LEN + len;
        if self.start > 1 << 20 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(Frame { kind, payload }))
    }
}

/// Reads one frame from a blocking reader; `Ok(None)` on a clean end of stream.
pub fn read_frame<R: Read>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            FrameError::TooLarge(len),
        ));
    }
    let kind = Kind::from_u8(header[4]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            FrameError::UnknownKind(header[4]),
        )
    })?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some(Frame { kind, payload }))
}

/// Writes one frame to a blocking writer and flushes it.
pub fn write_frame<W: Write>(w: &mut W, frame: &Frame) -> io::Result<()> {
    w.write_all(&frame.encode())?;
    w.flush()
}

/// Output stream of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout = 1,
    /// Standard error.
    Stderr = 2,
}

/// Step of an execution (mirrors [`crate::Phase`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepPhase {
    /// The setup script.
    Setup = 0,
    /// The user's code.
    Code = 1,
}

/// Encodes an output frame: `[stream][phase][bytes]`.
pub fn encode_output(stream: Stream, phase: StepPhase, data: &[u8], out: &mut Vec<u8>) {
    encode_header(Kind::Output, data.len() + 2, out);
    out.push(stream as u8);
    out.push(phase as u8);
    out.extend_from_slice(data);
}

/// Splits an output payload into stream, phase and bytes.
pub fn decode_output(payload: &[u8]) -> Result<(Stream, StepPhase, &[u8]), FrameError> {
    let (&s, rest) = payload.split_first().ok_or(FrameError::BadOutput)?;
    let (&p, data) = rest.split_first().ok_or(FrameError::BadOutput)?;
    let stream = match s {
        1 => Stream::Stdout,
        2 => Stream::Stderr,
        _ => return Err(FrameError::BadOutput),
    };
    let phase = match p {
        0 => StepPhase::Setup,
        1 => StepPhase::Code,
        _ => return Err(FrameError::BadOutput),
    };
    Ok((stream, phase, data))
}

/// First frame sent by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the agent.
    pub protocol: u16,
    /// The agent's crate version.
    pub agent_version: String,
    /// The agent connected to the data socket the container's environment names
    /// ([`crate::layout::DATA_SOCKET_ENV`]): every frame after this hello, both ways,
    /// travels over that connection, not over stdin and stdout. False (or absent, from
    /// older agents): everything stays on stdin and stdout.
    #[serde(default)]
    pub data_socket: bool,
    /// The agent installed the strict seccomp filter the container's environment asked
    /// for ([`crate::seccomp::FILTER_ENV`]) before anything else ran. False (or absent,
    /// from older agents): it installed none, and an engine that asked refuses the
    /// sandbox.
    #[serde(default)]
    pub seccomp_filter: bool,
}

/// One program to run as part of an execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Which phase this step's output belongs to.
    pub phase: StepPhase,
    /// Program and arguments (`argv[0]` is looked up in `PATH`).
    pub argv: Vec<String>,
    /// A shared object the program loads at start (`LD_PRELOAD`), when that file exists
    /// in the sandbox and the execution's `env` sets no `LD_PRELOAD` of its own: isol8's
    /// teardown library (see [`PrestartSpec::preload`]) for the code step of a runtime
    /// that starts fresh (Bun). The library takes the variable out of the environment
    /// before the program reads it. Ignored when a pre-started interpreter serves the
    /// step (it has its own). `None` (absent): nothing is preloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload: Option<String>,
}

/// A file the agent writes before running the steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileWrite {
    /// Absolute path inside `/sandbox`; parent directories are created.
    pub path: String,
    /// Content, base64.
    pub content: String,
    /// Permission bits (default 0o644).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// Everything the agent needs to carry out one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecSpec {
    /// [`PROTOCOL_VERSION`] of the engine.
    pub protocol: u16,
    /// Programs to run in order; a failing setup step stops the sequence. Empty for a
    /// pure file transfer (only `files` and/or `outputPaths`).
    pub steps: Vec<Step>,
    /// The complete environment of the programs (nothing is inherited).
    pub env: BTreeMap<String, String>,
    /// Working directory (created if missing, owned by the sandbox user).
    pub cwd: String,
    /// Stdin content, base64; fed to the code step, then closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Keep the code step's stdin open for [`Kind::Stdin`] frames.
    #[serde(default)]
    pub interactive: bool,
    /// Wall-clock limit for all steps together.
    pub timeout_ms: u64,
    /// Cap on stdout and on stderr, in bytes; the rest is counted and discarded.
    pub max_output_bytes: u64,
    /// Files written (as the sandbox user) before the first step.
    #[serde(default)]
    pub files: Vec<FileWrite>,
    /// Files read back (as the sandbox user) after the last step.
    #[serde(default)]
    pub output_paths: Vec<String>,
    /// Largest output file read back, in bytes.
    pub max_read_bytes: u64,
    /// Measure the execution's resources ([`Exited::usage`]); false only to measure what
    /// measuring costs (`isol8 bench`). Default true.
    #[serde(default = "measure_by_default")]
    pub measure_usage: bool,
    /// The sandbox's `memoryLimit` in bytes: the memory the programs may use, not counting
    /// the files they keep in the tmpfs mounts. The container's memory cgroup is larger
    /// (it also holds the tmpfs sizes and the agent), so the agent watches the programs'
    /// own memory while they run and kills them (setting [`Exited::oom_killed`]) when it
    /// exceeds this. Absent (older engines, file transfers): the kernel's limit alone
    /// applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
}

fn measure_by_default() -> bool {
    true
}

/// Byte counts of one output stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStats {
    /// Bytes the program wrote.
    pub total_bytes: u64,
    /// True when some were discarded because of the cap.
    pub truncated: bool,
}

/// How an execution ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exited {
    /// Exit code of the last step that ran; 128+N when killed by signal N.
    pub exit_code: i32,
    /// The timeout fired and the process tree was killed.
    pub timed_out: bool,
    /// Phase of the last step that ran.
    pub phase: Option<StepPhase>,
    /// How many steps ran (the last one is the one that ended the sequence).
    #[serde(default)]
    pub steps_run: u32,
    /// Wall time of the code step in milliseconds (all steps when none reached code).
    pub duration_ms: u64,
    /// The same in microseconds (`isol8 bench` prices the engine against it; absent from
    /// older agents).
    #[serde(default)]
    pub duration_us: u64,
    /// Stdout counts.
    pub stdout: StreamStats,
    /// Stderr counts.
    pub stderr: StreamStats,
    /// Output paths read back: path → base64 content.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Output paths that could not be read: path → reason.
    #[serde(default)]
    pub file_errors: BTreeMap<String, String>,
    /// Resources this execution used, as measured by the agent (absent from agents that
    /// do not measure, and when the cgroup files cannot be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<AgentUsage>,
    /// The kernel's OOM killer killed a process of the sandbox during this execution (the
    /// memory cgroup's `oom_kill` counter moved), or the agent stopped the program for
    /// using more memory than its limit.
    #[serde(default)]
    pub oom_killed: bool,
    /// Signal number that ended the last step's process, when a signal ended it (also
    /// set for the agent's own kills: 9 after a timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// Resource figures of one execution, measured inside the sandbox from its cgroup
/// (v1 or v2) and network namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentUsage {
    /// CPU time used during the execution by all the sandbox's processes, in microseconds.
    pub cpu_time_us: u64,
    /// Wall time over which `cpu_time_us` was measured, in microseconds.
    pub wall_time_us: u64,
    /// Memory charged to the sandbox when the execution ended, in bytes.
    pub memory_bytes: u64,
    /// Highest memory of this execution's programs seen during the run, in bytes (not the
    /// container's lifetime peak: a pooled sandbox's earlier runs do not count).
    pub peak_memory_bytes: u64,
    /// Bytes received on the sandbox's network interfaces other than loopback.
    pub network_rx_bytes: u64,
    /// Bytes sent on the sandbox's network interfaces other than loopback.
    pub network_tx_bytes: u64,
}

/// The agent could not carry out an execution (bad file path, spawn failure…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecFailed {
    /// What went wrong, for the user.
    pub message: String,
}

/// What a reset wipes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetSpec {
    /// Directories whose contents are removed (the directories themselves stay).
    pub wipe: Vec<String>,
}

/// Outcome of a reset. A sandbox whose reset failed must never be reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetDone {
    /// True when nothing of the previous execution is left.
    pub ok: bool,
    /// What was left behind, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// An interpreter to start ahead of the next execution (a *pre-started* interpreter).
///
/// The agent starts `argv` exactly as it starts a step (the sandbox user, its own
/// session, default signal dispositions, the same limits), in `cwd` with `env`, and with
/// three more descriptors from [`first_fd`](PrestartSpec::first_fd) on: the *request*
/// pipe (`first_fd`), the read end of a pipe on which the agent later writes the program
/// ([`encode_prestart_request`]) and then closes; the *stdin* pipe (`first_fd + 1`), the
/// read end of a pipe that becomes the program's stdin when the execution feeds one (the
/// process's own stdin is `/dev/null`, as a step's without input); and the *ready* pipe
/// (`first_fd + 2`), the write end of a pipe on which the process writes one byte, and
/// which it closes, when it is ready and about to wait for the request. The process must
/// close all three before running the program, and must run it as `inline` followed by
/// the code would have, in a fresh process. The agent answers [`Kind::Prestarted`] when
/// the byte came (or the process ended, or [`PRESTART_READY_TIMEOUT_MS`] passed: then it
/// is killed).
///
/// With [`stdio`](PrestartSpec::stdio) the process gets no extra descriptors: its stdin
/// is the request pipe, and the ready byte is the first byte it writes to its stdout
/// (the agent reads it; the program's output starts after it).
///
/// The next `Exec` uses the waiting process only when its steps are a single code step
/// whose argv is `inline` plus one argument (the code; with a [`script`], exactly that
/// path, which the execution writes before the hand-over), its `cwd` is this `cwd`, it
/// feeds stdin only if [`servesStdin`](PrestartSpec::serves_stdin), and every variable
/// named by `startupEnv` has the same value (or is absent) in both environments: what the
/// interpreter read while it started is then what the program would have found.
/// Otherwise the waiting process is killed first and the steps start as usual.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrestartSpec {
    /// The argv prefix the code step must have (`["python3", "-c"]`).
    pub inline: Vec<String>,
    /// The waiting process (an interpreter running a small loader).
    pub argv: Vec<String>,
    /// Its environment at start (the program's own is set from the request).
    pub env: BTreeMap<String, String>,
    /// Its working directory.
    pub cwd: String,
    /// Variables the interpreter reads while it starts: a name, or a prefix ending in
    /// `*` (`PYTHON*`).
    pub startup_env: Vec<String>,
    /// Descriptor of the request pipe; the stdin and ready pipes follow it
    /// ([`PRESTART_FIRST_FD`] when absent). An interpreter that opens descriptors of its
    /// own while it starts (Node.js opens about 17) gets them high, so that once the
    /// three are closed its descriptors are numbered as in a fresh process.
    #[serde(default = "default_first_fd")]
    pub first_fd: i32,
    /// The loader can make the stdin pipe its stdin (true when absent); when false, an
    /// execution that feeds stdin starts fresh.
    #[serde(default = "default_true")]
    pub serves_stdin: bool,
    /// For an interpreter that runs its code from a file (Deno): the file, already named
    /// on the waiting process's command line. The code step's last argument must be this
    /// path; the execution writes the file before the hand-over, and the request's code
    /// field is that path. `None`: the code is the request's last field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// The request comes on stdin and the ready byte goes to stdout, for a loader that
    /// cannot use a descriptor by number (Deno without `--allow-all`). Such a loader
    /// never serves stdin, and its program finds stdin an empty pipe, not `/dev/null`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdio: bool,
    /// A shared object the waiting process loads at start (`LD_PRELOAD`), when that file
    /// exists in the sandbox and `env` sets no `LD_PRELOAD` of its own: isol8's teardown
    /// library, which lets the process's exit be reported before the kernel has freed its
    /// memory (docs/PERFORMANCE.md). The library takes the variable out of the
    /// environment at load, and the loader replaces the start-up environment anyway, so
    /// the program and its children never see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload: Option<String>,
}

fn default_first_fd() -> i32 {
    PRESTART_FIRST_FD
}

fn default_true() -> bool {
    true
}

/// Where a pre-started interpreter's three descriptors start unless its
/// [`PrestartSpec::first_fd`] says otherwise: request 3, stdin 4, ready 5.
pub const PRESTART_FIRST_FD: i32 = 3;

/// How long the agent waits for a pre-started interpreter to be ready, in milliseconds.
pub const PRESTART_READY_TIMEOUT_MS: u64 = 10_000;

/// The agent's answer to a [`Kind::Prestart`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prestarted {
    /// True when the interpreter is waiting for the next execution.
    pub ok: bool,
    /// Why not, when not ok (the sandbox stays usable: its programs start fresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The request a pre-started interpreter reads on its request pipe until end of file
/// (see [`PrestartSpec`]): NUL-separated fields — `1` if the stdin pipe is to become
/// stdin (else
/// `0`), the number of environment entries, that many `NAME=value` entries (the
/// program's complete environment, in this order), then the code, which runs to the end
/// of the request (it contains no NUL: the engine refuses such code).
pub fn encode_prestart_request(stdin: bool, env: &BTreeMap<String, String>, code: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(code.len() + 64 * (env.len() + 1));
    out.extend_from_slice(if stdin { b"1\0" } else { b"0\0" });
    out.extend_from_slice(env.len().to_string().as_bytes());
    out.push(0);
    for (k, v) in env {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out.extend_from_slice(code.as_bytes());
    out
}

impl PrestartSpec {
    /// True when `name` is one of [`PrestartSpec::startup_env`].
    pub fn read_at_startup(&self, name: &str) -> bool {
        self.startup_env.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == p,
        })
    }

    /// True when an execution with `argv`, `env` and `cwd`, feeding stdin when
    /// `feeds_stdin`, may run in this waiting process instead of a fresh one (see
    /// [`PrestartSpec`]).
    pub fn serves(
        &self,
        argv: &[String],
        env: &BTreeMap<String, String>,
        cwd: &str,
        feeds_stdin: bool,
    ) -> bool {
        ((self.serves_stdin && !self.stdio) || !feeds_stdin)
            && argv.len() == self.inline.len() + 1
            && argv.starts_with(&self.inline)
            && self.script.as_ref().is_none_or(|s| argv.last() == Some(s))
            && cwd == self.cwd
            && self
                .env
                .keys()
                .chain(env.keys())
                .filter(|k| self.read_at_startup(k))
                .all(|k| self.env.get(k) == env.get(k))
    }
}

/// A signal for the running program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalSpec {
    /// Signal number (SIGINT = 2, SIGTERM = 15, SIGKILL = 9).
    pub signal: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_decoder_byte_by_byte() {
        let hello = Frame::json(
            Kind::Hello,
            &Hello {
                protocol: PROTOCOL_VERSION,
                agent_version: "x".into(),
                data_socket: true,
                seccomp_filter: true,
            },
        );
        let mut bytes = hello.encode();
        encode_output(Stream::Stderr, StepPhase::Setup, b"abc", &mut bytes);
        let mut dec = FrameDecoder::new();
        let mut frames = Vec::new();
        for b in &bytes {
            dec.push(std::slice::from_ref(b));
            while let Some(f) = dec.next_frame().expect("valid") {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], hello);
        let h: Hello = frames[0].parse().expect("hello");
        assert_eq!(h.protocol, PROTOCOL_VERSION);
        assert_eq!(
            decode_output(&frames[1].payload).expect("output"),
            (Stream::Stderr, StepPhase::Setup, &b"abc"[..])
        );
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn oversized_and_unknown_frames_are_rejected() {
        let mut dec = FrameDecoder::new();
        dec.push(&[0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(dec.next_frame(), Err(FrameError::TooLarge(0xffff_ffff)));
        let mut dec = FrameDecoder::new();
        dec.push(&[0, 0, 0, 0, 0x7f]);
        assert_eq!(dec.next_frame(), Err(FrameError::UnknownKind(0x7f)));
        assert!(read_frame(&mut &[0u8, 0, 0, 1, 0x42, 0][..]).is_err());
    }

    #[test]
    fn blocking_reader_handles_eof() {
        let f = Frame {
            kind: Kind::StdinClose,
            payload: vec![],
        };
        let bytes = f.encode();
        let mut r = &bytes[..];
        assert_eq!(read_frame(&mut r).expect("frame"), Some(f));
        assert_eq!(read_frame(&mut r).expect("eof"), None);
        let mut truncated = &bytes[..3];
        assert!(read_frame(&mut truncated).is_err());
    }

    fn python_prestart() -> PrestartSpec {
        PrestartSpec {
            inline: vec!["python3".into(), "-c".into()],
            argv: vec!["python3".into(), "-c".into(), "loader".into()],
            env: [("PYTHONPATH", "/a"), ("HOME", "/sandbox"), ("X", "1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: "/sandbox".into(),
            startup_env: vec!["PYTHON*".into(), "HOME".into()],
            first_fd: PRESTART_FIRST_FD,
            serves_stdin: true,
            script: None,
            stdio: false,
            preload: None,
        }
    }

    #[test]
    fn a_waiting_interpreter_serves_only_what_it_would_have_started_as() {
        let p = python_prestart();
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let code = argv(&["python3", "-c", "print(1)"]);
        let mut env = p.env.clone();
        // Variables read later (by the program) may differ freely.
        env.insert("X".into(), "2".into());
        env.insert("API_KEY".into(), "k".into());
        assert!(p.serves(&code, &env, "/sandbox", false));
        // Not the inline command, or more arguments, or elsewhere: no.
        assert!(!p.serves(
            &argv(&["python3", "/sandbox/main.py"]),
            &env,
            "/sandbox",
            false
        ));
        assert!(!p.serves(&argv(&["python3", "-c", "1", "x"]), &env, "/sandbox", false));
        assert!(!p.serves(&argv(&["bash", "-c", "1"]), &env, "/sandbox", false));
        assert!(!p.serves(&code, &env, "/sandbox/sub", false));
        // A start-up variable changed, added or removed: no.
        let mut changed = env.clone();
        changed.insert("PYTHONPATH".into(), "/b".into());
        assert!(!p.serves(&code, &changed, "/sandbox", false));
        let mut added = env.clone();
        added.insert("PYTHONSAFEPATH".into(), "1".into());
        assert!(!p.serves(&code, &added, "/sandbox", false));
        let mut removed = env.clone();
        removed.remove("HOME");
        assert!(!p.serves(&code, &removed, "/sandbox", false));
        // Stdin only where the loader can take it.
        assert!(p.serves(&code, &env, "/sandbox", true));
        let no_stdin = PrestartSpec {
            serves_stdin: false,
            ..p.clone()
        };
        assert!(no_stdin.serves(&code, &env, "/sandbox", false));
        assert!(!no_stdin.serves(&code, &env, "/sandbox", true));
        // An engine that names neither field gets the defaults.
        let mut json = serde_json::to_value(&p).expect("json");
        let obj = json.as_object_mut().expect("object");
        obj.remove("firstFd");
        obj.remove("servesStdin");
        assert_eq!(
            serde_json::from_value::<PrestartSpec>(json).expect("parse"),
            p
        );
    }

    #[test]
    fn the_prestart_request_is_nul_separated_with_the_code_last() {
        let env: BTreeMap<String, String> = [("A", "1"), ("B", "x=y")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            encode_prestart_request(true, &env, "print('a\\n')\nx=1"),
            b"1\x002\x00A=1\x00B=x=y\x00print('a\\n')\nx=1".to_vec()
        );
        assert_eq!(
            encode_prestart_request(false, &BTreeMap::new(), ""),
            b"0\x000\x00".to_vec()
        );
    }

    #[test]
    fn output_prefix_is_validated() {
        assert_eq!(decode_output(&[]), Err(FrameError::BadOutput));
        assert_eq!(decode_output(&[1]), Err(FrameError::BadOutput));
        assert_eq!(decode_output(&[3, 0]), Err(FrameError::BadOutput));
        assert_eq!(decode_output(&[1, 2]), Err(FrameError::BadOutput));
    }
}
