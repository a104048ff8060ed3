//! The main thread's inbox: the engine's frames, read by the main thread itself, and the
//! other threads' messages (the reaper's exits, the pipe readers' ends of file).
//!
//! The main thread waits for both in one `ppoll`: on the engine's stream (the data socket,
//! or stdin) and on an `eventfd` that every [`Notifier::send`] bumps after queueing its
//! message. A frame thus wakes the thread that acts on it directly: a reader thread
//! between them would add one wake-up of a sleeping thread (tens of microseconds on a
//! virtual machine) to every execution's start.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use isol8_protocol::agent::FrameDecoder;

use crate::Event;

/// Bytes read from the engine's stream at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Sends messages to the main thread (cloned into every thread that reports to it).
#[derive(Clone)]
pub struct Notifier {
    tx: Sender<Event>,
    wake: Arc<OwnedFd>,
}

impl Notifier {
    /// Queues `ev` for the main thread and wakes it. Fails when the main thread's inbox
    /// is gone.
    pub fn send(&self, ev: Event) -> Result<(), mpsc::SendError<Event>> {
        self.tx.send(ev)?;
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our own eventfd. A full counter
        // (EAGAIN, after 2^64-2 unread wake-ups) still leaves it readable: nothing lost.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        Ok(())
    }
}

/// What the main thread waits on. See the module documentation.
pub struct Inbox {
    input: File,
    decoder: FrameDecoder,
    /// The engine's stream ended or broke: reported once as [`Event::EngineGone`].
    ended: Option<String>,
    rx: Receiver<Event>,
    wake: Arc<OwnedFd>,
    /// Frames decoded but not yet returned.
    frames: VecDeque<Event>,
    buf: Vec<u8>,
}

impl Inbox {
    /// An inbox reading the engine's frames from `input` (the data socket, or stdin),
    /// and the [`Notifier`] the other threads send through.
    pub fn new(input: OwnedFd) -> io::Result<(Inbox, Notifier)> {
        // SAFETY: eventfd with flags only; the descriptor is checked and owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just created and owned by nothing else.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let (tx, rx) = mpsc::channel();
        let inbox = Inbox {
            input: File::from(input),
            decoder: FrameDecoder::new(),
            ended: None,
            rx,
            wake: wake.clone(),
            frames: VecDeque::new(),
            buf: vec![0; READ_CHUNK],
        };
        Ok((inbox, Notifier { tx, wake }))
    }

    /// The next message, waiting as long as it takes.
    pub fn recv(&mut self) -> Event {
        loop {
            if let Some(ev) = self.recv_until(None) {
                return ev;
            }
        }
    }

    /// The next message, or `None` after `timeout` without one.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Event> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Option<Event> {
        loop {
            if let Ok(ev) = self.rx.try_recv() {
                return Some(ev);
            }
            if let Some(ev) = self.frames.pop_front() {
                return Some(ev);
            }
            if let Some(why) = self.ended.take() {
                // Once: the main thread shuts down on it.
                return Some(Event::EngineGone(why));
            }
            let wait = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return None,
                },
            };
            let (input_ready, _) = self.poll(wait);
            if input_ready {
                self.read_input();
            }
        }
    }

    /// Waits (at most `wait`) until the engine's stream or the eventfd is readable;
    /// returns which. Drains the eventfd.
    fn poll(&self, wait: Option<Duration>) -> (bool, bool) {
        let mut fds = [
            libc::pollfd {
                fd: self.input.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ts = wait.map(|w| libc::timespec {
            tv_sec: w.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(w.subsec_nanos() as i32),
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: two valid pollfds; the timeout is null or a live timespec; no signal
        // mask change.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, ts_ptr, std::ptr::null()) };
        if n <= 0 {
            // Timeout, or EINTR: the caller looks again.
            return (false, false);
        }
        let woken = fds[1].revents != 0;
        if woken {
            let mut count = [0u8; 8];
            // SAFETY: reads 8 bytes into a live buffer from our own non-blocking eventfd.
            unsafe { libc::read(self.wake.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        }
        (fds[0].revents != 0, woken)
    }

    /// Reads what the engine's stream has (it was readable) and decodes its frames.
    fn read_input(&mut self) {
        match self.input.read(&mut self.buf) {
            Ok(0) => self.ended = Some("the engine closed the connection".into()),
            Ok(n) => {
                self.decoder.push(&self.buf[..n]);
                loop {
                    match self.decoder.next_frame() {
                        Ok(Some(f)) => self.frames.push_back(Event::Frame(f)),
                        Ok(None) => break,
                        Err(e) => {
                            // Nothing after a corrupt frame can be trusted: the main
                            // thread shuts down on it.
                            self.ended = Some(format!("bad frame from the engine: {e}"));
                            break;
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => self.ended = Some(format!("bad frame from the engine: {e}")),
        }
    }
}
