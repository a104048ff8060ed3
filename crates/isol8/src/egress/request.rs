//! Reading and parsing a proxy request head into the [`Target`] it names: the host in
//! canonical form (see [`host`]), the body's framing (see [`super::framing`]) and the head
//! to send upstream, or the [`RequestError`] that refuses it.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::framing::Body;
use super::{host, RequestError, HTTP_PORTS, TUNNEL_PORTS};

/// Largest request head the proxy reads.
pub(super) const MAX_HEAD: usize = 16 << 10;
/// Most header fields in a request head.
const MAX_HEADERS: usize = 96;

/// The target of one proxied request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Request method (`CONNECT` for tunnels).
    pub method: String,
    /// Lower-case host name or IP literal (no brackets).
    pub host: String,
    /// Target port.
    pub port: u16,
    /// Path and query of a plain request; empty for tunnels.
    pub path: String,
    /// A `CONNECT` tunnel.
    pub tunnel: bool,
    /// A `Host` header that names another host or port than the target.
    pub host_mismatch: Option<String>,
    /// How the request's body is framed ([`Body::Empty`] for tunnels).
    pub body: Body,
    /// The request head to send upstream (plain requests only).
    pub forward_head: Vec<u8>,
}

/// Reads up to the end of the request head; returns it and any bytes read past it.
pub(super) async fn read_head<C: AsyncRead + Unpin>(
    client: &mut C,
) -> std::result::Result<(Vec<u8>, Vec<u8>), RequestError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = client
            .read(&mut chunk)
            .await
            .map_err(|source| RequestError::Read { source })?;
        if n == 0 {
            return Err(RequestError::ClosedEarly);
        }
        let searched = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        // The head ends at the first empty line (CRLF or, as the parser also takes, LF):
        // only then is it parsed, and the parser says exactly where it ends.
        let tail = &buf[searched..];
        if tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n") {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::Request::new(&mut headers).parse(&buf) {
                Ok(httparse::Status::Complete(end)) => {
                    let rest = buf.split_off(end);
                    return Ok((buf, rest));
                }
                Ok(httparse::Status::Partial) => {}
                Err(source) => return Err(RequestError::Malformed { source }),
            }
        }
        if buf.len() >= MAX_HEAD {
            return Err(RequestError::HeadTooLarge);
        }
    }
}

/// Headers that concern the proxy hop only and are not forwarded.
const HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Headers the proxy reads itself and forwards only in its own canonical form.
const FRAMING_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding"];

