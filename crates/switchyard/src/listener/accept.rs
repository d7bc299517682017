//! The accept loop every stream listener runs (tcp, tls-passthrough, http): accept until
//! shutdown stops accepting, back off on accept errors, apply `max_connections` and the
//! per-client cap, and hand each admitted connection to the protocol's handler in a task of
//! its own, tracked so the drain can wait for it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::per_ip::{PerIpCounts, PerIpSlot};
use super::rejections::Rejections;
use crate::admin::metrics::{Counter, Gauge};
use crate::runtime::shutdown::{ConnectionTracker, Phase, Shutdown};

/// The limits and counters of one listener, as the snapshot in force sees them.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    /// The listener's name (logs).
    pub name: &'a str,
    /// `connections_total`.
    pub accepted: &'a Counter,
    /// `connections_active`, bounded by `max_connections`.
    pub active: &'a Gauge,
    /// `max_connections`.
    pub max_connections: u32,
    /// `max_connections_per_ip` (0 = off).
    pub max_connections_per_ip: u32,
    /// With a PROXY header the per-client cap waits for the carried address.
    pub proxy_protocol: bool,
    /// `connections_rejected_total`.
    pub rejected: &'a Rejections,
}

/// A listener runtime the accept loop can admit connections for.
pub trait Admits: Send + Sync + 'static {
    /// Its limits and counters.
    fn admission(&self) -> Admission<'_>;
}

/// An admitted connection.
#[derive(Debug)]
pub struct Admitted {
    /// The client's stream.
    pub stream: TcpStream,
    /// The immediate peer.
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// The per-client slot, when taken at accept (not with a PROXY header).
    pub slot: Option<PerIpSlot>,
    /// The listener's per-client counts, for the deferred acquisition.
    pub per_ip: Arc<PerIpCounts>,
}

/// The per-client slot of a connection: the one taken at accept, else (a PROXY header
/// carried the client) one taken now for `client`; `None` when that client is at `limit`.
pub fn client_slot(
    slot: Option<PerIpSlot>,
    per_ip: &Arc<PerIpCounts>,
    client: std::net::IpAddr,
    limit: u32,
) -> Option<PerIpSlot> {
    slot.or_else(|| per_ip.try_acquire(client, limit))
}

/// Accepts on `socket` until the shutdown stops accepting. `current` yields the listener's
/// runtime in the snapshot in force when a connection arrives; `handle` serves one
/// connection (its `connections_active` count ends when `handle` returns).
pub async fn run<R, F, Fut>(
    socket: TcpListener,
    current: impl Fn() -> Option<Arc<R>>,
    per_ip: Arc<PerIpCounts>,
    shutdown: Shutdown,
    tracker: Arc<ConnectionTracker>,
    handle: F,
) where
    R: Admits,
    F: Fn(Arc<R>, Admitted) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listen = socket.local_addr().ok();
    let mut stop_accepting = shutdown.reached(Phase::StopAccepting);
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            () = &mut stop_accepting => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // EMFILE/ENFILE and friends: back off briefly rather than spin.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(runtime) = current() else { return };
        let admission = runtime.admission();
        admission.accepted.inc();
        if !admission
            .active
            .try_inc(i64::from(admission.max_connections))
        {
            admission.rejected.count("max_connections");
            debug!(listener = admission.name, %peer, "max_connections reached; connection closed");
            continue;
        }
        // Without a PROXY header the peer is the client: refuse at once. With one, the
        // cap applies to the carried address, known only after the prelude.
        let slot = if admission.proxy_protocol {
            None
        } else {
            match per_ip.try_acquire(peer.ip(), admission.max_connections_per_ip) {
                Some(slot) => Some(slot),
                None => {
                    admission.active.dec();
                    admission.rejected.count("per_ip");
                    debug!(listener = admission.name, %peer, "max_connections_per_ip reached");
                    continue;
                }
            }
        };
        // The listener's own address is the connection's, unless it is a wildcard: then
        // ask the kernel (one getsockname) which address the client reached.
        let local = match listen {
            Some(listen) if !listen.ip().is_unspecified() => Some(listen),
            _ => stream.local_addr().ok(),
        };
        let Some(local) = local else {
            admission.active.dec();
            continue;
        };
        let active = admission.active.clone();
        let tracked = tracker.track();
        let served = handle(
            runtime,
            Admitted {
                stream,
                peer,
                local,
                slot,
                per_ip: Arc::clone(&per_ip),
            },
        );
        tokio::spawn(async move {
            let _tracked = tracked;
            served.await;
            active.dec();
        });
    }
}
