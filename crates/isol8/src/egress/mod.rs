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

pub mod addr;
pub mod conn;
pub mod framing;
pub mod host;
mod request_error;

pub use addr::AddressPolicy;
pub use conn::raise_open_files_limit;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use isol8_protocol::{layout, NetworkFilter, NetworkLog};
use regex::Regex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;

use conn::{Activity, Budget, Listener, Tracked, IDLE_TIMEOUT};
use framing::{Body, Chunked};
pub use request_error::RequestError;

use crate::settings::compile_regex;
use crate::{Error, Result};

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

/// Largest request head the proxy reads.
const MAX_HEAD: usize = 16 << 10;
/// Most header fields in a request head.
const MAX_HEADERS: usize = 96;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a connection to an upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Host rules of one execution: blacklist wins, and each non-empty whitelist (the
/// filter's own and its narrowing ones) must admit a host. Patterns are regexes searched
/// in the lower-case host name.
#[derive(Debug, Clone)]
pub struct Rules {
    whitelists: Vec<Vec<Regex>>,
    blacklist: Vec<Regex>,
    deny_all: bool,
}

impl Rules {
    /// Compiles `filter`, adding `extra_hosts` (exact names) to every whitelist, or
    /// making them the only whitelist when there is none and `restrict` asks for one.
    pub fn new(filter: &NetworkFilter, extra_hosts: &[&str], restrict: bool) -> Result<Rules> {
        let compile = |field: &str, patterns: &[String]| -> Result<Vec<Regex>> {
            patterns.iter().map(|p| compile_regex(field, p)).collect()
        };
        let mut whitelists = filter
            .whitelists()
            .map(|w| compile("networkFilter.whitelist", w))
            .collect::<Result<Vec<_>>>()?;
        let blacklist = compile("networkFilter.blacklist", &filter.blacklist)?;
        if whitelists.is_empty() && restrict {
            whitelists.push(Vec::new());
        }
        for whitelist in &mut whitelists {
            for host in extra_hosts {
                whitelist.push(
                    Regex::new(&format!("^{}$", regex::escape(host)))
                        .map_err(|e| Error::option("networkFilter", e.to_string()))?,
                );
            }
        }
        Ok(Rules {
            whitelists,
            blacklist,
            deny_all: false,
        })
    }

    /// Rules that admit nothing (between executions).
    pub fn deny_all() -> Rules {
        Rules {
            whitelists: Vec::new(),
            blacklist: Vec::new(),
            deny_all: true,
        }
    }

    /// Why `host` is not admitted, if it is not.
    pub fn refusal(&self, host: &str) -> Option<String> {
        if self.deny_all {
            return Some("no execution is running in this sandbox".into());
        }
        if let Some(re) = self.blacklist.iter().find(|re| re.is_match(host)) {
            return Some(format!("{host} matches the blacklist pattern `{re}`"));
        }
        if self
            .whitelists
            .iter()
            .any(|w| !w.iter().any(|re| re.is_match(host)))
        {
            return Some(format!("{host} matches no whitelist pattern"));
        }
        None
    }
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

/// What the proxy of one sandbox applies right now.
#[derive(Debug)]
pub struct State {
    /// Bumped at every execution start: a connection logs only into the execution it
    /// started in.
    generation: u64,
    rules: Arc<Rules>,
    logs: Option<Vec<NetworkLog>>,
    /// The addresses this proxy may dial (the engine's, fixed for the proxy's life).
    policy: Arc<AddressPolicy>,
}

impl State {
    /// The state of a new proxy: nothing admitted until an execution begins.
    pub fn new(policy: Arc<AddressPolicy>) -> State {
        State {
            generation: 0,
            rules: Arc::new(Rules::deny_all()),
            logs: None,
            policy,
        }
    }
}

/// Shared handle on a proxy's [`State`].
pub type Shared = Arc<Mutex<State>>;

/// Sets the rules (and log) of a new execution.
pub fn begin(shared: &Shared, rules: Arc<Rules>, log: bool) {
    if let Ok(mut s) = shared.lock() {
        s.generation += 1;
        s.rules = rules;
        s.logs = log.then(Vec::new);
    }
}

/// Ends the current execution: nothing is admitted until the next [`begin`]; returns
/// the execution's log when it asked for one.
pub fn finish(shared: &Shared) -> Option<Vec<NetworkLog>> {
    let mut s = shared.lock().ok()?;
    s.generation += 1;
    s.rules = Arc::new(Rules::deny_all());
    s.logs.take()
}

/// The proxy of one sandbox: its socket directory on the host and the task serving it.
/// Dropping it stops the proxy, cuts its connections and removes the directory.
#[derive(Debug)]
pub struct Egress {
    dir: PathBuf,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Egress {
    /// Binds a new proxy socket in a fresh directory under [`socket_base`]; the proxy
    /// dials through `net` only addresses that `policy` admits.
    pub fn bind(net: Arc<dyn Net>, policy: Arc<AddressPolicy>) -> io::Result<Egress> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let base = socket_base();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&base)?;
        // Named after this process, so a later engine can remove what a killed one left.
        let dir = base.join(format!(
            "{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::DirBuilder::new().mode(0o755).create(&dir)?;
        let socket = dir.join(SOCKET_NAME);
        let listener = match UnixListener::bind(&socket) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // The agent relays as root, but any user in the sandbox may use the proxy: the
        // socket grants nothing the relay does not.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))?;
        Ok(Egress::serve(dir, listener, net, policy, Budget::global()))
    }

    /// Serves clients of `listener` in a new task, with `dir` as the socket directory
    /// (removed when the proxy is dropped) and connections counted against `budget`.
    pub fn serve<L: Listener>(
        dir: PathBuf,
        listener: L,
        net: Arc<dyn Net>,
        policy: Arc<AddressPolicy>,
        budget: Arc<Budget>,
    ) -> Egress {
        let shared: Shared = Arc::new(Mutex::new(State::new(policy)));
        let task = tokio::spawn(conn::accept_loop(listener, net, shared.clone(), budget));
        Egress { dir, shared, task }
    }

    /// False once the proxy has stopped accepting for good (its socket failed, or its
    /// task ended otherwise): a sandbox whose proxy is not running must not be used again.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// The host directory to mount at [`SOCKET_DIR_IN_SANDBOX`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state the engine switches per execution.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes socket directories left by engine processes that no longer exist (killed
/// before they could clean up); returns how many were removed.
pub fn reap_stale_dirs() -> usize {
    let Ok(entries) = std::fs::read_dir(socket_base()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Host directory holding the per-sandbox socket directories.
pub fn socket_base() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        PathBuf::from("/run/isol8/egress")
    } else {
        std::env::temp_dir()
            .join(format!("isol8-{uid}"))
            .join("egress")
    }
}

/// The target of one proxied request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Request method (`CONNECT` for tunnels).
    pub method: String,
    /// Lower-case host name or IP literal (no brackets).
    pub host: String,
    /// Target port.
    pub port: u16,
    /// Path and query of a plain request; empty for tunnels.
    pub path: String,
    /// A `CONNECT` tunnel.
    pub tunnel: bool,
    /// A `Host` header that names another host or port than the target.
    pub host_mismatch: Option<String>,
    /// How the request's body is framed ([`Body::Empty`] for tunnels).
    pub body: Body,
    /// The request head to send upstream (plain requests only).
    pub forward_head: Vec<u8>,
}

/// Why a request is refused: status and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status sent to the client.
    pub status: u16,
    /// Reason (the response body).
    pub reason: String,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
    }
}

/// Serves one client connection: read the head, decide, dial, forward exactly that one
/// request (or open the tunnel) and relay the answer. Bytes after the end of the request
/// are never read, let alone forwarded; the connection closes when the upstream closes
/// or when nothing moves either way for [`conn::IDLE_TIMEOUT`].
pub async fn serve_connection<C>(mut client: C, net: &dyn Net, shared: &Mutex<State>)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (generation, rules, policy) = match shared.lock() {
        Ok(s) => (s.generation, s.rules.clone(), s.policy.clone()),
        Err(_) => return,
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
        Ok(a) => a,
        Err(r) => {
            record("BLOCK");
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

/// Applies every check to `target` and returns the addresses that may be dialled.
pub async fn decide(
    target: &Target,
    rules: &Rules,
    policy: &AddressPolicy,
    net: &dyn Net,
) -> Result<Vec<SocketAddr>, Refusal> {
    if let Some(h) = &target.host_mismatch {
        return Err(refuse(
            403,
            format!(
                "the Host header `{h}` does not match the request target {}:{}",
                target.host, target.port
            ),
        ));
    }
    let ports = if target.tunnel {
        TUNNEL_PORTS
    } else {
        HTTP_PORTS
    };
    if !ports.contains(&target.port) {
        return Err(refuse(
            403,
            format!(
                "port {} is not allowed for {} (allowed: {ports:?})",
                target.port,
                if target.tunnel {
                    "CONNECT"
                } else {
                    "plain HTTP"
                }
            ),
        ));
    }
    if let Some(why) = rules.refusal(&target.host) {
        return Err(refuse(403, why));
    }
    let addrs = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => {
            match tokio::time::timeout(RESOLVE_TIMEOUT, net.resolve(&target.host, target.port))
                .await
            {
                Ok(Ok(a)) if !a.is_empty() => a,
                Ok(Ok(_)) => return Err(refuse(502, format!("{} has no address", target.host))),
                Ok(Err(e)) => {
                    return Err(refuse(502, format!("cannot resolve {}: {e}", target.host)))
                }
                Err(_) => return Err(refuse(504, format!("resolving {} timed out", target.host))),
            }
        }
    };
    // Every address must pass: the client must not be able to steer which one is used.
    for a in &addrs {
        if let Some(why) = policy.refusal(a.ip()) {
            return Err(refuse(
                403,
                format!("{} resolves to {}, {why}", target.host, a.ip()),
            ));
        }
    }
    Ok(addrs)
}

/// Reads up to the end of the request head; returns it and any bytes read past it.
async fn read_head<C: AsyncRead + Unpin>(
    client: &mut C,
) -> std::result::Result<(Vec<u8>, Vec<u8>), RequestError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = client
            .read(&mut chunk)
            .await
            .map_err(|source| RequestError::Read { source })?;
        if n == 0 {
            return Err(RequestError::ClosedEarly);
        }
        let searched = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        // The head ends at the first empty line (CRLF or, as the parser also takes, LF):
        // only then is it parsed, and the parser says exactly where it ends.
        let tail = &buf[searched..];
        if tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n") {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::Request::new(&mut headers).parse(&buf) {
                Ok(httparse::Status::Complete(end)) => {
                    let rest = buf.split_off(end);
                    return Ok((buf, rest));
                }
                Ok(httparse::Status::Partial) => {}
                Err(source) => return Err(RequestError::Malformed { source }),
            }
        }
        if buf.len() >= MAX_HEAD {
            return Err(RequestError::HeadTooLarge);
        }
    }
}

