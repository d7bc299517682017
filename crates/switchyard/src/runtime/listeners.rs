//! The listening sockets of a server, one group per configured address.
//!
//! A group owns its sockets' accept loops, its own shutdown sequence and connection count,
//! and a *slot* holding the listener runtime in force. That split is what lets a reload
//! change a listener without touching its sockets: a kept group's slot is re-pointed at the
//! new runtime (the accept loops read the slot per connection, HTTP connections per
//! request), a new address gets a new group, and a removed one is drained on its own while
//! every other group serves on. Shutdown and `run --upgrade` walk every group the same way.
//!
//! Groups are keyed by the socket they hold ([`SocketKey`]: the configured address and the
//! serving family), not by listener name, so renaming a listener keeps its socket, and a
//! listener written with port 0 keeps the port it was given.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tracing::info;

use super::server::BoundListener;
use super::shutdown::{self, ConnectionTracker, Phase, ShutdownTrigger};
use super::snapshot::Snapshot;
use crate::admin::access_log::AccessLog;
use crate::config::model::{self, Protocol};
use crate::http::listener::HttpListenerRuntime;
use crate::listener::bind::{self, BindError};
use crate::listener::per_ip::PerIpCounts;
use crate::listener::tcp::TcpListenerRuntime;
use crate::listener::udp::UdpListenerRuntime;
use crate::listener::{tcp, udp};

/// Which accept loop serves a socket: listeners of one family can take each other's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `tcp` and `tls-passthrough`.
    L4,
    /// `http` and `https`.
    Http,
    /// `udp`.
    Udp,
}

impl Family {
    /// The family of a listener protocol.
    pub fn of(protocol: Protocol) -> Family {
        match protocol {
            Protocol::Tcp | Protocol::TlsPassthrough => Family::L4,
            Protocol::Http | Protocol::Https => Family::Http,
            Protocol::Udp => Family::Udp,
        }
    }

    /// The word used in the upgrade hand-over.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::L4 => "l4",
            Family::Http => "http",
            Family::Udp => "udp",
        }
    }

    /// The inverse of [`Family::as_str`].
    pub fn parse(word: &str) -> Option<Family> {
        [Family::L4, Family::Http, Family::Udp]
            .into_iter()
            .find(|f| f.as_str() == word)
    }
}

/// What identifies a group's socket across reloads and upgrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketKey {
    /// The serving family.
    pub family: Family,
    /// The address as configured (port 0 stays 0: the group remembers the real one).
    pub listen: SocketAddr,
}

impl SocketKey {
    /// The key of a configured listener.
    pub fn of(listener: &model::Listener) -> SocketKey {
        SocketKey {
            family: Family::of(listener.protocol),
            listen: listener.listen,
        }
    }
}

/// Sockets bound (or received from an older process) and not yet served.
#[derive(Debug)]
pub enum Sockets {
    /// One `SO_REUSEPORT` socket per accept loop.
    Tcp(Vec<tokio::net::TcpListener>),
    /// One UDP socket.
    Udp(tokio::net::UdpSocket),
}

impl Sockets {
    /// Binds the sockets of `listener`, `accept_loops` of them for TCP.
    pub fn bind(listener: &model::Listener, accept_loops: usize) -> Result<Sockets, BindError> {
        Ok(match Family::of(listener.protocol) {
            Family::Udp => Sockets::Udp(bind::udp(&listener.name, listener.listen)?),
            Family::L4 | Family::Http => Sockets::Tcp(bind::tcp_group(
                &listener.name,
                listener.listen,
                accept_loops,
            )?),
        })
    }

    /// Sockets rebuilt from file descriptors an older process handed over; they must
    /// already be bound (and listening, for TCP).
    pub fn from_fds(family: Family, fds: Vec<OwnedFd>) -> std::io::Result<Sockets> {
        if family == Family::Udp {
            let fd = fds.into_iter().next().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "no UDP socket")
            })?;
            let socket = std::net::UdpSocket::from(fd);
            socket.set_nonblocking(true)?;
            return Ok(Sockets::Udp(tokio::net::UdpSocket::from_std(socket)?));
        }
        let listeners = fds
            .into_iter()
            .map(|fd| {
                let socket = std::net::TcpListener::from(fd);
                socket.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(socket)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Sockets::Tcp(listeners))
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Sockets::Tcp(sockets) => sockets
                .first()
                .ok_or_else(|| std::io::Error::other("no socket"))?
                .local_addr(),
            Sockets::Udp(socket) => socket.local_addr(),
        }
    }

    /// Duplicates of the descriptors, kept for a later `run --upgrade`.
    fn duplicate_fds(&self) -> std::io::Result<Vec<OwnedFd>> {
        use std::os::fd::AsFd;
        match self {
            Sockets::Tcp(sockets) => sockets
                .iter()
                .map(|s| s.as_fd().try_clone_to_owned())
                .collect(),
            Sockets::Udp(socket) => Ok(vec![socket.as_fd().try_clone_to_owned()?]),
        }
    }
}

