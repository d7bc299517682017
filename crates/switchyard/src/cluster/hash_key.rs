//! The hash key of an L4 connection, per the SPEC 3.1 hash contract (the algorithms crate
//! owns the byte layout; this only chooses which bytes a cluster's `hash_key` names).

use std::net::SocketAddr;

use switchyard_algo::hash;

use crate::config::model::HashKey;

/// IANA protocol number of TCP.
pub const PROTO_TCP: u8 = 6;

/// IANA protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// The key for a connection from `client` to `local`, or `None` when `hash_key` names
/// something an L4 connection does not have (the picker then balances by p2c-ewma).
pub fn connection_key(
    hash_key: &HashKey,
    client: SocketAddr,
    local: SocketAddr,
    protocol: u8,
) -> Option<u64> {
    match hash_key {
        HashKey::SourceIp => Some(hash::key_for_source_ip(client.ip())),
        HashKey::FiveTuple => Some(hash::key_for_five_tuple(client, local, protocol)),
        HashKey::Header(_) | HashKey::Cookie(_) | HashKey::Path | HashKey::Jwt(_) => None,
    }
}

/// The key of an HTTP request: the connection's key for `source-ip` / `5-tuple`, else the
/// raw bytes of the named header, cookie or the path. `None` when the request lacks the
/// value (the picker then balances by p2c-ewma); `jwt:` claims are not available yet.
pub fn request_key(
    hash_key: &HashKey,
    client: SocketAddr,
    local: SocketAddr,
    headers: &http::HeaderMap,
    path: &str,
) -> Option<u64> {
    match hash_key {
        HashKey::SourceIp | HashKey::FiveTuple => {
            connection_key(hash_key, client, local, PROTO_TCP)
        }
        HashKey::Header(name) => headers
            .get(name.as_str())
            .map(|v| hash::key_for_bytes(v.as_bytes())),
        HashKey::Cookie(name) => crate::http::router::cookies(headers)
            .find(|(n, _)| n == name)
            .map(|(_, v)| hash::key_for_bytes(v.as_bytes())),
        HashKey::Path => Some(hash::key_for_bytes(path.as_bytes())),
        HashKey::Jwt(_) => None,
    }
}
