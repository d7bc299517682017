//! An HTTP/2 request head from its decoded fields (RFC 9113 section 8.2 and 8.3): the
//! pseudo-header fields become the method and target, the rest the header map, and every
//! rule that makes a request malformed is checked on the way. A malformed request is reset
//! (PROTOCOL_ERROR) and never forwarded; a header list past `max_header_bytes`, or with
//! more than [`MAX_HEADER_FIELDS`] fields, is answered 431 (SPEC 3.1 and 4).

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, TE, TRANSFER_ENCODING, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::http::h2_codec::hpack::{Field, FieldName};
use crate::http::{MAX_HEADER_FIELDS, h1_codec};

/// Fields a request head's map is made with room for.
const EXPECTED_FIELDS: usize = 16;

/// Why a header block cannot become a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// RFC 9113 says the request is malformed: reset the stream with PROTOCOL_ERROR.
    Malformed(&'static str),
    /// The decoded header list is larger than `max_header_bytes`, or has more than
    /// [`MAX_HEADER_FIELDS`] fields: answer 431.
    TooLarge,
}

/// A request head, checked.
#[derive(Debug)]
pub struct RequestHead {
    /// The request, with an empty body.
    pub request: Request<()>,
    /// Its `content-length`, which the DATA that follow must add up to.
    pub content_length: Option<u64>,
}

/// Collects one header block's fields as the decoder yields them.
#[derive(Debug)]
pub struct Fields {
    method: Option<HeaderValue>,
    scheme: Option<HeaderValue>,
    authority: Option<HeaderValue>,
    path: Option<HeaderValue>,
    headers: HeaderMap,
    /// A regular field was seen: pseudo-header fields may no longer follow.
    regular_seen: bool,
    /// Trailers: no pseudo-header fields at all.
    trailers: bool,
    malformed: Option<&'static str>,
    /// Fields so far (pseudo-header fields included).
    fields: usize,
    /// RFC 7541 sizes so far, and the most allowed.
    list_size: usize,
    max_list_size: usize,
}

impl Fields {
    /// Collects a request head's fields, up to `max_list_size` (RFC 7541 sizes).
    pub fn head(max_list_size: usize) -> Fields {
        Fields::new(max_list_size, false)
    }

    /// Collects a trailer section's fields.
    pub fn trailers(max_list_size: usize) -> Fields {
        Fields::new(max_list_size, true)
    }

    fn new(max_list_size: usize, trailers: bool) -> Fields {
        Fields {
            method: None,
            scheme: None,
            authority: None,
            path: None,
            headers: h1_codec::recycled_map(EXPECTED_FIELDS),
            regular_seen: false,
            trailers,
            malformed: None,
            fields: 0,
            list_size: 0,
            max_list_size,
        }
    }

    fn malformed(&mut self, why: &'static str) {
        self.malformed.get_or_insert(why);
    }

    /// Takes one decoded field of `size` (RFC 7541 4.1).
    pub fn add(&mut self, field: Field, size: usize) {
        self.list_size = self.list_size.saturating_add(size);
        self.fields += 1;
        if self.too_large() || self.malformed.is_some() {
            return;
        }
        let Field { name, value } = field;
        let slot = match name {
            FieldName::Header(name) => {
                self.regular_seen = true;
                self.add_regular(name, value);
                return;
            }
            FieldName::Malformed => return self.malformed("malformed field name or value"),
            FieldName::Status => return self.malformed(":status in a request"),
            FieldName::Method => &mut self.method,
            FieldName::Scheme => &mut self.scheme,
            FieldName::Authority => &mut self.authority,
            FieldName::Path => &mut self.path,
        };
        let again = slot.replace(value).is_some();
        if self.trailers {
            self.malformed("pseudo-header field in trailers");
        } else if self.regular_seen {
            self.malformed("pseudo-header field after a regular field");
        } else if again {
            self.malformed("repeated pseudo-header field");
        }
    }

    fn add_regular(&mut self, name: HeaderName, value: HeaderValue) {
        if is_connection_specific(&name) {
            return self.malformed("connection-specific header field");
        }
        if name == TE && value.as_bytes() != b"trailers" {
            return self.malformed("te other than trailers");
        }
        self.headers.append(name, value);
    }

    /// The trailers, checked.
    pub fn into_trailers(self) -> Result<HeaderMap, Refusal> {
        self.verdict()?;
        Ok(self.headers)
    }

    /// Past `max_header_bytes`, or past [`MAX_HEADER_FIELDS`] regular fields (the four
    /// pseudo-header fields of a request do not count, as the request line does not over
    /// HTTP/1.1).
    fn too_large(&self) -> bool {
        let pseudo = usize::from(self.method.is_some())
            + usize::from(self.scheme.is_some())
            + usize::from(self.authority.is_some())
            + usize::from(self.path.is_some());
        self.list_size > self.max_list_size
            || self.fields.saturating_sub(pseudo) > MAX_HEADER_FIELDS
    }

