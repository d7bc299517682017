//! `protocol = "tcp"` listeners: accept, choose a cluster and an endpoint, connect (moving
//! on to the next candidate when a connect fails), then relay bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::admin::access_log::{AccessLog, L4Line};
use crate::admin::metrics::{self, Counter, Gauge, Registry};
use crate::cluster::{Cluster, InFlight, connection_key, endpoint::ConnectFailure};
use crate::config::model::{self, Target};
use crate::listener::per_ip::{PerIpCounts, PerIpSlot};
use crate::listener::relay::{self, ByteCounters, RelayOutcome};
use crate::listener::splice;
use crate::runtime::shutdown::{ConnectionTracker, Phase, Shutdown};
use crate::runtime::{clock, rng};

/// Where a listener's connections go, with the clusters resolved.
#[derive(Debug)]
enum Destination {
    One(Arc<Cluster>),
    Split {
        branches: Vec<(Arc<Cluster>, u32)>,
        total: u64,
    },
}

impl Destination {
    fn choose(&self) -> &Arc<Cluster> {
        match self {
            Destination::One(cluster) => cluster,
            Destination::Split { branches, total } => {
                let mut point = rng::with_rng(|rng| rng.random_range(0..*total));
                for (cluster, weight) in branches {
                    let weight = u64::from(*weight);
                    if point < weight {
                        return cluster;
                    }
                    point -= weight;
                }
                // Unreachable with a valid split (weights > 0 sum to `total`); the last
                // branch is a safe answer all the same.
                &branches[branches.len() - 1].0
            }
        }
    }
}

/// A TCP listener's configuration and metric handles, as one snapshot sees them.
#[derive(Debug)]
pub struct TcpListenerRuntime {
    /// The listener's name.
    pub name: String,
    destination: Destination,
    max_connections: u32,
    max_connections_per_ip: u32,
    idle_timeout: Duration,
    active: Gauge,
    accepted: Counter,
    rejected_max_connections: Counter,
    rejected_per_ip: Counter,
    flows: Gauge,
    bytes: ByteCounters,
}

/// A listener names a cluster the snapshot does not hold (validation prevents this).
#[derive(Debug, thiserror::Error)]
#[error("listener {listener:?}: unknown cluster {cluster:?}")]
pub struct UnknownCluster {
    listener: String,
    cluster: String,
}

impl TcpListenerRuntime {
    /// Resolves `config`'s target against `clusters` and creates its metric series.
    pub fn build(
        config: &model::Listener,
        clusters: &[Arc<Cluster>],
        registry: &Registry,
    ) -> Result<TcpListenerRuntime, UnknownCluster> {
        let find = |name: &str| {
            clusters
                .iter()
                .find(|c| c.name() == name)
                .cloned()
                .ok_or_else(|| UnknownCluster {
                    listener: config.name.clone(),
                    cluster: name.to_owned(),
                })
        };
        let destination = match &config.target {
            Some(Target::Cluster(name)) => Destination::One(find(name)?),
            Some(Target::Split(split)) => {
                let branches = split
                    .iter()
                    .map(|w| Ok((find(&w.cluster)?, w.weight)))
                    .collect::<Result<Vec<_>, UnknownCluster>>()?;
                let total = branches.iter().map(|(_, w)| u64::from(*w)).sum::<u64>();
                if branches.is_empty() || total == 0 {
                    return Err(UnknownCluster {
                        listener: config.name.clone(),
                        cluster: String::new(),
                    });
                }
                Destination::Split { branches, total }
            }
            None => {
                return Err(UnknownCluster {
                    listener: config.name.clone(),
                    cluster: String::new(),
                });
            }
        };
        let name = config.name.as_str();
        for reason in [
            "max_connections",
            "per_ip",
            "proxy_protocol",
            "tls",
            "slow_head",
            "slow_body",
        ] {
            registry.counter(&metrics::CONNECTIONS_REJECTED_TOTAL, &[name, reason]);
        }
        Ok(TcpListenerRuntime {
            name: config.name.clone(),
            destination,
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            idle_timeout: config.idle_timeout,
            active: registry.gauge(&metrics::CONNECTIONS_ACTIVE, &[name]),
            accepted: registry.counter(&metrics::CONNECTIONS_TOTAL, &[name]),
            rejected_max_connections: registry.counter(
                &metrics::CONNECTIONS_REJECTED_TOTAL,
                &[name, "max_connections"],
            ),
            rejected_per_ip: registry
                .counter(&metrics::CONNECTIONS_REJECTED_TOTAL, &[name, "per_ip"]),
            flows: registry.gauge(&metrics::L4_FLOWS_ACTIVE, &[name]),
            bytes: ByteCounters {
                rx: registry.counter(&metrics::BYTES_TOTAL, &[name, "rx"]),
                tx: registry.counter(&metrics::BYTES_TOTAL, &[name, "tx"]),
            },
        })
    }
}

