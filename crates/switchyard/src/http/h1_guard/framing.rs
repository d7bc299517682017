//! Following a stream of HTTP/1.1 request bytes across keep-alive requests, so the guard
//! knows where each head begins: a head is held back until [`super::head::inspect`] passes
//! it; body bytes (by length, or chunk by chunk with the chunk-size lines and trailers
//! checked for size) flow straight on; after an upgrade nothing more is inspected. Pure.

use bytes::{Buf, BytesMut};
use http::StatusCode;

use super::head::{self, BodyFraming, HeadLimits, Verdict};
use crate::http::error::ProxyError;

/// The longest chunk-size line accepted (with extensions).
const MAX_CHUNK_LINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a size line; `line` bytes so far.
    Size {
        line: usize,
        size: u64,
        digits: bool,
        ext: bool,
    },
    /// Chunk data left.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// Trailer lines; `line` bytes of the current one, `total` of the section.
    Trailers { line: usize, total: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    Chunked(Chunk),
    Passthrough,
}

impl State {
    /// Where the stream stands once a head passed.
    fn after_head(summary: &head::HeadSummary) -> State {
        if summary.upgrade {
            return State::Passthrough;
        }
        match summary.body {
            BodyFraming::None => State::Head,
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::Chunked(Chunk::Size {
                line: 0,
                size: 0,
                digits: false,
                ext: false,
            }),
        }
    }
}

/// What feeding bytes produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// These bytes may be handed on (possibly none yet).
    Forward(BytesMut),
    /// The stream broke a rule; nothing after the last forwarded byte may be handed on.
    Reject(ProxyError),
}

/// The position of one connection's request stream.
#[derive(Debug)]
pub struct Framing {
    limits: HeadLimits,
    state: State,
    held: BytesMut,
}

impl Framing {
    /// At the start of a connection.
    pub fn new(limits: HeadLimits) -> Framing {
        Framing {
            limits,
            state: State::Head,
            held: BytesMut::new(),
        }
    }

    /// Whether part of a head is being held (the head-read clock runs).
    pub fn holds_head_bytes(&self) -> bool {
        self.state == State::Head && !self.held.is_empty()
    }

    /// Whether the stream sits between requests with nothing held.
    pub fn between_requests(&self) -> bool {
        self.state == State::Head && self.held.is_empty()
    }

    /// Feeds `input`, returning what may be handed on now.
    pub fn advance(&mut self, input: &[u8]) -> Step {
        let mut out = BytesMut::new();
        match self.advance_into(input, &mut out) {
            Ok(()) => Step::Forward(out),
            Err(error) => Step::Reject(error),
        }
    }

