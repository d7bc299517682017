//! Durations (`"250ms"`) and sizes (`"16KiB"`) in the configuration's own syntax (SPEC 3).
//!
//! Hand-written rather than humantime: the grammar is deliberately small (`us ms s m h`, no
//! days, months or composite forms; binary sizes only), and `format_duration` must give back
//! exactly what `parse_duration` reads, so `switchyard check` output is itself a valid config.
//! These are pure functions; the walker attaches file, line and field path to a [`UnitError`].

use std::time::Duration;

/// Why a duration, size or percentage was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UnitError {
    /// What is wrong.
    pub message: String,
    /// How to write it instead.
    pub hint: Option<String>,
}

impl UnitError {
    fn new(message: impl Into<String>, hint: Option<String>) -> Self {
        UnitError {
            message: message.into(),
            hint,
        }
    }
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Splits `"12.5ms"` into `("12", Some("5"), "ms")`; `None` when the number part is malformed.
fn split_number(text: &str) -> Option<(&str, Option<&str>, &str)> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (int, rest) = text.split_at(digits_end);
    if int.is_empty() {
        return None;
    }
    if let Some(after_dot) = rest.strip_prefix('.') {
        let frac_end = after_dot
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after_dot.len());
        let (frac, unit) = after_dot.split_at(frac_end);
        if frac.is_empty() {
            return None;
        }
        Some((int, Some(frac), unit))
    } else {
        Some((int, None, rest))
    }
}

/// Parses a duration matching `^\d+(\.\d+)?(us|ms|s|m|h)$`, exactly (no float rounding).
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let bad = |hint: Option<String>| {
        UnitError::new(
            format!("invalid duration {text:?}: expected a number and a unit (us, ms, s, m, h)"),
            hint,
        )
    };
    if text.chars().any(char::is_whitespace) {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        return Err(bad(Some(format!("no spaces: write {compact:?}"))));
    }
    let Some((int, frac, unit)) = split_number(text) else {
        return Err(bad(Some("for example \"250ms\", \"1.5s\", \"2m\"".into())));
    };
    let unit_nanos: u128 = match unit {
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        "d" | "D" | "M" | "w" | "y" | "mo" => {
            return Err(bad(Some(
                "the units are us, ms, s, m and h (no days, weeks or months): write \"24h\" for a day"
                    .into(),
            )));
        }
        "ns" => return Err(bad(Some("the smallest unit is us".into()))),
        "" => {
            return Err(bad(Some(format!(
                "a unit is required: write \"{text}s\" or \"{text}ms\""
            ))));
        }
        "sec" | "secs" | "second" | "seconds" => {
            return Err(bad(Some(format!("write \"{int}s\""))));
        }
        "min" | "mins" | "minute" | "minutes" => {
            return Err(bad(Some(format!("write \"{int}m\""))));
        }
        "µs" | "μs" => return Err(bad(Some(format!("write \"{int}us\"")))),
        _ => return Err(bad(None)),
    };
    let overflow = || UnitError::new(format!("duration {text:?} is too large"), None);
    let int: u128 = int.parse().map_err(|_| overflow())?;
    let mut nanos = int.checked_mul(unit_nanos).ok_or_else(overflow)?;
    if let Some(frac) = frac {
        // Truncate beyond 20 digits: far below a nanosecond for every unit.
        let frac = &frac[..frac.len().min(20)];
        let value: u128 = frac.parse().map_err(|_| overflow())?;
        let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| overflow())?);
        nanos = nanos
            .checked_add(value * unit_nanos / scale)
            .ok_or_else(overflow)?;
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| overflow())?;
    let sub = u32::try_from(nanos % NANOS_PER_SEC).map_err(|_| overflow())?;
    Ok(Duration::new(secs, sub))
}

/// Formats a duration so that [`parse_duration`] gives it back exactly: the largest unit that
/// divides it (`"2m"`, `"1500ms"`), else microseconds with a fraction (`"0.001us"`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    for (unit, size) in [
        ("h", 3_600 * NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("s", NANOS_PER_SEC),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if nanos % size == 0 {
            return format!("{}{unit}", nanos / size);
        }
    }
    let frac = format!("{:03}", nanos % 1_000);
    format!("{}.{}us", nanos / 1_000, frac.trim_end_matches('0'))
}

