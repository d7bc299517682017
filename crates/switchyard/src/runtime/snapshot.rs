//! A snapshot: one configuration compiled into what connections use (clusters with their
//! pickers, listeners with their resolved targets and metric handles).
//!
//! A reload compiles a new snapshot beside the one in force and swaps it in whole. An L4
//! connection keeps the snapshot it was accepted under for its life; an HTTP connection
//! takes the listener in force for each new request, so a changed route applies to the
//! next request and never to one in flight. Live endpoint state is not part of a snapshot's
//! copy: [`Snapshot::build`] with a previous snapshot hands the same endpoints over.

use std::sync::Arc;

use crate::admin::metrics::{self, Registry};
use crate::cluster::{Cluster, ClusterBuildError, Endpoint};
use crate::config::Config;
use crate::config::model::Protocol;
use crate::http::global_limit::GlobalLimiter;
use crate::http::listener::{HttpListenerError, HttpListenerRuntime, UpstreamCluster};
use crate::listener::destination::UnknownCluster;
use crate::listener::tcp::TcpListenerRuntime;
use crate::listener::udp::UdpListenerRuntime;

/// A snapshot could not be compiled from a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A cluster's picker refused its endpoint set.
    #[error(transparent)]
    Cluster(#[from] ClusterBuildError),
    /// A listener names a cluster that does not exist.
    #[error(transparent)]
    Listener(#[from] UnknownCluster),
    /// An HTTP listener could not be compiled.
    #[error(transparent)]
    Http(#[from] HttpListenerError),
}

/// One configuration, compiled.
#[derive(Debug)]
pub struct Snapshot {
    /// The configuration it was compiled from.
    pub config: Arc<Config>,
    /// Clusters in configuration order.
    pub clusters: Vec<Arc<Cluster>>,
    /// TCP listeners in configuration order.
    pub tcp_listeners: Vec<Arc<TcpListenerRuntime>>,
    /// UDP listeners in configuration order.
    pub udp_listeners: Vec<Arc<UdpListenerRuntime>>,
    /// Clusters with their HTTP connection pools, in configuration order.
    pub upstreams: Vec<Arc<UpstreamCluster>>,
    /// HTTP listeners in configuration order.
    pub http_listeners: Vec<Arc<HttpListenerRuntime>>,
    /// The fleet-wide rate-limit store, with `[global_rate_limit]`.
    pub global_limit: Option<Arc<GlobalLimiter>>,
}

impl Snapshot {
    /// Compiles `config`, creating every configuration-derived metric series at zero. With
    /// `previous` (the snapshot a reload replaces), endpoints that remain keep their live
    /// state and clusters keep their retry budgets (see [`Cluster::build`]); nothing in
    /// `previous` changes until [`Snapshot::retire`].
    pub fn build(
        config: Config,
        registry: &Arc<Registry>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, SnapshotError> {
        let clusters = config
            .clusters
            .iter()
            .map(|c| {
                let old = previous.and_then(|p| p.cluster(&c.name));
                Cluster::build(c, registry, old.map(|o| &**o)).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tcp_listeners = config
            .listeners
            .iter()
            .filter(|l| matches!(l.protocol, Protocol::Tcp | Protocol::TlsPassthrough))
            .map(|l| TcpListenerRuntime::build(l, &clusters, registry).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let udp_listeners = config
            .listeners
            .iter()
            .filter(|l| l.protocol == Protocol::Udp)
            .map(|l| UdpListenerRuntime::build(l, &clusters, registry).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        // Created with the snapshot; the server keeps its connection open.
        let global_limit = config.global_rate_limit.as_ref().map(|global| {
            GlobalLimiter::new(
                &global.redis,
                global.timeout,
                registry.counter(&metrics::RATE_LIMIT_BACKEND_ERRORS_TOTAL, &[]),
            )
        });
        let upstreams: Vec<Arc<UpstreamCluster>> = clusters
            .iter()
            .map(|c| {
                let old = previous.and_then(|p| p.upstream(c.name()));
                UpstreamCluster::build(c, registry, old.map(|o| &**o)).map(Arc::new)
            })
            .collect::<Result<_, _>>()?;
        let http_listeners = config
            .listeners
            .iter()
            .filter(|l| l.protocol.is_http())
            .map(|l| {
                let old = previous.and_then(|p| p.http_listener(&l.name));
                HttpListenerRuntime::build(
                    l,
                    &upstreams,
                    global_limit.as_ref(),
                    registry,
                    old.map(|o| &**o),
                )
                .map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        for result in ["success", "failure"] {
            registry.counter(&metrics::CONFIG_RELOADS_TOTAL, &[result]);
        }
        Ok(Snapshot {
            config: Arc::new(config),
            clusters,
            tcp_listeners,
            udp_listeners,
            upstreams,
            http_listeners,
            global_limit,
        })
    }

    /// Called as this snapshot goes into force after a reload: kept endpoints take its
    /// settings.
    pub fn adopt_endpoints(&self) {
        for cluster in &self.clusters {
            cluster.adopt_endpoints();
        }
    }

    /// Called once `successor` is in force in place of this snapshot: endpoints it dropped
    /// drain (requests still running here finish; nothing new picks them). Returns those
    /// endpoints: the housekeeping of `successor` does not see them, so their drain's end
    /// is the caller's to time.
    pub fn retire(&self, successor: &Snapshot) -> Vec<Arc<Endpoint>> {
        self.clusters
            .iter()
            .flat_map(|cluster| {
                cluster.drain_removed(successor.cluster(cluster.name()).map(|c| &**c))
            })
            .collect()
    }

    /// The cluster with its pools, called `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<UpstreamCluster>> {
        self.upstreams.iter().find(|u| u.name() == name)
    }

    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.iter().find(|c| c.name() == name)
    }

    /// The TCP listener called `name`.
    pub fn tcp_listener(&self, name: &str) -> Option<&Arc<TcpListenerRuntime>> {
        self.tcp_listeners.iter().find(|l| l.name == name)
    }
}

impl Snapshot {
    /// The HTTP listener called `name`.
    pub fn http_listener(&self, name: &str) -> Option<&Arc<HttpListenerRuntime>> {
        self.http_listeners.iter().find(|l| l.name == name)
    }

    /// The UDP listener called `name`.
    pub fn udp_listener(&self, name: &str) -> Option<&Arc<UdpListenerRuntime>> {
        self.udp_listeners.iter().find(|l| l.name == name)
    }
}
