//! Fuzz target: PROXY protocol `parse` on arbitrary bytes must never panic, must report
//! a `header_len` within the input, and every address it reports must survive an
//! encode/parse round trip.

#![no_main]

use switchyard::listener::proxy_protocol::{Parsed, Transport, encode_v1, encode_v2, parse};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Complete {
        header_len,
        addresses,
    }) = parse(data)
    {
        assert!(header_len <= data.len());
        // The header alone parses to the same result.
        assert_eq!(
            parse(&data[..header_len]),
            Ok(Parsed::Complete {
                header_len,
                addresses
            })
        );
        if let Some(a) = addresses {
            let v2 = encode_v2(&a);
            assert_eq!(
                parse(&v2),
                Ok(Parsed::Complete {
                    header_len: v2.len(),
                    addresses: Some(a)
                })
            );
            if a.transport == Transport::Tcp {
                let v1 = encode_v1(&a);
                assert_eq!(
                    parse(v1.as_bytes()),
                    Ok(Parsed::Complete {
                        header_len: v1.len(),
                        addresses: Some(a)
                    })
                );
            }
        }
    }
});
