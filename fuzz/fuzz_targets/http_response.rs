//! Fuzzes the upstream client's reading of a response: any bytes, cut at any point, must
//! give a head, a need for more, or an error (a head's fields kept raw must each convert
//! into a header map, agree with their summary, and be written as exactly their
//! `name: value` lines), and a chunked body decoder fed the rest must end, ask for more or
//! fail, never panic or loop.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard::http::h1_codec::{ChunkedDecoder, Decoded, parse_response_head};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let head_request = split & 1 == 1;
    let mut buf = BytesMut::from(data);
    let head = match parse_response_head(&mut buf, head_request) {
        Ok(head) => head,
        Err(_) => return,
    };
    // Fields kept raw are ones the parser checked: every one of them converts into the map
    // (what the HTTP/2 server and the route edits do with them).
    if let Some(head) = &head {
        if let Some(raw) = &head.raw {
            let mut map = head.headers.clone();
            let before = map.len();
            raw.append_to(&mut map);
            assert_eq!(map.len(), before + raw.len());
            assert_eq!(raw.iter().count(), raw.len());
            // The summary the server reads instead of the fields says what they say.
            let summary = raw.summary();
            let named = |wanted: &[u8]| {
                raw.iter()
                    .any(|(name, _)| name.eq_ignore_ascii_case(wanted))
            };
            assert_eq!(summary.date, named(b"date"));
            assert_eq!(summary.content_length.is_some(), named(b"content-length"));
            // Runs copied in one piece are byte for byte the lines written one by one.
            let mut written = BytesMut::new();
            raw.write_to(&mut written, false);
            let mut expected = Vec::new();
            for (name, value) in raw.iter() {
                expected.extend_from_slice(name);
                expected.extend_from_slice(b": ");
                expected.extend_from_slice(value);
                expected.extend_from_slice(b"\r\n");
            }
            assert_eq!(&written[..], &expected[..]);
        }
    }
    // Whatever follows (or the whole input, when the head was partial) as a chunked body,
    // fed in pieces of `split` bytes.
    let step = usize::from(split).max(1);
    let mut decoder = ChunkedDecoder::default();
    let mut pending = BytesMut::new();
    let mut rest = &buf[..];
    for _ in 0..4 * data.len() + 4 {
        match decoder.decode(&mut pending) {
            Ok(Decoded::Data(piece)) => assert!(!piece.is_empty()),
            Ok(Decoded::End | Decoded::Trailers(_)) | Err(_) => return,
            Ok(Decoded::NeedMore) => {
                if rest.is_empty() {
                    return;
                }
                let n = step.min(rest.len());
                pending.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
        }
    }
});
