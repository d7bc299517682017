//! Header preparation for proxying: what the upstream and the client are told (SPEC 3.1
//! "Client address and forwarded headers", SPEC 4 "Forwarding headers").
//!
//! A proxy must not pass on headers that describe only the connection it received
//! (hop-by-hop headers, and whatever `Connection` names), and must say who the client was
//! without letting the client say it for itself: forwarding headers are believed only from
//! a peer inside `trusted_proxies`. An untrusted peer's `Forwarded`, `X-Forwarded-Proto`,
//! `X-Forwarded-Host` and `x-client-cert-*` are dropped and rewritten from what Switchyard
//! saw; `X-Forwarded-For` and `Via` are lists every hop appends to.
//!
//! Everything is a pure edit of a [`HeaderMap`], so each rule is tested without a socket.
//! Header names are constants, so nothing parses a fixed name per request. Trace context
//! (`traceparent`, `tracestate`) is never touched and so propagates.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};

use bytes::BytesMut;
use http::header::Entry;
use http::header::{
    CONNECTION, FORWARDED, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE, VIA,
};
use http::{HeaderMap, HeaderName, HeaderValue, Version};

use super::added_fields::{AddedFields, AddedValues};
use crate::config::model::{Cidr, HeaderOps};
use crate::tls::acceptor::ClientIdentity;

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Client-certificate headers Switchyard sets itself (`forward_client_cert`); a client
/// must never supply them.
const CLIENT_CERT_PREFIX: &str = "x-client-cert-";

/// The verified client certificate's subject (`forward_client_cert`).
const X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");

/// The verified client certificate's subject alternative names (`forward_client_cert`).
const X_CLIENT_CERT_SAN: HeaderName = HeaderName::from_static("x-client-cert-san");

/// The longest inbound `X-Request-Id` kept.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Removed on every hop, in both directions (`Upgrade` is kept on a 101 response).
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TRAILER,
];

/// How many names [`HOP_BY_HOP`] holds.
const HOP_BY_HOP_COUNT: usize = 8;

/// Where `Connection` and `Upgrade` sit in [`HOP_BY_HOP`].
const CONNECTION_INDEX: usize = 0;
const UPGRADE_INDEX: usize = 4;

/// What [`hop_by_hop_index`] found a name to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HopByHop {
    /// `TE`, which has its own rule.
    Te,
    /// The name at this index of [`HOP_BY_HOP`].
    Listed(usize),
}

/// Whether `name` (any case) is hop-by-hop (`TE` included), as an upstream's response
/// field is checked before it is passed on untouched.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    hop_by_hop_index(name).is_some()
}

/// Whether `name` (any case) is hop-by-hop. Every field of every message is asked, so the
/// length rules out most names before any bytes are compared.
fn hop_by_hop_index(name: &[u8]) -> Option<HopByHop> {
    let candidates: &[usize] = match name.len() {
        2 => {
            return name
                .eq_ignore_ascii_case(TE.as_str().as_bytes())
                .then_some(HopByHop::Te);
        }
        7 => &[UPGRADE_INDEX, 7],
        10 => &[CONNECTION_INDEX, 1],
        16 => &[2],
        17 => &[3],
        18 => &[5],
        19 => &[6],
        _ => return None,
    };
    candidates
        .iter()
        .copied()
        .find(|&index| {
            HOP_BY_HOP
                .get(index)
                .is_some_and(|hop| name.eq_ignore_ascii_case(hop.as_str().as_bytes()))
        })
        .map(HopByHop::Listed)
}

/// Whether `peer` lies in one of the `trusted_proxies` networks.
pub fn is_trusted(peer: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|network| network.contains(peer))
}

