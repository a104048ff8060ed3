//! The `filtered` network and package installs against the real daemon and the real
//! package registries (PyPI, npm).
//!
//! Traffic goes only to the registries and to loopback: every private, link-local or
//! metadata address below is refused by the proxy before anything is dialled (the unit
//! tests in `src/egress/tests.rs` prove the "before" with a recording network), and the
//! direct-socket probes use TEST-NET-1 (192.0.2.1) from a sandbox that has no interface
//! to send them on.

use isol8::docker::EngineConfig;
use isol8::{DockerEngine, Engine, EngineOptions, Error};
use isol8_protocol::{NetworkFilter, NetworkMode};
use isol8_testkit::{assert_clean, code, engine_with, run};

/// The CA bundle trusted inside sandboxes: this machine's own bundle, which includes the
/// TLS-intercepting proxy's CA on machines that have one.
fn ca_bundle() -> Option<String> {
    let path = std::env::var("ISOL8_TEST_CA_BUNDLE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    std::path::Path::new(&path).exists().then_some(path)
}

async fn engine(options: EngineOptions) -> DockerEngine {
    engine_with(EngineConfig {
        options,
        ca_bundle: ca_bundle(),
        exempt_ranges: isol8_testkit::registry_exemptions(),
        ..Default::default()
    })
    .await
}

fn filtered(whitelist: &[&str], blacklist: &[&str]) -> EngineOptions {
    EngineOptions {
        network: Some(NetworkMode::Filtered),
        network_filter: Some(NetworkFilter {
            whitelist: whitelist.iter().map(|s| s.to_string()).collect(),
            blacklist: blacklist.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        log_network: Some(true),
        ..Default::default()
    }
}

/// A request installing `packages`. Tests pin versions (`six==1.17.0`) so that a custom
/// image built by another test with the bare name (`six`) never covers them.
fn installing(runtime: &str, packages: &[&str], source: &str) -> isol8::ExecutionRequest {
    let mut req = code(runtime, source);
    req.install_packages = packages.iter().map(|s| s.to_string()).collect();
    req.timeout_ms = Some(120_000);
    req
}

#[isol8_testkit::test(docker, registries)]
async fn pip_install_then_import_in_filtered_mode() {
    let engine = engine(EngineOptions {
        log_network: Some(true),
        ..Default::default()
    })
    .await;
    // No network given: installing switches to `filtered` with PyPI's hosts allowed.
    let r = run(
        &engine,
        installing(
            "python",
            &["six==1.17.0"],
            "import six; print('six', six.__version__)",
        ),
    )
    .await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(r.stdout.contains("six 1."), "{r:?}");
    let logs = r.network_logs.expect("logNetwork gives networkLogs");
    assert!(
        logs.iter()
            .any(|l| l.host == "pypi.org" && l.action == "ALLOW" && l.method == "CONNECT"),
        "{logs:?}"
    );
    assert!(logs.iter().all(|l| l.action == "ALLOW"), "{logs:?}");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, registries)]
async fn npm_install_then_require_in_filtered_mode() {
    let engine = engine(filtered(&[], &[])).await;
    let r = run(
        &engine,
        installing(
            "node",
            &["is-number@7.0.0"],
            "const isNumber = require('is-number'); console.log('is-number', isNumber(42), isNumber('x'))",
        ),
    )
    .await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(r.stdout.contains("is-number true false"), "{r:?}");
    assert!(
        !r.stderr.contains("Warning"),
        "no proxy noise on stderr: {}",
        r.stderr
    );
    let logs = r.network_logs.expect("networkLogs");
    assert!(
        logs.iter()
            .any(|l| l.host == "registry.npmjs.org" && l.action == "ALLOW"),
        "{logs:?}"
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker)]
async fn installing_with_network_none_is_a_clear_error() {
    let engine = engine(EngineOptions {
        network: Some(NetworkMode::None),
        ..Default::default()
    })
    .await;
    let err = engine
        .execute(installing("python", &["six==1.17.0"], "import six"))
        .await
        .expect_err("no network, no install");
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    assert!(
        msg.contains("installPackages") && msg.contains("none"),
        "{msg}"
    );
    // Without the install the same code fails in the sandbox: six is not there.
    let r = run(&engine, code("python", "import six")).await;
    assert_ne!(r.exit_code, 0);
    assert!(r.stderr.contains("No module named 'six'"), "{r:?}");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, registries)]
async fn a_failed_install_is_an_error_carrying_the_installers_message() {
    let engine = engine(EngineOptions::default()).await;
    let err = engine
        .execute(installing(
            "python",
            &["isol8-no-such-package-7f3a9c"],
            "print('never')",
        ))
        .await
        .expect_err("the package does not exist");
    let msg = err.to_string();
    assert!(matches!(err, Error::PackageInstall { .. }), "{err:?}");
    assert!(
        msg.contains("pip") && msg.contains("No matching distribution"),
        "{msg}"
    );
    // Package names are argv entries, never shell text, and never options or URLs.
    for bad in [
        "six; rm -rf /",
        "--index-url=http://evil.example/",
        "https://evil.example/x.whl",
        "../x",
        "$(id)",
    ] {
        let err = engine
            .execute(installing("python", &[bad], "print(1)"))
            .await
            .expect_err(bad);
        assert!(matches!(err, Error::InvalidRequest(_)), "{bad}: {err:?}");
    }
    assert_clean(&engine).await;
}

/// Python that fetches each URL through the proxy and prints `URL -> status`.
const FETCH: &str = r#"
import sys, urllib.request, urllib.error
for url in sys.argv[1:] or URLS:
    try:
        r = urllib.request.urlopen(url, timeout=30)
        print(url, '->', r.status)
    except urllib.error.HTTPError as e:
        print(url, '->', e.code)
    except urllib.error.URLError as e:
        # A refused CONNECT surfaces as "Tunnel connection failed: 403 Forbidden".
        print(url, '->', 403 if '403' in str(e.reason) else 'error: %s' % e.reason)
"#;

fn fetch(urls: &[&str]) -> String {
    format!("URLS = {urls:?}\n{FETCH}")
}

#[isol8_testkit::test(docker, registries)]
async fn an_allowlisted_host_is_reachable_and_others_get_403_with_block_logs() {
    let engine = engine(filtered(&[r"^pypi\.org$"], &[])).await;
    let r = run(
        &engine,
        code(
            "python",
            &fetch(&[
                "https://pypi.org/simple/six/",
                "https://registry.npmjs.org/is-number",
                "http://example.com/",
            ]),
        ),
    )
    .await;
    assert!(
        r.stdout.contains("https://pypi.org/simple/six/ -> 200"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("https://registry.npmjs.org/is-number -> 403"),
        "{r:?}"
    );
    assert!(r.stdout.contains("http://example.com/ -> 403"), "{r:?}");
    let logs = r.network_logs.expect("networkLogs");
    let actions: Vec<(&str, &str)> = logs
        .iter()
        .map(|l| (l.host.as_str(), l.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("pypi.org", "ALLOW"),
            ("registry.npmjs.org", "BLOCK"),
            ("example.com", "BLOCK")
        ],
        "{logs:?}"
    );
    // The blacklist wins over the whitelist.
    let mut req = code("python", &fetch(&["https://pypi.org/simple/six/"]));
    req.timeout_ms = Some(60_000);
    let r = engine
        .execute_with(req, &filtered(&["pypi"], &[r"^pypi\.org$"]))
        .await
        .expect("run");
    assert!(r.stdout.contains("-> 403"), "{r:?}");
    assert_eq!(r.network_logs.expect("logs")[0].action, "BLOCK");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, registries)]
async fn per_request_host_rules_narrow_the_engines_and_never_remove_them() {
    // The operator admits the two registries only. `.invalid` names never resolve, so
    // nothing is dialled even if a rule were lost.
    let engine = engine(filtered(&[r"^pypi\.org$", r"^registry\.npmjs\.org$"], &[])).await;
    let urls = [
        "https://pypi.org/simple/six/",
        "https://registry.npmjs.org/is-number",
        "http://isol8-test.invalid/",
    ];
    let actions = |r: &isol8::ExecutionResult| -> Vec<String> {
        r.network_logs
            .iter()
            .flatten()
            .map(|l| format!("{} {}", l.host, l.action))
            .collect()
    };
    let cases = [
        // Empty objects used to replace the operator's rules (and with them, the whitelist).
        (
            r#"{"networkFilter": {}, "security": {}}"#,
            [
                "pypi.org ALLOW",
                "registry.npmjs.org ALLOW",
                "isol8-test.invalid BLOCK",
            ],
        ),
        // A client whitelist applies in addition: both must admit a host.
        (
            r#"{"networkFilter": {"whitelist": ["^registry\\.npmjs\\.org$", "invalid$"]}}"#,
            [
                "pypi.org BLOCK",
                "registry.npmjs.org ALLOW",
                "isol8-test.invalid BLOCK",
            ],
        ),
        // A client blacklist adds to the operator's.
        (
            r#"{"networkFilter": {"blacklist": ["^pypi\\.org$"]}}"#,
            [
                "pypi.org BLOCK",
                "registry.npmjs.org ALLOW",
                "isol8-test.invalid BLOCK",
            ],
        ),
    ];
    for (json, want) in cases {
        let mut options: EngineOptions = serde_json::from_str(json).expect("options");
        options.log_network = Some(true);
        let mut req = code("python", &fetch(&urls));
        req.timeout_ms = Some(60_000);
        let r = engine.execute_with(req, &options).await.expect("run");
        assert_eq!(actions(&r), want, "{json}: {r:?}");
    }
    assert_clean(&engine).await;
}

/// Python: `ask(head)` sends a raw request head to the proxy and returns its status line.
const ASK: &str = r#"
import socket
def ask(head):
    s = socket.create_connection(('127.0.0.1', 3128), timeout=20)
    s.sendall(head.encode())
    status = s.recv(200).split(b'\r\n')[0].decode()
    s.close()
    return status
"#;

#[isol8_testkit::test(docker)]
async fn private_loopback_and_metadata_targets_are_refused_and_logged() {
    let engine = engine(filtered(&[], &[])).await;
    let urls = [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/",
        "http://[fd00:ec2::254]/",
        "http://2130706433/",
        "https://192.168.1.1/",
    ];
    let r = run(&engine, code("python", &fetch(&urls))).await;
    for url in &urls {
        assert!(
            r.stdout.contains(&format!("{url} -> 403")),
            "{url} not refused: {r:?}"
        );
    }
    let logs = r.network_logs.expect("networkLogs");
    let hosts: Vec<&str> = logs.iter().map(|l| l.host.as_str()).collect();
    assert_eq!(
        hosts,
        vec![
            "10.0.0.1",
            "169.254.169.254",
            "100.100.100.200",
            "fd00:ec2::254",
            "127.0.0.1",
            "192.168.1.1"
        ],
        "numeric host forms are judged by the address they mean"
    );
    assert!(logs.iter().all(|l| l.action == "BLOCK"), "{logs:?}");

    // A service on the host's loopback stands for the isol8 server's port: neither the
    // proxy (by name or address) nor a direct socket reaches it.
    let host_service = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = host_service.local_addr().expect("addr").port();
    let probe = format!(
        "{ASK}\nprint('byname', ask('CONNECT localhost:443 HTTP/1.1\\r\\n\\r\\n'))\n\
         print('byaddr', ask('CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\n\\r\\n'))\n\
         try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3); print('direct REACHED')\n\
         except OSError as e:\n    print('direct failed', e.errno)\n"
    );
    let r = run(&engine, code("python", &probe)).await;
    assert!(r.stdout.contains("byname HTTP/1.1 403"), "{r:?}");
    assert!(r.stdout.contains("byaddr HTTP/1.1 403"), "{r:?}");
    assert!(r.stdout.contains("direct failed"), "{r:?}");
    host_service.set_nonblocking(true).expect("nonblocking");
    assert!(
        host_service.accept().is_err(),
        "the sandbox reached a host service"
    );
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker)]
async fn proxy_tricks_and_direct_sockets_reach_nothing() {
    let engine = engine(filtered(&[], &[])).await;
    // Speaks to the proxy by hand: a CONNECT to a non-allowed port, a Host header that
    // differs from the target, an origin-form request, a host with an empty label, two
    // Host headers, a body framed both ways; then tries to bypass the proxy with raw
    // TCP, UDP (DNS), a raw socket and name resolution.
    let probe = ASK.to_string()
        + r#"
print('port22', ask('CONNECT pypi.org:22 HTTP/1.1\r\nHost: pypi.org:22\r\n\r\n'))
print('hostmismatch', ask('GET http://example.com/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n'))
print('originform', ask('GET / HTTP/1.1\r\nHost: example.com\r\n\r\n'))
print('connectmeta', ask('CONNECT 169.254.169.254:443 HTTP/1.1\r\n\r\n'))
print('emptylabel', ask('CONNECT pypi.org..:443 HTTP/1.1\r\n\r\n'))
print('twohosts', ask('GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nHost: 10.0.0.1\r\n\r\n'))
print('clte', ask('POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'))
def attempt(name, fn):
    try:
        fn(); print(name, 'REACHED')
    except OSError as e:
        print(name, 'failed', e.errno)
attempt('tcp', lambda: socket.create_connection(('192.0.2.1', 80), timeout=3))
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04pypi\x03org\x00\x00\x01\x00\x01', ('192.0.2.1', 53))
    s.recvfrom(512)
attempt('udp', udp)
attempt('raw', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt('dns', lambda: socket.getaddrinfo('pypi.org', 443))
def docker_socket():
    s = socket.socket(socket.AF_UNIX)
    s.connect('/var/run/docker.sock')
attempt('docker', docker_socket)
"#;
    let r = run(&engine, code("python", &probe)).await;
    for (name, status) in [
        ("port22", "403"),
        ("hostmismatch", "403"),
        ("originform", "400"),
        ("connectmeta", "403"),
        ("emptylabel", "400"),
        ("twohosts", "400"),
        ("clte", "400"),
    ] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(name) && l.contains(status)),
            "{name} not refused with {status}: {r:?}"
        );
    }
    for name in ["tcp", "udp", "raw", "dns", "docker"] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{name} failed"))),
            "{name} was not stopped: {r:?}"
        );
    }
    let logs = r.network_logs.expect("networkLogs");
    let blocked: Vec<&str> = logs
        .iter()
        .filter(|l| l.action == "BLOCK")
        .map(|l| l.host.as_str())
        .collect();
    assert_eq!(
        blocked,
        vec!["pypi.org", "example.com", "169.254.169.254"],
        "{logs:?}"
    );
    assert_clean(&engine).await;
}

