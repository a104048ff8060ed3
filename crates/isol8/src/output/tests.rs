//! Masking and decoding: exact results against a brute-force model, minimal hold-back,
//! phases, and work that grows with the output and the secrets, never with their product.

use super::*;
use StepPhase::{Code, Setup};

fn secrets(values: &[&str]) -> Secrets {
    Secrets::new(values.iter().copied()).expect("compile")
}

fn mask_in_chunks(values: &[&str], input: &[u8], chunk: usize) -> String {
    let mut t = TextStream::new(&secrets(values));
    let mut out = String::new();
    for c in input.chunks(chunk) {
        out.extend(t.push(Code, c).into_iter().map(|(_, s)| s));
    }
    out.extend(t.finish().into_iter().map(|(_, s)| s));
    out
}

/// Phase-tagged text, adjacent segments of one phase joined.
fn joined(segments: Vec<(StepPhase, String)>) -> Vec<(StepPhase, String)> {
    let mut out: Vec<(StepPhase, String)> = Vec::new();
    for (p, s) in segments {
        push_text(&mut out, p, s);
    }
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
fn overlapping_containing_and_adjacent_secrets_are_hidden_whole() {
    assert_eq!(
        mask_in_chunks(&["abc", "abcdef"], b"xabcdefx abcx", 2),
        "x***x ***x"
    );
    // Leftmost-longest replacement would print `***de`: the end of the second secret.
    assert_eq!(mask_in_chunks(&["abc", "cde"], b"xabcdex", 1), "x***x");
    assert_eq!(mask_in_chunks(&["bc", "abcd"], b"abce", 1), "a***e");
    assert_eq!(mask_in_chunks(&["hunter2"], b"hunter2hunter2!", 3), "***!");
}

#[test]
fn no_secrets_passes_through() {
    assert_eq!(
        mask_in_chunks(&[], "héllo wörld".as_bytes(), 1),
        "héllo wörld"
    );
    assert!(secrets(&["", ""]).is_empty());
}

#[test]
fn multibyte_characters_survive_any_split() {
    let text = "aé€😀z";
    for chunk in 1..text.len() {
        assert_eq!(mask_in_chunks(&["x"], text.as_bytes(), chunk), text);
    }
    assert_eq!(mask_in_chunks(&["€😀"], text.as_bytes(), 1), "aé***z");
}

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    assert_eq!(mask_in_chunks(&[], b"a\xffb\xc3", 1), "a\u{fffd}b\u{fffd}");
}

#[test]
fn a_secret_split_between_setup_and_code_is_masked_and_phases_stay_right() {
    let s = secrets(&["hunter2secret"]);
    let mut t = TextStream::new(&s);
    let mut out = t.push(Setup, b"setup says hunter2");
    out.extend(t.push(Code, b"secret\nand then code"));
    out.extend(t.finish());
    assert_eq!(
        joined(out),
        vec![
            (Setup, "setup says ***".to_string()),
            (Code, "\nand then code".to_string())
        ]
    );
    // What the setup phase printed that cannot be a secret is released before the code
    // phase starts; only `hunter2` waits.
    let mut t = TextStream::new(&s);
    assert_eq!(
        t.push(Setup, b"setup says hunter2"),
        vec![(Setup, "setup says ".to_string())]
    );
    // A prefix that the next phase does not complete is printed in its own phase.
    let mut out = t.push(Code, b"!");
    out.extend(t.finish());
    assert_eq!(
        joined(out),
        vec![(Setup, "hunter2".to_string()), (Code, "!".to_string())]
    );
}

#[test]
fn only_what_could_still_become_a_secret_is_held_back() {
    let mut m = Masker::new(&secrets(&["hunter2", "hunter2secret"]));
    assert_eq!(
        m.push(Code, b"Enter your name: "),
        [(Code, b"Enter your name: ".to_vec())]
    );
    assert_eq!(m.held(), 0, "a prompt is released at once");
    assert_eq!(m.push(Code, b"xhun"), [(Code, b"x".to_vec())]);
    assert_eq!(m.held(), 3);
    // `hunter2` is whole but `hunter2secret` may follow: it waits for the next byte.
    assert_eq!(m.push(Code, b"ter2"), []);
    assert_eq!(m.held(), 7);
    assert_eq!(m.push(Code, b"!"), [(Code, b"***!".to_vec())]);
    assert_eq!(m.held(), 0);

    // A whole secret nothing extends is released at once; a suffix of it that may
    // start another secret is still held.
    let mut m = Masker::new(&secrets(&["abcd", "bcdef"]));
    assert_eq!(m.push(Code, b"abcd"), [(Code, b"***".to_vec())]);
    assert_eq!(m.held(), 3, "`bcd` may grow into `bcdef`");
    assert_eq!(m.push(Code, b"ef."), [(Code, b".".to_vec())]);
    assert_eq!(m.finish(), []);
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn text(&mut self, alphabet: &[u8], len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }
}

