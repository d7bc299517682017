//! Fuzz target: the HTTP/1.1 request-head guard on arbitrary bytes must never panic; a
//! complete head's length lies within the input; and feeding the same bytes to the framing
//! tracker in one piece or split at an arbitrary point forwards the same bytes.

#![no_main]

use switchyard::http::h1_guard::framing::{Framing, Step};
use switchyard::http::h1_guard::head::{HeadLimits, Verdict, inspect};

const LIMITS: HeadLimits = HeadLimits {
    max_header_bytes: 16 * 1024,
    max_headers: 100,
};

fn forwarded(parts: &[&[u8]]) -> Option<Vec<u8>> {
    let mut framing = Framing::new(LIMITS);
    let mut out = Vec::new();
    for part in parts {
        match framing.advance(part) {
            Step::Forward(bytes) => out.extend_from_slice(&bytes),
            Step::Reject(_) => return None,
        }
    }
    Some(out)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Verdict::Complete(summary) = inspect(data, &LIMITS) {
        assert!(summary.len <= data.len());
    }
    let split = data.first().map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let whole = forwarded(&[data]);
    let pieces = forwarded(&[&data[..split], &data[split..]]);
    if let (Some(whole), Some(pieces)) = (&whole, &pieces) {
        assert_eq!(whole, pieces);
    }
});
