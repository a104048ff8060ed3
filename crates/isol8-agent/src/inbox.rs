//! The main thread's inbox: the engine's frames, read by the main thread itself, and the
//! other threads' messages (the reaper's exits, the pipe readers' ends of file).
//!
//! The main thread waits for both in one `ppoll`: on the engine's stream (the data socket,
//! or stdin), on an `eventfd` that every [`Notifier::send`] bumps after queueing its
//! message, and on the `pidfd` of the step's process while one runs
//! ([`Inbox::watch_exit`]). A frame, or the step's exit, thus wakes the thread that acts
//! on it directly: a reader thread, or the reaper, between them would add one wake-up of
//! a sleeping thread (tens of microseconds on a virtual machine) to every execution.

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
    /// The `pidfd` of the step's process, returned as [`Event::Exited`] once readable.
    exit_watch: Option<OwnedFd>,
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
            exit_watch: None,
            buf: vec![0; READ_CHUNK],
        };
        Ok((inbox, Notifier { tx, wake }))
    }

    /// Watches `pidfd` (the step's process; `None`: nothing): once it is readable (the
    /// process exited), the next message is [`Event::Exited`] with it.
    pub fn watch_exit(&mut self, pidfd: Option<OwnedFd>) {
        self.exit_watch = pidfd;
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
            let (input_ready, exited) = self.poll(wait);
            if input_ready {
                self.read_input();
            }
            if exited {
                if let Some(fd) = self.exit_watch.take() {
                    return Some(Event::Exited(fd));
                }
            }
        }
    }

    /// Waits (at most `wait`) until the engine's stream, the eventfd or the watched
    /// `pidfd` is readable; returns whether the stream and the `pidfd` are. Drains the
    /// eventfd.
    fn poll(&self, wait: Option<Duration>) -> (bool, bool) {
        let pollfd = |fd: i32| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [
            pollfd(self.input.as_raw_fd()),
            pollfd(self.wake.as_raw_fd()),
            // A negative descriptor is ignored by ppoll.
            pollfd(self.exit_watch.as_ref().map_or(-1, |fd| fd.as_raw_fd())),
        ];
        let ts = wait.map(|w| libc::timespec {
            tv_sec: w.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(w.subsec_nanos() as i32),
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: three valid pollfds; the timeout is null or a live timespec; no signal
        // mask change.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 3, ts_ptr, std::ptr::null()) };
        if n <= 0 {
            // Timeout, or EINTR: the caller looks again.
            return (false, false);
        }
        if fds[1].revents != 0 {
            let mut count = [0u8; 8];
            // SAFETY: reads 8 bytes into a live buffer from our own non-blocking eventfd.
            unsafe { libc::read(self.wake.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        }
        (fds[0].revents != 0, fds[2].revents != 0)
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
