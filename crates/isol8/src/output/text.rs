//! The last steps of an output stream's pipeline: UTF-8 decoding that never splits a
//! character, and [`TextStream`], which masks (see [`super::Masker`]) and then decodes
//! one stream across all phases of an execution.

use isol8_protocol::agent::StepPhase;

use super::{Masker, Secrets};

/// Decodes UTF-8 incrementally: an incomplete character at the end of a chunk waits for
/// the next one; invalid bytes become U+FFFD.
#[derive(Debug, Clone, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// Decodes `bytes`, keeping an incomplete trailing character for later.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let keep = incomplete_tail(&buf);
        self.pending = buf.split_off(buf.len() - keep);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Decodes whatever is left.
    pub fn finish(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned()
    }
}

/// Length of an incomplete UTF-8 sequence at the end of `buf` (0 when it ends cleanly).
fn incomplete_tail(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let b = buf[buf.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: look further back for the lead byte
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// One output stream's pipeline across all phases of an execution: mask, then decode.
/// Text comes back in segments tagged with their phase.
#[derive(Debug, Default)]
pub struct TextStream {
    masker: Masker,
    utf8: Utf8Decoder,
    /// Phase of the bytes the decoder holds.
    phase: Option<StepPhase>,
}

impl TextStream {
    /// A stream masking these secrets.
    pub fn new(secrets: &Secrets) -> Self {
        TextStream {
            masker: Masker::new(secrets),
            ..Default::default()
        }
    }

    /// Text releasable after `bytes` (written in `phase`) arrived; may be empty.
    pub fn push(&mut self, phase: StepPhase, bytes: &[u8]) -> Vec<(StepPhase, String)> {
        let segments = self.masker.push(phase, bytes);
        self.decode(segments)
    }

    /// Flushes everything held back.
    pub fn finish(&mut self) -> Vec<(StepPhase, String)> {
        let segments = self.masker.finish();
        let mut out = self.decode(segments);
        if let Some(phase) = self.phase.take() {
            let rest = self.utf8.finish();
            if !rest.is_empty() {
                push_text(&mut out, phase, rest);
            }
        }
        out
    }

    fn decode(&mut self, segments: Vec<(StepPhase, Vec<u8>)>) -> Vec<(StepPhase, String)> {
        let mut out = Vec::new();
        for (phase, bytes) in segments {
            // A character cut by a phase change is not completed by another process.
            if let Some(prev) = self.phase.filter(|p| *p != phase) {
                let rest = self.utf8.finish();
                if !rest.is_empty() {
                    push_text(&mut out, prev, rest);
                }
            }
            self.phase = Some(phase);
            let text = self.utf8.push(&bytes);
            if !text.is_empty() {
                push_text(&mut out, phase, text);
            }
        }
        out
    }
}

/// Appends `text` to the last segment when it is of the same phase.
pub(super) fn push_text(out: &mut Vec<(StepPhase, String)>, phase: StepPhase, text: String) {
    match out.last_mut() {
        Some((p, s)) if *p == phase => s.push_str(&text),
        _ => out.push((phase, text)),
    }
}
