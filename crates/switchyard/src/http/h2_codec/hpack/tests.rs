//! The examples of RFC 7541 Appendix C, byte for byte with the dynamic table after each
//! block, and the round trip from the encoder through the decoder: the tests that pin the
//! codec to the specification rather than to itself.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;

use super::{Decoder, FieldName, encode_headers, encode_status};

fn hex(text: &str) -> Bytes {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

/// Decodes a block into (name, value) pairs, checking each reported size.
fn decode(decoder: &mut Decoder, block: &Bytes) -> Vec<(String, String)> {
    let mut out = Vec::new();
    decoder
        .decode(block, |field, size| {
            let name = field.name.as_str().unwrap().to_owned();
            assert_eq!(size, name.len() + field.value.len() + 32, "{name}");
            out.push((name, field.value.to_str().unwrap().to_owned()));
        })
        .unwrap();
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// Asserts the dynamic table, newest first, and its size.
fn assert_table(decoder: &Decoder, expected: &[(&str, &str)], size: usize) {
    let actual: Vec<(String, String)> = decoder
        .dynamic_entries()
        .into_iter()
        .map(|(name, value, entry_size)| {
            assert_eq!(entry_size, name.len() + value.len() + 32);
            (name, value)
        })
        .collect();
    assert_eq!(actual, pairs(expected));
    assert_eq!(decoder.dynamic_table_size(), size);
}

/// One block of a sequence: its bytes, the fields, the table after it and its size.
struct Step<'a> {
    block: &'a str,
    fields: &'a [(&'a str, &'a str)],
    table: &'a [(&'a str, &'a str)],
    size: usize,
}

fn run_sequence(table_size: usize, steps: &[Step<'_>]) {
    let mut decoder = Decoder::new(table_size);
    for step in steps {
        assert_eq!(decode(&mut decoder, &hex(step.block)), pairs(step.fields));
        assert_table(&decoder, step.table, step.size);
    }
}

#[test]
fn c2_1_literal_with_indexing() {
    let mut decoder = Decoder::new(4096);
    let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
    assert_eq!(
        decode(&mut decoder, &block),
        pairs(&[("custom-key", "custom-header")])
    );
    assert_table(&decoder, &[("custom-key", "custom-header")], 55);
}

#[test]
fn c2_2_literal_without_indexing() {
    let mut decoder = Decoder::new(4096);
    let block = hex("040c 2f73 616d 706c 652f 7061 7468");
    assert_eq!(
        decode(&mut decoder, &block),
        pairs(&[(":path", "/sample/path")])
    );
    assert_table(&decoder, &[], 0);
}

#[test]
fn c2_3_literal_never_indexed() {
    let mut decoder = Decoder::new(4096);
    let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
    let mut sensitive = false;
    decoder
        .decode(&block, |field, size| {
            assert_eq!(field.name.as_str(), Some("password"));
            assert_eq!(field.value, "secret");
            assert_eq!(size, 46);
            sensitive = field.value.is_sensitive();
        })
        .unwrap();
    assert!(sensitive);
    assert_table(&decoder, &[], 0);
}

#[test]
fn c2_4_indexed() {
    let mut decoder = Decoder::new(4096);
    let mut names = Vec::new();
    decoder
        .decode(&hex("82"), |field, _| names.push((field.name, field.value)))
        .unwrap();
    assert_eq!(
        names,
        [(FieldName::Method, HeaderValue::from_static("GET"))]
    );
    assert_table(&decoder, &[], 0);
}

const REQUEST_1: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
];
const REQUEST_2: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
    ("cache-control", "no-cache"),
];
const REQUEST_3: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
];
const REQUEST_TABLE_1: &[(&str, &str)] = &[(":authority", "www.example.com")];
const REQUEST_TABLE_2: &[(&str, &str)] = &[
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];
const REQUEST_TABLE_3: &[(&str, &str)] = &[
    ("custom-key", "custom-value"),
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];

#[test]
fn c3_requests_without_huffman() {
    run_sequence(
        4096,
        &[
            Step {
                block: "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                fields: REQUEST_1,
                table: REQUEST_TABLE_1,
                size: 57,
            },
            Step {
                block: "8286 84be 5808 6e6f 2d63 6163 6865",
                fields: REQUEST_2,
                table: REQUEST_TABLE_2,
                size: 110,
            },
            Step {
                block: "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                fields: REQUEST_3,
                table: REQUEST_TABLE_3,
                size: 164,
            },
        ],
    );
}

#[test]
fn c4_requests_with_huffman() {
    run_sequence(
        4096,
        &[
            Step {
                block: "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                fields: REQUEST_1,
                table: REQUEST_TABLE_1,
                size: 57,
            },
            Step {
                block: "8286 84be 5886 a8eb 1064 9cbf",
                fields: REQUEST_2,
                table: REQUEST_TABLE_2,
                size: 110,
            },
            Step {
                block: "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                fields: REQUEST_3,
                table: REQUEST_TABLE_3,
                size: 164,
            },
        ],
    );
}

const DATE_1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE_2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOCATION: &str = "https://www.example.com";
const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

