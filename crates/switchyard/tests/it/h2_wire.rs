//! A raw HTTP/2 client for wire-level tests (RFC 9113, RFC 7541): frames written byte by
//! byte and read back as they are, a connection helper that does the preface and the
//! SETTINGS exchange, a minimal HPACK encoder for requests and a decoder good enough for a
//! response's `:status` and its plainly encoded (or digit-only Huffman) fields. Every read
//! is bounded by [`within`].
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::support::within;

/// The client connection preface (RFC 9113 section 3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 section 6).
pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const PRIORITY: u8 = 0x2;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PUSH_PROMISE: u8 = 0x5;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
pub(crate) const CONTINUATION: u8 = 0x9;

/// Flags.
pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const ACK: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
pub(crate) const PADDED: u8 = 0x8;

/// Error codes (RFC 9113 section 7).
pub(crate) const NO_ERROR: u32 = 0x0;
pub(crate) const PROTOCOL_ERROR: u32 = 0x1;
pub(crate) const FLOW_CONTROL_ERROR: u32 = 0x3;
pub(crate) const FRAME_SIZE_ERROR: u32 = 0x6;
pub(crate) const REFUSED_STREAM: u32 = 0x7;
pub(crate) const CANCEL: u32 = 0x8;
pub(crate) const COMPRESSION_ERROR: u32 = 0x9;
pub(crate) const ENHANCE_YOUR_CALM: u32 = 0xb;

/// SETTINGS identifiers (RFC 9113 section 6.5.2).
pub(crate) const HEADER_TABLE_SIZE: u16 = 0x1;
pub(crate) const MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub(crate) const INITIAL_WINDOW_SIZE: u16 = 0x4;
pub(crate) const MAX_FRAME_SIZE: u16 = 0x5;
pub(crate) const MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// One HTTP/2 frame as read off the wire.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub(crate) fn code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }

    /// The last stream id of a GOAWAY.
    pub(crate) fn last_stream(&self) -> u32 {
        u32::from_be_bytes(self.payload[..4].try_into().unwrap()) & 0x7fff_ffff
    }

    /// Whether END_STREAM is set on a DATA or HEADERS frame.
    pub(crate) fn ends_stream(&self) -> bool {
        matches!(self.kind, DATA | HEADERS) && self.flags & END_STREAM != 0
    }

    /// The increment of a WINDOW_UPDATE.
    pub(crate) fn increment(&self) -> u32 {
        u32::from_be_bytes(self.payload[..4].try_into().unwrap()) & 0x7fff_ffff
    }

    /// The (id, value) pairs of a SETTINGS frame.
    pub(crate) fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks(6)
            .map(|s| {
                (
                    u16::from_be_bytes([s[0], s[1]]),
                    u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                )
            })
            .collect()
    }

    /// A DATA frame's payload without its padding.
    pub(crate) fn data(&self) -> &[u8] {
        if self.flags & PADDED == 0 {
            return &self.payload;
        }
        let pad = usize::from(self.payload[0]);
        &self.payload[1..self.payload.len() - pad]
    }

    /// A HEADERS frame's header block fragment (padding and priority removed).
    pub(crate) fn fragment(&self) -> &[u8] {
        let mut start = 0;
        let mut end = self.payload.len();
        if self.flags & PADDED != 0 {
            start = 1;
            end -= usize::from(self.payload[0]);
        }
        if self.kind == HEADERS && self.flags & 0x20 != 0 {
            start += 5;
        }
        &self.payload[start..end]
    }
}

/// Reads one frame, failing the test on EOF or after [`LIMIT`](crate::support::LIMIT).
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(stream: &mut R) -> Frame {
    within(try_read_frame(stream))
        .await
        .expect("a frame, not the end of the connection")
}

