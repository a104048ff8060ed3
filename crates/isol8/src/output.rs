//! Turning the agent's raw output bytes into text events: secret masking that holds across
//! chunk and phase boundaries, UTF-8 decoding that never splits a character, and the
//! trailers SPEC section 2 defines.
//!
//! # Masking
//!
//! [`Secrets`] compiles the secret values of one execution, once, into one Aho-Corasick
//! automaton (the `aho-corasick` crate's contiguous NFA). A [`Masker`] runs one output
//! stream through it: every byte that lies inside an occurrence of any secret is hidden,
//! and each maximal run of hidden bytes is printed as one `***`. Overlapping secrets
//! (`abc` and `cde` in `abcde`) and a secret containing another are therefore hidden
//! whole — a leftmost-longest replacement would print `***de` and leak the end of `cde`.
//!
//! A stream (stdout or stderr of one execution) is one continuous text for masking, across
//! chunks and across phases: a secret printed half by the setup script and half by the
//! code is hidden, and the `***` is reported in the phase where the hidden run began.
//!
//! Cost: every byte goes through the automaton once, in amortised constant time whatever
//! the number of secrets; compiling is linear in the total size of the secret values.
//! Only what could still become part of a secret is held back — the longest suffix of the
//! stream that is a proper prefix of some secret (at most the longest secret − 1 bytes);
//! everything before it is released at once.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::nfa::contiguous;
use aho_corasick::{Anchored, MatchKind};
use base64::Engine as _;
use isol8_protocol::agent::StepPhase;
use isol8_protocol::NetworkLog;

use crate::error::SandboxError;
use crate::{Error, Result};

/// The texts that mark a timed-out run (the `error` event's data, the line appended to a
/// buffered result's stderr), defined with the sandbox layout.
pub use isol8_protocol::layout::{TIMEOUT_EVENT, TIMEOUT_TRAILER};
/// What a run of hidden secret bytes is replaced with.
pub const MASK: &str = "***";

/// Secret bytes (in total) above which [`Secrets::compile`] builds the automaton on a
/// blocking thread rather than on the async worker that asked.
pub const BLOCKING_COMPILE_BYTES: usize = 16 << 10;
/// File bytes (in total) above which [`Secrets::mask_files_async`] masks on a blocking
/// thread.
pub const BLOCKING_MASK_BYTES: usize = 256 << 10;

/// How [`truncation_trailer`] starts: a client that only sees the output (a stream) tells
/// a truncated run by it.
pub const TRUNCATION_MARK: &str = "--- OUTPUT TRUNCATED (";

/// The trailer added to a stream that hit the output cap.
pub fn truncation_trailer(total: u64, limit: u64) -> String {
    format!("{TRUNCATION_MARK}{total} bytes, limit: {limit}) ---")
}

