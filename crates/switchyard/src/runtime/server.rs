//! Starting and stopping a balancer: bind every socket first (so a port in use fails the
//! start before anything serves), then spawn the accept loops and the admin API, and on
//! shutdown run SPEC 3.1's sequence.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tracing::info;

use super::listeners::{ListenerGroup, Logging, Sockets, StartServeError};
use super::reload::{self, Changes, History, ReloadFailure, ReloadRecord, ReloadTrigger};
use super::shutdown::{self, Phase, ShutdownTrigger};
use super::snapshot::{Snapshot, SnapshotError};
use super::upgrade::Inherited;
use crate::admin;
use crate::admin::access_log::AccessLog;
use crate::admin::metrics::Registry;
use crate::config::Config;
use crate::listener::bind;

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
    /// The sockets bound (admin first); republished by a reload.
    pub listeners: ArcSwap<Vec<BoundListener>>,
    /// Where connections log.
    pub access_log: AccessLog,
    control: Mutex<Control>,
}

/// What reloads, shutdown and upgrades change, behind one lock so they never interleave.
#[derive(Debug)]
pub struct Control {
    /// The served addresses, in configuration order.
    pub(crate) groups: Vec<ListenerGroup>,
    /// Background tasks of the snapshot in force (health checks, certificate watchers,
    /// the fleet rate-limit connection); dropping the set stops them.
    pub(crate) generation: JoinSet<()>,
    /// The file a reload reads.
    pub(crate) config_path: Option<PathBuf>,
    /// Sockets (and accept loops) per new TCP listener.
    pub(crate) accept_loops: usize,
    /// Where connections log.
    pub(crate) logging: Logging,
    /// Recent reloads, newest first.
    pub(crate) history: History,
    /// Set when shutdown begins: reloads are refused from then on.
    pub(crate) stopping: bool,
    /// The admin socket, as `/api/v1/listeners` reports it.
    admin: BoundListener,
    /// A duplicate of the admin socket with its configured address, for `run --upgrade`.
    admin_fd: Option<(String, OwnedFd)>,
    /// The last good DNS answer of each discovery cluster.
    pub(crate) resolved: HashMap<String, Vec<SocketAddr>>,
    /// One lookup task per discovery cluster (restarted by a file reload only).
    pub(crate) discovery: JoinSet<()>,
}

impl Control {
    /// The admin socket's configured address and descriptor, for `run --upgrade`.
    pub(crate) fn admin_fd(&self) -> Option<(&str, &OwnedFd)> {
        self.admin_fd
            .as_ref()
            .map(|(listen, fd)| (listen.as_str(), fd))
    }
}

impl Shared {
    /// The control state (reload, shutdown, upgrade), locked.
    pub(crate) fn lock_control(&self) -> MutexGuard<'_, Control> {
        self.control
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Republishes the bound sockets after the groups changed.
    pub(crate) fn publish_listeners(&self, control: &Control) {
        let mut list = vec![control.admin.clone()];
        list.extend(control.groups.iter().map(|g| g.bound.clone()));
        self.listeners.store(Arc::new(list));
    }

    /// Reloads the configuration file (SIGHUP, `POST /api/v1/reload`).
    pub fn reload(self: &Arc<Self>, trigger: ReloadTrigger) -> Result<Changes, ReloadFailure> {
        reload::reload(self, trigger)
    }

    /// The last good DNS answer of discovery cluster `cluster`.
    pub fn resolved_set(&self, cluster: &str) -> Option<Vec<SocketAddr>> {
        self.lock_control().resolved.get(cluster).cloned()
    }

    /// Applies a changed DNS answer (see [`super::discovery`]).
    pub fn apply_discovery(
        self: &Arc<Self>,
        cluster: &str,
        addresses: Vec<SocketAddr>,
    ) -> Result<Changes, ReloadFailure> {
        reload::apply_discovery(self, cluster, addresses)
    }

    /// Recent reloads, newest first (`GET /api/v1/reloads`).
    pub fn reload_history(&self) -> Vec<ReloadRecord> {
        self.lock_control().history.records()
    }
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
    /// A listener could not start serving.
    #[error(transparent)]
    Serve(#[from] StartServeError),
    /// A socket handed over by the previous process could not be used.
    #[error("a socket handed over by the running instance is unusable: {0}")]
    Inherited(#[source] std::io::Error),
    /// `[admin] token_file` could not be read.
    #[error("admin.token_file: cannot read {}: {source}", path.display())]
    TokenFile {
        /// The configured path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
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
}

/// Once a second: ends expired ejections and checks latency outliers (publishing every
/// endpoint's state), cuts the exchanges of endpoints draining past their cluster's
/// `drain_timeout`, and closes pooled upstream connections that outlived
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
            cluster.cut_expired_drains(now);
        }
        for upstream in &snapshot.upstreams {
            upstream.evict_expired();
        }
    }
}