/// Parses a size matching `^\d+(B|KiB|MiB|GiB)$` into bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let bad = |hint: Option<String>| {
        UnitError::new(
            format!("invalid size {text:?}: expected a whole number and a unit (B, KiB, MiB, GiB)"),
            hint,
        )
    };
    if text.chars().any(char::is_whitespace) {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        return Err(bad(Some(format!("no spaces: write {compact:?}"))));
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (int, unit) = text.split_at(digits_end);
    if int.is_empty() {
        return Err(bad(Some(
            "for example \"500B\", \"16KiB\", \"10MiB\"".into(),
        )));
    }
    let mult: u64 = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            let binary = match unit.to_ascii_lowercase().as_str() {
                "k" | "kb" | "kib" => Some("KiB"),
                "m" | "mb" | "mib" => Some("MiB"),
                "g" | "gb" | "gib" => Some("GiB"),
                "b" | "" => Some("B"),
                _ => None,
            };
            let hint = match binary {
                Some(b) => format!("sizes are binary units: write \"{int}{b}\" (B, KiB, MiB, GiB)"),
                None if unit.starts_with('.') => {
                    "sizes are whole numbers of B, KiB, MiB or GiB".into()
                }
                None => "the units are B, KiB, MiB and GiB".into(),
            };
            return Err(bad(Some(hint)));
        }
    };
    let overflow = || UnitError::new(format!("size {text:?} is too large"), None);
    let n: u64 = int.parse().map_err(|_| overflow())?;
    n.checked_mul(mult).ok_or_else(overflow)
}

/// Formats a byte count in the largest binary unit that divides it (`"16KiB"`).
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes != 0 && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// Parses the string form of a percentage, `"10%"` (0-100).
pub fn parse_percent(text: &str) -> Result<f64, UnitError> {
    let bad = || {
        UnitError::new(
            format!(
                "invalid percentage {text:?}: expected a number 0-100, optionally followed by %"
            ),
            None,
        )
    };
    let number = text.strip_suffix('%').unwrap_or(text);
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    check_percent(value)
}

/// Checks that a number is a percentage (0-100).
pub fn check_percent(value: f64) -> Result<f64, UnitError> {
    if value.is_finite() && (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(UnitError::new(
            format!("percentage {value} is out of range (0-100)"),
            None,
        ))
    }
}

/// Checks that a number is a ratio (0-1).
pub fn check_ratio(value: f64) -> Result<f64, UnitError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(UnitError::new(
            format!("ratio {value} is out of range (0-1)"),
            None,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit_parse_exactly() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0.001us"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse_duration("0.1h"), Ok(Duration::from_secs(360)));
    }

    #[test]
    fn malformed_durations_are_refused_with_a_hint() {
        let e = parse_duration("5 s").unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("no spaces: write \"5s\""));
        assert!(
            parse_duration("1d")
                .unwrap_err()
                .hint
                .unwrap()
                .contains("24h")
        );
        assert!(
            parse_duration("1M")
                .unwrap_err()
                .hint
                .unwrap()
                .contains("months")
        );
        for bad in [
            "", "s", "5", "1.s", ".5s", "-1s", "1s2", "1h30m", "5S", "1e3s", "+1s", "1.5.5s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn huge_durations_overflow_into_an_error_not_a_panic() {
        assert!(parse_duration("99999999999999999999999999999999999999999h").is_err());
        assert!(parse_duration("18446744073709551616s").is_err());
        assert!(parse_duration("5124095576030432h").is_err());
        assert!(parse_duration("1.99999999999999999999999999999h").is_ok());
    }

    #[test]
    fn format_duration_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(1_500),
            Duration::from_micros(100),
            Duration::from_millis(1500),
            Duration::from_secs(90),
            Duration::from_secs(7200),
            Duration::new(u64::MAX / 4, 123_456_789),
        ] {
            let text = format_duration(d);
            assert_eq!(parse_duration(&text), Ok(d), "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("500B"), Ok(500));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("0B"), Ok(0));
    }

    #[test]
    fn decimal_size_units_get_a_hint_naming_the_binary_unit() {
        let e = parse_size("10KB").unwrap_err();
        assert!(e.hint.as_deref().unwrap().contains("\"10KiB\""), "{e:?}");
        assert!(parse_size("1MB").unwrap_err().hint.unwrap().contains("MiB"));
        assert!(parse_size("4k").unwrap_err().hint.unwrap().contains("KiB"));
        assert!(
            parse_size("512")
                .unwrap_err()
                .hint
                .unwrap()
                .contains("512B")
        );
        for bad in ["", "KiB", "1.5MiB", "-1B", "1 KiB", "1kib "] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(parse_size("99999999999GiB").is_err());
        assert!(parse_size("99999999999999999999999B").is_err());
    }

    #[test]
    fn sizes_format_back() {
        for n in [0, 1, 500, 1024, 16 * 1024, 10 << 20, 3 << 30, 1025] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
    }

    #[test]
    fn percentages_and_ratios_are_range_checked() {
        assert_eq!(parse_percent("10%"), Ok(10.0));
        assert_eq!(parse_percent("12.5"), Ok(12.5));
        assert!(parse_percent("101%").is_err());
        assert!(parse_percent("-1%").is_err());
        assert!(parse_percent("%").is_err());
        assert!(parse_percent("nan").is_err());
        assert!(check_ratio(1.5).is_err());
        assert!(check_ratio(f64::NAN).is_err());
        assert_eq!(check_ratio(0.2), Ok(0.2));
        assert!(check_percent(100.5).is_err());
    }
}
