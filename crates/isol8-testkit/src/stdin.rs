//! Programs that read standard input, shared by the tests of every path that feeds it
//! (library, CLI local and remote, server-sent events, WebSocket, `RemoteEngine`): each
//! must see exactly the input it was given and then end-of-file, or end-of-file at once
//! when it was given none.

use futures_util::StreamExt;
use isol8::control::{Control, Controller};
use isol8::{
    Engine, EngineOptions, ExecutionRequest, ExecutionResult, StreamEvent, StreamEventType,
};

/// Sends `data` to a running program in chunks of at most 64 KiB, then end-of-file.
pub async fn feed(controller: &Controller, data: &str) {
    for chunk in data.as_bytes().chunks(64 << 10) {
        assert!(controller.send(Control::Stdin(chunk.to_vec())).await);
    }
    assert!(controller.send(Control::CloseStdin).await);
}

/// Standard output of `events` and the exit status (`None` without an exit event); an
/// `error` event fails the test.
pub fn stdout_and_exit(events: &[StreamEvent]) -> (String, Option<String>) {
    let mut out = String::new();
    let mut exit = None;
    for e in events {
        match e.kind {
            StreamEventType::Stdout => out.push_str(&e.data),
            StreamEventType::Stderr => {}
            StreamEventType::Exit => exit = Some(e.data.clone()),
            StreamEventType::Error => panic!("error event: {}", e.data),
        }
    }
    (out, exit)
}

/// Runs `req` interactively on `engine` twice, each fed `rest` after the request's own
/// `stdin` and then end-of-file: streamed ([`Engine::execute_interactive`], its
/// [`stdout_and_exit`]) and buffered ([`Engine::execute_interactive_buffered`], its
/// result).
pub async fn interactive_both(
    engine: &dyn Engine,
    req: ExecutionRequest,
    rest: &str,
) -> ((String, Option<String>), ExecutionResult) {
    let (events, controller) = engine
        .execute_interactive(req.clone(), &EngineOptions::default())
        .await
        .expect("start an interactive run");
    feed(&controller, rest).await;
    let events: Vec<StreamEvent> = events.collect().await;
    let (result, controller) = engine
        .execute_interactive_buffered(req, &EngineOptions::default())
        .await
        .expect("start an interactive buffered run");
    feed(&controller, rest).await;
    let result = result.await.expect("the buffered result");
    (stdout_and_exit(&events), result)
}

/// The input every [`StdinCase`] is given.
pub const INPUT: &str = "alpha\nbeta\n";

/// A program that reads its standard input to the end.
#[derive(Debug, Clone, Copy)]
pub struct StdinCase {
    /// What it is, for assertion messages.
    pub name: &'static str,
    /// Its runtime.
    pub runtime: &'static str,
    /// Its code.
    pub code: &'static str,
    /// Its stdout after reading [`INPUT`] and then end-of-file.
    pub with_input: &'static str,
    /// Its stdout when it meets end-of-file at once.
    pub without_input: &'static str,
}

/// Python's `sys.stdin.read()`, `input()` until `EOFError`, and Node's `readline`.
pub const STDIN_CASES: [StdinCase; 3] = [
    StdinCase {
        name: "python sys.stdin.read()",
        runtime: "python",
        code: "import sys\nd = sys.stdin.read()\nprint(len(d), d.upper().split())",
        with_input: "11 ['ALPHA', 'BETA']\n",
        without_input: "0 []\n",
    },
    StdinCase {
        name: "python input()",
        runtime: "python",
        code: "got = []\nwhile True:\n    try:\n        got.append(input())\n    except EOFError:\n        break\nprint('+'.join(got + ['eof']))",
        with_input: "alpha+beta+eof\n",
        without_input: "eof\n",
    },
    StdinCase {
        name: "node readline",
        runtime: "node",
        code: "const rl = require('readline').createInterface({ input: process.stdin });\nconst got = [];\nrl.on('line', (l) => got.push(l.toUpperCase()));\nrl.on('close', () => console.log([...got, 'closed'].join(',')));",
        with_input: "ALPHA,BETA,closed\n",
        without_input: "closed\n",
    },
];

/// Bytes [`BIG_IO_CODE`] prints before it reads.
pub const BIG_OUTPUT_BYTES: usize = 600_000;

/// A Python program that prints [`BIG_OUTPUT_BYTES`] bytes (and a newline) before it
/// reads its whole standard input, then prints the bytes and lines it read: a feeder that
/// waited for the program to read before relaying its output would deadlock.
pub const BIG_IO_CODE: &str = "import sys\nsys.stdout.write('x' * 600000 + '\\n')\nsys.stdout.flush()\ndata = sys.stdin.buffer.read()\nprint(len(data), data.count(b'\\n'))";

/// The 120,000 bytes (1200 lines) [`BIG_IO_CODE`] is given.
pub fn big_input() -> String {
    format!("{}\n", "y".repeat(99)).repeat(1200)
}

/// What [`BIG_IO_CODE`] prints after reading [`big_input`].
pub fn big_output() -> String {
    format!("{}\n120000 1200\n", "x".repeat(BIG_OUTPUT_BYTES))
}

/// Asserts `out` is [`big_output`] without printing 600 kB when it is not.
pub fn assert_big_output(out: &str, context: &str) {
    let want = big_output();
    if out != want {
        let tail: String = out
            .chars()
            .rev()
            .take(80)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        panic!(
            "{context}: expected {} bytes ending in \"120000 1200\\n\", got {} bytes ending in {tail:?}",
            want.len(),
            out.len()
        );
    }
}
