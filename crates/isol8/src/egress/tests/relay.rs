//! Relaying: tunnels and plain requests reach the upstream and are logged into their
//! execution; exactly one request per connection is forwarded, nothing after its body.

use super::*;

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

#[tokio::test]
async fn the_bytes_of_an_execution_are_counted_on_the_sandbox_side_and_reset_per_execution() {
    let net = FakeNet::with(&[("pypi.org", "151.101.0.223")]);
    let shared: Shared = Arc::new(Mutex::new(State::new(Arc::default())));
    begin(&shared, Arc::new(rules(&[r"^pypi\.org$"], &[])), false);
    assert_eq!(traffic(&shared), (0, 0));

    let head: &[u8] = b"GET http://pypi.org/simple/ HTTP/1.1\r\nHost: pypi.org\r\n\r\n";
    let body = vec![b'z'; 100_000];
    let answer = [
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes(),
        body,
    ]
    .concat();
    let (mut client, task) = connect(&net, &shared);
    client.write_all(head).await.expect("write");
    let mut server = next_server(&net).await;
    let mut got = vec![0u8; 4096];
    let _ = server.read(&mut got).await.expect("upstream read");
    server.write_all(&answer).await.expect("answer");
    drop(server);
    let mut received = Vec::new();
    client
        .read_to_end(&mut received)
        .await
        .expect("client read");
    assert_eq!(received, answer);
    drop(client);
    task.await.expect("task");
    // Exactly what the sandbox sent and received.
    assert_eq!(traffic(&shared), (answer.len() as u64, head.len() as u64));

    // A refused request counts too: the request and the proxy's refusal.
    let refused: &[u8] = b"CONNECT example.com:443 HTTP/1.1\r\n\r\n";
    let (reply, _) = roundtrip(net.clone(), shared.clone(), refused).await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert_eq!(
        traffic(&shared),
        (
            answer.len() as u64 + reply.len() as u64,
            head.len() as u64 + refused.len() as u64
        )
    );

    // The next execution starts from zero; between executions nothing is counted.
    let _ = finish(&shared);
    begin(&shared, Arc::new(rules(&[r"^pypi\.org$"], &[])), false);
    assert_eq!(traffic(&shared), (0, 0));
}
