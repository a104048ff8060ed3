//! The agent's end of the `filtered` network: a byte relay from `127.0.0.1:PORT` inside
//! the sandbox to the engine's proxy socket, bind-mounted into the container.
//!
//! The relay decides nothing: it copies bytes. Parsing, host rules, DNS and the address
//! checks all happen in the engine's proxy, outside the sandbox. One thread multiplexes
//! every connection with `poll(2)`, so a program opening many connections cannot make
//! the agent spend the container's PID budget on threads.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;

use crate::log;

/// Bytes buffered per direction of a connection.
const BUF: usize = 64 << 10;
/// Connections relayed at once; more are closed at accept.
const MAX_PAIRS: usize = 256;

/// Binds the listener now (before any user code runs, so the port cannot be taken) and
/// relays in a thread of its own.
pub fn start(socket: PathBuf, port: u16) -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    thread::Builder::new()
        .name("egress-relay".into())
        .spawn(move || run(listener, socket))?;
    Ok(())
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

fn run(listener: TcpListener, socket: PathBuf) {
    let mut pairs: Vec<Pair> = Vec::new();
    loop {
        let mut fds = vec![libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
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
        let mut active = vec![false; pairs.len()];
        for (i, slot) in active.iter_mut().enumerate() {
            *slot = fds[1 + 2 * i].revents != 0 || fds[2 + 2 * i].revents != 0;
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
