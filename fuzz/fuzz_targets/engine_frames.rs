//! The agent's side of the protocol: bytes arriving on the agent's stdin, read with the
//! blocking [`read_frame`] the agent uses (through a reader returning short reads), and
//! each frame handled as the agent handles it (`crates/isol8-agent/src/main.rs`): the JSON
//! of `Exec`, `Reset` and `Signal`, and `Stdin` payloads.
//!
//! Input: `[chunk seed][stream bytes…]`. Properties: nothing panics; the blocking reader
//! and the engine's incremental [`FrameDecoder`] agree frame for frame, and on where the
//! stream goes bad.

#![no_main]

use std::io::{self, Read};

use isol8_protocol::agent::{
    read_frame, ExecSpec, Frame, FrameDecoder, Kind, ResetSpec, SignalSpec, HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

/// A reader returning at most `max` bytes per read (sizes cycling through `1..=max`), and
/// `Interrupted` now and then, as a pipe may.
struct ShortReads<'a> {
    data: &'a [u8],
    max: usize,
    step: usize,
    calls: usize,
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(7) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        self.step = self.step % self.max + 1;
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut reader = ShortReads {
        data: stream,
        max: usize::from(seed % 61) + 1,
        step: 0,
        calls: 0,
    };
    let mut frames: Vec<Frame> = Vec::new();
    let ended_cleanly = loop {
        match read_frame(&mut reader) {
            Ok(Some(f)) => {
                // As the agent's main loop and its per-execution handler do.
                match f.kind {
                    Kind::Exec => {
                        if let Ok(spec) = f.parse::<ExecSpec>() {
                            let _ = (spec.steps.len(), spec.files.len(), spec.env.len());
                        }
                    }
                    Kind::Reset => {
                        let _ = f.parse::<ResetSpec>();
                    }
                    Kind::Signal => {
                        let _ = f.parse::<SignalSpec>();
                    }
                    Kind::Stdin | Kind::StdinClose => {}
                    // Agent-to-engine kinds: logged and ignored by the agent.
                    _ => {}
                }
                frames.push(f);
            }
            Ok(None) => break true,
            // The agent treats the engine as gone and shuts down.
            Err(_) => break false,
        }
    };

    // The incremental decoder sees the same frames.
    let mut dec = FrameDecoder::new();
    dec.push(stream);
    let mut inc = Vec::new();
    let inc_err = loop {
        match dec.next_frame() {
            Ok(Some(f)) => inc.push(f),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert_eq!(frames, inc, "blocking and incremental decoders disagree");
    let used: usize = frames.iter().map(|f| HEADER_LEN + f.payload.len()).sum();
    if ended_cleanly {
        assert!(
            !inc_err && used == stream.len(),
            "clean end, yet bytes were left"
        );
    } else {
        assert!(
            inc_err || dec.pending() > 0,
            "the blocking reader failed where the stream was fine"
        );
    }
});