/// Parses a proxy request head (`CONNECT host:port` or an absolute `http://` URI), ending
/// with its empty line. An error (answered 400) says what is malformed: besides bad
/// syntax, a host that is not canonicalisable (see [`host`]), more than one `Host`,
/// `Content-Length` or `Transfer-Encoding` header, both of the latter, a
/// `Content-Length` that is not plain digits, any transfer coding but `chunked` (or
/// `chunked` in HTTP/1.0), a body on a `CONNECT`, and header names that servers may read
/// as one of those (`Content_Length`).
pub fn parse_request(head: &[u8]) -> std::result::Result<Target, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(httparse::Status::Complete(_)) => return Err(RequestError::TrailingBytes),
        Ok(httparse::Status::Partial) => return Err(RequestError::Incomplete),
        Err(source) => return Err(RequestError::Malformed { source }),
    }
    let method = req.method.unwrap_or_default().to_string();
    let raw_target = req.path.unwrap_or_default();
    let minor = req.version.unwrap_or(1);
    let tunnel = method.eq_ignore_ascii_case("CONNECT");

    let mut host_header: Option<(String, Option<u16>)> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if name.contains('_') && FRAMING_HEADERS.contains(&name.replace('_', "-").as_str()) {
            return Err(RequestError::AmbiguousHeaderName {
                name: h.name.to_string(),
                reads_as: name.replace('_', "-"),
            });
        }
        if !FRAMING_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = std::str::from_utf8(h.value)
            .map_err(|_| RequestError::NotAscii {
                name: h.name.to_string(),
            })?
            .trim_matches([' ', '\t']);
        match name.as_str() {
            "host" => {
                if host_header.is_some() {
                    return Err(RequestError::Repeated { header: "Host" });
                }
                host_header = Some(
                    host::split_host_port(value)
                        .map_err(|source| RequestError::BadHostHeader { source })?,
                );
            }
            "content-length" => {
                if length.is_some() {
                    return Err(RequestError::Repeated {
                        header: "Content-Length",
                    });
                }
                if value.is_empty()
                    || value.len() > 18
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(RequestError::BadContentLength {
                        value: value.to_string(),
                    });
                }
                length = Some(value.parse().map_err(|_| RequestError::BadContentLength {
                    value: value.to_string(),
                })?);
            }
            _ => {
                if chunked {
                    return Err(RequestError::Repeated {
                        header: "Transfer-Encoding",
                    });
                }
                if !value.eq_ignore_ascii_case("chunked") {
                    return Err(RequestError::UnsupportedCoding {
                        value: value.to_string(),
                    });
                }
                chunked = true;
            }
        }
    }
    let body = match (length, chunked) {
        (Some(_), true) => return Err(RequestError::AmbiguousBody),
        (_, true) if minor == 0 => return Err(RequestError::ChunkedHttp10),
        (_, true) => Body::Chunked,
        (Some(0), false) | (None, false) => Body::Empty,
        (Some(n), false) => Body::Length(n),
    };
    if tunnel && body != Body::Empty {
        return Err(RequestError::ConnectBody);
    }

    let (host, port, path) = if tunnel {
        let (host, port) = split_authority(raw_target)?;
        (host, port, String::new())
    } else {
        let lower = raw_target.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(RequestError::HttpsWithoutConnect);
        }
        if !lower.starts_with("http://") {
            return Err(RequestError::NotAbsoluteUrl {
                target: raw_target.to_string(),
            });
        }
        let url = url::Url::parse(raw_target).map_err(|source| RequestError::BadUrl {
            target: raw_target.to_string(),
            source,
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RequestError::Credentials);
        }
        let host = match url.host() {
            Some(h) => host::from_url_host(&h).map_err(|source| RequestError::BadUrlHost {
                target: raw_target.to_string(),
                source,
            })?,
            None => return Err(RequestError::NoHost),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        (host, port, path)
    };
    let host_mismatch = host_header.and_then(|(h, p)| {
        let default = if tunnel {
            TUNNEL_PORTS[0]
        } else {
            HTTP_PORTS[0]
        };
        let port_ok = match p {
            Some(p) => p == port,
            None => port == default || tunnel,
        };
        (h != host || !port_ok).then(|| match p {
            Some(p) => format!("{}:{p}", bracketed(&h)),
            None => bracketed(&h),
        })
    });
    let mut forward_head = Vec::new();
    if !tunnel {
        let default = HTTP_PORTS[0];
        let authority = if port == default {
            bracketed(&host)
        } else {
            format!("{}:{port}", bracketed(&host))
        };
        forward_head.extend_from_slice(
            format!("{method} {path} HTTP/1.{minor}\r\nHost: {authority}\r\n").as_bytes(),
        );
        for h in req.headers.iter() {
            let skip = |names: &[&str]| names.iter().any(|n| h.name.eq_ignore_ascii_case(n));
            if skip(HOP_HEADERS) || skip(FRAMING_HEADERS) {
                continue;
            }
            forward_head.extend_from_slice(h.name.as_bytes());
            forward_head.extend_from_slice(b": ");
            forward_head.extend_from_slice(h.value);
            forward_head.extend_from_slice(b"\r\n");
        }
        match body {
            Body::Empty if length == Some(0) => {
                forward_head.extend_from_slice(b"Content-Length: 0\r\n");
            }
            Body::Empty => {}
            Body::Length(n) => {
                forward_head.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
            }
            Body::Chunked => forward_head.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        }
        forward_head.extend_from_slice(b"Connection: close\r\n\r\n");
    }
    Ok(Target {
        method: method.to_ascii_uppercase(),
        host,
        port,
        path,
        tunnel,
        host_mismatch,
        body,
        forward_head,
    })
}

/// A host as written in an authority: IPv6 addresses in brackets.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `host:port` / `[v6]:port` of a CONNECT request, the host in canonical form.
fn split_authority(auth: &str) -> std::result::Result<(String, u16), RequestError> {
    let target = || auth.to_string();
    let (host, port) = if auth.starts_with('[') {
        auth.split_once("]:")
            .map(|(h, p)| (format!("{h}]"), p))
            .ok_or_else(|| RequestError::NotIpv6Target { target: target() })?
    } else {
        auth.rsplit_once(':')
            .map(|(h, p)| (h.to_string(), p))
            .ok_or_else(|| RequestError::NoPort { target: target() })?
    };
    let host = host::canonical_host(&host).map_err(|source| RequestError::BadConnectTarget {
        target: target(),
        source,
    })?;
    let port = host::parse_port(port).map_err(|source| RequestError::BadPort { source })?;
    Ok((host, port))
}
