//! Waiting for the signals that drive a `run`.
//!
//! SIGTERM and SIGINT start the shutdown sequence; SIGHUP reloads the configuration (which
//! also re-reads every certificate file). Handlers are installed by [`Signals::install`]
//! *before* any socket is announced: a supervisor that sends SIGTERM as soon as it sees the
//! `listening` line must get a drain, not the default action's instant death.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Installed handlers for the signals `run` reacts to.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGTERM or SIGINT: drain and exit.
    Shutdown,
    /// SIGHUP: reload the configuration.
    Reload,
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

    /// Resolves on SIGTERM or SIGINT; SIGHUP is ignored (for processes without a
    /// configuration file: `demo`, `backend`).
    pub async fn shutdown_requested(&mut self) {
        while self.next().await != Request::Shutdown {}
    }

    /// Resolves with the next signal's request.
    pub async fn next(&mut self) -> Request {
        tokio::select! {
            _ = self.term.recv() => Request::Shutdown,
            _ = self.int.recv() => Request::Shutdown,
            _ = self.hup.recv() => Request::Reload,
        }
    }
}
