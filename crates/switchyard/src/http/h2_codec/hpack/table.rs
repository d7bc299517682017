//! The two tables an HPACK index points into (RFC 7541 section 2.3): the static table of
//! Appendix A, classified once at compile time, and the dynamic table a connection's
//! decoder keeps, whose entries are stored already classified so an indexed reference is
//! a lookup and two cheap clones.

use std::collections::VecDeque;

use http::{HeaderName, HeaderValue};

use super::{DecodeError, FIELD_OVERHEAD, Field, FieldName};

/// One table entry: a classified name, its value, and the raw lengths the RFC sizes are
/// made of (a malformed name or value keeps its size: eviction must match the peer's).
#[derive(Clone, Debug)]
pub(super) struct Entry {
    /// The classified name, also what a literal with an indexed name takes from here.
    pub(super) name: FieldName,
    /// The value, or `None` when `http` refused it (the field is then malformed).
    pub(super) value: Option<HeaderValue>,
    /// The raw name's length in octets.
    pub(super) name_len: usize,
    /// The RFC 7541 section 4.1 size: name and value lengths plus 32.
    pub(super) size: usize,
}

impl Entry {
    /// The field an indexed reference to this entry decodes to.
    #[inline]
    pub(super) fn field(&self) -> Field {
        match (&self.name, &self.value) {
            (FieldName::Malformed, _) | (_, None) => Field::malformed(),
            (name, Some(value)) => Field {
                name: name.clone(),
                value: value.clone(),
            },
        }
    }
}

const fn pseudo(name: FieldName, raw_name: &'static str, value: &'static str) -> Entry {
    Entry {
        name,
        value: Some(HeaderValue::from_static(value)),
        name_len: raw_name.len(),
        size: raw_name.len() + value.len() + FIELD_OVERHEAD,
    }
}

const fn header(name: &'static str, value: &'static str) -> Entry {
    Entry {
        name: FieldName::Header(HeaderName::from_static(name)),
        value: Some(HeaderValue::from_static(value)),
        name_len: name.len(),
        size: name.len() + value.len() + FIELD_OVERHEAD,
    }
}

/// Entries in the static table; dynamic indexes start after it.
pub(super) const STATIC_LEN: usize = 61;

/// The static table of RFC 7541 Appendix A; index `i` is `STATIC_TABLE[i - 1]`.
pub(super) static STATIC_TABLE: [Entry; STATIC_LEN] = [
    pseudo(FieldName::Authority, ":authority", ""),
    pseudo(FieldName::Method, ":method", "GET"),
    pseudo(FieldName::Method, ":method", "POST"),
    pseudo(FieldName::Path, ":path", "/"),
    pseudo(FieldName::Path, ":path", "/index.html"),
    pseudo(FieldName::Scheme, ":scheme", "http"),
    pseudo(FieldName::Scheme, ":scheme", "https"),
    pseudo(FieldName::Status, ":status", "200"),
    pseudo(FieldName::Status, ":status", "204"),
    pseudo(FieldName::Status, ":status", "206"),
    pseudo(FieldName::Status, ":status", "304"),
    pseudo(FieldName::Status, ":status", "400"),
    pseudo(FieldName::Status, ":status", "404"),
    pseudo(FieldName::Status, ":status", "500"),
    header("accept-charset", ""),
    header("accept-encoding", "gzip, deflate"),
    header("accept-language", ""),
    header("accept-ranges", ""),
    header("accept", ""),
    header("access-control-allow-origin", ""),
    header("age", ""),
    header("allow", ""),
    header("authorization", ""),
    header("cache-control", ""),
    header("content-disposition", ""),
    header("content-encoding", ""),
    header("content-language", ""),
    header("content-length", ""),
    header("content-location", ""),
    header("content-range", ""),
    header("content-type", ""),
    header("cookie", ""),
    header("date", ""),
    header("etag", ""),
    header("expect", ""),
    header("expires", ""),
    header("from", ""),
    header("host", ""),
    header("if-match", ""),
    header("if-modified-since", ""),
    header("if-none-match", ""),
    header("if-range", ""),
    header("if-unmodified-since", ""),
    header("last-modified", ""),
    header("link", ""),
    header("location", ""),
    header("max-forwards", ""),
    header("proxy-authenticate", ""),
    header("proxy-authorization", ""),
    header("range", ""),
    header("referer", ""),
    header("refresh", ""),
    header("retry-after", ""),
    header("server", ""),
    header("set-cookie", ""),
    header("strict-transport-security", ""),
    header("transfer-encoding", ""),
    header("user-agent", ""),
    header("vary", ""),
    header("via", ""),
    header("www-authenticate", ""),
];

