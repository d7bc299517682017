//! Fuzzes the certificate field reader: any bytes must give fields or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|der: &[u8]| {
    let _ = switchyard::tls::x509::parse(der);
});
