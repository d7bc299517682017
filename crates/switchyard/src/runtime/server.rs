//! Starting and stopping a balancer: bind every socket first (so a port in use fails the
//! start before anything serves), then spawn the accept loops and the admin API, and on
//! shutdown run SPEC 3.1's sequence.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tracing::info;

use super::shutdown::{self, ConnectionTracker, Phase, ShutdownTrigger};
use super::snapshot::{Snapshot, SnapshotError};
use crate::admin;
use crate::admin::access_log::AccessLog;
use crate::admin::metrics::Registry;
use crate::config::Config;
use crate::config::model::Protocol;
use crate::listener::per_ip::PerIpCounts;
use crate::listener::{bind, tcp, udp};

/// Accept loops (and `SO_REUSEPORT` sockets) per TCP listener: one per worker thread.
fn accept_loops(workers: usize) -> usize {
    if workers > 0 {
        workers
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

/// A socket the server bound, as `GET /api/v1/listeners` and the `listening` event report it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BoundListener {
    /// The listener's name (`admin` for the admin API).
    pub name: String,
    /// Its protocol word.
    pub protocol: String,
    /// The address actually bound (the real port when 0 was asked), or `unix:/path`.
    pub address: String,
}

/// The `listening` event line, keys in SPEC order.
pub fn listening_event(listener: &str, address: &str) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "{{\"event\":\"listening\",\"listener\":{},\"address\":{}}}",
        quote(listener),
        quote(address)
    )
}