/// The client address: the right-most X-Forwarded-For hop not in `trusted` when the peer is
/// trusted, else the peer (the PROXY-protocol address, when present, is passed as `peer` by
/// the caller).
///
/// Walking from the right stops at the first hop that is not a trusted proxy: everything to
/// its left was written by the client and proves nothing. When every hop is trusted the
/// left-most one is the client; a hop that is not an address ends the walk at the hop to
/// its right. IPv4-mapped IPv6 addresses come back as IPv4.
pub fn resolve_client(peer: SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = peer.ip().to_canonical();
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(line) = line.to_str() else {
            return client;
        };
        for hop in line.rsplit(',').map(str::trim).filter(|h| !h.is_empty()) {
            let Some(hop) = parse_hop(hop) else {
                return client;
            };
            client = hop;
            if !is_trusted(hop, trusted) {
                return hop;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` hop: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]`
/// or `[2001:db8::1]:80`, possibly quoted.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let inside = hop.strip_prefix('[')?.strip_suffix(']')?;
    inside.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// One client connection as the forwarding headers describe it, formatted once when the
/// connection is accepted: its peer and local address are the same for every request on
/// it, so no request pays for printing them.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The immediate peer, or the PROXY-protocol address when there was one.
    pub peer: SocketAddr,
    /// The local address the connection arrived on.
    pub local: SocketAddr,
    /// The peer's IP (IPv4-mapped IPv6 as IPv4): this hop's `X-Forwarded-For` entry.
    peer_ip: HeaderValue,
    /// `for=192.0.2.1` (IPv6 quoted in brackets).
    for_pair: String,
    /// `by="10.0.0.1:443"`.
    by_pair: String,
    /// The last `Forwarded` element made for a request on this connection.
    last_element: LastElement,
}

/// The last `Forwarded` element a connection's requests carried, with the scheme and host
/// it names: a connection's requests nearly always name the same host, so the element is
/// formatted once and then shared (a hit costs a lock, a comparison and a reference count).
#[derive(Debug, Default)]
struct LastElement(Mutex<Option<(String, Option<HeaderValue>, HeaderValue)>>);

impl Clone for LastElement {
    /// A copy starts empty (a reloaded listener's view of the connection remakes it).
    fn clone(&self) -> Self {
        LastElement::default()
    }
}

impl Hop {
    /// Formats what every request of the connection `peer` → `local` will carry.
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Hop {
        let peer_ip = peer.ip().to_canonical();
        let node = match peer_ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let mut for_pair = String::with_capacity(24);
        push_pair(&mut for_pair, "for", &node);
        let by = SocketAddr::new(local.ip().to_canonical(), local.port());
        let mut by_pair = String::with_capacity(32);
        push_pair(&mut by_pair, "by", &by.to_string());
        Hop {
            peer,
            local,
            // An IP address's text is always a valid header value.
            peer_ip: HeaderValue::from_str(&peer_ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            for_pair,
            by_pair,
            last_element: LastElement::default(),
        }
    }
}

/// What Switchyard saw of a request's connection, for the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The connection the request arrived on.
    pub hop: &'a Hop,
    /// Whether the hop's peer is inside `trusted_proxies`.
    pub peer_trusted: bool,
    /// `"http"` or `"https"`: how the client reached Switchyard.
    pub scheme: &'a str,
    /// The authority the client used (`:authority` or `Host`), as a field value
    /// (`X-Forwarded-Host` is this value, shared rather than copied).
    pub host: Option<&'a HeaderValue>,
    /// The client's HTTP version (for `Via`).
    pub version: Version,
}

/// Strips hop-by-hop headers (Connection, Keep-Alive, Proxy-Connection, TE except
/// "trailers", Transfer-Encoding, Upgrade, Proxy-Authenticate/Authorization, Trailer, and
/// every header named in Connection), then adds the forwarding headers:
///
/// - `X-Forwarded-For`: the peer's IP appended to the inbound list (always; only
///   [`resolve_client`] decides what of it to believe);
/// - `X-Forwarded-Proto`, `X-Forwarded-Host`: a trusted peer's are kept, otherwise set
///   from `scheme` and `host`;
/// - `Forwarded` (RFC 7239, `for=;proto=;host=;by=`, IPv6 quoted in brackets): appended
///   after a trusted peer's, replacing an untrusted one;
/// - `Via`: `1.1 switchyard` / `2.0 switchyard` appended.
///
/// A field whose name the map holds is edited there; the others come back as
/// [`AddedFields`], to be written beside the map (module `added_fields`).
///
/// From an untrusted peer, inbound `Forwarded`, `X-Forwarded-Proto`, `X-Forwarded-Host` and
/// every `x-client-cert-*` are removed first (so set verified client-certificate headers
/// after calling this). `TE` becomes `te: trailers` when the client offered trailers (gRPC
/// needs it) and is removed otherwise. `Upgrade` is stripped like any hop-by-hop header:
/// a caller proxying a WebSocket upgrade re-adds `Connection: upgrade` and `Upgrade`.
pub fn prepare_request(headers: &mut HeaderMap, forwarded: &Forwarded<'_>) -> AddedFields {
    let mut found = Found::of(headers);
    strip_hop_by_hop(
        headers,
        &found,
        Keep {
            upgrade: false,
            te_trailers: true,
        },
    );
    if !forwarded.peer_trusted && found.forwarding_claim() {
        for (index, name) in [
            (FORWARDED_INDEX, FORWARDED),
            (X_FORWARDED_PROTO_INDEX, X_FORWARDED_PROTO),
            (X_FORWARDED_HOST_INDEX, X_FORWARDED_HOST),
        ] {
            if std::mem::take(&mut found.forwarding[index]) {
                headers.remove(name);
            }
        }
        if found.client_cert {
            remove_client_cert_headers(headers);
        }
    }

    let hop = forwarded.hop;
    let in_map = found.forwarding;
    // A list the map holds is appended to there; a name it lacks is added beside it.
    let mut add_to_list = |index: usize, name: HeaderName, item: HeaderValue| {
        if in_map[index] {
            append_to_list(headers, name, item);
            None
        } else {
            Some(item)
        }
    };
    let forwarded_for = add_to_list(X_FORWARDED_FOR_INDEX, X_FORWARDED_FOR, hop.peer_ip.clone());
    let element = forwarded_element(forwarded)
        .and_then(|element| add_to_list(FORWARDED_INDEX, FORWARDED, element));
    let via = add_to_list(VIA_INDEX, VIA, via_entry(forwarded.version));
    AddedFields::new(AddedValues {
        request_id: None,
        forwarded_for,
        // A trusted peer's own values are kept.
        forwarded_proto: scheme_value(forwarded.scheme)
            .filter(|_| !in_map[X_FORWARDED_PROTO_INDEX]),
        forwarded_host: forwarded
            .host
            .filter(|_| !in_map[X_FORWARDED_HOST_INDEX])
            .cloned(),
        forwarded: element,
        via,
    })
}

/// Where each forwarding name sits in [`Found::forwarding`].
const X_FORWARDED_FOR_INDEX: usize = 0;
const X_FORWARDED_PROTO_INDEX: usize = 1;
const X_FORWARDED_HOST_INDEX: usize = 2;
const FORWARDED_INDEX: usize = 3;
const VIA_INDEX: usize = 4;

/// The index in [`Found::forwarding`] of a lowercase forwarding name (the length rules out
/// most names before any bytes are compared).
fn forwarding_index(name: &[u8]) -> Option<usize> {
    let (index, wanted): (usize, &[u8]) = match name.len() {
        3 => (VIA_INDEX, b"via"),
        9 => (FORWARDED_INDEX, b"forwarded"),
        15 => (X_FORWARDED_FOR_INDEX, b"x-forwarded-for"),
        16 => (X_FORWARDED_HOST_INDEX, b"x-forwarded-host"),
        17 => (X_FORWARDED_PROTO_INDEX, b"x-forwarded-proto"),
        _ => return None,
    };
    (name == wanted).then_some(index)
}

/// What one pass over a map's names found: its hop-by-hop fields and, for a request, the
/// forwarding and client-certificate fields the proxy appends to or replaces.
#[derive(Debug, Default)]
struct Found {
    hop_by_hop: [bool; HOP_BY_HOP_COUNT],
    te: bool,
    forwarding: [bool; 5],
    client_cert: bool,
}

impl Found {
    fn of(headers: &HeaderMap) -> Found {
        let mut found = Found::default();
        for name in headers.keys() {
            let name = name.as_str().as_bytes();
            match hop_by_hop_index(name) {
                Some(HopByHop::Te) => found.te = true,
                Some(HopByHop::Listed(index)) => found.hop_by_hop[index] = true,
                None => match forwarding_index(name) {
                    Some(index) => found.forwarding[index] = true,
                    None => found.client_cert |= name.starts_with(CLIENT_CERT_PREFIX.as_bytes()),
                },
            }
        }
        found
    }

    /// Whether the map holds a header only a trusted proxy may set: a forwarding header
    /// Switchyard writes itself (beyond the lists every hop appends to) or a
    /// client-certificate header.
    fn forwarding_claim(&self) -> bool {
        self.client_cert
            || self.forwarding[FORWARDED_INDEX]
            || self.forwarding[X_FORWARDED_PROTO_INDEX]
            || self.forwarding[X_FORWARDED_HOST_INDEX]
    }
}

/// Hop-by-hop stripping for responses (the same list, plus headers named in Connection).
/// When `upgrade` is true (a 101), `Upgrade` is kept and `Connection` is exactly `upgrade`.
pub fn prepare_response(headers: &mut HeaderMap, upgrade: bool) {
    strip_hop_by_hop(
        headers,
        &Found::of(headers),
        Keep {
            upgrade,
            te_trailers: false,
        },
    );
}

/// What hop-by-hop stripping leaves in place.
#[derive(Debug, Clone, Copy)]
struct Keep {
    /// `Upgrade`, with `Connection: upgrade` (a 101 response).
    upgrade: bool,
    /// `te: trailers` (requests).
    te_trailers: bool,
}

/// Removes the hop-by-hop fields `found` says are there (most requests carry none and most
/// responses only `Connection`, so only those are looked up again).
fn strip_hop_by_hop(headers: &mut HeaderMap, found: &Found, keep: Keep) {
    let present = found.hop_by_hop;
    let has_te = found.te;
    if !has_te && !present.contains(&true) {
        return;
    }
    let nominated = if present[CONNECTION_INDEX] {
        connection_nominated(headers)
    } else {
        Vec::new()
    };
    if has_te {
        let offers_trailers = keep.te_trailers
            && comma_tokens(headers, &TE).any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
        headers.remove(TE);
        if offers_trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
    }
    let keep_upgrade = keep.upgrade && present[UPGRADE_INDEX];
    for (name, _) in HOP_BY_HOP
        .iter()
        .zip(present)
        .filter(|(_, present)| *present)
    {
        if keep_upgrade && name == UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    for name in &nominated {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The headers `Connection` names that the fixed rules do not already handle. Allocates
/// only when a client names something unusual (`keep-alive`, `close`, `upgrade` and `te`
/// need no list).
fn connection_nominated(headers: &HeaderMap) -> Vec<HeaderName> {
    comma_tokens(headers, &CONNECTION)
        .filter(|token| {
            !token.eq_ignore_ascii_case("close")
                // TE has its own rule (keep "trailers"); Host must reach the upstream.
                && !token.eq_ignore_ascii_case("te")
                && !token.eq_ignore_ascii_case("host")
                && !HOP_BY_HOP
                    .iter()
                    .any(|name| token.eq_ignore_ascii_case(name.as_str()))
        })
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect()
}

/// The non-empty, trimmed comma-separated elements of every `name` header.
fn comma_tokens<'h>(headers: &'h HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// On a TLS listener, where Switchyard itself saw the client's certificate: drops every
/// inbound `x-client-cert-*` (whoever sent it) and sets `x-client-cert-subject` and
/// `x-client-cert-san` from `client` (`forward_client_cert` with a verified certificate).
pub fn set_client_cert(headers: &mut HeaderMap, client: Option<&ClientIdentity>) {
    remove_client_cert_headers(headers);
    let Some(client) = client else { return };
    for (name, value) in [
        (X_CLIENT_CERT_SUBJECT, &client.subject),
        (X_CLIENT_CERT_SAN, &client.san),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
}

fn remove_client_cert_headers(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(|name| name.as_str().starts_with(CLIENT_CERT_PREFIX))
    {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(CLIENT_CERT_PREFIX))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Appends `item` to the comma-separated list `name`, folding existing lines into one
/// value (some upstreams read only the first line).
pub(super) fn append_to_list(headers: &mut HeaderMap, name: HeaderName, item: HeaderValue) {
    let mut entry = match headers.entry(name) {
        Entry::Vacant(vacant) => {
            vacant.insert(item);
            return;
        }
        Entry::Occupied(occupied) => occupied,
    };
    let mut joined: Vec<u8> = Vec::new();
    for value in entry.iter() {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            joined.extend_from_slice(value);
            joined.extend_from_slice(b", ");
        }
    }
    joined.extend_from_slice(item.as_bytes());
    match HeaderValue::from_bytes(&joined) {
        Ok(value) => {
            entry.insert(value);
        }
        // Not reachable with valid inbound values; still never drop our own entry.
        Err(_) => entry.append(item),
    }
}

fn scheme_value(scheme: &str) -> Option<HeaderValue> {
    // Constants, so the values are checked once at compile time, not per request.
    const HTTPS: HeaderValue = HeaderValue::from_static("https");
    const HTTP: HeaderValue = HeaderValue::from_static("http");
    match scheme {
        "https" => Some(HTTPS),
        "http" => Some(HTTP),
        other => HeaderValue::from_str(other).ok(),
    }
}

/// `1.1 switchyard` and the like: the version the client spoke.
fn via_entry(version: Version) -> HeaderValue {
    const VIA_09: HeaderValue = HeaderValue::from_static("0.9 switchyard");
    const VIA_10: HeaderValue = HeaderValue::from_static("1.0 switchyard");
    const VIA_11: HeaderValue = HeaderValue::from_static("1.1 switchyard");
    const VIA_2: HeaderValue = HeaderValue::from_static("2.0 switchyard");
    const VIA_3: HeaderValue = HeaderValue::from_static("3.0 switchyard");
    match version {
        Version::HTTP_09 => VIA_09,
        Version::HTTP_10 => VIA_10,
        Version::HTTP_2 => VIA_2,
        Version::HTTP_3 => VIA_3,
        _ => VIA_11,
    }
}

/// This hop's RFC 7239 element: `for=192.0.2.1;proto=https;host=example.com;by="10.0.0.1:443"`.
fn forwarded_element(forwarded: &Forwarded<'_>) -> Option<HeaderValue> {
    let mut last = forwarded
        .hop
        .last_element
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some((scheme, host, element)) = &*last {
        if scheme == forwarded.scheme && host.as_ref() == forwarded.host {
            return Some(element.clone());
        }
    }
    let element = format_element(forwarded)?;
    *last = Some((
        forwarded.scheme.to_owned(),
        forwarded.host.cloned(),
        element.clone(),
    ));
    Some(element)
}

fn format_element(forwarded: &Forwarded<'_>) -> Option<HeaderValue> {
    let hop = forwarded.hop;
    let mut element = String::with_capacity(96);
    element.push_str(&hop.for_pair);
    push_pair(&mut element, "proto", forwarded.scheme);
    if let Some(host) = forwarded.host.and_then(|host| host.to_str().ok()) {
        push_pair(&mut element, "host", host);
    }
    element.push(';');
    element.push_str(&hop.by_pair);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(element)).ok()
}

/// `;key=value`, the value quoted (with `"` and `\` escaped) unless it is a token.
fn push_pair(element: &mut String, key: &str, value: &str) {
    if !element.is_empty() {
        element.push(';');
    }
    element.push_str(key);
    element.push('=');
    if !value.is_empty() && value.bytes().all(is_token_byte) {
        element.push_str(value);
        return;
    }
    element.push('"');
    // Runs without a quote or backslash are copied whole (a host with a port, the usual
    // quoted value, is one run).
    let mut rest = value;
    while let Some(at) = rest.find(['"', '\\']) {
        element.push_str(&rest[..at]);
        element.push('\\');
        element.push_str(&rest[at..=at]);
        rest = &rest[at + 1..];
    }
    element.push_str(rest);
    element.push('"');
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// X-Request-Id: keep a valid inbound one (visible ASCII, at most 128 bytes), else set
/// `generated` (the caller supplies a fresh id, see [`format_request_id`]): in the map when
/// it held an id, else beside it in `added`. Returns the id in force; repeated inbound ids
/// are collapsed to it.
pub fn ensure_request_id(
    headers: &mut HeaderMap,
    added: &mut AddedFields,
    generated: impl FnOnce() -> HeaderValue,
) -> HeaderValue {
    // Unique per request: HPACK must not index it (each insert into an HTTP/2 peer's
    // dynamic table would evict an entry that repeats, like `server` or `content-type`).
    let fresh = || {
        let mut id = generated();
        id.set_sensitive(true);
        id
    };
    // One lookup whether the id is kept, replaced or added (most requests carry none:
    // then the new id goes beside the map, not into it).
    match headers.entry(X_REQUEST_ID) {
        Entry::Occupied(mut slot) => {
            let mut id = Some(slot.get())
                .filter(|id| is_valid_request_id(id))
                .cloned()
                .unwrap_or_else(fresh);
            id.set_sensitive(true);
            // `insert` also drops any repeats.
            slot.insert(id.clone());
            id
        }
        Entry::Vacant(_) => added.values_mut().request_id.insert(fresh()).clone(),
    }
}

fn is_valid_request_id(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// A request id from 128 random bits: 32 lowercase hex digits.
pub fn format_request_id(random: u128) -> HeaderValue {
    /// Each byte's two hex digits, made at compile time.
    const PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0u8; 2]; 256];
        let mut byte = 0;
        while byte < 256 {
            pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0xf]];
            byte += 1;
        }
        pairs
    };
    let mut hex = [0u8; 32];
    for (i, byte) in random.to_be_bytes().into_iter().enumerate() {
        let [high, low] = PAIRS[usize::from(byte)];
        hex[2 * i] = high;
        hex[2 * i + 1] = low;
    }
    // Ids are cut from a shared block (one allocation per 128 of them), so cloning one for
    // the response and the log is a reference count, not a copy.
    thread_local! {
        static BLOCK: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    }
    let id = BLOCK.with_borrow_mut(|block| {
        if block.capacity() < hex.len() {
            *block = BytesMut::with_capacity(hex.len() * 128);
        }
        block.extend_from_slice(&hex);
        block.split().freeze()
    });
    // Hex digits are always a valid header value; the fallback only satisfies the types.
    HeaderValue::from_maybe_shared(id)
        .unwrap_or_else(|_| HeaderValue::from_static("00000000000000000000000000000000"))
}

/// Route header edits: remove, then set, then add (values validated at config time; skip
/// any that fail to convert, never panic).
///
/// This converts names and values on every call; a hot path should build
/// [`HeaderEdits`] once per route instead.
pub fn apply_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    HeaderEdits::new(ops).apply(headers);
}

/// A route's [`HeaderOps`] converted once into header names and values.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    /// Converts `ops`, skipping any name or value that is not valid in a header.
    pub fn new(ops: &HeaderOps) -> HeaderEdits {
        let pairs = |list: &[(String, String)]| {
            list.iter()
                .filter_map(|(name, value)| {
                    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                    let value = HeaderValue::from_str(value).ok()?;
                    Some((name, value))
                })
                .collect()
        };
        HeaderEdits {
            remove: ops
                .remove
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
            set: pairs(&ops.set),
            add: pairs(&ops.add),
        }
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the edits: remove, then set (replacing every value), then add (appending).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_hop_by_hop_name_is_found_at_its_index_and_no_other_name_is() {
        for (index, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(
                hop_by_hop_index(name.as_str().as_bytes()),
                Some(HopByHop::Listed(index)),
                "{name}"
            );
        }
        assert_eq!(hop_by_hop_index(b"te"), Some(HopByHop::Te));
        for name in [
            "user-agent",
            "host",
            "trailers",
            "upgrades",
            "content-type",
            "x-forwarded-for",
            "proxy-connectio",
            "transfer-encodin",
            "accept-encoding",
            "tk",
            "",
        ] {
            assert_eq!(hop_by_hop_index(name.as_bytes()), None, "{name}");
        }
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter()
            .map(|s| {
                let (addr, prefix) = s.split_once('/').unwrap();
                Cidr {
                    addr: addr.parse().unwrap(),
                    prefix: prefix.parse().unwrap(),
                }
            })
            .collect()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn values<'h>(map: &'h HeaderMap, name: &str) -> Vec<&'h str> {
        map.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    /// A connection's hop, kept for the test's life.
    fn hop(peer: &str, local: &str) -> &'static Hop {
        Box::leak(Box::new(Hop::new(
            peer.parse().unwrap(),
            local.parse().unwrap(),
        )))
    }

    /// The host every test request names.
    static SHOP: HeaderValue = HeaderValue::from_static("shop.example.com");

    fn seen(peer: &str, trusted: bool) -> Forwarded<'static> {
        Forwarded {
            hop: hop(peer, "10.0.0.1:443"),
            peer_trusted: trusted,
            scheme: "https",
            host: Some(&SHOP),
            version: Version::HTTP_11,
        }
    }

    /// [`prepare_request`] with its added fields moved into the map: the whole truth.
    fn prepare(map: &mut HeaderMap, forwarded: &Forwarded<'_>) {
        prepare_request(map, forwarded).append_to(map);
    }

    #[test]
    fn fields_the_request_lacks_are_added_beside_the_map_and_lists_it_holds_are_appended_to() {
        let mut map = headers(&[
            ("host", "shop.example.com"),
            ("x-forwarded-for", "10.9.9.9"),
        ]);
        let added = prepare_request(&mut map, &seen("192.0.2.7:5000", false));
        assert_eq!(values(&map, "x-forwarded-for"), ["10.9.9.9, 192.0.2.7"]);
        assert_eq!(
            map.len(),
            2,
            "only the list the request held was edited in the map"
        );
        let beside: Vec<(&str, &str)> = added
            .iter()
            .map(|(name, value)| (name, value.to_str().unwrap()))
            .collect();
        assert_eq!(
            beside,
            [
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "shop.example.com"),
                (
                    "forwarded",
                    "for=192.0.2.7;proto=https;host=shop.example.com;by=\"10.0.0.1:443\""
                ),
                ("via", "1.1 switchyard"),
            ]
        );

        // A trusted peer's own values stay in the map and nothing beside them repeats them.
        let mut map = headers(&[
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "inner.example.com"),
            ("forwarded", "for=10.9.9.9"),
            ("via", "1.0 edge"),
        ]);
        let added = prepare_request(&mut map, &seen("10.0.0.2:5000", true));
        let names: Vec<&str> = added.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["x-forwarded-for"]);
        assert_eq!(values(&map, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&map, "x-forwarded-host"), ["inner.example.com"]);
        assert_eq!(values(&map, "via"), ["1.0 edge, 1.1 switchyard"]);
        assert_eq!(values(&map, "forwarded").len(), 1);
    }

    #[test]
    fn a_connection_formats_its_forwarded_element_again_only_when_the_host_changes() {
        let first = seen("192.0.2.60:1234", false);
        let api = HeaderValue::from_static("api.example.com");
        let element = |forwarded: &Forwarded<'_>| {
            let mut map = HeaderMap::new();
            prepare(&mut map, forwarded);
            map.get(FORWARDED).unwrap().clone()
        };
        let want = "for=192.0.2.60;proto=https;host=shop.example.com;by=\"10.0.0.1:443\"";
        assert_eq!(element(&first), want);
        assert_eq!(element(&first), want, "the kept element");
        let other_host = Forwarded {
            host: Some(&api),
            ..first
        };
        let want_other = "for=192.0.2.60;proto=https;host=api.example.com;by=\"10.0.0.1:443\"";
        assert_eq!(element(&other_host), want_other);
        let no_host = Forwarded {
            host: None,
            ..first
        };
        assert_eq!(
            element(&no_host),
            "for=192.0.2.60;proto=https;by=\"10.0.0.1:443\""
        );
        let plain = Forwarded {
            scheme: "http",
            ..first
        };
        assert_eq!(
            element(&plain),
            "for=192.0.2.60;proto=http;host=shop.example.com;by=\"10.0.0.1:443\""
        );
        assert_eq!(element(&first), want, "back to the first");
    }

    #[test]
    fn trust_follows_the_configured_networks() {
        let trusted = cidrs(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(is_trusted("10.1.2.3".parse().unwrap(), &trusted));
        assert!(is_trusted("::ffff:10.1.2.3".parse().unwrap(), &trusted));
        assert!(is_trusted("2001:db8::9".parse().unwrap(), &trusted));
        assert!(!is_trusted("192.0.2.1".parse().unwrap(), &trusted));
        assert!(!is_trusted("10.0.0.1".parse().unwrap(), &[]));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let map = headers(&[("x-forwarded-for", "1.1.1.1")]);
        let client = resolve_client(
            "192.0.2.7:5000".parse().unwrap(),
            &map,
            &cidrs(&["10.0.0.0/8"]),
        );
        assert_eq!(client, "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop_across_several_hops_and_lines() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let map = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.4"),
            ("x-forwarded-for", "10.0.0.9,10.0.0.8"),
        ]);
        let client = resolve_client("10.0.0.2:1".parse().unwrap(), &map, &trusted);
        assert_eq!(client, "198.51.100.4".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_trusted_peer_without_forwarded_for_is_the_client() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let client = resolve_client("10.0.0.2:1".parse().unwrap(), &HeaderMap::new(), &trusted);
        assert_eq!(client, "10.0.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn when_every_hop_is_trusted_the_left_most_is_the_client() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let map = headers(&[("x-forwarded-for", "10.0.0.5, 10.0.0.6")]);
        let client = resolve_client("10.0.0.2:1".parse().unwrap(), &map, &trusted);
        assert_eq!(client, "10.0.0.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_garbage_hop_ends_the_walk_at_the_hop_to_its_right() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let map = headers(&[("x-forwarded-for", "1.2.3.4, unknown, 10.0.0.7")]);
        let client = resolve_client("10.0.0.2:1".parse().unwrap(), &map, &trusted);
        assert_eq!(client, "10.0.0.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn hops_with_ports_brackets_and_ipv6_are_understood() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        for (hop, want) in [
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("\"[2001:db8::2]\"", "2001:db8::2"),
            ("203.0.113.9:8080", "203.0.113.9"),
            ("::ffff:203.0.113.9", "203.0.113.9"),
        ] {
            let map = headers(&[("x-forwarded-for", hop)]);
            let client = resolve_client("10.0.0.2:1".parse().unwrap(), &map, &trusted);
            assert_eq!(client, want.parse::<IpAddr>().unwrap(), "{hop}");
        }
    }

    #[test]
    fn forwarded_for_is_set_from_the_peer_without_an_inbound_list() {
        let mut map = HeaderMap::new();
        prepare(&mut map, &seen("192.0.2.7:5000", false));
        assert_eq!(values(&map, "x-forwarded-for"), ["192.0.2.7"]);
    }

    #[test]
    fn forwarded_for_is_appended_to_an_inbound_list_even_from_an_untrusted_peer() {
        let mut map = headers(&[
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
        ]);
        prepare(&mut map, &seen("192.0.2.7:5000", false));
        assert_eq!(
            values(&map, "x-forwarded-for"),
            ["1.1.1.1, 2.2.2.2, 3.3.3.3, 192.0.2.7"]
        );
    }

    #[test]
    fn an_untrusted_peers_spoofed_forwarding_headers_are_replaced() {
        let mut map = headers(&[
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
            ("x-client-cert-subject", "CN=admin"),
            ("x-client-cert-san", "admin"),
        ]);
        prepare(&mut map, &seen("192.0.2.7:5000", false));
        assert_eq!(values(&map, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&map, "x-forwarded-host"), ["shop.example.com"]);
        assert_eq!(
            values(&map, "forwarded"),
            ["for=192.0.2.7;proto=https;host=shop.example.com;by=\"10.0.0.1:443\""]
        );
        assert!(map.get("x-client-cert-subject").is_none());
        assert!(map.get("x-client-cert-san").is_none());
    }

    #[test]
    fn a_trusted_peers_forwarding_headers_are_kept_and_forwarded_is_appended() {
        let mut map = headers(&[
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "front.example"),
            ("forwarded", "for=198.51.100.4;proto=http"),
            ("x-client-cert-subject", "CN=client"),
        ]);
        prepare(&mut map, &seen("10.0.0.2:5000", true));
        assert_eq!(values(&map, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&map, "x-forwarded-host"), ["front.example"]);
        assert_eq!(
            values(&map, "forwarded"),
            [
                "for=198.51.100.4;proto=http, for=10.0.0.2;proto=https;host=shop.example.com;by=\"10.0.0.1:443\""
            ]
        );
        assert_eq!(values(&map, "x-client-cert-subject"), ["CN=client"]);
    }

    #[test]
    fn forwarded_quotes_ipv6_in_brackets_and_a_host_with_a_port() {
        let mut map = HeaderMap::new();
        let mut forwarded = seen("[2001:db8::1]:5000", false);
        let with_port = HeaderValue::from_static("shop.example.com:8443");
        forwarded.host = Some(&with_port);
        forwarded.hop = hop("[2001:db8::1]:5000", "[2001:db8::ff]:8443");
        prepare(&mut map, &forwarded);
        assert_eq!(
            values(&map, "forwarded"),
            [
                "for=\"[2001:db8::1]\";proto=https;host=\"shop.example.com:8443\";by=\"[2001:db8::ff]:8443\""
            ]
        );
        assert_eq!(values(&map, "x-forwarded-for"), ["2001:db8::1"]);
    }

    #[test]
    fn a_forwarded_value_escapes_quotes_and_backslashes() {
        let mut element = String::new();
        push_pair(&mut element, "host", "a\"b\\c");
        assert_eq!(element, r#"host="a\"b\\c""#);
        let mut element = String::new();
        push_pair(&mut element, "host", "\"\"x\\");
        assert_eq!(element, r#"host="\"\"x\\""#);
        let mut element = String::new();
        push_pair(&mut element, "host", "127.0.0.1:8080");
        assert_eq!(element, r#"host="127.0.0.1:8080""#);
    }

    #[test]
    fn via_names_the_clients_version_and_is_appended() {
        let mut map = headers(&[("via", "1.1 cdn")]);
        prepare(&mut map, &seen("10.0.0.2:5000", true));
        assert_eq!(values(&map, "via"), ["1.1 cdn, 1.1 switchyard"]);
        let mut map = HeaderMap::new();
        let mut forwarded = seen("10.0.0.2:5000", true);
        forwarded.version = Version::HTTP_2;
        prepare(&mut map, &forwarded);
        assert_eq!(values(&map, "via"), ["2.0 switchyard"]);
    }

    #[test]
    fn the_indexes_name_their_headers() {
        assert_eq!(HOP_BY_HOP[CONNECTION_INDEX], CONNECTION);
        assert_eq!(HOP_BY_HOP[UPGRADE_INDEX], UPGRADE);
    }

    #[test]
    fn hop_by_hop_headers_are_stripped_from_requests() {
        let mut map = headers(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic eA=="),
            ("proxy-authenticate", "Basic"),
            ("trailer", "x-checksum"),
            ("accept", "*/*"),
        ]);
        prepare(&mut map, &seen("10.0.0.2:5000", true));
        for name in &HOP_BY_HOP {
            assert!(map.get(name).is_none(), "{name}");
        }
        assert_eq!(values(&map, "accept"), ["*/*"]);
    }

    #[test]
    fn headers_named_in_connection_are_removed() {
        let mut map = headers(&[
            ("connection", "close, X-Secret"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
        ]);
        prepare(&mut map, &seen("10.0.0.2:5000", true));
        assert!(map.get("x-secret").is_none());
        assert!(map.get("x-other").is_none());
        assert!(map.get("connection").is_none());
        assert_eq!(values(&map, "x-kept"), ["3"]);
    }

    #[test]
    fn connection_cannot_remove_the_host_or_the_te_trailers_offer() {
        let mut map = headers(&[
            ("connection", "host, te"),
            ("host", "a"),
            ("te", "trailers"),
        ]);
        prepare(&mut map, &seen("10.0.0.2:5000", true));
        assert_eq!(values(&map, "host"), ["a"]);
        assert_eq!(values(&map, "te"), ["trailers"]);
    }

    #[test]
    fn te_trailers_is_kept_and_other_codings_are_removed() {
        let mut map = headers(&[("te", "trailers")]);
        prepare(&mut map, &seen("10.0.0.2:5000", true));
        assert_eq!(values(&map, "te"), ["trailers"]);
        let mut map = headers(&[("te", "gzip")]);
        prepare(&mut map, &seen("10.0.0.2:5000", true));
        assert!(map.get("te").is_none());
        let mut map = headers(&[("te", "gzip;q=0.5, Trailers")]);
        prepare(&mut map, &seen("10.0.0.2:5000", true));
        assert_eq!(values(&map, "te"), ["trailers"]);
    }

    #[test]
    fn trace_context_passes_through_untouched() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut map = headers(&[("traceparent", parent), ("tracestate", "congo=t61rcWkgMzE")]);
        prepare(&mut map, &seen("192.0.2.7:5000", false));
        prepare_response(&mut map, false);
        assert_eq!(values(&map, "traceparent"), [parent]);
        assert_eq!(values(&map, "tracestate"), ["congo=t61rcWkgMzE"]);
    }

    #[test]
    fn responses_lose_hop_by_hop_and_connection_named_headers() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("x-hop", "1"),
            ("content-type", "text/plain"),
        ]);
        prepare_response(&mut map, false);
        assert!(map.get("connection").is_none());
        assert!(map.get("keep-alive").is_none());
        assert!(map.get("transfer-encoding").is_none());
        assert!(map.get("te").is_none());
        assert!(map.get("x-hop").is_none());
        assert_eq!(values(&map, "content-type"), ["text/plain"]);
    }

    #[test]
    fn an_upgrade_response_keeps_upgrade_and_connection_upgrade() {
        let mut map = headers(&[
            ("connection", "Upgrade, keep-alive"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        prepare_response(&mut map, true);
        assert_eq!(values(&map, "connection"), ["upgrade"]);
        assert_eq!(values(&map, "upgrade"), ["websocket"]);
        assert!(map.get("keep-alive").is_none());
        assert!(map.get("sec-websocket-accept").is_some());
        let mut map = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        prepare_response(&mut map, false);
        assert!(map.get("upgrade").is_none());
        assert!(map.get("connection").is_none());
    }

    #[test]
    fn a_valid_inbound_request_id_is_kept() {
        let mut map = headers(&[("x-request-id", "abc-123_XYZ")]);
        let id = ensure_request_id(&mut map, &mut AddedFields::default(), || {
            panic!("not needed")
        });
        assert_eq!(id, "abc-123_XYZ");
        assert_eq!(values(&map, "x-request-id"), ["abc-123_XYZ"]);
    }

    #[test]
    fn a_request_id_that_is_too_long_or_has_a_space_is_replaced() {
        let long = "a".repeat(200);
        for bad in [long.as_str(), "has space", ""] {
            let mut map = headers(&[("x-request-id", bad)]);
            let id = ensure_request_id(&mut map, &mut AddedFields::default(), || {
                HeaderValue::from_static("fresh")
            });
            assert_eq!(id, "fresh", "{bad:?}");
            assert_eq!(values(&map, "x-request-id"), ["fresh"]);
        }
        let exactly_128 = "b".repeat(128);
        let mut map = headers(&[("x-request-id", exactly_128.as_str())]);
        assert_eq!(
            ensure_request_id(&mut map, &mut AddedFields::default(), || {
                HeaderValue::from_static("fresh")
            }),
            exactly_128.as_str()
        );
    }

    #[test]
    fn ids_cut_from_one_block_and_the_next_stay_apart() {
        let ids: Vec<HeaderValue> = (0..300u128).map(format_request_id).collect();
        for (n, id) in (0u128..).zip(&ids) {
            assert_eq!(id.to_str().unwrap(), format!("{n:032x}"));
        }
        let mut repeated = headers(&[("x-request-id", "first"), ("x-request-id", "second")]);
        let kept = ensure_request_id(&mut repeated, &mut AddedFields::default(), || {
            panic!("not needed")
        });
        assert_eq!(kept, "first");
        assert!(kept.is_sensitive());
        assert_eq!(values(&repeated, "x-request-id"), ["first"]);
    }

    #[test]
    fn a_missing_request_id_is_generated_beside_the_map() {
        let mut map = HeaderMap::new();
        let mut added = AddedFields::default();
        let id = ensure_request_id(&mut map, &mut added, || format_request_id(0xab));
        assert_eq!(id, "000000000000000000000000000000ab");
        assert!(id.is_sensitive());
        assert!(map.is_empty());
        assert_eq!(added.iter().collect::<Vec<_>>(), [("x-request-id", &id)]);
    }

    #[test]
    fn request_ids_are_32_lowercase_hex_digits() {
        assert_eq!(
            format_request_id(u128::MAX),
            "ffffffffffffffffffffffffffffffff"
        );
        assert_eq!(
            format_request_id(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
            "0123456789abcdeffedcba9876543210"
        );
    }

    #[test]
    fn header_ops_remove_then_set_then_add() {
        let ops = HeaderOps {
            add: vec![
                ("x-env".into(), "prod".into()),
                ("x-tier".into(), "extra".into()),
            ],
            set: vec![("x-tier".into(), "edge".into())],
            remove: vec!["x-internal".into(), "x-env".into()],
        };
        let mut map = headers(&[
            ("x-internal", "secret"),
            ("x-env", "dev"),
            ("x-tier", "a"),
            ("x-tier", "b"),
        ]);
        apply_ops(&mut map, &ops);
        assert!(map.get("x-internal").is_none());
        assert_eq!(values(&map, "x-env"), ["prod"]);
        assert_eq!(values(&map, "x-tier"), ["edge", "extra"]);
    }

    #[test]
    fn header_ops_skip_what_does_not_convert_without_panicking() {
        let ops = HeaderOps {
            add: vec![
                ("bad name".into(), "v".into()),
                ("x-ok".into(), "line\nbreak".into()),
            ],
            set: vec![("x-set".into(), "fine".into())],
            remove: vec!["also bad".into()],
        };
        let edits = HeaderEdits::new(&ops);
        assert!(!edits.is_empty());
        let mut map = HeaderMap::new();
        edits.apply(&mut map);
        assert_eq!(map.len(), 1);
        assert_eq!(values(&map, "x-set"), ["fine"]);
        assert!(HeaderEdits::new(&HeaderOps::default()).is_empty());
    }
}
