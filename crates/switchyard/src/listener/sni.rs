//! TLS ClientHello peek for `tls-passthrough` listeners.
//!
//! A passthrough listener must choose a cluster before it forwards a single byte, and the
//! only routing key it has is what the client puts in the clear in its first flight: the
//! `server_name` (SNI) and, for logs and future matching, ALPN and the offered versions.
//! This module reads those from the bytes received so far, without decrypting or
//! answering anything, so that the same bytes can then be relayed unchanged to the chosen
//! endpoint. It parses untrusted input: it never panics, never indexes out of range, and
//! never buffers more than [`MAX_CLIENT_HELLO`] bytes (the caller stops reading there too).
//!
//! [`route`] is the matching rule of SPEC's `routes = [{ sni = ... }]`: exact name, then
//! `*.suffix` (exactly one extra label), then `"*"`.

/// The most bytes a ClientHello may occupy on the wire, TLS record headers included.
///
/// A ClientHello is a single handshake message, but it may be fragmented over several
/// records of at most 2^14 bytes each (large post-quantum key shares already produce
/// hellos of 1.5-2 KiB; RFC 8446 allows up to 2^24). 64 KiB, about four full records, is
/// far above anything a real client sends, and small enough to hold per connection
/// during the peek. A hello that would not fit is [`Peek::Malformed`].
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// The largest TLS plaintext record payload (RFC 8446 section 5.1).
const MAX_RECORD_PAYLOAD: usize = 1 << 14;

const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const NAME_TYPE_HOST_NAME: u8 = 0;
/// A DNS name without its trailing dot is at most 253 characters.
const MAX_HOST_NAME_LEN: usize = 253;

/// The outcome of looking at the first bytes a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// The bytes so far are a valid beginning of a ClientHello: read more and call again
    /// with everything received (never more than [`MAX_CLIENT_HELLO`] bytes are needed).
    NeedMore,
    /// A complete, well-formed ClientHello.
    Complete(ClientHelloInfo),
    /// The bytes are not a TLS handshake at all (plain HTTP, an SSLv2-compatible hello,
    /// an alert, ...). The reason is for logs.
    NotTls(&'static str),
    /// The bytes start like a TLS ClientHello but are broken (a length that does not add
    /// up, a forbidden value, a hello larger than [`MAX_CLIENT_HELLO`]). The reason is for
    /// logs.
    Malformed(&'static str),
}

/// What a passthrough listener learns from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The `host_name` of the server_name extension, lowercased, without a trailing dot;
    /// `None` when the client sent no server_name extension (or one without a host name).
    pub server_name: Option<String>,
    /// The ALPN protocol names in the client's order (empty without the extension).
    /// Names that are not UTF-8 are kept lossily (they only serve logs and matching).
    pub alpn: Vec<String>,
    /// Bytes of the input taken by the hello: every TLS record that carries a part of it,
    /// record headers included. Always at most the input's length.
    pub record_len: usize,
    /// The ClientHello's `legacy_version` (0x0303 for TLS 1.2 and 1.3 clients).
    pub legacy_version: u16,
    /// The supported_versions extension as sent (GREASE values included); empty without
    /// the extension (a TLS 1.2-only client).
    pub supported_versions: Vec<u16>,
}

