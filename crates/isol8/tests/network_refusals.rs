//! Targets the `filtered` proxy refuses, against the real daemon: private, loopback and
//! metadata addresses, this host's own addresses, proxy tricks, and direct sockets that
//! have no interface to leave by.
//!
//! Traffic goes only to loopback: every private, link-local or metadata address below is
//! refused by the proxy before anything is dialled (the unit tests in
//! `src/egress/tests/` prove the "before" with a recording network), and the
//! direct-socket probes use TEST-NET-1 (192.0.2.1) from a sandbox that has no interface
//! to send them on.

mod common;

use common::{engine, fetch, filtered};
use isol8_testkit::{assert_clean, code, run};

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
                     recording-network unit tests in src/egress/tests/"
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