/// The lowest static table index whose name is `name`, for the encoder's indexed names.
pub(super) fn static_name_index(name: &HeaderName) -> Option<usize> {
    let index = match name.as_str() {
        "accept-charset" => 15,
        "accept-encoding" => 16,
        "accept-language" => 17,
        "accept-ranges" => 18,
        "accept" => 19,
        "access-control-allow-origin" => 20,
        "age" => 21,
        "allow" => 22,
        "authorization" => 23,
        "cache-control" => 24,
        "content-disposition" => 25,
        "content-encoding" => 26,
        "content-language" => 27,
        "content-length" => 28,
        "content-location" => 29,
        "content-range" => 30,
        "content-type" => 31,
        "cookie" => 32,
        "date" => 33,
        "etag" => 34,
        "expect" => 35,
        "expires" => 36,
        "from" => 37,
        "host" => 38,
        "if-match" => 39,
        "if-modified-since" => 40,
        "if-none-match" => 41,
        "if-range" => 42,
        "if-unmodified-since" => 43,
        "last-modified" => 44,
        "link" => 45,
        "location" => 46,
        "max-forwards" => 47,
        "proxy-authenticate" => 48,
        "proxy-authorization" => 49,
        "range" => 50,
        "referer" => 51,
        "refresh" => 52,
        "retry-after" => 53,
        "server" => 54,
        "set-cookie" => 55,
        "strict-transport-security" => 56,
        "transfer-encoding" => 57,
        "user-agent" => 58,
        "vary" => 59,
        "via" => 60,
        "www-authenticate" => 61,
        _ => return None,
    };
    Some(index)
}