/// The model: every byte inside an occurrence of a secret is hidden; each maximal hidden
/// run prints `***` in the phase of its first byte.
fn model(values: &[Vec<u8>], text: &[u8], phases: &[StepPhase]) -> Vec<(StepPhase, Vec<u8>)> {
    let mut hidden = vec![false; text.len()];
    for v in values {
        for i in 0..text.len().saturating_sub(v.len() - 1) {
            if text[i..].starts_with(v) {
                hidden[i..i + v.len()].iter_mut().for_each(|h| *h = true);
            }
        }
    }
    let mut out = Vec::new();
    for i in 0..text.len() {
        if !hidden[i] {
            append(&mut out, phases[i], [text[i]]);
        } else if i == 0 || !hidden[i - 1] {
            append(&mut out, phases[i], MASK.bytes());
        }
    }
    out
}

/// The longest suffix of `text` that is a proper prefix of a secret.
fn model_hold(values: &[Vec<u8>], text: &[u8]) -> usize {
    (0..=text.len())
        .rev()
        .find(|&k| {
            k == 0
                || values
                    .iter()
                    .any(|v| v.len() > k && v.starts_with(&text[text.len() - k..]))
        })
        .unwrap_or(0)
}

#[test]
fn masking_matches_the_model_for_random_secrets_text_chunks_and_phases() {
    let mut rng = Rng(0x1505_0123_4567_89AB);
    for round in 0..4000 {
        let values: Vec<Vec<u8>> = (0..1 + rng.below(4))
            .map(|_| {
                let len = 1 + rng.below(5);
                rng.text(b"abc", len)
            })
            .collect();
        let len = rng.below(60);
        let text = rng.text(b"abc\n", len);
        let switch = rng.below(text.len() + 1);
        let phases: Vec<StepPhase> = (0..text.len())
            .map(|i| if i < switch { Setup } else { Code })
            .collect();
        let strs: Vec<&str> = values
            .iter()
            .map(|v| std::str::from_utf8(v).expect("ascii"))
            .collect();
        let mut m = Masker::new(&secrets(&strs));
        let mut out = Vec::new();
        let mut at = 0;
        while at < text.len() {
            let phase = phases[at];
            let mut end = (at + 1 + rng.below(7)).min(text.len());
            if at < switch {
                end = end.min(switch);
            }
            for (p, seg) in m.push(phase, &text[at..end]) {
                append(&mut out, p, seg);
            }
            at = end;
            assert_eq!(
                m.held(),
                model_hold(&values, &text[..at]),
                "round {round}: hold after {:?} with {strs:?}",
                String::from_utf8_lossy(&text[..at])
            );
        }
        for (p, seg) in m.finish() {
            append(&mut out, p, seg);
        }
        assert_eq!(
            out,
            model(&values, &text, &phases),
            "round {round}: {strs:?} in {:?}",
            String::from_utf8_lossy(&text)
        );
    }
}

/// Feeds `text` in `chunk`-byte pieces and returns the masker's work count.
fn work_for(secrets: &Secrets, text: &[u8], chunk: usize) -> (u64, Vec<u8>) {
    let mut m = Masker::new(secrets);
    let mut out = Vec::new();
    for c in text.chunks(chunk) {
        m.push(Code, c).into_iter().for_each(|(_, b)| out.extend(b));
    }
    m.finish().into_iter().for_each(|(_, b)| out.extend(b));
    (m.work, out)
}

fn compiled(values: &[String]) -> Secrets {
    Secrets::new(values.iter().map(String::as_str)).expect("compile")
}

