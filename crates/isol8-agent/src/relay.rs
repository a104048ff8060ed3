//! The agent's end of the `filtered` network: a byte relay from `127.0.0.1:PORT` inside
//! the sandbox to the engine's proxy socket, bind-mounted into the container.
//!
//! The relay decides nothing: it copies bytes. Parsing, host rules, DNS and the address
//! checks all happen in the engine's proxy, outside the sandbox. One thread multiplexes
//! every connection with `poll(2)`, so a program opening many connections cannot make
//! the agent spend the container's PID budget on threads.
//!
//! A reset closes every relayed connection and drops connections still waiting to be
//! accepted ([`Relay::close_all`]): nothing a program opened outlives its execution in
//! the agent, and the next execution starts with the relay's full capacity.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::log;

/// Bytes buffered per direction of a connection.
const BUF: usize = 64 << 10;
/// Connections relayed at once; more are closed at accept.
const MAX_PAIRS: usize = 256;

/// How long [`Relay::close_all`] waits for the relay thread to answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The agent's handle on the running relay.
pub struct Relay {
    /// Write end of the pipe that wakes the relay's `poll`.
    wake: File,
    /// Requests to close everything; each is answered with the number of connections closed.
    requests: Sender<Sender<usize>>,
    /// False once the relay thread has ended.
    alive: Arc<AtomicBool>,
}

impl Relay {
    /// Closes every relayed connection and every connection waiting to be accepted,
    /// returning how many were relayed. Called when no program is running, so all of them
    /// belong to executions that are over. Fails when the relay has stopped or does not
    /// answer within 2 s (the sandbox then must not be reused).
    pub fn close_all(&self) -> Result<usize, String> {
        if !self.alive.load(Ordering::SeqCst) {
            return Err("the egress relay has stopped".into());
        }
        let (tx, rx) = mpsc::channel();
        self.requests
            .send(tx)
            .map_err(|_| "the egress relay has stopped".to_string())?;
        // A full pipe already holds a wake-up: nothing is lost when this write fails.
        let _ = (&self.wake).write(&[1]);
        rx.recv_timeout(CLOSE_TIMEOUT)
            .map_err(|_| "the egress relay did not close its connections within 2 s".to_string())
    }
}

/// Marks the relay as ended when its thread returns or unwinds.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Binds the listener now (before any user code runs, so the port cannot be taken) and
/// relays in a thread of its own.
pub fn start(socket: PathBuf, port: u16) -> io::Result<Relay> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    let (wake_rx, wake) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let (requests, pending) = mpsc::channel();
    let alive = Arc::new(AtomicBool::new(true));
    let guard = AliveGuard(alive.clone());
    thread::Builder::new()
        .name("egress-relay".into())
        .spawn(move || {
            let _guard = guard;
            run(listener, socket, wake_rx, pending)
        })?;
    Ok(Relay {
        wake,
        requests,
        alive,
    })
}

/// One relayed connection: the program's TCP stream and the proxy's Unix stream.
struct Pair {
    tcp: TcpStream,
    unix: UnixStream,
    /// Read from the program, not yet written to the proxy.
    up: Vec<u8>,
    /// Read from the proxy, not yet written to the program.
    down: Vec<u8>,
    tcp_eof: bool,
    unix_eof: bool,
    up_shut: bool,
    down_shut: bool,
}

/// Index in the poll set of the first connection's first descriptor (after the listener
/// and the wake-up pipe).
const FIRST_PAIR: usize = 2;

