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