/// This host's interface addresses other than loopback, found now, leaving out any the
/// test engine exempts (the registry gateway on some machines).
fn own_addresses(exempt: &[String]) -> Vec<std::net::IpAddr> {
    let mut out: Vec<std::net::IpAddr> = if_addrs::get_if_addrs()
        .expect("list this host's interfaces")
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback() && !exempt.contains(&ip.to_string()))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[isol8_testkit::test(docker)]
async fn this_hosts_own_addresses_are_refused_before_anything_is_dialled() {
    let exempt = isol8_testkit::registry_exemptions();
    let engine = engine(filtered(&[], &[])).await;
    let addrs = own_addresses(&exempt);
    assert!(
        addrs.iter().any(|a| a.is_ipv4()),
        "this host has no non-loopback IPv4 address to try: {addrs:?}"
    );
    // Stand-ins for an `isol8 serve` bound to 0.0.0.0: listeners of this test on the two
    // ports the proxy dials, when they are free. Whatever reaches them was dialled.
    let listeners: Vec<(u16, std::net::TcpListener)> = [80u16, 443]
        .into_iter()
        .filter_map(
            |port| match std::net::TcpListener::bind(("0.0.0.0", port)) {
                Ok(l) => Some((port, l)),
                Err(e) => {
                    eprintln!(
                        "port {port} is taken ({e}): that nothing is dialled rests on the \
                     recording-network unit tests in src/egress/tests.rs"
                    );
                    None
                }
            },
        )
        .collect();
    let mut probe = ASK.to_string();
    for a in &addrs {
        let host = match a {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        probe += &format!(
            "print('get {host}', ask('GET http://{host}/health HTTP/1.1\\r\\nHost: {host}\\r\\n\\r\\n'))\n\
             print('connect {host}', ask('CONNECT {host}:443 HTTP/1.1\\r\\nHost: {host}:443\\r\\n\\r\\n'))\n"
        );
    }
    let r = run(&engine, code("python", &probe)).await;
    for a in &addrs {
        let host = match a {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        for verb in ["get", "connect"] {
            assert!(
                r.stdout
                    .contains(&format!("{verb} {host} HTTP/1.1 403 Forbidden")),
                "{verb} {host} not refused: {r:?}"
            );
        }
    }
    let logs = r.network_logs.expect("networkLogs");
    assert_eq!(logs.len(), 2 * addrs.len(), "{logs:?}");
    for a in &addrs {
        let entries: Vec<(&str, &str)> = logs
            .iter()
            .filter(|l| l.host == a.to_string())
            .map(|l| (l.method.as_str(), l.action.as_str()))
            .collect();
        assert_eq!(
            entries,
            vec![("GET", "BLOCK"), ("CONNECT", "BLOCK")],
            "{a}: {logs:?}"
        );
    }
    for (port, listener) in listeners {
        listener.set_nonblocking(true).expect("nonblocking");
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the proxy dialled this host's port {port}: {other:?}"),
        }
    }
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker)]
async fn each_execution_gets_only_its_own_network_log() {
    for strategy in [
        isol8_protocol::PoolStrategy::Fast,
        isol8_protocol::PoolStrategy::Secure,
    ] {
        let engine = engine(EngineOptions {
            pool_strategy: Some(strategy),
            pool_size: Some(isol8_protocol::PoolSize::Total(1)),
            ..filtered(&[], &[])
        })
        .await;
        let first = run(&engine, code("python", &fetch(&["http://10.1.1.1/"]))).await;
        let second = run(&engine, code("python", &fetch(&["http://10.2.2.2/"]))).await;
        let third = run(&engine, code("python", "print('quiet')")).await;
        let hosts = |r: &isol8::ExecutionResult| -> Vec<String> {
            r.network_logs
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|l| l.host)
                .collect()
        };
        assert_eq!(hosts(&first), vec!["10.1.1.1"], "{strategy:?}");
        assert_eq!(hosts(&second), vec!["10.2.2.2"], "{strategy:?}");
        assert!(
            hosts(&third).is_empty(),
            "{strategy:?}: {:?}",
            third.network_logs
        );
        assert_clean(&engine).await;
    }
}

