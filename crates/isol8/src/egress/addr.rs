//! Which addresses egress never dials, whatever the host rules say: the filtering proxy
//! of `filtered` sandboxes and the `codeUrl` fetcher both ask an [`AddressPolicy`].
//!
//! The check runs on every address a name resolves to (and on IP literals), right before
//! the connection is made, so a name that resolves to a private address is refused just
//! like the literal. Refused: every range of the IANA IPv4 and IPv6 Special-Purpose
//! Address Registries that is not globally reachable (loopback, RFC 1918, CGNAT,
//! link-local, ULA, documentation, benchmarking, IETF protocol assignments, multicast,
//! reserved…), the cloud metadata endpoints, and every address assigned to one of this
//! host's interfaces (read when the check runs, so it is always current). Addresses that
//! embed an IPv4 address (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible, NAT64, 6to4) are
//! judged by the address they embed.
//!
//! An operator can exempt addresses or ranges (config `network.exemptRanges`), e.g. a
//! package-registry gateway that sits in a documentation range; an exemption admits
//! exactly the addresses it covers and nothing else. This host's own addresses are only
//! admitted by an exemption naming exactly that address, never by a range around it (an
//! exemption of `10.0.0.0/8` for a mirror must not open the engine host's `10.0.0.5`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::{Error, Result};

/// The addresses egress may dial: every public address, plus the operator's exemptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    exempt: Vec<IpNet>,
}

