//! Fuzzes the HTTP/2 server's HPACK decoder: arbitrary bytes, split into header blocks at
//! every occurrence of the first byte, are decoded in order by one decoder (as one
//! connection's blocks are). Decoding must give fields or an error, never panic, and the
//! dynamic table must stay within its limit whatever the blocks ask for.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard::http::h2_codec::hpack::{Decoder, FieldName};

/// The smallest SETTINGS_HEADER_TABLE_SIZE that still lets RFC 7541's examples evict.
const TABLE_SIZE: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&separator, rest)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::new(TABLE_SIZE);
    for block in rest.split(|&byte| byte == separator) {
        let block = Bytes::copy_from_slice(block);
        let _ = decoder.decode(&block, |field, size| {
            assert!(size >= 32);
            if field.name == FieldName::Malformed {
                assert!(field.value.is_empty());
            }
        });
        assert!(decoder.dynamic_table_size() <= decoder.dynamic_table_max_size());
        assert!(decoder.dynamic_table_max_size() <= TABLE_SIZE);
    }
});
