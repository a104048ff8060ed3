//! Randomised robustness tests of everything that parses bytes from the other side of a
//! trust boundary: the frame decoder (incremental and blocking), output payloads, and the
//! JSON of control frames and public requests. Deterministic (a fixed-seed generator), so
//! a failure reproduces; `ISOL8_FUZZ_ITERS` makes a longer run locally.
//!
//! Properties: no input makes a parser panic or allocate beyond the frame limit; valid
//! frame streams decode to exactly the frames encoded, whatever the chunking; the
//! incremental and blocking decoders agree.

use isol8_protocol::agent::{
    decode_output, encode_output, read_frame, ExecSpec, Frame, FrameDecoder, Kind, StepPhase,
    Stream, MAX_PAYLOAD,
};
use isol8_protocol::{EngineOptions, ExecutionRequest};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn iterations() -> usize {
    std::env::var("ISOL8_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

const KINDS: [Kind; 10] = [
    Kind::Hello,
    Kind::Output,
    Kind::Exited,
    Kind::ExecFailed,
    Kind::ResetDone,
    Kind::Exec,
    Kind::Stdin,
    Kind::StdinClose,
    Kind::Signal,
    Kind::Reset,
];

fn random_frames(rng: &mut Rng) -> Vec<Frame> {
    (0..rng.below(6))
        .map(|_| {
            let len = if rng.below(10) == 0 {
                rng.below(70_000)
            } else {
                rng.below(40)
            };
            let kind = KINDS[rng.below(KINDS.len())];
            Frame {
                kind,
                payload: rng.bytes(len),
            }
        })
        .collect()
}

/// Decodes `bytes` fed in random chunks; Err on the first protocol error.
fn decode_chunked(rng: &mut Rng, bytes: &[u8]) -> Result<Vec<Frame>, String> {
    let mut dec = FrameDecoder::new();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let n = 1 + rng.below(64.min(bytes.len() - i));
        dec.push(&bytes[i..i + n]);
        i += n;
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.payload.len() <= MAX_PAYLOAD);
                    out.push(f);
                }
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Ok(out)
}

fn decode_blocking(bytes: &[u8]) -> Result<Vec<Frame>, String> {
    let mut r = bytes;
    let mut out = Vec::new();
    loop {
        match read_frame(&mut r) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return Ok(out),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[test]
fn valid_streams_decode_exactly_whatever_the_chunking() {
    let mut rng = Rng(0x1501_8001);
    for _ in 0..iterations() {
        let frames = random_frames(&mut rng);
        let mut bytes = Vec::new();
        for f in &frames {
            f.encode_into(&mut bytes);
        }
        assert_eq!(
            decode_chunked(&mut rng, &bytes).expect("valid stream"),
            frames
        );
        assert_eq!(decode_blocking(&bytes).expect("valid stream"), frames);
    }
}

#[test]
fn mutated_and_random_streams_never_panic() {
    let mut rng = Rng(0xdead_beef_1234);
    for i in 0..iterations() {
        let mut bytes = Vec::new();
        for f in random_frames(&mut rng) {
            f.encode_into(&mut bytes);
        }
        if i % 3 == 0 || bytes.is_empty() {
            let n = rng.below(200);
            bytes = rng.bytes(n);
        } else {
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                bytes.truncate(rng.below(bytes.len()));
            }
        }
        let chunked = decode_chunked(&mut rng, &bytes);
        let blocking = decode_blocking(&bytes);
        // Both decoders accept the same complete frames; a stream both consider valid
        // decodes identically (the blocking reader also reports a torn final frame).
        if let (Ok(a), Ok(b)) = (&chunked, &blocking) {
            assert_eq!(a, b);
        }
        if chunked.is_err() {
            assert!(
                blocking.is_err(),
                "incremental decoder rejected what the blocking reader accepted"
            );
        }
        for f in chunked.unwrap_or_default() {
            if f.kind == Kind::Output {
                let _ = decode_output(&f.payload);
            }
            let _ = f.parse::<ExecSpec>();
        }
    }
}

#[test]
fn output_payloads_round_trip() {
    let mut rng = Rng(42);
    for _ in 0..iterations() {
        let data = {
            let n = rng.below(300);
            rng.bytes(n)
        };
        let stream = if rng.below(2) == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        let phase = if rng.below(2) == 0 {
            StepPhase::Setup
        } else {
            StepPhase::Code
        };
        let mut bytes = Vec::new();
        encode_output(stream, phase, &data, &mut bytes);
        let frames = decode_blocking(&bytes).expect("one frame");
        assert_eq!(
            decode_output(&frames[0].payload).expect("valid"),
            (stream, phase, &data[..])
        );
    }
}

#[test]
fn request_json_parsing_never_panics() {
    let seeds = [
        r#"{"runtime":"python","code":"print(1)","timeoutMs":5,"env":{"A":"b"},"files":{"a":"b"}}"#,
        r#"{"memoryLimit":"512m","cpuLimit":1.5,"poolSize":{"clean":1,"dirty":2},"security":{"seccomp":"strict"}}"#,
        r#"{"protocol":1,"steps":[{"phase":"code","argv":["bash"]}],"env":{},"cwd":"/sandbox","timeoutMs":1,"maxOutputBytes":1,"maxReadBytes":1}"#,
    ];
    let mut rng = Rng(7);
    for _ in 0..iterations() {
        let mut bytes = seeds[rng.below(seeds.len())].as_bytes().to_vec();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[at] = rng.next() as u8,
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, b"{}[]\",:0-e"[rng.below(10)]),
            }
        }
        let _ = serde_json::from_slice::<ExecutionRequest>(&bytes);
        let _ = serde_json::from_slice::<EngineOptions>(&bytes);
        let _ = serde_json::from_slice::<ExecSpec>(&bytes);
    }
}
