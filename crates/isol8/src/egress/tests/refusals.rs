//! Addresses the engine's policy refuses (private, loopback, metadata), whether written
//! as literals or reached through names, refused before anything is dialled.

use super::*;

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

/// Counts the egress decisions an engine observer is told of.
#[derive(Debug, Default)]
struct Decisions {
    allowed: std::sync::atomic::AtomicUsize,
    blocked: std::sync::atomic::AtomicUsize,
}

impl crate::stats::EngineObserver for Decisions {
    fn egress(&self, allowed: bool) {
        let n = if allowed {
            &self.allowed
        } else {
            &self.blocked
        };
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_observer_is_told_of_each_block_before_anything_is_dialled_and_of_each_allow() {
    use std::sync::atomic::Ordering::SeqCst;
    let net = FakeNet::with(&[
        ("ok.example", "93.184.216.34"),
        ("bad.example", "93.184.216.35"),
    ]);
    let shared: Shared = Arc::new(Mutex::new(State::new(Arc::default())));
    let decisions = Arc::new(Decisions::default());
    observe(&shared, Some(decisions.clone()));
    open_rules(&shared, &["bad.example"]);

    // Refused by the rules, then by the address policy: nothing resolved or dialled.
    let (reply, _) = roundtrip(
        net.clone(),
        shared.clone(),
        b"CONNECT bad.example:443 HTTP/1.1\r\nHost: bad.example:443\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    let (reply, _) = roundtrip(
        net.clone(),
        shared.clone(),
        b"CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: 10.0.0.1:443\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert_eq!(decisions.blocked.load(SeqCst), 2);
    assert_eq!(decisions.allowed.load(SeqCst), 0);
    assert!(net.dialled().is_empty(), "{:?}", net.dialled());

    // Allowed: counted once, and dialled.
    let (reply, _server) = roundtrip(
        net.clone(),
        shared.clone(),
        b"CONNECT ok.example:443 HTTP/1.1\r\nHost: ok.example:443\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(decisions.allowed.load(SeqCst), 1);
    assert_eq!(decisions.blocked.load(SeqCst), 2);
    assert_eq!(net.dialled().len(), 1);
}
