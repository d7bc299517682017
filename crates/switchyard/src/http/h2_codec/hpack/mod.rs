//! HPACK (RFC 7541): the header compression of HTTP/2.
//!
//! The request side is stateful: a [`Decoder`] keeps the dynamic table the client's encoder
//! fills, and every header block on the connection must pass through the same decoder in
//! order, or the tables drift apart. Decoded fields come out already classified
//! ([`FieldName`]), so the connection never compares pseudo-header strings again, and an
//! indexed reference (most of a request after the first on a connection) costs a table
//! lookup and two reference-count clones.
//!
//! The response side is stateless ([`encode_status`], [`encode_field`],
//! [`encode_headers`]): it never inserts into the peer's dynamic table, so the peer's
//! `SETTINGS_HEADER_TABLE_SIZE` never matters and encoding needs no connection state.
//!
//! Every [`DecodeError`] is a connection error of type `COMPRESSION_ERROR` (RFC 9113
//! section 4.3); a field that decodes but is not acceptable in HTTP/2 (RFC 9113 section
//! 8.2.1) is [`FieldName::Malformed`] instead, a stream error, so the table stays in sync.

mod decode;
mod encode;
pub mod huffman;
mod table;
#[cfg(test)]
mod tests;

use http::{HeaderName, HeaderValue};

pub use decode::Decoder;
pub use encode::{encode_field, encode_headers, encode_status};

/// The size of a field in the dynamic table beyond its name and value (RFC 7541 section
/// 4.1); also the per-field overhead of `SETTINGS_MAX_HEADER_LIST_SIZE`.
pub const FIELD_OVERHEAD: usize = 32;

/// A decoded field's name, classified once (pseudo-header fields of RFC 9113 section 8.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldName {
    /// `:method`.
    Method,
    /// `:scheme`.
    Scheme,
    /// `:authority`.
    Authority,
    /// `:path`.
    Path,
    /// `:status` (only in responses; a request carrying it is malformed, which is the
    /// caller's rule to apply).
    Status,
    /// A regular field; the name was lowercase and a valid token.
    Header(HeaderName),
    /// RFC 9113 8.2.1 / 8.3 malformed: an unknown pseudo-header (incl. `:protocol`), a name with
    /// uppercase or invalid characters, an empty name, or a value `http::HeaderValue` refuses
    /// (NUL, CR, LF, other controls). The caller resets the stream; decoding goes on so the
    /// dynamic table stays in sync.
    Malformed,
}

impl FieldName {
    /// Classifies a raw name as it arrived on the wire: a known pseudo-header, a valid
    /// lowercase token, or malformed.
    pub fn classify(raw: &[u8]) -> FieldName {
        match raw {
            b":method" => FieldName::Method,
            b":scheme" => FieldName::Scheme,
            b":authority" => FieldName::Authority,
            b":path" => FieldName::Path,
            b":status" => FieldName::Status,
            [b':', ..] => FieldName::Malformed,
            _ => HeaderName::from_lowercase(raw).map_or(FieldName::Malformed, FieldName::Header),
        }
    }

    /// The name as it is written on the wire, or `None` for [`FieldName::Malformed`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldName::Method => Some(":method"),
            FieldName::Scheme => Some(":scheme"),
            FieldName::Authority => Some(":authority"),
            FieldName::Path => Some(":path"),
            FieldName::Status => Some(":status"),
            FieldName::Header(name) => Some(name.as_str()),
            FieldName::Malformed => None,
        }
    }

    /// Whether this is one of the pseudo-header fields (`:method`, `:scheme`, ...).
    pub fn is_pseudo(&self) -> bool {
        matches!(
            self,
            FieldName::Method
                | FieldName::Scheme
                | FieldName::Authority
                | FieldName::Path
                | FieldName::Status
        )
    }
}

/// One decoded header field.
#[derive(Clone, Debug)]
pub struct Field {
    /// The classified name.
    pub name: FieldName,
    /// The value; empty for [`FieldName::Malformed`]. Marked sensitive when the peer sent
    /// it as "never indexed" (RFC 7541 section 6.2.3), so a re-encoder keeps it that way.
    pub value: HeaderValue,
}

impl Field {
    /// The field that stands for anything malformed: no name, an empty value.
    pub fn malformed() -> Field {
        Field {
            name: FieldName::Malformed,
            value: HeaderValue::from_static(""),
        }
    }
}

/// Why a header block cannot be decoded. Any of these is a connection error of type
/// `COMPRESSION_ERROR` (RFC 9113 section 4.3): the dynamic table can no longer be trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum DecodeError {
    /// An indexed field or name with index 0 (RFC 7541 section 6.1).
    #[error("HPACK: index 0 is not a valid table index")]
    IndexZero,
    /// An index past the end of the static and dynamic tables (RFC 7541 section 2.3.3).
    #[error("HPACK: index {index} is past the end of the tables ({len} entries)")]
    IndexOutOfRange {
        /// The index the block asked for.
        index: usize,
        /// How many entries the static and dynamic tables held together.
        len: usize,
    },
    /// A dynamic table size update above the `SETTINGS_HEADER_TABLE_SIZE` we advertise.
    #[error("HPACK: dynamic table size update to {size} exceeds the limit of {max}")]
    SizeUpdateTooLarge {
        /// The size the update asked for.
        size: usize,
        /// The limit we advertised.
        max: usize,
    },
    /// A dynamic table size update after the first field of a block (RFC 7541 section 4.2).
    #[error("HPACK: dynamic table size update after a header field")]
    SizeUpdateNotAtStart,
    /// More than two dynamic table size updates at the start of one block.
    #[error("HPACK: more than two dynamic table size updates in one block")]
    TooManySizeUpdates,
    /// An integer longer or larger than any legitimate one (RFC 7541 section 5.1 leaves the
    /// bound to the implementation).
    #[error("HPACK: integer too large")]
    IntegerOverflow,
    /// The block ends inside an integer.
    #[error("HPACK: header block ends inside an integer")]
    TruncatedInteger,
    /// The block ends inside a string literal.
    #[error("HPACK: header block ends inside a string literal")]
    TruncatedString,
    /// A Huffman-coded string contains the EOS symbol (RFC 7541 section 5.2).
    #[error("HPACK: Huffman-coded string contains the EOS symbol")]
    HuffmanEos,
    /// A Huffman-coded string ends in padding longer than 7 bits or not all ones (RFC 7541
    /// section 5.2).
    #[error("HPACK: Huffman-coded string has invalid padding")]
    HuffmanPadding,
}
