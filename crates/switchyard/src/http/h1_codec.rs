//! The bytes of HTTP/1.1 that both sides of the proxy share. The upstream client
//! ([`super::h1_client`]) writes request heads and framed bodies and reads response heads
//! and how their bodies are delimited (RFC 9112 section 6.3); the client-facing server
//! ([`super::h1_server`]) reads request heads and bodies and writes framed responses. Both
//! use the same header-map builder, `Connection` reading, chunk encoder and chunked decoder
//! from here. Pure: no I/O, no clock, so every rule is tested with exact bytes.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

use super::added_fields::AddedFields;
use super::forwarding;
use super::raw_fields::{MAX_RAW_FIELDS, RawFields, RawSummary};

/// Header fields accepted in a response head or a trailer section.
pub const MAX_HEADERS: usize = 100;
/// The largest response head accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024 - 1;
/// The longest chunk-size line accepted (with extensions).
const MAX_CHUNK_LINE: usize = 1024;
/// Fields the proxy may add to a response on its way to the client (request id, sticky
/// cookie, route edits): room made when the map is built.
const RESPONSE_ROOM: usize = 4;
/// The largest trailer section accepted, in bytes.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// What a peer sent that cannot be read as HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The head does not parse (or has more than [`MAX_HEADERS`] fields).
    #[error("malformed response head")]
    Head,
    /// The head is larger than [`MAX_HEAD_BYTES`].
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// `Content-Length` is not a number, or repeated with different values.
    #[error("invalid Content-Length in response")]
    ContentLength,
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedSwitch,
    /// A chunk-size line, chunk delimiter or trailer section is malformed.
    #[error("malformed chunked body")]
    Chunked,
}

/// How a request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

impl RequestFraming {
    /// The framing of a request with `headers` (hop-by-hop fields already removed) whose
    /// body is `end_stream` already or, when known, exactly `exact` bytes long. A
    /// `Content-Length` the request carries is kept; otherwise a known length is declared,
    /// and an unknown one is chunked. `None` when the request's `Content-Length` is not a
    /// number.
    pub fn of(headers: &HeaderMap, end_stream: bool, exact: Option<u64>) -> Option<Self> {
        if let Some(value) = headers.get(CONTENT_LENGTH) {
            return parse_length(value.as_bytes()).map(RequestFraming::Length);
        }
        Some(match exact {
            _ if end_stream => RequestFraming::Empty,
            Some(0) => RequestFraming::Empty,
            Some(n) => RequestFraming::Length(n),
            None => RequestFraming::Chunked,
        })
    }
}

/// The fields the HTTP/1.1 codec and servers act on themselves. One classifier serves the
/// request parse, the upstream response parse and the response writer: the name's length
/// rules out most names before any bytes are compared (any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownField {
    /// `Host`.
    Host,
    /// `Date`.
    Date,
    /// `Expect`.
    Expect,
    /// `Upgrade`.
    Upgrade,
    /// `Connection`.
    Connection,
    /// `Keep-Alive`.
    KeepAlive,
    /// `Content-Length`.
    ContentLength,
    /// `Transfer-Encoding`.
    TransferEncoding,
}

/// Which [`KnownField`] `name` (any case) is, if any. (Inlined: every field of every
/// message in both directions is asked.)
#[inline]
pub fn known_field(name: &[u8]) -> Option<KnownField> {
    let is = |spelled: &[u8]| name.eq_ignore_ascii_case(spelled);
    Some(match name.len() {
        4 if is(b"host") => KnownField::Host,
        4 if is(b"date") => KnownField::Date,
        6 if is(b"expect") => KnownField::Expect,
        7 if is(b"upgrade") => KnownField::Upgrade,
        10 if is(b"connection") => KnownField::Connection,
        10 if is(b"keep-alive") => KnownField::KeepAlive,
        14 if is(b"content-length") => KnownField::ContentLength,
        17 if is(b"transfer-encoding") => KnownField::TransferEncoding,
        _ => return None,
    })
}

/// Appends the request head to `out`: request line, `headers`, the `added` fields (names
/// the map does not hold, module `added_fields`), and the framing field the body needs
/// when the request did not carry one. (Plain loops, no size pre-pass: this runs for
/// every request, and the connection's buffer is kept from one request to the next, so
/// it already has room.)
pub fn encode_request_head(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    added: &AddedFields,
    framing: RequestFraming,
    out: &mut BytesMut,
) {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    out.reserve(method.as_str().len() + target.len() + 64 * headers.len() + 256);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    added.for_each(|name, value| put_field(out, name.as_bytes(), value.as_bytes()));
    match framing {
        RequestFraming::Length(n) if !headers.contains_key(CONTENT_LENGTH) => {
            put_field(
                out,
                b"content-length",
                itoa::Buffer::new().format(n).as_bytes(),
            );
        }
        RequestFraming::Chunked => put_field(out, b"transfer-encoding", b"chunked"),
        RequestFraming::Length(_) | RequestFraming::Empty => {}
    }
    out.put_slice(b"\r\n");
}

/// Appends `name: value` and its line end to `out` (heads in both directions).
pub fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// A body frame up to this size is copied behind its framing into the buffer that goes out
/// in one write; a larger one is written from its own buffer.
pub const COALESCE: usize = 16 * 1024;