fn run(listener: TcpListener, socket: PathBuf, mut wake: File, requests: Receiver<Sender<usize>>) {
    let mut pairs: Vec<Pair> = Vec::new();
    loop {
        let mut fds = vec![
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        for p in &pairs {
            let want = |eof: bool, inbuf: &Vec<u8>, outbuf: &Vec<u8>| {
                let mut ev = 0;
                if !eof && inbuf.len() < BUF {
                    ev |= libc::POLLIN;
                }
                if !outbuf.is_empty() {
                    ev |= libc::POLLOUT;
                }
                ev
            };
            // A side with nothing to wait for is left out (fd -1), so a hung-up peer
            // does not wake the loop over and over.
            for (fd, events) in [
                (p.tcp.as_raw_fd(), want(p.tcp_eof, &p.up, &p.down)),
                (p.unix.as_raw_fd(), want(p.unix_eof, &p.down, &p.up)),
            ] {
                fds.push(libc::pollfd {
                    fd: if events == 0 { -1 } else { fd },
                    events,
                    revents: 0,
                });
            }
        }
        // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log("egress relay: poll failed; stopping");
            return;
        }
        if fds[1].revents != 0 {
            let mut drained = [0u8; 64];
            while matches!(wake.read(&mut drained), Ok(n) if n > 0) {}
            while let Ok(reply) = requests.try_recv() {
                let closed = pairs.len();
                pairs.clear();
                drop_pending(&listener);
                let _ = reply.send(closed);
            }
            continue;
        }
        let mut active = vec![false; pairs.len()];
        for (i, slot) in active.iter_mut().enumerate() {
            *slot =
                fds[FIRST_PAIR + 2 * i].revents != 0 || fds[FIRST_PAIR + 1 + 2 * i].revents != 0;
        }
        let mut i = 0;
        pairs.retain_mut(|p| {
            let keep = !active[i] || pump(p);
            i += 1;
            keep
        });
        if fds[0].revents != 0 {
            accept_all(&listener, &socket, &mut pairs);
        }
    }
}

/// Accepts and closes every connection waiting in the listener's backlog.
fn drop_pending(listener: &TcpListener) {
    // Bounded: connections aborted while queued answer errors other than WouldBlock.
    for _ in 0..4096 {
        if let Err(e) = listener.accept() {
            if e.kind() == io::ErrorKind::WouldBlock {
                return;
            }
        }
    }
}

fn accept_all(listener: &TcpListener, socket: &PathBuf, pairs: &mut Vec<Pair>) {
    loop {
        let tcp = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => return,
        };
        if pairs.len() >= MAX_PAIRS {
            continue; // dropped: the program sees the connection closed
        }
        let unix = match UnixStream::connect(socket) {
            Ok(u) => u,
            Err(e) => {
                log(&format!("egress relay: cannot reach the proxy: {e}"));
                continue;
            }
        };
        if tcp.set_nonblocking(true).is_err() || unix.set_nonblocking(true).is_err() {
            continue;
        }
        let _ = tcp.set_nodelay(true);
        pairs.push(Pair {
            tcp,
            unix,
            up: Vec::with_capacity(BUF),
            down: Vec::with_capacity(BUF),
            tcp_eof: false,
            unix_eof: false,
            up_shut: false,
            down_shut: false,
        });
    }
}

/// Moves what can be moved without blocking; `false` when the pair is finished.
fn pump(p: &mut Pair) -> bool {
    let ok = fill(&mut p.tcp, &mut p.up, &mut p.tcp_eof)
        && drain(&mut p.unix, &mut p.up)
        && fill(&mut p.unix, &mut p.down, &mut p.unix_eof)
        && drain(&mut p.tcp, &mut p.down);
    if !ok {
        return false;
    }
    if p.tcp_eof && p.up.is_empty() && !p.up_shut {
        let _ = p.unix.shutdown(Shutdown::Write);
        p.up_shut = true;
    }
    if p.unix_eof && p.down.is_empty() && !p.down_shut {
        let _ = p.tcp.shutdown(Shutdown::Write);
        p.down_shut = true;
    }
    !(p.up_shut && p.down_shut)
}

/// Reads into `buf` up to [`BUF`] bytes; `false` on a hard error.
fn fill<R: Read>(r: &mut R, buf: &mut Vec<u8>, eof: &mut bool) -> bool {
    let mut chunk = [0u8; 16 << 10];
    while !*eof && buf.len() < BUF {
        let room = (BUF - buf.len()).min(chunk.len());
        match r.read(&mut chunk[..room]) {
            Ok(0) => *eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Writes out as much of `buf` as the peer takes; `false` on a hard error.
fn drain<W: Write>(w: &mut W, buf: &mut Vec<u8>) -> bool {
    while !buf.is_empty() {
        match w.write(buf) {
            Ok(0) => return false,
            Ok(n) => {
                buf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
