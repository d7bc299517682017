//! Waiting for the signals that end a `run`.
//!
//! SIGTERM and SIGINT start the shutdown sequence. SIGHUP is caught so that it never kills
//! the process by default action; configuration reload arrives with a later issue, and
//! until then a SIGHUP is logged and changes nothing.

use tokio::signal::unix::{SignalKind, signal};
use tracing::warn;

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_requested() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => warn!("SIGHUP: configuration reload is not supported by this build; configuration unchanged"),
        }
    }
}
