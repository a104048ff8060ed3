//! The engine's side of the agent protocol: bytes a (compromised) agent writes to the
//! container's stdout, fed in chunks to the engine's incremental [`FrameDecoder`], and each
//! frame handled as the engine handles it (`docker/sandbox.rs` and `docker/mod.rs`): the
//! hello, output payloads through the secret-masking UTF-8 [`TextStream`] (one per stream,
//! continuous across phases), and the JSON of `Exited`, `ExecFailed` and `ResetDone`.
//!
//! Input: `[chunk seed][stream bytes…]`. Properties: nothing panics; the decoder returns
//! exactly the frames of a re-encoding of what it returned (whatever the chunking); a
//! secret never survives masking, however the output is split between chunks and phases.

#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use isol8::output::{Secrets, TextStream};
use isol8_protocol::agent::{
    decode_output, ExecFailed, Exited, Frame, FrameDecoder, FrameError, Hello, Kind, ResetDone,
    HEADER_LEN, MAX_PAYLOAD,
};
use libfuzzer_sys::fuzz_target;

const SECRETS: [&str; 2] = ["s3cr3t", "tok-ab"];

fn secrets() -> &'static Secrets {
    static COMPILED: OnceLock<Secrets> = OnceLock::new();
    COMPILED.get_or_init(|| Secrets::new(SECRETS).expect("two short secrets compile"))
}

/// Decodes `bytes` fed in chunks whose sizes `next_size` picks.
fn decode(mut next_size: impl FnMut() -> usize, bytes: &[u8]) -> (Vec<Frame>, Option<FrameError>) {
    let mut dec = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let n = next_size().clamp(1, bytes.len() - i);
        dec.push(&bytes[i..i + n]);
        i += n;
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.payload.len() <= MAX_PAYLOAD);
                    frames.push(f);
                }
                Ok(None) => break,
                // The engine abandons the stream (and destroys the container) here.
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    assert!(dec.pending() < HEADER_LEN + MAX_PAYLOAD);
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    // Chunk sizes cycle through 1..=seed%61+1, as reads of a socket might return them.
    let max = usize::from(seed % 61) + 1;
    let mut step = 0;
    let (frames, err) = decode(
        || {
            step = step % max + 1;
            step
        },
        stream,
    );

    // Whatever the chunking, the same frames come out: the bytes they occupy re-encode
    // them exactly, and one-shot decoding agrees.
    let used: usize = frames.iter().map(|f| HEADER_LEN + f.payload.len()).sum();
    let mut again = Vec::with_capacity(used);
    for f in &frames {
        f.encode_into(&mut again);
    }
    assert_eq!(
        &again[..],
        &stream[..used],
        "re-encoding differs from the input"
    );
    let (frames2, err2) = decode(|| usize::MAX, stream);
    assert_eq!(frames, frames2, "chunking changed the frames");
    assert_eq!(err, err2, "chunking changed the error");

    // Each frame as the engine treats it.
    let mut texts: HashMap<u8, (TextStream, Vec<u8>)> = HashMap::new();
    for f in &frames {
        match f.kind {
            Kind::Hello => {
                let _ = f.parse::<Hello>();
            }
            Kind::Output => {
                if let Ok((s, p, bytes)) = decode_output(&f.payload) {
                    let (t, out) = texts
                        .entry(s as u8)
                        .or_insert_with(|| (TextStream::new(secrets()), Vec::new()));
                    for (_, text) in t.push(p, bytes) {
                        out.extend_from_slice(text.as_bytes());
                    }
                }
            }
            Kind::Exited => {
                if let Ok(e) = f.parse::<Exited>() {
                    let _ = (e.stdout.total_bytes, e.files.len());
                }
            }
            Kind::ExecFailed => {
                let _ = f.parse::<ExecFailed>();
            }
            Kind::ResetDone => {
                let _ = f.parse::<ResetDone>();
            }
            // Engine-to-agent kinds from the agent: the engine fails the run.
            _ => {}
        }
    }
    for (mut t, mut out) in texts.into_values() {
        for (_, text) in t.finish() {
            out.extend_from_slice(text.as_bytes());
        }
        for s in SECRETS {
            assert!(
                !out.windows(s.len()).any(|w| w == s.as_bytes()),
                "secret {s:?} survived masking"
            );
        }
    }
});