#[isol8_testkit::test(docker)]
async fn without_log_network_there_are_no_logs_and_host_mode_works() {
    let engine = engine(EngineOptions {
        network: Some(NetworkMode::Filtered),
        ..Default::default()
    })
    .await;
    let r = run(&engine, code("python", &fetch(&["http://10.0.0.1/"]))).await;
    assert!(r.stdout.contains("-> 403"), "{r:?}");
    assert_eq!(r.network_logs, None);
    assert_clean(&engine).await;

    // `host`: the host's network; a listener on the host's loopback is reachable.
    let engine = engine_with(EngineConfig {
        options: EngineOptions {
            network: Some(NetworkMode::Host),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let r = run(
        &engine,
        code(
            "python",
            &format!("import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5); print('reached')"),
        ),
    )
    .await;
    assert!(r.stdout.contains("reached"), "{r:?}");
    assert_clean(&engine).await;
}

/// Serves `body` at `/code.py` (200), and a redirect to 10.0.0.1 at `/to-private`, on
/// a fresh loopback port of this process; returns the base URL.
async fn serve_code(body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let reply = if head.starts_with("GET /code.py ") {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else if head.starts_with("GET /to-private ") {
                    "HTTP/1.1 302 Found\r\nLocation: http://10.0.0.1/code.py\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    base
}

#[isol8_testkit::test(docker)]
async fn code_url_is_fetched_under_the_policy_and_verified() {
    // The code comes from a server this test runs, so its bytes and hash are known; the
    // operator's exemption for 127.0.0.1 is the only way the fetcher may reach it.
    const CODE: &str = "print('fetched', 6 * 7)";
    let base = serve_code(CODE).await;
    let engine = engine_with(EngineConfig {
        remote_code: isol8::config::RemoteCodeConfig {
            enabled: Some(true),
            allowed_schemes: Some(vec!["http".into()]),
            allowed_hosts: Some(vec![r"^127\.0\.0\.1$".into()]),
            require_hash: Some(true),
            ..Default::default()
        },
        exempt_ranges: vec!["127.0.0.1".into()],
        ..Default::default()
    })
    .await;
    let sha = sha256_hex(CODE.as_bytes());
    let req = |url: &str, hash: &str| isol8::ExecutionRequest {
        runtime: "python".into(),
        code_url: Some(url.into()),
        code_hash: Some(hash.into()),
        allow_insecure_code_url: Some(true),
        ..Default::default()
    };
    let url = format!("{base}/code.py");
    let r = run(&engine, req(&url, &sha)).await;
    assert_eq!(
        (r.exit_code, r.stdout.as_str()),
        (0, "fetched 42\n"),
        "{r:?}"
    );
    let wrong = engine
        .execute(req(&url, &"a".repeat(64)))
        .await
        .expect_err("hash mismatch");
    assert!(
        wrong.to_string().contains("SHA-256") && wrong.to_string().contains(&sha),
        "{wrong}"
    );
    // Refused by policy: a host outside allowedHosts, a redirect to a private address, a
    // metadata address; and plain http without allowInsecureCodeUrl.
    for url in [
        format!("{}/code.py", base.replace("127.0.0.1", "localhost")),
        format!("{base}/to-private"),
        "http://169.254.169.254/x".to_string(),
    ] {
        let err = engine.execute(req(&url, &sha)).await.expect_err(&url);
        assert!(matches!(err, Error::InvalidRequest(_)), "{url}: {err:?}");
    }
    let mut secure_only = req(&url, &sha);
    secure_only.allow_insecure_code_url = None;
    let err = engine.execute(secure_only).await.expect_err("plain http");
    assert!(err.to_string().contains("allowInsecureCodeUrl"), "{err}");
    assert_clean(&engine).await;

    // Without the exemption the same server is refused before it is dialled: loopback.
    let engine = engine_with(EngineConfig {
        remote_code: isol8::config::RemoteCodeConfig {
            enabled: Some(true),
            allowed_schemes: Some(vec!["http".into()]),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let err = engine.execute(req(&url, &sha)).await.expect_err("loopback");
    assert!(err.to_string().contains("loopback"), "{err}");
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, registries)]
async fn a_public_https_code_url_can_be_fetched() {
    // Only that a real HTTPS fetch works end to end: what the registry answers is not
    // ours, so neither its bytes nor the program's outcome are checked.
    let engine = engine_with(EngineConfig {
        remote_code: isol8::config::RemoteCodeConfig {
            enabled: Some(true),
            allowed_hosts: Some(vec![r"^registry\.npmjs\.org$".into()]),
            ..Default::default()
        },
        exempt_ranges: isol8_testkit::registry_exemptions(),
        ..Default::default()
    })
    .await;
    let req = isol8::ExecutionRequest {
        runtime: "bash".into(),
        code_url: Some("https://registry.npmjs.org/-/ping".into()),
        ..Default::default()
    };
    let r = engine.execute(req).await;
    assert!(r.is_ok(), "the fetch failed: {r:?}");
    assert_clean(&engine).await;
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
