//! Header block decoding (RFC 7541 sections 3, 5 and 6): the stateful half of HPACK that
//! every request head passes through.
//!
//! A block is read front to back with bounds-checked cursors only: every integer, string
//! and index comes from the peer, so any of them may be truncated, oversized or out of
//! range, and each case is an error, never a panic. Nothing is allocated beyond what the
//! block itself holds (a Huffman string decodes to at most 8/5 of its coded length).

use bytes::Bytes;
use http::HeaderValue;

use super::table::{DynamicTable, Entry};
use super::{DecodeError, FIELD_OVERHEAD, Field, FieldName, huffman};

/// The largest integer accepted anywhere in a block: more than any table size, index or
/// string length a block can carry.
const MAX_INTEGER: u64 = u32::MAX as u64;
/// Continuation octets after the prefix: five carry 35 bits, more than [`MAX_INTEGER`].
const MAX_CONTINUATION_OCTETS: u32 = 5;
/// Size updates allowed at the start of one block: the lowest size since the last block,
/// then the final one (RFC 7541 section 4.2).
const MAX_SIZE_UPDATES: usize = 2;

/// The HPACK decoder of one HTTP/2 connection: the dynamic table the peer's encoder fills.
/// Every header block of the connection must be decoded by it, in order.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// The `SETTINGS_HEADER_TABLE_SIZE` we advertise: no size update may exceed it.
    max_table_size: usize,
    /// Reused buffer for Huffman-decoded strings.
    scratch: Vec<u8>,
}

/// How a literal field representation treats the dynamic table (RFC 7541 section 6.2).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Indexing {
    /// Added to the dynamic table.
    Incremental,
    /// Not added.
    Without,
    /// Not added, and never to be added by any intermediary re-encoding it.
    Never,
}

/// A string literal's place in the block and whether it is Huffman-coded.
struct Literal<'a> {
    octets: &'a [u8],
    huffman: bool,
    /// Where `octets` start in the block, for zero-copy slicing.
    start: usize,
}

/// A bounds-checked read position in one header block.
struct Cursor<'a> {
    block: &'a Bytes,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.block.get(self.pos).copied()
    }

    fn next_octet(&mut self) -> Option<u8> {
        let octet = self.peek()?;
        self.pos += 1;
        Some(octet)
    }

    /// Reads an integer with an N-bit prefix (RFC 7541 section 5.1); the bits above the
    /// prefix in the first octet are the caller's (the representation type).
    fn integer(&mut self, prefix_bits: u32) -> Result<usize, DecodeError> {
        let max_prefix = u8::MAX >> (8 - prefix_bits);
        let first = self.next_octet().ok_or(DecodeError::TruncatedInteger)? & max_prefix;
        if first < max_prefix {
            return Ok(usize::from(first));
        }
        let mut value = u64::from(max_prefix);
        for shift in (0..MAX_CONTINUATION_OCTETS).map(|i| i * 7) {
            let octet = self.next_octet().ok_or(DecodeError::TruncatedInteger)?;
            value += u64::from(octet & 0x7f) << shift;
            if octet & 0x80 == 0 {
                return checked_integer(value);
            }
        }
        Err(DecodeError::IntegerOverflow)
    }

    /// Reads a string literal (RFC 7541 section 5.2): H bit, 7-bit-prefix length, octets.
    fn literal(&mut self) -> Result<Literal<'a>, DecodeError> {
        let huffman = self.peek().ok_or(DecodeError::TruncatedString)? & 0x80 != 0;
        let len = self.integer(7).map_err(|e| match e {
            DecodeError::TruncatedInteger => DecodeError::TruncatedString,
            other => other,
        })?;
        let start = self.pos;
        let block: &'a Bytes = self.block;
        let octets = start
            .checked_add(len)
            .and_then(|end| block.get(start..end))
            .ok_or(DecodeError::TruncatedString)?;
        self.pos = start + len;
        Ok(Literal {
            octets,
            huffman,
            start,
        })
    }
}

