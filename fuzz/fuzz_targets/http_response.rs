//! Fuzzes the upstream client's reading of a response: any bytes, cut at any point, must
//! give a head, a need for more, or an error, and a chunked body decoder fed the rest must
//! end, ask for more or fail, never panic or loop.
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
    if parse_response_head(&mut buf, head_request).is_err() {
        return;
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
