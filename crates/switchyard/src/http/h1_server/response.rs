//! The bytes of a response to an HTTP/1.1 client: how its body is delimited (RFC 9112
//! section 6.3, from the sending side), whether the connection stays open after it
//! (section 9.3), and the head itself. Pure: the loop in [`super`] writes what this
//! encodes.

use bytes::{BufMut, BytesMut};
use http::{HeaderValue, StatusCode};

use crate::http::h1_codec::{
    self, BodyEncoding, ConnectionTokens, KnownField, known_field, put_field,
};
use crate::http::raw_fields::{Head, RawFields};

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304, a switch of protocols).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked (HTTP/1.1 clients, length unknown).
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients, length unknown).
    UntilClose,
}

impl Framing {
    /// How the body's frames go on the wire.
    pub fn encoding(self) -> BodyEncoding {
        match self {
            Framing::None => BodyEncoding::Discard,
            Framing::Length(n) => BodyEncoding::Length(n),
            Framing::Chunked => BodyEncoding::Chunked,
            Framing::UntilClose => BodyEncoding::Raw,
        }
    }
}

/// What the request and the connection say about the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// The request was HEAD.
    pub head_request: bool,
    /// The client spoke HTTP/1.0.
    pub http10: bool,
    /// The client and the server both let the connection carry another request.
    pub keep_alive: bool,
    /// The response switches protocols (the connection goes to the tunnel after it).
    pub switching: bool,
}

/// How one response is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The body's framing.
    pub framing: Framing,
    /// A `Content-Length` field to add (the response did not declare one).
    pub declare_length: Option<u64>,
    /// The connection stays open after this response.
    pub keep_alive: bool,
}

/// What a response's own fields say about how it is sent, read in one pass over them.
#[derive(Debug, Default)]
pub struct ResponseFields {
    /// A `Content-Length` field: `Some(None)` when it does not read as one length.
    pub declared_length: Option<Option<u64>>,
    /// A `Date` field.
    pub date: bool,
    /// The `Connection` fields.
    pub connection: ConnectionTokens,
}

impl ResponseFields {
    /// Reads `head`'s fields once: the raw ones as the parser summed them up (they never
    /// hold a `Connection` field: the parser consumes one of management tokens, and keeps
    /// no fields raw beside any other), the map's one by one.
    pub fn of(head: Head<'_>) -> ResponseFields {
        let mut fields = ResponseFields::default();
        if let Some(raw) = head.raw {
            let summary = raw.summary();
            fields.declared_length = summary.content_length;
            fields.date = summary.date;
        }
        for (name, value) in head.map {
            fields.read(name.as_str().as_bytes(), value.as_bytes());
        }
        fields
    }

    fn read(&mut self, name: &[u8], value: &[u8]) {
        match known_field(name) {
            Some(KnownField::ContentLength) => {
                let length = h1_codec::parse_length(value);
                self.declared_length = match self.declared_length {
                    Some(seen) if seen != length => Some(None),
                    _ => Some(length),
                };
            }
            Some(KnownField::Date) => self.date = true,
            Some(KnownField::Connection) => self.connection.add(value),
            _ => {}
        }
    }

    fn says_close(&self) -> bool {
        !self.connection.keep_alive(false)
    }
}

/// How a response with `status` and `fields` is sent in `exchange`; `known_length` is
/// the body's length when it is known and the response did not declare one.
pub fn plan(
    status: StatusCode,
    fields: &ResponseFields,
    known_length: Option<u64>,
    exchange: Exchange,
) -> Plan {
    let keep_alive = exchange.keep_alive && !fields.says_close();
    if exchange.switching {
        return Plan {
            framing: Framing::None,
            declare_length: None,
            keep_alive: false,
        };
    }
    let bodiless = exchange.head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if bodiless {
        return Plan {
            framing: Framing::None,
            declare_length: known_length.filter(|_| exchange.head_request),
            keep_alive,
        };
    }
    if let Some(Some(length)) = fields.declared_length {
        return Plan {
            framing: Framing::Length(length),
            declare_length: None,
            keep_alive,
        };
    }
    if let Some(length) = known_length {
        return Plan {
            framing: Framing::Length(length),
            declare_length: Some(length),
            keep_alive,
        };
    }
    if exchange.http10 {
        Plan {
            framing: Framing::UntilClose,
            declare_length: None,
            keep_alive: false,
        }
    } else {
        Plan {
            framing: Framing::Chunked,
            declare_length: None,
            keep_alive,
        }
    }
}

