//! `protocol = "udp"` listeners: datagrams grouped into flows by client address, each flow
//! pinned to one endpoint through its own connected upstream socket.
//!
//! UDP has no connection, so the listener makes one up: a *flow* is everything a client
//! address (`ip:port`) sends to this listener's socket, and, since the listener's local
//! address is fixed, the client address alone identifies the 5-tuple. Why this shape:
//!
//! - **One receive task per listener** reads the listener socket with one reusable
//!   65,536-byte buffer and dispatches each datagram to its flow (a `HashMap` lookup).
//! - **One connected upstream socket per flow** (ephemeral port, the endpoint's address
//!   family): the kernel then filters replies to that endpoint and reports an ICMP error to
//!   that flow alone, and the endpoint sees one stable source per client, as it would
//!   without a balancer in between.
//! - **One small task per flow** waits for its upstream socket to become readable and sends
//!   replies back *from the listener's socket* (`send_to(client)`), so the client sees
//!   replies from the address it sent to. That task holds no buffer of its own: it reads
//!   into a per-worker-thread buffer synchronously and sends from it at once; only when the
//!   listener socket is momentarily full is the datagram copied (exactly its size) to wait
//!   for room. Memory per flow is therefore a socket, a task and a map entry (see
//!   `docs/operations.md` for the measured figure).
//!
//! A flow ends after `idle_timeout` without a datagram either way, or when the drain time of
//! a shutdown runs out. During the drain (after listeners stop accepting) datagrams of
//! existing flows still travel both ways, as bytes of an open TCP connection do; a datagram
//! that would start a new flow is dropped.

mod flows;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use self::flows::{Flow, FlowTable};
use crate::admin::access_log::AccessLog;
use crate::admin::metrics::{self, Counter, Gauge, Registry};
use crate::cluster::endpoint::ConnectFailure;
use crate::cluster::{Cluster, InFlight, PROTO_UDP, connection_key};
use crate::config::model;
use crate::listener::destination::{Destination, UnknownCluster};
use crate::listener::per_ip::PerIpCounts;
use crate::listener::rejections::Rejections;
use crate::listener::relay::ByteCounters;
use crate::runtime::shutdown::{ConnectionTracker, Phase, Shutdown};

/// Bytes of the receive buffers: the largest UDP payload (65,507 over IPv4, 65,527 over
/// IPv6 without jumbograms) fits with room to spare, so no datagram is ever truncated.
pub const DATAGRAM_BUFFER: usize = 65_536;

/// How often a draining listener checks whether its last flow ended.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// A UDP listener's configuration and metric handles, as one snapshot sees them.
#[derive(Debug)]
pub struct UdpListenerRuntime {
    /// The listener's name.
    pub name: String,
    destination: Destination,
    max_connections: u32,
    idle_timeout: Duration,
    active: Gauge,
    accepted: Counter,
    rejected: Rejections,
    max_connections_per_ip: u32,
    flows: Gauge,
    bytes: ByteCounters,
}

impl UdpListenerRuntime {
    /// Resolves `config`'s target against `clusters` and creates its metric series.
    pub fn build(
        config: &model::Listener,
        clusters: &[Arc<Cluster>],
        registry: &Registry,
    ) -> Result<UdpListenerRuntime, UnknownCluster> {
        let destination = Destination::build(config, clusters)?;
        let name = config.name.as_str();
        let rejected = Rejections::new(name, registry);
        Ok(UdpListenerRuntime {
            name: config.name.clone(),
            destination,
            max_connections: config.max_connections,
            idle_timeout: config.idle_timeout,
            active: registry.gauge(&metrics::CONNECTIONS_ACTIVE, &[name]),
            accepted: registry.counter(&metrics::CONNECTIONS_TOTAL, &[name]),
            rejected,
            max_connections_per_ip: config.max_connections_per_ip,
            flows: registry.gauge(&metrics::L4_FLOWS_ACTIVE, &[name]),
            bytes: ByteCounters::new(name, registry),
        })
    }
}