    /// [`Framing::advance`], appending what may be handed on to `out`; on a broken rule,
    /// `out` holds what was passed before it.
    pub fn advance_into(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), ProxyError> {
        let mut input = input;
        loop {
            match self.state {
                State::Passthrough => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Length(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Length(left)
                    };
                    if input.is_empty() {
                        return Ok(());
                    }
                }
                State::Chunked(chunk) => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    match self.chunk_step(chunk, &mut input, out) {
                        Ok(()) => {}
                        Err(error) => return Err(error),
                    }
                }
                State::Head if self.held.is_empty() => {
                    // The usual case: a whole head arrived in one read. It is checked
                    // where it lies and passed on, never copied into `held`.
                    if input.is_empty() {
                        return Ok(());
                    }
                    match head::inspect(input, &self.limits) {
                        Verdict::Partial => {
                            self.held.extend_from_slice(input);
                            return Ok(());
                        }
                        Verdict::Reject(error) => return Err(error),
                        Verdict::Complete(summary) => {
                            out.extend_from_slice(&input[..summary.len]);
                            input = &input[summary.len..];
                            self.state = State::after_head(&summary);
                            if input.is_empty() {
                                return Ok(());
                            }
                        }
                    }
                }
                State::Head => {
                    self.held.extend_from_slice(input);
                    if self.held.is_empty() {
                        return Ok(());
                    }
                    match head::inspect(&self.held, &self.limits) {
                        Verdict::Partial => return Ok(()),
                        Verdict::Reject(error) => return Err(error),
                        Verdict::Complete(summary) => {
                            let head = self.held.split_to(summary.len);
                            out.extend_from_slice(&head);
                            self.state = State::after_head(&summary);
                            // What followed the head is processed in the new state.
                            let rest = std::mem::take(&mut self.held);
                            if rest.is_empty() {
                                return Ok(());
                            }
                            return self.advance_into(&rest, out);
                        }
                    }
                }
            }
        }
    }

    /// Consumes part of `input` in chunked state, forwarding what it consumed.
    fn chunk_step(
        &mut self,
        chunk: Chunk,
        input: &mut &[u8],
        out: &mut BytesMut,
    ) -> Result<(), ProxyError> {
        let bad = |details| ProxyError::bad_request(details);
        match chunk {
            Chunk::Data(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                out.extend_from_slice(&input[..n]);
                input.advance(n);
                let left = left - n as u64;
                self.state = State::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                return Ok(());
            }
            Chunk::DataEnd => {
                let byte = input[0];
                out.extend_from_slice(&input[..1]);
                input.advance(1);
                match byte {
                    b'\r' => {}
                    b'\n' => {
                        self.state = State::Chunked(Chunk::Size {
                            line: 0,
                            size: 0,
                            digits: false,
                            ext: false,
                        });
                    }
                    _ => return Err(bad("chunk data not followed by CRLF")),
                }
                return Ok(());
            }
            Chunk::Size { .. } | Chunk::Trailers { .. } => {}
        }
        let byte = input[0];
        out.extend_from_slice(&input[..1]);
        input.advance(1);
        match chunk {
            Chunk::Size {
                line,
                size,
                digits,
                ext,
            } => {
                if line + 1 > MAX_CHUNK_LINE {
                    return Err(bad("chunk size line too long"));
                }
                let next = |size, digits, ext| {
                    State::Chunked(Chunk::Size {
                        line: line + 1,
                        size,
                        digits,
                        ext,
                    })
                };
                self.state = match byte {
                    b'\n' => {
                        if !digits {
                            return Err(bad("chunk size missing"));
                        }
                        if size == 0 {
                            State::Chunked(Chunk::Trailers { line: 0, total: 0 })
                        } else {
                            State::Chunked(Chunk::Data(size))
                        }
                    }
                    b'\r' => next(size, digits, ext),
                    _ if ext => next(size, digits, ext),
                    b';' | b' ' | b'\t' if digits => next(size, digits, true),
                    _ => {
                        let digit = (byte as char)
                            .to_digit(16)
                            .ok_or_else(|| bad("invalid chunk size"))?;
                        let size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(digit)))
                            .ok_or_else(|| bad("chunk size overflows"))?;
                        next(size, true, ext)
                    }
                };
            }
            Chunk::Trailers { line, total } => {
                if total + 1 > self.limits.max_header_bytes {
                    return Err(ProxyError::Request {
                        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        details: "trailers past max_header_bytes",
                    });
                }
                self.state = match byte {
                    b'\n' if line == 0 => State::Head,
                    b'\n' => State::Chunked(Chunk::Trailers {
                        line: 0,
                        total: total + 1,
                    }),
                    b'\r' => State::Chunked(Chunk::Trailers {
                        line,
                        total: total + 1,
                    }),
                    _ => State::Chunked(Chunk::Trailers {
                        line: line + 1,
                        total: total + 1,
                    }),
                };
            }
            Chunk::Data(_) | Chunk::DataEnd => {}
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 1024,
        max_headers: 100,
    };

    fn feed_all(framing: &mut Framing, bytes: &[u8]) -> Result<Vec<u8>, ProxyError> {
        match framing.advance(bytes) {
            Step::Forward(out) => Ok(out.to_vec()),
            Step::Reject(error) => Err(error),
        }
    }

    #[test]
    fn two_pipelined_requests_with_bodies_pass_whole() {
        let stream = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut framing = Framing::new(LIMITS);
        assert_eq!(feed_all(&mut framing, stream).unwrap(), stream.to_vec());
        assert!(framing.between_requests());
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers_then_another_request() {
        let stream = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut framing = Framing::new(LIMITS);
        assert_eq!(feed_all(&mut framing, stream).unwrap(), stream.to_vec());
        assert!(framing.between_requests());
    }

    #[test]
    fn a_request_smuggled_in_a_body_is_refused() {
        let stream = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut framing = Framing::new(LIMITS);
        assert!(feed_all(&mut framing, stream).is_err());
    }

    #[test]
    fn byte_by_byte_reads_give_the_same_bytes() {
        let stream = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut framing = Framing::new(LIMITS);
        let mut out = Vec::new();
        for byte in stream.iter() {
            out.extend(feed_all(&mut framing, &[*byte]).unwrap());
        }
        assert_eq!(out, stream.to_vec());
        assert!(framing.between_requests());
    }

    #[test]
    fn a_second_head_breaking_a_rule_is_refused_after_the_first_passed() {
        let stream =
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n";
        let mut framing = Framing::new(LIMITS);
        let first_len = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".len();
        let first = feed_all(&mut framing, &stream[..first_len]).unwrap();
        assert_eq!(first, stream[..first_len].to_vec());
        assert!(feed_all(&mut framing, &stream[first_len..]).is_err());
    }

    #[test]
    fn bad_chunk_sizes_are_refused() {
        for body in [&b"zz\r\n"[..], b"\r\n", b"fffffffffffffffffff\r\n"] {
            let mut framing = Framing::new(LIMITS);
            let mut stream =
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            stream.extend_from_slice(body);
            assert!(feed_all(&mut framing, &stream).is_err(), "{body:?}");
        }
    }

    #[test]
    fn everything_after_an_upgrade_passes() {
        let stream = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello garbage \r\n";
        let mut framing = Framing::new(LIMITS);
        assert_eq!(feed_all(&mut framing, stream).unwrap(), stream.to_vec());
    }
}