/// The largest write buffer a connection keeps for its next message (a head and the
/// coalesced frames behind it fit).
const KEPT_WRITE_BUFFER: usize = 2 * COALESCE;

/// `buf`, written out, made empty for the connection's next message (so encoding a head
/// allocates nothing); one grown past [`KEPT_WRITE_BUFFER`] is let go.
pub fn emptied(mut buf: BytesMut) -> BytesMut {
    if buf.capacity() > KEPT_WRITE_BUFFER {
        return BytesMut::new();
    }
    buf.clear();
    buf
}

/// How a body's frames go on the wire, in either direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// Nothing may follow the head (HEAD, 204, 304, an empty request): frames are dropped.
    Discard,
    /// Exactly this many bytes are still owed (`Content-Length`).
    Length(u64),
    /// Chunked.
    Chunked,
    /// As they come, delimited by the close.
    Raw,
}

/// Why a body did not fit its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// More bytes than the declared length.
    #[error("the body ran past its Content-Length")]
    Overlong,
    /// The body ended before the declared length.
    #[error("the body ended before its Content-Length")]
    Short,
}

/// A frame too large to copy: written after the buffer, then `tail`.
#[derive(Debug)]
pub struct LargeFrame {
    /// The frame's bytes.
    pub data: Bytes,
    /// What follows them on the wire (the CRLF after a chunk).
    pub tail: &'static [u8],
}

impl BodyEncoding {
    /// Frames `data`: appended to `out` with its framing when small, else its framing goes
    /// into `out` and the frame comes back to be written after it.
    pub fn data(
        &mut self,
        data: Bytes,
        out: &mut BytesMut,
    ) -> Result<Option<LargeFrame>, EncodeError> {
        if data.is_empty() {
            return Ok(None);
        }
        let tail: &'static [u8] = match self {
            BodyEncoding::Discard => return Ok(None),
            BodyEncoding::Length(left) => {
                *left = left
                    .checked_sub(data.len() as u64)
                    .ok_or(EncodeError::Overlong)?;
                b""
            }
            BodyEncoding::Chunked => {
                encode_chunk_size(data.len(), out);
                b"\r\n"
            }
            BodyEncoding::Raw => b"",
        };
        if data.len() <= COALESCE {
            out.extend_from_slice(&data);
            out.extend_from_slice(tail);
            return Ok(None);
        }
        Ok(Some(LargeFrame { data, tail }))
    }

    /// Appends the body's end to `out`: the last chunk and `trailers` when chunked (other
    /// framings carry no trailers); an error when a declared length was not met.
    pub fn end(&self, trailers: Option<&HeaderMap>, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            BodyEncoding::Chunked => encode_last_chunk(trailers, out),
            BodyEncoding::Length(left) if *left > 0 => return Err(EncodeError::Short),
            BodyEncoding::Length(_) | BodyEncoding::Discard | BodyEncoding::Raw => {}
        }
        Ok(())
    }

    /// Whether a declared length was met, so nothing more may follow.
    pub fn is_full(&self) -> bool {
        *self == BodyEncoding::Length(0)
    }
}

/// Appends the chunk-size line of a `len`-byte chunk.
pub fn encode_chunk_size(len: usize, out: &mut BytesMut) {
    use std::fmt::Write;
    let _ = write!(out, "{len:x}\r\n");
}

/// Appends the last chunk and `trailers` (none: an empty trailer section).
pub fn encode_last_chunk(trailers: Option<&HeaderMap>, out: &mut BytesMut) {
    out.put_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Everything until the upstream closes.
    UntilClose,
}

/// A response head, parsed.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status.
    pub status: StatusCode,
    /// The header fields (values share the head's bytes); empty when they are `raw`.
    pub headers: HeaderMap,
    /// The header fields as they came, when none needs stripping (module `raw_fields`;
    /// boxed, as it travels with the body through several moves).
    pub raw: Option<Box<RawFields>>,
    /// How the body is delimited.
    pub framing: ResponseFraming,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Parses a response head at the front of `buf`, consuming it when complete; `Ok(None)`
/// when more bytes are needed. `head_request`: the request was HEAD (no body follows,
/// whatever the fields say).
pub fn parse_response_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, WireError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(WireError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(WireError::Head),
    };
    if len > MAX_HEAD_BYTES {
        return Err(WireError::HeadTooLarge);
    }
    let code = response.code.ok_or(WireError::Head)?;
    let status = StatusCode::from_u16(code).map_err(|_| WireError::Head)?;
    let http10 = response.version == Some(0);
    let fields = FramingFields::of(response.headers);
    let (framing, keep_alive) = framing_of(
        status,
        &fields,
        head_request,
        fields.connection.keep_alive(http10),
    )?;
    let spans = Spans::of(buf, response.headers, |name| {
        !fields.consumed(name, framing)
    });
    let head = buf.split_to(len).freeze();
    let spans = spans.as_slice();
    // Passed on as they came unless a field is one the proxy must strip (module
    // `raw_fields`); then, as every request head, through a map.
    let (headers, raw) = if fields.pass_as_they_are() && spans.len() <= MAX_RAW_FIELDS {
        // A head is at most 64 KiB, so every span fits.
        let summary = fields.raw_summary(framing);
        let raw =
            RawFields::new(head, summary, spans.iter().map(Span::ranges)).ok_or(WireError::Head)?;
        // Room for the fields too: if the response goes to an HTTP/2 client they move into
        // the map, which then does not grow (a kept map's room costs nothing).
        let map = recycled_map(spans.len() + RESPONSE_ROOM);
        (map, Some(Box::new(raw)))
    } else {
        let headers = header_map(&head, spans, RESPONSE_ROOM).ok_or(WireError::Head)?;
        (headers, None)
    };
    Ok(Some(ResponseHead {
        status,
        headers,
        raw,
        framing,
        keep_alive,
    }))
}

