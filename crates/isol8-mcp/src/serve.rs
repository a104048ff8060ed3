//! Running the server: over stdio ([`serve_stdio`], one client, until end-of-file) or
//! over streamable HTTP ([`serve_http`], at `/mcp`, until shutdown), and what both do
//! at the end: every session ends and the local engine removes its containers.
//!
//! Over HTTP the address is loopback unless the operator binds another; a server bound
//! beyond loopback must have a bearer token (`Authorization: Bearer TOKEN` on every
//! request), and the SDK's `Host` check (against DNS rebinding) admits loopback names
//! and the bound address.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::handler::{Isol8Mcp, Shared};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A non-loopback address without a token.
    #[error("--http {0} is not a loopback address: set a bearer token (--http-token or ISOL8_MCP_TOKEN) so that only your MCP host can run code")]
    TokenRequired(SocketAddr),
    /// The HTTP server failed.
    #[error("the MCP HTTP server failed: {0}")]
    Server(std::io::Error),
    /// The signal handlers could not be installed.
    #[error("cannot install the SIGTERM/SIGINT handlers: {0}")]
    Signals(std::io::Error),
}

/// Resolves when SIGINT or SIGTERM arrives.
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, McpError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(McpError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(McpError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Ends idle sessions every `max_age / 4` (at least every 30 s) while it runs.
fn spawn_pruner(
    shared: &Arc<Shared>,
    max_age: Option<Duration>,
) -> Option<tokio::task::JoinHandle<()>> {
    let max_age = max_age?;
    let shared = Arc::downgrade(shared);
    let period = (max_age / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            shared.sessions.prune(max_age).await;
        }
    }))
}

/// The end of every run: sessions end, the engine removes its containers.
async fn finish(shared: &Shared, pruner: Option<tokio::task::JoinHandle<()>>) {
    if let Some(p) = pruner {
        p.abort();
    }
    shared.sessions.end_all().await;
    shared.target.stop().await;
}

/// Serves one client on standard input and output until it closes its end (or
/// `shutdown` resolves), then ends its sessions and removes the engine's containers.
/// Idle sessions end after `prune_after`.
pub async fn serve_stdio(
    shared: Arc<Shared>,
    prune_after: Option<Duration>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), McpError> {
    let pruner = spawn_pruner(&shared, prune_after);
    let handler = Isol8Mcp::new(shared.clone());
    tokio::pin!(shutdown);
    let running = tokio::select! {
        r = handler.serve(rmcp::transport::stdio()) => r,
        _ = &mut shutdown => {
            finish(&shared, pruner).await;
            return Ok(());
        }
    };
    match running {
        Ok(running) => {
            let cancel = running.cancellation_token();
            let done = running.waiting();
            tokio::pin!(done);
            tokio::select! {
                _ = &mut done => {}
                _ = &mut shutdown => {
                    cancel.cancel();
                    let _ = done.await;
                }
            }
        }
        // The client left (or spoke something else) before initializing.
        Err(e) => tracing::info!(error = %e, "the MCP client did not initialize"),
    }
    finish(&shared, pruner).await;
    Ok(())
}

/// Serves streamable HTTP at `http://ADDR/mcp` until `shutdown` resolves, then ends
/// every session and removes the engine's containers. An MCP session's sessions end
/// when it closes (`DELETE`, or idle expiry of the SDK's session manager). `ready` gets
/// the bound address (useful with port 0).
pub async fn serve_http(
    shared: Arc<Shared>,
    addr: SocketAddr,
    token: Option<String>,
    prune_after: Option<Duration>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), McpError> {
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(McpError::TokenRequired(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| McpError::Listen { addr, source })?;
    let bound = listener.local_addr().map_err(McpError::Server)?;
    let cancel = CancellationToken::new();
    let mut config =
        StreamableHttpServerConfig::default().with_cancellation_token(cancel.child_token());
    if addr.ip().is_unspecified() {
        // Any address of this machine: the token guards it.
        config = config.disable_allowed_hosts();
    } else if !addr.ip().is_loopback() {
        let mut hosts = config.allowed_hosts.clone();
        hosts.push(addr.ip().to_string());
        config = config.with_allowed_hosts(hosts);
    }
    let factory_shared = shared.clone();
    let service = StreamableHttpService::new(
        move || Ok(Isol8Mcp::new(factory_shared.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let mut router = axum::Router::new().nest_service("/mcp", service);
    if let Some(token) = token {
        router = router.layer(axum::middleware::from_fn(move |req, next| {
            let token = token.clone();
            check_token(token, req, next)
        }));
    }
    let pruner = spawn_pruner(&shared, prune_after);
    ready(bound);
    let stop = cancel.clone();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stop.cancel();
        })
        .await;
    cancel.cancel();
    finish(&shared, pruner).await;
    served.map_err(McpError::Server)
}

/// Refuses a request without `Authorization: Bearer TOKEN` (401).
async fn check_token(
    token: String,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        next.run(req).await
    } else {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer TOKEN)",
        )
            .into_response()
    }
}