/// Headers that concern the proxy hop only and are not forwarded.
const HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Headers the proxy reads itself and forwards only in its own canonical form.
const FRAMING_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding"];

/// Parses a proxy request head (`CONNECT host:port` or an absolute `http://` URI), ending
/// with its empty line. An error (answered 400) says what is malformed: besides bad
/// syntax, a host that is not canonicalisable (see [`host`]), more than one `Host`,
/// `Content-Length` or `Transfer-Encoding` header, both of the latter, a
/// `Content-Length` that is not plain digits, any transfer coding but `chunked` (or
/// `chunked` in HTTP/1.0), a body on a `CONNECT`, and header names that servers may read
/// as one of those (`Content_Length`).
pub fn parse_request(head: &[u8]) -> std::result::Result<Target, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(httparse::Status::Complete(_)) => return Err(RequestError::TrailingBytes),
        Ok(httparse::Status::Partial) => return Err(RequestError::Incomplete),
        Err(source) => return Err(RequestError::Malformed { source }),
    }
    let method = req.method.unwrap_or_default().to_string();
    let raw_target = req.path.unwrap_or_default();
    let minor = req.version.unwrap_or(1);
    let tunnel = method.eq_ignore_ascii_case("CONNECT");

    let mut host_header: Option<(String, Option<u16>)> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if name.contains('_') && FRAMING_HEADERS.contains(&name.replace('_', "-").as_str()) {
            return Err(RequestError::AmbiguousHeaderName {
                name: h.name.to_string(),
                reads_as: name.replace('_', "-"),
            });
        }
        if !FRAMING_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = std::str::from_utf8(h.value)
            .map_err(|_| RequestError::NotAscii {
                name: h.name.to_string(),
            })?
            .trim_matches([' ', '\t']);
        match name.as_str() {
            "host" => {
                if host_header.is_some() {
                    return Err(RequestError::Repeated { header: "Host" });
                }
                host_header = Some(
                    host::split_host_port(value)
                        .map_err(|source| RequestError::BadHostHeader { source })?,
                );
            }
            "content-length" => {
                if length.is_some() {
                    return Err(RequestError::Repeated {
                        header: "Content-Length",
                    });
                }
                if value.is_empty()
                    || value.len() > 18
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(RequestError::BadContentLength {
                        value: value.to_string(),
                    });
                }
                length = Some(value.parse().map_err(|_| RequestError::BadContentLength {
                    value: value.to_string(),
                })?);
            }
            _ => {
                if chunked {
                    return Err(RequestError::Repeated {
                        header: "Transfer-Encoding",
                    });
                }
                if !value.eq_ignore_ascii_case("chunked") {
                    return Err(RequestError::UnsupportedCoding {
                        value: value.to_string(),
                    });
                }
                chunked = true;
            }
        }
    }
    let body = match (length, chunked) {
        (Some(_), true) => return Err(RequestError::AmbiguousBody),
        (_, true) if minor == 0 => return Err(RequestError::ChunkedHttp10),
        (_, true) => Body::Chunked,
        (Some(0), false) | (None, false) => Body::Empty,
        (Some(n), false) => Body::Length(n),
    };
    if tunnel && body != Body::Empty {
        return Err(RequestError::ConnectBody);
    }

    let (host, port, path) = if tunnel {
        let (host, port) = split_authority(raw_target)?;
        (host, port, String::new())
    } else {
        let lower = raw_target.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(RequestError::HttpsWithoutConnect);
        }
        if !lower.starts_with("http://") {
            return Err(RequestError::NotAbsoluteUrl {
                target: raw_target.to_string(),
            });
        }
        let url = url::Url::parse(raw_target).map_err(|source| RequestError::BadUrl {
            target: raw_target.to_string(),
            source,
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RequestError::Credentials);
        }
        let host = match url.host() {
            Some(h) => host::from_url_host(&h).map_err(|source| RequestError::BadUrlHost {
                target: raw_target.to_string(),
                source,
            })?,
            None => return Err(RequestError::NoHost),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        (host, port, path)
    };
    let host_mismatch = host_header.and_then(|(h, p)| {
        let default = if tunnel {
            TUNNEL_PORTS[0]
        } else {
            HTTP_PORTS[0]
        };
        let port_ok = match p {
            Some(p) => p == port,
            None => port == default || tunnel,
        };
        (h != host || !port_ok).then(|| match p {
            Some(p) => format!("{}:{p}", bracketed(&h)),
            None => bracketed(&h),
        })
    });
    let mut forward_head = Vec::new();
    if !tunnel {
        let default = HTTP_PORTS[0];
        let authority = if port == default {
            bracketed(&host)
        } else {
            format!("{}:{port}", bracketed(&host))
        };
        forward_head.extend_from_slice(
            format!("{method} {path} HTTP/1.{minor}\r\nHost: {authority}\r\n").as_bytes(),
        );
        for h in req.headers.iter() {
            let skip = |names: &[&str]| names.iter().any(|n| h.name.eq_ignore_ascii_case(n));
            if skip(HOP_HEADERS) || skip(FRAMING_HEADERS) {
                continue;
            }
            forward_head.extend_from_slice(h.name.as_bytes());
            forward_head.extend_from_slice(b": ");
            forward_head.extend_from_slice(h.value);
            forward_head.extend_from_slice(b"\r\n");
        }
        match body {
            Body::Empty if length == Some(0) => {
                forward_head.extend_from_slice(b"Content-Length: 0\r\n");
            }
            Body::Empty => {}
            Body::Length(n) => {
                forward_head.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
            }
            Body::Chunked => forward_head.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        }
        forward_head.extend_from_slice(b"Connection: close\r\n\r\n");
    }
    Ok(Target {
        method: method.to_ascii_uppercase(),
        host,
        port,
        path,
        tunnel,
        host_mismatch,
        body,
        forward_head,
    })
}

/// A host as written in an authority: IPv6 addresses in brackets.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `host:port` / `[v6]:port` of a CONNECT request, the host in canonical form.
fn split_authority(auth: &str) -> std::result::Result<(String, u16), RequestError> {
    let target = || auth.to_string();
    let (host, port) = if auth.starts_with('[') {
        auth.split_once("]:")
            .map(|(h, p)| (format!("{h}]"), p))
            .ok_or_else(|| RequestError::NotIpv6Target { target: target() })?
    } else {
        auth.rsplit_once(':')
            .map(|(h, p)| (h.to_string(), p))
            .ok_or_else(|| RequestError::NoPort { target: target() })?
    };
    let host = host::canonical_host(&host).map_err(|source| RequestError::BadConnectTarget {
        target: target(),
        source,
    })?;
    let port = host::parse_port(port).map_err(|source| RequestError::BadPort { source })?;
    Ok((host, port))
}

async fn reply<C: AsyncWrite + Unpin>(client: &mut C, status: u16, reason: &str) {
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

#[cfg(test)]
mod tests;
