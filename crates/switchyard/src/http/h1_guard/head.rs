//! Checking one HTTP/1.1 request head before anything acts on it (SPEC 4 "Request
//! hygiene"): ambiguous framing (Content-Length with Transfer-Encoding, differing lengths,
//! codings that do not end in chunked), obsolete line folding, bare CR, invalid names and
//! values, request targets of the wrong form, a missing or repeated Host, and the size
//! limits. Pure: bytes in, a verdict out.

use std::mem::MaybeUninit;

use http::StatusCode;

use crate::http::error::ProxyError;

/// The limits a head is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Request line plus header lines, in bytes (`max_header_bytes`).
    pub max_header_bytes: usize,
    /// Header fields (SPEC: 100).
    pub max_headers: usize,
}

/// How the body after a head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A valid head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadSummary {
    /// Bytes of the head, leading empty lines and the final empty line included.
    pub len: usize,
    /// The body's framing.
    pub body: BodyFraming,
    /// The connection changes protocol after this request (Upgrade, CONNECT).
    pub upgrade: bool,
}

/// What [`inspect`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// More bytes are needed.
    Partial,
    /// A complete, valid head.
    Complete(HeadSummary),
    /// A head that must be refused, and how.
    Reject(ProxyError),
}

const fn reject(status: StatusCode, details: &'static str) -> Verdict {
    Verdict::Reject(ProxyError::Request { status, details })
}

const fn bad(details: &'static str) -> Verdict {
    reject(StatusCode::BAD_REQUEST, details)
}

const TOO_LARGE: StatusCode = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;

/// Codings a recipient may see before `chunked` (RFC 9112 7, the IANA registry).
const KNOWN_CODINGS: [&str; 7] = [
    "chunked",
    "gzip",
    "deflate",
    "compress",
    "x-gzip",
    "x-compress",
    "identity",
];

const STACK_HEADERS: usize = 128;

/// Checks the head at the start of `buf`.
pub fn inspect(buf: &[u8], limits: &HeadLimits) -> Verdict {
    // RFC 9112 2.2: a server should ignore at least one empty line before the request line.
    let mut skipped = 0;
    for _ in 0..2 {
        if buf[skipped..].starts_with(b"\r\n") {
            skipped += 2;
        } else if buf[skipped..].starts_with(b"\n") {
            skipped += 1;
        }
    }
    let head = &buf[skipped..];
    // One slot past the limit, so "too many" is told from "exactly the limit"; on the
    // stack for the usual limit (SPEC: 100 fields), so a head costs no allocation.
    // Left uninitialised: httparse writes the slots it fills, and filling 128 empty ones
    // per head would cost more than the parse.
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.max_headers < STACK_HEADERS {
        &mut stack[..=limits.max_headers]
    } else {
        heap.resize(limits.max_headers + 1, MaybeUninit::uninit());
        &mut heap
    };
    let mut request = httparse::Request::new(&mut []);
    let parsed = match request.parse_with_uninit_headers(head, slots) {
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limits.max_header_bytes {
                reject(TOO_LARGE, "max_header_bytes")
            } else {
                Verdict::Partial
            };
        }
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::TooManyHeaders) => return reject(TOO_LARGE, "too many header fields"),
        Err(httparse::Error::HeaderName) => return bad("invalid header name"),
        Err(httparse::Error::HeaderValue) => return bad("invalid header value"),
        Err(httparse::Error::NewLine) => return bad("bare CR or invalid line ending"),
        Err(httparse::Error::Token) => return bad("invalid method or token"),
        Err(httparse::Error::Version) => return bad("invalid HTTP version"),
        Err(_) => return bad("malformed request head"),
    };
    if skipped + parsed > limits.max_header_bytes {
        return reject(TOO_LARGE, "max_header_bytes");
    }
    if request.headers.len() > limits.max_headers {
        return reject(TOO_LARGE, "too many header fields");
    }
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return bad("malformed request line");
    };
    if !target_form_ok(method, target) {
        return bad("request target form");
    }
    match check_fields(request.headers, version == 1, method) {
        Ok((body, upgrade)) => Verdict::Complete(HeadSummary {
            len: skipped + parsed,
            body,
            upgrade,
        }),
        Err(verdict) => verdict,
    }
}

