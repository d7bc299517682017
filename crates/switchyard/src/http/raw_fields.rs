//! An HTTP/1.1 upstream's response fields passed on as they came, without a header map.
//!
//! Building an `http::HeaderMap` costs every field a name lookup, a hash and an insert, and
//! most responses go to the client untouched: nothing in the proxy reads or edits their
//! fields. So when the upstream's head holds no hop-by-hop field for the proxy to strip
//! (and at most [`MAX_RAW_FIELDS`] fields), the HTTP/1.1 codec keeps the fields as spans of
//! the head's bytes ([`RawFields`]) and the response's header map stays empty. The one
//! field the proxy adds to every response, the request id, rides with the raw fields when
//! the upstream sent none ([`RawFields::set_request_id`]). The spans travel with the
//! response body (the upstream body, then [`super::body::ResponseBody`]), which goes
//! wherever the head goes, at no cost of its own; the HTTP/1.1 server writes them out as
//! they are.
//!
//! The rule that keeps this safe: a response's fields are its map *and* its raw fields.
//! Whatever reads or edits a response's fields beyond the request id (route header edits,
//! sticky cookies, `Retry-After`, a switch of protocols, the HTTP/2 server) first moves the
//! raw fields into the map ([`into_map`], [`RawFields::append_to`]); from then on the map
//! is the whole truth.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use http_body_util::Either;

use super::forwarding::X_REQUEST_ID;
use super::h1_codec;
use super::upstream::UpstreamBody;

/// The most fields a head may have to be passed on raw (a larger one goes through a map).
pub const MAX_RAW_FIELDS: usize = 16;

/// Where one field lies in the head (a head is at most 64 KiB, so offsets fit 16 bits).
#[derive(Debug, Clone, Copy, Default)]
struct RawSpan {
    name: u16,
    name_len: u16,
    value: u16,
    value_len: u16,
}

impl RawSpan {
    fn name(self) -> std::ops::Range<usize> {
        usize::from(self.name)..usize::from(self.name) + usize::from(self.name_len)
    }

    fn value(self) -> std::ops::Range<usize> {
        usize::from(self.value)..usize::from(self.value) + usize::from(self.value_len)
    }
}

/// What a server acts on among a head's raw fields, read in the parser's one pass over
/// the head, so the server does not look at the fields again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawSummary {
    /// The `Content-Length` fields among them, if there are any: the one length they
    /// declare, or `None` when a value is not one plain length.
    pub content_length: Option<Option<u64>>,
    /// Whether a `Date` field is among them.
    pub date: bool,
}

/// A response's fields as spans of its head's bytes (names as the upstream spelled them,
/// already checked by the parser to be valid names and values).
#[derive(Debug, Clone)]
pub struct RawFields {
    head: Bytes,
    summary: RawSummary,
    /// `X-Request-Id` as the proxy adds it (the upstream sent none), written after the
    /// upstream's fields.
    request_id: Option<HeaderValue>,
    len: u8,
    spans: [RawSpan; MAX_RAW_FIELDS],
}