/// Where a field's name and value lie in the buffer it was parsed from, as offsets and
/// lengths, so the values can share the head's bytes once it is split off.
#[derive(Debug, Clone, Copy, Default)]
pub struct Span {
    name: u32,
    name_len: u32,
    value: u32,
    value_len: u32,
}

/// How many spans a head's fields take without a heap allocation: more than most heads
/// carry, and small enough that clearing the room costs nothing next to the parse.
const INLINE_SPANS: usize = 24;

/// Where the kept fields of one parsed head lie ([`Span`]s, in order): on the stack for
/// the usual head, on the heap for a head with more than [`INLINE_SPANS`] fields (at most
/// [`MAX_HEADERS`]: callers parse with no more slots than that).
pub struct Spans {
    inline: [Span; INLINE_SPANS],
    len: usize,
    /// Every span, when there are more than fit inline (`inline` is then unused).
    spilled: Vec<Span>,
}

impl Spans {
    /// Where the `fields` (parsed from `buf`) whose names `keep` accepts lie.
    pub fn of(buf: &[u8], fields: &[httparse::Header<'_>], keep: impl Fn(&[u8]) -> bool) -> Spans {
        let base = buf.as_ptr() as usize;
        let offset = |part: &[u8]| u32::try_from(part.as_ptr() as usize - base).unwrap_or(u32::MAX);
        let length = |part: &[u8]| u32::try_from(part.len()).unwrap_or(u32::MAX);
        let mut spans = Spans {
            inline: [Span::default(); INLINE_SPANS],
            len: 0,
            spilled: Vec::new(),
        };
        if fields.len() > INLINE_SPANS {
            spans.spilled.reserve_exact(fields.len().min(MAX_HEADERS));
        }
        for field in fields.iter().filter(|field| keep(field.name.as_bytes())) {
            let span = Span {
                name: offset(field.name.as_bytes()),
                name_len: length(field.name.as_bytes()),
                value: offset(field.value),
                value_len: length(field.value),
            };
            if fields.len() > INLINE_SPANS {
                if spans.spilled.len() == MAX_HEADERS {
                    break;
                }
                spans.spilled.push(span);
            } else {
                spans.inline[spans.len] = span;
                spans.len += 1;
            }
        }
        spans
    }

    /// The spans, in the fields' order.
    pub fn as_slice(&self) -> &[Span] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }
}

impl Span {
    /// The byte ranges of the name and the value.
    pub fn ranges(&self) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        (
            range(self.name, self.name_len),
            range(self.value, self.value_len),
        )
    }
}

/// The byte range a span part covers.
fn range(start: u32, len: u32) -> std::ops::Range<usize> {
    let start = start as usize;
    start..start.saturating_add(len as usize)
}

/// The header map of the fields at `spans` in `head`, with room for `room` more fields
/// (what the proxy will add, so the map never grows on the way) (`None`: a name or value
/// that is not valid, which a head httparse accepted never has).
pub fn header_map(head: &Bytes, spans: &[Span], room: usize) -> Option<HeaderMap> {
    let mut headers = recycled_map(spans.len() + room);
    for span in spans {
        let (name, value) = span.ranges();
        let (name, value) = field_of(head, name, value)?;
        headers.append(name, value);
    }
    Some(headers)
}

/// The field whose name and value lie at `name` and `value` in `head` (the value shares
/// the head's bytes); `None` past the head's end or for a name or value that is not valid.
pub fn field_of(
    head: &Bytes,
    name: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
) -> Option<(HeaderName, HeaderValue)> {
    let name = HeaderName::from_bytes(head.get(name)?).ok()?;
    head.get(value.clone())?;
    let value = HeaderValue::from_maybe_shared(head.slice(value)).ok()?;
    Some((name, value))
}

/// How many cleared maps a thread keeps, and the largest it keeps (in fields): enough for
/// the requests in flight on one worker to find one, never a large one kept for good.
const KEPT_MAPS: usize = 64;
const KEPT_MAP_CAPACITY: usize = 48;