/// Accepts on `socket` until the shutdown stops accepting; each connection runs in its own
/// task. `current` yields the listener's runtime in the snapshot in force when a connection
/// arrives, so a reload affects new connections only. `per_ip` is shared by every socket of
/// the listener (one per worker with `SO_REUSEPORT`) and outlives snapshots.
pub async fn serve(
    socket: TcpListener,
    current: impl Fn() -> Option<Arc<TcpListenerRuntime>>,
    per_ip: Arc<PerIpCounts>,
    log: AccessLog,
    mut shutdown: Shutdown,
    tracker: Arc<ConnectionTracker>,
) {
    let local = socket.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            () = shutdown.reached(Phase::StopAccepting) => return,
        };
        let (client, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // EMFILE/ENFILE and friends: back off briefly rather than spin.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(runtime) = current() else { return };
        runtime.accepted.inc();
        if !runtime.active.try_inc(i64::from(runtime.max_connections)) {
            runtime.rejected_max_connections.inc();
            debug!(listener = %runtime.name, %peer, "max_connections reached; connection closed");
            continue;
        }
        let Some(slot) = per_ip.try_acquire(peer.ip(), runtime.max_connections_per_ip) else {
            runtime.active.dec();
            runtime.rejected_per_ip.inc();
            debug!(listener = %runtime.name, %peer, "max_connections_per_ip reached; connection closed");
            continue;
        };
        let tracked = tracker.track();
        let local = client.local_addr().ok().or(local);
        let shutdown = shutdown.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let _tracked = tracked;
            handle(&runtime, client, peer, local, slot, &log, shutdown).await;
            runtime.active.dec();
        });
    }
}

async fn handle(
    runtime: &TcpListenerRuntime,
    client: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    _slot: PerIpSlot,
    log: &AccessLog,
    mut shutdown: Shutdown,
) {
    let started = Instant::now();
    let _ = client.set_nodelay(true);
    let cluster = runtime.destination.choose();
    let key = match (cluster.config.balance.is_hash(), local) {
        (true, Some(local)) => connection_key(
            &cluster.config.hash_key,
            peer,
            local,
            crate::cluster::PROTO_TCP,
        ),
        _ => None,
    };
    let Some((upstream, in_flight)) = connect(cluster, key).await else {
        debug!(listener = %runtime.name, cluster = cluster.name(), %peer,
            "no endpoint could be reached; connection closed");
        log.log(&L4Line {
            listener: &runtime.name,
            cluster: Some(cluster.name()),
            endpoint: None,
            protocol: "tcp",
            client: peer.to_string(),
            bytes_in: 0,
            bytes_out: 0,
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
            close_reason: "no_endpoint",
        });
        return;
    };
    runtime.flows.inc();
    let outcome = relay_tcp(runtime, client, upstream, &mut shutdown).await;
    runtime.flows.dec();
    debug!(
        listener = %runtime.name,
        cluster = cluster.name(),
        endpoint = %in_flight.endpoint().name,
        %peer,
        rx = outcome.rx,
        tx = outcome.tx,
        close_reason = outcome.reason.as_str(),
        "connection closed"
    );
    log.log(&L4Line {
        listener: &runtime.name,
        cluster: Some(cluster.name()),
        endpoint: Some(&in_flight.endpoint().name),
        protocol: "tcp",
        client: peer.to_string(),
        bytes_in: outcome.rx,
        bytes_out: outcome.tx,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
        close_reason: outcome.reason.as_str(),
    });
}

/// Relays with `splice` when pipes can be had, else with user-space copies.
async fn relay_tcp(
    runtime: &TcpListenerRuntime,
    client: TcpStream,
    upstream: TcpStream,
    shutdown: &mut Shutdown,
) -> RelayOutcome {
    let spliced = splice::relay(
        client,
        upstream,
        runtime.idle_timeout,
        &runtime.bytes,
        shutdown.reached(Phase::Closed),
    )
    .await;
    match spliced {
        Ok(outcome) => outcome,
        Err((client, upstream)) => {
            relay::relay(
                client,
                upstream,
                runtime.idle_timeout,
                &runtime.bytes,
                shutdown.reached(Phase::Closed),
            )
            .await
        }
    }
}

/// Connects to the picked endpoint; when a connect fails, tries the next candidate, each
/// endpoint at most once.
async fn connect(cluster: &Cluster, key: Option<u64>) -> Option<(TcpStream, InFlight)> {
    let mut tried = Vec::new();
    while let Some((index, endpoint)) = cluster.pick(key, &tried) {
        let in_flight = endpoint.begin();
        let started = Instant::now();
        let attempt = tokio::time::timeout(
            cluster.config.connect_timeout,
            TcpStream::connect(endpoint.address),
        )
        .await;
        match attempt {
            Ok(Ok(stream)) => {
                endpoint.record_success(started.elapsed(), clock::now());
                let _ = stream.set_nodelay(true);
                if let Some(idle) = cluster.config.tcp_keepalive {
                    let keepalive = TcpKeepalive::new().with_time(idle);
                    let _ = SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                }
                return Some((stream, in_flight));
            }
            Ok(Err(error)) => {
                let failure = if error.kind() == std::io::ErrorKind::ConnectionRefused {
                    ConnectFailure::Refused
                } else {
                    ConnectFailure::Other
                };
                debug!(cluster = cluster.name(), endpoint = %endpoint.name, %error, "connect failed");
                endpoint.record_connect_failure(failure, clock::now());
            }
            Err(_elapsed) => {
                debug!(cluster = cluster.name(), endpoint = %endpoint.name, "connect timed out");
                endpoint.record_connect_failure(ConnectFailure::Timeout, clock::now());
            }
        }
        tried.push(index);
    }
    None
}
