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
