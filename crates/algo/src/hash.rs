//! The hash contract (SPEC 3.1) in one place. Every instance of a fleet must turn the same
//! request into the same 64-bit key, on every platform and every release, or consistent
//! hashing stops being consistent. So the functions here are xxh64 with seed 0 over exactly
//! the bytes SPEC names, and `tests/golden.rs` pins their output.

use std::net::{IpAddr, SocketAddr};

use xxhash_rust::xxh64::xxh64;

pub use crate::balance::maglev::{MaglevTable, permutation as maglev_permutation};

/// The seed of every request-key hash, of ring-hash virtual nodes and of Maglev offsets.
pub const KEY_SEED: u64 = 0;

/// The seed of the Maglev offset hash (SPEC 3.1: `offset = xxh64(name, seed 0) mod M`).
pub const MAGLEV_OFFSET_SEED: u64 = 0;

/// The seed of the Maglev skip hash (SPEC 3.1: `skip = xxh64(name, seed 1) mod (M - 1) + 1`).
pub const MAGLEV_SKIP_SEED: u64 = 1;

/// xxh64 of `bytes` with an explicit seed; the building block of the hash policies.
pub fn hash_seeded(bytes: &[u8], seed: u64) -> u64 {
    xxh64(bytes, seed)
}

/// The key of raw value bytes: `header:N`, `cookie:N`, `path` and `jwt:claim` keys.
pub fn key_for_bytes(value: &[u8]) -> u64 {
    xxh64(value, KEY_SEED)
}

/// The `source-ip` key: xxh64 (seed 0) of the 4 (IPv4) or 16 (IPv6) raw address bytes.
///
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is hashed as its 16 bytes: the runtime
/// should canonicalise addresses (`IpAddr::to_canonical`) first if a dual-stack socket is to
/// agree with an IPv4 one.
pub fn key_for_source_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => xxh64(&v4.octets(), KEY_SEED),
        IpAddr::V6(v6) => xxh64(&v6.octets(), KEY_SEED),
    }
}

/// The `5-tuple` key: xxh64 (seed 0) of the source address bytes (4 or 16), destination
/// address bytes, source port (2 bytes, big endian), destination port (2 bytes, big endian)
/// and the IP protocol number (1 byte: 6 = TCP, 17 = UDP), concatenated in that order.
pub fn key_for_five_tuple(src: SocketAddr, dst: SocketAddr, protocol: u8) -> u64 {
    let mut buf = [0u8; 16 + 16 + 2 + 2 + 1];
    let mut len = 0;
    for ip in [src.ip(), dst.ip()] {
        match ip {
            IpAddr::V4(v4) => {
                buf[len..len + 4].copy_from_slice(&v4.octets());
                len += 4;
            }
            IpAddr::V6(v6) => {
                buf[len..len + 16].copy_from_slice(&v6.octets());
                len += 16;
            }
        }
    }
    buf[len..len + 2].copy_from_slice(&src.port().to_be_bytes());
    buf[len + 2..len + 4].copy_from_slice(&dst.port().to_be_bytes());
    buf[len + 4] = protocol;
    xxh64(&buf[..len + 5], KEY_SEED)
}

/// The ring position of virtual node `i` of endpoint `name`: xxh64 (seed 0) of the ASCII
/// text `"{name}#{i}"` (decimal `i`, no padding).
pub fn ring_vnode_key(name: &str, i: u64) -> u64 {
    let mut buf = String::with_capacity(name.len() + 21);
    buf.push_str(name);
    buf.push('#');
    buf.push_str(&i.to_string());
    xxh64(buf.as_bytes(), KEY_SEED)
}

/// The value of a sticky-session cookie for an endpoint: the lowercase, zero-padded 16-digit
/// hex of xxh64 (seed 0) of the endpoint's name (never its address, SPEC 3 `sticky`).
pub fn sticky_cookie_value(endpoint_name: &str) -> String {
    format!("{:016x}", xxh64(endpoint_name.as_bytes(), KEY_SEED))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn source_ip_hashes_the_raw_address_bytes() {
        let v4 = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(key_for_source_ip(IpAddr::V4(v4)), xxh64(&[10, 0, 0, 1], 0));
        let v6 = Ipv6Addr::LOCALHOST;
        assert_eq!(key_for_source_ip(IpAddr::V6(v6)), xxh64(&v6.octets(), 0));
    }

    #[test]
    fn five_tuple_is_addresses_then_ports_big_endian_then_protocol() {
        let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 12345);
        let dst = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 80);
        let expected = xxh64(
            &[192, 0, 2, 1, 198, 51, 100, 2, 0x30, 0x39, 0x00, 0x50, 6],
            0,
        );
        assert_eq!(key_for_five_tuple(src, dst, 6), expected);
    }

    #[test]
    fn five_tuple_accepts_mixed_families() {
        let src = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1);
        let dst = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2);
        let mut bytes = Ipv6Addr::LOCALHOST.octets().to_vec();
        bytes.extend_from_slice(&[127, 0, 0, 1, 0, 1, 0, 2, 17]);
        assert_eq!(key_for_five_tuple(src, dst, 17), xxh64(&bytes, 0));
    }

    #[test]
    fn bytes_and_vnodes_hash_with_seed_zero() {
        assert_eq!(key_for_bytes(b"/cart"), xxh64(b"/cart", 0));
        assert_eq!(ring_vnode_key("backend-3", 17), xxh64(b"backend-3#17", 0));
    }

    #[test]
    fn sticky_cookie_values_are_sixteen_hex_digits() {
        let v = sticky_cookie_value("api-2");
        assert_eq!(v.len(), 16);
        assert_eq!(u64::from_str_radix(&v, 16).ok(), Some(xxh64(b"api-2", 0)));
    }
}
