//! Turning the agent's raw output bytes into text events: secret masking that holds across
//! chunk boundaries, UTF-8 decoding that never splits a character, and the trailers SPEC
//! section 2 defines.

/// Text appended to stderr when the timeout fired.
pub const TIMEOUT_TRAILER: &str = "--- EXECUTION TIMED OUT ---";
/// Message of the stream `error` event when the timeout fired.
pub const TIMEOUT_EVENT: &str = "EXECUTION TIMED OUT";

/// The trailer added to a stream that hit the output cap.
pub fn truncation_trailer(total: u64, limit: u64) -> String {
    format!("--- OUTPUT TRUNCATED ({total} bytes, limit: {limit}) ---")
}

/// Replaces every occurrence of the secret values with `***`, including occurrences split
/// across the chunks given to [`Masker::push`].
#[derive(Debug, Clone, Default)]
pub struct Masker {
    secrets: Vec<Vec<u8>>,
    held: Vec<u8>,
}

impl Masker {
    /// A masker for these values (empty values are ignored).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|v| !v.is_empty())
            .map(|v| v.as_bytes().to_vec())
            .collect();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Masker {
            secrets,
            held: Vec::new(),
        }
    }

    /// Masks `chunk`, returning what can be released now; a tail that could be the start
    /// of a secret is held back until the next chunk or [`Masker::finish`].
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(chunk);
        self.scan(&buf, false)
    }

    /// Releases whatever is held back, masked (it cannot grow into a longer secret now).
    pub fn finish(&mut self) -> Vec<u8> {
        let buf = std::mem::take(&mut self.held);
        self.scan(&buf, true)
    }

    fn scan(&mut self, buf: &[u8], last: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        'scan: while i < buf.len() {
            let rest = &buf[i..];
            // A longer secret may still complete with the next chunk: wait for it.
            if !last
                && self
                    .secrets
                    .iter()
                    .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                self.held = rest.to_vec();
                break;
            }
            for s in &self.secrets {
                if rest.starts_with(s) {
                    out.extend_from_slice(b"***");
                    i += s.len();
                    continue 'scan;
                }
            }
            out.push(buf[i]);
            i += 1;
        }
        out
    }
}

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

/// One output stream's pipeline: mask, then decode.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    masker: Masker,
    utf8: Utf8Decoder,
}

impl TextStream {
    /// A stream masking these secret values.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        TextStream {
            masker: Masker::new(secrets),
            utf8: Utf8Decoder::default(),
        }
    }

    /// Text releasable after `bytes` arrived (may be empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let masked = self.masker.push(bytes);
        self.utf8.push(&masked)
    }

    /// Flushes everything held back.
    pub fn finish(&mut self) -> String {
        let masked = self.masker.finish();
        let mut s = self.utf8.push(&masked);
        s.push_str(&self.utf8.finish());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_in_chunks(secrets: &[&str], input: &[u8], chunk: usize) -> String {
        let mut t = TextStream::new(secrets.iter().copied());
        let mut out = String::new();
        for c in input.chunks(chunk) {
            out.push_str(&t.push(c));
        }
        out.push_str(&t.finish());
        out
    }

    #[test]
    fn secrets_are_masked_whatever_the_chunking() {
        let input = b"token=hunter2 and again hunter2! hunter";
        for chunk in 1..input.len() {
            assert_eq!(
                mask_in_chunks(&["hunter2"], input, chunk),
                "token=*** and again ***! hunter",
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn overlapping_secrets_mask_the_longest() {
        assert_eq!(
            mask_in_chunks(&["abc", "abcdef"], b"xabcdefx abcx", 2),
            "x***x ***x"
        );
    }

    #[test]
    fn no_secrets_passes_through() {
        assert_eq!(
            mask_in_chunks(&[], "héllo wörld".as_bytes(), 1),
            "héllo wörld"
        );
    }

    #[test]
    fn multibyte_characters_survive_any_split() {
        let text = "aé€😀z";
        for chunk in 1..text.len() {
            assert_eq!(mask_in_chunks(&["x"], text.as_bytes(), chunk), text);
        }
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(mask_in_chunks(&[], b"a\xffb\xc3", 1), "a\u{fffd}b\u{fffd}");
    }
}