/// Looks for a complete ClientHello at the start of `buf`, the bytes read so far from a
/// client.
///
/// Call it again with the whole buffer after each read until it returns something other
/// than [`Peek::NeedMore`]. Bytes that cannot begin a TLS handshake give
/// [`Peek::NotTls`] as soon as the first offending byte is seen, without waiting for more.
pub fn peek_client_hello(buf: &[u8]) -> Peek {
    // The handshake message reassembled from record payloads. Bounded by MAX_CLIENT_HELLO
    // because every byte in it also sits in `buf` below that offset.
    let mut handshake: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        if let Some(reason) = check_record_header_prefix(rest, pos == 0) {
            return reason;
        }
        if rest.len() < RECORD_HEADER_LEN {
            return Peek::NeedMore;
        }
        let payload_len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if payload_len == 0 {
            return Peek::Malformed("empty handshake record");
        }
        if payload_len > MAX_RECORD_PAYLOAD {
            return Peek::Malformed("TLS record longer than 2^14 bytes");
        }
        let record_end = pos + RECORD_HEADER_LEN + payload_len;
        if record_end > MAX_CLIENT_HELLO {
            return Peek::Malformed("ClientHello larger than MAX_CLIENT_HELLO");
        }
        let available = &rest[RECORD_HEADER_LEN..rest.len().min(RECORD_HEADER_LEN + payload_len)];
        handshake.extend_from_slice(available);

        if let Some(&msg_type) = handshake.first() {
            if msg_type != HANDSHAKE_CLIENT_HELLO {
                return Peek::NotTls("first handshake message is not a ClientHello");
            }
        }
        if handshake.len() >= HANDSHAKE_HEADER_LEN {
            let body_len = usize::from(handshake[1]) << 16
                | usize::from(handshake[2]) << 8
                | usize::from(handshake[3]);
            let message_len = HANDSHAKE_HEADER_LEN + body_len;
            // Each record adds at least its header; the message alone must fit already.
            if message_len + RECORD_HEADER_LEN > MAX_CLIENT_HELLO {
                return Peek::Malformed("ClientHello larger than MAX_CLIENT_HELLO");
            }
            if handshake.len() >= message_len {
                if available.len() < payload_len {
                    // The hello is complete but its record is not: consume the whole
                    // record so the caller relays record boundaries intact.
                    return Peek::NeedMore;
                }
                let body = &handshake[HANDSHAKE_HEADER_LEN..message_len];
                return match parse_client_hello_body(body, record_end) {
                    Ok(info) => Peek::Complete(info),
                    Err(reason) => Peek::Malformed(reason),
                };
            }
        }
        if available.len() < payload_len {
            return Peek::NeedMore;
        }
        pos = record_end;
    }
}

/// Checks the bytes of a record header that are present (type, then version).
fn check_record_header_prefix(rest: &[u8], first: bool) -> Option<Peek> {
    let reject = |reason| {
        Some(if first {
            Peek::NotTls(reason)
        } else {
            Peek::Malformed(reason)
        })
    };
    if let Some(&content_type) = rest.first() {
        if content_type != CONTENT_TYPE_HANDSHAKE {
            return reject(if first {
                "first byte is not a TLS handshake record"
            } else {
                "non-handshake record inside a ClientHello"
            });
        }
    }
    if let Some(&major) = rest.get(1) {
        if major != 3 {
            return reject("TLS record version is not 3.x");
        }
    }
    if let Some(&minor) = rest.get(2) {
        if !(1..=4).contains(&minor) {
            return reject("TLS record version outside 0x0301..=0x0304");
        }
    }
    None
}

/// A bounds-checked reader over a byte slice: every read returns `None` past the end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// Parses the body of a ClientHello handshake message (after its 4-byte header).
fn parse_client_hello_body(
    body: &[u8],
    record_len: usize,
) -> Result<ClientHelloInfo, &'static str> {
    let mut r = Reader::new(body);
    let legacy_version = r
        .u16()
        .ok_or("ClientHello truncated before legacy_version")?;
    r.take(32).ok_or("ClientHello truncated in random")?;
    let session_id = r.vec8().ok_or("session id length past the end")?;
    if session_id.len() > 32 {
        return Err("session id longer than 32 bytes");
    }
    let suites = r.vec16().ok_or("cipher suites length past the end")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("cipher suites length is zero or odd");
    }
    let compression = r.vec8().ok_or("compression methods length past the end")?;
    if compression.is_empty() {
        return Err("no compression method");
    }
    let mut info = ClientHelloInfo {
        server_name: None,
        alpn: Vec::new(),
        record_len,
        legacy_version,
        supported_versions: Vec::new(),
    };
    if r.is_empty() {
        // A hello without extensions (SSLv3 / early TLS style): legal, nothing to route on.
        return Ok(info);
    }
    let extensions = r.vec16().ok_or("extensions length past the end")?;
    if !r.is_empty() {
        return Err("bytes after the extensions");
    }
    let (mut seen_sni, mut seen_alpn, mut seen_versions) = (false, false, false);
    let mut exts = Reader::new(extensions);
    while !exts.is_empty() {
        let ext_type = exts.u16().ok_or("extension header truncated")?;
        let data = exts.vec16().ok_or("extension length past the end")?;
        match ext_type {
            EXT_SERVER_NAME => {
                if std::mem::replace(&mut seen_sni, true) {
                    return Err("duplicate server_name extension");
                }
                info.server_name = parse_server_name(data)?;
            }
            EXT_ALPN => {
                if std::mem::replace(&mut seen_alpn, true) {
                    return Err("duplicate ALPN extension");
                }
                info.alpn = parse_alpn(data)?;
            }
            EXT_SUPPORTED_VERSIONS => {
                if std::mem::replace(&mut seen_versions, true) {
                    return Err("duplicate supported_versions extension");
                }
                info.supported_versions = parse_supported_versions(data)?;
            }
            _ => {}
        }
    }
    Ok(info)
}