    fn verdict(&self) -> Result<(), Refusal> {
        if self.too_large() {
            return Err(Refusal::TooLarge);
        }
        match self.malformed {
            Some(why) => Err(Refusal::Malformed(why)),
            None => Ok(()),
        }
    }

    /// The request, checked.
    pub fn into_request(self) -> Result<RequestHead, Refusal> {
        self.verdict()?;
        let method = self.method.ok_or(Refusal::Malformed("no :method"))?;
        let method =
            Method::from_bytes(method.as_bytes()).map_err(|_| Refusal::Malformed("bad :method"))?;
        let uri = if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() {
                return Err(Refusal::Malformed(":scheme or :path in CONNECT"));
            }
            let authority = self
                .authority
                .ok_or(Refusal::Malformed("CONNECT without :authority"))?;
            let mut parts = http::uri::Parts::default();
            parts.authority = Some(authority_of(&authority)?);
            Uri::from_parts(parts).map_err(|_| Refusal::Malformed("bad :authority"))?
        } else {
            let scheme = self.scheme.ok_or(Refusal::Malformed("no :scheme"))?;
            let path = self.path.ok_or(Refusal::Malformed("no :path"))?;
            if path.is_empty() {
                return Err(Refusal::Malformed("empty :path"));
            }
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(
                Scheme::try_from(scheme.as_bytes())
                    .map_err(|_| Refusal::Malformed("bad :scheme"))?,
            );
            parts.authority = match &self.authority {
                Some(authority) => Some(authority_of(authority)?),
                None => None,
            };
            parts.path_and_query = Some(
                PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(path.as_bytes()))
                    .map_err(|_| Refusal::Malformed("bad :path"))?,
            );
            // A target without an authority is path-only: `Uri` wants both or neither of
            // scheme and authority.
            if parts.authority.is_none() {
                parts.scheme = None;
            }
            Uri::from_parts(parts).map_err(|_| Refusal::Malformed("bad request target"))?
        };
        let content_length = content_length(&self.headers)?;
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = self.headers;
        Ok(RequestHead {
            request,
            content_length,
        })
    }
}

fn authority_of(value: &HeaderValue) -> Result<Authority, Refusal> {
    Authority::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes()))
        .map_err(|_| Refusal::Malformed("bad :authority"))
}

/// RFC 9113 8.2.2: fields that only mean something to one HTTP/1.1 connection, refused in
/// requests and left out of responses.
pub fn is_connection_specific(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == "keep-alive"
        || name == "proxy-connection"
}

