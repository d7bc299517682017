//! Stream listeners (`protocol = "tcp"` and `"tls-passthrough"`): accept, apply the
//! connection limits, read the prelude (a PROXY header, a ClientHello) when there is one,
//! choose a cluster and an endpoint, connect (moving on to the next candidate when a
//! connect fails), replay what the prelude read, then relay bytes.
//!
//! Both protocols share this path; they differ only in how the cluster is chosen: a
//! cluster or weighted split (tcp) or the ClientHello's server name (tls-passthrough).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::debug;

use crate::admin::access_log::{AccessLog, L4Line};
use crate::admin::metrics::{self, Counter, Gauge, Registry};
use crate::cluster::{Cluster, InFlight, connection_key};
use crate::config::model::{self, Protocol, SendProxyProtocol};
use crate::listener::accept::{self, Admission, Admits};
use crate::listener::destination::{Destination, UnknownCluster};
use crate::listener::per_ip::{PerIpCounts, PerIpSlot};
use crate::listener::prelude::{self, Expect, Prelude};
use crate::listener::proxy_protocol::{self, ProxiedAddresses, Transport};
use crate::listener::rejections::Rejections;
use crate::listener::relay::{self, ByteCounters, RelayOutcome};
use crate::listener::splice;
use crate::runtime::shutdown::{ConnectionTracker, Phase, Shutdown};

/// A stream listener's configuration and metric handles, as one snapshot sees them.
#[derive(Debug)]
pub struct TcpListenerRuntime {
    /// The listener's name.
    pub name: String,
    protocol: Protocol,
    destination: Destination,
    max_connections: u32,
    max_connections_per_ip: u32,
    idle_timeout: Duration,
    header_read_timeout: Duration,
    proxy_protocol: bool,
    active: Gauge,
    accepted: Counter,
    rejected: Rejections,
    flows: Gauge,
    bytes: ByteCounters,
}

impl TcpListenerRuntime {
    /// Resolves `config`'s target against `clusters` and creates its metric series.
    pub fn build(
        config: &model::Listener,
        clusters: &[Arc<Cluster>],
        registry: &Registry,
    ) -> Result<TcpListenerRuntime, UnknownCluster> {
        let destination = Destination::build(config, clusters)?;
        let name = config.name.as_str();
        let rejected = Rejections::new(name, registry);
        Ok(TcpListenerRuntime {
            name: config.name.clone(),
            protocol: config.protocol,
            destination,
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            idle_timeout: config.idle_timeout,
            header_read_timeout: config.header_read_timeout,
            proxy_protocol: config.proxy_protocol,
            active: registry.gauge(&metrics::CONNECTIONS_ACTIVE, &[name]),
            accepted: registry.counter(&metrics::CONNECTIONS_TOTAL, &[name]),
            rejected,
            flows: registry.gauge(&metrics::L4_FLOWS_ACTIVE, &[name]),
            bytes: ByteCounters::new(name, registry),
        })
    }

    fn reject(&self, reason: &'static str) {
        self.rejected.count(reason);
    }

    fn expect(&self) -> Expect {
        Expect {
            proxy_protocol: self.proxy_protocol,
            client_hello: self.protocol == Protocol::TlsPassthrough,
        }
    }
}

impl Admits for TcpListenerRuntime {
    fn admission(&self) -> Admission<'_> {
        Admission {
            name: &self.name,
            accepted: &self.accepted,
            active: &self.active,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            proxy_protocol: self.proxy_protocol,
            rejected: &self.rejected,
        }
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
    shutdown: Shutdown,
    tracker: Arc<ConnectionTracker>,
) {
    let handler_shutdown = shutdown.clone();
    accept::run(
        socket,
        current,
        per_ip,
        shutdown,
        tracker,
        move |runtime, admitted| {
            let connection = Connection {
                runtime,
                client: admitted.stream,
                peer: admitted.peer,
                local: admitted.local,
                slot: admitted.slot,
                per_ip: admitted.per_ip,
                log: log.clone(),
                started: Instant::now(),
            };
            connection.handle(handler_shutdown.clone())
        },
    )
    .await;
}

/// One accepted connection and what it needs.
struct Connection {
    runtime: Arc<TcpListenerRuntime>,
    client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    slot: Option<PerIpSlot>,
    per_ip: Arc<PerIpCounts>,
    log: AccessLog,
    started: Instant,
}

/// Writes the connection's access-log line.
struct LineWriter<'a> {
    runtime: &'a TcpListenerRuntime,
    log: &'a AccessLog,
    started: Instant,
}

impl LineWriter<'_> {
    fn write(
        &self,
        cluster: Option<&str>,
        endpoint: Option<&str>,
        client: SocketAddr,
        bytes: (u64, u64),
        close_reason: &str,
    ) {
        if !self.log.is_enabled() {
            return;
        }
        self.log.log(&L4Line {
            listener: &self.runtime.name,
            cluster,
            endpoint,
            protocol: self.runtime.protocol.as_str(),
            client: client.to_string(),
            bytes_in: bytes.0,
            bytes_out: bytes.1,
            duration_ms: self.started.elapsed().as_secs_f64() * 1e3,
            close_reason,
        });
    }
}