/// The server_name extension (RFC 6066 section 3): a list of (name_type, name).
fn parse_server_name(data: &[u8]) -> Result<Option<String>, &'static str> {
    let mut outer = Reader::new(data);
    let list = outer
        .vec16()
        .ok_or("server_name list length past the end")?;
    if !outer.is_empty() {
        return Err("bytes after the server_name list");
    }
    if list.is_empty() {
        return Err("empty server_name list");
    }
    let mut r = Reader::new(list);
    let mut host: Option<String> = None;
    while !r.is_empty() {
        let name_type = r.u8().ok_or("server_name entry truncated")?;
        let name = r.vec16().ok_or("server_name length past the end")?;
        if name_type != NAME_TYPE_HOST_NAME {
            continue;
        }
        if host.is_some() {
            return Err("more than one host_name in server_name");
        }
        host = Some(normalise_host_name(name)?);
    }
    Ok(host)
}

/// Lowercases a host name and drops one trailing dot; rejects empty and non-ASCII names.
fn normalise_host_name(name: &[u8]) -> Result<String, &'static str> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() {
        return Err("empty host_name");
    }
    if name.len() > MAX_HOST_NAME_LEN {
        return Err("host_name longer than 253 bytes");
    }
    if !name.iter().all(u8::is_ascii_graphic) {
        return Err("host_name is not printable ASCII");
    }
    Ok(name
        .iter()
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect())
}

/// The ALPN extension (RFC 7301 section 3.1): a non-empty list of non-empty names.
fn parse_alpn(data: &[u8]) -> Result<Vec<String>, &'static str> {
    let mut outer = Reader::new(data);
    let list = outer.vec16().ok_or("ALPN list length past the end")?;
    if !outer.is_empty() {
        return Err("bytes after the ALPN list");
    }
    if list.is_empty() {
        return Err("empty ALPN list");
    }
    let mut r = Reader::new(list);
    let mut names = Vec::new();
    while !r.is_empty() {
        let name = r.vec8().ok_or("ALPN name length past the end")?;
        if name.is_empty() {
            return Err("empty ALPN protocol name");
        }
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(names)
}

/// The supported_versions extension of a ClientHello (RFC 8446 section 4.2.1).
fn parse_supported_versions(data: &[u8]) -> Result<Vec<u16>, &'static str> {
    let mut outer = Reader::new(data);
    let list = outer
        .vec8()
        .ok_or("supported_versions length past the end")?;
    if !outer.is_empty() {
        return Err("bytes after the supported_versions list");
    }
    if list.is_empty() || list.len() % 2 != 0 {
        return Err("supported_versions length is zero or odd");
    }
    Ok(list
        .chunks_exact(2)
        .map(|v| u16::from_be_bytes([v[0], v[1]]))
        .collect())
}

/// Chooses the route for a server name: an exact name beats `*.suffix`, which beats `"*"`.
///
/// Patterns and names compare case-insensitively and a trailing dot is ignored on both.
/// `*.example.com` matches exactly one extra label: `a.example.com`, but neither
/// `example.com` nor `a.b.example.com`. Among equally specific patterns the first one
/// listed wins. A hello without SNI (`sni = None`) matches only `"*"`; `None` means no
/// route (SPEC 3.1: the connection is closed).
pub fn route<'a, T>(routes: &'a [(String, T)], sni: Option<&str>) -> Option<&'a T> {
    let name = sni.map(|s| s.strip_suffix('.').unwrap_or(s));
    let mut wildcard = None;
    let mut catch_all = None;
    for (pattern, target) in routes {
        let pattern = pattern.strip_suffix('.').unwrap_or(pattern);
        if pattern == "*" {
            catch_all = catch_all.or(Some(target));
            continue;
        }
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            continue;
        };
        if let Some(suffix) = pattern.strip_prefix("*.") {
            if wildcard.is_none() && matches_one_label(name, suffix) {
                wildcard = Some(target);
            }
        } else if pattern.eq_ignore_ascii_case(name) {
            return Some(target);
        }
    }
    wildcard.or(catch_all)
}