thread_local! {
    /// Header maps of HTTP/1.1 messages this thread finished, cleared. A map is two
    /// allocations (its index and its entries) and a proxied exchange builds two, so the
    /// maps of finished heads are kept for the next ones.
    static KEPT: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty header map with room for `fields` fields: a kept one when there is one.
pub fn recycled_map(fields: usize) -> HeaderMap {
    match KEPT.with_borrow_mut(Vec::pop) {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Takes back the map of a head that has been encoded (or is no longer needed), for
/// [`header_map`] to fill again.
pub fn recycle_map(mut map: HeaderMap) {
    if map.capacity() > KEPT_MAP_CAPACITY {
        return;
    }
    map.clear();
    KEPT.with_borrow_mut(|kept| {
        if kept.len() < KEPT_MAPS {
            kept.push(map);
        }
    });
}

/// What a message's `Connection` fields say, read in one pass.
#[derive(Debug, Default)]
pub struct ConnectionTokens {
    /// Any `Connection` field at all.
    present: bool,
    /// A `close` token.
    close: bool,
    /// The last of the `close` / `keep-alive` tokens was `keep-alive`.
    last_keep_alive: bool,
    /// A token other than those two: a header the hop-by-hop pass must remove.
    nominates: bool,
    /// An `upgrade` token.
    upgrade: bool,
}

impl ConnectionTokens {
    /// Reads one more `Connection` field's `value` (callers read the tokens while they
    /// walk a head's fields).
    pub fn add(&mut self, value: &[u8]) {
        self.present = true;
        for token in value.split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
                self.last_keep_alive = false;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.last_keep_alive = true;
            } else if !token.is_empty() {
                self.nominates = true;
                self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
            }
        }
    }

    /// Whether a field listed `upgrade`.
    pub fn lists_upgrade(&self) -> bool {
        self.upgrade
    }

    /// Whether the connection stays open after the response (RFC 9112 9.3): HTTP/1.1
    /// unless `close`; HTTP/1.0 only when the last word was `keep-alive`.
    pub fn keep_alive(&self, http10: bool) -> bool {
        if http10 {
            self.last_keep_alive
        } else {
            !self.close
        }
    }

    /// Whether a token named another field (which the hop-by-hop pass must remove).
    pub fn nominates(&self) -> bool {
        self.nominates
    }

    /// Whether every token was `keep-alive` or `close`: the fields spoke to this
    /// connection only and can be consumed here.
    pub fn only_management(&self) -> bool {
        self.present && !self.nominates
    }
}

/// What a response head's framing and connection fields say, read from the parsed fields
/// in one pass before any header map is built.
#[derive(Debug)]
struct FramingFields {
    connection: ConnectionTokens,
    /// Any `Transfer-Encoding` field.
    transfer_encoding: bool,
    /// The final transfer coding is `chunked`.
    chunked: bool,
    /// Any `Content-Length` field.
    content_length: bool,
    /// The one length the `Content-Length` fields agree on (`Err`: unreadable or
    /// differing).
    length: Result<Option<u64>, WireError>,
    /// A hop-by-hop field other than those read here (`Proxy-*`, `TE`, `Trailer`,
    /// `Upgrade`): the proxy must strip it.
    other_hop_by_hop: bool,
    /// A `Keep-Alive` field (consumed only beside a `Connection` of management tokens).
    keep_alive_field: bool,
    /// A `Content-Length` value that is a list (`5, 5`), for the summary of fields passed
    /// on raw: the server then declares the length itself.
    length_listed: bool,
    /// A `Date` field (for the summary of fields passed on raw).
    date: bool,
}

impl FramingFields {
    fn of(fields: &[httparse::Header<'_>]) -> FramingFields {
        let mut out = FramingFields {
            connection: ConnectionTokens::default(),
            transfer_encoding: false,
            chunked: false,
            content_length: false,
            length: Ok(None),
            other_hop_by_hop: false,
            keep_alive_field: false,
            length_listed: false,
            date: false,
        };
        for field in fields {
            let name = field.name.as_bytes();
            match known_field(name) {
                Some(KnownField::Date) => out.date = true,
                Some(KnownField::Connection) => out.connection.add(field.value),
                Some(KnownField::KeepAlive) => out.keep_alive_field = true,
                Some(KnownField::ContentLength) => {
                    out.content_length = true;
                    out.length_listed |= field.value.contains(&b',');
                    for part in field.value.split(|b| *b == b',') {
                        out.length = match (out.length, parse_length(part.trim_ascii())) {
                            (Ok(None), Some(n)) => Ok(Some(n)),
                            (Ok(Some(seen)), Some(n)) if seen == n => Ok(Some(n)),
                            _ => Err(WireError::ContentLength),
                        };
                    }
                }
                Some(KnownField::TransferEncoding) => {
                    out.transfer_encoding = true;
                    // The final coding decides; a field of empty items changes nothing.
                    let last = field
                        .value
                        .split(|b| *b == b',')
                        .map(<[u8]>::trim_ascii)
                        .rfind(|coding| !coding.is_empty());
                    if let Some(last) = last {
                        out.chunked = last.eq_ignore_ascii_case(b"chunked");
                    }
                }
                // `Upgrade` is hop-by-hop; `Host` and `Expect` mean nothing in a response.
                Some(KnownField::Host | KnownField::Expect | KnownField::Upgrade) | None => {
                    out.other_hop_by_hop |= forwarding::is_hop_by_hop(name);
                }
            }
        }
        out
    }

    /// Whether a `Content-Length` passes on with the fields (not left out as a stray
    /// length beside a transfer coding).
    fn length_passes(&self, framing: ResponseFraming) -> bool {
        self.content_length
            && !matches!(
                framing,
                ResponseFraming::Chunked | ResponseFraming::UntilClose
            )
    }

    /// What the server acts on among the fields that pass on raw.
    fn raw_summary(&self, framing: ResponseFraming) -> RawSummary {
        RawSummary {
            content_length: self
                .length_passes(framing)
                .then(|| self.length.ok().flatten().filter(|_| !self.length_listed)),
            date: self.date,
        }
    }

    /// Whether every field left after [`FramingFields::consumed`] (and the framing's own
    /// `Transfer-Encoding`) may pass to the client as it is: none is hop-by-hop.
    /// `Connection` and `Keep-Alive` are consumed when `Connection` holds only management
    /// tokens; else they stay, and must be stripped.
    fn pass_as_they_are(&self) -> bool {
        !self.other_hop_by_hop
            && !self.connection.nominates()
            && (!self.keep_alive_field || self.connection.only_management())
    }

    /// Whether a field is left out of the response's fields: `Connection` / `Keep-Alive`
    /// when they only spoke to this connection (acted on here, so the hop-by-hop pass need
    /// not look at them again), `Transfer-Encoding` (the framing, read here, is this hop's
    /// alone), and a length beside a transfer coding (meaningless, and unsafe to pass on).
    fn consumed(&self, name: &[u8], framing: ResponseFraming) -> bool {
        let management = self.connection.only_management()
            && (name.eq_ignore_ascii_case(b"connection")
                || name.eq_ignore_ascii_case(b"keep-alive"));
        let stray_length =
            !self.length_passes(framing) && name.eq_ignore_ascii_case(b"content-length");
        management || stray_length || name.eq_ignore_ascii_case(b"transfer-encoding")
    }
}

/// The body framing of a response (RFC 9112 section 6.3), and whether the connection
/// stays open after it (`keep_alive`, from the `Connection` fields, unless the framing
/// forbids it).
fn framing_of(
    status: StatusCode,
    fields: &FramingFields,
    head_request: bool,
    keep_alive: bool,
) -> Result<(ResponseFraming, bool), WireError> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(WireError::UnexpectedSwitch);
    }
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((ResponseFraming::None, keep_alive));
    }
    if fields.transfer_encoding {
        // Anything but a final chunked runs until the close; with a Content-Length beside
        // it the message was ambiguous: never reuse.
        return Ok(if fields.chunked {
            (
                ResponseFraming::Chunked,
                keep_alive && !fields.content_length,
            )
        } else {
            (ResponseFraming::UntilClose, false)
        });
    }
    Ok(match fields.length? {
        Some(n) => (ResponseFraming::Length(n), keep_alive),
        None => (ResponseFraming::UntilClose, false),
    })
}