#[test]
fn work_grows_with_output_plus_secrets_not_their_product() {
    // The case that stalled the server: 30,000 secrets and 128 KiB of output. The old
    // masker compared every secret at every byte (about 4 billion comparisons).
    let mut rng = Rng(7);
    let values: Vec<String> = (0..30_000)
        .map(|i| {
            let tail = String::from_utf8(rng.text(b"0123456789abcdef", 12)).expect("hex");
            format!("sk-{i:05}-{tail}")
        })
        .collect();
    let secret_bytes: usize = values.iter().map(String::len).sum();
    let mut text = Vec::new();
    while text.len() < 128 << 10 {
        text.extend_from_slice(b"log line with sk-0 and sk-12345- prefixes ");
        text.extend_from_slice(values[text.len() % values.len()].as_bytes());
        text.push(b'\n');
    }
    let secrets = compiled(&values);
    for chunk in [1, 7, 4096, 64 << 10] {
        let (work, out) = work_for(&secrets, &text, chunk);
        assert!(
            work <= 2 * text.len() as u64 + secret_bytes as u64,
            "chunk {chunk}: {work} steps for {} output bytes",
            text.len()
        );
        // Every value is 21 bytes long: none may be among the output's 21-byte windows.
        let windows: std::collections::HashSet<&[u8]> = out.windows(21).collect();
        assert!(values.iter().all(|v| !windows.contains(v.as_bytes())));
        let lines = text.iter().filter(|&&b| b == b'\n').count();
        assert_eq!(out.windows(3).filter(|w| w == b"***").count(), lines);
    }

    // A long secret whose prefix the output keeps repeating, fed one byte at a time: a
    // masker that rescans what it holds back would do output × secret length steps.
    let values = vec!["a".to_string(), format!("{}b", "a".repeat(4000))];
    let text = vec![b'a'; 200_000];
    let (work, out) = work_for(&compiled(&values), &text, 1);
    assert!(work <= 2 * text.len() as u64 + 4001, "{work} steps");
    assert_eq!(out, b"***");

    // Secrets that end whole and hand over to a shorter one (`…xy`, `…xxy`…): the suffix
    // walks are done once per such state, not per byte.
    let values: Vec<String> = (1..=60).map(|n| "x".repeat(n) + "y").collect();
    let mut text = Vec::new();
    for i in 0..20_000 {
        text.extend(std::iter::repeat_n(b'x', i % 61));
        text.extend_from_slice(b"y.");
    }
    let secret_bytes: usize = values.iter().map(String::len).sum();
    let (work, _) = work_for(&compiled(&values), &text, 3);
    assert!(
        work <= 2 * text.len() as u64 + 64 * secret_bytes as u64,
        "{work} steps for {} bytes",
        text.len()
    );
}

#[test]
fn whole_texts_errors_logs_and_files_are_masked() {
    let s = secrets(&["hunter2secret"]);
    assert!(matches!(s.mask_str("nothing here"), Cow::Borrowed(_)));
    assert_eq!(s.mask_str("a hunter2secret b"), "a *** b");
    assert!(!format!("{s:?}").contains("hunter2"), "Debug shows values");

    let e = s.mask_error(Error::PackageInstall {
        installer: "pip".into(),
        exit_code: 1,
        output: "ERROR: No matching distribution found for hunter2secret".into(),
    });
    assert!(
        matches!(&e, Error::PackageInstall { output, .. } if output.ends_with("for ***")),
        "{e:?}"
    );
    let e = s.mask_error(Error::InvalidRequest(
        "cannot write /sandbox/hunter2secret/x".into(),
    ));
    assert!(matches!(&e, Error::InvalidRequest(m) if m == "cannot write /sandbox/***/x"));
    let e = s.mask_error(Error::Io {
        op: "reading".into(),
        source: std::io::Error::other("got hunter2secret"),
    });
    assert!(!e.to_string().contains("hunter2secret"), "{e}");
    let e = s.mask_error(Error::docker(
        "create container",
        crate::error::ApiError::failed("bad hunter2secret"),
    ));
    assert!(
        matches!(&e, Error::Sandbox(m) if m.to_string() == "docker create container failed: bad ***"),
        "{e:?}"
    );
    assert!(matches!(s.mask_error(Error::Stopped), Error::Stopped));

    let mut logs = vec![NetworkLog {
        timestamp: "2025-01-01T00:00:00.000Z".into(),
        method: "GET".into(),
        host: "hunter2secret.example".into(),
        path: "/?t=hunter2secret".into(),
        action: "BLOCK".into(),
        duration_ms: 1,
    }];
    s.mask_network_logs(&mut logs);
    assert_eq!(
        (logs[0].host.as_str(), logs[0].path.as_str()),
        ("***.example", "/?t=***")
    );

    let b64 = base64::engine::general_purpose::STANDARD;
    let mut files = BTreeMap::from([
        (
            "/sandbox/a.txt".to_string(),
            b64.encode("key=hunter2secret\n"),
        ),
        (
            "/sandbox/b.bin".to_string(),
            b64.encode(b"\x00\xffhunter2secret\x00"),
        ),
        ("/sandbox/c.bin".to_string(), b64.encode(b"\x00\xffclean")),
    ]);
    let changed = s.mask_files(&mut files);
    assert_eq!(changed, ["/sandbox/a.txt", "/sandbox/b.bin"]);
    let decoded = |p: &str| b64.decode(&files[p]).expect("base64");
    assert_eq!(decoded("/sandbox/a.txt"), b"key=***\n");
    assert_eq!(decoded("/sandbox/b.bin"), b"\x00\xff***\x00");
    assert_eq!(decoded("/sandbox/c.bin"), b"\x00\xffclean");
}