/// Appends the head of a response with `status`, `headers` (read as `fields`), sent as
/// `plan` says, to `out`: the status line, the fields (a `Transfer-Encoding` is the
/// server's to set, and a `Content-Length` the framing does not use is dropped), then
/// `Date` (`date`) unless the response has one, the framing field, and the `Connection`
/// field that tells the client whether the connection stays open.
pub fn encode_head(
    status: StatusCode,
    head: Head<'_>,
    fields: &ResponseFields,
    plan: &Plan,
    exchange: &Exchange,
    date: &HeaderValue,
    out: &mut BytesMut,
) {
    let map_size: usize = head
        .map
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    out.reserve(head.raw.map_or(0, RawFields::head_len) + map_size + 128);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    let drop_length = plan.declare_length.is_some()
        || matches!(plan.framing, Framing::Chunked | Framing::UntilClose);
    // The upstream's raw fields never hold a `Transfer-Encoding` (the codec consumes it).
    if let Some(raw) = head.raw {
        raw.write_to(out, drop_length);
    }
    for (name, value) in head.map {
        let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
        match known_field(name) {
            Some(KnownField::TransferEncoding) => {}
            Some(KnownField::ContentLength) if drop_length => {}
            _ => put_field(out, name, value),
        }
    }
    if !fields.date {
        put_field(out, b"date", date.as_bytes());
    }
    if let Some(length) = plan.declare_length {
        put_field(
            out,
            b"content-length",
            itoa::Buffer::new().format(length).as_bytes(),
        );
    }
    if plan.framing == Framing::Chunked {
        put_field(out, b"transfer-encoding", b"chunked");
    }
    if !exchange.switching {
        if !plan.keep_alive && !fields.says_close() {
            put_field(out, b"connection", b"close");
        } else if plan.keep_alive && exchange.http10 {
            put_field(out, b"connection", b"keep-alive");
        }
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::HeaderMap;

    use super::*;

    const GET11: Exchange = Exchange {
        head_request: false,
        http10: false,
        keep_alive: true,
        switching: false,
    };

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    /// Encodes the response an upstream sent as `upstream` (its fields kept raw, with the
    /// request id `id` beside them) with `added` in the map, for a GET over HTTP/1.1 whose
    /// body length is `known`.
    fn encoded_raw(
        upstream: &str,
        id: Option<&'static str>,
        added: &[(&'static str, &'static str)],
        known: Option<u64>,
    ) -> String {
        let parsed = h1_codec::parse_response_head(&mut BytesMut::from(upstream), false)
            .unwrap()
            .unwrap();
        let mut raw = parsed.raw.expect("kept raw");
        if let Some(id) = id {
            raw.set_request_id(HeaderValue::from_static(id));
        }
        let raw = &*raw;
        let map = headers(added);
        let head = Head {
            map: &map,
            raw: Some(raw),
        };
        let fields = ResponseFields::of(head);
        let plan = plan(parsed.status, &fields, known, GET11);
        let mut out = BytesMut::new();
        let date = HeaderValue::from_static("Mon, 07 Dec 2026 08:00:00 GMT");
        encode_head(parsed.status, head, &fields, &plan, &GET11, &date, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn raw_fields_go_out_as_they_came_before_the_added_ones_and_count_as_the_responses_own() {
        // Its own Date and Content-Length: no Date added, the length is the declared one.
        assert_eq!(
            encoded_raw(
                "HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 5\r\nDate: then\r\nConnection: keep-alive\r\n\r\n",
                Some("abc"),
                &[("x-map", "1")],
                Some(5),
            ),
            "HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 5\r\nDate: then\r\nx-request-id: abc\r\nx-map: 1\r\n\r\n"
        );
        // Chunked upstream, length unknown: chunked to the client, our Date.
        assert_eq!(
            encoded_raw(
                "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n",
                None,
                &[],
                None,
            ),
            "HTTP/1.1 404 Not Found\r\nX-Up: 1\r\ndate: Mon, 07 Dec 2026 08:00:00 GMT\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    fn encoded(
        status: u16,
        fields: &[(&'static str, &'static str)],
        known: Option<u64>,
        exchange: Exchange,
    ) -> String {
        let status = StatusCode::from_u16(status).unwrap();
        let headers = headers(fields);
        let fields = ResponseFields::of(Head::of(&headers));
        let plan = plan(status, &fields, known, exchange);
        let mut out = BytesMut::new();
        let date = HeaderValue::from_static("Mon, 07 Dec 2026 08:00:00 GMT");
        encode_head(
            status,
            Head::of(&headers),
            &fields,
            &plan,
            &exchange,
            &date,
            &mut out,
        );
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn framing_follows_what_is_known_about_the_body() {
        let none = ResponseFields::default();
        assert_eq!(
            plan(StatusCode::OK, &none, Some(5), GET11).framing,
            Framing::Length(5)
        );
        assert_eq!(
            plan(StatusCode::OK, &none, None, GET11).framing,
            Framing::Chunked
        );
        let http10 = Exchange {
            http10: true,
            ..GET11
        };
        let until_close = plan(StatusCode::OK, &none, None, http10);
        assert_eq!(until_close.framing, Framing::UntilClose);
        assert!(!until_close.keep_alive);
        let declared = ResponseFields::of(Head::of(&headers(&[("content-length", "7")])));
        let kept = plan(StatusCode::OK, &declared, None, GET11);
        assert_eq!(
            (kept.framing, kept.declare_length),
            (Framing::Length(7), None)
        );
        for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
            assert_eq!(plan(status, &none, Some(0), GET11).framing, Framing::None);
        }
        let head = Exchange {
            head_request: true,
            ..GET11
        };
        let head_plan = plan(StatusCode::OK, &none, Some(12), head);
        assert_eq!(
            (head_plan.framing, head_plan.declare_length),
            (Framing::None, Some(12))
        );
    }

    #[test]
    fn a_head_has_the_status_line_fields_date_and_framing() {
        assert_eq!(
            encoded(200, &[("x-backend", "b1")], Some(2), GET11),
            "HTTP/1.1 200 OK\r\nx-backend: b1\r\ndate: Mon, 07 Dec 2026 08:00:00 GMT\r\ncontent-length: 2\r\n\r\n"
        );
        assert_eq!(
            encoded(502, &[("transfer-encoding", "gzip")], None, GET11),
            "HTTP/1.1 502 Bad Gateway\r\ndate: Mon, 07 Dec 2026 08:00:00 GMT\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn the_connection_field_says_what_happens_next() {
        let closing = Exchange {
            keep_alive: false,
            ..GET11
        };
        assert!(encoded(200, &[], Some(0), closing).contains("connection: close\r\n"));
        let already = encoded(400, &[("connection", "close")], Some(0), GET11);
        assert_eq!(already.matches("close").count(), 1, "{already}");
        let http10 = Exchange {
            http10: true,
            ..GET11
        };
        assert!(encoded(200, &[], Some(0), http10).contains("connection: keep-alive\r\n"));
        assert!(!encoded(200, &[], Some(0), GET11).contains("connection"));
        let switching = Exchange {
            switching: true,
            ..GET11
        };
        let switched = encoded(
            101,
            &[("connection", "upgrade"), ("upgrade", "websocket")],
            None,
            switching,
        );
        assert!(
            switched.starts_with("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n")
        );
        assert!(!switched.contains("close"));
        let close = ResponseFields::of(Head::of(&headers(&[("connection", "close")])));
        assert!(close.says_close());
        let upgrade = ResponseFields::of(Head::of(&headers(&[("connection", "upgrade")])));
        assert!(!upgrade.says_close());
        let differing = ResponseFields::of(Head::of(&headers(&[
            ("content-length", "1"),
            ("content-length", "2"),
        ])));
        assert_eq!(differing.declared_length, Some(None));
        let date = ResponseFields::of(Head::of(&headers(&[("date", "x")])));
        assert!(date.date);
        assert!(!encoded(200, &[("date", "x")], Some(0), GET11).contains("date: Mon"));
    }
}