/// The dynamic table of one connection's decoder (RFC 7541 section 2.3.2): newest entry
/// first, evicted from the oldest end to keep the total size within `max_size`.
#[derive(Debug)]
pub(super) struct DynamicTable {
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    pub(super) fn new(max_size: usize) -> DynamicTable {
        DynamicTable {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// The entry at an HPACK index (1-based, static table first).
    #[inline]
    pub(super) fn get(&self, index: usize) -> Result<&Entry, DecodeError> {
        let found = match index {
            0 => return Err(DecodeError::IndexZero),
            1..=STATIC_LEN => STATIC_TABLE.get(index - 1),
            _ => self.entries.get(index - STATIC_LEN - 1),
        };
        found.ok_or(DecodeError::IndexOutOfRange {
            index,
            len: STATIC_LEN + self.entries.len(),
        })
    }

    /// Adds an entry as the newest, evicting the oldest ones to make room; an entry larger
    /// than the whole table empties it and is not added (RFC 7541 section 4.4).
    pub(super) fn insert(&mut self, entry: Entry) {
        if entry.size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - entry.size);
        self.size += entry.size;
        self.entries.push_front(entry);
    }

    /// Applies a dynamic table size update (RFC 7541 section 6.3), evicting as needed.
    pub(super) fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            match self.entries.pop_back() {
                Some(oldest) => self.size -= oldest.size,
                None => self.size = 0,
            }
        }
    }

    /// The current size: the sum of the entries' RFC sizes.
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// The current maximum size (the last size update, or the initial limit).
    pub(super) fn max_size(&self) -> usize {
        self.max_size
    }

    /// The entries, newest first.
    #[cfg(test)]
    pub(super) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(name: &str, value: &str) -> Entry {
        Entry {
            name: FieldName::classify(name.as_bytes()),
            value: HeaderValue::from_str(value).ok(),
            name_len: name.len(),
            size: name.len() + value.len() + FIELD_OVERHEAD,
        }
    }

    fn names(table: &DynamicTable) -> Vec<String> {
        table
            .entries()
            .map(|e| e.name.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn static_table_entries_are_classified_and_sized() {
        assert_eq!(STATIC_TABLE[0].name, FieldName::Authority);
        assert_eq!(STATIC_TABLE[1].field().value, "GET");
        assert_eq!(STATIC_TABLE[2].field().value, "POST");
        assert_eq!(STATIC_TABLE[7].name, FieldName::Status);
        assert_eq!(STATIC_TABLE[13].field().value, "500");
        assert_eq!(STATIC_TABLE[15].field().value, "gzip, deflate");
        assert_eq!(STATIC_TABLE[60].name.as_str(), Some("www-authenticate"));
        for entry in &STATIC_TABLE {
            let raw = entry.name.as_str().unwrap();
            assert_eq!(FieldName::classify(raw.as_bytes()), entry.name);
            assert_eq!(entry.name_len, raw.len());
            let value_len = entry.value.as_ref().unwrap().len();
            assert_eq!(entry.size, raw.len() + value_len + 32);
        }
    }

    #[test]
    fn static_name_index_is_the_first_entry_with_that_name() {
        for (i, entry) in STATIC_TABLE.iter().enumerate() {
            if let FieldName::Header(name) = &entry.name {
                let first = STATIC_TABLE
                    .iter()
                    .position(|e| e.name == entry.name)
                    .unwrap();
                assert_eq!(static_name_index(name), Some(first + 1), "entry {}", i + 1);
            }
        }
        assert_eq!(
            static_name_index(&HeaderName::from_static("x-custom")),
            None
        );
    }

    #[test]
    fn get_spans_both_tables_and_rejects_zero_and_past_the_end() {
        let mut table = DynamicTable::new(4096);
        table.insert(entry("x-a", "1"));
        assert_eq!(table.get(0).unwrap_err(), DecodeError::IndexZero);
        assert_eq!(table.get(2).unwrap().name, FieldName::Method);
        assert_eq!(table.get(62).unwrap().name.as_str(), Some("x-a"));
        assert_eq!(
            table.get(63).unwrap_err(),
            DecodeError::IndexOutOfRange { index: 63, len: 62 }
        );
    }

    #[test]
    fn insert_evicts_the_oldest_by_rfc_size() {
        // Each entry is 3 + 1 + 32 = 36 bytes; three fit in 110, not four.
        let mut table = DynamicTable::new(110);
        for name in ["x-a", "x-b", "x-c", "x-d"] {
            table.insert(entry(name, "1"));
        }
        assert_eq!(names(&table), ["x-d", "x-c", "x-b"]);
        assert_eq!(table.size(), 108);
    }

    #[test]
    fn an_entry_larger_than_the_table_empties_it() {
        let mut table = DynamicTable::new(64);
        table.insert(entry("x-a", "1"));
        table.insert(entry("x-big", &"v".repeat(40)));
        assert_eq!(table.entries().count(), 0);
        assert_eq!(table.size(), 0);
        table.insert(entry("x-b", "1"));
        assert_eq!(names(&table), ["x-b"]);
    }

    #[test]
    fn shrinking_evicts_and_zero_clears() {
        let mut table = DynamicTable::new(4096);
        for name in ["x-a", "x-b", "x-c"] {
            table.insert(entry(name, "1"));
        }
        table.set_max_size(72);
        assert_eq!(names(&table), ["x-c", "x-b"]);
        table.set_max_size(0);
        assert_eq!(table.entries().count(), 0);
        assert_eq!(table.size(), 0);
        assert_eq!(table.max_size(), 0);
    }
}
