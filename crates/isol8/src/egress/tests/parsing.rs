//! Parsing request heads: what parses, what is malformed, every spelling of a host
//! reaching the rules as one canonical name, and heads whose framing is ambiguous, all
//! answered before anything is looked up or dialled.

use super::*;

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
