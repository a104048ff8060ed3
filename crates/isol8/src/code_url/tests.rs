//! Remote-code fetching against a small HTTP server on loopback. The production address
//! policy refuses loopback, so these tests exempt 127.0.0.1 the way an operator would
//! (`network.exemptRanges`) — every other refusal (private, metadata…) is unchanged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Serves canned answers by path; counts connections.
async fn server() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let reply = match path.as_str() {
                    "/code" => ok("print('hello from a URL')"),
                    "/to-code" => redirect("/code"),
                    "/to-private" => redirect("http://10.0.0.1/code"),
                    "/to-metadata" => redirect("http://169.254.169.254/latest/"),
                    "/loop" => redirect("/loop"),
                    "/big" => ok(&"x".repeat(4096)),
                    "/binary" => {
                        let mut r =
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
                                .to_vec();
                        r.extend_from_slice(&[0xff, 0xfe]);
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = s.write_all(&reply).await;
            });
        }
    });
    (base, hits)
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn redirect(to: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

fn policy() -> RemoteCodeConfig {
    RemoteCodeConfig {
        enabled: Some(true),
        allowed_schemes: Some(vec!["https".into(), "http".into()]),
        max_code_size: Some(1024),
        ..Default::default()
    }
}

fn fetcher(cfg: RemoteCodeConfig) -> CodeFetcher {
    // The operator's exemption for the test server's address; every other refusal is
    // the production one.
    let addresses = AddressPolicy::new(&["127.0.0.1"]).expect("exemption");
    CodeFetcher::new(&cfg, Arc::new(addresses)).expect("policy")
}

fn req(url: &str) -> ExecutionRequest {
    ExecutionRequest {
        runtime: "python".into(),
        code_url: Some(url.into()),
        allow_insecure_code_url: Some(true),
        ..Default::default()
    }
}

async fn fetch_err(f: &CodeFetcher, r: ExecutionRequest) -> String {
    let mut r = r;
    f.resolve(&mut r)
        .await
        .expect_err("must be refused")
        .to_string()
}

const CODE_SHA256: &str = "sha256-of-code";

fn code_sha() -> String {
    hex::encode(Sha256::digest(b"print('hello from a URL')"))
}

#[tokio::test]
async fn code_is_fetched_through_redirects_and_its_hash_verified() {
    let (base, _) = server().await;
    let f = fetcher(policy());
    let mut r = req(&format!("{base}/to-code"));
    r.code_hash = Some(format!("sha256:{}", code_sha().to_uppercase()));
    f.resolve(&mut r).await.expect("fetched");
    assert_eq!(r.code.as_deref(), Some("print('hello from a URL')"));
    assert_eq!((r.code_url, r.code_hash), (None, None));

    let mut r = req(&format!("{base}/code"));
    r.code_hash = Some("0".repeat(64));
    let err = fetch_err(&f, r).await;
    assert!(
        err.contains("SHA-256") && err.contains(&code_sha()),
        "{err}"
    );

    let mut r = req(&format!("{base}/code"));
    r.code_hash = Some(CODE_SHA256.into());
    assert!(fetch_err(&f, r).await.contains("not a SHA-256"));

    let strict = fetcher(RemoteCodeConfig {
        require_hash: Some(true),
        ..policy()
    });
    assert!(fetch_err(&strict, req(&format!("{base}/code")))
        .await
        .contains("requires codeHash"));
}

#[tokio::test]
async fn the_policy_is_off_by_default_and_http_needs_two_opt_ins() {
    let (base, hits) = server().await;
    let off = CodeFetcher::new(&RemoteCodeConfig::default(), Arc::default()).expect("default");
    assert!(fetch_err(&off, req(&format!("{base}/code")))
        .await
        .contains("remoteCode.enabled"));
    // https only by default, whatever the request says.
    let https_only = fetcher(RemoteCodeConfig {
        allowed_schemes: None,
        ..policy()
    });
    assert!(fetch_err(&https_only, req(&format!("{base}/code")))
        .await
        .contains("plain http"));
    // The policy allows http, but the request did not ask for it.
    let mut r = req(&format!("{base}/code"));
    r.allow_insecure_code_url = None;
    assert!(fetch_err(&fetcher(policy()), r)
        .await
        .contains("allowInsecureCodeUrl"));
    for url in [
        "file:///etc/passwd",
        "ftp://example.com/x",
        "http://user:pw@127.0.0.1/code",
    ] {
        fetch_err(&fetcher(policy()), req(url)).await;
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing may be dialled when the policy refuses"
    );
    // code and codeUrl together, codeHash alone.
    let mut both = req(&format!("{base}/code"));
    both.code = Some("print(1)".into());
    assert!(fetch_err(&fetcher(policy()), both)
        .await
        .contains("exactly one"));
    let mut hash_only = ExecutionRequest {
        runtime: "python".into(),
        ..Default::default()
    };
    hash_only.code_hash = Some(code_sha());
    assert!(fetcher(policy()).resolve(&mut hash_only).await.is_err());
}

#[tokio::test]
async fn every_redirect_is_rechecked_and_private_targets_are_never_dialled() {
    let (base, hits) = server().await;
    let f = fetcher(policy());
    let err = fetch_err(&f, req(&format!("{base}/to-private"))).await;
    assert!(err.contains("10.0.0.1") && err.contains("private"), "{err}");
    let err = fetch_err(&f, req(&format!("{base}/to-metadata"))).await;
    assert!(err.contains("metadata"), "{err}");
    let err = fetch_err(&f, req(&format!("{base}/loop"))).await;
    assert!(err.contains("redirects more than"), "{err}");
    // The production check refuses loopback itself, before any connection.
    let before = hits.load(Ordering::SeqCst);
    let production = CodeFetcher::new(&policy(), Arc::default()).expect("policy");
    let err = fetch_err(&production, req(&format!("{base}/code"))).await;
    assert!(err.contains("loopback"), "{err}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "the loopback server was dialled"
    );
    // Host rules: blocked wins; a non-empty allow list admits only its hosts.
    let blocked = fetcher(RemoteCodeConfig {
        blocked_hosts: Some(vec![r"^127\.".into()]),
        ..policy()
    });
    assert!(fetch_err(&blocked, req(&format!("{base}/code")))
        .await
        .contains("blocked"));
    let allow = fetcher(RemoteCodeConfig {
        allowed_hosts: Some(vec![r"^example\.com$".into()]),
        ..policy()
    });
    assert!(fetch_err(&allow, req(&format!("{base}/code")))
        .await
        .contains("allowedHosts"));
    assert_eq!(hits.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn size_and_content_limits_hold() {
    let (base, _) = server().await;
    let small = fetcher(RemoteCodeConfig {
        max_code_size: Some(100),
        ..policy()
    });
    assert!(fetch_err(&small, req(&format!("{base}/big")))
        .await
        .contains("maxCodeSize"));
    assert!(
        fetch_err(&fetcher(policy()), req(&format!("{base}/binary")))
            .await
            .contains("UTF-8")
    );
    assert!(
        fetch_err(&fetcher(policy()), req(&format!("{base}/missing")))
            .await
            .contains("404")
    );
    assert!(CodeFetcher::new(
        &RemoteCodeConfig {
            max_code_size: Some(0),
            ..policy()
        },
        Arc::default()
    )
    .is_err());
    assert!(CodeFetcher::new(
        &RemoteCodeConfig {
            allowed_schemes: Some(vec!["ftp".into()]),
            ..policy()
        },
        Arc::default()
    )
    .is_err());
}

/// Moves tokio's clock (what the cache reads) forward by `by`, then lets it run again.
async fn skip(by: std::time::Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn fetched_code_is_cached_by_url_and_hash_for_the_ttl() {
    let (base, hits) = server().await;
    let url = format!("{base}/code");
    let cached = fetcher(RemoteCodeConfig {
        enable_cache: Some(true),
        cache_ttl: Some(60),
        ..policy()
    });
    let fetch = |f: &CodeFetcher, r: ExecutionRequest| {
        let f = f.clone();
        async move {
            let mut r = r;
            f.resolve(&mut r).await.expect("fetched");
            r.code.expect("code")
        }
    };
    assert_eq!(fetch(&cached, req(&url)).await, "print('hello from a URL')");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(fetch(&cached, req(&url)).await, "print('hello from a URL')");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "served from the cache");
    // Another expected hash is another entry; the same hash spelled differently is not.
    let mut hashed = req(&url);
    hashed.code_hash = Some(code_sha());
    fetch(&cached, hashed.clone()).await;
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    hashed.code_hash = Some(format!("sha256:{}", code_sha().to_uppercase()));
    fetch(&cached, hashed).await;
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // A fetch that fails verification is not cached.
    let mut wrong = req(&url);
    wrong.code_hash = Some("0".repeat(64));
    fetch_err(&cached, wrong.clone()).await;
    fetch_err(&cached, wrong).await;
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    // The policy still decides on a cached URL: plain http without the request's
    // opt-in is refused although the code is in the cache.
    let mut secure = req(&url);
    secure.allow_insecure_code_url = None;
    assert!(fetch_err(&cached, secure)
        .await
        .contains("allowInsecureCodeUrl"));
    // Engines made from one another (a server's sessions) share the cache.
    let sibling = cached.clone();
    fetch(&sibling, req(&url)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 4);

    // Within the TTL the cache answers; at the TTL the entry has expired.
    skip(std::time::Duration::from_secs(59)).await;
    fetch(&cached, req(&url)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 4, "still within cacheTtl");
    skip(std::time::Duration::from_secs(1)).await;
    fetch(&cached, req(&url)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 5, "expired after cacheTtl");
    fetch(&cached, req(&url)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 5, "cached again");

    // With the cache off (or a TTL of 0), every request fetches.
    for off in [
        RemoteCodeConfig {
            enable_cache: Some(false),
            ..policy()
        },
        RemoteCodeConfig {
            cache_ttl: Some(0),
            ..policy()
        },
    ] {
        let f = fetcher(off);
        let before = hits.load(Ordering::SeqCst);
        fetch(&f, req(&url)).await;
        fetch(&f, req(&url)).await;
        assert_eq!(hits.load(Ordering::SeqCst), before + 2);
    }
}

#[test]
fn the_cache_is_on_by_default_for_an_hour() {
    // The reference's defaults: enableCache true, cacheTtl 3600 seconds.
    let f = fetcher(policy());
    let cache = f.cache.expect("on by default");
    assert_eq!(cache.ttl(), std::time::Duration::from_secs(3600));
}
