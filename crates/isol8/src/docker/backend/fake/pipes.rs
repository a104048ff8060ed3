//! The pipes of a fake container as the engine holds them: its stdin (writes fail once
//! the container died or its stdin broke) and its stdout/stderr (what the agent wrote is
//! delivered, then the end once the container died).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use futures_util::Stream;
use tokio::io::{AsyncWrite, DuplexStream};
use tokio::sync::mpsc;

use super::super::Output;
use crate::error::ApiError;

/// A chunk the agent writes to the container's stdio.
pub(super) enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// Flags shared by a container and its attached streams.
#[derive(Default)]
pub(super) struct Pipes {
    /// The container ended: its output ends, writes to its stdin fail.
    pub(super) dead: AtomicBool,
    /// Its stdin is broken (writes fail) while its output stays open.
    pub(super) stdin_broken: AtomicBool,
    /// Wakes the output stream when `dead` is set.
    pub(super) waker: AtomicWaker,
}

/// The engine's end of a container's stdin.
pub(super) struct Stdin {
    pub(super) pipe: DuplexStream,
    pub(super) pipes: Arc<Pipes>,
}

impl Stdin {
    fn broken(&self) -> bool {
        self.pipes.dead.load(Ordering::SeqCst) || self.pipes.stdin_broken.load(Ordering::SeqCst)
    }
}

impl AsyncWrite for Stdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.broken() {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.pipe).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.broken() {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.pipe).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.pipe).poll_shutdown(cx)
    }
}

/// The engine's end of a container's stdout and stderr: ends when the container dies.
pub(super) struct Stdio {
    pub(super) rx: mpsc::Receiver<Chunk>,
    pub(super) pipes: Arc<Pipes>,
}

impl Stream for Stdio {
    type Item = Result<Output, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // What the container wrote before it ended is still delivered, then the end.
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Chunk::Stdout(b))) => return Poll::Ready(Some(Ok(Output::Stdout(b)))),
            Poll::Ready(Some(Chunk::Stderr(b))) => return Poll::Ready(Some(Ok(Output::Stderr(b)))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        self.pipes.waker.register(cx.waker());
        match self.pipes.dead.load(Ordering::SeqCst) {
            true => Poll::Ready(None),
            false => Poll::Pending,
        }
    }
}
