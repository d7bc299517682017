//! Where an L4 listener sends a connection or flow: one cluster, a weighted split, or (on
//! tls-passthrough) the cluster its server name routes to. One type for every L4
//! listener, so TCP, UDP and passthrough choose the same way.

use std::sync::Arc;

use rand::Rng;

use super::sni;
use crate::cluster::Cluster;
use crate::config::model::{self, Protocol, Target};
use crate::runtime::rng;

/// A listener names a cluster the snapshot does not hold (validation prevents this).
#[derive(Debug, thiserror::Error)]
#[error("listener {listener:?}: unknown cluster {cluster:?}")]
pub struct UnknownCluster {
    listener: String,
    cluster: String,
}

/// A listener's target with its clusters resolved.
#[derive(Debug)]
pub enum Destination {
    /// One cluster.
    One(Arc<Cluster>),
    /// A weighted split, chosen per connection or flow.
    Split {
        /// `(cluster, weight)` in file order.
        branches: Vec<(Arc<Cluster>, u32)>,
        /// The sum of the weights (> 0).
        total: u64,
    },
    /// tls-passthrough: `(sni pattern, cluster)` in file order.
    Sni(Vec<(String, Arc<Cluster>)>),
}

impl Destination {
    /// Resolves `config`'s target (or SNI routes) against `clusters`.
    pub fn build(
        config: &model::Listener,
        clusters: &[Arc<Cluster>],
    ) -> Result<Destination, UnknownCluster> {
        let unknown = |cluster: &str| UnknownCluster {
            listener: config.name.clone(),
            cluster: cluster.to_owned(),
        };
        let find = |name: &str| {
            clusters
                .iter()
                .find(|c| c.name() == name)
                .cloned()
                .ok_or_else(|| unknown(name))
        };
        if config.protocol == Protocol::TlsPassthrough {
            let routes = config
                .sni_routes
                .iter()
                .map(|r| Ok((r.sni.clone(), find(&r.cluster)?)))
                .collect::<Result<Vec<_>, UnknownCluster>>()?;
            return Ok(Destination::Sni(routes));
        }
        match &config.target {
            Some(Target::Cluster(name)) => Ok(Destination::One(find(name)?)),
            Some(Target::Split(split)) => {
                let branches = split
                    .iter()
                    .map(|w| Ok((find(&w.cluster)?, w.weight)))
                    .collect::<Result<Vec<_>, UnknownCluster>>()?;
                let total = branches.iter().map(|(_, w)| u64::from(*w)).sum::<u64>();
                if total == 0 {
                    return Err(unknown(""));
                }
                Ok(Destination::Split { branches, total })
            }
            None => Err(unknown("")),
        }
    }

    /// The cluster for a connection whose ClientHello named `sni` (ignored unless SNI
    /// routed); `None` when no SNI route matches.
    pub fn choose(&self, sni: Option<&str>) -> Option<&Arc<Cluster>> {
        match self {
            Destination::One(cluster) => Some(cluster),
            Destination::Split { branches, total } => {
                let mut point = rng::with_rng(|rng| rng.random_range(0..*total));
                for (cluster, weight) in branches {
                    let weight = u64::from(*weight);
                    if point < weight {
                        return Some(cluster);
                    }
                    point -= weight;
                }
                branches.last().map(|(cluster, _)| cluster)
            }
            Destination::Sni(routes) => sni::route(routes, sni),
        }
    }
}
