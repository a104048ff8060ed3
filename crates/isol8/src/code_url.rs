//! Code fetched from a URL (`codeUrl`, `codeHash`, `allowInsecureCodeUrl`) under the
//! operator's `remoteCode` policy, which is off by default.
//!
//! Every hop of a fetch — the URL given and each redirect — is checked the same way before
//! anything is dialled: scheme (`https` only unless the policy lists `http` *and* the
//! request allows it), host rules (blocked wins, a non-empty allow list admits only
//! matching hosts), then every address the host resolves to against the engine's
//! [`AddressPolicy`], the same one the egress proxy applies (no loopback, private,
//! special-purpose or metadata address, none of this host's own addresses, unless the
//! operator exempted it). The connection goes to exactly the checked addresses. The body is read up to
//! `maxCodeSize`, the whole fetch is bounded by `fetchTimeoutMs`, and `codeHash` (SHA-256,
//! hex) is verified before the code is used. With `remoteCode.enableCache` (the default),
//! fetched code is kept for `cacheTtl` seconds ([`CodeCache`]) and a request for the same
//! URL (and hash) in that time is served from memory, after the same checks of the URL.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use isol8_protocol::ExecutionRequest;
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::config::RemoteCodeConfig;
use crate::egress::AddressPolicy;
use crate::{Error, Result};

pub mod cache;

pub use cache::CodeCache;

/// Default cap on fetched code.
pub const DEFAULT_MAX_CODE_SIZE: u64 = RemoteCodeConfig::MAX_CODE_SIZE;
/// Default bound on one whole fetch (all redirects included).
pub const DEFAULT_FETCH_TIMEOUT_MS: u64 = RemoteCodeConfig::FETCH_TIMEOUT_MS;
/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;

/// Fetches `codeUrl`s under one policy.
#[derive(Debug, Clone)]
pub struct CodeFetcher {
    enabled: bool,
    schemes: Vec<String>,
    allowed: Vec<Regex>,
    blocked: Vec<Regex>,
    max_size: u64,
    timeout: Duration,
    require_hash: bool,
    addresses: Arc<AddressPolicy>,
    cache: Option<CodeCache>,
}

fn refused(why: impl std::fmt::Display) -> Error {
    Error::InvalidRequest(format!("codeUrl: {why}"))
}

impl CodeFetcher {
    /// The fetcher of a `remoteCode` policy, dialling only what `addresses` admits; bad
    /// patterns or limits are config errors.
    pub fn new(cfg: &RemoteCodeConfig, addresses: Arc<AddressPolicy>) -> Result<CodeFetcher> {
        let compile = |field: &str, pats: &Option<Vec<String>>| -> Result<Vec<Regex>> {
            pats.iter()
                .flatten()
                .map(|p| crate::settings::compile_regex(field, p))
                .collect()
        };
        let schemes = cfg
            .allowed_schemes
            .clone()
            .unwrap_or_else(|| vec!["https".into()]);
        if let Some(s) = schemes.iter().find(|s| *s != "https" && *s != "http") {
            return Err(Error::option(
                "remoteCode.allowedSchemes",
                format!("`{s}` is not supported; use https and/or http"),
            ));
        }
        let max_size = cfg.max_code_size.unwrap_or(DEFAULT_MAX_CODE_SIZE);
        if max_size == 0 || max_size > 16 << 20 {
            return Err(Error::option(
                "remoteCode.maxCodeSize",
                "must be between 1 byte and 16 MiB",
            ));
        }
        let timeout_ms = cfg.fetch_timeout_ms.unwrap_or(DEFAULT_FETCH_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > 300_000 {
            return Err(Error::option(
                "remoteCode.fetchTimeoutMs",
                "must be between 1 and 300000 ms",
            ));
        }
        let cache = if cfg.enable_cache.unwrap_or(RemoteCodeConfig::ENABLE_CACHE) {
            let ttl = cfg.cache_ttl.unwrap_or(RemoteCodeConfig::CACHE_TTL_SECS);
            CodeCache::new(Duration::from_secs(ttl.min(cache::MAX_TTL.as_secs())))
        } else {
            None
        };
        Ok(CodeFetcher {
            enabled: cfg.enabled.unwrap_or(false),
            schemes,
            allowed: compile("remoteCode.allowedHosts", &cfg.allowed_hosts)?,
            blocked: compile("remoteCode.blockedHosts", &cfg.blocked_hosts)?,
            max_size,
            timeout: Duration::from_millis(timeout_ms),
            require_hash: cfg.require_hash.unwrap_or(false),
            addresses,
            cache,
        })
    }

    /// If `req` has a `codeUrl`, fetches it into `code` (and clears `codeUrl`/`codeHash`).
    pub async fn resolve(&self, req: &mut ExecutionRequest) -> Result<()> {
        let Some(url) = req.code_url.clone() else {
            if req.code_hash.is_some() {
                return Err(refused("codeHash was given without codeUrl"));
            }
            return Ok(());
        };
        if !self.enabled {
            return Err(refused(
                "fetching code from URLs is disabled; the operator enables it with remoteCode.enabled in the config",
            ));
        }
        if req.code.is_some() || req.cmd.is_some() {
            return Err(refused("give exactly one of code, cmd or codeUrl"));
        }
        let expected = match &req.code_hash {
            Some(h) => Some(parse_hash(h)?),
            None if self.require_hash => {
                return Err(refused(
                    "this server requires codeHash (SHA-256, hex) with every codeUrl",
                ))
            }
            None => None,
        };
        let insecure = req.allow_insecure_code_url.unwrap_or(false);
        // The URL itself is checked whether or not it is cached: a cached entry never
        // serves a request the policy refuses.
        let parsed =
            url::Url::parse(&url).map_err(|e| refused(format!("`{url}` is not a URL: {e}")))?;
        self.check_url(&parsed, insecure)?;
        let key = cache::Key {
            url: url.clone(),
            hash: expected.clone(),
            insecure,
        };
        if let Some(code) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            tracing::debug!(%url, "codeUrl served from the cache");
            req.code = Some(code.to_string());
            req.code_url = None;
            req.code_hash = None;
            return Ok(());
        }
        let body = tokio::time::timeout(self.timeout, self.fetch(&url, insecure))
            .await
            .map_err(|_| {
                refused(format!(
                    "fetching `{url}` took longer than {} ms",
                    self.timeout.as_millis()
                ))
            })??;
        if let Some(expected) = expected {
            let got = hex::encode(Sha256::digest(&body));
            if got != expected {
                return Err(refused(format!(
                    "the SHA-256 of `{url}` is {got}, not the expected {expected}"
                )));
            }
        }
        let code =
            String::from_utf8(body).map_err(|_| refused(format!("`{url}` is not UTF-8 text")))?;
        if let Some(cache) = &self.cache {
            cache.put(key, &code);
        }
        req.code = Some(code);
        req.code_url = None;
        req.code_hash = None;
        Ok(())
    }

