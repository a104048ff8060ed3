//! Host rules: whitelists and blacklists, allowed ports and Host header consistency,
//! registry hosts of installs and narrowing whitelists, all enforced before resolution.

use super::*;

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