/// The secret values of one execution, compiled for masking. Cheap to clone (shared).
/// Its `Debug` output never shows the values.
#[derive(Clone, Default)]
pub struct Secrets {
    compiled: Option<Arc<Compiled>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

/// The automaton and what the masker needs to know about its trie states.
struct Compiled {
    /// All secrets, `MatchKind::Standard`: every state reports every secret ending there.
    nfa: contiguous::NFA,
    /// The unanchored start state.
    start: StateID,
    /// Each trie state: how many bytes it stands for, and whether a longer secret
    /// continues it. The crate's NFAs share trie states between anchored and unanchored
    /// searches, so walking each secret anchored labels the states an unanchored scan
    /// visits.
    nodes: HashMap<StateID, Node>,
    /// Length of the longest secret, in bytes.
    longest: usize,
    /// Number of distinct values.
    count: usize,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    depth: u32,
    extends: bool,
}

impl Secrets {
    /// Compiles these values (empty values are ignored; duplicates count once). Fails
    /// only when the values are too large for the automaton (billions of bytes).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Secrets> {
        let mut patterns: Vec<&[u8]> = values
            .into_iter()
            .filter(|v| !v.is_empty())
            .map(str::as_bytes)
            .collect();
        patterns.sort_unstable();
        patterns.dedup();
        if patterns.is_empty() {
            return Ok(Secrets::default());
        }
        let too_big = |why: String| {
            Error::option(
                "secrets",
                format!("cannot compile the secret values for masking: {why}; use fewer or shorter secrets"),
            )
        };
        let nfa = contiguous::Builder::new()
            .match_kind(MatchKind::Standard)
            .prefilter(false)
            .build(&patterns)
            .map_err(|e| too_big(e.to_string()))?;
        let start = nfa
            .start_state(Anchored::No)
            .map_err(|e| too_big(e.to_string()))?;
        let anchored = nfa
            .start_state(Anchored::Yes)
            .map_err(|e| too_big(e.to_string()))?;
        let root = Node {
            depth: 0,
            extends: true,
        };
        let mut nodes = HashMap::from([(start, root), (anchored, root)]);
        for p in &patterns {
            let mut sid = anchored;
            for (i, &b) in p.iter().enumerate() {
                sid = nfa.next_state(Anchored::Yes, sid, b);
                if nfa.is_dead(sid) {
                    return Err(too_big("the automaton lost a secret".into()));
                }
                let node = nodes.entry(sid).or_insert(Node {
                    depth: (i + 1) as u32,
                    extends: false,
                });
                node.extends |= i + 1 < p.len();
            }
        }
        Ok(Secrets {
            compiled: Some(Arc::new(Compiled {
                longest: patterns.iter().map(|p| p.len()).max().unwrap_or(0),
                count: patterns.len(),
                nfa,
                start,
                nodes,
            })),
        })
    }

    /// [`Secrets::new`] on a blocking thread when the values are large (over
    /// [`BLOCKING_COMPILE_BYTES`] in total), so a server's async workers never stall on it.
    pub async fn compile(values: Vec<String>) -> Result<Secrets> {
        let total: usize = values.iter().map(String::len).sum();
        if total <= BLOCKING_COMPILE_BYTES {
            return Secrets::new(values.iter().map(String::as_str));
        }
        tokio::task::spawn_blocking(move || Secrets::new(values.iter().map(String::as_str)))
            .await
            .map_err(|source| SandboxError::CompileSecrets { source })?
    }