impl AddressPolicy {
    /// A policy exempting `ranges` (each an address such as `203.0.113.80` or `fd00::2`,
    /// or a CIDR range such as `203.0.113.0/24`); a malformed entry is an error naming
    /// `network.exemptRanges`.
    pub fn new<S: AsRef<str>>(ranges: &[S]) -> Result<AddressPolicy> {
        let exempt = ranges
            .iter()
            .map(|r| {
                let r = r.as_ref().trim();
                r.parse::<IpNet>()
                    .or_else(|_| r.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| match net {
                        // `::ffff:a.b.c.d/128` is the IPv4 address it embeds.
                        IpNet::V6(v6) if v6.prefix_len() == 128 => {
                            IpNet::from(IpAddr::V6(v6.addr()).to_canonical())
                        }
                        other => other.trunc(),
                    })
                    .map_err(|_| {
                        Error::option(
                            "network.exemptRanges",
                            format!("`{r}` is neither an IP address nor a CIDR range such as 203.0.113.0/24"),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AddressPolicy { exempt })
    }

    /// The operator's exemptions.
    pub fn exemptions(&self) -> &[IpNet] {
        &self.exempt
    }

    /// Why `ip` must not be dialled, or `None` when it may be.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = ip.to_canonical();
        let exempt = self.exempt.iter().any(|net| net.contains(&ip));
        let exactly = self
            .exempt
            .iter()
            .any(|net| net.prefix_len() == net.max_prefix_len() && net.addr() == ip);
        let local = || is_local(ip).then_some("an address of this host");
        match (exactly, exempt) {
            (true, _) => None,
            // A range never opens this host's own addresses.
            (false, true) => local(),
            (false, false) => forbidden(ip).or_else(local),
        }
    }
}

/// Why `ip` must never be dialled by any policy without exemptions — a special-purpose
/// or metadata address — or `None` when it is a globally reachable address. Does not
/// know this host's own addresses; [`AddressPolicy::refusal`] adds them.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// True when `ip` (or the IPv4 address it embeds) is assigned to an interface of this
/// host. Interfaces are listed afresh on every call; if they cannot be listed, every
/// address counts as local (fail closed).
fn is_local(ip: IpAddr) -> bool {
    let wanted = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match if_addrs::get_if_addrs() {
        Ok(ifaces) => ifaces
            .iter()
            .any(|i| i.ip() == wanted || i.ip().to_canonical() == wanted),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this host's addresses; refusing");
            true
        }
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

/// IPv4 ranges that are not globally reachable (IANA IPv4 Special-Purpose Address
/// Registry, plus multicast and the deprecated 6to4 relay anycast of RFC 7526).
const SPECIAL_V4: [([u8; 4], u8, &str); 16] = [
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
    ([192, 0, 2, 0], 24, "a documentation address (RFC 5737)"),
    (
        [192, 88, 99, 0],
        24,
        "a 6to4 relay anycast address (RFC 7526)",
    ),
    ([192, 168, 0, 0], 16, "a private address (RFC 1918)"),
    ([198, 18, 0, 0], 15, "a benchmarking address (RFC 2544)"),
    ([198, 51, 100, 0], 24, "a documentation address (RFC 5737)"),
    ([203, 0, 113, 0], 24, "a documentation address (RFC 5737)"),
    ([224, 0, 0, 0], 4, "a multicast address"),
    ([240, 0, 0, 0], 4, "a reserved address"),
    ([255, 255, 255, 255], 32, "the broadcast address"),
];

/// IPv6 ranges that are not globally reachable (IANA IPv6 Special-Purpose Address
/// Registry, plus multicast and the deprecated site-local range). Ranges that embed an
/// IPv4 address are handled before this table.
const SPECIAL_V6: [(u16, u16, u16, u8, &str); 10] = [
    (0x0100, 0, 0, 64, "a discard-only address (RFC 6666)"),
    (
        0x2001,
        0,
        0,
        23,
        "an IETF protocol-assignment address (incl. Teredo)",
    ),
    (0x2001, 0x0db8, 0, 32, "a documentation address (RFC 3849)"),
    (0x3fff, 0, 0, 20, "a documentation address (RFC 9637)"),
    (0x5f00, 0, 0, 16, "a segment-routing SID (RFC 9602)"),
    (0xfc00, 0, 0, 7, "a unique local address (ULA)"),
    (0xfe80, 0, 0, 10, "a link-local address"),
    (0xfec0, 0, 0, 10, "a site-local address"),
    (0xff00, 0, 0, 8, "a multicast address"),
    (
        0x0064,
        0xff9b,
        0x0001,
        48,
        "a local-use NAT64 address (RFC 8215)",
    ),
];

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if METADATA_V4.contains(&ip) {
        return Some("a cloud metadata address");
    }
    let bits = u32::from(ip);
    SPECIAL_V4
        .iter()
        .find(|(net, prefix, _)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
            bits & mask == u32::from(Ipv4Addr::from(*net)) & mask
        })
        .map(|(_, _, why)| *why)
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`, deprecated), NAT64 (`64:ff9b::/96`, and the local-use
/// `64:ff9b:1::/48`) and 6to4 (`2002:V4::/48`) all reach the address they embed.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if seg[..5] == [0; 5] && (seg[5] == 0xffff || (seg[5] == 0 && (seg[6] != 0 || seg[7] > 1))) {
        return Some(v4(seg[6], seg[7]));
    }
    if seg[0] == 0x64 && seg[1] == 0xff9b && (seg[2..6] == [0; 4] || seg[2] == 1) {
        return Some(v4(seg[6], seg[7]));
    }
    if seg[0] == 0x2002 {
        return Some(v4(seg[1], seg[2]));
    }
    None
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip == METADATA_V6 {
        return Some("a cloud metadata address");
    }
    if let Some(v4) = embedded_v4(ip) {
        return forbidden_v4(v4);
    }
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    let bits = u128::from(ip);
    SPECIAL_V6
        .iter()
        .find(|(a, b, c, prefix, _)| {
            let net = u128::from(Ipv6Addr::new(*a, *b, *c, 0, 0, 0, 0, 0));
            let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
            bits & mask == net & mask
        })
        .map(|(_, _, _, _, why)| *why)
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
            // The rest of the IANA special-purpose ranges.
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.254",
            "198.51.100.7",
            "203.0.113.80",
            "192.88.99.1",
            "::ffff:203.0.113.80",
            "::ffff:198.18.0.1",
            "64:ff9b::c000:201",
            "2001:db8::1",
            "2001:2::1",
            "2001:10::1",
            "3fff::1",
            "5f00::1",
            "64:ff9b:1::1",
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
            "2001:4860::8888",
            "198.20.0.1",
            "192.88.100.1",
            "2001:200::1",
        ] {
            assert_eq!(check(addr), None, "{addr} must be allowed");
        }
    }

    fn policy(exempt: &[&str]) -> AddressPolicy {
        AddressPolicy::new(exempt).expect("valid exemptions")
    }

    #[test]
    fn exemptions_admit_exactly_what_they_cover() {
        let p = policy(&["203.0.113.80", "198.51.100.0/28", "2001:db8::/126"]);
        for ok in [
            "203.0.113.80",
            "::ffff:203.0.113.80",
            "198.51.100.15",
            "2001:db8::3",
        ] {
            assert_eq!(p.refusal(ok.parse().expect("ip")), None, "{ok} is exempt");
        }
        for refused in [
            "203.0.113.81",
            "198.51.100.16",
            "2001:db8::4",
            "10.0.0.1",
            "169.254.169.254",
        ] {
            assert!(
                p.refusal(refused.parse().expect("ip")).is_some(),
                "{refused} is not exempt"
            );
        }
        // A host range given with its host bits set still means the range.
        let p = policy(&["192.0.2.77/24"]);
        assert_eq!(p.refusal("192.0.2.1".parse().expect("ip")), None);
    }

    #[test]
    fn malformed_exemptions_name_the_setting() {
        for bad in ["203.0.113", "10.0.0.0/33", "pypi.org", ""] {
            let err = AddressPolicy::new(&[bad]).expect_err(bad).to_string();
            assert!(err.contains("network.exemptRanges"), "{bad}: {err}");
        }
    }

    #[test]
    fn this_hosts_own_addresses_are_refused() {
        let ifaces = if_addrs::get_if_addrs().expect("interfaces");
        assert!(!ifaces.is_empty());
        let p = policy(&[]);
        for iface in ifaces {
            let ip = iface.ip();
            assert!(
                p.refusal(ip).is_some(),
                "{ip} ({}) must be refused",
                iface.name
            );
            if let IpAddr::V4(v4) = ip {
                let mapped = IpAddr::V6(v4.to_ipv6_mapped());
                assert!(p.refusal(mapped).is_some(), "{mapped} must be refused");
            }
        }
        assert_eq!(p.refusal("8.8.8.8".parse().expect("ip")), None);
    }

    #[test]
    fn only_an_exact_exemption_opens_one_of_this_hosts_addresses() {
        let wide = policy(&["0.0.0.0/0", "::/0"]);
        for iface in if_addrs::get_if_addrs().expect("interfaces") {
            let ip = iface.ip();
            assert_eq!(
                wide.refusal(ip),
                Some("an address of this host"),
                "{ip} ({}) opened by a range",
                iface.name
            );
            let exact = policy(&[ip.to_string().as_str()]);
            assert_eq!(exact.refusal(ip), None, "{ip} exempted exactly");
        }
        assert_eq!(wide.refusal("10.255.255.53".parse().expect("ip")), None);
    }
}
