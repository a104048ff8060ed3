//! Serving one client connection: read the head, decide, dial, forward exactly that one
//! request (or open the tunnel), relay the answer, and log the outcome into the execution
//! the connection started in, counting the bytes it moves into that execution's traffic.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use isol8_protocol::NetworkLog;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::conn::{Activity, Tracked, IDLE_TIMEOUT};
use super::framing::{Body, Chunked};
use super::request::read_head;
use super::{decide, parse_request, Net, State, Target, Traffic, Upstream};

/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection to an upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one client connection: read the head, decide, dial, forward exactly that one
/// request (or open the tunnel) and relay the answer. Bytes after the end of the request
/// are never read, let alone forwarded; the connection closes when the upstream closes
/// or when nothing moves either way for [`IDLE_TIMEOUT`].
pub async fn serve_connection<C>(client: C, net: &dyn Net, shared: &Mutex<State>)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (generation, rules, policy, observer, traffic) = match shared.lock() {
        Ok(s) => (
            s.generation,
            s.rules.clone(),
            s.policy.clone(),
            s.observer.clone(),
            s.traffic.clone(),
        ),
        Err(_) => return,
    };
    // Everything the sandbox sends or receives on this connection counts into the
    // execution it started in.
    let mut client = Counted {
        inner: client,
        traffic,
    };
    let started = Instant::now();
    let (head, rest) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(h)) => h,
        Ok(Err(why)) => return reply(&mut client, 400, &why.to_string()).await,
        Err(_) => return reply(&mut client, 408, "no request head within 10 s").await,
    };
    let target = match parse_request(&head) {
        Ok(t) => t,
        Err(why) => return reply(&mut client, 400, &why.to_string()).await,
    };
    let record = |action: &str| {
        if let Ok(mut s) = shared.lock() {
            if s.generation == generation {
                if let Some(logs) = s.logs.as_mut() {
                    logs.push(NetworkLog {
                        timestamp: chrono::Utc::now()
                            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        method: target.method.clone(),
                        host: target.host.clone(),
                        path: target.path.clone(),
                        action: action.to_string(),
                        duration_ms: started.elapsed().as_millis() as u64,
                    });
                }
            }
        }
    };
    let addrs = match decide(&target, &rules, &policy, net).await {
        Ok(a) => {
            crate::stats::notify(&observer, |o| o.egress(true));
            a
        }
        Err(r) => {
            record("BLOCK");
            crate::stats::notify(&observer, |o| o.egress(false));
            tracing::debug!(host = %target.host, reason = %r.reason, "egress refused");
            return reply(&mut client, r.status, &r.reason).await;
        }
    };
    let upstream = match dial(net, &addrs).await {
        Ok(u) => u,
        Err(e) => {
            record("ALLOW");
            let why = format!("cannot connect to {}:{}: {e}", target.host, target.port);
            return reply(&mut client, 502, &why).await;
        }
    };
    // Logged before the client hears back, so the entry is in before the program can
    // finish and the execution's log is collected.
    record("ALLOW");
    let activity = Activity::new();
    let mut client = Tracked::new(client, activity.clone());
    let mut upstream = Tracked::new(upstream, activity.clone());
    let relay = async {
        if target.tunnel {
            client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await?;
            // Bytes the client sent right behind its CONNECT belong to the tunnel.
            upstream.write_all(&rest).await?;
            tokio::io::copy_bidirectional(&mut client, &mut upstream)
                .await
                .map(|_| ())
        } else {
            relay_one_request(&mut client, &mut upstream, &target, &rest).await
        }
    };
    tokio::select! {
        r = relay => {
            if let Err(e) = r {
                tracing::debug!(host = %target.host, error = %e, "egress connection ended");
            }
        }
        _ = activity.idle_for(IDLE_TIMEOUT) => {
            tracing::debug!(host = %target.host, "egress connection idle; closed");
        }
    }
}

/// A client connection whose bytes are counted into an execution's [`Traffic`].
struct Counted<C> {
    inner: C,
    traffic: Arc<Traffic>,
}

impl<C: AsyncRead + Unpin> AsyncRead for Counted<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before) as u64;
        if read > 0 {
            self.traffic
                .out_of_sandbox
                .fetch_add(read, Ordering::Relaxed);
        }
        r
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Counted<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.traffic
                .into_sandbox
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Sends the rewritten head and exactly the body its framing announces to `upstream`,
/// while relaying the answer to `client`, until the upstream closes. `rest` holds the
/// bytes read past the head.
async fn relay_one_request<C, U>(
    client: &mut C,
    upstream: &mut U,
    target: &Target,
    rest: &[u8],
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut up_r, mut up_w) = tokio::io::split(upstream);
    let request = async {
        up_w.write_all(&target.forward_head).await?;
        forward_body(target.body, rest, &mut client_r, &mut up_w).await?;
        up_w.flush().await
    };
    let answer = async {
        tokio::io::copy(&mut up_r, &mut client_w).await?;
        client_w.shutdown().await
    };
    tokio::pin!(request, answer);
    tokio::select! {
        sent = &mut request => match sent {
            Ok(()) => answer.await,
            Err(e) => Err(e),
        },
        answered = &mut answer => answered,
    }
}

/// Forwards the body `body` describes: first from `rest`, then from `client`, reading
/// nothing past its end.
async fn forward_body<R, W>(
    body: Body,
    rest: &[u8],
    client: &mut R,
    upstream: &mut W,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let truncated = || {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the client closed the connection inside its request body",
        )
    };
    let mut buf = vec![0u8; 16 << 10];
    match body {
        Body::Empty => Ok(()),
        Body::Length(n) => {
            let first = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
            upstream.write_all(&rest[..first]).await?;
            let mut left = n - first as u64;
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let got = client.read(&mut buf[..want]).await?;
                if got == 0 {
                    return Err(truncated());
                }
                upstream.write_all(&buf[..got]).await?;
                left -= got as u64;
            }
            Ok(())
        }
        Body::Chunked => {
            let mut decoder = Chunked::new();
            let mut out = Vec::new();
            let mut input: &[u8] = rest;
            loop {
                out.clear();
                decoder
                    .feed(input, &mut out)
                    .map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))?;
                upstream.write_all(&out).await?;
                if decoder.done() {
                    return Ok(());
                }
                let got = client.read(&mut buf).await?;
                if got == 0 {
                    return Err(truncated());
                }
                input = &buf[..got];
            }
        }
    }
}

async fn dial(net: &dyn Net, addrs: &[SocketAddr]) -> io::Result<Box<dyn Upstream>> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, net.connect(*a)).await {
            Ok(Ok(u)) => return Ok(u),
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        }
    }
    Err(last)
}

pub(super) async fn reply<C: AsyncWrite + Unpin>(client: &mut C, status: u16, reason: &str) {
    let text = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("isol8 egress proxy: {reason}\n");
    let msg = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nX-Isol8-Proxy: refused\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(msg.as_bytes()).await;
    let _ = client.shutdown().await;
}
