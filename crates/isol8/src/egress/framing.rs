//! Where a proxied request's body ends, so that exactly one request per connection
//! reaches the upstream.
//!
//! The proxy forwards one request per client connection and tells the upstream
//! `Connection: close`. Bytes after the end of that request (a pipelined second request,
//! or one hidden behind ambiguous framing) must never be forwarded, so the body is
//! bounded by its framing and nothing past it is read from the client: a
//! `Content-Length` body is forwarded byte for byte up to that length; a chunked body is
//! decoded by a strict parser and re-encoded canonically (sizes in lower-case hex, no
//! extensions, no trailers), so the upstream sees exactly the chunks the proxy saw, and
//! the request ends where the proxy says it ends. Framing the proxy cannot bound is
//! refused before anything is dialled (see [`super::parse_request`]).

/// How the body of a request is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body (no `Content-Length`, no `Transfer-Encoding`), or a tunnel.
    Empty,
    /// `Content-Length: n`: exactly `n` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Longest chunk-size line (size, extensions and CRLF) the decoder accepts.
const MAX_SIZE_LINE: usize = 4096;
/// Most trailer bytes the decoder accepts (they are dropped).
const MAX_TRAILERS: usize = 16 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: the size so far, hex digits seen, inside an extension.
    Size { size: u64, digits: u8, ext: bool },
    /// The LF ending a chunk-size line.
    SizeLf { size: u64 },
    /// Inside chunk data: bytes still to come.
    Data { left: u64 },
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// Trailer section after the last chunk: at the start of a line or inside one.
    Trailer { line_start: bool },
    /// The LF ending a trailer line (or the final empty line when `last`).
    TrailerLf { last: bool },
    /// The body has ended; nothing more is consumed.
    Done,
}

/// A strict, incremental decoder of a chunked body that re-encodes what it reads.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    line: usize,
    trailers: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::new()
    }
}

/// Why a chunked body is malformed (the proxy drops the connection with this reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A size line (with its extensions) over 4 KiB.
    #[error("a chunk-size line longer than {MAX_SIZE_LINE} bytes")]
    SizeLineTooLong,
    /// A size line with no hex digit.
    #[error("a chunk without a size")]
    NoSize,
    /// A control byte in a chunk extension.
    #[error("a control byte in a chunk extension")]
    ControlInExtension,
    /// A byte that is not a hex digit in a chunk size.
    #[error("byte {0:#04x} in a chunk size")]
    BadSizeByte(u8),
    /// More than 16 hex digits.
    #[error("a chunk size that does not fit in 64 bits")]
    SizeTooLarge,
    /// A size line not ended by CRLF.
    #[error("a chunk-size line not ended by CRLF")]
    SizeLineNotCrlf,
    /// More data than the chunk's size.
    #[error("chunk data longer than its size")]
    DataTooLong,
    /// Chunk data not followed by CRLF.
    #[error("chunk data not ended by CRLF")]
    DataNotCrlf,
    /// Trailers over 16 KiB.
    #[error("trailers longer than {MAX_TRAILERS} bytes")]
    TrailersTooLong,
    /// A control byte or a bare LF in a trailer.
    #[error("a control byte or bare LF in a trailer")]
    BadTrailerByte,
    /// A trailer line not ended by CRLF.
    #[error("a trailer line not ended by CRLF")]
    TrailerNotCrlf,
}

impl Chunked {
    /// A decoder at the start of a body.
    pub fn new() -> Chunked {
        Chunked {
            state: State::Size {
                size: 0,
                digits: 0,
                ext: false,
            },
            line: 0,
            trailers: 0,
        }
    }

