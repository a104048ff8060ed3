//! Host names and authorities as the proxy sees them: one canonical form for every place
//! a host enters a request (the `CONNECT` authority, the host of an absolute URL, the
//! `Host` header), so the host rules, the log and the resolver all see the same name.
//!
//! Canonical means: IP literals in their one standard notation (numeric IPv4 forms such
//! as `2130706433`, `0x7f.1` or `127.1` become `127.0.0.1`, the way the system resolver
//! would read them), DNS names lower-case ASCII (internationalised names as their
//! punycode `xn--` form), with at most the single trailing dot of a fully qualified name
//! removed. Names the resolver could read differently from the rules are refused rather
//! than repaired: empty labels (`a..b`, `.a`, `a..`), labels longer than 63 bytes, names
//! longer than 253 bytes, characters outside `[a-z0-9-_]`, and percent-escapes, spaces,
//! controls or non-ASCII bytes in a `CONNECT` authority or a `Host` header (clients send
//! names there already in ASCII).

use std::net::Ipv6Addr;

/// Longest DNS name, without the trailing dot (RFC 1035).
const MAX_NAME: usize = 253;
/// Longest DNS label (RFC 1035).
const MAX_LABEL: usize = 63;

/// Why a host, authority or port is refused (the proxy answers 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Not a host name or address at all (bad characters, brackets, an IPv6 zone id…).
    #[error("`{raw}` is not a valid host name or address")]
    NotAHost {
        /// The text as given.
        raw: String,
    },
    /// A name the resolver could read differently from the rules.
    #[error("`{raw}`: {source}")]
    BadName {
        /// The text as given.
        raw: String,
        /// What is wrong with the name.
        source: Box<HostError>,
    },
    /// Nothing but an optional trailing dot.
    #[error("an empty host name")]
    EmptyName,
    /// Longer than a DNS name may be.
    #[error("a host name longer than {MAX_NAME} bytes")]
    NameTooLong,
    /// `a..b`, `.a`, `a..`.
    #[error("a host name with an empty label (`..`, or a leading or second trailing dot)")]
    EmptyLabel,
    /// Longer than a DNS label may be.
    #[error("a host name label longer than {MAX_LABEL} bytes")]
    LabelTooLong,
    /// A label with characters other than `[a-z0-9-_]`.
    #[error("the label `{label}` has characters other than a-z, 0-9, `-` and `_`")]
    BadLabel {
        /// The label.
        label: String,
    },
    /// Not `host[:port]` / `[v6][:port]`.
    #[error("`{authority}` is not a host[:port]")]
    NotHostPort {
        /// The authority as given.
        authority: String,
    },
    /// Not 1 to 65535 in plain decimal digits.
    #[error("`{port}` is not a port")]
    NotAPort {
        /// The port as given.
        port: String,
    },
}

/// The canonical form of a host written in a `CONNECT` authority or a `Host` header
/// (`example.com`, `EXAMPLE.com.`, `127.0.0.1`, `[::1]`), or why it is not a host.
pub fn canonical_host(raw: &str) -> Result<String, HostError> {
    let bad = || HostError::NotAHost {
        raw: raw.to_string(),
    };
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(bad)?;
        // `Ipv6Addr` takes no zone ids (`%eth0`) and no embedded garbage.
        let ip: Ipv6Addr = inner.parse().map_err(|_| bad())?;
        return Ok(ip.to_string());
    }
    if raw.is_empty()
        || !raw.is_ascii()
        || raw.bytes().any(|b| {
            b.is_ascii_control()
                || b.is_ascii_whitespace()
                || matches!(
                    b,
                    b'%' | b'@' | b'/' | b'\\' | b'?' | b'#' | b':' | b'[' | b']'
                )
        })
    {
        return Err(bad());
    }
    let host = url::Host::parse(raw).map_err(|_| bad())?;
    from_url_host(&host).map_err(|why| HostError::BadName {
        raw: raw.to_string(),
        source: Box::new(why),
    })
}

/// The canonical form of a host the `url` crate has parsed (the host of an absolute
/// URL, after its percent-decoding and IDNA mapping).
pub fn from_url_host<S: AsRef<str>>(host: &url::Host<S>) -> Result<String, HostError> {
    match host {
        url::Host::Ipv4(ip) => Ok(ip.to_string()),
        url::Host::Ipv6(ip) => Ok(ip.to_string()),
        url::Host::Domain(d) => dns_name(d.as_ref()),
    }
}

/// Checks a DNS name label by label; returns it lower-case, without the one trailing
/// dot a fully qualified name may carry.
fn dns_name(name: &str) -> Result<String, HostError> {
    let lower = name.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
    if trimmed.is_empty() {
        return Err(HostError::EmptyName);
    }
    if trimmed.len() > MAX_NAME {
        return Err(HostError::NameTooLong);
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(HostError::EmptyLabel);
        }
        if label.len() > MAX_LABEL {
            return Err(HostError::LabelTooLong);
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
        {
            return Err(HostError::BadLabel {
                label: label.to_string(),
            });
        }
    }
    Ok(trimmed.to_string())
}

