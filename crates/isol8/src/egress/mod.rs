//! The filtering egress proxy of the `filtered` network mode (SPEC section 5).
//!
//! A sandbox in `filtered` mode gets no network interface but loopback (Docker network
//! `none`), exactly like `none`. For each such sandbox the engine binds a Unix socket in a
//! host directory of its own, bind-mounted read-only into the container at
//! [`SOCKET_DIR_IN_SANDBOX`]; the agent (PID 1) listens on `127.0.0.1:`[`PROXY_PORT`]
//! inside the sandbox and relays every connection to that socket, and programs find it
//! through `HTTP_PROXY` / `HTTPS_PROXY`. Everything that decides — request parsing, the
//! host rules, DNS, the address check and the dialling — runs here, in the engine's
//! process: code in the sandbox can neither reconfigure nor bypass it, and has no route
//! to anything else (raw TCP, UDP and DNS have no interface to leave by).
//!
//! Order of checks for one request: parse (absolute-form HTTP or `CONNECT host:port`,
//! every host in one canonical form, see [`host`]; unambiguous body framing, see
//! [`framing`]), Host header consistency, port, blacklist, whitelist, name resolution,
//! then every resolved address against the engine's [`AddressPolicy`]; only then is one
//! of exactly those addresses dialled (no second lookup, so DNS rebinding gains nothing).
//! Exactly one request is forwarded per client connection: nothing the client sends after
//! the end of that request's body reaches the upstream.
//!
//! Connections are accepted, capped and timed out by [`conn`].
//!
//! Files: `request.rs` parses a request head into a [`Target`]; `rules.rs` holds the host
//! [`Rules`] of one execution and [`decide`], every check a target meets before it is
//! dialled; `serve.rs` serves one client connection ([`serve_connection`]); `handle.rs`
//! holds the [`Egress`] handle of one sandbox, its per-execution [`State`] and the host
//! socket directories.

pub mod addr;
pub mod conn;
pub mod framing;
mod handle;
pub mod host;
mod request;
mod request_error;
mod rules;
mod serve;

pub use addr::AddressPolicy;
pub use conn::raise_open_files_limit;
pub use handle::{
    begin, bind_in_fresh_dir, finish, observe, reap_stale_dirs, reap_stale_dirs_in, socket_base,
    traffic, Egress, Shared, State, Traffic,
};
pub use request::{parse_request, Target};
pub use request_error::RequestError;
pub use rules::{decide, Refusal, Rules};
pub use serve::serve_connection;

use std::io;
use std::net::SocketAddr;

use isol8_protocol::layout;
use tokio::io::{AsyncRead, AsyncWrite};

/// Port the agent listens on inside the sandbox.
pub const PROXY_PORT: u16 = layout::EGRESS_PORT;
/// Where the socket directory appears inside the sandbox.
pub const SOCKET_DIR_IN_SANDBOX: &str = layout::EGRESS_SOCKET_DIR;
/// File name of the proxy socket in that directory.
pub const SOCKET_NAME: &str = layout::EGRESS_SOCKET_NAME;
/// Stand-in source of the socket-directory mount in a `HostConfig`; each sandbox
/// replaces it with its own directory when its container is created, so pool keys do
/// not depend on the per-sandbox path.
pub const MOUNT_PLACEHOLDER: &str = "isol8-egress-socket-dir";
/// Port a `CONNECT` tunnel may target.
pub const TUNNEL_PORTS: &[u16] = &[443];
/// Port a plain-HTTP request may target.
pub const HTTP_PORTS: &[u16] = &[80];

/// The package-registry hosts a runtime's installer needs (SPEC section 5).
pub fn registry_hosts(runtime: &str) -> &'static [&'static str] {
    match runtime {
        "python" => &["pypi.org", "files.pythonhosted.org"],
        "node" | "bun" => &["registry.npmjs.org"],
        "deno" => &["registry.npmjs.org", "jsr.io"],
        _ => &[],
    }
}

/// The environment that points programs at the proxy.
pub fn proxy_env() -> Vec<(String, String)> {
    let url = format!("http://127.0.0.1:{PROXY_PORT}");
    let mut env: Vec<(String, String)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "npm_config_proxy",
        "npm_config_https_proxy",
    ]
    .iter()
    .map(|k| (k.to_string(), url.clone()))
    .collect();
    env.push(("NO_PROXY".into(), "localhost,127.0.0.1,::1".into()));
    env.push(("no_proxy".into(), "localhost,127.0.0.1,::1".into()));
    env
}

/// Name resolution and dialling, abstracted so tests can prove what is (not) dialled.
#[async_trait::async_trait]
pub trait Net: Send + Sync + 'static {
    /// Addresses of `host`.
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
    /// A connection to `addr`.
    async fn connect(&self, addr: SocketAddr) -> io::Result<Box<dyn Upstream>>;
}

/// A byte stream to an upstream server.
pub trait Upstream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Upstream for T {}

/// The host's resolver and TCP stack.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemNet;

#[async_trait::async_trait]
impl Net for SystemNet {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
    async fn connect(&self, addr: SocketAddr) -> io::Result<Box<dyn Upstream>> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        Ok(Box::new(s))
    }
}

#[cfg(test)]
mod tests;
