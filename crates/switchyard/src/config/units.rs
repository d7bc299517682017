//! Durations (`"250ms"`) and sizes (`"16KiB"`) in the configuration's own syntax.

use std::time::Duration;

/// Formats a duration so that parsing it gives it back.
pub fn format_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}
