//! [`RequestError`]: why the proxy refuses a request before anything is dialled.

use std::io;

use super::host;

/// Why a proxy request is refused before anything is dialled (answered 400 with this
/// text): the head could not be read, or it is malformed or ambiguous.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Reading the head from the client failed.
    #[error("reading the request: {source}")]
    Read {
        /// The read error.
        source: io::Error,
    },
    /// The client closed the connection mid-head.
    #[error("connection closed before the request head ended")]
    ClosedEarly,
    /// The head is larger than the proxy reads.
    #[error("request head larger than {} bytes", super::request::MAX_HEAD)]
    HeadTooLarge,
    /// Not HTTP/1.x request syntax.
    #[error("malformed request: {source}")]
    Malformed {
        /// The parser's error.
        source: httparse::Error,
    },
    /// Bytes follow the head's empty line.
    #[error("bytes after the end of the request head")]
    TrailingBytes,
    /// The head does not end.
    #[error("incomplete request head")]
    Incomplete,
    /// A header name servers may read as a framing header (`Content_Length`).
    #[error("the header name `{name}` could be read as `{reads_as}`; refused")]
    AmbiguousHeaderName {
        /// The name as sent.
        name: String,
        /// The framing header it resembles.
        reads_as: String,
    },
    /// A framing header whose value is not ASCII.
    #[error("the {name} header is not ASCII")]
    NotAscii {
        /// The header's name.
        name: String,
    },
    /// A framing header given twice.
    #[error("more than one {header} header")]
    Repeated {
        /// `Host`, `Content-Length` or `Transfer-Encoding`.
        header: &'static str,
    },
    /// A `Host` header that is not a canonicalisable `host[:port]`.
    #[error("bad Host header: {source}")]
    BadHostHeader {
        /// What is wrong with it.
        source: host::HostError,
    },
    /// A `Content-Length` that is not plain digits.
    #[error("Content-Length `{value}` is not a plain decimal length")]
    BadContentLength {
        /// The value as sent.
        value: String,
    },
    /// A transfer coding other than `chunked`.
    #[error("Transfer-Encoding `{value}` cannot be framed by this proxy (only `chunked` is)")]
    UnsupportedCoding {
        /// The value as sent.
        value: String,
    },
    /// Both `Content-Length` and `Transfer-Encoding`.
    #[error("both Content-Length and Transfer-Encoding: the body's end is ambiguous")]
    AmbiguousBody,
    /// `Transfer-Encoding` in HTTP/1.0.
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    ChunkedHttp10,
    /// A `CONNECT` with a body.
    #[error("a CONNECT request has no body")]
    ConnectBody,
    /// An `https://` URL in a plain proxy request.
    #[error("https URLs go through CONNECT, not a plain proxy request")]
    HttpsWithoutConnect,
    /// A plain request whose target is not an absolute `http://` URL.
    #[error("`{target}` is not an absolute http:// URL (this is a proxy)")]
    NotAbsoluteUrl {
        /// The request target.
        target: String,
    },
    /// A URL that does not parse.
    #[error("bad URL `{target}`: {source}")]
    BadUrl {
        /// The request target.
        target: String,
        /// The URL parser's error.
        source: url::ParseError,
    },
    /// A URL whose host is refused.
    #[error("bad URL `{target}`: {source}")]
    BadUrlHost {
        /// The request target.
        target: String,
        /// What is wrong with the host.
        source: host::HostError,
    },
    /// A URL with user or password.
    #[error("credentials in proxied URLs are not supported")]
    Credentials,
    /// A URL without a host.
    #[error("the URL has no host")]
    NoHost,
    /// A `CONNECT` target in brackets without `]:port`.
    #[error("`{target}` is not a [ipv6]:port CONNECT target")]
    NotIpv6Target {
        /// The request target.
        target: String,
    },
    /// A `CONNECT` target without a port.
    #[error("`{target}` has no port (CONNECT needs host:port)")]
    NoPort {
        /// The request target.
        target: String,
    },
    /// A `CONNECT` target whose host is refused.
    #[error("`{target}` is not a host:port CONNECT target: {source}")]
    BadConnectTarget {
        /// The request target.
        target: String,
        /// What is wrong with the host.
        source: host::HostError,
    },
    /// A `CONNECT` target whose port is refused.
    #[error("{source}")]
    BadPort {
        /// What is wrong with the port.
        source: host::HostError,
    },
}