    /// True when there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.compiled.is_none()
    }

    /// Number of distinct (non-empty) values.
    pub fn count(&self) -> usize {
        self.compiled.as_ref().map_or(0, |c| c.count)
    }

    /// True when `data` contains any secret.
    pub fn contains(&self, data: &[u8]) -> bool {
        let Some(c) = &self.compiled else {
            return false;
        };
        let mut sid = c.start;
        data.iter().any(|&b| {
            sid = c.nfa.next_state(Anchored::No, sid, b);
            c.nfa.is_match(sid)
        })
    }

    /// `data` with every secret masked; borrowed when it contains none.
    pub fn mask_bytes<'a>(&self, data: &'a [u8]) -> Cow<'a, [u8]> {
        if !self.contains(data) {
            return Cow::Borrowed(data);
        }
        let mut m = Masker::new(self);
        let mut out = Vec::with_capacity(data.len());
        for (_, seg) in m.push(StepPhase::Code, data).into_iter().chain(m.finish()) {
            out.extend_from_slice(&seg);
        }
        Cow::Owned(out)
    }

    /// `text` with every secret masked; borrowed when it contains none.
    pub fn mask_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.mask_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Secrets are whole UTF-8 strings and occurrences in UTF-8 text start and end
            // on character boundaries, so this is valid UTF-8; lossy only for safety.
            Cow::Owned(b) => Cow::Owned(
                String::from_utf8(b)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
        }
    }

    /// Masks every string field of these proxy log entries (host, path, method…).
    pub fn mask_network_logs(&self, logs: &mut [NetworkLog]) {
        if self.is_empty() {
            return;
        }
        for log in logs {
            for field in [
                &mut log.timestamp,
                &mut log.method,
                &mut log.host,
                &mut log.path,
                &mut log.action,
            ] {
                if let Cow::Owned(masked) = self.mask_str(field) {
                    *field = masked;
                }
            }
        }
    }

    /// Masks the content of `outputPaths` files (path → base64), text and binary alike:
    /// a file that contains a secret comes back with each occurrence replaced by `***`
    /// (so a binary file that held one is altered). Returns the paths of the files that
    /// were changed; files without a secret are returned byte for byte. Content that is
    /// not valid base64 is left alone (the agent always encodes it).
    pub fn mask_files(&self, files: &mut BTreeMap<String, String>) -> Vec<String> {
        let mut changed = Vec::new();
        if self.is_empty() {
            return changed;
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        for (path, content) in files.iter_mut() {
            let Ok(bytes) = b64.decode(content.as_bytes()) else {
                continue;
            };
            if let Cow::Owned(masked) = self.mask_bytes(&bytes) {
                *content = b64.encode(masked);
                changed.push(path.clone());
            }
        }
        changed
    }

    /// [`Secrets::mask_files`] on a blocking thread when the files are large (over
    /// [`BLOCKING_MASK_BYTES`] in total).
    pub async fn mask_files_async(
        &self,
        mut files: BTreeMap<String, String>,
    ) -> (BTreeMap<String, String>, Vec<String>) {
        let total: usize = files.values().map(String::len).sum();
        if self.is_empty() || total <= BLOCKING_MASK_BYTES {
            let changed = self.mask_files(&mut files);
            return (files, changed);
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let changed = me.mask_files(&mut files);
            (files, changed)
        })
        .await
        // A masking thread cannot panic on valid input; withhold the files if it did.
        .unwrap_or_default()
    }

    /// [`Secrets::mask_bytes`] of owned data, on a blocking thread when it is large (over
    /// [`BLOCKING_MASK_BYTES`]).
    pub async fn mask_owned(&self, data: Vec<u8>) -> Result<Vec<u8>> {
        if self.is_empty() {
            return Ok(data);
        }
        if data.len() <= BLOCKING_MASK_BYTES {
            return Ok(self.mask_bytes(&data).into_owned());
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.mask_bytes(&data).into_owned())
            .await
            .map_err(|source| SandboxError::MaskSecrets { source }.into())
    }

    /// The same error with every secret masked in its text. The variant is kept, except
    /// for errors whose text comes from a source that cannot be rebuilt (Docker API,
    /// configuration errors): when those contain a secret they become
    /// [`Error::Sandbox`] (or [`Error::InvalidRequest`] for configuration) with the
    /// masked text.
    pub fn mask_error(&self, e: Error) -> Error {
        if self.is_empty() || !self.contains(e.to_string().as_bytes()) {
            return e;
        }
        let m = |s: String| self.mask_str(&s).into_owned();
        match e {
            Error::InvalidRequest(s) => Error::InvalidRequest(m(s)),
            Error::InvalidOption { field, message } => Error::InvalidOption {
                field: m(field),
                message: m(message),
            },
            Error::NotSupported(s) => Error::NotSupported(m(s)),
            Error::DockerUnavailable { detail } => Error::DockerUnavailable { detail: m(detail) },
            Error::ImageMissing { image, runtime } => Error::ImageMissing {
                image: m(image),
                runtime: m(runtime),
            },
            Error::Sandbox(e) => Error::Sandbox(SandboxError::Masked(m(e.to_string()))),
            Error::SandboxLost(s) => Error::SandboxLost(m(s)),
            Error::SandboxUnresponsive(s) => Error::SandboxUnresponsive(m(s)),
            Error::PackageInstall {
                installer,
                exit_code,
                output,
            } => Error::PackageInstall {
                installer: m(installer),
                exit_code,
                output: m(output),
            },
            Error::Remote { status, message } => Error::Remote {
                status,
                message: m(message),
            },
            Error::Io { op, source } => Error::Io {
                op: m(op),
                source: std::io::Error::new(source.kind(), m(source.to_string())),
            },
            Error::Config(c) => Error::InvalidRequest(m(c.to_string())),
            e @ Error::Docker { .. } => Error::Sandbox(SandboxError::Masked(m(e.to_string()))),
            e @ (Error::QueueTimeout { .. } | Error::Stopped) => e,
        }
    }
}