/// The listener runtime in force for a group; re-pointed by a reload.
#[derive(Debug, Clone)]
pub enum Slot {
    /// A `tcp` or `tls-passthrough` listener.
    L4(Arc<ArcSwap<TcpListenerRuntime>>),
    /// An `http` or `https` listener.
    Http(Arc<ArcSwap<HttpListenerRuntime>>),
    /// A `udp` listener.
    Udp(Arc<ArcSwap<UdpListenerRuntime>>),
}

/// A group's listener is missing from the snapshot it should serve (validation and
/// snapshot building make this unreachable for a valid configuration).
#[derive(Debug, thiserror::Error)]
#[error("listener {0:?} is not in the compiled configuration")]
pub struct MissingListener(pub String);

impl Slot {
    fn of(listener: &model::Listener, snapshot: &Snapshot) -> Result<Slot, MissingListener> {
        let missing = || MissingListener(listener.name.clone());
        Ok(match Family::of(listener.protocol) {
            Family::L4 => Slot::L4(Arc::new(ArcSwap::new(Arc::clone(
                snapshot.tcp_listener(&listener.name).ok_or_else(missing)?,
            )))),
            Family::Http => Slot::Http(Arc::new(ArcSwap::new(Arc::clone(
                snapshot.http_listener(&listener.name).ok_or_else(missing)?,
            )))),
            Family::Udp => Slot::Udp(Arc::new(ArcSwap::new(Arc::clone(
                snapshot.udp_listener(&listener.name).ok_or_else(missing)?,
            )))),
        })
    }

    /// Points the slot at `listener`'s runtime in `snapshot`.
    fn repoint(
        &self,
        listener: &model::Listener,
        snapshot: &Snapshot,
    ) -> Result<(), MissingListener> {
        let missing = || MissingListener(listener.name.clone());
        match self {
            Slot::L4(slot) => slot.store(Arc::clone(
                snapshot.tcp_listener(&listener.name).ok_or_else(missing)?,
            )),
            Slot::Http(slot) => slot.store(Arc::clone(
                snapshot.http_listener(&listener.name).ok_or_else(missing)?,
            )),
            Slot::Udp(slot) => slot.store(Arc::clone(
                snapshot.udp_listener(&listener.name).ok_or_else(missing)?,
            )),
        }
        Ok(())
    }
}

/// Where connections of every group log.
#[derive(Debug, Clone)]
pub struct Logging {
    /// The access log.
    pub log: AccessLog,
    /// `[access_log] include_query`.
    pub include_query: bool,
}

/// One served address (module docs).
#[derive(Debug)]
pub struct ListenerGroup {
    /// The socket's identity.
    pub key: SocketKey,
    /// How `/api/v1/listeners` reports it.
    pub bound: BoundListener,
    slot: Slot,
    trigger: ShutdownTrigger,
    tracker: Arc<ConnectionTracker>,
    tasks: JoinSet<()>,
    fds: Vec<OwnedFd>,
}

