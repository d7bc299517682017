//! Fuzz target: reading an HTTP/1.1 request head and its body from arbitrary bytes must
//! never panic; a complete head consumes only bytes it was given; and a chunked body after
//! it decodes to the same bytes whether it arrives in one piece or split at an arbitrary
//! point.

#![no_main]

use bytes::BytesMut;
use switchyard::http::h1_codec::{ChunkedDecoder, Decoded};
use switchyard::http::h1_server::head::{BodyFraming, HeadLimits, Verdict, parse};

const LIMITS: HeadLimits = HeadLimits {
    max_header_bytes: 16 * 1024,
    max_headers: 100,
};

/// The chunked body in `parts`, fed one part at a time: its data, or `None` if malformed.
fn decoded(parts: &[&[u8]]) -> Option<Vec<u8>> {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            match decoder.decode(&mut buf).ok()? {
                Decoded::Data(data) => out.extend_from_slice(&data),
                Decoded::Trailers(_) | Decoded::End => return Some(out),
                Decoded::NeedMore => break,
            }
        }
    }
    Some(out)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let Verdict::Complete(head) = parse(&mut buf, &LIMITS) else {
        return;
    };
    assert!(buf.len() < data.len());
    if head.body == BodyFraming::Chunked {
        let rest = buf.to_vec();
        let split = data[0] as usize % (rest.len() + 1);
        let whole = decoded(&[&rest]);
        let pieces = decoded(&[&rest[..split], &rest[split..]]);
        if let (Some(whole), Some(pieces)) = (&whole, &pieces) {
            assert_eq!(whole, pieces);
        }
    }
});
