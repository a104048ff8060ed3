//! The data path that skips the container runtime: a Unix socket per sandbox, owned by
//! the engine, on which the agent carries every frame after its hello.
//!
//! Frames through the attached stdio cross dockerd and the container's shim both ways,
//! which costs each execution CPU in both and a few hundred microseconds. Instead the
//! engine binds `agent.sock` in a fresh host directory (mode 0700, so only root — the
//! agent — may enter it), mounts that directory read-only at
//! [`layout::DATA_SOCKET_DIR`] in this sandbox only, and names the socket in the
//! container's environment ([`layout::DATA_SOCKET_ENV`]). The agent connects before it
//! says hello and says so in the hello; the engine accepts exactly that one connection,
//! then closes the listener and removes the socket file, so nothing started later in the
//! sandbox can connect. Docker still creates, starts and removes the container, and the
//! attached stdio still carries the hello, the agent's log, and everything when the
//! agent could not connect (or the daemon is not on this host: the bind mount needs the
//! engine's files, so the engine offers the socket only to a local daemon).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use isol8_protocol::layout;
use tokio::net::{UnixListener, UnixStream};

/// The engine's side of one sandbox's data socket, until the agent has connected.
#[derive(Debug)]
pub struct DataSocket {
    dir: PathBuf,
    listener: Option<UnixListener>,
}

/// Where the per-sandbox directories live on the host (beside the egress proxies').
pub fn base() -> PathBuf {
    crate::egress::socket_base()
        .parent()
        .map(|p| p.join("data"))
        .unwrap_or_else(|| PathBuf::from("/run/isol8/data"))
}

impl DataSocket {
    /// Binds `agent.sock` in a new directory only root may enter. Must be called within a
    /// Tokio runtime.
    pub fn bind() -> io::Result<DataSocket> {
        let (dir, listener) =
            crate::egress::bind_in_fresh_dir(&base(), 0o700, layout::DATA_SOCKET_NAME)?;
        Ok(DataSocket {
            dir,
            listener: Some(listener),
        })
    }

    /// The host directory to mount read-only at [`layout::DATA_SOCKET_DIR`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The agent's connection (it connected before its hello, so it is waiting in the
    /// backlog); then no other: the listener is closed and the socket file removed.
    pub async fn accept(&mut self, within: Duration) -> io::Result<UnixStream> {
        let listener = self
            .listener
            .take()
            .ok_or_else(|| io::Error::other("the data socket was already used"))?;
        let _ = std::fs::remove_file(self.dir.join(layout::DATA_SOCKET_NAME));
        match tokio::time::timeout(within, listener.accept()).await {
            Ok(Ok((stream, _))) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the agent said it connected, but no connection came",
            )),
        }
    }
}

impl Drop for DataSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes directories left by engine processes that no longer exist; returns how many.
pub fn reap_stale_dirs() -> usize {
    crate::egress::reap_stale_dirs_in(&base())
}