impl ListenerGroup {
    /// Starts serving `sockets` as `listener`, with the runtime `snapshot` compiled for it.
    pub fn serve(
        listener: &model::Listener,
        sockets: Sockets,
        snapshot: &Snapshot,
        logging: &Logging,
    ) -> Result<ListenerGroup, StartServeError> {
        let address = sockets.local_addr().map_err(|source| BindError {
            listener: listener.name.clone(),
            address: listener.listen,
            source,
        })?;
        let fds = sockets.duplicate_fds().map_err(|source| BindError {
            listener: listener.name.clone(),
            address: listener.listen,
            source,
        })?;
        let slot = Slot::of(listener, snapshot)?;
        let (trigger, shutdown) = shutdown::channel();
        let tracker = Arc::new(ConnectionTracker::default());
        let mut tasks = JoinSet::new();
        match (&slot, sockets) {
            (Slot::L4(slot), Sockets::Tcp(sockets)) => {
                let per_ip = Arc::new(PerIpCounts::default());
                for socket in sockets {
                    let slot = Arc::clone(slot);
                    tasks.spawn(tcp::serve(
                        socket,
                        move || Some(slot.load_full()),
                        Arc::clone(&per_ip),
                        logging.log.clone(),
                        shutdown.clone(),
                        Arc::clone(&tracker),
                    ));
                }
            }
            (Slot::Http(slot), Sockets::Tcp(sockets)) => {
                let per_ip = Arc::new(PerIpCounts::default());
                for socket in sockets {
                    let log = crate::http::server::LogSettings {
                        log: logging.log.clone(),
                        include_query: logging.include_query,
                    };
                    tasks.spawn(crate::http::server::serve(
                        socket,
                        Arc::clone(slot),
                        Arc::clone(&per_ip),
                        log,
                        shutdown.clone(),
                        Arc::clone(&tracker),
                    ));
                }
            }
            (Slot::Udp(slot), Sockets::Udp(socket)) => {
                let slot = Arc::clone(slot);
                tasks.spawn(udp::serve(
                    socket,
                    move || Some(slot.load_full()),
                    logging.log.clone(),
                    shutdown.clone(),
                    Arc::clone(&tracker),
                ));
            }
            _ => return Err(StartServeError::Family(listener.name.clone())),
        }
        Ok(ListenerGroup {
            key: SocketKey::of(listener),
            bound: BoundListener {
                name: listener.name.clone(),
                protocol: listener.protocol.as_str().to_owned(),
                address: address.to_string(),
            },
            slot,
            trigger,
            tracker,
            tasks,
            fds,
        })
    }

    /// Serves `listener` (same key) from `snapshot` from now on; connections already open
    /// keep what they were accepted with (HTTP: until their next request).
    pub fn repoint(
        &mut self,
        listener: &model::Listener,
        snapshot: &Snapshot,
    ) -> Result<(), MissingListener> {
        self.slot.repoint(listener, snapshot)?;
        self.bound.name.clone_from(&listener.name);
        listener
            .protocol
            .as_str()
            .clone_into(&mut self.bound.protocol);
        Ok(())
    }

    /// Moves this group's shutdown sequence forward.
    pub fn advance(&self, phase: Phase) {
        self.trigger.advance(phase);
    }

    /// Connections open on this group.
    pub fn open_connections(&self) -> usize {
        self.tracker.open()
    }

    /// Resolves when no connection of this group is open.
    pub fn idle(&self) -> impl Future<Output = ()> + Send + 'static {
        let tracker = Arc::clone(&self.tracker);
        async move { tracker.wait_idle().await }
    }

    /// Descriptors of the group's sockets, for `run --upgrade`.
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// Closes this process's spare descriptors of the sockets: once the accept loops have
    /// stopped, the socket itself closes (new connections are refused) unless a newer
    /// process holds it.
    pub fn release_fds(&mut self) {
        self.fds.clear();
    }

    /// Stops accepting, gives open connections up to `drain_timeout` (HTTP/1.1 ones get
    /// `Connection: close`, HTTP/2 ones the two-step GOAWAY), then closes what is left.
    pub async fn drain(mut self, drain_timeout: Duration) {
        let name = self.bound.name.clone();
        self.trigger.advance(Phase::Draining);
        self.trigger.advance(Phase::StopAccepting);
        self.release_fds();
        let open = self.tracker.open();
        let _ = tokio::time::timeout(drain_timeout, self.tracker.wait_idle()).await;
        self.trigger.advance(Phase::Closed);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait_idle()).await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        info!(listener = %name, open_at_start = open, "listener closed");
    }

    /// Waits for the accept loops to return and aborts whatever is left.
    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// A group could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum StartServeError {
    /// The socket's address could not be read or its descriptor duplicated.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The snapshot has no runtime for the listener.
    #[error(transparent)]
    Missing(#[from] MissingListener),
    /// The sockets are of the wrong kind for the listener (a handed-over socket).
    #[error("listener {0:?}: the sockets handed over are not of its kind")]
    Family(String),
}