/// Reads one frame; `None` when the connection ended (EOF or reset) before a whole frame.
pub(crate) async fn try_read_frame<R: AsyncRead + Unpin>(stream: &mut R) -> Option<Frame> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// One frame's bytes.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![length[1], length[2], length[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame (not an ACK) with `values`.
pub(crate) fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in values {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

/// A WINDOW_UPDATE frame.
pub(crate) fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// A RST_STREAM frame.
pub(crate) fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// A GOAWAY frame.
pub(crate) fn goaway(last_stream: u32, code: u32) -> Vec<u8> {
    let mut payload = last_stream.to_be_bytes().to_vec();
    payload.extend_from_slice(&code.to_be_bytes());
    frame(GOAWAY, 0, 0, &payload)
}

/// A HEADERS frame carrying a whole header block.
pub(crate) fn headers(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, block)
}

/// A DATA frame.
pub(crate) fn data(stream: u32, bytes: &[u8], end_stream: bool) -> Vec<u8> {
    frame(DATA, u8::from(end_stream), stream, bytes)
}

// ---------------------------------------------------------------------------------------
// HPACK (RFC 7541), the parts tests need.

/// An HPACK integer with an `n`-bit prefix, the prefix byte's high bits set to `flags`.
pub(crate) fn hpack_int(flags: u8, n: u32, value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | u8::try_from(value).unwrap());
        return;
    }
    out.push(flags | u8::try_from(max).unwrap());
    let mut rest = value - max;
    while rest >= 128 {
        out.push(u8::try_from(rest % 128).unwrap() | 0x80);
        rest /= 128;
    }
    out.push(u8::try_from(rest).unwrap());
}

/// An HPACK string literal, no Huffman.
pub(crate) fn hpack_str(s: &[u8], out: &mut Vec<u8>) {
    hpack_int(0, 7, s.len(), out);
    out.extend_from_slice(s);
}

/// A literal field without indexing, literal name (`0x00` form).
pub(crate) fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00];
    hpack_str(name.as_bytes(), &mut out);
    hpack_str(value.as_bytes(), &mut out);
    out
}

/// A literal field with incremental indexing, literal name (`0x40` form): the decoder adds
/// it to its dynamic table.
pub(crate) fn literal_indexed(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x40];
    hpack_str(name.as_bytes(), &mut out);
    hpack_str(value.as_bytes(), &mut out);
    out
}

/// An indexed field (static 1..=61, dynamic from 62).
pub(crate) fn indexed(index: usize) -> Vec<u8> {
    let mut out = Vec::new();
    hpack_int(0x80, 7, index, &mut out);
    out
}

/// A header block of literal fields without indexing (names and values as given, in order:
/// malformed blocks are written as easily as good ones).
pub(crate) fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    fields.iter().flat_map(|(n, v)| literal(n, v)).collect()
}

/// `GET path` for authority `t`: `:method GET` (0x82) and `:scheme http` (0x86) from the
/// static table, `:path` and `:authority` as literals.
pub(crate) fn get(path: &str) -> Vec<u8> {
    request("GET", path, &[])
}

/// A request block: the four pseudo-header fields, then `fields`.
pub(crate) fn request(method: &str, path: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = match method {
        "GET" => vec![0x82],
        "POST" => vec![0x83],
        _ => literal(":method", method),
    };
    out.push(0x86);
    out.extend(literal(":path", path));
    out.extend(literal(":authority", "t"));
    out.extend(block(fields));
    out
}

/// The RFC 7541 static table entries tests decode by index (1-based); `None` elsewhere.
fn static_entry(index: usize) -> Option<(&'static str, &'static str)> {
    const TABLE: [(&str, &str); 61] = [
        (":authority", ""),
        (":method", "GET"),
        (":method", "POST"),
        (":path", "/"),
        (":path", "/index.html"),
        (":scheme", "http"),
        (":scheme", "https"),
        (":status", "200"),
        (":status", "204"),
        (":status", "206"),
        (":status", "304"),
        (":status", "400"),
        (":status", "404"),
        (":status", "500"),
        ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"),
        ("accept-language", ""),
        ("accept-ranges", ""),
        ("accept", ""),
        ("access-control-allow-origin", ""),
        ("age", ""),
        ("allow", ""),
        ("authorization", ""),
        ("cache-control", ""),
        ("content-disposition", ""),
        ("content-encoding", ""),
        ("content-language", ""),
        ("content-length", ""),
        ("content-location", ""),
        ("content-range", ""),
        ("content-type", ""),
        ("cookie", ""),
        ("date", ""),
        ("etag", ""),
        ("expect", ""),
        ("expires", ""),
        ("from", ""),
        ("host", ""),
        ("if-match", ""),
        ("if-modified-since", ""),
        ("if-none-match", ""),
        ("if-range", ""),
        ("if-unmodified-since", ""),
        ("last-modified", ""),
        ("link", ""),
        ("location", ""),
        ("max-forwards", ""),
        ("proxy-authenticate", ""),
        ("proxy-authorization", ""),
        ("range", ""),
        ("referer", ""),
        ("refresh", ""),
        ("retry-after", ""),
        ("server", ""),
        ("set-cookie", ""),
        ("strict-transport-security", ""),
        ("transfer-encoding", ""),
        ("user-agent", ""),
        ("vary", ""),
        ("via", ""),
        ("www-authenticate", ""),
    ];
    TABLE.get(index.checked_sub(1)?).copied()
}

