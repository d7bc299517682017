//! Fuzz target: `peek_client_hello` on arbitrary bytes must never panic, must report
//! a `record_len` within the input, and must give the same answer for a complete hello
//! when more bytes follow it.

#![no_main]

use switchyard::listener::sni::{Peek, peek_client_hello, route};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let peek = peek_client_hello(data);
    if let Peek::Complete(info) = &peek {
        assert!(info.record_len <= data.len());
        assert!(info.record_len <= switchyard::listener::sni::MAX_CLIENT_HELLO);
        // The hello alone parses to the same information.
        assert_eq!(peek_client_hello(&data[..info.record_len]), peek);
        let routes = [
            ("*.example.com".to_string(), 1),
            ("db.example.com".to_string(), 2),
            ("*".to_string(), 3),
        ];
        assert!(route(&routes, info.server_name.as_deref()).is_some());
    }
});
