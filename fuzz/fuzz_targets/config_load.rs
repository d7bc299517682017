//! Fuzzes the whole loader: any UTF-8 text must give a config or errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = switchyard::config::load_str(text, std::path::Path::new("fuzz.toml"));
});