impl RawFields {
    /// The fields whose (name, value) byte ranges in `head` are `fields`, which `summary`
    /// describes; `None` when there are more than [`MAX_RAW_FIELDS`] or a range lies
    /// outside `head` or past 64 KiB.
    pub fn new(
        head: Bytes,
        summary: RawSummary,
        fields: impl ExactSizeIterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>)>,
    ) -> Option<RawFields> {
        if fields.len() > MAX_RAW_FIELDS {
            return None;
        }
        let mut spans = [RawSpan::default(); MAX_RAW_FIELDS];
        let mut len = 0;
        for ((name, value), span) in fields.zip(spans.iter_mut()) {
            let part = |range: std::ops::Range<usize>| {
                Some((
                    u16::try_from(range.start).ok()?,
                    u16::try_from(range.len()).ok()?,
                ))
            };
            if name.end > head.len() || value.end > head.len() {
                return None;
            }
            let (name, name_len) = part(name)?;
            let (value, value_len) = part(value)?;
            *span = RawSpan {
                name,
                name_len,
                value,
                value_len,
            };
            len += 1;
        }
        Some(RawFields {
            head,
            summary,
            request_id: None,
            len,
            spans,
        })
    }

    /// Adds `X-Request-Id: id` after the upstream's fields (for a response whose upstream
    /// sent none, see [`RawFields::contains`]). The servers write it as it is: a response
    /// whose fields are still raw has nothing in its map beside them that could hold one
    /// (whatever adds fields moves the raw ones into the map first).
    pub fn set_request_id(&mut self, id: HeaderValue) {
        self.request_id = Some(id);
    }

    /// What the server acts on among the fields.
    pub fn summary(&self) -> RawSummary {
        self.summary
    }

    fn spans(&self) -> &[RawSpan] {
        &self.spans[..usize::from(self.len)]
    }

    /// Each field's name and value, in the order they came.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        (0..self.len()).map(|index| self.field(index))
    }

    /// Field `index`'s name and value (empty past the last field).
    pub fn field(&self, index: usize) -> (&[u8], &[u8]) {
        let Some(span) = self.spans().get(index) else {
            return (&[], &[]);
        };
        // `new` checked that every span lies within the head.
        let part = |range| self.head.get(range).unwrap_or_default();
        (part(span.name()), part(span.value()))
    }

    /// The bytes of the head the fields lie in: at least the fields' own length.
    pub fn head_len(&self) -> usize {
        self.head.len()
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether one of the upstream's fields is called `name` (any case).
    pub fn contains(&self, name: &HeaderName) -> bool {
        let name = name.as_str().as_bytes();
        self.iter()
            .any(|(field, _)| field.eq_ignore_ascii_case(name))
    }

    /// Appends the fields to `out` as `name: value` lines, then the request id the proxy
    /// added; with `drop_length`, leaves out `Content-Length` (the server frames the body
    /// another way). Lines the upstream wrote as `name: value\r\n` back to back are copied
    /// as one piece.
    pub fn write_to(&self, out: &mut BytesMut, drop_length: bool) {
        let head = &self.head[..];
        let drop_length = drop_length && self.summary.content_length.is_some();
        // Bytes of the head still to be copied as they are.
        let mut run = 0..0;
        for span in self.spans() {
            let (name, value) = (span.name(), span.value());
            let (Some(name_bytes), Some(value_bytes)) =
                (head.get(name.clone()), head.get(value.clone()))
            else {
                continue;
            };
            if drop_length && name_bytes.eq_ignore_ascii_case(b"content-length") {
                flush(out, head, &mut run);
                continue;
            }
            let line_end = value.end + 2;
            let plain = head.get(name.end..value.start) == Some(b": ")
                && head.get(value.end..line_end) == Some(b"\r\n");
            if !plain {
                flush(out, head, &mut run);
                h1_codec::put_field(out, name_bytes, value_bytes);
            } else if run.end == name.start && !run.is_empty() {
                run.end = line_end;
            } else {
                flush(out, head, &mut run);
                run = name.start..line_end;
            }
        }
        flush(out, head, &mut run);
        if let Some(id) = &self.request_id {
            h1_codec::put_field(out, X_REQUEST_ID.as_str().as_bytes(), id.as_bytes());
        }
    }

    /// Appends the fields to `map` (a field whose name or value would not convert, which
    /// the parser never lets through, is left out).
    pub fn append_to(&self, map: &mut HeaderMap) {
        map.reserve(self.len() + 1);
        self.for_each_field(|name, value| {
            map.append(name, value);
        });
        if let Some(id) = &self.request_id {
            map.entry(X_REQUEST_ID).or_insert_with(|| id.clone());
        }
    }

    /// Each of the upstream's fields in order, as a (lowercase) name and a value sharing
    /// the head's bytes, without a map in between: for a writer that encodes them one by
    /// one (HPACK). A field that would not convert, which the parser never lets through,
    /// is left out. The request id is not among them ([`RawFields::request_id`]).
    pub fn for_each_field(&self, mut each: impl FnMut(HeaderName, HeaderValue)) {
        for span in self.spans() {
            if let Some((name, value)) = h1_codec::field_of(&self.head, span.name(), span.value()) {
                each(name, value);
            }
        }
    }

    /// The `X-Request-Id` the proxy adds after the upstream's fields, if it adds one.
    pub fn request_id(&self) -> Option<&HeaderValue> {
        self.request_id.as_ref()
    }
}

/// Copies `run` of `head` to `out` and empties it.
fn flush(out: &mut BytesMut, head: &[u8], run: &mut std::ops::Range<usize>) {
    if let Some(bytes) = head.get(std::mem::replace(run, 0..0)) {
        out.extend_from_slice(bytes);
    }
}

