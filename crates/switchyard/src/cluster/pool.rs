//! A cluster: its endpoints, its picker, and the view of live load the picker reads.

use std::sync::Arc;

use switchyard_algo::balance::{BuildError, EndpointSpec, LoadView, Picker, Policy};

use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use tracing::debug;

use super::endpoint::{ConnectFailure, Endpoint, InFlight};
use crate::admin::metrics::{self, Registry};
use crate::config::model::{self, Balance};
use crate::runtime::{clock, rng};

/// A cluster could not be built (the configuration was valid, the picker refused it).
#[derive(Debug, thiserror::Error)]
#[error("cluster {cluster:?}: {source}")]
pub struct ClusterBuildError {
    cluster: String,
    #[source]
    source: BuildError,
}

/// A named pool of endpoints with one balancing policy.
#[derive(Debug)]
pub struct Cluster {
    /// The validated configuration it was built from.
    pub config: model::Cluster,
    endpoints: Vec<Arc<Endpoint>>,
    picker: Picker,
}

fn policy(cluster: &model::Cluster) -> Policy {
    match cluster.balance {
        Balance::RoundRobin => Policy::RoundRobin,
        Balance::WeightedRoundRobin => Policy::WeightedRoundRobin,
        Balance::Random => Policy::Random,
        Balance::LeastRequest => Policy::LeastRequest,
        Balance::P2c => Policy::P2c,
        Balance::P2cEwma => Policy::P2cEwma,
        Balance::RingHash => Policy::RingHash,
        Balance::Maglev => Policy::Maglev {
            table_size: cluster.maglev_table_size,
        },
    }
}

impl Cluster {
    /// Builds the cluster, its picker and its metric series.
    pub fn build(
        config: &model::Cluster,
        registry: &Registry,
    ) -> Result<Cluster, ClusterBuildError> {
        let specs: Vec<EndpointSpec> = config
            .endpoints
            .iter()
            .map(|e| EndpointSpec::new(e.name.clone(), e.weight))
            .collect();
        let picker = Picker::new(policy(config), &specs).map_err(|source| ClusterBuildError {
            cluster: config.name.clone(),
            source,
        })?;
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| Arc::new(Endpoint::new(&config.name, e, registry)))
            .collect();
        let name = config.name.as_str();
        registry.counter(&metrics::RETRY_BUDGET_EXHAUSTED_TOTAL, &[name]);
        registry.counter(&metrics::HEDGES_TOTAL, &[name]);
        for reason in ["pending", "requests", "connections", "circuit-open"] {
            registry.counter(&metrics::SHED_TOTAL, &[name, reason]);
        }
        for result in ["pass", "fail"] {
            registry.counter(&metrics::HEALTH_CHECKS_TOTAL, &[name, result]);
        }
        for state in ["idle", "active"] {
            registry.gauge(&metrics::UPSTREAM_POOL_CONNECTIONS, &[name, state]);
        }
        Ok(Cluster {
            config: config.clone(),
            endpoints,
            picker,
        })
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Its endpoints, in configuration order.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Opens a connection (TCP stream, connected UDP socket, ...) to the picked endpoint
    /// with `attempt`; when it fails, records the failure and tries the next candidate,
    /// each endpoint at most once. Returns the connection with the endpoint's in-flight
    /// count held, or `None` when no endpoint could be reached.
    pub async fn connect_with_fallback<T, F, Fut>(
        &self,
        key: Option<u64>,
        mut attempt: F,
    ) -> Option<(T, InFlight)>
    where
        F: FnMut(SocketAddr) -> Fut,
        Fut: Future<Output = Result<T, (ConnectFailure, String)>>,
    {
        let mut tried = Vec::new();
        while let Some((index, endpoint)) = self.pick(key, &tried) {
            let in_flight = endpoint.begin();
            let started = Instant::now();
            match attempt(endpoint.address).await {
                Ok(connection) => {
                    endpoint.record_success(started.elapsed(), clock::now());
                    return Some((connection, in_flight));
                }
                Err((failure, error)) => {
                    debug!(cluster = self.name(), endpoint = %endpoint.name, %error, "connect failed");
                    endpoint.record_connect_failure(failure, clock::now());
                }
            }
            tried.push(index);
        }
        None
    }

    /// Picks an eligible endpoint not in `exclude` (the ones a connect already failed on).
    pub fn pick(&self, key: Option<u64>, exclude: &[usize]) -> Option<(usize, &Arc<Endpoint>)> {
        let now = clock::now();
        let load = Load {
            endpoints: &self.endpoints,
            now,
        };
        let index = rng::with_rng(|rng| self.picker.pick_excluding(key, &load, rng, exclude))?;
        self.endpoints.get(index).map(|e| (index, e))
    }
}

/// The live numbers a picker reads.
struct Load<'a> {
    endpoints: &'a [Arc<Endpoint>],
    now: u64,
}

impl LoadView for Load<'_> {
    fn is_eligible(&self, i: usize) -> bool {
        self.endpoints[i].is_eligible()
    }

    fn in_flight(&self, i: usize) -> u64 {
        self.endpoints[i].in_flight()
    }

    fn latency_cost(&self, i: usize) -> f64 {
        self.endpoints[i].latency_estimate_ns(self.now)
    }
}