/// A decimal `Content-Length` (digits only, at most 18 of them).
pub fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

/// What the chunked decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailer section; the body has ended.
    Trailers(HeaderMap),
    /// The body has ended (no trailers).
    End,
    /// More input is needed.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Decodes a chunked body from the front of a read buffer, consuming what it used.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
        }
    }
}

impl ChunkedDecoder {
    /// Whether the last chunk and the trailer section were read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The next piece of the body from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Decoded::End),
                ChunkState::Size => {
                    let window = &buf[..buf.len().min(MAX_CHUNK_LINE)];
                    let Some(end) = window.iter().position(|b| *b == b'\n') else {
                        if buf.len() >= MAX_CHUNK_LINE {
                            return Err(WireError::Chunked);
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&buf[..=end])?;
                    buf.advance(end + 1);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Chunked);
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => return self.trailers(buf),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        if buf.len() < 2 {
            return Ok(Decoded::NeedMore);
        }
        if &buf[..2] == b"\r\n" {
            buf.advance(2);
            self.state = ChunkState::Done;
            return Ok(Decoded::End);
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (len, count) = match httparse::parse_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete((len, fields))) => (len, fields.len()),
            Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILER_BYTES => {
                return Err(WireError::Chunked);
            }
            Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
            Err(_) => return Err(WireError::Chunked),
        };
        if len > MAX_TRAILER_BYTES {
            return Err(WireError::Chunked);
        }
        let spans = Spans::of(buf, &slots[..count], |_| true);
        let section = buf.split_to(len).freeze();
        let trailers = header_map(&section, spans.as_slice(), 0).ok_or(WireError::Chunked)?;
        self.state = ChunkState::Done;
        Ok(Decoded::Trailers(trailers))
    }
}

