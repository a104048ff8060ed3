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
//! Order of checks for one request: parse (absolute-form HTTP or `CONNECT host:port`),
//! Host header consistency, port, blacklist, whitelist, name resolution, then every
//! resolved address against the engine's [`AddressPolicy`]; only then is one of exactly those
//! addresses dialled (no second lookup, so DNS rebinding gains nothing).

pub mod addr;

pub use addr::AddressPolicy;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use isol8_protocol::{NetworkFilter, NetworkLog};
use regex::Regex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::task::JoinSet;

use crate::limits::compile_regex;
use crate::{Error, Result};

/// Port the agent listens on inside the sandbox.
pub const PROXY_PORT: u16 = isol8_protocol::agent::EGRESS_PORT;
/// Where the socket directory appears inside the sandbox.
pub const SOCKET_DIR_IN_SANDBOX: &str = "/run/isol8";
/// File name of the proxy socket in that directory.
pub const SOCKET_NAME: &str = "egress.sock";
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
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a connection to an upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per sandbox.
const MAX_CONNECTIONS: usize = 128;

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
        let shared: Shared = Arc::new(Mutex::new(State::new(policy)));
        let task = tokio::spawn(accept_loop(listener, net, shared.clone()));
        Ok(Egress { dir, shared, task })
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

async fn accept_loop(listener: UnixListener, net: Arc<dyn Net>, shared: Shared) {
    // Connections live in this set: aborting the loop drops the set, which cuts them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if conns.len() >= MAX_CONNECTIONS {
                        let mut stream = stream;
                        conns.spawn(async move {
                            let _ = reply(&mut stream, 429, "too many open proxy connections").await;
                        });
                        continue;
                    }
                    let (net, shared) = (net.clone(), shared.clone());
                    conns.spawn(async move { serve_connection(stream, net.as_ref(), &shared).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "egress proxy stopped accepting");
                    return;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
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

/// Serves one client connection: read the head, decide, dial, relay.
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
        Ok(Err(why)) => return reply(&mut client, 400, &why).await,
        Err(_) => return reply(&mut client, 408, "no request head within 10 s").await,
    };
    let target = match parse_request(&head) {
        Ok(t) => t,
        Err(why) => return reply(&mut client, 400, &why).await,
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
    let mut upstream = match dial(net, &addrs).await {
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
    let sent = if target.tunnel {
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
    } else {
        match upstream.write_all(&target.forward_head).await {
            Ok(()) => upstream.write_all(&rest).await,
            Err(e) => Err(e),
        }
    };
    if sent.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
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
) -> std::result::Result<(Vec<u8>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = find_head_end(&buf) {
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() >= MAX_HEAD {
            return Err(format!("request head larger than {MAX_HEAD} bytes"));
        }
        let n = client
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the request: {e}"))?;
        if n == 0 {
            return Err("connection closed before the request head ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
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

/// Parses a proxy request head (`CONNECT host:port` or an absolute `http://` URI).
pub fn parse_request(head: &[u8]) -> std::result::Result<Target, String> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete request head".into()),
        Err(e) => return Err(format!("malformed request: {e}")),
    }
    let method = req.method.unwrap_or_default().to_string();
    let raw_target = req.path.unwrap_or_default();
    let minor = req.version.unwrap_or(1);
    let host_header = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase());
    let (host, port, path, tunnel) = if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_authority(raw_target)?;
        (host, port, String::new(), true)
    } else {
        let lower = raw_target.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err("https URLs go through CONNECT, not a plain proxy request".into());
        }
        if !lower.starts_with("http://") {
            return Err(format!(
                "`{raw_target}` is not an absolute http:// URL (this is a proxy)"
            ));
        }
        let url =
            url::Url::parse(raw_target).map_err(|e| format!("bad URL `{raw_target}`: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in proxied URLs are not supported".into());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => normalise_host(d)?,
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("the URL has no host".into()),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        (host, port, path, false)
    };
    let host_mismatch = host_header.filter(|h| !same_authority(h, &host, port, tunnel));
    let mut forward_head = Vec::new();
    if !tunnel {
        forward_head.extend_from_slice(format!("{method} {path} HTTP/1.{minor}\r\n").as_bytes());
        for h in req.headers.iter() {
            if HOP_HEADERS.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
                continue;
            }
            forward_head.extend_from_slice(h.name.as_bytes());
            forward_head.extend_from_slice(b": ");
            forward_head.extend_from_slice(h.value);
            forward_head.extend_from_slice(b"\r\n");
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
        forward_head,
    })
}

/// `host:port` / `[v6]:port` of a CONNECT request.
fn split_authority(auth: &str) -> std::result::Result<(String, u16), String> {
    if auth.is_empty()
        || auth.chars().any(|c| {
            matches!(c, '@' | '/' | '?' | '#' | '\\' | '%') || c.is_whitespace() || c.is_control()
        })
    {
        return Err(format!("`{auth}` is not a host:port CONNECT target"));
    }
    let (host, port) = if let Some(rest) = auth.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("`{auth}` is not a [ipv6]:port CONNECT target"))?;
        let ip: std::net::Ipv6Addr = h
            .parse()
            .map_err(|_| format!("`{h}` is not an IPv6 address"))?;
        (ip.to_string(), p)
    } else {
        let (h, p) = auth
            .rsplit_once(':')
            .ok_or_else(|| format!("`{auth}` has no port (CONNECT needs host:port)"))?;
        (normalise_host(h)?, p)
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{port}` is not a port"))?;
    Ok((host, port))
}

/// Lower-cases a DNS name, drops one trailing dot and refuses what is not a plain
/// ASCII name (`[a-z0-9.-_]`), so rules and logs see exactly what is resolved.
fn normalise_host(host: &str) -> std::result::Result<String, String> {
    let h = host.to_ascii_lowercase();
    let h = h.strip_suffix('.').unwrap_or(&h).to_string();
    if h.is_empty()
        || h.len() > 253
        || !h
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!("`{host}` is not a valid host name"));
    }
    Ok(h)
}

/// Does a `Host` header name the target? A missing port means the scheme's default.
fn same_authority(header: &str, host: &str, port: u16, tunnel: bool) -> bool {
    let (h, p) = if let Some(rest) = header.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, tail)) => (h.to_string(), tail.strip_prefix(':')),
            None => return false,
        }
    } else {
        match header.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (header.to_string(), None),
        }
    };
    let h = h.strip_suffix('.').unwrap_or(&h);
    let default = if tunnel { 443 } else { 80 };
    let p_ok = match p {
        Some(p) => p.parse::<u16>().ok() == Some(port),
        None => port == default || tunnel,
    };
    let host_ok = h == host
        || (h.parse::<IpAddr>().ok().is_some() && h.parse::<IpAddr>().ok() == host.parse().ok());
    host_ok && p_ok
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
