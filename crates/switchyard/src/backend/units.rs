//! Durations and sizes in the syntax of SPEC section 3 (`"250ms"`, `"16KiB"`).
//!
//! A private copy so the test upstream does not depend on the configuration module (which has
//! its own); the backend parses durations on its command line, in `/control` and in paths. Both parsers are exact (no floating point) and reject overflow.

use std::time::Duration;

/// A duration or size string that does not follow SPEC section 3.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UnitError(String);

/// Parses `^\d+(\.\d+)?(us|ms|s|m|h)$`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let bad = || {
        UnitError(format!(
            "invalid duration {s:?}: expected a number and one of us, ms, s, m, h (e.g. \"250ms\")"
        ))
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let unit_ns: u128 = match unit {
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(bad()),
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (num.contains('.') && !digits(frac)) || frac.len() > 18 {
        return Err(bad());
    }
    let int: u128 = int.parse().map_err(|_| bad())?;
    let mut nanos = int.checked_mul(unit_ns).ok_or_else(bad)?;
    if !frac.is_empty() {
        let f: u128 = frac.parse().map_err(|_| bad())?;
        let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| bad())?);
        nanos = nanos
            .checked_add(f.checked_mul(unit_ns).ok_or_else(bad)? / scale)
            .ok_or_else(bad)?;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
    // The remainder is below 1e9, so it always fits.
    let sub = u32::try_from(nanos % 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, sub))
}

/// Formats a duration so that [`parse_duration`] reads it back exactly (`"1500ms"`, `"250us"`).
pub(crate) fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos % 1_000_000 == 0 {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{}us", nanos / 1_000)
    } else {
        // Sub-microsecond precision: a decimal number of microseconds.
        format!("{}.{:03}us", nanos / 1_000, nanos % 1_000)
    }
}

/// Parses `^\d+(B|KiB|MiB|GiB)$`.
pub(crate) fn parse_size(s: &str) -> Result<u64, UnitError> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult: u64 = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" | "MB" | "GB" | "K" | "M" | "G" => {
            return Err(UnitError(format!(
                "invalid size {s:?}: use binary units B, KiB, MiB or GiB (e.g. \"16KiB\")"
            )));
        }
        _ => {
            return Err(UnitError(format!(
                "invalid size {s:?}: expected a whole number and one of B, KiB, MiB, GiB"
            )));
        }
    };
    if num.is_empty() {
        return Err(UnitError(format!("invalid size {s:?}: missing number")));
    }
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| UnitError(format!("invalid size {s:?}: too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_spec_grammar() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("15us"), Ok(Duration::from_micros(15)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        for bad in [
            "", "ms", "5", "5 ms", "1.s", ".5s", "-1s", "5d", "1m30s", "5MS", "1e3ms",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_duration("99999999999999999999999h").is_err());
    }

    #[test]
    fn durations_round_trip_through_format() {
        for d in ["1500ms", "250us", "0ms", "1.500us"] {
            let parsed = parse_duration(d).expect("valid");
            assert_eq!(format_duration(parsed), d);
        }
    }

    #[test]
    fn sizes_follow_the_spec_grammar() {
        assert_eq!(parse_size("0B"), Ok(0));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        let err = parse_size("10MB").expect_err("decimal unit");
        assert!(err.to_string().contains("MiB"), "{err}");
        for bad in [
            "",
            "KiB",
            "1.5MiB",
            "10",
            "10 KiB",
            "99999999999999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