/// The background tasks of one snapshot, and how long its first health round may take.
pub(crate) struct Generation {
    pub(crate) tasks: JoinSet<()>,
    first_round: Arc<crate::health::FirstRound>,
    longest: Duration,
}

/// Starts `snapshot`'s background tasks: active health checks, certificate watchers and
/// the fleet rate-limit connection.
pub(crate) fn spawn_generation(snapshot: &Snapshot, registry: &Arc<Registry>) -> Generation {
    let mut tasks = JoinSet::new();
    if let Some(global) = &snapshot.global_limit {
        tasks.spawn(Arc::clone(global).maintain());
    }
    let checked: Vec<_> = snapshot
        .upstreams
        .iter()
        .map(|u| (Arc::clone(&u.cluster), u.tls.clone()))
        .collect();
    let (first_round, longest) = crate::health::spawn_checks(&checked, registry, &mut tasks);
    for listener in &snapshot.http_listeners {
        if let Some(tls) = &listener.tls {
            tasks.spawn(Arc::clone(tls).watch());
        }
    }
    Generation {
        tasks,
        first_round,
        longest,
    }
}

/// How a server starts beyond its configuration.
#[derive(Debug, Default)]
pub struct StartOptions {
    /// The file `SIGHUP` and `POST /api/v1/reload` read again (none: reload is refused).
    pub config_path: Option<PathBuf>,
    /// Sockets handed over by the previous process (`run --upgrade`); listeners whose
    /// address is not among them are bound.
    pub inherited: Option<Inherited>,
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
    tasks: JoinSet<()>,
    admin_address: Option<SocketAddr>,
    xdp: crate::xdp::XdpRuntime,
}

impl Server {
    /// Binds every listener and the admin API, then serves in background tasks on the
    /// current tokio runtime. Reload is refused (no file to read): see [`Server::start_with`].
    pub async fn start(config: Config) -> Result<Server, StartError> {
        Server::start_with(config, StartOptions::default()).await
    }