/// A decoded string: its text when it was plain or digit-only Huffman, else `None` (its
/// encoded length kept for the table's size accounting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text {
    pub(crate) text: Option<String>,
    /// The decoded length when known, else an upper bound (8/5 of the Huffman bytes).
    len: usize,
    exact: bool,
}

impl Text {
    fn known(s: &str) -> Text {
        Text {
            text: Some(s.to_owned()),
            len: s.len(),
            exact: true,
        }
    }
}

/// An HPACK decoder for what a server sends: the static table, a dynamic table tracked by
/// position, plain literals and Huffman strings made only of digits (enough for `:status`
/// and `content-length`); other Huffman strings stay opaque.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// Newest first.
    table: Vec<(Text, Text)>,
    max_size: usize,
    /// The limit this decoder advertised (SETTINGS_HEADER_TABLE_SIZE).
    limit: usize,
    /// Whether a dynamic table reference was ever decoded.
    pub(crate) used_dynamic: bool,
}

/// One decoded field.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: Option<String>,
    pub(crate) value: Option<String>,
}

impl Decoder {
    /// A decoder whose table may grow to `limit` bytes (4,096 is the protocol default).
    pub(crate) fn new(limit: usize) -> Decoder {
        Decoder {
            table: Vec::new(),
            max_size: limit,
            limit,
            used_dynamic: false,
        }
    }

    fn size(&self) -> (usize, bool) {
        let mut exact = true;
        let size = self
            .table
            .iter()
            .map(|(n, v)| {
                exact &= n.exact && v.exact;
                n.len + v.len + 32
            })
            .sum();
        (size, exact)
    }

    fn evict(&mut self) {
        if self.max_size == 0 {
            self.table.clear();
            return;
        }
        loop {
            let (size, exact) = self.size();
            if size <= self.max_size {
                return;
            }
            assert!(
                exact,
                "the test decoder cannot tell which entries to evict (opaque Huffman strings)"
            );
            self.table.pop();
        }
    }

    fn entry(&mut self, index: usize) -> Result<(Text, Text), String> {
        if let Some((n, v)) = static_entry(index) {
            return Ok((Text::known(n), Text::known(v)));
        }
        self.used_dynamic = true;
        index
            .checked_sub(62)
            .and_then(|i| self.table.get(i))
            .cloned()
            .ok_or_else(|| format!("index {index} is not in the table"))
    }

    /// Decodes one header block.
    pub(crate) fn decode(&mut self, mut src: &[u8]) -> Result<Vec<Field>, String> {
        let mut fields = Vec::new();
        let mut first = true;
        while let Some(&b) = src.first() {
            if b & 0x80 != 0 {
                let index = read_int(&mut src, 7)?;
                let (n, v) = self.entry(index)?;
                fields.push(Field {
                    name: n.text,
                    value: v.text,
                });
            } else if b & 0xe0 == 0x20 {
                if !first {
                    return Err("table size update after a field".into());
                }
                let size = read_int(&mut src, 5)?;
                if size > self.limit {
                    return Err(format!("table size {size} above the limit {}", self.limit));
                }
                self.max_size = size;
                self.evict();
                continue;
            } else {
                let (prefix, add) = if b & 0xc0 == 0x40 {
                    (6, true)
                } else {
                    (4, false)
                };
                let index = read_int(&mut src, prefix)?;
                let name = if index == 0 {
                    read_str(&mut src)?
                } else {
                    self.entry(index)?.0
                };
                let value = read_str(&mut src)?;
                if add {
                    self.table.insert(0, (name.clone(), value.clone()));
                    self.evict();
                }
                fields.push(Field {
                    name: name.text,
                    value: value.text,
                });
            }
            first = false;
        }
        Ok(fields)
    }
}

