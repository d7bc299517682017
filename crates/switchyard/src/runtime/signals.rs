//! Waiting for the signals that end a `run`.
//!
//! SIGTERM and SIGINT start the shutdown sequence. SIGHUP is caught so that it never kills
//! the process by default action; it makes every https listener re-read its certificate
//! files at once (configuration reload arrives with a later issue; the rest of the
//! configuration is unchanged).
//!
//! Handlers are installed by [`Signals::install`] *before* any socket is announced: a
//! supervisor that sends SIGTERM as soon as it sees the `listening` line must get a drain,
//! not the default action's instant death.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::warn;

/// Installed handlers for the signals `run` reacts to.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers (on the current tokio runtime).
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves on SIGTERM or SIGINT.
    pub async fn shutdown_requested(&mut self) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => {
                    crate::tls::acceptor::reload_all();
                    warn!("SIGHUP: TLS certificates re-read; configuration reload is not supported by this build, the rest of the configuration is unchanged");
                }
            }
        }
    }
}
