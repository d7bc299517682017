//! Response head and trailer encoding: the stateless half of HPACK.
//!
//! Nothing is ever inserted into the peer's dynamic table, so the encoder needs no state,
//! the peer's `SETTINGS_HEADER_TABLE_SIZE` never matters, and a block can be written for
//! any stream in any order. Names come from the static table where it has them; values are
//! plain literals (Huffman coding would save bytes on the wire but cost instructions per
//! response, and a proxy's responses mostly carry the upstream's opaque values).

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::table::static_name_index;

/// "Literal header field without indexing" (RFC 7541 section 6.2.2): `0000xxxx`.
const WITHOUT_INDEXING: u8 = 0x00;
/// "Literal header field never indexed" (RFC 7541 section 6.2.3): `0001xxxx`.
const NEVER_INDEXED: u8 = 0x10;
/// "Indexed header field" (RFC 7541 section 6.1): `1xxxxxxx`.
const INDEXED: u8 = 0x80;
/// The static table index of `:status` (with value 200).
const STATUS_INDEX: u8 = 8;

/// Appends the `:status` pseudo-header: fully indexed for the seven statuses in the static
/// table (200 204 206 304 400 404 500), else a literal without indexing with the static
/// name of index 8.
pub fn encode_status(status: StatusCode, dst: &mut BytesMut) {
    let index = match status.as_u16() {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => {
            let digits = status.as_str().as_bytes();
            dst.reserve(2 + digits.len());
            dst.put_u8(WITHOUT_INDEXING | STATUS_INDEX);
            put_plain_string(digits, dst);
            return;
        }
    };
    dst.put_u8(INDEXED | index);
}

/// Appends one field as a literal without indexing, or never indexed if the value is
/// marked sensitive, with the name indexed from the static table where it is in it.
pub fn encode_field(name: &HeaderName, value: &HeaderValue, dst: &mut BytesMut) {
    let representation = if value.is_sensitive() {
        NEVER_INDEXED
    } else {
        WITHOUT_INDEXING
    };
    // Room for the largest case: two 5-octet integers plus both strings.
    dst.reserve(11 + name.as_str().len() + value.len());
    match static_name_index(name) {
        Some(index) => put_integer(index, 4, representation, dst),
        None => {
            dst.put_u8(representation);
            put_plain_string(name.as_str().as_bytes(), dst);
        }
    }
    put_plain_string(value.as_bytes(), dst);
}

/// Appends every field of `headers`, in the map's iteration order.
pub fn encode_headers(headers: &HeaderMap, dst: &mut BytesMut) {
    for (name, value) in headers {
        encode_field(name, value, dst);
    }
}

/// Appends an integer with an N-bit prefix (RFC 7541 section 5.1); `high_bits` fills the
/// first octet above the prefix.
fn put_integer(value: usize, prefix_bits: u32, high_bits: u8, dst: &mut BytesMut) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        dst.put_u8(high_bits | value as u8);
        return;
    }
    dst.put_u8(high_bits | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        dst.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

/// Appends a string literal without Huffman coding (H bit 0).
fn put_plain_string(octets: &[u8], dst: &mut BytesMut) {
    put_integer(octets.len(), 7, 0, dst);
    dst.put_slice(octets);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn status(code: u16) -> Vec<u8> {
        let mut dst = BytesMut::new();
        encode_status(StatusCode::from_u16(code).unwrap(), &mut dst);
        dst.to_vec()
    }

    fn field(name: &str, value: &HeaderValue) -> Vec<u8> {
        let mut dst = BytesMut::new();
        encode_field(
            &HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value,
            &mut dst,
        );
        dst.to_vec()
    }

    #[test]
    fn static_statuses_are_one_indexed_octet() {
        assert_eq!(status(200), [0x88]);
        assert_eq!(status(204), [0x89]);
        assert_eq!(status(206), [0x8a]);
        assert_eq!(status(304), [0x8b]);
        assert_eq!(status(400), [0x8c]);
        assert_eq!(status(404), [0x8d]);
        assert_eq!(status(500), [0x8e]);
    }

    #[test]
    fn other_statuses_are_literals_with_the_status_name() {
        assert_eq!(status(302), b"\x08\x03302");
        assert_eq!(status(101), b"\x08\x03101");
        assert_eq!(status(503), b"\x08\x03503");
    }

    #[test]
    fn static_names_are_indexed_and_values_plain() {
        // content-type is index 31: 0000 1111 then 31 - 15 = 16.
        assert_eq!(
            field("content-type", &HeaderValue::from_static("text/plain")),
            b"\x0f\x10\x0atext/plain"
        );
        // date is index 33.
        assert_eq!(
            field("date", &HeaderValue::from_static("x")),
            b"\x0f\x12\x01x"
        );
        // age is index 21.
        assert_eq!(
            field("age", &HeaderValue::from_static("0")),
            b"\x0f\x06\x010"
        );
    }

    #[test]
    fn other_names_are_literal() {
        assert_eq!(
            field("x-id", &HeaderValue::from_static("7")),
            b"\x00\x04x-id\x017"
        );
    }

    #[test]
    fn sensitive_values_are_never_indexed() {
        let mut secret = HeaderValue::from_static("s");
        secret.set_sensitive(true);
        assert_eq!(field("x-k", &secret), b"\x10\x03x-k\x01s");
        // authorization is index 23: 0001 1111 then 8.
        assert_eq!(field("authorization", &secret), b"\x1f\x08\x01s");
    }

    #[test]
    fn long_strings_use_continuation_octets() {
        let value = "v".repeat(300);
        let out = field("x", &HeaderValue::from_str(&value).unwrap());
        // 300 = 127 + 173: 0x7f, then 173 = 0x2d | 0x80, 0x01.
        assert_eq!(&out[..5], b"\x00\x01x\x7f\xad");
        assert_eq!(out[5], 0x01);
        assert_eq!(out.len(), 6 + 300);
    }

    #[test]
    fn put_integer_matches_rfc_7541_c1() {
        let mut dst = BytesMut::new();
        put_integer(10, 5, 0, &mut dst);
        assert_eq!(&dst[..], [0x0a]);
        dst.clear();
        put_integer(1337, 5, 0, &mut dst);
        assert_eq!(&dst[..], [0x1f, 0x9a, 0x0a]);
        dst.clear();
        put_integer(42, 8, 0, &mut dst);
        assert_eq!(&dst[..], [0x2a]);
    }
}