/// Receives on `socket` and dispatches datagrams to flows until the drain time of a
/// shutdown runs out (or, once listeners stop accepting, until the last flow ended).
/// `current` yields the listener's runtime in the snapshot in force when a flow starts, so
/// a reload affects new flows only.
pub async fn serve(
    socket: UdpSocket,
    current: impl Fn() -> Option<Arc<UdpListenerRuntime>>,
    log: AccessLog,
    shutdown: Shutdown,
    tracker: Arc<ConnectionTracker>,
) {
    let per_ip = Arc::new(PerIpCounts::default());
    let socket = Arc::new(socket);
    let local = socket.local_addr().ok();
    let table = Arc::new(FlowTable::new());
    let mut buf = vec![0u8; DATAGRAM_BUFFER];
    let mut stop_accepting = shutdown.reached(Phase::StopAccepting);
    let mut closed = shutdown.reached(Phase::Closed);
    let mut stopping = false;
    loop {
        if stopping && table.is_empty() {
            return;
        }
        let received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            () = &mut stop_accepting, if !stopping => {
                stopping = true;
                continue;
            }
            () = tokio::time::sleep(DRAIN_POLL), if stopping => continue,
            () = &mut closed => return,
        };
        let (n, client) = match received {
            Ok(pair) => pair,
            Err(error) => {
                // An ICMP error for an earlier reply (on systems that report them on
                // unconnected sockets) concerns one client; anything else may repeat, so
                // back off briefly rather than spin.
                if !matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) {
                    warn!(%error, "udp receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        let datagram = &buf[..n];
        if let Some(flow) = table.touch(client) {
            flow.forward(datagram).await;
            continue;
        }
        if stopping {
            // Draining: existing flows go on, new ones are not started.
            continue;
        }
        let Some(runtime) = current() else { return };
        if !runtime.active.try_inc(i64::from(runtime.max_connections)) {
            runtime.rejected.count("max_connections");
            debug!(listener = %runtime.name, %client, "max_connections reached; datagram dropped");
            continue;
        }
        let Some(slot) = per_ip.try_acquire(client.ip(), runtime.max_connections_per_ip) else {
            runtime.active.dec();
            runtime.rejected.count("per_ip");
            debug!(listener = %runtime.name, %client, "max_connections_per_ip reached; datagram dropped");
            continue;
        };
        let Some(cluster) = runtime.destination.choose(None) else {
            runtime.active.dec();
            continue;
        };
        let key = match (cluster.config.balance.is_hash(), local) {
            (true, Some(local)) => {
                connection_key(&cluster.config.hash_key, client, local, PROTO_UDP)
            }
            _ => None,
        };
        let Some((upstream, in_flight)) = connect(cluster, key).await else {
            runtime.active.dec();
            debug!(listener = %runtime.name, cluster = cluster.name(), %client,
                "no endpoint could be reached; datagram dropped");
            continue;
        };
        runtime.accepted.inc();
        runtime.flows.inc();
        let flow = Arc::new(Flow::new(
            upstream,
            in_flight,
            Arc::clone(cluster),
            slot,
            Arc::clone(&runtime),
            table.now_ms(),
        ));
        table.insert(client, Arc::clone(&flow));
        flow.forward(datagram).await;
        let tracked = tracker.track();
        tokio::spawn(flows::run(
            flow,
            client,
            Arc::clone(&table),
            Arc::clone(&socket),
            log.clone(),
            shutdown.clone(),
            tracked,
        ));
    }
}

/// Opens the flow's upstream socket "connected" to the picked endpoint; when that fails
/// (no route, no local port), tries the next candidate, each endpoint at most once.
async fn connect(cluster: &Cluster, key: Option<u64>) -> Option<(UdpSocket, InFlight)> {
    cluster
        .connect_with_fallback(key, |address| async move {
            let unspecified = match address.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            let connected = async {
                let socket = UdpSocket::bind(SocketAddr::new(unspecified, 0)).await?;
                socket.connect(address).await?;
                Ok::<_, std::io::Error>(socket)
            };
            connected
                .await
                .map_err(|error| (ConnectFailure::of(&error), error.to_string()))
        })
        .await
}