impl Connection {
    async fn handle(self, mut shutdown: Shutdown) {
        let Connection {
            runtime,
            mut client,
            peer,
            local,
            slot,
            per_ip,
            log,
            started,
        } = self;
        let line = LineWriter {
            runtime: &runtime,
            log: &log,
            started,
        };
        let _ = client.set_nodelay(true);
        let expect = runtime.expect();
        let prelude = if expect.proxy_protocol || expect.client_hello {
            match prelude::read(
                &mut client,
                peer,
                local,
                expect,
                runtime.header_read_timeout,
            )
            .await
            {
                Ok(prelude) => prelude,
                Err(error) => {
                    runtime.reject(error.reason());
                    debug!(listener = %runtime.name, %peer, %error, "connection refused");
                    line.write(None, None, peer, (0, 0), error.reason());
                    return;
                }
            }
        } else {
            Prelude {
                client: peer,
                destination: local,
                sni: None,
                replay: Vec::new(),
            }
        };
        let _slot = match accept::client_slot(
            slot,
            &per_ip,
            prelude.client.ip(),
            runtime.max_connections_per_ip,
        ) {
            Some(slot) => slot,
            None => {
                runtime.reject("per_ip");
                line.write(None, None, prelude.client, (0, 0), "per_ip");
                return;
            }
        };
        let Some(cluster) = runtime.destination.choose(prelude.sni.as_deref()) else {
            debug!(listener = %runtime.name, client = %prelude.client, sni = ?prelude.sni,
                "no route for this server name; connection closed");
            line.write(None, None, prelude.client, (0, 0), "no_route");
            return;
        };
        let key = if cluster.config.balance.is_hash() {
            connection_key(
                &cluster.config.hash_key,
                prelude.client,
                prelude.destination,
                crate::cluster::PROTO_TCP,
            )
        } else {
            None
        };
        let Some((mut upstream, in_flight)) = connect(cluster, key).await else {
            debug!(listener = %runtime.name, cluster = cluster.name(), client = %prelude.client,
                "no endpoint could be reached; connection closed");
            line.write(
                Some(cluster.name()),
                None,
                prelude.client,
                (0, 0),
                "no_endpoint",
            );
            return;
        };
        let endpoint = in_flight.endpoint().name.as_str();
        if let Err(error) = send_prelude(&mut upstream, cluster, &prelude).await {
            debug!(cluster = cluster.name(), endpoint, %error, "writing the prelude upstream failed");
            line.write(
                Some(cluster.name()),
                Some(endpoint),
                prelude.client,
                (0, 0),
                "upstream_error",
            );
            return;
        }
        let replayed = prelude.replay.len() as u64;
        runtime.bytes.rx.add(replayed);
        runtime.flows.inc();
        let outcome = relay_tcp(&runtime, client, upstream, &mut shutdown).await;
        runtime.flows.dec();
        debug!(listener = %runtime.name, cluster = cluster.name(), endpoint,
            client = %prelude.client, rx = outcome.rx + replayed, tx = outcome.tx,
            close_reason = outcome.reason.as_str(), "connection closed");
        line.write(
            Some(cluster.name()),
            Some(endpoint),
            prelude.client,
            (outcome.rx + replayed, outcome.tx),
            outcome.reason.as_str(),
        );
    }
}

/// Tells the upstream who the client is (`send_proxy_protocol`), then replays the bytes
/// the prelude read past the PROXY header (the ClientHello on passthrough).
async fn send_prelude(
    upstream: &mut TcpStream,
    cluster: &Cluster,
    prelude: &Prelude,
) -> std::io::Result<()> {
    let addresses = ProxiedAddresses {
        source: prelude.client,
        destination: prelude.destination,
        transport: Transport::Tcp,
    };
    match cluster.config.send_proxy_protocol {
        SendProxyProtocol::Off => {}
        SendProxyProtocol::V1 => {
            upstream
                .write_all(proxy_protocol::encode_v1(&addresses).as_bytes())
                .await?;
        }
        SendProxyProtocol::V2 => {
            upstream
                .write_all(&proxy_protocol::encode_v2(&addresses))
                .await?;
        }
    }
    if !prelude.replay.is_empty() {
        upstream.write_all(&prelude.replay).await?;
    }
    Ok(())
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

/// Connects to the picked endpoint, moving on to the next candidate when a connect fails.
async fn connect(cluster: &Cluster, key: Option<u64>) -> Option<(TcpStream, InFlight)> {
    let timeout = cluster.config.connect_timeout;
    let keepalive = cluster.config.tcp_keepalive;
    cluster
        .connect_with_fallback(key, |address| {
            crate::cluster::connect::tcp(address, timeout, keepalive)
        })
        .await
}
