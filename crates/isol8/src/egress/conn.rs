//! Accepting and holding proxy connections: the accept loop that survives transient
//! errors, the caps on open connections (per sandbox and per engine process), the idle
//! timeout of relayed connections, and the process's open-files limit.
//!
//! An accept error such as `EMFILE` (out of file descriptors) is transient: the loop
//! waits with a growing backoff (while its open connections go on, and may free
//! descriptors) and accepts again; only errors that say the listening socket itself is
//! unusable end it, and then [`super::Egress::is_running`] turns false so the sandbox is
//! never handed out again. Each connection takes one slot of its sandbox (at most
//! [`MAX_CONNECTIONS`]) and one of the process-wide [`Budget`]; a client beyond either
//! cap gets `429` at once. A relayed connection on which no byte moves either way for
//! [`IDLE_TIMEOUT`] is closed; any byte restarts the clock, so long transfers go on.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::serve::reply;
use super::{serve_connection, Net, Shared};

/// Open connections per sandbox.
pub const MAX_CONNECTIONS: usize = 128;
/// Most open proxy connections of all sandboxes of this process together, before it is
/// lowered to fit the open-files limit (each connection holds two descriptors).
pub const MAX_TOTAL_CONNECTIONS: usize = 4096;
/// A relayed connection on which no byte moves either way for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// First wait after a failed accept; doubled after each further failure.
const BACKOFF_START: Duration = Duration::from_millis(5);
/// Longest wait between accept attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Time a client refused for capacity has to take its `429`.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Descriptors kept out of the connection budget for everything else the process opens.
const FD_RESERVE: u64 = 512;

/// Where the proxy's client connections come from (a Unix socket in production; tests
/// script accepts, errors included).
#[async_trait::async_trait]
pub trait Listener: Send + 'static {
    /// One accepted client stream.
    type Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next client, or the accept error.
    async fn accept(&mut self) -> io::Result<Self::Conn>;
}

#[async_trait::async_trait]
impl Listener for UnixListener {
    type Conn = UnixStream;
    async fn accept(&mut self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// A process-wide count of open proxy connections with a cap.
#[derive(Debug)]
pub struct Budget {
    open: AtomicUsize,
    max: usize,
}

impl Budget {
    /// A budget of `max` connections.
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// The budget shared by every proxy of this process: [`MAX_TOTAL_CONNECTIONS`],
    /// lowered to half of what the open-files limit leaves after a reserve (raised to
    /// the hard limit first, see [`raise_open_files_limit`]).
    pub fn global() -> Arc<Budget> {
        static GLOBAL: OnceLock<Arc<Budget>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let soft = raise_open_files_limit()
                    .map(|(soft, _)| soft)
                    .unwrap_or(1024);
                let fit =
                    usize::try_from(soft.saturating_sub(FD_RESERVE) / 2).unwrap_or(usize::MAX);
                Budget::new(MAX_TOTAL_CONNECTIONS.min(fit.max(64)))
            })
            .clone()
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a slot, released when the returned guard is dropped; `None` at the cap.
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }
}

/// One taken slot of a [`Budget`].
#[derive(Debug)]
pub struct Slot(Arc<Budget>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Raises this process's soft open-files limit (`RLIMIT_NOFILE`) to its hard limit, once
/// per process; returns the (soft, hard) limits in force afterwards. An error says the
/// limits could not be read (a failed raise keeps the old soft limit and is logged).
pub fn raise_open_files_limit() -> io::Result<(u64, u64)> {
    static RAISED: OnceLock<Result<(u64, u64), i32>> = OnceLock::new();
    let r = RAISED.get_or_init(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, exclusively borrowed rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        // An unlimited hard limit cannot be the soft one: the kernel caps descriptors
        // at `fs.nr_open`.
        let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
            .map_or(lim.rlim_max, |nr_open| lim.rlim_max.min(nr_open));
        if lim.rlim_cur < ceiling {
            let want = libc::rlimit {
                rlim_cur: ceiling,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: `want` is a valid rlimit; raising the soft limit up to the hard
            // one needs no privilege.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
                lim = want;
            } else {
                tracing::warn!(
                    error = %io::Error::last_os_error(),
                    soft = lim.rlim_cur,
                    hard = lim.rlim_max,
                    "could not raise the open-files limit"
                );
            }
        }
        Ok((lim.rlim_cur, lim.rlim_max))
    });
    r.map_err(io::Error::from_raw_os_error)
}

/// True for accept errors that say the listening socket itself is unusable (retrying
/// cannot help); every other error (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`,
/// `ECONNABORTED`, `EINTR`…) is transient.
fn fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EOPNOTSUPP | libc::EFAULT)
    )
}

/// Accepts clients until the listener fails for good (or the task is aborted, which
/// cuts every connection: they live in this task's sets).
pub async fn accept_loop<L: Listener>(
    mut listener: L,
    net: Arc<dyn Net>,
    shared: Shared,
    budget: Arc<Budget>,
) {
    let mut conns = JoinSet::new();
    let mut refusals = JoinSet::new();
    let mut backoff = BACKOFF_START;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(mut stream) => {
                    backoff = BACKOFF_START;
                    let slot = if conns.len() >= MAX_CONNECTIONS {
                        Err("too many open proxy connections in this sandbox")
                    } else {
                        budget.take().ok_or("too many open proxy connections on this host")
                    };
                    match slot {
                        Ok(slot) => {
                            let (net, shared) = (net.clone(), shared.clone());
                            // In the span of the execution running now, if any.
                            let span = super::handle::current_span(&shared);
                            conns.spawn(async move {
                                let _slot = slot;
                                serve_connection(stream, net.as_ref(), &shared).await;
                            }.instrument(span));
                        }
                        Err(why) => {
                            refusals.spawn(async move {
                                let _ = tokio::time::timeout(REFUSAL_TIMEOUT, reply(&mut stream, 429, why)).await;
                            });
                        }
                    }
                }
                Err(e) if fatal(&e) => {
                    let _in = super::handle::current_span(&shared).entered();
                    tracing::error!(error = %e, "egress proxy socket failed; the proxy stops");
                    return;
                }
                Err(e) => {
                    super::handle::current_span(&shared).in_scope(|| {
                        tracing::warn!(error = %e, retry_in = ?backoff, "egress proxy could not accept; retrying");
                    });
                    let wait = tokio::time::sleep(backoff);
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            _ = &mut wait => break,
                            Some(_) = conns.join_next(), if !conns.is_empty() => {}
                            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
                        }
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
        }
    }
}

/// When a byte last moved on a connection, shared by both of its streams.
#[derive(Debug)]
pub struct Activity {
    start: tokio::time::Instant,
    /// Milliseconds from `start` to the last byte read on either stream.
    last_ms: AtomicU64,
}

impl Activity {
    /// A clock started now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Returns once nothing has moved for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that marks its [`Activity`] whenever bytes are read from it.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Tracked<S> {
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
