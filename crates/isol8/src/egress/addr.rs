//! Which addresses the filtering proxy never dials, whatever the host rules say.
//!
//! The check runs on every address a name resolves to (and on IP literals), right before
//! the proxy would connect, so a name that resolves to a private address is refused just
//! like the literal. Addresses that embed an IPv4 address (IPv4-mapped, IPv4-compatible,
//! NAT64, 6to4) are judged by the address they embed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` must not be dialled, or `None` when it is an ordinary public address.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// Cloud instance-metadata endpoints (AWS/GCP/Azure, AWS ECS, Alibaba, Oracle).
const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];

/// AWS's IPv6 instance-metadata endpoint.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if METADATA_V4.contains(&ip) {
        return Some("a cloud metadata address");
    }
    let ranges: [([u8; 4], u32, &'static str); 10] = [
        ([0, 0, 0, 0], 8, "a 'this network' address"),
        ([10, 0, 0, 0], 8, "a private address (RFC 1918)"),
        (
            [100, 64, 0, 0],
            10,
            "a carrier-grade NAT address (RFC 6598)",
        ),
        ([127, 0, 0, 0], 8, "a loopback address"),
        ([169, 254, 0, 0], 16, "a link-local address"),
        ([172, 16, 0, 0], 12, "a private address (RFC 1918)"),
        ([192, 0, 0, 0], 24, "an IETF protocol-assignment address"),
        ([192, 168, 0, 0], 16, "a private address (RFC 1918)"),
        ([224, 0, 0, 0], 4, "a multicast address"),
        ([240, 0, 0, 0], 4, "a reserved address"),
    ];
    ranges
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip == METADATA_V6 {
        return Some("a cloud metadata address");
    }
    let seg = ip.segments();
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // IPv4-mapped (::ffff:a.b.c.d) and the deprecated IPv4-compatible (::a.b.c.d).
    if seg[..5] == [0; 5] && (seg[5] == 0xffff || (seg[5] == 0 && (seg[6] != 0 || seg[7] > 1))) {
        return forbidden_v4(embedded(seg[6], seg[7]));
    }
    // NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48) reach the embedded address.
    if seg[0] == 0x64 && seg[1] == 0xff9b && (seg[2..6] == [0; 4] || seg[2] == 1) {
        return forbidden_v4(embedded(seg[6], seg[7]));
    }
    // 6to4 (2002:V4::/48) tunnels to the embedded address.
    if seg[0] == 0x2002 {
        return forbidden_v4(embedded(seg[1], seg[2]));
    }
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    let ranges: [(u16, u16, &'static str); 5] = [
        (0xfe00, 0xfc00, "a unique local address (ULA)"),
        (0xffc0, 0xfe80, "a link-local address"),
        (0xffc0, 0xfec0, "a site-local address"),
        (0xff00, 0xff00, "a multicast address"),
        // Teredo (2001:0::/32) hides an obfuscated IPv4 address: refuse it outright.
        (0xffff, 0x2001, "a Teredo tunnel address"),
    ];
    for (mask, net, why) in ranges {
        if seg[0] & mask == net && (net != 0x2001 || seg[1] == 0) {
            return Some(why);
        }
    }
    // The discard prefix 100::/64.
    if seg[0] == 0x0100 && seg[1..4] == [0; 3] {
        return Some("a discard-only address");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(addr: &str) -> Option<&'static str> {
        forbidden(addr.parse().expect("test address"))
    }

    #[test]
    fn private_loopback_link_local_cgnat_and_metadata_are_forbidden() {
        for addr in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "10.0.0.1",
            "10.255.255.53",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.0.1",
            "169.254.169.254",
            "169.254.170.2",
            "100.100.100.200",
            "192.0.0.192",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1",
        ] {
            assert!(check(addr).is_some(), "{addr} must be refused");
        }
        assert_eq!(check("169.254.169.254"), Some("a cloud metadata address"));
        assert_eq!(check("fd00:ec2::254"), Some("a cloud metadata address"));
    }

    #[test]
    fn public_addresses_are_allowed() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "151.101.0.223",
            "203.0.113.80",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "192.0.1.1",
            "11.0.0.1",
            "2606:4700::1111",
            "2a04:4e42::223",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:db8::1",
            "2001:4860::8888",
        ] {
            assert_eq!(check(addr), None, "{addr} must be allowed");
        }
    }
}
