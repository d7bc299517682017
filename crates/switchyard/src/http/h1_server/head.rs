//! Reading one HTTP/1.1 request head, checked before anything acts on it (SPEC 4 "Request
//! hygiene"): ambiguous framing (Content-Length with Transfer-Encoding, differing lengths,
//! codings that do not end in chunked), obsolete line folding, bare CR, invalid names and
//! values, request targets of the wrong form, a missing or repeated Host, and the size
//! limits. The one parse both checks the head and builds the request from it: the header
//! values share the head's bytes. Pure: bytes in, a verdict out.

use std::mem::MaybeUninit;

use bytes::BytesMut;

use http::{Method, Request, StatusCode, Uri, Version};

use crate::http::body::RequestBody;
use crate::http::error::ProxyError;
use crate::http::h1_codec::{self, ConnectionTokens, KnownField, known_field};

/// The limits a head is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Request line plus header lines, in bytes (`max_header_bytes`).
    pub max_header_bytes: usize,
    /// Header fields (SPEC: 100; never more than [`h1_codec::MAX_HEADERS`]).
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

/// A valid request head.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, target, version and header fields, in the box the request travels in
    /// through the proxy (its body, empty here, is set when the body starts).
    pub request: Box<Request<RequestBody>>,
    /// The body's framing.
    pub body: BodyFraming,
    /// The client asks to switch protocols (`Upgrade` with `Connection: upgrade`).
    pub upgrade: bool,
    /// A CONNECT request: whatever follows is not HTTP.
    pub connect: bool,
    /// The client lets the connection carry another request after this one (RFC 9112
    /// 9.3: HTTP/1.1 unless `close`, HTTP/1.0 only with `keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on a request with a body: the client may wait for a
    /// `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