fn checked_integer(value: u64) -> Result<usize, DecodeError> {
    if value > MAX_INTEGER {
        return Err(DecodeError::IntegerOverflow);
    }
    usize::try_from(value).map_err(|_| DecodeError::IntegerOverflow)
}

impl Decoder {
    /// `max_table_size`: the SETTINGS_HEADER_TABLE_SIZE we advertise (4096 by default); a
    /// dynamic table size update above it is an error. The table starts at that size (the
    /// peer may use all of it without a size update).
    pub fn new(max_table_size: usize) -> Decoder {
        Decoder {
            table: DynamicTable::new(max_table_size),
            max_table_size,
            scratch: Vec::new(),
        }
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION payloads joined, padding and
    /// priority already removed). Calls `each(field, size)` for every field in order, where
    /// `size` is the RFC 7541 4.1 size (raw name length + raw value length + 32) so the caller
    /// can enforce SETTINGS_MAX_HEADER_LIST_SIZE (the caller may ignore fields past its limit;
    /// the decoder must still process the whole block to keep the table in sync).
    pub fn decode(
        &mut self,
        block: &Bytes,
        mut each: impl FnMut(Field, usize),
    ) -> Result<(), DecodeError> {
        let mut cursor = Cursor { block, pos: 0 };
        self.size_updates(&mut cursor)?;
        while let Some(first) = cursor.peek() {
            let (field, size) = match first {
                0x80..=0xff => self.indexed(&mut cursor)?,
                0x40..=0x7f => self.literal_field(&mut cursor, 6, Indexing::Incremental)?,
                0x20..=0x3f => return Err(DecodeError::SizeUpdateNotAtStart),
                0x10..=0x1f => self.literal_field(&mut cursor, 4, Indexing::Never)?,
                0x00..=0x0f => self.literal_field(&mut cursor, 4, Indexing::Without)?,
            };
            each(field, size);
        }
        Ok(())
    }

    /// The dynamic table's current size (RFC 7541 section 4.1).
    pub fn dynamic_table_size(&self) -> usize {
        self.table.size()
    }

    /// The dynamic table's current maximum size: the last size update, or the limit.
    pub fn dynamic_table_max_size(&self) -> usize {
        self.table.max_size()
    }

    /// Applies the dynamic table size updates that may open a block (RFC 7541 section 6.3).
    fn size_updates(&mut self, cursor: &mut Cursor<'_>) -> Result<(), DecodeError> {
        let mut updates = 0;
        while let Some(0x20..=0x3f) = cursor.peek() {
            updates += 1;
            if updates > MAX_SIZE_UPDATES {
                return Err(DecodeError::TooManySizeUpdates);
            }
            let size = cursor.integer(5)?;
            if size > self.max_table_size {
                return Err(DecodeError::SizeUpdateTooLarge {
                    size,
                    max: self.max_table_size,
                });
            }
            self.table.set_max_size(size);
        }
        Ok(())
    }

    /// An indexed header field (RFC 7541 section 6.1): the hot path of repeated requests.
    #[inline]
    fn indexed(&self, cursor: &mut Cursor<'_>) -> Result<(Field, usize), DecodeError> {
        let index = cursor.integer(7)?;
        let entry = self.table.get(index)?;
        Ok((entry.field(), entry.size))
    }

    /// A literal header field, with indexed or literal name (RFC 7541 section 6.2).
    fn literal_field(
        &mut self,
        cursor: &mut Cursor<'_>,
        prefix_bits: u32,
        indexing: Indexing,
    ) -> Result<(Field, usize), DecodeError> {
        let (name, name_len) = match cursor.integer(prefix_bits)? {
            0 => {
                let literal = cursor.literal()?;
                self.literal_name(&literal)?
            }
            index => {
                let entry = self.table.get(index)?;
                (entry.name.clone(), entry.name_len)
            }
        };
        let literal = cursor.literal()?;
        let stored = indexing == Indexing::Incremental;
        let (mut value, value_len) = self.literal_value(cursor.block, &literal, stored)?;
        let size = name_len + value_len + FIELD_OVERHEAD;
        if indexing == Indexing::Never
            && let Some(value) = &mut value
        {
            value.set_sensitive(true);
        }
        if stored {
            self.table.insert(Entry {
                name: name.clone(),
                value: value.clone(),
                name_len,
                size,
            });
        }
        let field = match (name, value) {
            (FieldName::Malformed, _) | (_, None) => Field::malformed(),
            (name, Some(value)) => Field { name, value },
        };
        Ok((field, size))
    }

    /// A literal name, classified, and its raw length.
    fn literal_name(&mut self, literal: &Literal<'_>) -> Result<(FieldName, usize), DecodeError> {
        if literal.huffman {
            self.scratch.clear();
            huffman::decode(literal.octets, &mut self.scratch)?;
            Ok((FieldName::classify(&self.scratch), self.scratch.len()))
        } else {
            Ok((FieldName::classify(literal.octets), literal.octets.len()))
        }
    }

    /// A literal value (`None` if `http` refuses it) and its raw length. A value for the
    /// dynamic table is copied, so the table never pins the connection's read buffer; any
    /// other plain value is a zero-copy slice of the block.
    fn literal_value(
        &mut self,
        block: &Bytes,
        literal: &Literal<'_>,
        stored: bool,
    ) -> Result<(Option<HeaderValue>, usize), DecodeError> {
        if literal.huffman {
            self.scratch.clear();
            huffman::decode(literal.octets, &mut self.scratch)?;
            let value = HeaderValue::from_bytes(&self.scratch).ok();
            return Ok((value, self.scratch.len()));
        }
        let len = literal.octets.len();
        let value = if stored {
            HeaderValue::from_bytes(literal.octets).ok()
        } else {
            let shared = block.slice(literal.start..literal.start + len);
            HeaderValue::from_maybe_shared(shared).ok()
        };
        Ok((value, len))
    }

    /// The dynamic table as (name, value, size), newest first, for tests.
    #[cfg(test)]
    pub(super) fn dynamic_entries(&self) -> Vec<(String, String, usize)> {
        self.table
            .entries()
            .map(|entry| {
                let name = entry.name.as_str().unwrap_or("<malformed>").to_owned();
                let value = entry.value.as_ref().map_or("<invalid>".to_owned(), |v| {
                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                });
                (name, value, entry.size)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Decodes `block`, returning each field as (name, value, size); malformed names are
    /// `"<malformed>"`.
    fn fields(
        decoder: &mut Decoder,
        block: &[u8],
    ) -> Result<Vec<(String, String, usize)>, DecodeError> {
        let mut out = Vec::new();
        decoder.decode(&Bytes::copy_from_slice(block), |field, size| {
            let name = field.name.as_str().unwrap_or("<malformed>").to_owned();
            let value = String::from_utf8_lossy(field.value.as_bytes()).into_owned();
            out.push((name, value, size));
        })?;
        Ok(out)
    }

    fn one(name: &str, value: &str, size: usize) -> Vec<(String, String, usize)> {
        vec![(name.to_owned(), value.to_owned(), size)]
    }

    fn error(block: &[u8]) -> DecodeError {
        fields(&mut Decoder::new(4096), block).unwrap_err()
    }

    #[test]
    fn integers_match_rfc_7541_c1() {
        let block = Bytes::from_static(&[0x0a, 0x1f, 0x9a, 0x0a, 0x2a]);
        let mut cursor = Cursor {
            block: &block,
            pos: 0,
        };
        assert_eq!(cursor.integer(5), Ok(10));
        assert_eq!(cursor.integer(5), Ok(1337));
        assert_eq!(cursor.integer(8), Ok(42));
        assert_eq!(cursor.integer(5), Err(DecodeError::TruncatedInteger));
    }

    #[test]
    fn the_largest_accepted_integer_is_u32_max() {
        // 2^32 - 1 = 127 + 0xffff_ff80: continuation octets 80 ff ff ff 0f.
        let max = Bytes::from_static(&[0x7f, 0x80, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(
            Cursor {
                block: &max,
                pos: 0
            }
            .integer(7),
            Ok(u32::MAX as usize)
        );
        let over = Bytes::from_static(&[0x7f, 0x81, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(
            Cursor {
                block: &over,
                pos: 0
            }
            .integer(7),
            Err(DecodeError::IntegerOverflow)
        );
    }

    #[test]
    fn index_zero_is_an_error() {
        assert_eq!(error(&[0x80]), DecodeError::IndexZero);
    }

    #[test]
    fn an_index_past_the_tables_is_an_error() {
        assert_eq!(
            error(&[0xbe]),
            DecodeError::IndexOutOfRange { index: 62, len: 61 }
        );
        // A literal's indexed name past the tables too.
        assert_eq!(
            error(&[0x7f, 0x00, 0x01, b'x']),
            DecodeError::IndexOutOfRange { index: 63, len: 61 }
        );
    }

    #[test]
    fn a_size_update_above_the_limit_is_an_error() {
        // 0x3f e2 1f = 31 + 0x62 + (0x1f << 7) = 4097.
        assert_eq!(
            error(&[0x3f, 0xe2, 0x1f]),
            DecodeError::SizeUpdateTooLarge {
                size: 4097,
                max: 4096
            }
        );
        assert_eq!(
            fields(&mut Decoder::new(4096), &[0x3f, 0xe1, 0x1f]).unwrap(),
            []
        );
    }

    #[test]
    fn a_size_update_after_a_field_is_an_error() {
        assert_eq!(error(&[0x82, 0x20]), DecodeError::SizeUpdateNotAtStart);
    }

    #[test]
    fn two_size_updates_are_allowed_and_three_are_not() {
        let mut decoder = Decoder::new(4096);
        fields(&mut decoder, b"\x40\x03x-a\x011").unwrap();
        assert_eq!(decoder.dynamic_table_size(), 36);
        // Shrink to 0 (clearing the table), then back to 100, then a field.
        assert_eq!(
            fields(&mut decoder, &[0x20, 0x3f, 0x45, 0x82])
                .unwrap()
                .len(),
            1
        );
        assert_eq!(decoder.dynamic_table_size(), 0);
        assert_eq!(decoder.dynamic_table_max_size(), 100);
        assert_eq!(error(&[0x20, 0x20, 0x20]), DecodeError::TooManySizeUpdates);
    }

    #[test]
    fn truncated_integers_are_errors() {
        assert_eq!(error(&[0xff]), DecodeError::TruncatedInteger);
        assert_eq!(error(&[0xff, 0x80]), DecodeError::TruncatedInteger);
        assert_eq!(error(&[0x3f]), DecodeError::TruncatedInteger);
        // The name index of a literal.
        assert_eq!(error(&[0x0f]), DecodeError::TruncatedInteger);
    }

    #[test]
    fn overlong_integers_are_errors() {
        assert_eq!(
            error(&[0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            DecodeError::IntegerOverflow
        );
        assert_eq!(
            error(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            DecodeError::IntegerOverflow
        );
    }

    #[test]
    fn truncated_strings_are_errors() {
        // Missing name literal, short name, missing value, short value, long length.
        assert_eq!(error(&[0x00]), DecodeError::TruncatedString);
        assert_eq!(error(b"\x00\x05ab"), DecodeError::TruncatedString);
        assert_eq!(error(b"\x00\x02ab"), DecodeError::TruncatedString);
        assert_eq!(error(b"\x00\x02ab\x03v"), DecodeError::TruncatedString);
        assert_eq!(error(b"\x00\x7f\xff"), DecodeError::TruncatedString);
        assert_eq!(
            error(b"\x00\x7f\xff\xff\xff\x0f"),
            DecodeError::TruncatedString
        );
    }

    #[test]
    fn huffman_errors_are_decode_errors() {
        // Name "a" Huffman-coded, value EOS.
        assert_eq!(
            error(&[0x00, 0x81, 0x1f, 0x84, 0xff, 0xff, 0xff, 0xff]),
            DecodeError::HuffmanEos
        );
        // Value "a" followed by a full byte of padding.
        assert_eq!(
            error(&[0x00, 0x81, 0x1f, 0x82, 0x1f, 0xff]),
            DecodeError::HuffmanPadding
        );
        // Value "a" padded with zeros.
        assert_eq!(
            error(&[0x00, 0x81, 0x1f, 0x81, 0x18]),
            DecodeError::HuffmanPadding
        );
    }

    #[test]
    fn an_uppercase_name_is_malformed_and_decoding_continues() {
        let mut decoder = Decoder::new(4096);
        let out = fields(&mut decoder, b"\x40\x03X-a\x011\x82\xbe").unwrap();
        assert_eq!(
            out,
            [
                ("<malformed>".into(), String::new(), 36),
                (":method".into(), "GET".into(), 42),
                ("<malformed>".into(), String::new(), 36),
            ]
        );
        // The malformed entry still counts in the table.
        assert_eq!(decoder.dynamic_table_size(), 36);
    }

    #[test]
    fn unknown_pseudo_headers_are_malformed() {
        let mut decoder = Decoder::new(4096);
        assert_eq!(
            fields(&mut decoder, b"\x00\x09:protocol\x09websocket").unwrap(),
            one("<malformed>", "", 9 + 9 + 32)
        );
        assert_eq!(
            fields(&mut decoder, b"\x00\x01:\x00").unwrap(),
            one("<malformed>", "", 33)
        );
    }

    #[test]
    fn empty_and_invalid_names_are_malformed() {
        let mut decoder = Decoder::new(4096);
        assert_eq!(
            fields(&mut decoder, b"\x00\x00\x01v").unwrap(),
            one("<malformed>", "", 33)
        );
        assert_eq!(
            fields(&mut decoder, b"\x00\x03a b\x01v").unwrap(),
            one("<malformed>", "", 36)
        );
    }

    #[test]
    fn control_characters_in_values_are_malformed() {
        let mut decoder = Decoder::new(4096);
        for value in [&b"a\nb"[..], b"a\rb", b"a\0b", b"\x7f"] {
            let mut block = b"\x00\x03x-a".to_vec();
            block.push(value.len() as u8);
            block.extend_from_slice(value);
            assert_eq!(
                fields(&mut decoder, &block).unwrap(),
                one("<malformed>", "", 3 + value.len() + 32)
            );
        }
    }

    #[test]
    fn a_stored_invalid_value_keeps_its_name_for_name_references() {
        let mut decoder = Decoder::new(4096);
        // x-a: "a\nb" stored (malformed), a literal without indexing naming entry 62 with
        // a good value, then entry 62 itself.
        let out = fields(&mut decoder, b"\x40\x03x-a\x03a\nb\x0f\x2f\x02ok\xbe").unwrap();
        assert_eq!(
            out,
            [
                ("<malformed>".into(), String::new(), 38),
                ("x-a".into(), "ok".into(), 37),
                ("<malformed>".into(), String::new(), 38),
            ]
        );
    }

    #[test]
    fn never_indexed_values_come_out_sensitive() {
        let mut decoder = Decoder::new(4096);
        let mut sensitive = Vec::new();
        decoder
            .decode(
                &Bytes::from_static(b"\x10\x01k\x01s\x00\x01k\x01s"),
                |f, _| {
                    sensitive.push(f.value.is_sensitive());
                },
            )
            .unwrap();
        assert_eq!(sensitive, [true, false]);
    }

    #[test]
    fn unstored_plain_values_share_the_block_and_stored_ones_do_not() {
        let block = Bytes::from_static(b"\x00\x01k\x05value\x40\x01k\x05value");
        let range = block.as_ptr() as usize..block.as_ptr() as usize + block.len();
        let mut inside = Vec::new();
        Decoder::new(4096)
            .decode(&block, |f, _| {
                inside.push(range.contains(&(f.value.as_bytes().as_ptr() as usize)));
            })
            .unwrap();
        assert_eq!(inside, [true, false]);
    }

    #[test]
    fn an_empty_block_decodes_to_nothing() {
        assert_eq!(fields(&mut Decoder::new(4096), b"").unwrap(), []);
    }
}
