//! Fuzzes the HTTP/2 server's connection state machine: arbitrary bytes, as sent by a
//! client after the preface, are served by one connection in memory (requests answered by
//! an echo instead of the pipeline). Frames, header blocks, windows, resets and settings
//! in any order must give frames or a GOAWAY, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::http::h2_server::scripted::serve_scripted;

fuzz_target!(|data: &[u8]| {
    let _ = serve_scripted(data);
});
