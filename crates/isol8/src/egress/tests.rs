//! Unit tests of the egress proxy with a fake network that records every lookup and
//! every dial, so "refused before anything is dialled" is proved, not assumed.

use super::*;
use tokio::io::DuplexStream;

/// A network whose names resolve from a table and whose dials reach in-memory servers.
#[derive(Default)]
struct FakeNet {
    names: Vec<(&'static str, Vec<IpAddr>)>,
    resolved: Mutex<Vec<String>>,
    dialled: Mutex<Vec<SocketAddr>>,
    /// The server side of each dialled connection.
    servers: Mutex<Vec<DuplexStream>>,
}

impl FakeNet {
    fn with(names: &[(&'static str, &str)]) -> Arc<FakeNet> {
        Arc::new(FakeNet {
            names: names
                .iter()
                .map(|(n, ip)| (*n, vec![ip.parse().expect("ip")]))
                .collect(),
            ..Default::default()
        })
    }
    fn dialled(&self) -> Vec<SocketAddr> {
        self.dialled.lock().expect("lock").clone()
    }
    fn resolved(&self) -> Vec<String> {
        self.resolved.lock().expect("lock").clone()
    }
}

#[async_trait::async_trait]
impl Net for FakeNet {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.resolved.lock().expect("lock").push(host.to_string());
        self.names
            .iter()
            .find(|(n, _)| *n == host)
            .map(|(_, ips)| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
    }
    async fn connect(&self, addr: SocketAddr) -> io::Result<Box<dyn Upstream>> {
        self.dialled.lock().expect("lock").push(addr);
        let (a, b) = tokio::io::duplex(1 << 16);
        self.servers.lock().expect("lock").push(b);
        Ok(Box::new(a))
    }
}

fn rules(white: &[&str], black: &[&str]) -> Rules {
    Rules::new(
        &NetworkFilter {
            whitelist: white.iter().map(|s| s.to_string()).collect(),
            blacklist: black.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        &[],
        false,
    )
    .expect("rules")
}

fn target(head: &str) -> Target {
    parse_request(head.as_bytes()).expect("parse")
}

#[test]
fn connect_and_absolute_requests_parse() {
    let t = target("CONNECT PyPI.org.:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n");
    assert_eq!((t.host.as_str(), t.port, t.tunnel), ("pypi.org", 443, true));
    assert_eq!(t.host_mismatch, None);

    let t = target("CONNECT [::1]:443 HTTP/1.1\r\n\r\n");
    assert_eq!((t.host.as_str(), t.port), ("::1", 443));

    let t = target(
        "GET http://example.com/a/b?c=1 HTTP/1.1\r\nHost: example.com\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!(
        (t.host.as_str(), t.port, t.path.as_str()),
        ("example.com", 80, "/a/b?c=1")
    );
    let fwd = String::from_utf8(t.forward_head).expect("utf8");
    assert!(fwd.starts_with("GET /a/b?c=1 HTTP/1.1\r\n"), "{fwd}");
    assert!(fwd.contains("Accept: */*\r\n") && fwd.ends_with("Connection: close\r\n\r\n"));
    assert!(
        !fwd.to_ascii_lowercase().contains("proxy-connection"),
        "{fwd}"
    );

    // Numeric host forms are normalised to the address they mean.
    let t = target("GET http://2130706433/ HTTP/1.1\r\n\r\n");
    assert_eq!(t.host, "127.0.0.1");
}

#[test]
fn malformed_and_non_proxy_requests_are_rejected() {
    for head in [
        "GET /relative HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "GET https://example.com/ HTTP/1.1\r\n\r\n",
        "GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n",
        "CONNECT example.com HTTP/1.1\r\n\r\n",
        "CONNECT evil@example.com:443 HTTP/1.1\r\n\r\n",
        "CONNECT example.com:0 HTTP/1.1\r\n\r\n",
        "CONNECT exa mple.com:443 HTTP/1.1\r\n\r\n",
        "CONNECT ex%61mple.com:443 HTTP/1.1\r\n\r\n",
        "CONNECT [nonsense]:443 HTTP/1.1\r\n\r\n",
        "NOT A REQUEST\r\n\r\n",
    ] {
        assert!(
            parse_request(head.as_bytes()).is_err(),
            "{head:?} must be rejected"
        );
    }
}

#[tokio::test]
async fn private_literals_are_refused_without_any_lookup_or_dial() {
    let net = FakeNet::with(&[]);
    for host in [
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "100.64.0.7",
        "[fd00::1]",
        "[::ffff:192.168.0.1]",
    ] {
        let t = target(&format!("CONNECT {host}:443 HTTP/1.1\r\n\r\n"));
        let r = decide(
            &t,
            &rules(&[], &[]),
            &AddressPolicy::default(),
            net.as_ref(),
        )
        .await
        .expect_err(host);
        assert_eq!(r.status, 403, "{host}: {r:?}");
    }
    assert!(net.resolved().is_empty() && net.dialled().is_empty());
}

#[tokio::test]
async fn names_resolving_to_private_or_metadata_addresses_are_refused_before_dialling() {
    let net = FakeNet::with(&[
        ("metadata.internal", "169.254.169.254"),
        ("intranet.example", "10.0.0.5"),
        ("sneaky.example", "::ffff:127.0.0.1"),
    ]);
    for host in ["metadata.internal", "intranet.example", "sneaky.example"] {
        let t = target(&format!("CONNECT {host}:443 HTTP/1.1\r\n\r\n"));
        let r = decide(
            &t,
            &rules(&[], &[]),
            &AddressPolicy::default(),
            net.as_ref(),
        )
        .await
        .expect_err(host);
        assert_eq!(r.status, 403);
        assert!(r.reason.contains("resolves to"), "{r:?}");
    }
    assert_eq!(net.resolved().len(), 3);
    assert!(net.dialled().is_empty(), "dialled {:?}", net.dialled());
}

#[tokio::test]
async fn lists_ports_and_host_headers_are_enforced_before_resolution() {
    let net = FakeNet::with(&[
        ("pypi.org", "151.101.0.223"),
        ("evil.example", "151.101.64.9"),
    ]);
    let check = |head: &str, r: Rules| {
        let t = target(head);
        let net = net.clone();
        async move { decide(&t, &r, &AddressPolicy::default(), net.as_ref()).await }
    };
    // A non-empty whitelist admits only matching hosts.
    assert!(check(
        "CONNECT evil.example:443 HTTP/1.1\r\n\r\n",
        rules(&[r"^pypi\.org$"], &[])
    )
    .await
    .is_err());
    // The blacklist wins over the whitelist.
    assert!(check(
        "CONNECT pypi.org:443 HTTP/1.1\r\n\r\n",
        rules(&[r"pypi"], &[r"^pypi\.org$"])
    )
    .await
    .is_err());
    // CONNECT only to 443, plain HTTP only to 80.
    assert!(
        check("CONNECT pypi.org:22 HTTP/1.1\r\n\r\n", rules(&[], &[]))
            .await
            .is_err()
    );
    assert!(check(
        "GET http://pypi.org:8080/ HTTP/1.1\r\n\r\n",
        rules(&[], &[])
    )
    .await
    .is_err());
    // A Host header naming another host than the target.
    let r = check(
        "GET http://pypi.org/ HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        rules(&[], &[]),
    )
    .await
    .expect_err("host mismatch");
    assert!(r.reason.contains("Host header"), "{r:?}");
    assert!(check(
        "CONNECT pypi.org:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        rules(&[], &[])
    )
    .await
    .is_err());
    assert!(net.resolved().is_empty(), "looked up {:?}", net.resolved());
    // An admitted host resolves and passes.
    let ok = check(
        "CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n",
        rules(&[r"^pypi\.org$"], &[]),
    )
    .await
    .expect("allowed");
    assert_eq!(ok, vec!["151.101.0.223:443".parse().expect("addr")]);
    assert!(net.dialled().is_empty());
}

#[test]
fn registry_hosts_join_a_whitelist_only_when_one_applies() {
    let filter = NetworkFilter::default();
    let open = Rules::new(&filter, &["pypi.org"], false).expect("rules");
    assert_eq!(open.refusal("example.com"), None);
    let restricted = Rules::new(&filter, &["pypi.org"], true).expect("rules");
    assert_eq!(restricted.refusal("pypi.org"), None);
    assert!(restricted.refusal("pypi.org.evil.example").is_some());
    assert!(restricted.refusal("example.com").is_some());
    assert!(Rules::deny_all().refusal("pypi.org").is_some());
}

#[tokio::test]
async fn a_narrowing_whitelist_must_admit_a_host_as_well_before_anything_is_looked_up() {
    // The operator admits pypi.org and files.pythonhosted.org; a server client's
    // `networkFilter` laid over that admits `files\.` hosts only (whitelists intersect)
    // and blacklists nothing the operator does not.
    let operator = NetworkFilter {
        whitelist: vec![r"^pypi\.org$".into(), r"^files\.pythonhosted\.org$".into()],
        blacklist: vec![r"^evil\.example$".into()],
        ..Default::default()
    };
    let client = NetworkFilter {
        whitelist: vec![r"^files\.".into(), r"^evil\.example$".into()],
        ..Default::default()
    };
    let merged = operator.narrowed_by(&client);
    let r = Rules::new(&merged, &[], false).expect("rules");
    assert_eq!(r.refusal("files.pythonhosted.org"), None, "both admit it");
    assert!(
        r.refusal("pypi.org").is_some(),
        "the client's whitelist narrows"
    );
    assert!(
        r.refusal("files.example.com").is_some(),
        "the operator's still applies"
    );
    assert!(
        r.refusal("evil.example").is_some(),
        "the operator's blacklist stays"
    );
    // Through the proxy's decision: refused before any lookup or dial.
    let net = FakeNet::with(&[
        ("pypi.org", "151.101.0.223"),
        ("files.example.com", "151.101.0.224"),
    ]);
    for head in [
        "CONNECT pypi.org:443 HTTP/1.1\r\n\r\n",
        "CONNECT files.example.com:443 HTTP/1.1\r\n\r\n",
    ] {
        let refused = decide(&target(head), &r, &AddressPolicy::default(), net.as_ref()).await;
        assert!(refused.is_err(), "{head}");
    }
    assert!(net.resolved().is_empty(), "looked up {:?}", net.resolved());
    assert!(net.dialled().is_empty());
    // Registry hosts of an install join every whitelist, so installs keep working.
    let install = Rules::new(&merged, &["pypi.org"], false).expect("rules");
    assert_eq!(install.refusal("pypi.org"), None);
}

async fn roundtrip(
    net: Arc<FakeNet>,
    shared: Shared,
    request: &[u8],
) -> (String, Option<DuplexStream>) {
    let (mut client, proxy_side) = tokio::io::duplex(1 << 16);
    let task = {
        let net = net.clone();
        tokio::spawn(async move { serve_connection(proxy_side, net.as_ref(), &shared).await })
    };
    client.write_all(request).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = client.read(&mut buf).await.expect("read");
    let server = net.servers.lock().expect("lock").pop();
    drop(client);
    if server.is_none() {
        task.await.expect("task");
    }
    (String::from_utf8_lossy(&buf[..n]).into_owned(), server)
}

#[tokio::test]
async fn tunnels_and_plain_requests_are_relayed_and_logged_per_execution() {
    let net = FakeNet::with(&[("pypi.org", "151.101.0.223")]);
    let shared: Shared = Arc::new(Mutex::new(State::new(Arc::default())));

    // Between executions nothing is admitted.
    let (reply, _) = roundtrip(
        net.clone(),
        shared.clone(),
        b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");

    begin(&shared, Arc::new(rules(&[r"^pypi\.org$"], &[])), true);
    let (reply, server) = roundtrip(
        net.clone(),
        shared.clone(),
        b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(server.is_some());

    // A plain request: the rewritten head goes upstream and the answer comes back.
    let (mut client, proxy_side) = tokio::io::duplex(1 << 16);
    let task = {
        let (net, shared) = (net.clone(), shared.clone());
        tokio::spawn(async move { serve_connection(proxy_side, net.as_ref(), &shared).await })
    };
    client
        .write_all(b"GET http://pypi.org/simple/ HTTP/1.1\r\nHost: pypi.org\r\nProxy-Connection: keep-alive\r\n\r\n")
        .await
        .expect("write");
    let mut server = None;
    for _ in 0..200 {
        server = net.servers.lock().expect("lock").pop();
        if server.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut server = server.expect("the proxy dialled upstream");
    let mut got = vec![0u8; 1024];
    let n = server.read(&mut got).await.expect("upstream read");
    let got = String::from_utf8_lossy(&got[..n]).into_owned();
    assert!(
        got.starts_with("GET /simple/ HTTP/1.1\r\n") && got.contains("Connection: close"),
        "{got}"
    );
    server
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .expect("answer");
    drop(server);
    let mut answer = String::new();
    client
        .read_to_string(&mut answer)
        .await
        .expect("client read");
    assert!(answer.ends_with("hi"), "{answer}");
    drop(client);
    task.await.expect("task");

    let (reply, _) = roundtrip(
        net.clone(),
        shared.clone(),
        b"CONNECT 169.254.169.254:443 HTTP/1.1\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");

    let logs = finish(&shared).expect("logging was on");
    let summary: Vec<(String, String, String)> = logs
        .iter()
        .map(|l| (l.method.clone(), l.host.clone(), l.action.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("CONNECT".into(), "pypi.org".into(), "ALLOW".into()),
            ("GET".into(), "pypi.org".into(), "ALLOW".into()),
            ("CONNECT".into(), "169.254.169.254".into(), "BLOCK".into()),
        ]
    );
    assert_eq!(logs[1].path, "/simple/");
    assert_eq!(
        net.dialled(),
        vec![
            "151.101.0.223:443".parse().expect("a"),
            "151.101.0.223:80".parse().expect("a")
        ]
    );

    // The next execution starts with an empty log, and without logging there is none.
    begin(&shared, Arc::new(rules(&[], &[])), false);
    assert_eq!(finish(&shared), None);
}

#[tokio::test]
async fn socket_directories_of_dead_processes_are_reaped_and_live_ones_kept() {
    let live = Egress::bind(FakeNet::with(&[]), Arc::default()).expect("bind");
    assert!(live.dir().join(SOCKET_NAME).exists());
    // A directory named after a process that cannot exist (beyond pid_max).
    let dead = socket_base().join("4194305-deadbeef");
    std::fs::create_dir_all(&dead).expect("dead dir");
    std::fs::write(dead.join(SOCKET_NAME), b"").expect("stale socket file");
    assert!(reap_stale_dirs() >= 1);
    assert!(!dead.exists(), "a dead process's directory survived");
    assert!(live.dir().exists(), "this process's directory was removed");
    let dir = live.dir().to_path_buf();
    drop(live);
    assert!(!dir.exists(), "dropping the proxy removes its directory");
}

/// Waits (up to a generous bound, only to avoid hanging) for the proxy to dial, and
/// returns the upstream's end of that connection.
async fn next_server(net: &FakeNet) -> DuplexStream {
    for _ in 0..2000 {
        if let Some(s) = net.servers.lock().expect("lock").pop() {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the proxy never dialled upstream");
}

/// Starts serving one client connection; returns the client's end and the task.
fn connect(net: &Arc<FakeNet>, shared: &Shared) -> (DuplexStream, tokio::task::JoinHandle<()>) {
    let (client, proxy_side) = tokio::io::duplex(1 << 16);
    let (net, shared) = (net.clone(), shared.clone());
    let task =
        tokio::spawn(async move { serve_connection(proxy_side, net.as_ref(), &shared).await });
    (client, task)
}

fn open_rules(shared: &Shared, deny: &[&str]) {
    begin(shared, Arc::new(rules(&[], deny)), true);
}

#[tokio::test]
async fn hosts_with_empty_labels_are_refused_wherever_a_host_enters() {
    let net = FakeNet::with(&[("denied.example", "151.101.0.1")]);
    let shared: Shared = Arc::new(Mutex::new(State::new(Arc::default())));
    open_rules(&shared, &[r"^denied\.example$"]);
    // Refused as malformed: empty labels in the CONNECT authority, the URL host or the
    // Host header, leading dots, and escapes or spaces where no decoding happens.
    for head in [
        "CONNECT denied.example..:443 HTTP/1.1\r\n\r\n",
        "CONNECT denied.example...:443 HTTP/1.1\r\n\r\n",
        "CONNECT denied..example:443 HTTP/1.1\r\n\r\n",
        "CONNECT .denied.example:443 HTTP/1.1\r\n\r\n",
        "CONNECT denied%2eexample:443 HTTP/1.1\r\n\r\n",
        "CONNECT denied.example:+443 HTTP/1.1\r\n\r\n",
        "GET http://denied.example../ HTTP/1.1\r\n\r\n",
        "GET http://denied..example/ HTTP/1.1\r\n\r\n",
        "GET http://.denied.example/ HTTP/1.1\r\n\r\n",
        "GET http://denied.example.%2e/ HTTP/1.1\r\n\r\n",
        "GET http://denied.example/ HTTP/1.1\r\nHost: denied.example..\r\n\r\n",
        "CONNECT denied.example:443 HTTP/1.1\r\nHost: a..b:443\r\n\r\n",
        "GET http://denied.example/ HTTP/1.1\r\nHost: denied%2eexample\r\n\r\n",
    ] {
        let (reply, _) = roundtrip(net.clone(), shared.clone(), head.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{head:?}: {reply}");
    }
    // Accepted spellings of the denied host all reach the rule as `denied.example`: one
    // trailing dot, upper case, percent-escapes and full-width dots in a URL (which the
    // URL parser decodes, as the client's resolver would).
    for head in [
        "CONNECT denied.example.:443 HTTP/1.1\r\n\r\n",
        "CONNECT DENIED.Example:443 HTTP/1.1\r\nHost: denied.example.:443\r\n\r\n",
        "GET http://denied.example./ HTTP/1.1\r\nHost: DENIED.example.\r\n\r\n",
        "GET http://denied%2eexample/ HTTP/1.1\r\n\r\n",
        "GET http://denied\u{ff0e}example/ HTTP/1.1\r\n\r\n",
    ] {
        let (reply, _) = roundtrip(net.clone(), shared.clone(), head.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 403"), "{head:?}: {reply}");
        assert!(reply.contains("blacklist"), "{head:?}: {reply}");
    }
    assert!(net.resolved().is_empty(), "looked up {:?}", net.resolved());
    assert!(net.dialled().is_empty(), "dialled {:?}", net.dialled());
    let logs = finish(&shared).expect("logs");
    assert_eq!(logs.len(), 5, "{logs:?}");
    assert!(logs
        .iter()
        .all(|l| l.host == "denied.example" && l.action == "BLOCK"));
}

#[tokio::test]
async fn numeric_ipv4_forms_meet_the_rules_as_the_address_they_mean() {
    let net = FakeNet::with(&[]);
    let shared: Shared = Arc::new(Mutex::new(State::new(Arc::default())));
    open_rules(&shared, &[r"^151\.101\.0\.1$"]);
    // 2539978753 = 0x97650001 = 151.101.0.1; the resolver would read each form so.
    for head in [
        "CONNECT 2539978753:443 HTTP/1.1\r\n\r\n",
        "CONNECT 0x97.0x65.0.1:443 HTTP/1.1\r\n\r\n",
        "CONNECT 151.101.1:443 HTTP/1.1\r\n\r\n",
        "CONNECT 151.101.0.1.:443 HTTP/1.1\r\n\r\n",
        "GET http://0227.0145.0.01/ HTTP/1.1\r\n\r\n",
    ] {
        let (reply, _) = roundtrip(net.clone(), shared.clone(), head.as_bytes()).await;
        assert!(
            reply.starts_with("HTTP/1.1 403") && reply.contains("blacklist"),
            "{head:?}: {reply}"
        );
    }
    assert!(net.resolved().is_empty() && net.dialled().is_empty());
}

#[tokio::test]
async fn more_than_one_host_header_is_a_400_and_nothing_is_dialled() {
    let net = FakeNet::with(&[("pypi.org", "151.101.0.223")]);
    let shared: Shared = Arc::new(Mutex::new(State::new(Arc::default())));
    open_rules(&shared, &[]);
    for head in [
        "GET http://pypi.org/ HTTP/1.1\r\nHost: pypi.org\r\nHost: evil.example\r\n\r\n",
        "GET http://pypi.org/ HTTP/1.1\r\nHost: pypi.org\r\nhost: pypi.org\r\n\r\n",
        "CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\nHOST: evil.example:443\r\n\r\n",
    ] {
        let (reply, _) = roundtrip(net.clone(), shared.clone(), head.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{head:?}: {reply}");
    }
    assert!(net.resolved().is_empty() && net.dialled().is_empty());
}

#[tokio::test]
async fn bodies_whose_end_is_ambiguous_or_unbounded_are_refused_before_dialling() {
    let net = FakeNet::with(&[("pypi.org", "151.101.0.223")]);
    let shared: Shared = Arc::new(Mutex::new(State::new(Arc::default())));
    open_rules(&shared, &[]);
    let post = |headers: &str| {
        format!("POST http://pypi.org/ HTTP/1.1\r\nHost: pypi.org\r\n{headers}\r\n")
    };
    for head in [
        post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
        post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
        post("Content-Length: 5\r\nContent-Length: 5\r\n"),
        post("Content-Length: 5\r\nContent-Length: 6\r\n"),
        post("Content-Length: 5, 5\r\n"),
        post("Content-Length: +5\r\n"),
        post("Content-Length: -1\r\n"),
        post("Content-Length: 0x5\r\n"),
        post("Content-Length: 99999999999999999999999\r\n"),
        post("Transfer-Encoding: gzip\r\n"),
        post("Transfer-Encoding: gzip, chunked\r\n"),
        post("Transfer-Encoding: chunked, chunked\r\n"),
        post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        post("Transfer-Encoding: xchunked\r\n"),
        post("Content_Length: 5\r\n"),
        post("Transfer_Encoding: chunked\r\n"),
        "POST http://pypi.org/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
        "CONNECT pypi.org:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\n".to_string(),
        "CONNECT pypi.org:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
    ] {
        let (reply, _) = roundtrip(net.clone(), shared.clone(), head.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{head:?}: {reply}");
    }
    assert!(net.resolved().is_empty(), "looked up {:?}", net.resolved());
    assert!(net.dialled().is_empty(), "dialled {:?}", net.dialled());
}

/// Sends `request` through the proxy to a fake upstream that reads `expect.len()` bytes,
/// answers and closes; returns every byte the upstream ever received and the answer
/// the client got.
async fn one_exchange(
    net: &Arc<FakeNet>,
    shared: &Shared,
    request: &[u8],
    expect: &[u8],
) -> (Vec<u8>, String) {
    let (mut client, task) = connect(net, shared);
    client.write_all(request).await.expect("write");
    let mut server = next_server(net).await;
    let mut got = vec![0u8; expect.len()];
    server
        .read_exact(&mut got)
        .await
        .expect("the request reaches upstream");
    // The client goes on talking; none of it may reach the upstream either.
    client
        .write_all(b"GET http://evil.example/late HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        .await
        .expect("write");
    server
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        .await
        .expect("answer");
    server.shutdown().await.expect("close");
    // Everything else the proxy sent before it closed the upstream connection.
    server.read_to_end(&mut got).await.expect("upstream read");
    let mut answer = String::new();
    client
        .read_to_string(&mut answer)
        .await
        .expect("client read");
    task.await.expect("task");
    (got, answer)
}

#[tokio::test]
async fn a_second_request_on_the_connection_never_reaches_the_upstream() {
    let net = FakeNet::with(&[("pypi.org", "151.101.0.223")]);
    let shared: Shared = Arc::new(Mutex::new(State::new(Arc::default())));
    open_rules(&shared, &[r"^evil\.example$"]);
    let smuggled = "GET http://evil.example/secret HTTP/1.1\r\nHost: evil.example\r\n\r\n";
    let cases = [
        // Pipelined behind a request without a body.
        (
            format!("GET http://pypi.org/a HTTP/1.1\r\nHost: pypi.org\r\n\r\n{smuggled}"),
            "GET /a HTTP/1.1\r\nHost: pypi.org\r\nConnection: close\r\n\r\n".to_string(),
        ),
        // Behind a Content-Length body.
        (
            format!("POST http://pypi.org/b HTTP/1.1\r\nHost: pypi.org\r\nContent-Length: 5\r\n\r\nhello{smuggled}"),
            "POST /b HTTP/1.1\r\nHost: pypi.org\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_string(),
        ),
        // Behind a chunked body with an extension and a trailer (both dropped).
        (
            format!("POST http://pypi.org/c HTTP/1.1\r\nHost: pypi.org\r\nTransfer-Encoding: Chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n{smuggled}"),
            "POST /c HTTP/1.1\r\nHost: pypi.org\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_string(),
        ),
        // Head lines ended by bare LF: the head ends where the parser says.
        (
            format!("GET http://pypi.org/d HTTP/1.1\nHost: pypi.org\n\n{smuggled}"),
            "GET /d HTTP/1.1\r\nHost: pypi.org\r\nConnection: close\r\n\r\n".to_string(),
        ),
    ];
    for (request, expect) in &cases {
        let (got, answer) =
            one_exchange(&net, &shared, request.as_bytes(), expect.as_bytes()).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            *expect,
            "the upstream got more than the first request"
        );
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
    }
    assert!(
        !net.resolved().iter().any(|h| h.contains("evil")),
        "{:?}",
        net.resolved()
    );
    assert_eq!(net.dialled().len(), cases.len(), "{:?}", net.dialled());
    let logs = finish(&shared).expect("logs");
    let paths: Vec<(&str, &str)> = logs
        .iter()
        .map(|l| (l.host.as_str(), l.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("pypi.org", "/a"),
            ("pypi.org", "/b"),
            ("pypi.org", "/c"),
            ("pypi.org", "/d")
        ]
    );
}

#[tokio::test]
async fn a_malformed_chunked_body_cuts_the_request_short() {
    let net = FakeNet::with(&[("pypi.org", "151.101.0.223")]);
    let shared: Shared = Arc::new(Mutex::new(State::new(Arc::default())));
    open_rules(&shared, &[]);
    let (mut client, task) = connect(&net, &shared);
    // The chunk claims 2 bytes but carries a whole request after them.
    client
        .write_all(b"POST http://pypi.org/ HTTP/1.1\r\nHost: pypi.org\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiGET http://evil.example/ HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut server = next_server(&net).await;
    // The proxy ends the exchange by itself (the upstream never answers) …
    task.await.expect("task");
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.expect("read");
    let got = String::from_utf8_lossy(&got);
    // … and the upstream got the head at most, never what followed the bad chunk.
    assert!(got.starts_with("POST / HTTP/1.1\r\n"), "{got}");
    assert!(!got.contains("evil"), "{got}");
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.expect("client read");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
}

/// A listener that hands out what the test sends it: clients or accept errors.
struct Scripted(tokio::sync::mpsc::UnboundedReceiver<io::Result<DuplexStream>>);

#[async_trait::async_trait]
impl conn::Listener for Scripted {
    type Conn = DuplexStream;
    async fn accept(&mut self) -> io::Result<DuplexStream> {
        match self.0.recv().await {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }
}

type Script = tokio::sync::mpsc::UnboundedSender<io::Result<DuplexStream>>;

fn scripted_proxy(net: Arc<FakeNet>, budget: Arc<conn::Budget>) -> (Egress, Script) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let dir = socket_base().join(format!("test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let egress = Egress::serve(dir, Scripted(rx), net, Arc::default(), budget);
    (egress, tx)
}

/// Hands a new client to the proxy, sends `head` and returns the first line answered.
async fn ask(script: &Script, head: &str) -> (DuplexStream, String) {
    let (mut client, proxy_side) = tokio::io::duplex(1 << 16);
    script.send(Ok(proxy_side)).expect("proxy is listening");
    client.write_all(head.as_bytes()).await.expect("write");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if client.read(&mut byte).await.expect("read") == 0 {
            break;
        }
        line.push(byte[0]);
    }
    (
        client,
        String::from_utf8_lossy(&line).trim_end().to_string(),
    )
}

#[tokio::test(start_paused = true)]
async fn accept_errors_are_retried_and_the_proxy_keeps_serving() {
    let net = FakeNet::with(&[]);
    let (egress, script) = scripted_proxy(net, conn::Budget::new(16));
    // Out of descriptors (process and system), an aborted handshake, and many more:
    // each is retried after a backoff, never the end of the proxy.
    for errno in [
        libc::EMFILE,
        libc::ENFILE,
        libc::ECONNABORTED,
        libc::ENOBUFS,
        libc::ENOMEM,
    ]
    .into_iter()
    .chain(std::iter::repeat_n(libc::EMFILE, 20))
    {
        script
            .send(Err(io::Error::from_raw_os_error(errno)))
            .expect("send");
    }
    let (_c, status) = ask(&script, "CONNECT pypi.org:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        status, "HTTP/1.1 403 Forbidden",
        "the proxy stopped serving"
    );
    assert!(egress.is_running());
    // A socket that is unusable for good ends the proxy, and says so.
    script
        .send(Err(io::Error::from_raw_os_error(libc::EBADF)))
        .expect("send");
    tokio::time::timeout(Duration::from_secs(3600), async {
        while egress.is_running() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the proxy ends on a failed socket");
}

#[tokio::test]
async fn connections_beyond_the_sandbox_and_process_caps_get_429() {
    let net = FakeNet::with(&[("pypi.org", "151.101.0.223")]);
    let tunnel = "CONNECT pypi.org:443 HTTP/1.1\r\n\r\n";
    // Per sandbox: conn::MAX_CONNECTIONS open tunnels, then 429.
    let budget = conn::Budget::new(conn::MAX_CONNECTIONS + 10);
    let (a, script_a) = scripted_proxy(net.clone(), budget.clone());
    open_rules(a.shared(), &[]);
    let mut held = Vec::new();
    for _ in 0..conn::MAX_CONNECTIONS {
        let (c, status) = ask(&script_a, tunnel).await;
        assert_eq!(status, "HTTP/1.1 200 Connection Established");
        held.push(c);
    }
    let (_c, status) = ask(&script_a, tunnel).await;
    assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
    assert_eq!(budget.open(), conn::MAX_CONNECTIONS);

    // Per process: another sandbox's proxy shares the budget and gets 429 at its end.
    let (b, script_b) = scripted_proxy(net.clone(), budget.clone());
    open_rules(b.shared(), &[]);
    for _ in 0..10 {
        let (c, status) = ask(&script_b, tunnel).await;
        assert_eq!(status, "HTTP/1.1 200 Connection Established");
        held.push(c);
    }
    let (_c, status) = ask(&script_b, tunnel).await;
    assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
    // Closing one connection (client and upstream) frees its slot for the next client.
    drop(held.pop());
    drop(net.servers.lock().expect("lock").pop());
    tokio::time::timeout(Duration::from_secs(60), async {
        while budget.open() >= budget.max() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a closed connection gives its slot back");
    let (_c, status) = ask(&script_b, tunnel).await;
    assert_eq!(status, "HTTP/1.1 200 Connection Established");
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed_and_busy_ones_kept() {
    let net = FakeNet::with(&[("pypi.org", "151.101.0.223")]);
    let shared: Shared = Arc::new(Mutex::new(State::new(Arc::default())));
    open_rules(&shared, &[]);

    // A tunnel on which nothing moves is closed (the proxy's task ends by itself).
    let (mut client, task) = connect(&net, &shared);
    client
        .write_all(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut server = next_server(&net).await;
    tokio::time::timeout(conn::IDLE_TIMEOUT * 10, task)
        .await
        .expect("an idle tunnel is closed")
        .expect("task");
    let mut rest = Vec::new();
    server
        .read_to_end(&mut rest)
        .await
        .expect("upstream sees the close");

    // A slow download that never pauses for the idle time goes on past it.
    let (mut client, task) = connect(&net, &shared);
    client
        .write_all(b"GET http://pypi.org/slow HTTP/1.1\r\nHost: pypi.org\r\n\r\n")
        .await
        .expect("write");
    let mut server = next_server(&net).await;
    let steps = 6u32;
    let upstream = tokio::spawn(async move {
        server
            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            .await
            .expect("head");
        for _ in 0..steps {
            tokio::time::sleep(conn::IDLE_TIMEOUT / 2).await;
            server.write_all(b"x").await.expect("body byte");
        }
        server.shutdown().await.expect("close");
    });
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.expect("read");
    assert!(answer.ends_with(&"x".repeat(steps as usize)), "{answer}");
    upstream.await.expect("upstream");
    task.await.expect("task");
}

#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    let (soft, hard) = raise_open_files_limit().expect("limits");
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    assert_eq!(soft, hard.min(nr_open));
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `now` is a valid, exclusively borrowed rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
    assert_eq!(now.rlim_cur, soft);
}
