//! Holding connections: accept errors are retried, connections beyond the per-sandbox and
//! per-process caps get `429`, idle ones are closed, the open-files limit is raised, and
//! socket directories of dead processes are reaped.

use super::*;

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

#[tokio::test(start_paused = true)]
async fn connections_log_inside_the_span_of_the_execution_they_started_in() {
    let (captured, _guard) = crate::trace::tests::capture();
    let net = FakeNet::with(&[]);
    let (egress, script) = scripted_proxy(net, conn::Budget::new(16));
    let span = tracing::info_span!("execution", execution_id = "exec-7");
    span.in_scope(|| open_rules(egress.shared(), &["pypi.org"]));
    let (_c, status) = ask(&script, "CONNECT pypi.org:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    let refused = captured.with_message("egress refused");
    assert_eq!(refused.len(), 1, "{:?}", captured.lines());
    let in_span = refused[0]
        .span("execution")
        .expect("in the execution's span");
    assert_eq!(in_span["execution_id"], "exec-7");
    // Between executions a connection belongs to none.
    crate::egress::finish(egress.shared());
    let (_c, status) = ask(&script, "CONNECT pypi.org:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    let refused = captured.with_message("egress refused");
    assert_eq!(refused.len(), 2);
    assert!(refused[1].span("execution").is_none(), "{:?}", refused[1]);
}