fn read_int(src: &mut &[u8], n: u32) -> Result<usize, String> {
    let max = (1usize << n) - 1;
    let (&first, rest) = src.split_first().ok_or("integer missing")?;
    *src = rest;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let (&b, rest) = src.split_first().ok_or("integer cut short")?;
        *src = rest;
        value += (usize::from(b) & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 || shift > 28 {
            return Ok(value);
        }
    }
}

fn read_str(src: &mut &[u8]) -> Result<Text, String> {
    let huffman = src.first().ok_or("string missing")? & 0x80 != 0;
    let len = read_int(src, 7)?;
    if src.len() < len {
        return Err("string cut short".into());
    }
    let (bytes, rest) = src.split_at(len);
    *src = rest;
    if !huffman {
        return Ok(Text {
            text: Some(String::from_utf8_lossy(bytes).into_owned()),
            len,
            exact: true,
        });
    }
    Ok(match huffman_digits(bytes) {
        Some(text) => Text {
            len: text.len(),
            text: Some(text),
            exact: true,
        },
        None => Text {
            text: None,
            len: len * 8 / 5,
            exact: false,
        },
    })
}

/// Decodes a Huffman string made only of the digits 0-9 (RFC 7541 Appendix B: '0'-'2' are
/// the 5-bit codes 0x0-0x2, '3'-'9' the 6-bit codes 0x19-0x1f), with its all-ones padding;
/// `None` for anything else.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let mut bits: Vec<bool> = Vec::new();
    for b in bytes {
        for i in (0..8).rev() {
            bits.push(b >> i & 1 == 1);
        }
    }
    let mut out = String::new();
    let mut at = 0;
    let take = |at: usize, n: usize| -> Option<u8> {
        let mut v = 0u8;
        for bit in bits.get(at..at + n)? {
            v = v << 1 | u8::from(*bit);
        }
        Some(v)
    };
    while at < bits.len() {
        let rest = bits.len() - at;
        if rest < 8 && bits[at..].iter().all(|b| *b) {
            return Some(out);
        }
        match take(at, 5) {
            Some(v @ 0..=2) => {
                out.push(char::from(b'0' + v));
                at += 5;
            }
            _ => match take(at, 6) {
                Some(v @ 0x19..=0x1f) => {
                    out.push(char::from(b'0' + 3 + (v - 0x19)));
                    at += 6;
                }
                _ => return None,
            },
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// A connection.

/// What a stream's response came to.
#[derive(Debug, Default)]
pub(crate) struct Response {
    /// `:status` of the final (non-1xx) response head.
    pub(crate) status: Option<u16>,
    /// Its other fields as far as they decoded.
    pub(crate) fields: Vec<Field>,
    /// DATA payload bytes (padding removed).
    pub(crate) body: Vec<u8>,
    /// How many DATA frames carried them.
    pub(crate) data_frames: usize,
    /// Whether a trailing HEADERS block came.
    pub(crate) trailers: Option<Vec<Field>>,
    /// Whether the stream ended with END_STREAM.
    pub(crate) ended: bool,
    /// The RST_STREAM code, when the server reset the stream.
    pub(crate) reset: Option<u32>,
    /// The GOAWAY (last stream id, code) that ended the connection.
    pub(crate) goaway: Option<(u32, u32)>,
    /// Whether the connection ended (EOF or reset) before the stream did.
    pub(crate) closed: bool,
}

impl Response {
    /// The value of field `name` if it decoded.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.name.as_deref() == Some(name))
            .and_then(|f| f.value.as_deref())
    }

    /// Whether the server refused the request with a protocol error: RST_STREAM on the
    /// stream or GOAWAY, either with `code`.
    pub(crate) fn refused_with(&self, code: u32) -> bool {
        self.status.is_none()
            && (self.reset == Some(code) || self.goaway.is_some_and(|(_, c)| c == code))
    }
}

/// A client connection after the preface and the SETTINGS exchange. Reads are buffered
/// and cancel-safe, so a bounded wait for a frame that does not come loses nothing.
pub(crate) struct Conn {
    reader: OwnedReadHalf,
    writer: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
    /// The server's first SETTINGS values.
    pub(crate) server_settings: Vec<(u16, u32)>,
    /// Frames read but not yet handed out.
    pending: std::collections::VecDeque<Frame>,
    pub(crate) decoder: Decoder,
    /// Whether the connection ended.
    pub(crate) eof: bool,
}

impl Conn {
    /// Connects, sends the preface with SETTINGS `ours`, waits for the server's SETTINGS
    /// (its first frame, asserted) and ACKs it.
    pub(crate) async fn open(addr: SocketAddr, ours: &[(u16, u32)]) -> Conn {
        let stream = within(TcpStream::connect(addr)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (reader, writer) = stream.into_split();
        let limit = ours
            .iter()
            .rev()
            .find(|(id, _)| *id == HEADER_TABLE_SIZE)
            .map_or(4096, |(_, v)| usize::try_from(*v).unwrap());
        let mut conn = Conn {
            reader,
            writer: Some(writer),
            buf: Vec::new(),
            server_settings: Vec::new(),
            pending: Default::default(),
            decoder: Decoder::new(limit),
            eof: false,
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(settings(ours));
        conn.send(&hello).await;
        let first = within(conn.read()).await.expect("the server's SETTINGS");
        assert_eq!(
            (first.kind, first.flags & ACK, first.stream),
            (SETTINGS, 0, 0),
            "the server's first frame is SETTINGS: {first:?}"
        );
        // `read` has ACKed it.
        conn.server_settings = first.settings();
        conn
    }

    /// The value of the server's setting `id`, if it sent one.
    pub(crate) fn server_setting(&self, id: u16) -> Option<u32> {
        self.server_settings
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    /// The write half, for a test that writes from another task while this one reads.
    pub(crate) fn take_writer(&mut self) -> OwnedWriteHalf {
        self.writer.take().expect("the writer is still here")
    }

    /// Writes `bytes`, failing the test if the connection is gone.
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        let writer = self.writer.as_mut().expect("the writer is still here");
        within(writer.write_all(bytes)).await.unwrap();
    }

    /// Writes `bytes`; `false` if the server already closed the connection.
    pub(crate) async fn try_send(&mut self, bytes: &[u8]) -> bool {
        let writer = self.writer.as_mut().expect("the writer is still here");
        within(writer.write_all(bytes)).await.is_ok()
    }

    /// One whole frame from the buffer, if it holds one.
    fn parse(&mut self) -> Option<Frame> {
        let head = self.buf.get(..9)?;
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        if self.buf.len() < 9 + length {
            return None;
        }
        let f = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload: self.buf[9..9 + length].to_vec(),
        };
        self.buf.drain(..9 + length);
        Some(f)
    }

    /// The next frame off the wire (unbounded, cancel-safe); `None` at the end of the
    /// connection. SETTINGS from the server are ACKed as they come (and handed out too).
    async fn read(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.parse() {
                if f.kind == SETTINGS && f.flags & ACK == 0 && self.writer.is_some() {
                    let _ = self.try_send(&frame(SETTINGS, ACK, 0, &[])).await;
                }
                return Some(f);
            }
            if self.eof {
                return None;
            }
            self.buf.reserve(65_536);
            // `read_buf` is cancel-safe: bytes are in `buf` only once read.
            if let Ok(0) | Err(_) = self.reader.read_buf(&mut self.buf).await {
                self.eof = true;
            }
        }
    }

    /// The next frame, or `None` once the connection ended; fails the test after
    /// [`LIMIT`](crate::support::LIMIT).
    pub(crate) async fn next(&mut self) -> Option<Frame> {
        if let Some(f) = self.pending.pop_front() {
            return Some(f);
        }
        within(self.read()).await
    }

    /// The next frame if one comes within `wait`; `None` if none did (or the connection
    /// ended: see [`Conn::eof`]).
    pub(crate) async fn next_within(&mut self, wait: Duration) -> Option<Frame> {
        if let Some(f) = self.pending.pop_front() {
            return Some(f);
        }
        tokio::time::timeout(wait, self.read()).await.ok().flatten()
    }

    /// Reads frames until one satisfies `pred` (returned, with those before it) or the
    /// connection ends (`None` last). Bounded by at most 100,000 frames and [`within`] per
    /// frame.
    pub(crate) async fn until(
        &mut self,
        mut pred: impl FnMut(&Frame) -> bool,
    ) -> (Vec<Frame>, Option<Frame>) {
        let mut seen = Vec::new();
        for _ in 0..100_000 {
            match self.next().await {
                None => return (seen, None),
                Some(f) if pred(&f) => return (seen, Some(f)),
                Some(f) => seen.push(f),
            }
        }
        panic!("no matching frame in 100,000");
    }

    /// Reads until the connection ends or a GOAWAY comes; the GOAWAY if one did.
    pub(crate) async fn goaway_or_eof(&mut self) -> Option<Frame> {
        self.until(|f| f.kind == GOAWAY).await.1
    }

    /// Reads the response on `stream` to its end: END_STREAM, RST_STREAM on it, a GOAWAY
    /// with an error (or one that does not cover the stream), or the connection's end.
    /// Frames of other streams are kept for later reads.
    pub(crate) async fn response(&mut self, stream: u32) -> Response {
        let mut response = Response::default();
        let mut kept = Vec::new();
        let mut block: Option<(Vec<u8>, bool)> = None;
        for _ in 0..100_000 {
            let Some(f) = self.next().await else {
                response.closed = true;
                break;
            };
            if f.kind == GOAWAY {
                if f.code() != NO_ERROR || f.last_stream() < stream {
                    response.goaway = Some((f.last_stream(), f.code()));
                    break;
                }
                continue;
            }
            if f.kind == CONTINUATION && f.stream == stream {
                let (bytes, _) = block.as_mut().expect("CONTINUATION after HEADERS");
                bytes.extend_from_slice(&f.payload);
                if f.flags & END_HEADERS != 0 {
                    let (bytes, end) = block.take().unwrap();
                    self.head(&mut response, &bytes);
                    if end {
                        response.ended = true;
                        break;
                    }
                }
                continue;
            }
            if f.stream != stream || !matches!(f.kind, HEADERS | DATA | RST_STREAM) {
                if f.stream != 0 {
                    kept.push(f);
                }
                continue;
            }
            match f.kind {
                RST_STREAM => {
                    response.reset = Some(f.code());
                    break;
                }
                HEADERS => {
                    let end = f.ends_stream();
                    if f.flags & END_HEADERS == 0 {
                        block = Some((f.fragment().to_vec(), end));
                        continue;
                    }
                    let bytes = f.fragment().to_vec();
                    self.head(&mut response, &bytes);
                    if end {
                        response.ended = true;
                        break;
                    }
                }
                _ => {
                    response.body.extend_from_slice(f.data());
                    response.data_frames += 1;
                    if f.ends_stream() {
                        response.ended = true;
                        break;
                    }
                }
            }
        }
        kept.extend(self.pending.drain(..));
        self.pending = kept.into();
        response
    }

    fn head(&mut self, response: &mut Response, bytes: &[u8]) {
        let fields = self
            .decoder
            .decode(bytes)
            .unwrap_or_else(|e| panic!("response header block does not decode: {e}"));
        if response.status.is_some() {
            response.trailers = Some(fields);
            return;
        }
        let status = fields
            .iter()
            .find(|f| f.name.as_deref() == Some(":status"))
            .and_then(|f| f.value.as_deref())
            .map(|s| s.parse::<u16>().expect("a numeric :status"));
        if status.is_some_and(|s| s >= 200) {
            response.status = status;
            response.fields = fields;
        }
    }
}