/// Splits `host[:port]` / `[v6][:port]` (a `Host` header) into the canonical host and
/// the port, if one is given. An empty port (`host:`) means the default.
pub fn split_host_port(authority: &str) -> Result<(String, Option<u16>), HostError> {
    let not_host_port = || HostError::NotHostPort {
        authority: authority.to_string(),
    };
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => {
                let (h, tail) = authority.split_at(end + 1);
                match tail.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None if tail.is_empty() => (h, None),
                    None => return Err(not_host_port()),
                }
            }
            None => return Err(not_host_port()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(parse_port(p)?),
    };
    Ok((canonical_host(host)?, port))
}

/// A port: 1 to 65535 in plain decimal digits (no sign, no spaces).
pub fn parse_port(p: &str) -> Result<u16, HostError> {
    let not_a_port = || HostError::NotAPort {
        port: p.to_string(),
    };
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_a_port());
    }
    p.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(not_a_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_dot_and_case_are_normalised() {
        for (raw, want) in [
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            ("a-b_c.example", "a-b_c.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("[::1]", "::1"),
            ("[0:0::1]", "::1"),
        ] {
            assert_eq!(canonical_host(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn numeric_ipv4_forms_become_the_address_the_resolver_would_use() {
        for raw in [
            "127.0.0.1",
            "127.0.0.1.",
            "2130706433",
            "0x7f.1",
            "127.1",
            "0177.0.0.1",
        ] {
            assert_eq!(canonical_host(raw).as_deref(), Ok("127.0.0.1"), "{raw}");
        }
    }

    #[test]
    fn empty_labels_and_odd_characters_are_refused() {
        for raw in [
            "",
            ".",
            "..",
            "denied.example..",
            "denied.example...",
            "denied..example",
            ".denied.example",
            "..denied.example",
            "denied.example.%2e",
            "ex%61mple.com",
            "exa mple.com",
            "exa\tmple.com",
            "bücher.example",
            "evil@example.com",
            "a/b",
            "a*b.example",
            "a!b.example",
            "[::1",
            "[fe80::1%eth0]",
            "[nonsense]",
            "08.0.0.1",
            "1.2.3.4.5",
        ] {
            assert!(canonical_host(raw).is_err(), "{raw:?} must be refused");
        }
        let long_label = format!("{}.example", "a".repeat(64));
        assert!(canonical_host(&long_label).is_err());
        let long_name = format!("{}example", "abcdefghi.".repeat(25));
        assert!(canonical_host(&long_name).is_err());
    }

    #[test]
    fn url_hosts_share_the_rules() {
        for (url, want) in [
            ("http://EXAMPLE.com./", Ok("example.com")),
            ("http://ex%61mple.com/", Ok("example.com")),
            ("http://b\u{fc}cher.example/", Ok("xn--bcher-kva.example")),
            ("http://denied\u{ff0e}example/", Ok("denied.example")),
            ("http://0x7f.1/", Ok("127.0.0.1")),
            ("http://denied.example../", Err(())),
            ("http://denied..example/", Err(())),
            ("http://.denied.example/", Err(())),
            ("http://denied.example.%2e/", Err(())),
        ] {
            let parsed = url::Url::parse(url).expect("url");
            let got = from_url_host(&parsed.host().expect("host"));
            assert_eq!(got.as_deref().map_err(|_| ()), want, "{url}");
        }
    }

    #[test]
    fn host_headers_split_into_host_and_port() {
        assert_eq!(
            split_host_port("Example.com:8080"),
            Ok(("example.com".into(), Some(8080)))
        );
        assert_eq!(
            split_host_port("example.com"),
            Ok(("example.com".into(), None))
        );
        assert_eq!(
            split_host_port("example.com:"),
            Ok(("example.com".into(), None))
        );
        assert_eq!(split_host_port("[::1]:443"), Ok(("::1".into(), Some(443))));
        assert_eq!(split_host_port("[::1]"), Ok(("::1".into(), None)));
        for bad in [
            "example.com:+80",
            "example.com:0",
            "example.com:65536",
            "example.com: 80",
            "[::1]x",
            "a..b:80",
            "denied.example..",
            "",
        ] {
            assert!(split_host_port(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn refusals_say_what_is_wrong_as_before() {
        let e = canonical_host("denied..example").expect_err("empty label");
        assert_eq!(
            e.to_string(),
            "`denied..example`: a host name with an empty label (`..`, or a leading or second trailing dot)"
        );
        assert_eq!(
            canonical_host("a/b").expect_err("slash").to_string(),
            "`a/b` is not a valid host name or address"
        );
        assert_eq!(
            split_host_port("example.com:0")
                .expect_err("port")
                .to_string(),
            "`0` is not a port"
        );
        assert_eq!(
            split_host_port("[::1]x").expect_err("tail").to_string(),
            "`[::1]x` is not a host[:port]"
        );
    }
}
