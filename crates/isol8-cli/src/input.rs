//! The program's standard input under `isol8 run`: `--stdin TEXT`, or this process's own
//! standard input forwarded as it arrives (when the code came from a file, `-e`, `--cmd`
//! or `--url` and stdin is not a terminal, as `python3 -c` does), then end-of-file.
//!
//! Forwarding is lazy: the program starts at once and gets the bytes as they come, so a
//! caller that leaves its end of our stdin open and writes nothing (Node's
//! `child_process.exec`, for one) does not hang a program that never reads. That needs
//! an interactive run ([`Engine::execute_interactive`] and its buffered form); an engine
//! that cannot do one (a server reached without its WebSocket route) gets the input read
//! to the end first, as the request's `stdin`.

use std::io::{IsTerminal, Read};

use anyhow::{Context, Result};
use isol8::control::{Control, Controller};
use isol8::{Engine, EngineOptions, EventStream, ExecutionRequest, ExecutionResult};

/// Bytes read from standard input per chunk sent to the program.
const CHUNK: usize = 64 << 10;

/// What the program reads besides the request's `stdin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Nothing: the program reads the request's `stdin` (`--stdin`), if any, then
    /// end-of-file. Also when this process's stdin is the code, a terminal or /dev/null.
    Closed,
    /// This process's standard input (a pipe, a file, a socket…), forwarded as it
    /// arrives, then end-of-file.
    Forwarded,
}

/// Where the program's input comes from for these flags: `stdin` is `--stdin`,
/// `code_from_stdin` whether the code itself is read from standard input.
pub fn input(stdin: Option<&str>, code_from_stdin: bool) -> Input {
    if stdin.is_some() || code_from_stdin {
        return Input::Closed;
    }
    let own = std::io::stdin();
    if own.is_terminal() || is_dev_null(&own) {
        Input::Closed
    } else {
        Input::Forwarded
    }
}

/// True when standard input is `/dev/null` (nothing to forward; end-of-file at once).
fn is_dev_null(stdin: &std::io::Stdin) -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(fd) = stdin.as_fd().try_clone_to_owned() else {
        return false;
    };
    let (Ok(meta), Ok(null)) = (
        std::fs::File::from(fd).metadata(),
        std::fs::metadata("/dev/null"),
    ) else {
        return false;
    };
    meta.file_type().is_char_device() && meta.rdev() == null.rdev()
}

/// Streams `req` with `input`: interactive and fed from standard input when forwarded.
pub async fn stream(
    engine: &dyn Engine,
    req: ExecutionRequest,
    input: Input,
) -> Result<EventStream> {
    if input == Input::Closed {
        return Ok(engine.execute_stream(req).await?);
    }
    match engine
        .execute_interactive(req.clone(), &EngineOptions::default())
        .await
    {
        Ok((events, controller)) => {
            forward_stdin(controller);
            Ok(events)
        }
        Err(isol8::Error::NotSupported(why)) => {
            tracing::debug!("{why}; reading standard input to the end first");
            Ok(engine.execute_stream(read_all(req)?).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs `req` to its buffered result with `input`. `full`: the caller needs what only a
/// buffered request returns (output files, network logs), which a remote interactive run
/// does not carry; the input is then read to the end first.
pub async fn buffered(
    engine: &dyn Engine,
    req: ExecutionRequest,
    input: Input,
    full: bool,
) -> Result<ExecutionResult> {
    if input == Input::Closed {
        return Ok(engine.execute(req).await?);
    }
    if !full {
        match engine
            .execute_interactive_buffered(req.clone(), &EngineOptions::default())
            .await
        {
            Ok((result, controller)) => {
                forward_stdin(controller);
                return Ok(result.await?);
            }
            Err(isol8::Error::NotSupported(why)) => {
                tracing::debug!("{why}; reading standard input to the end first");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(engine.execute(read_all(req)?).await?)
}

/// `req` with all of standard input (after its `stdin`, if any) as its `stdin`.
fn read_all(mut req: ExecutionRequest) -> Result<ExecutionRequest> {
    let mut data = String::new();
    std::io::stdin()
        .lock()
        .read_to_string(&mut data)
        .context("cannot read standard input for the program (it must be UTF-8 text when the program cannot read it as it arrives)")?;
    req.stdin = Some(req.stdin.unwrap_or_default() + &data);
    Ok(req)
}

/// Copies standard input to the running program chunk by chunk, then closes its input.
/// Runs on its own thread, since reading blocks; it stops when the program has ended,
/// and a read still waiting then ends with the process.
fn forward_stdin(controller: Controller) {
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let chunk = Control::Stdin(buf[..n].to_vec());
                    if !handle.block_on(controller.send(chunk)) {
                        return; // the program has ended
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The CLI's own one-line message: shown without `-v`.
                    eprintln!(
                        "warning: cannot read standard input ({e}); closing the program's input"
                    );
                    break;
                }
            }
        }
        handle.block_on(controller.send(Control::CloseStdin));
    });
}