/// The size of a chunk-size `line` (through its LF): hex digits, optional extensions
/// after `;`, CRLF.
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let line = line.strip_suffix(b"\r\n").ok_or(WireError::Chunked)?;
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    if digits.is_empty() || digits.len() > 15 {
        return Err(WireError::Chunked);
    }
    let rest = rest.trim_ascii_start();
    if !(rest.is_empty() || rest.starts_with(b";"))
        || rest.iter().any(|b| b.is_ascii_control() && *b != b'\t')
    {
        return Err(WireError::Chunked);
    }
    Ok(digits.iter().fold(0u64, |n, d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        n * 16 + u64::from(v)
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::http::added_fields::AddedValues;

    #[test]
    fn a_recycled_map_comes_back_empty_and_a_large_one_is_not_kept() {
        let kept_before = KEPT.with_borrow(Vec::len);
        let mut used = HeaderMap::new();
        used.insert("x-old", HeaderValue::from_static("stale"));
        recycle_map(used);
        assert_eq!(KEPT.with_borrow(Vec::len), kept_before + 1);
        let mut large = HeaderMap::with_capacity(KEPT_MAP_CAPACITY * 4);
        large.insert("x-big", HeaderValue::from_static("1"));
        recycle_map(large);
        assert_eq!(
            KEPT.with_borrow(Vec::len),
            kept_before + 1,
            "too large to keep"
        );

        let parsed = head(
            "HTTP/1.1 200 OK\r\nx-new: fresh\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            KEPT.with_borrow(Vec::len),
            kept_before,
            "the kept map was reused"
        );
        let fields = all_fields(&parsed);
        assert_eq!(fields["x-new"], "fresh");
        assert!(fields.get("x-old").is_none());
    }
    #[test]
    fn spans_keep_every_accepted_field_in_order_inline_or_spilled() {
        for count in [0, 1, INLINE_SPANS, INLINE_SPANS + 1, MAX_HEADERS] {
            let text: String = (0..count).map(|i| format!("X-{i}: v{i}\r\n")).collect();
            let buf = format!("{text}\r\n");
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let httparse::Status::Complete((_, fields)) =
                httparse::parse_headers(buf.as_bytes(), &mut slots).unwrap()
            else {
                panic!("complete");
            };
            // Every third field dropped, so the kept ones are not the parsed ones.
            let keep = |name: &[u8]| !name.ends_with(b"3");
            let spans = Spans::of(buf.as_bytes(), fields, keep);
            let kept: Vec<String> = spans
                .as_slice()
                .iter()
                .map(|span| {
                    let (name, value) = span.ranges();
                    format!("{}={}", &buf[name], &buf[value])
                })
                .collect();
            let expected: Vec<String> = (0..count)
                .filter(|i| !i.to_string().ends_with('3'))
                .map(|i| format!("X-{i}=v{i}"))
                .collect();
            assert_eq!(kept, expected, "{count} fields");
        }
    }

    use http::header::CONNECTION;

    fn head(text: &str, head_request: bool) -> Result<Option<ResponseHead>, WireError> {
        parse_response_head(&mut BytesMut::from(text), head_request)
    }

    /// Every field of a parsed head, its raw ones moved into a copy of its map.
    fn all_fields(head: &ResponseHead) -> HeaderMap {
        let mut map = head.headers.clone();
        if let Some(raw) = &head.raw {
            raw.append_to(&mut map);
        }
        map
    }

    #[test]
    fn a_response_without_hop_by_hop_fields_keeps_them_raw_in_their_order_and_case() {
        let parsed = head(
            "HTTP/1.1 200 OK\r\nServer: up\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(parsed.headers.is_empty(), "{:?}", parsed.headers);
        let raw = parsed.raw.as_ref().expect("passed on raw");
        let fields: Vec<(&[u8], &[u8])> = raw.iter().collect();
        // `Connection` and `Keep-Alive` spoke only to this connection and the framing is
        // the codec's.
        assert_eq!(
            fields,
            [
                (&b"Server"[..], &b"up"[..]),
                (&b"X-A"[..], &b"1"[..]),
                (&b"x-a"[..], &b"2"[..]),
            ]
        );
        assert!(raw.contains(&http::header::SERVER));
        assert!(!raw.contains(&http::header::DATE));
        let map = all_fields(&parsed);
        let values: Vec<_> = map.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn the_raw_fields_summary_says_what_the_server_acts_on_among_them() {
        let summary = |text: &str, head_request: bool| {
            let parsed = head(text, head_request).unwrap().unwrap();
            parsed.raw.expect("passed on raw").summary()
        };
        assert_eq!(
            summary(
                "HTTP/1.1 200 OK\r\nDATE: Mon, 07 Dec 2026 18:00:00 GMT\r\ncontent-LENGTH: 2\r\n\r\n",
                false
            ),
            RawSummary {
                content_length: Some(Some(2)),
                date: true
            }
        );
        // A length beside chunked framing is left out, so the summary has none either.
        assert_eq!(
            summary(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
                false
            ),
            RawSummary::default()
        );
        // A list of one length frames the body but is not passed on as the length.
        assert_eq!(
            summary("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false),
            RawSummary {
                content_length: Some(None),
                date: false
            }
        );
        // A HEAD response's length passes on (it describes the body a GET would get).
        assert_eq!(
            summary("HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", true),
            RawSummary {
                content_length: Some(Some(42)),
                date: false
            }
        );
        // A field named only like a framing one is no framing field.
        assert_eq!(
            summary(
                "HTTP/1.1 204 No Content\r\nDates: x\r\nX-Content-Length: 1\r\n\r\n",
                false
            ),
            RawSummary::default()
        );
    }

    #[test]
    fn a_response_with_a_field_to_strip_goes_through_the_map() {
        for field in [
            "Keep-Alive: timeout=5",
            "Proxy-Authenticate: Basic",
            "Trailer: x-t",
            "Upgrade: h2c",
            "TE: trailers",
        ] {
            let text = format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n{field}\r\n\r\n");
            let parsed = head(&text, false).unwrap().unwrap();
            assert!(parsed.raw.is_none(), "{field}");
            assert_eq!(parsed.headers.len(), 2, "{field}: {:?}", parsed.headers);
        }
    }

    #[test]
    fn a_get_head_is_one_request_line_and_the_fields() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("a.example"));
        headers.append("x-two", HeaderValue::from_static("1"));
        headers.append("x-two", HeaderValue::from_static("2"));
        let mut out = BytesMut::new();
        let uri: Uri = "/p?q=1".parse().unwrap();
        encode_request_head(
            &Method::GET,
            &uri,
            &headers,
            &AddedFields::default(),
            RequestFraming::Empty,
            &mut out,
        );
        assert_eq!(
            &out[..],
            b"GET /p?q=1 HTTP/1.1\r\nhost: a.example\r\nx-two: 1\r\nx-two: 2\r\n\r\n"
        );
        out.clear();
        let added = AddedFields::new(AddedValues {
            request_id: Some(HeaderValue::from_static("abc")),
            via: Some(HeaderValue::from_static("1.1 switchyard")),
            ..AddedValues::default()
        });
        encode_request_head(
            &Method::GET,
            &uri,
            &headers,
            &added,
            RequestFraming::Empty,
            &mut out,
        );
        assert_eq!(
            &out[..],
            &b"GET /p?q=1 HTTP/1.1\r\nhost: a.example\r\nx-two: 1\r\nx-two: 2\r\n\
               x-request-id: abc\r\nvia: 1.1 switchyard\r\n\r\n"[..]
        );
    }

    #[test]
    fn a_body_gets_a_length_or_chunks_unless_the_request_declared_one() {
        let empty = HeaderMap::new();
        assert_eq!(
            RequestFraming::of(&empty, true, Some(0)),
            Some(RequestFraming::Empty)
        );
        assert_eq!(
            RequestFraming::of(&empty, false, Some(0)),
            Some(RequestFraming::Empty)
        );
        assert_eq!(
            RequestFraming::of(&empty, false, Some(5)),
            Some(RequestFraming::Length(5))
        );
        assert_eq!(
            RequestFraming::of(&empty, false, None),
            Some(RequestFraming::Chunked)
        );
        let mut declared = HeaderMap::new();
        declared.insert(CONTENT_LENGTH, HeaderValue::from_static("7"));
        assert_eq!(
            RequestFraming::of(&declared, false, None),
            Some(RequestFraming::Length(7))
        );
        declared.insert(CONTENT_LENGTH, HeaderValue::from_static("7x"));
        assert_eq!(RequestFraming::of(&declared, false, None), None);

        let uri: Uri = "/".parse().unwrap();
        let mut out = BytesMut::new();
        encode_request_head(
            &Method::POST,
            &uri,
            &empty,
            &AddedFields::default(),
            RequestFraming::Length(5),
            &mut out,
        );
        assert_eq!(&out[..], b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\n");
        out.clear();
        encode_request_head(
            &Method::POST,
            &uri,
            &empty,
            &AddedFields::default(),
            RequestFraming::Chunked,
            &mut out,
        );
        assert_eq!(
            &out[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        out.clear();
        let mut declared = HeaderMap::new();
        declared.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        encode_request_head(
            &Method::PUT,
            &uri,
            &declared,
            &AddedFields::default(),
            RequestFraming::Length(5),
            &mut out,
        );
        assert_eq!(&out[..], b"PUT / HTTP/1.1\r\ncontent-length: 5\r\n\r\n");
    }

    #[test]
    fn body_frames_are_framed_coalesced_or_handed_back_and_lengths_are_held() {
        let mut out = BytesMut::new();
        let mut chunked = BodyEncoding::Chunked;
        assert!(
            chunked
                .data(Bytes::from_static(b"abc"), &mut out)
                .unwrap()
                .is_none()
        );
        assert!(chunked.data(Bytes::new(), &mut out).unwrap().is_none());
        let big = Bytes::from(vec![b'x'; COALESCE + 1]);
        let large = chunked.data(big.clone(), &mut out).unwrap().unwrap();
        assert_eq!((large.data, large.tail), (big, &b"\r\n"[..]));
        assert_eq!(
            &out[..],
            format!("3\r\nabc\r\n{:x}\r\n", COALESCE + 1).as_bytes()
        );
        out.clear();
        chunked.end(None, &mut out).unwrap();
        assert_eq!(&out[..], b"0\r\n\r\n");

        let mut length = BodyEncoding::Length(5);
        let mut out = BytesMut::new();
        assert!(
            length
                .data(Bytes::from_static(b"abc"), &mut out)
                .unwrap()
                .is_none()
        );
        assert_eq!(length.end(None, &mut out), Err(EncodeError::Short));
        assert!(!length.is_full());
        assert_eq!(
            length
                .data(Bytes::from_static(b"def"), &mut out)
                .unwrap_err(),
            EncodeError::Overlong
        );
        length.data(Bytes::from_static(b"de"), &mut out).unwrap();
        assert!(length.is_full());
        assert_eq!(&out[..], b"abcde");
        assert_eq!(length.end(None, &mut out), Ok(()));

        let mut discard = BodyEncoding::Discard;
        let mut out = BytesMut::new();
        assert!(
            discard
                .data(Bytes::from_static(b"abc"), &mut out)
                .unwrap()
                .is_none()
        );
        discard.end(None, &mut out).unwrap();
        assert!(out.is_empty());
        let mut raw = BodyEncoding::Raw;
        raw.data(Bytes::from_static(b"abc"), &mut out).unwrap();
        raw.end(None, &mut out).unwrap();
        assert_eq!(&out[..], b"abc");
    }

    #[test]
    fn chunks_and_the_last_chunk_with_trailers_are_encoded() {
        let mut out = BytesMut::new();
        encode_chunk_size(300, &mut out);
        assert_eq!(&out[..], b"12c\r\n");
        out.clear();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        encode_last_chunk(Some(&trailers), &mut out);
        assert_eq!(&out[..], b"0\r\ngrpc-status: 0\r\n\r\n");
        out.clear();
        encode_last_chunk(None, &mut out);
        assert_eq!(&out[..], b"0\r\n\r\n");
    }

    #[test]
    fn a_response_head_is_consumed_and_its_framing_found() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello");
        let parsed = parse_response_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(parsed.status, StatusCode::OK);
        assert_eq!(parsed.framing, ResponseFraming::Length(5));
        assert!(parsed.keep_alive);
        assert_eq!(all_fields(&parsed).get("x-a").unwrap(), "b");
        assert_eq!(&buf[..], b"hello");

        let partial = head("HTTP/1.1 200 OK\r\nContent-Le", false).unwrap();
        assert!(partial.is_none());
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let framing = |text: &str, head_request| {
            let h = head(text, head_request).unwrap().unwrap();
            (h.framing, h.keep_alive)
        };
        use ResponseFraming as F;
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\n\r\n", false),
            (F::None, true)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            ),
            (F::None, true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true),
            (F::None, true)
        );
        assert_eq!(
            framing("HTTP/1.1 100 Continue\r\n\r\n", false),
            (F::None, true)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            (F::Chunked, true)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
                false
            ),
            (F::Chunked, false)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            (F::UntilClose, false)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\n\r\n", false),
            (F::UntilClose, false)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
                false
            ),
            (F::Length(3), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", false),
            (F::Length(3), false)
        );
        assert_eq!(
            framing(
                "HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n",
                false
            ),
            (F::Length(3), true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", false),
            (F::Length(3), true)
        );
        // A transfer coding drops the length from what is passed on.
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(h.headers.get(CONTENT_LENGTH).is_none());
    }

    #[test]
    fn connection_management_is_consumed_but_nominated_headers_are_left_to_strip() {
        let h = head("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(h.headers.get(CONNECTION).is_none());
        assert!(h.headers.get("keep-alive").is_none());
        let h = head("HTTP/1.1 200 OK\r\nConnection: close, x-private\r\nX-Private: 1\r\nContent-Length: 0\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        assert_eq!(h.headers[CONNECTION], "close, x-private");
        assert_eq!(h.headers["x-private"], "1");
    }

    #[test]
    fn broken_heads_are_errors() {
        assert_eq!(
            head(
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                false
            )
            .unwrap_err(),
            WireError::ContentLength
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false).unwrap_err(),
            WireError::ContentLength
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", false).unwrap_err(),
            WireError::ContentLength
        );
        assert_eq!(
            head("HTTP/1.1 101 Switching Protocols\r\n\r\n", false).unwrap_err(),
            WireError::UnexpectedSwitch
        );
        assert_eq!(
            head("HTTX/1.1 200 OK\r\n\r\n", false).unwrap_err(),
            WireError::Head
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", false).unwrap_err(),
            WireError::Head
        );
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(head(&huge, false).unwrap_err(), WireError::HeadTooLarge);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(
            head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false).unwrap_err(),
            WireError::Head
        );
    }

    /// A decoded body: data, trailers, and what was left in the buffer after it.
    type Whole = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

    /// Decodes all of `input` fed in pieces of `step` bytes.
    fn decode_all(input: &[u8], step: usize) -> Result<Whole, WireError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::Trailers(t) => return Ok((body, Some(t), buf.to_vec())),
                Decoded::End => return Ok((body, None, buf.to_vec())),
                Decoded::NeedMore => {
                    if fed == input.len() {
                        return Err(WireError::Chunked);
                    }
                    let n = step.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let input = b"5\r\nhello\r\nA;ext=1\r\n, world!!!\r\n0\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 64] {
            let (body, trailers, left) = decode_all(input, step).unwrap();
            assert_eq!(body, b"hello, world!!!", "step {step}");
            assert!(trailers.is_none());
            // Nothing past the body is consumed.
            assert!(b"NEXT".starts_with(&left), "step {step}: {left:?}");
        }
        let with_trailers = b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n";
        for step in [1, 5, 100] {
            let (body, trailers, left) = decode_all(with_trailers, step).unwrap();
            assert_eq!(body, b"abc");
            let trailers = trailers.unwrap();
            assert_eq!(trailers.get("grpc-status").unwrap(), "0");
            assert_eq!(trailers.get("grpc-message").unwrap(), "ok");
            assert!(left.is_empty());
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [
            &b"x\r\nabc\r\n0\r\n\r\n"[..],
            b"\r\nabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3 x\r\nabc\r\n0\r\n\r\n",
            b"1000000000000000\r\n",
            b"0\r\nbad trailer\r\n\r\n",
        ] {
            assert_eq!(
                decode_all(bad, 100).unwrap_err(),
                WireError::Chunked,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_line = [b"1;".as_slice(), &[b'a'; MAX_CHUNK_LINE]].concat();
        assert_eq!(
            decode_all(&long_line, 4096).unwrap_err(),
            WireError::Chunked
        );
    }
}
