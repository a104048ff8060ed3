//! Helpers shared by the engine's network tests (`network_*.rs`): an engine that trusts
//! this machine's CA bundle and reaches the package registries, `filtered` options with
//! host rules, and a Python program that fetches URLs through the proxy.

#![allow(dead_code)]

use isol8::docker::EngineConfig;
use isol8::{DockerEngine, EngineOptions};
use isol8_protocol::{NetworkFilter, NetworkMode};
use isol8_testkit::engine_with;

/// The CA bundle trusted inside sandboxes: this machine's own bundle, which includes the
/// TLS-intercepting proxy's CA on machines that have one.
pub fn ca_bundle() -> Option<String> {
    let path = std::env::var("ISOL8_TEST_CA_BUNDLE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    std::path::Path::new(&path).exists().then_some(path)
}

pub async fn engine(options: EngineOptions) -> DockerEngine {
    engine_with(EngineConfig {
        options,
        ca_bundle: ca_bundle(),
        exempt_ranges: isol8_testkit::registry_exemptions(),
        ..Default::default()
    })
    .await
}

pub fn filtered(whitelist: &[&str], blacklist: &[&str]) -> EngineOptions {
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

/// Python that fetches each URL through the proxy and prints `URL -> status`.
pub const FETCH: &str = r#"
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

pub fn fetch(urls: &[&str]) -> String {
    format!("URLS = {urls:?}\n{FETCH}")
}
