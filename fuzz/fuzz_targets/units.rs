//! Fuzzes the unit parsers; a duration that parses must format back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::config::units;

fuzz_target!(|text: &str| {
    if let Ok(d) = units::parse_duration(text) {
        let again = units::parse_duration(&units::format_duration(d));
        assert_eq!(again, Ok(d), "{text:?}");
    }
    if let Ok(n) = units::parse_size(text) {
        assert_eq!(units::parse_size(&units::format_size(n)), Ok(n), "{text:?}");
    }
    let _ = units::parse_percent(text);
});