/// What [`parse`] found.
#[derive(Debug)]
pub enum Verdict {
    /// More bytes are needed.
    Partial,
    /// A complete, valid head (its bytes consumed from the buffer).
    Complete(RequestHead),
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

/// Fields the proxy adds to a request on its way upstream (request id, the forwarding
/// fields, `Via`): room made when the map is built, so it never grows on the way.
const REQUEST_ROOM: usize = 8;

/// What the head's fields say about framing and the connection, read in one pass.
#[derive(Debug)]
struct Fields {
    body: BodyFraming,
    upgrade: bool,
    expect_continue: bool,
    connection: ConnectionTokens,
}

/// Reads the head at the front of `buf`, consuming it (and up to two empty lines before
/// it) when it is complete and valid.
pub fn parse(buf: &mut BytesMut, limits: &HeadLimits) -> Verdict {
    // RFC 9112 2.2: a server should ignore at least one empty line before the request line.
    let mut skipped = 0;
    for _ in 0..2 {
        if buf[skipped..].starts_with(b"\r\n") {
            skipped += 2;
        } else if buf[skipped..].starts_with(b"\n") {
            skipped += 1;
        }
    }
    let max_headers = limits.max_headers.min(h1_codec::MAX_HEADERS);
    let head = &buf[skipped..];
    // One slot past the limit, so "too many" is told from "exactly the limit"; on the
    // stack, so a head costs no allocation. Left uninitialised: httparse writes the slots
    // it fills, and filling them all per head would cost more than the parse.
    let mut slots =
        [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; h1_codec::MAX_HEADERS + 1];
    let mut request = httparse::Request::new(&mut []);
    let parsed = match request.parse_with_uninit_headers(head, &mut slots[..=max_headers]) {
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
    if request.headers.len() > max_headers {
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
    let http11 = version == 1;
    let fields = match check_fields(request.headers, http11, method) {
        Ok(fields) => fields,
        Err(verdict) => return verdict,
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return bad("invalid method or token");
    };
    // Where the target and the fields lie, so they can share the head's bytes.
    let target_at = target.as_ptr() as usize - head.as_ptr() as usize;
    let target_range = skipped + target_at..skipped + target_at + target.len();
    // `Connection: keep-alive` / `close` spoke to this connection only: acted on here
    // (keep-alive), so left out of the request, as is a `Keep-Alive` beside it.
    let consumed = fields.connection.only_management();
    let spans = h1_codec::Spans::of(buf, request.headers, |name| {
        !(consumed
            && (name.eq_ignore_ascii_case(b"connection")
                || name.eq_ignore_ascii_case(b"keep-alive")))
    });
    let head = buf.split_to(skipped + parsed).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target_range)) else {
        return bad("request target form");
    };
    let Some(headers) = h1_codec::header_map(&head, spans.as_slice(), REQUEST_ROOM) else {
        return bad("invalid header name");
    };
    let keep_alive = fields.connection.keep_alive(!http11);
    let connect = method == Method::CONNECT;
    let mut request = Box::new(Request::new(RequestBody::empty()));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = if http11 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    *request.headers_mut() = headers;
    Verdict::Complete(RequestHead {
        request,
        body: if connect {
            BodyFraming::None
        } else {
            fields.body
        },
        upgrade: fields.upgrade && http11,
        connect,
        keep_alive,
        expect_continue: fields.expect_continue && http11 && fields.body != BodyFraming::None,
    })
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
) -> Result<Fields, Verdict> {
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut codings: Vec<String> = Vec::new();
    let mut transfer_encoding = false;
    let mut upgrade_header = false;
    let mut connection = ConnectionTokens::default();
    let mut expect_continue = false;
    // Only the values read here are checked as text.
    for header in headers {
        let text = || std::str::from_utf8(header.value).unwrap_or("");
        match known_field(header.name.as_bytes()) {
            Some(KnownField::Host) => hosts += 1,
            Some(KnownField::Expect) => {
                expect_continue |= text().trim().eq_ignore_ascii_case("100-continue");
            }
            Some(KnownField::Upgrade) => upgrade_header = true,
            Some(KnownField::Connection) => connection.add(header.value),
            Some(KnownField::ContentLength) => {
                for item in text().split(',') {
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
            }
            Some(KnownField::TransferEncoding) => {
                transfer_encoding = true;
                for coding in text().split(',') {
                    let coding = coding.trim().to_ascii_lowercase();
                    if !coding.is_empty() {
                        codings.push(coding);
                    }
                }
            }
            _ => {}
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
    Ok(Fields {
        body,
        upgrade: method != "CONNECT" && upgrade_header && connection.lists_upgrade(),
        expect_continue,
        connection,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::header::CONNECTION;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 1024,
        max_headers: 100,
    };

    fn inspect(bytes: &[u8], limits: &HeadLimits) -> Verdict {
        parse(&mut BytesMut::from(bytes), limits)
    }

    fn status(bytes: &[u8]) -> Option<u16> {
        match inspect(bytes, &LIMITS) {
            Verdict::Reject(error) => Some(error.status().as_u16()),
            Verdict::Complete(_) => None,
            Verdict::Partial => Some(0),
        }
    }

    #[test]
    fn a_plain_get_is_consumed_and_built_into_a_request() {
        let mut buf =
            BytesMut::from(&b"\r\nGET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Y: z\r\n\r\nrest"[..]);
        let Verdict::Complete(head) = parse(&mut buf, &LIMITS) else {
            panic!("not complete");
        };
        assert_eq!(&buf[..], b"rest");
        assert_eq!(*head.request.method(), Method::GET);
        assert_eq!(*head.request.uri(), "/a?b=1");
        assert_eq!(head.request.version(), Version::HTTP_11);
        assert_eq!(head.request.headers()["host"], "x");
        assert_eq!(head.request.headers()["x-y"], "z");
        assert_eq!(head.body, BodyFraming::None);
        assert!(head.keep_alive && !head.upgrade && !head.connect && !head.expect_continue);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_tokens_are_consumed() {
        let cases: [(&[u8], bool); 4] = [
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        ];
        for (bytes, keep_alive) in cases {
            let Verdict::Complete(head) = inspect(bytes, &LIMITS) else {
                panic!("not complete");
            };
            assert_eq!(
                head.keep_alive,
                keep_alive,
                "{}",
                String::from_utf8_lossy(bytes)
            );
            assert!(!head.request.headers().contains_key(CONNECTION));
        }
        let nominating = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n";
        let Verdict::Complete(head) = inspect(nominating, &LIMITS) else {
            panic!("not complete");
        };
        assert!(
            head.request.headers().contains_key(CONNECTION),
            "left for the hop-by-hop pass"
        );
    }

    #[test]
    fn expect_continue_counts_only_with_a_body() {
        let with_body =
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert!(matches!(inspect(with_body, &LIMITS), Verdict::Complete(h) if h.expect_continue));
        let without = b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n";
        assert!(matches!(inspect(without, &LIMITS), Verdict::Complete(h) if !h.expect_continue));
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
        let connect = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n";
        assert!(
            matches!(inspect(connect, &LIMITS), Verdict::Complete(s) if s.connect && !s.upgrade)
        );
    }
}