/// A response's fields as a server sends them: its map and, for an HTTP/1.1 upstream's
/// response passed on as it came, its raw fields. Both servers write the two side by side
/// (the HTTP/1.1 server as text, the HTTP/2 server through HPACK).
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// The map (what the proxy made or added).
    pub map: &'a HeaderMap,
    /// The upstream's fields, untouched.
    pub raw: Option<&'a RawFields>,
}

impl<'a> Head<'a> {
    /// Fields that are all in `map`.
    pub fn of(map: &'a HeaderMap) -> Head<'a> {
        Head { map, raw: None }
    }
}

/// Moves the raw fields of an upstream's `response`, if it has any, into its header map:
/// from then on the map holds every field.
pub fn into_map(response: &mut Response<UpstreamBody>) {
    if let Some(raw) = take(response.body_mut()) {
        raw.append_to(response.headers_mut());
    }
}

/// The raw fields an upstream body carries, taken from it.
pub fn take(body: &mut UpstreamBody) -> Option<Box<RawFields>> {
    match body {
        Either::Left(direct) => direct.take_raw_fields(),
        Either::Right(_) => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_spelling_and_order_and_convert_into_a_map() {
        let head = Bytes::from_static(b"Server: up\r\nX-A: 1\r\nx-a: 2\r\n");
        let ranges = [(0..6, 8..10), (12..15, 17..18), (20..23, 25..26)];
        let raw = RawFields::new(head, RawSummary::default(), ranges.into_iter()).unwrap();
        let fields: Vec<_> = raw.iter().collect();
        assert_eq!(
            fields,
            [
                (&b"Server"[..], &b"up"[..]),
                (&b"X-A"[..], &b"1"[..]),
                (&b"x-a"[..], &b"2"[..])
            ]
        );
        assert!(raw.contains(&http::header::SERVER));
        assert!(!raw.contains(&http::header::DATE));
        let mut raw = raw;
        raw.set_request_id(HeaderValue::from_static("id-1"));
        assert!(
            !raw.contains(&X_REQUEST_ID),
            "the proxy's id is not the upstream's"
        );
        let mut map = HeaderMap::new();
        raw.append_to(&mut map);
        assert_eq!(map["server"], "up");
        assert_eq!(map["x-request-id"], "id-1");
        assert_eq!(map.len(), 4, "four values under three names");
        let values: Vec<_> = map.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn written_fields_copy_plain_lines_as_they_are_and_rewrite_the_rest() {
        let mut upstream = BytesMut::from(
            "HTTP/1.1 200 OK\r\nServer: up\r\nX-A:1\r\nContent-Length: 2\r\n\
             Connection: keep-alive\r\nX-B: two  \r\nX-C: 3\r\nX-D: 4\r\n\r\n",
        );
        let parsed = h1_codec::parse_response_head(&mut upstream, false)
            .unwrap()
            .unwrap();
        let mut raw = parsed.raw.expect("kept raw");
        let written = |raw: &RawFields, drop_length: bool| {
            let mut out = BytesMut::new();
            raw.write_to(&mut out, drop_length);
            String::from_utf8(out.to_vec()).unwrap()
        };
        // `Connection` was consumed by the codec; `X-A:1` and the padded `X-B` are written
        // again in the plain form.
        assert_eq!(
            written(&raw, false),
            "Server: up\r\nX-A: 1\r\nContent-Length: 2\r\nX-B: two\r\nX-C: 3\r\nX-D: 4\r\n"
        );
        raw.set_request_id(HeaderValue::from_static("id-9"));
        assert_eq!(
            written(&raw, true),
            "Server: up\r\nX-A: 1\r\nX-B: two\r\nX-C: 3\r\nX-D: 4\r\nx-request-id: id-9\r\n"
        );
    }

    #[test]
    fn more_than_sixteen_fields_or_an_offset_past_64_kib_are_not_kept_raw() {
        let head = Bytes::from_static(b"a: b");
        let many = (0..MAX_RAW_FIELDS + 1).map(|_| (0..1, 3..4));
        assert!(RawFields::new(head.clone(), RawSummary::default(), many).is_none());
        let far = [(0..1, 70_000..70_001)];
        assert!(RawFields::new(head.clone(), RawSummary::default(), far.into_iter()).is_none());
        let outside = [(0..1, 3..5)];
        assert!(RawFields::new(head, RawSummary::default(), outside.into_iter()).is_none());
    }
}
