//! The process's one monotonic origin, so the algorithms crate (which never reads a clock)
//! receives `now` as plain nanoseconds and every part of the runtime agrees on what they mean.

use std::sync::OnceLock;
use std::time::Instant;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Now, as nanoseconds since the process's origin.
pub fn now() -> u64 {
    to_nanos(Instant::now())
}

/// `instant` as nanoseconds since the process's origin (0 for instants before it).
pub fn to_nanos(instant: Instant) -> u64 {
    u64::try_from(instant.saturating_duration_since(origin()).as_nanos()).unwrap_or(u64::MAX)
}