/// Whether `name` is exactly one non-empty label followed by `.suffix`.
fn matches_one_label(name: &str, suffix: &str) -> bool {
    if suffix.is_empty() || name.len() < suffix.len() + 2 {
        return false;
    }
    let split = name.len() - suffix.len();
    let (Some(head), Some(tail)) = (name.get(..split), name.get(split..)) else {
        return false;
    };
    let Some(label) = head.strip_suffix('.') else {
        return false;
    };
    !label.is_empty() && !label.contains('.') && tail.eq_ignore_ascii_case(suffix)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/client_hello");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }

    fn complete(buf: &[u8]) -> ClientHelloInfo {
        match peek_client_hello(buf) {
            Peek::Complete(info) => info,
            other => panic!("expected Complete, got {other:?}"),
        }
    }

    /// A ClientHello handshake message (header included) with the given extensions.
    fn hello_message(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0xab; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut exts = Vec::new();
        for (t, data) in extensions {
            exts.extend_from_slice(&t.to_be_bytes());
            exts.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            exts.extend_from_slice(data);
        }
        body.extend_from_slice(&u16::try_from(exts.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&exts);
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut msg = vec![1, len[1], len[2], len[3]];
        msg.extend_from_slice(&body);
        msg
    }

    /// Frames handshake bytes into records, cutting at the given payload offsets.
    fn records(handshake: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&handshake.len())) {
            let part = &handshake[start..end];
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
            out.extend_from_slice(part);
            start = end;
        }
        out
    }

    fn sni_ext(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
        entry.extend_from_slice(name);
        let mut data = u16::try_from(entry.len()).unwrap().to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        (EXT_SERVER_NAME, data)
    }

    fn single_record(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        records(&hello_message(extensions), &[])
    }

    #[test]
    fn openssl_tls13_hello_gives_sni_alpn_and_versions() {
        let buf = fixture("openssl_tls13_db_alpn.bin");
        let info = complete(&buf);
        assert_eq!(
            info,
            ClientHelloInfo {
                server_name: Some("db.example.com".into()),
                alpn: vec!["h2".into(), "http/1.1".into()],
                record_len: 338,
                legacy_version: 0x0303,
                supported_versions: vec![0x0304, 0x0303, 0x0302, 0x0301],
            }
        );
    }

    #[test]
    fn openssl_tls12_hello_has_no_supported_versions() {
        let info = complete(&fixture("openssl_tls12_legacy.bin"));
        assert_eq!(
            info,
            ClientHelloInfo {
                server_name: Some("legacy.example.com".into()),
                alpn: vec![],
                record_len: 215,
                legacy_version: 0x0303,
                supported_versions: vec![],
            }
        );
    }

    #[test]
    fn curl_hello_offers_h2_and_http11() {
        let info = complete(&fixture("curl_api.bin"));
        assert_eq!(
            info,
            ClientHelloInfo {
                server_name: Some("api.example.com".into()),
                alpn: vec!["h2".into(), "http/1.1".into()],
                record_len: 517,
                legacy_version: 0x0303,
                supported_versions: vec![0x0304, 0x0303, 0x0302, 0x0301],
            }
        );
    }

    #[test]
    fn hello_without_sni_extension_has_no_server_name() {
        let info = complete(&fixture("openssl_no_sni.bin"));
        assert_eq!(
            info,
            ClientHelloInfo {
                server_name: None,
                alpn: vec![],
                record_len: 297,
                legacy_version: 0x0303,
                supported_versions: vec![0x0304, 0x0303, 0x0302, 0x0301],
            }
        );
    }

    #[test]
    fn python_ssl_hello_is_parsed() {
        let info = complete(&fixture("python_ssl_py.bin"));
        assert_eq!(
            info,
            ClientHelloInfo {
                server_name: Some("py.example.com".into()),
                alpn: vec!["http/1.1".into()],
                record_len: 517,
                legacy_version: 0x0303,
                supported_versions: vec![0x0304, 0x0303],
            }
        );
    }

    #[test]
    fn rustls_hello_offers_only_tls13() {
        let info = complete(&fixture("rustls_0_23_ring.bin"));
        assert_eq!(
            info,
            ClientHelloInfo {
                server_name: Some("rustls.example.com".into()),
                alpn: vec!["h2".into(), "http/1.1".into()],
                record_len: 243,
                legacy_version: 0x0303,
                supported_versions: vec![0x0304],
            }
        );
    }

    const ALL_FIXTURES: [&str; 6] = [
        "openssl_tls13_db_alpn.bin",
        "openssl_tls12_legacy.bin",
        "curl_api.bin",
        "openssl_no_sni.bin",
        "python_ssl_py.bin",
        "rustls_0_23_ring.bin",
    ];

    #[test]
    fn every_prefix_of_a_captured_hello_needs_more() {
        for name in ALL_FIXTURES {
            let buf = fixture(name);
            let full = complete(&buf);
            for cut in 0..buf.len() {
                assert_eq!(
                    peek_client_hello(&buf[..cut]),
                    Peek::NeedMore,
                    "{name} at {cut}"
                );
            }
            // Bytes after the hello (the client's next flight) do not change the answer.
            let mut more = buf.clone();
            more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
            assert_eq!(complete(&more), full, "{name} with trailing bytes");
        }
    }

    #[test]
    fn hello_split_across_two_records_at_every_offset_is_reassembled() {
        for name in ALL_FIXTURES {
            let buf = fixture(name);
            let mut expected = complete(&buf);
            expected.record_len = buf.len() + RECORD_HEADER_LEN;
            let handshake = &buf[RECORD_HEADER_LEN..];
            for cut in 1..handshake.len() {
                let framed = records(handshake, &[cut]);
                assert_eq!(complete(&framed), expected, "{name} cut at {cut}");
                assert_eq!(
                    peek_client_hello(&framed[..framed.len() - 1]),
                    Peek::NeedMore,
                    "{name} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn hello_in_one_byte_records_is_reassembled() {
        let buf = fixture("openssl_tls13_db_alpn.bin");
        let handshake = &buf[RECORD_HEADER_LEN..];
        let cuts: Vec<usize> = (1..handshake.len()).collect();
        let framed = records(handshake, &cuts);
        let mut expected = complete(&buf);
        expected.record_len = framed.len();
        assert_eq!(complete(&framed), expected);
        for cut in 0..framed.len() {
            assert_eq!(
                peek_client_hello(&framed[..cut]),
                Peek::NeedMore,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn non_tls_first_bytes_are_rejected_at_once() {
        assert_eq!(peek_client_hello(b""), Peek::NeedMore);
        assert!(matches!(peek_client_hello(b"G"), Peek::NotTls(_)));
        assert!(matches!(
            peek_client_hello(b"GET / HTTP/1.1\r\n"),
            Peek::NotTls(_)
        ));
        // SSLv2-compatible ClientHello: a 2-byte length with the high bit set, then type 1.
        assert!(matches!(
            peek_client_hello(&[0x80, 0x2e, 0x01, 0x03, 0x01]),
            Peek::NotTls(_)
        ));
        // An alert record.
        assert!(matches!(
            peek_client_hello(&[21, 3, 3, 0, 2, 2, 40]),
            Peek::NotTls(_)
        ));
        // Record version 2.0 and 3.5.
        assert!(matches!(peek_client_hello(&[22, 2]), Peek::NotTls(_)));
        assert!(matches!(peek_client_hello(&[22, 3, 5]), Peek::NotTls(_)));
        assert!(matches!(peek_client_hello(&[22, 3, 0]), Peek::NotTls(_)));
        // A ServerHello where a ClientHello belongs.
        assert!(matches!(
            peek_client_hello(&[22, 3, 3, 0, 4, 2]),
            Peek::NotTls(_)
        ));
        // Valid prefixes still wait.
        assert_eq!(peek_client_hello(&[22, 3, 1, 0]), Peek::NeedMore);
        assert_eq!(peek_client_hello(&[22, 3, 1, 0, 10, 1, 0]), Peek::NeedMore);
    }

    #[test]
    fn broken_record_layer_is_malformed() {
        assert_eq!(
            peek_client_hello(&[22, 3, 1, 0, 0]),
            Peek::Malformed("empty handshake record")
        );
        assert_eq!(
            peek_client_hello(&[22, 3, 1, 0x40, 0x01]),
            Peek::Malformed("TLS record longer than 2^14 bytes")
        );
        // A handshake length that cannot fit in MAX_CLIENT_HELLO.
        assert_eq!(
            peek_client_hello(&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
            Peek::Malformed("ClientHello larger than MAX_CLIENT_HELLO")
        );
        // A second record that is not a handshake record.
        let handshake = hello_message(&[sni_ext(b"a.example.com")]);
        let mut framed = records(&handshake[..10], &[]);
        framed.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(
            peek_client_hello(&framed),
            Peek::Malformed("non-handshake record inside a ClientHello")
        );
    }

    #[test]
    fn many_small_records_cannot_exceed_the_bound() {
        // A huge announced hello fed in small records stops at MAX_CLIENT_HELLO.
        let mut buf = vec![22, 3, 1, 0, 4, 1, 0, 0xfe, 0x00];
        while buf.len() <= MAX_CLIENT_HELLO {
            buf.extend_from_slice(&[22, 3, 1, 0, 100]);
            buf.extend_from_slice(&[0; 100]);
        }
        assert_eq!(
            peek_client_hello(&buf),
            Peek::Malformed("ClientHello larger than MAX_CLIENT_HELLO")
        );
    }

    #[test]
    fn server_name_is_lowercased_and_trailing_dot_dropped() {
        let info = complete(&single_record(&[sni_ext(b"DB.Example.COM.")]));
        assert_eq!(info.server_name.as_deref(), Some("db.example.com"));
        assert_eq!(info.alpn, Vec::<String>::new());
        assert_eq!(info.supported_versions, Vec::<u16>::new());
    }

    #[test]
    fn bad_server_names_are_malformed() {
        for (name, reason) in [
            (&b""[..], "empty host_name"),
            (b".", "empty host_name"),
            (
                "d\u{e9}j\u{e0}.example".as_bytes(),
                "host_name is not printable ASCII",
            ),
            (b"a b.example", "host_name is not printable ASCII"),
            (b"a\0.example", "host_name is not printable ASCII"),
            (&[b'a'; 254], "host_name longer than 253 bytes"),
        ] {
            assert_eq!(
                peek_client_hello(&single_record(&[sni_ext(name)])),
                Peek::Malformed(reason),
                "{name:?}"
            );
        }
        let twice = [sni_ext(b"a.example"), sni_ext(b"b.example")];
        assert_eq!(
            peek_client_hello(&single_record(&twice)),
            Peek::Malformed("duplicate server_name extension")
        );
        // Two host_name entries in one list.
        let mut list = Vec::new();
        for name in [b"a.example", b"b.example"] {
            list.push(0);
            list.extend_from_slice(&9u16.to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut data = u16::try_from(list.len()).unwrap().to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        assert_eq!(
            peek_client_hello(&single_record(&[(0, data)])),
            Peek::Malformed("more than one host_name in server_name")
        );
        // A server_name list length beyond the extension.
        assert_eq!(
            peek_client_hello(&single_record(&[(0, vec![0, 9, 0, 0, 1, b'a'])])),
            Peek::Malformed("server_name list length past the end")
        );
    }

    #[test]
    fn alpn_and_supported_versions_are_checked() {
        let alpn = (EXT_ALPN, vec![0, 6, 2, b'h', b'2', 2, b'x', b'y']);
        let versions = (EXT_SUPPORTED_VERSIONS, vec![4, 0x7a, 0x7a, 3, 4]);
        let info = complete(&single_record(&[alpn, versions]));
        assert_eq!(info.alpn, vec!["h2".to_string(), "xy".to_string()]);
        assert_eq!(info.supported_versions, vec![0x7a7a, 0x0304]);

        for (ext, reason) in [
            ((EXT_ALPN, vec![0, 0]), "empty ALPN list"),
            ((EXT_ALPN, vec![0, 2, 0, 0]), "empty ALPN protocol name"),
            (
                (EXT_ALPN, vec![0, 3, 5, b'h', b'2']),
                "ALPN name length past the end",
            ),
            (
                (EXT_SUPPORTED_VERSIONS, vec![3, 3, 4, 3]),
                "supported_versions length is zero or odd",
            ),
            (
                (EXT_SUPPORTED_VERSIONS, vec![4, 3, 4]),
                "supported_versions length past the end",
            ),
        ] {
            assert_eq!(
                peek_client_hello(&single_record(&[ext])),
                Peek::Malformed(reason)
            );
        }
    }

    #[test]
    fn broken_hello_body_lengths_are_malformed() {
        let good = hello_message(&[sni_ext(b"a.example")]);
        // Session id length (offset 4 + 2 + 32) set to 33.
        let mut bad = good.clone();
        bad[38] = 33;
        assert!(matches!(
            peek_client_hello(&records(&bad, &[])),
            Peek::Malformed(_)
        ));
        // Extensions length one too long: runs past the message.
        let mut bad = good.clone();
        let ext_len_at = 4 + 2 + 32 + 1 + 4 + 2;
        bad[ext_len_at + 1] += 1;
        assert_eq!(
            peek_client_hello(&records(&bad, &[])),
            Peek::Malformed("extensions length past the end")
        );
        // Extensions length one too short: a stray byte after them.
        let mut bad = good.clone();
        bad[ext_len_at + 1] -= 1;
        assert!(matches!(
            peek_client_hello(&records(&bad, &[])),
            Peek::Malformed(_)
        ));
        // A hello body cut short (handshake length says 10).
        let short = [1, 0, 0, 10, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            peek_client_hello(&records(&short, &[])),
            Peek::Malformed("ClientHello truncated in random")
        );
        // A hello without extensions is legal.
        let mut bare = vec![1, 0, 0, 41, 3, 3];
        bare.extend_from_slice(&[0; 32]);
        bare.extend_from_slice(&[0, 0, 2, 0, 0x2f, 1, 0]);
        let info = complete(&records(&bare, &[]));
        assert_eq!(info.server_name, None);
        assert_eq!(info.record_len, 5 + 45);
    }

    fn routes() -> Vec<(String, &'static str)> {
        vec![
            ("*.example.com".into(), "edge"),
            ("db.example.com".into(), "db"),
            ("*".into(), "default"),
            ("*.EXAMPLE.com".into(), "shadowed"),
            ("Exact.Example.Org.".into(), "org"),
        ]
    }

    #[test]
    fn exact_beats_wildcard_beats_catch_all() {
        let r = routes();
        assert_eq!(route(&r, Some("db.example.com")), Some(&"db"));
        assert_eq!(route(&r, Some("DB.EXAMPLE.COM")), Some(&"db"));
        assert_eq!(route(&r, Some("db.example.com.")), Some(&"db"));
        assert_eq!(route(&r, Some("api.example.com")), Some(&"edge"));
        assert_eq!(route(&r, Some("exact.example.org")), Some(&"org"));
        assert_eq!(route(&r, Some("other.net")), Some(&"default"));
        assert_eq!(route(&r, None), Some(&"default"));
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let r = vec![("*.example.com".to_string(), 1)];
        assert_eq!(route(&r, Some("a.example.com")), Some(&1));
        assert_eq!(route(&r, Some("A.Example.Com")), Some(&1));
        assert_eq!(route(&r, Some("example.com")), None);
        assert_eq!(route(&r, Some(".example.com")), None);
        assert_eq!(route(&r, Some("a.b.example.com")), None);
        assert_eq!(route(&r, Some("aexample.com")), None);
        assert_eq!(route(&r, Some("a.example.com.evil")), None);
        assert_eq!(route(&r, None), None);
        assert_eq!(route::<i32>(&[], Some("a.example.com")), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Peek::Complete(info) = peek_client_hello(&buf) {
                prop_assert!(info.record_len <= buf.len());
            }
        }

        #[test]
        fn bytes_after_a_record_header_never_panic(
            version in 1u8..=4,
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut buf = vec![22, 3, version];
            buf.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
            buf.extend_from_slice(&body);
            if let Peek::Complete(info) = peek_client_hello(&buf) {
                prop_assert!(info.record_len <= buf.len());
            }
        }

        #[test]
        fn mutated_captured_hello_never_panics(
            at in 0usize..338,
            value in any::<u8>(),
            cut in 0usize..=338,
        ) {
            let mut buf = fixture("openssl_tls13_db_alpn.bin");
            buf[at] = value;
            buf.truncate(cut);
            if let Peek::Complete(info) = peek_client_hello(&buf) {
                prop_assert!(info.record_len <= buf.len());
            }
        }
    }
}