/// The declared length: one value, or several that agree (RFC 9110 8.6).
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Refusal> {
    let mut declared = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let length = h1_codec::parse_length(value.as_bytes())
            .ok_or(Refusal::Malformed("bad content-length"))?;
        match declared {
            Some(before) if before != length => {
                return Err(Refusal::Malformed("differing content-length values"));
            }
            _ => declared = Some(length),
        }
    }
    Ok(declared)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn field(name: FieldName, value: &'static str) -> Field {
        Field {
            name,
            value: HeaderValue::from_static(value),
        }
    }

    fn header(name: &'static str, value: &'static str) -> Field {
        field(FieldName::Header(HeaderName::from_static(name)), value)
    }

    fn get(path: &'static str) -> Fields {
        let mut fields = Fields::head(16 * 1024);
        fields.add(field(FieldName::Method, "GET"), 42);
        fields.add(field(FieldName::Scheme, "https"), 42);
        fields.add(field(FieldName::Authority, "example.com"), 42);
        fields.add(field(FieldName::Path, path), 42);
        fields
    }

    #[test]
    fn a_get_becomes_a_request_with_its_target_and_fields() {
        let mut fields = get("/a?b=c");
        fields.add(header("accept", "*/*"), 40);
        fields.add(header("content-length", "0"), 40);
        let head = fields.into_request().unwrap();
        assert_eq!(head.request.method(), Method::GET);
        assert_eq!(head.request.uri(), "https://example.com/a?b=c");
        assert_eq!(head.request.version(), Version::HTTP_2);
        assert_eq!(head.request.headers()["accept"], "*/*");
        assert_eq!(head.content_length, Some(0));
    }

    #[test]
    fn a_request_without_authority_has_a_path_only_target() {
        let mut fields = Fields::head(1024);
        fields.add(field(FieldName::Method, "POST"), 40);
        fields.add(field(FieldName::Scheme, "http"), 40);
        fields.add(field(FieldName::Path, "/x"), 40);
        fields.add(header("host", "h.test"), 40);
        let head = fields.into_request().unwrap();
        assert_eq!(head.request.uri(), "/x");
        assert_eq!(head.request.headers()["host"], "h.test");
    }

    #[test]
    fn each_malformed_head_is_refused_with_its_reason() {
        let cases: Vec<(Fields, &str)> = vec![
            (
                {
                    let mut f = get("/");
                    f.add(header("connection", "keep-alive"), 40);
                    f
                },
                "connection-specific header field",
            ),
            (
                {
                    let mut f = get("/");
                    f.add(header("te", "gzip"), 40);
                    f
                },
                "te other than trailers",
            ),
            (
                {
                    let mut f = get("/");
                    f.add(field(FieldName::Path, "/again"), 40);
                    f
                },
                "repeated pseudo-header field",
            ),
            (
                {
                    let mut f = get("/");
                    f.add(header("a", "b"), 40);
                    f.add(field(FieldName::Scheme, "http"), 40);
                    f
                },
                "pseudo-header field after a regular field",
            ),
            (
                {
                    let mut f = get("/");
                    f.add(field(FieldName::Malformed, ""), 40);
                    f
                },
                "malformed field name or value",
            ),
            (
                {
                    let mut f = get("/");
                    f.add(field(FieldName::Status, "200"), 40);
                    f
                },
                ":status in a request",
            ),
            (get(""), "empty :path"),
            (
                {
                    let mut f = get("/");
                    f.add(header("content-length", "5"), 40);
                    f.add(header("content-length", "6"), 40);
                    f
                },
                "differing content-length values",
            ),
            (
                {
                    let mut f = get("/");
                    f.add(header("content-length", "-1"), 40);
                    f
                },
                "bad content-length",
            ),
            (
                {
                    let mut f = Fields::head(1024);
                    f.add(field(FieldName::Method, "GET"), 40);
                    f.add(field(FieldName::Scheme, "http"), 40);
                    f
                },
                "no :path",
            ),
            (
                {
                    let mut f = Fields::head(1024);
                    f.add(field(FieldName::Scheme, "http"), 40);
                    f.add(field(FieldName::Path, "/"), 40);
                    f
                },
                "no :method",
            ),
        ];
        for (fields, why) in cases {
            assert_eq!(fields.into_request().unwrap_err(), Refusal::Malformed(why));
        }
        let te = {
            let mut f = get("/");
            f.add(header("te", "trailers"), 40);
            f
        };
        assert!(te.into_request().is_ok());
    }

    #[test]
    fn a_list_past_the_limit_is_too_large_and_keeps_no_more_fields() {
        let mut fields = Fields::head(100);
        fields.add(field(FieldName::Method, "GET"), 40);
        fields.add(field(FieldName::Scheme, "http"), 40);
        fields.add(field(FieldName::Path, "/"), 40);
        assert_eq!(fields.into_request().unwrap_err(), Refusal::TooLarge);
    }

    #[test]
    fn more_than_100_fields_are_too_large() {
        let mut fields = get("/");
        for _ in 0..MAX_HEADER_FIELDS {
            fields.add(header("x-a", "b"), 36);
        }
        assert!(fields.into_request().is_ok(), "100 fields are allowed");
        let mut fields = get("/");
        for _ in 0..=MAX_HEADER_FIELDS {
            fields.add(header("x-a", "b"), 36);
        }
        assert_eq!(fields.into_request().unwrap_err(), Refusal::TooLarge);
    }

    #[test]
    fn trailers_take_no_pseudo_header_fields() {
        let mut trailers = Fields::trailers(1024);
        trailers.add(header("grpc-status", "0"), 40);
        assert_eq!(trailers.into_trailers().unwrap()["grpc-status"], "0");
        let mut bad = Fields::trailers(1024);
        bad.add(field(FieldName::Path, "/"), 40);
        assert_eq!(
            bad.into_trailers().unwrap_err(),
            Refusal::Malformed("pseudo-header field in trailers")
        );
    }

    #[test]
    fn connect_names_only_an_authority() {
        let mut fields = Fields::head(1024);
        fields.add(field(FieldName::Method, "CONNECT"), 40);
        fields.add(field(FieldName::Authority, "db.test:5432"), 40);
        let head = fields.into_request().unwrap();
        assert_eq!(head.request.uri().authority().unwrap(), "db.test:5432");
        let mut bad = Fields::head(1024);
        bad.add(field(FieldName::Method, "CONNECT"), 40);
        bad.add(field(FieldName::Authority, "db.test:5432"), 40);
        bad.add(field(FieldName::Path, "/"), 40);
        assert_eq!(
            bad.into_request().unwrap_err(),
            Refusal::Malformed(":scheme or :path in CONNECT")
        );
    }
}