    /// [`Server::start`] with options.
    pub async fn start_with(config: Config, options: StartOptions) -> Result<Server, StartError> {
        let registry = Arc::new(Registry::new());
        let resolved = super::discovery::first_lookups(&config).await;
        let config = super::discovery::overlay(config, &resolved);
        let snapshot = Snapshot::build(config, &registry, None)?;
        let config = Arc::clone(&snapshot.config);

        let accept_loops = accept_loops(config.runtime.workers);
        let admin_token = admin::api::AdminToken::load(config.admin.token_file.as_deref())
            .map_err(|source| StartError::TokenFile {
                path: config.admin.token_file.clone().unwrap_or_default(),
                source,
            })?;
        let mut inherited = options.inherited.unwrap_or_default();
        let admin_word = super::upgrade::admin_word(&config);
        let admin_socket = match inherited.take_admin(&admin_word) {
            Some(fd) => admin::server::AdminSocket::from_fd(&config.admin.listen, fd)
                .map_err(StartError::Inherited)?,
            None => admin::server::bind(&config.admin.listen)?,
        };
        let admin_fd = admin_socket.duplicate_fd().map_err(StartError::Inherited)?;
        let mut bound = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let key = super::listeners::SocketKey::of(listener);
            bound.push(match inherited.take(key) {
                Some(fds) => Sockets::from_fds(key.family, fds).map_err(StartError::Inherited)?,
                None => Sockets::bind(listener, accept_loops)?,
            });
        }
        // Sockets the new configuration does not use close here; the old process drains
        // its own connections on them.
        drop(inherited);
        let access_log = AccessLog::start(&config.access_log, &registry).map_err(|source| {
            StartError::AccessLog {
                path: format!("{:?}", config.access_log.path),
                source,
            }
        })?;
        let logging = Logging {
            log: access_log.clone(),
            include_query: config.access_log.include_query,
        };
        let mut groups = Vec::with_capacity(bound.len());
        for (listener, sockets) in config.listeners.iter().zip(bound) {
            groups.push(ListenerGroup::serve(
                listener, sockets, &snapshot, &logging,
            )?);
        }
        let generation = spawn_generation(&snapshot, &registry);
        let admin_bound = admin_socket.bound();
        let mut listeners = vec![admin_bound.clone()];
        listeners.extend(groups.iter().map(|g| g.bound.clone()));
        let shared = Arc::new(Shared {
            access_log,
            registry,
            snapshot: ArcSwap::from_pointee(snapshot),
            ready: AtomicBool::new(false),
            listeners: ArcSwap::from_pointee(listeners),
            control: Mutex::new(Control {
                groups,
                generation: JoinSet::new(),
                config_path: options.config_path,
                accept_loops,
                logging,
                history: History::default(),
                stopping: false,
                admin: admin_bound,
                admin_fd: Some((admin_word, admin_fd)),
                resolved,
                discovery: JoinSet::new(),
            }),
        });
        let (trigger, shutdown) = shutdown::channel();
        let mut tasks = JoinSet::new();
        let admin_address = admin_socket.tcp_address();
        tasks.spawn(admin::server::serve(
            admin_socket,
            Arc::clone(&shared),
            admin_token,
            shutdown.clone(),
        ));
        tasks.spawn(housekeeping(Arc::clone(&shared)));
        let Generation {
            tasks: generation,
            first_round,
            longest,
        } = generation;
        {
            let mut control = shared.lock_control();
            control.generation = generation;
            let mut discovery = JoinSet::new();
            super::discovery::spawn(&config, &shared, &mut discovery);
            control.discovery = discovery;
        }
        let xdp = crate::xdp::start(&config.xdp, xdp_clusters(&shared), &shared.registry)?;
        // `/ready` waits for the first round of health checks, at most one check timeout.
        let _ = tokio::time::timeout(longest, first_round.wait()).await;
        shared.ready.store(true, Ordering::Release);
        Ok(Server {
            shared,
            trigger,
            tasks,
            admin_address,
            xdp,
        })
    }

    /// Reports every bound socket once on stderr as a JSON line (SPEC section 2):
    /// `{"event":"listening","listener":"web","address":"127.0.0.1:40123"}`.
    pub fn announce(&self) {
        for listener in self.shared.listeners.load().iter() {
            eprintln!("{}", listening_event(&listener.name, &listener.address));
        }
    }

    /// The sockets bound, the admin API first.
    pub fn listeners(&self) -> Vec<BoundListener> {
        self.shared.listeners.load().to_vec()
    }

    /// The bound address of the listener called `name`.
    pub fn address_of(&self, name: &str) -> Option<SocketAddr> {
        self.shared
            .listeners
            .load()
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
        let groups = {
            let mut control = self.shared.lock_control();
            control.stopping = true;
            std::mem::take(&mut control.groups)
        };
        for group in &groups {
            group.advance(Phase::Draining);
        }
        info!(shutdown_delay = ?defaults.shutdown_delay, drain_timeout = ?defaults.drain_timeout, "shutting down");
        tokio::time::sleep_until((started + defaults.shutdown_delay).min(deadline)).await;
        self.close_groups(groups, deadline).await;
        self.trigger.advance(Phase::Closed);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.xdp.detach();
        info!("stopped");
    }

    /// Stops accepting on every group, waits for their connections until `deadline`, then
    /// closes what is left.
    async fn close_groups(&self, mut groups: Vec<ListenerGroup>, deadline: tokio::time::Instant) {
        for group in &mut groups {
            group.advance(Phase::StopAccepting);
            group.release_fds();
        }
        let open: usize = groups.iter().map(ListenerGroup::open_connections).sum();
        if open > 0 {
            info!(open, "waiting for open connections to finish");
        }
        let idle: Vec<_> = groups.iter().map(ListenerGroup::idle).collect();
        let _ = tokio::time::timeout_at(deadline, futures_util::future::join_all(idle)).await;
        for group in &groups {
            group.advance(Phase::Closed);
        }
        let idle: Vec<_> = groups.iter().map(ListenerGroup::idle).collect();
        let _ = tokio::time::timeout(Duration::from_secs(1), futures_util::future::join_all(idle))
            .await;
        for group in groups {
            group.stop().await;
        }
        let mut control = self.shared.lock_control();
        drop(std::mem::take(&mut control.generation));
        drop(std::mem::take(&mut control.discovery));
    }
}