    /// Checks one hop's URL against the policy; returns host and port.
    fn check_url(&self, url: &url::Url, insecure: bool) -> Result<(String, u16)> {
        let scheme = url.scheme();
        let scheme_ok = match scheme {
            "https" => self.schemes.iter().any(|s| s == "https"),
            "http" => insecure && self.schemes.iter().any(|s| s == "http"),
            _ => false,
        };
        if !scheme_ok {
            return Err(refused(if scheme == "http" {
                format!("`{url}` is plain http; it needs allowInsecureCodeUrl and `http` in remoteCode.allowedSchemes")
            } else {
                format!("`{url}`: scheme `{scheme}` is not allowed")
            }));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused(format!("`{url}` carries credentials")));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(refused(format!("`{url}` has no host"))),
        };
        if let Some(re) = self.blocked.iter().find(|re| re.is_match(&host)) {
            return Err(refused(format!("host {host} is blocked by `{re}`")));
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|re| re.is_match(&host)) {
            return Err(refused(format!(
                "host {host} is not in remoteCode.allowedHosts"
            )));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        Ok((host, port))
    }

    async fn fetch(&self, url: &str, insecure: bool) -> Result<Vec<u8>> {
        let mut current =
            url::Url::parse(url).map_err(|e| refused(format!("`{url}` is not a URL: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            let (host, port) = self.check_url(&current, insecure)?;
            let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map_err(|e| refused(format!("cannot resolve {host}: {e}")))?
                    .collect(),
            };
            if addrs.is_empty() {
                return Err(refused(format!("{host} has no address")));
            }
            for a in &addrs {
                if let Some(why) = self.addresses.refusal(a.ip()) {
                    return Err(refused(format!("{host} resolves to {}, {why}", a.ip())));
                }
            }
            // The client dials exactly the addresses just checked: no second lookup, no
            // proxy from the environment, no automatic redirects.
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .resolve_to_addrs(&host, &addrs)
                .timeout(self.timeout)
                .build()
                .map_err(|e| refused(format!("cannot build an HTTP client: {e}")))?;
            let resp = client
                .get(current.clone())
                .send()
                .await
                .map_err(|e| refused(format!("fetching `{current}` failed: {e}")))?;
            let status = resp.status();
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| refused(format!("`{current}` redirects without a Location")))?;
                current = current
                    .join(location)
                    .map_err(|e| refused(format!("bad redirect `{location}`: {e}")))?;
                continue;
            }
            if !status.is_success() {
                return Err(refused(format!("`{current}` answered HTTP {status}")));
            }
            if resp.content_length().is_some_and(|n| n > self.max_size) {
                return Err(self.too_large(&current));
            }
            let mut body = Vec::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| refused(format!("reading `{current}`: {e}")))?;
                if body.len() as u64 + chunk.len() as u64 > self.max_size {
                    return Err(self.too_large(&current));
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(body);
        }
        Err(refused(format!(
            "`{url}` redirects more than {MAX_REDIRECTS} times"
        )))
    }

    fn too_large(&self, url: &url::Url) -> Error {
        refused(format!(
            "`{url}` is larger than remoteCode.maxCodeSize ({} bytes)",
            self.max_size
        ))
    }
}

/// A SHA-256 given as 64 hex digits, optionally prefixed `sha256:`; lower-cased.
fn parse_hash(h: &str) -> Result<String> {
    let hex = h.strip_prefix("sha256:").unwrap_or(h).to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(refused(format!(
            "codeHash `{h}` is not a SHA-256 (64 hex digits)"
        )));
    }
    Ok(hex)
}

#[cfg(test)]
mod tests;
