//! Slow and stalled clients over a real socket: a body sent too slowly or stalled
//! mid-way gets a JSON 408 within the bound, a client that never reads its response is
//! dropped (and its execution killed), and the server keeps serving everyone else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use isol8::EngineOptions;
use isol8_server::net::GuardedListener;
use isol8_server::{app, AppState, ServerSettings};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "slow-client-master-key-0123456789";
const BODY_TIMEOUT: Duration = Duration::from_secs(1);
const WRITE_STALL: Duration = Duration::from_secs(1);

async fn serve() -> (Arc<AppState>, std::net::SocketAddr) {
    let engine = isol8_testkit::engine(EngineOptions::default()).await;
    let state = AppState::with_settings(
        engine,
        EngineOptions::default(),
        KEY.into(),
        ServerSettings {
            body_timeout: BODY_TIMEOUT,
            ..Default::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = app(state.clone());
    tokio::spawn(
        async move { axum::serve(GuardedListener::new(listener, WRITE_STALL), router).await },
    );
    (state, addr)
}

/// The server still answers a normal client quickly.
async fn still_serving(addr: std::net::SocketAddr) {
    let t = Instant::now();
    let v: Value = reqwest::Client::new()
        .post(format!("http://{addr}/execute"))
        .bearer_auth(KEY)
        .json(&json!({"request": {"runtime": "bash", "code": "echo alive"}}))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(v["stdout"], "alive\n", "{v}");
    // Generous: the point is that it is served at all, even on a loaded machine.
    assert!(t.elapsed() < Duration::from_secs(20));
}

/// Sends a request head announcing `len` body bytes.
async fn head(addr: std::net::SocketAddr, path: &str, len: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s
}

/// Reads the whole answer (the server closes the connection after it).
async fn answer(s: &mut TcpStream, within: Duration) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut buf))
        .await
        .expect("the server neither answered nor closed within the bound")
        .expect("read");
    String::from_utf8_lossy(&buf).into_owned()
}

fn assert_408(text: &str) {
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(body).expect("JSON error body");
    assert!(
        v["error"]
            .as_str()
            .expect("error")
            .contains("request body was not received"),
        "{v}"
    );
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_body_stalled_mid_way_gets_a_json_408_within_the_bound() {
    let (state, addr) = serve().await;
    let mut s = head(addr, "/execute", 200).await;
    s.write_all(br#"{"request": {"runtime": "#)
        .await
        .expect("part");
    let t = Instant::now();
    // Meanwhile the server serves others.
    let (took, ()) = tokio::join!(
        async {
            let text = answer(&mut s, Duration::from_secs(10)).await;
            assert_408(&text);
            t.elapsed()
        },
        still_serving(addr)
    );
    assert!(
        took >= BODY_TIMEOUT - Duration::from_millis(100),
        "{took:?}"
    );
    assert!(took < BODY_TIMEOUT + Duration::from_secs(5), "{took:?}");
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_body_trickled_byte_by_byte_is_cut_off_at_the_total_bound() {
    let (state, addr) = serve().await;
    let body = json!({"request": {"runtime": "bash", "code": "echo never"}}).to_string();
    let mut s = head(addr, "/execute", body.len()).await;
    let t = Instant::now();
    // One byte every 100 ms: never idle long, but the whole body would take seconds.
    let mut reply = Vec::new();
    for b in body.bytes() {
        if s.write_all(&[b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut chunk = [0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut chunk)).await
        {
            reply.extend_from_slice(&chunk[..n]);
            if n == 0 || !reply.is_empty() {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(10), "never cut off");
    }
    reply.extend_from_slice(answer(&mut s, Duration::from_secs(10)).await.as_bytes());
    assert_408(&String::from_utf8_lossy(&reply));
    assert!(t.elapsed() < BODY_TIMEOUT + Duration::from_secs(5));
    // The same bound applies to the other routes with a body.
    let mut s = head(addr, "/cleanup", 10).await;
    assert_408(&answer(&mut s, Duration::from_secs(10)).await);
    state.shutdown().await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_client_that_never_reads_its_response_is_dropped() {
    let (state, addr) = serve().await;
    // A 16 MiB file in a session: its GET /file answer (~21 MiB of base64 JSON) is far
    // larger than every socket buffer between the server and a client that never reads.
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{addr}/execute"))
        .bearer_auth(KEY)
        .json(&json!({"request": {"runtime": "bash", "code": "head -c 16M /dev/urandom > /sandbox/big"}, "sessionId": "big"}))
        .send()
        .await
        .expect("execute");
    assert_eq!(r.status(), 200);
    let full = {
        let v: Value = client
            .get(format!(
                "http://{addr}/file?sessionId=big&path=/sandbox/big"
            ))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("get file")
            .json()
            .await
            .expect("json");
        v["content"].as_str().expect("content").len()
    };
    assert!(full > 20 << 20, "{full}");

    // A tiny receive window, then a request whose answer is never read.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut s = socket.connect(addr).await.expect("connect");
    let req = format!(
        "GET /file?sessionId=big&path=/sandbox/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("request");
    // Meanwhile everyone else is served.
    still_serving(addr).await;
    // Once the answer starts arriving (reading the file can take a while on a loaded
    // machine), the server's writes stall within moments; leave them stalled past the
    // bound without reading anything.
    let mut first = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(60), s.peek(&mut first))
        .await
        .expect("the answer never started")
        .expect("peek");
    let t = Instant::now();
    tokio::time::sleep(WRITE_STALL + Duration::from_secs(2)).await;
    // The server gave up on the stalled connection: what is left in flight ends in EOF
    // (or a reset) well short of the whole answer.
    let mut received = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled connection was never closed");
    assert!(
        received < full,
        "the whole answer arrived ({received} bytes): nothing was cut"
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    still_serving(addr).await;
    state.shutdown().await;
}