/// Masks one stream (see the module documentation). Output comes back as segments
/// tagged with the phase their first byte was written in.
#[derive(Default)]
pub struct Masker {
    compiled: Option<Arc<Compiled>>,
    /// Automaton state after every byte fed so far.
    sid: StateID,
    /// Bytes fed so far.
    fed: u64,
    /// Bytes fed but not released yet (the last `pending.len()` of them).
    pending: VecDeque<u8>,
    /// Where each phase began (stream offset), from the one in force at the first pending
    /// byte on.
    phases: VecDeque<(u64, StepPhase)>,
    /// Hidden ranges `[start, end)` not wholly released, sorted and disjoint.
    hidden: VecDeque<(u64, u64)>,
    /// The last released byte was hidden (a `***` was already written for its run).
    in_run: bool,
    /// Longest secret ending at a match state (cache).
    longest_at: HashMap<StateID, u32>,
    /// What a state that no longer secret continues must hold (cache).
    leaf_hold: HashMap<StateID, u32>,
    /// Automaton steps taken, for the complexity tests.
    work: u64,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("fed", &self.fed)
            .field("held", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Appends `bytes` to the last segment when it has the same phase, else starts one.
fn append(
    out: &mut Vec<(StepPhase, Vec<u8>)>,
    phase: StepPhase,
    bytes: impl IntoIterator<Item = u8>,
) {
    match out.last_mut() {
        Some((p, seg)) if *p == phase => seg.extend(bytes),
        _ => out.push((phase, bytes.into_iter().collect())),
    }
}

impl Masker {
    /// A masker for one stream.
    pub fn new(secrets: &Secrets) -> Self {
        let compiled = secrets.compiled.clone();
        Masker {
            sid: compiled.as_ref().map(|c| c.start).unwrap_or_default(),
            compiled,
            ..Default::default()
        }
    }

    /// Feeds bytes written in `phase`; returns what can be released now (masked).
    pub fn push(&mut self, phase: StepPhase, bytes: &[u8]) -> Vec<(StepPhase, Vec<u8>)> {
        if bytes.is_empty() {
            return Vec::new();
        }
        let Some(c) = self.compiled.clone() else {
            return vec![(phase, bytes.to_vec())];
        };
        if self.phases.back().map(|&(_, p)| p) != Some(phase) {
            self.phases.push_back((self.fed, phase));
        }
        let mut sid = self.sid;
        self.pending.reserve(bytes.len());
        for &b in bytes {
            sid = c.nfa.next_state(Anchored::No, sid, b);
            self.fed += 1;
            self.pending.push_back(b);
            if c.nfa.is_match(sid) {
                let len = self.longest_at(&c, sid);
                self.hide(self.fed - len, self.fed);
            }
        }
        self.sid = sid;
        self.work += bytes.len() as u64;
        let hold = self.hold(&c);
        self.release(self.fed - hold as u64)
    }

    /// Releases everything held back (nothing can complete a secret any more) and starts
    /// a new text.
    pub fn finish(&mut self) -> Vec<(StepPhase, Vec<u8>)> {
        let out = self.release(self.fed);
        if let Some(c) = &self.compiled {
            self.sid = c.start;
        }
        self.in_run = false;
        out
    }

    /// Bytes held back right now.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    fn released(&self) -> u64 {
        self.fed - self.pending.len() as u64
    }

    /// Length of the longest secret ending at match state `sid`.
    fn longest_at(&mut self, c: &Compiled, sid: StateID) -> u64 {
        if let Some(&n) = self.longest_at.get(&sid) {
            return u64::from(n);
        }
        let n = (0..c.nfa.match_len(sid))
            .map(|i| c.nfa.pattern_len(c.nfa.match_pattern(sid, i)))
            .max()
            .unwrap_or(0);
        self.work += c.nfa.match_len(sid) as u64;
        self.longest_at.insert(sid, n as u32);
        n as u64
    }

    /// Marks `[start, end)` hidden. Ends arrive in increasing order.
    fn hide(&mut self, start: u64, end: u64) {
        // A secret never starts before the release point: what could still become one
        // was held back. (Clamped all the same.)
        debug_assert!(start >= self.released());
        let mut start = start.max(self.released());
        while let Some(&(s, e)) = self.hidden.back() {
            if e < start {
                break;
            }
            start = start.min(s);
            self.hidden.pop_back();
        }
        self.hidden.push_back((start, end));
    }

    /// How many of the last bytes fed could still be the start of a secret: the depth of
    /// the current state if a longer secret continues it; otherwise (a whole secret that
    /// nothing extends) the same for its longest proper suffix, found by walking that
    /// suffix from the start (once per such state).
    fn hold(&mut self, c: &Compiled) -> usize {
        let conservative = c.longest.saturating_sub(1).min(self.pending.len());
        let mut sid = self.sid;
        let mut leaves = Vec::new();
        let hold = loop {
            if let Some(&h) = self.leaf_hold.get(&sid) {
                break h as usize;
            }
            match c.nodes.get(&sid) {
                Some(n) if n.extends => break n.depth as usize,
                Some(n) if (n.depth as usize) <= self.pending.len() => {
                    let depth = n.depth as usize;
                    leaves.push(sid);
                    let mut s = c.start;
                    for &b in self.pending.range(self.pending.len() - depth + 1..) {
                        s = c.nfa.next_state(Anchored::No, s, b);
                    }
                    self.work += depth as u64;
                    sid = s;
                }
                // Never happens (every state reached is a trie state, and its bytes are
                // still held); hold the most that could matter.
                _ => return conservative,
            }
        };
        for leaf in leaves {
            self.leaf_hold.insert(leaf, hold as u32);
        }
        hold.min(self.pending.len())
    }

    /// The phase of stream offset `at` and where the next phase begins.
    fn phase_at(&self, at: u64) -> (StepPhase, u64) {
        let mut phase = StepPhase::Code;
        let mut until = u64::MAX;
        for &(from, p) in &self.phases {
            if from <= at {
                phase = p;
            } else {
                until = from;
                break;
            }
        }
        (phase, until)
    }

    /// Releases the pending bytes before stream offset `upto`.
    fn release(&mut self, upto: u64) -> Vec<(StepPhase, Vec<u8>)> {
        let from = self.released();
        let mut out = Vec::new();
        let mut at = from;
        while at < upto {
            match self.hidden.front().copied() {
                Some((_, e)) if e <= at => {
                    self.hidden.pop_front();
                }
                Some((s, e)) if s <= at => {
                    if !self.in_run {
                        append(&mut out, self.phase_at(at).0, MASK.bytes());
                        self.in_run = true;
                    }
                    if e <= upto {
                        self.hidden.pop_front();
                    }
                    at = e.min(upto);
                }
                next => {
                    let end = next.map_or(upto, |(s, _)| s.min(upto));
                    while at < end {
                        let (phase, until) = self.phase_at(at);
                        let stop = until.min(end);
                        let range = (at - from) as usize..(stop - from) as usize;
                        append(&mut out, phase, self.pending.range(range).copied());
                        at = stop;
                    }
                    self.in_run = false;
                }
            }
        }
        self.pending.drain(..(upto - from) as usize);
        while self.phases.len() > 1 && self.phases[1].0 <= upto {
            self.phases.pop_front();
        }
        out
    }
}

mod text;

#[cfg(test)]
use text::push_text;
pub use text::{TextStream, Utf8Decoder};

#[cfg(test)]
mod tests;