    /// True once the last chunk and the trailer section have been read.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending the canonical encoding of what it read to `out`.
    /// Returns how many bytes of `input` belong to the body: fewer than `input.len()`
    /// only when the body ended inside `input` (the rest is never forwarded). An error
    /// says why the body is malformed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data { left } => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    continue;
                }
                State::Size { size, digits, ext } => {
                    self.line += 1;
                    if self.line > MAX_SIZE_LINE {
                        return Err(ChunkError::SizeLineTooLong);
                    }
                    if b == b'\r' {
                        if digits == 0 {
                            return Err(ChunkError::NoSize);
                        }
                        self.state = State::SizeLf { size };
                    } else if ext {
                        // Extensions are dropped; only visible ASCII and tabs may appear.
                        if !(b == b'\t' || (0x20..0x7f).contains(&b)) {
                            return Err(ChunkError::ControlInExtension);
                        }
                    } else if b == b';' && digits > 0 {
                        self.state = State::Size {
                            size,
                            digits,
                            ext: true,
                        };
                    } else {
                        let d = (b as char).to_digit(16).ok_or(ChunkError::BadSizeByte(b))?;
                        if digits >= 16 {
                            return Err(ChunkError::SizeTooLarge);
                        }
                        self.state = State::Size {
                            size: (size << 4) | u64::from(d),
                            digits: digits + 1,
                            ext: false,
                        };
                    }
                }
                State::SizeLf { size } => {
                    if b != b'\n' {
                        return Err(ChunkError::SizeLineNotCrlf);
                    }
                    self.line = 0;
                    if size == 0 {
                        self.state = State::Trailer { line_start: true };
                    } else {
                        out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                        self.state = State::Data { left: size };
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::DataTooLong);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::DataNotCrlf);
                    }
                    out.extend_from_slice(b"\r\n");
                    self.state = State::Size {
                        size: 0,
                        digits: 0,
                        ext: false,
                    };
                }
                State::Trailer { line_start } => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(ChunkError::TrailersTooLong);
                    }
                    if b == b'\r' {
                        self.state = State::TrailerLf { last: line_start };
                    } else if b == b'\n' || (b.is_ascii_control() && b != b'\t') {
                        return Err(ChunkError::BadTrailerByte);
                    } else {
                        self.state = State::Trailer { line_start: false };
                    }
                }
                State::TrailerLf { last } => {
                    if b != b'\n' {
                        return Err(ChunkError::TrailerNotCrlf);
                    }
                    if last {
                        out.extend_from_slice(b"0\r\n\r\n");
                        self.state = State::Done;
                        return Ok(i + 1);
                    }
                    self.state = State::Trailer { line_start: true };
                }
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the re-encoding and the bytes
    /// consumed, or the error.
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut c = Chunked::new();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step) {
            let n = c.feed(piece, &mut out)?;
            used += n;
            if c.done() {
                break;
            }
            assert_eq!(
                n,
                piece.len(),
                "a body that did not end consumes all it gets"
            );
        }
        Ok((out, used))
    }

    #[test]
    fn bodies_end_exactly_where_the_last_chunk_ends_however_they_are_split() {
        let body = b"4;name=value\r\nWiki\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
        let next = b"GET http://other.example/ HTTP/1.1\r\n\r\n";
        let input = [&body[..], &next[..]].concat();
        for step in [1, 2, 3, 7, 64, input.len()] {
            let (out, used) = decode(&input, step).expect("valid");
            assert_eq!(used, body.len(), "step {step}");
            assert_eq!(
                out, b"4\r\nWiki\r\na\r\n0123456789\r\n0\r\n\r\n",
                "step {step}"
            );
        }
    }

    #[test]
    fn malformed_chunking_is_an_error() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b" 1\r\n",
            b"1\nA\r\n",
            b"1\r\nAB\r\n",
            b"1\r\nA\n",
            b"11111111111111111\r\n",
            b"0\r\nX: \x01\r\n\r\n",
            b"0\r\nX: y\n\n",
            b";ext\r\n",
            b"1;\x00\r\n",
        ] {
            assert!(
                decode(bad, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_SIZE_LINE));
        assert!(decode(long.as_bytes(), 100).is_err());
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let mut c = Chunked::new();
        let mut out = Vec::new();
        assert_eq!(c.feed(b"5\r\nab", &mut out), Ok(5));
        assert!(!c.done());
        assert_eq!(out, b"5\r\nab");
    }
}
