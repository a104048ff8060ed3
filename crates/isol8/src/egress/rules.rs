//! What one execution admits: its host [`Rules`], and [`decide`], every check a request
//! target meets (Host header, port, host rules, resolution, the address policy) before
//! anything is dialled, with the [`Refusal`] answered when one fails.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use isol8_protocol::NetworkFilter;
use regex::Regex;

use super::{AddressPolicy, Net, Target, HTTP_PORTS, TUNNEL_PORTS};
use crate::settings::compile_regex;
use crate::{Error, Result};

/// Time a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Host rules of one execution: blacklist wins, and each non-empty whitelist (the
/// filter's own and its narrowing ones) must admit a host. Patterns are regexes searched
/// in the lower-case host name.
#[derive(Debug, Clone)]
pub struct Rules {
    whitelists: Vec<Vec<Regex>>,
    blacklist: Vec<Regex>,
    deny_all: bool,
}

impl Rules {
    /// Compiles `filter`, adding `extra_hosts` (exact names) to every whitelist, or
    /// making them the only whitelist when there is none and `restrict` asks for one.
    pub fn new(filter: &NetworkFilter, extra_hosts: &[&str], restrict: bool) -> Result<Rules> {
        let compile = |field: &str, patterns: &[String]| -> Result<Vec<Regex>> {
            patterns.iter().map(|p| compile_regex(field, p)).collect()
        };
        let mut whitelists = filter
            .whitelists()
            .map(|w| compile("networkFilter.whitelist", w))
            .collect::<Result<Vec<_>>>()?;
        let blacklist = compile("networkFilter.blacklist", &filter.blacklist)?;
        if whitelists.is_empty() && restrict {
            whitelists.push(Vec::new());
        }
        for whitelist in &mut whitelists {
            for host in extra_hosts {
                whitelist.push(
                    Regex::new(&format!("^{}$", regex::escape(host)))
                        .map_err(|e| Error::option("networkFilter", e.to_string()))?,
                );
            }
        }
        Ok(Rules {
            whitelists,
            blacklist,
            deny_all: false,
        })
    }

    /// Rules that admit nothing (between executions).
    pub fn deny_all() -> Rules {
        Rules {
            whitelists: Vec::new(),
            blacklist: Vec::new(),
            deny_all: true,
        }
    }

    /// Why `host` is not admitted, if it is not.
    pub fn refusal(&self, host: &str) -> Option<String> {
        if self.deny_all {
            return Some("no execution is running in this sandbox".into());
        }
        if let Some(re) = self.blacklist.iter().find(|re| re.is_match(host)) {
            return Some(format!("{host} matches the blacklist pattern `{re}`"));
        }
        if self
            .whitelists
            .iter()
            .any(|w| !w.iter().any(|re| re.is_match(host)))
        {
            return Some(format!("{host} matches no whitelist pattern"));
        }
        None
    }
}

/// Why a request is refused: status and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status sent to the client.
    pub status: u16,
    /// Reason (the response body).
    pub reason: String,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
    }
}

/// Applies every check to `target` and returns the addresses that may be dialled.
pub async fn decide(
    target: &Target,
    rules: &Rules,
    policy: &AddressPolicy,
    net: &dyn Net,
) -> Result<Vec<SocketAddr>, Refusal> {
    if let Some(h) = &target.host_mismatch {
        return Err(refuse(
            403,
            format!(
                "the Host header `{h}` does not match the request target {}:{}",
                target.host, target.port
            ),
        ));
    }
    let ports = if target.tunnel {
        TUNNEL_PORTS
    } else {
        HTTP_PORTS
    };
    if !ports.contains(&target.port) {
        return Err(refuse(
            403,
            format!(
                "port {} is not allowed for {} (allowed: {ports:?})",
                target.port,
                if target.tunnel {
                    "CONNECT"
                } else {
                    "plain HTTP"
                }
            ),
        ));
    }
    if let Some(why) = rules.refusal(&target.host) {
        return Err(refuse(403, why));
    }
    let addrs = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => {
            match tokio::time::timeout(RESOLVE_TIMEOUT, net.resolve(&target.host, target.port))
                .await
            {
                Ok(Ok(a)) if !a.is_empty() => a,
                Ok(Ok(_)) => return Err(refuse(502, format!("{} has no address", target.host))),
                Ok(Err(e)) => {
                    return Err(refuse(502, format!("cannot resolve {}: {e}", target.host)))
                }
                Err(_) => return Err(refuse(504, format!("resolving {} timed out", target.host))),
            }
        }
    };
    // Every address must pass: the client must not be able to steer which one is used.
    for a in &addrs {
        if let Some(why) = policy.refusal(a.ip()) {
            return Err(refuse(
                403,
                format!("{} resolves to {}, {why}", target.host, a.ip()),
            ));
        }
    }
    Ok(addrs)
}