fn target_form_ok(method: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return true;
    }
    if target == "*" {
        return method == "OPTIONS";
    }
    if method == "CONNECT" {
        return !target.contains('/') && target.contains(':');
    }
    let lower = target
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn check_fields(
    headers: &[httparse::Header<'_>],
    http11: bool,
    method: &str,
) -> Result<(BodyFraming, bool), Verdict> {
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut codings: Vec<String> = Vec::new();
    let mut transfer_encoding = false;
    let mut upgrade_header = false;
    let mut connection_upgrade = false;
    for header in headers {
        let name = header.name;
        let value = std::str::from_utf8(header.value).unwrap_or("");
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            for item in value.split(',') {
                let item = item.trim();
                if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("invalid content-length"));
                }
                let Ok(n) = item.parse::<u64>() else {
                    return Err(bad("invalid content-length"));
                };
                if length.is_some_and(|previous| previous != n) {
                    return Err(bad("differing content-length values"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for coding in value.split(',') {
                let coding = coding.trim().to_ascii_lowercase();
                if !coding.is_empty() {
                    codings.push(coding);
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_header = true;
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        }
    }
    if http11 && hosts != 1 {
        return Err(bad(if hosts == 0 {
            "missing host"
        } else {
            "repeated host"
        }));
    }
    let body = if transfer_encoding {
        if length.is_some() {
            return Err(bad("content-length with transfer-encoding"));
        }
        if !http11 {
            return Err(bad("transfer-encoding on HTTP/1.0"));
        }
        if codings
            .iter()
            .any(|c| !KNOWN_CODINGS.contains(&c.split(';').next().unwrap_or("").trim()))
        {
            return Err(reject(
                StatusCode::NOT_IMPLEMENTED,
                "unknown transfer coding",
            ));
        }
        let chunked = codings.iter().filter(|c| *c == "chunked").count();
        if chunked != 1 || codings.last().map(String::as_str) != Some("chunked") {
            return Err(bad("chunked must be the final coding, once"));
        }
        BodyFraming::Chunked
    } else {
        match length {
            Some(n) if n > 0 => BodyFraming::Length(n),
            _ => BodyFraming::None,
        }
    };
    let upgrade = method == "CONNECT" || (upgrade_header && connection_upgrade);
    Ok((body, upgrade))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 1024,
        max_headers: 100,
    };

    fn status(bytes: &[u8]) -> Option<u16> {
        match inspect(bytes, &LIMITS) {
            Verdict::Reject(error) => Some(error.status().as_u16()),
            Verdict::Complete(_) => None,
            Verdict::Partial => Some(0),
        }
    }

    #[test]
    fn a_plain_get_is_complete_with_its_length() {
        let head = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
        assert_eq!(
            inspect(head, &LIMITS),
            Verdict::Complete(HeadSummary {
                len: head.len() - 4,
                body: BodyFraming::None,
                upgrade: false
            })
        );
    }

    #[test]
    fn bodies_are_framed_by_length_or_chunked() {
        let length = inspect(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
            &LIMITS,
        );
        assert!(matches!(length, Verdict::Complete(s) if s.body == BodyFraming::Length(5)));
        let chunked = inspect(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            &LIMITS,
        );
        assert!(matches!(chunked, Verdict::Complete(s) if s.body == BodyFraming::Chunked));
    }

    #[test]
    fn ambiguous_framing_is_a_400() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(status(head), Some(400), "{}", String::from_utf8_lossy(head));
        }
        let same = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(status(same), None);
    }

    #[test]
    fn an_unknown_transfer_coding_is_a_501() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: bogus, chunked\r\n\r\n";
        assert_eq!(status(head), Some(501));
    }

    #[test]
    fn malformed_lines_are_a_400() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET nothing HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert_eq!(status(head), Some(400), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn accepted_target_forms() {
        for head in [
            &b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
        ] {
            assert_eq!(status(head), None, "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn heads_past_the_limits_are_a_431_even_before_they_end() {
        let long = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "a".repeat(2000));
        assert_eq!(status(long.as_bytes()), Some(431));
        let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..100 {
            many.push_str(&format!("X{i}: 1\r\n"));
        }
        many.push_str("\r\n");
        let limits = HeadLimits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
        };
        assert!(matches!(
            inspect(many.as_bytes(), &limits),
            Verdict::Reject(e) if e.status().as_u16() == 431
        ));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost"), Some(0));
    }

    #[test]
    fn upgrades_are_recognised() {
        let head = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert!(matches!(inspect(head, &LIMITS), Verdict::Complete(s) if s.upgrade));
    }
}