/// State shared by every task of one server.
#[derive(Debug)]
pub struct Shared {
    /// Every metric series.
    pub registry: Arc<Registry>,
    /// The configuration in force.
    pub snapshot: ArcSwap<Snapshot>,
    /// Set once every listener is bound; cleared when shutdown begins.
    pub ready: AtomicBool,
    /// The sockets bound (admin first).
    pub listeners: Vec<BoundListener>,
    /// Where connections log.
    pub access_log: AccessLog,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's address could not be bound.
    #[error(transparent)]
    Bind(#[from] bind::BindError),
    /// The admin API could not be bound.
    #[error(transparent)]
    Admin(#[from] admin::server::AdminBindError),
    /// The configuration could not be compiled.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The access log's file could not be opened.
    #[error("access_log: cannot open {path}: {source}")]
    AccessLog {
        /// The configured path.
        path: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The packet tier (`[[xdp]]`) could not start.
    #[error(transparent)]
    Xdp(#[from] crate::xdp::XdpError),
    /// A listener protocol this build does not serve (validation rejects it first).
    #[error("listener {0:?}: protocol {1} is not served by this build")]
    Unsupported(String, &'static str),
}

/// Once a second: ends expired ejections and checks latency outliers (publishing every
/// endpoint's state), and closes pooled upstream connections that outlived
/// `pool_idle_timeout` or belong to a draining endpoint.
async fn housekeeping(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snapshot = shared.snapshot.load();
        let now = crate::runtime::clock::now();
        for cluster in &snapshot.clusters {
            cluster.check_outliers(now);
        }
        for upstream in &snapshot.upstreams {
            upstream.evict_expired();
        }
    }
}

/// The packet tier finds a VIP's cluster by name in the snapshot in force.
fn xdp_clusters(shared: &Arc<Shared>) -> crate::xdp::ClusterSource {
    let shared = Arc::clone(shared);
    Arc::new(move |name: &str| shared.snapshot.load().cluster(name).cloned())
}

/// A running balancer.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    trigger: ShutdownTrigger,
    tracker: Arc<ConnectionTracker>,
    tasks: JoinSet<()>,
    admin_address: Option<SocketAddr>,
    xdp: crate::xdp::XdpRuntime,
}

impl Server {
    /// Binds every listener and the admin API, then serves in background tasks on the
    /// current tokio runtime.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let registry = Arc::new(Registry::new());
        let snapshot = Snapshot::build(config, &registry)?;
        let config = Arc::clone(&snapshot.config);

        let accept_loops = accept_loops(config.runtime.workers);
        let admin_socket = admin::server::bind(&config.admin.listen)?;
        let mut listeners = vec![admin_socket.bound()];
        let mut tcp_sockets = Vec::new();
        let mut udp_sockets = Vec::new();
        let mut http_sockets = Vec::new();
        for listener in &config.listeners {
            let local = |address: std::io::Result<SocketAddr>| {
                address.map_err(|source| bind::BindError {
                    listener: listener.name.clone(),
                    address: listener.listen,
                    source,
                })
            };
            let address = match listener.protocol {
                Protocol::Udp => {
                    let socket = bind::udp(&listener.name, listener.listen)?;
                    let address = local(socket.local_addr())?;
                    udp_sockets.push((listener.name.clone(), socket));
                    address
                }
                Protocol::Tcp | Protocol::TlsPassthrough | Protocol::Http | Protocol::Https => {
                    let sockets = bind::tcp_group(&listener.name, listener.listen, accept_loops)?;
                    let address = local(sockets[0].local_addr())?;
                    let group = (listener.name.clone(), sockets);
                    if listener.protocol.is_http() {
                        http_sockets.push(group);
                    } else {
                        tcp_sockets.push(group);
                    }
                    address
                }
            };
            listeners.push(BoundListener {
                name: listener.name.clone(),
                protocol: listener.protocol.as_str().to_owned(),
                address: address.to_string(),
            });
        }

        let access_log = AccessLog::start(&config.access_log, &registry).map_err(|source| {
            StartError::AccessLog {
                path: format!("{:?}", config.access_log.path),
                source,
            }
        })?;
        let shared = Arc::new(Shared {
            access_log,
            registry,
            snapshot: ArcSwap::from_pointee(snapshot),
            ready: AtomicBool::new(false),
            listeners,
        });
        let (trigger, shutdown) = shutdown::channel();
        let tracker = Arc::new(ConnectionTracker::default());
        let mut tasks = JoinSet::new();
        let admin_address = admin_socket.tcp_address();
        tasks.spawn(admin::server::serve(
            admin_socket,
            Arc::clone(&shared),
            shutdown.clone(),
        ));
        for (name, sockets) in tcp_sockets {
            let per_ip = Arc::new(PerIpCounts::default());
            for socket in sockets {
                let log = shared.access_log.clone();
                let shared = Arc::clone(&shared);
                let name = name.clone();
                let current = move || shared.snapshot.load().tcp_listener(&name).cloned();
                tasks.spawn(tcp::serve(
                    socket,
                    current,
                    Arc::clone(&per_ip),
                    log,
                    shutdown.clone(),
                    Arc::clone(&tracker),
                ));
            }
        }
        for (name, sockets) in http_sockets {
            let per_ip = Arc::new(PerIpCounts::default());
            for socket in sockets {
                let log = crate::http::server::LogSettings {
                    log: shared.access_log.clone(),
                    include_query: config.access_log.include_query,
                };
                let shared = Arc::clone(&shared);
                let name = name.clone();
                let current = move || shared.snapshot.load().http_listener(&name).cloned();
                tasks.spawn(crate::http::server::serve(
                    socket,
                    current,
                    Arc::clone(&per_ip),
                    log,
                    shutdown.clone(),
                    Arc::clone(&tracker),
                ));
            }
        }
        tasks.spawn(housekeeping(Arc::clone(&shared)));
        if let Some(global) = &shared.snapshot.load().global_limit {
            tasks.spawn(Arc::clone(global).maintain());
        }
        let checked: Vec<_> = shared
            .snapshot
            .load()
            .upstreams
            .iter()
            .map(|u| (Arc::clone(&u.cluster), u.tls.clone()))
            .collect();
        let (first_round, longest) =
            crate::health::spawn_checks(&checked, &shared.registry, &mut tasks);
        for listener in &shared.snapshot.load().http_listeners {
            if let Some(tls) = &listener.tls {
                tasks.spawn(Arc::clone(tls).watch());
            }
        }
        for (name, socket) in udp_sockets {
            let log = shared.access_log.clone();
            let shared = Arc::clone(&shared);
            let current = move || shared.snapshot.load().udp_listener(&name).cloned();
            tasks.spawn(udp::serve(
                socket,
                current,
                log,
                shutdown.clone(),
                Arc::clone(&tracker),
            ));
        }
        let xdp = crate::xdp::start(&config.xdp, xdp_clusters(&shared), &shared.registry)?;
        // `/ready` waits for the first round of health checks, at most one check timeout.
        let _ = tokio::time::timeout(longest, first_round.wait()).await;
        shared.ready.store(true, Ordering::Release);
        Ok(Server {
            shared,
            trigger,
            tracker,
            tasks,
            admin_address,
            xdp,
        })
    }

    /// Reports every bound socket once on stderr as a JSON line (SPEC section 2):
    /// `{"event":"listening","listener":"web","address":"127.0.0.1:40123"}`.
    pub fn announce(&self) {
        for listener in &self.shared.listeners {
            eprintln!("{}", listening_event(&listener.name, &listener.address));
        }
    }

    /// The sockets bound, the admin API first.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.shared.listeners
    }

    /// The bound address of the listener called `name`.
    pub fn address_of(&self, name: &str) -> Option<SocketAddr> {
        self.shared
            .listeners
            .iter()
            .find(|l| l.name == name)
            .and_then(|l| l.address.parse().ok())
    }

    /// The admin API's TCP address (`None` on a Unix socket).
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin_address
    }

    /// The state shared with the serving tasks.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Runs the shutdown sequence of SPEC 3.1: `/ready` turns 503 at once, listeners keep
    /// accepting for `shutdown_delay`, then close; open connections get the rest of
    /// `drain_timeout` and are then closed.
    pub async fn shutdown(mut self) {
        let defaults = self.shared.snapshot.load().config.defaults.clone();
        let started = tokio::time::Instant::now();
        let deadline = started + defaults.drain_timeout;
        self.shared.ready.store(false, Ordering::Release);
        self.trigger.advance(Phase::Draining);
        info!(shutdown_delay = ?defaults.shutdown_delay, drain_timeout = ?defaults.drain_timeout, "shutting down");
        tokio::time::sleep_until((started + defaults.shutdown_delay).min(deadline)).await;
        self.trigger.advance(Phase::StopAccepting);
        let open = self.tracker.open();
        if open > 0 {
            info!(open, "waiting for open connections to finish");
        }
        let _ = tokio::time::timeout_at(deadline, self.tracker.wait_idle()).await;
        self.trigger.advance(Phase::Closed);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait_idle()).await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.xdp.detach();
        info!("stopped");
    }
}