const RESPONSE_1: &[(&str, &str)] = &[
    (":status", "302"),
    ("cache-control", "private"),
    ("date", DATE_1),
    ("location", LOCATION),
];
const RESPONSE_2: &[(&str, &str)] = &[
    (":status", "307"),
    ("cache-control", "private"),
    ("date", DATE_1),
    ("location", LOCATION),
];
const RESPONSE_3: &[(&str, &str)] = &[
    (":status", "200"),
    ("cache-control", "private"),
    ("date", DATE_2),
    ("location", LOCATION),
    ("content-encoding", "gzip"),
    ("set-cookie", COOKIE),
];
const RESPONSE_TABLE_1: &[(&str, &str)] = &[
    ("location", LOCATION),
    ("date", DATE_1),
    ("cache-control", "private"),
    (":status", "302"),
];
const RESPONSE_TABLE_2: &[(&str, &str)] = &[
    (":status", "307"),
    ("location", LOCATION),
    ("date", DATE_1),
    ("cache-control", "private"),
];
const RESPONSE_TABLE_3: &[(&str, &str)] = &[
    ("set-cookie", COOKIE),
    ("content-encoding", "gzip"),
    ("date", DATE_2),
];

#[test]
fn c5_responses_without_huffman_evict_from_a_256_byte_table() {
    run_sequence(
        256,
        &[
            Step {
                block: "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 \
                        3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 \
                        7777 2e65 7861 6d70 6c65 2e63 6f6d",
                fields: RESPONSE_1,
                table: RESPONSE_TABLE_1,
                size: 222,
            },
            Step {
                block: "4803 3330 37c1 c0bf",
                fields: RESPONSE_2,
                table: RESPONSE_TABLE_2,
                size: 222,
            },
            Step {
                block: "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 \
                        3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a \
                        584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 \
                        3630 303b 2076 6572 7369 6f6e 3d31",
                fields: RESPONSE_3,
                table: RESPONSE_TABLE_3,
                size: 215,
            },
        ],
    );
}

#[test]
fn c6_responses_with_huffman_evict_from_a_256_byte_table() {
    run_sequence(
        256,
        &[
            Step {
                block: "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 \
                        66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                fields: RESPONSE_1,
                table: RESPONSE_TABLE_1,
                size: 222,
            },
            Step {
                block: "4883 640e ffc1 c0bf",
                fields: RESPONSE_2,
                table: RESPONSE_TABLE_2,
                size: 222,
            },
            Step {
                block: "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a \
                        839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 \
                        72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                fields: RESPONSE_3,
                table: RESPONSE_TABLE_3,
                size: 215,
            },
        ],
    );
}

/// The fuzz target's seeds (RFC 7541 Appendix C among them) decode without error, framed
/// as the target frames them: the first byte separates the blocks that follow.
#[test]
fn the_fuzz_seed_corpus_decodes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/hpack");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let (&separator, rest) = data.split_first().unwrap();
        let mut decoder = Decoder::new(256);
        for block in rest.split(|&byte| byte == separator) {
            let block = Bytes::copy_from_slice(block);
            let result = decoder.decode(&block, |_, _| {});
            assert_eq!(result, Ok(()), "{}", path.display());
        }
        seeds += 1;
    }
    assert!(seeds > 0, "no seeds under {}", dir.display());
}

fn header_name() -> impl Strategy<Value = HeaderName> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,24}",
        Just("content-type".to_owned()),
        Just("set-cookie".to_owned()),
        Just("www-authenticate".to_owned()),
        Just("x-request-id".to_owned()),
    ]
    .prop_map(|name| HeaderName::from_bytes(name.as_bytes()).unwrap())
}

fn header_value() -> impl Strategy<Value = HeaderValue> {
    let octet = prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff];
    (proptest::collection::vec(octet, 0..200), any::<bool>()).prop_map(|(octets, sensitive)| {
        let mut value = HeaderValue::from_bytes(&octets).unwrap();
        value.set_sensitive(sensitive);
        value
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encoded_heads_decode_to_the_same_fields(
        status in 100u16..600,
        fields in proptest::collection::vec((header_name(), header_value()), 0..20),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(name, value);
        }
        let mut block = BytesMut::new();
        encode_status(StatusCode::from_u16(status).unwrap(), &mut block);
        encode_headers(&headers, &mut block);

        let mut decoder = Decoder::new(4096);
        let mut decoded = Vec::new();
        decoder.decode(&block.freeze(), |field, _| decoded.push(field)).unwrap();

        let (first, rest) = decoded.split_first().unwrap();
        prop_assert_eq!(&first.name, &FieldName::Status);
        let digits = status.to_string();
        prop_assert_eq!(first.value.as_bytes(), digits.as_bytes());
        prop_assert_eq!(rest.len(), headers.len());
        for (field, (name, value)) in rest.iter().zip(headers.iter()) {
            prop_assert_eq!(&field.name, &FieldName::Header(name.clone()));
            prop_assert_eq!(&field.value, value);
            prop_assert_eq!(field.value.is_sensitive(), value.is_sensitive());
        }
        // A stateless encoder never touches the peer's table.
        prop_assert_eq!(decoder.dynamic_table_size(), 0);
    }

    #[test]
    fn arbitrary_blocks_never_panic(
        blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..4),
    ) {
        let mut decoder = Decoder::new(256);
        for block in blocks {
            let _ = decoder.decode(&Bytes::from(block), |_, _| {});
            prop_assert!(decoder.dynamic_table_size() <= 256);
        }
    }
}
