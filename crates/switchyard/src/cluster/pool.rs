//! A cluster: its endpoints, its picker, the view of live load the picker reads, and the
//! passive outlier detection that every tier feeds with the outcome of its attempts.

use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex};

use switchyard_algo::balance::{BuildError, EndpointSpec, LoadView, Picker, Policy};
use switchyard_algo::outlier::{self, Outcome, OutlierConfig, OutlierDetector};

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

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
    /// Rebuilt when the operator changes a weight (weighted and hash policies bake weights
    /// into their tables); a pick loads it once.
    picker: ArcSwap<Picker>,
    /// Passive outlier detection; `None` when `[cluster.outlier] enabled = false`.
    outlier: Option<Mutex<OutlierDetector>>,
    /// Below `panic_threshold` percent usable: balance over every endpoint not draining.
    in_panic: AtomicBool,
    panic_threshold: u32,
}

/// The algorithms crate's view of `[cluster.outlier]`.
fn outlier_config(config: &model::Outlier) -> OutlierConfig {
    let percent = |p: f64| p.clamp(0.0, 100.0).round() as u32;
    OutlierConfig {
        consecutive_5xx: config.consecutive_5xx,
        consecutive_gateway_failures: config.consecutive_gateway_failures,
        error_rate: config.error_rate,
        window: config.window,
        min_requests: u64::from(config.min_requests),
        latency_factor: config.latency_factor,
        base_ejection: config.base_ejection,
        max_ejection: config.max_ejection,
        max_ejection_percent: percent(config.max_ejection_percent),
        panic_threshold: percent(config.panic_threshold),
    }
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
    /// Builds the cluster, its picker and its metric series. With `previous` (the cluster of
    /// the same name in the snapshot a reload replaces), every endpoint that remains (same
    /// name and address) is the previous one itself, with its live state, and passive
    /// detection continues where it was; new endpoints slow-start once usable.
    pub fn build(
        config: &model::Cluster,
        registry: &Registry,
        previous: Option<&Cluster>,
    ) -> Result<Cluster, ClusterBuildError> {
        let mut carried = Vec::with_capacity(config.endpoints.len());
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| {
                let kept = previous.and_then(|p| {
                    p.endpoints
                        .iter()
                        .position(|old| old.is_same(e))
                        .map(|i| (i, &p.endpoints[i]))
                });
                carried.push(kept.map(|(i, _)| i));
                match kept {
                    Some((_, old)) => Arc::clone(old),
                    None => Arc::new(Endpoint::new(config, e, registry, previous.is_some())),
                }
            })
            .collect::<Vec<_>>();
        // Kept endpoints take the new settings only when the snapshot goes into force
        // ([`Cluster::adopt_endpoints`]); the picker already uses the new weights.
        let weights: Vec<u32> = endpoints
            .iter()
            .zip(&config.endpoints)
            .map(|(e, c)| e.weight_given(c.weight))
            .collect();
        let picker = build_picker(config, &endpoints, &weights)?;
        let outlier_config = config.outlier.as_ref().map(outlier_config);
        // Without outlier detection the SPEC default threshold still guards against a
        // cluster whose active checks fail nearly everywhere.
        let panic_threshold = outlier_config.map_or(50, |c| c.panic_threshold);
        let outlier = outlier_config.map(|c| {
            let mut detector = OutlierDetector::new(c, endpoints.len());
            if let Some(old) = previous.and_then(|p| p.outlier.as_ref()) {
                detector.carry_from(&old.lock().unwrap_or_else(|p| p.into_inner()), &carried);
            }
            Mutex::new(detector)
        });
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
        let cluster = Cluster {
            config: config.clone(),
            endpoints,
            picker: ArcSwap::from_pointee(picker),
            outlier,
            in_panic: AtomicBool::new(false),
            panic_threshold,
        };
        cluster.refresh(clock::now());
        Ok(cluster)
    }

    /// Sets endpoint `index`'s operator weight (SPEC 3.1) and rebuilds the picker with the
    /// weights now in force.
    pub fn set_operator_weight(&self, index: usize, weight: u32) -> Result<(), ClusterBuildError> {
        let Some(endpoint) = self.endpoints.get(index) else {
            return Ok(());
        };
        if endpoint.set_operator_weight(weight) {
            let weights: Vec<u32> = self.endpoints.iter().map(|e| e.weight()).collect();
            self.picker.store(Arc::new(build_picker(
                &self.config,
                &self.endpoints,
                &weights,
            )?));
        }
        self.refresh(clock::now());
        Ok(())
    }

    /// Hands the new configuration's settings to kept endpoints (weight, slow start, whether
    /// checks exist); called when the snapshot holding this cluster goes into force.
    pub fn adopt_endpoints(&self) {
        for (endpoint, config) in self.endpoints.iter().zip(&self.config.endpoints) {
            endpoint.adopt(&self.config, config);
        }
        self.refresh(clock::now());
    }

    /// Marks every endpoint of this (replaced) cluster that `successor` does not keep as
    /// draining: requests still running on the old snapshot finish (for at most the
    /// cluster's `drain_timeout`), retries avoid them. Returns the endpoints drained, for
    /// the caller to cut when their time is up.
    pub fn drain_removed(&self, successor: Option<&Cluster>) -> Vec<Arc<Endpoint>> {
        let now = clock::now();
        let mut drained = Vec::new();
        for endpoint in &self.endpoints {
            let kept =
                successor.is_some_and(|s| s.endpoints.iter().any(|e| Arc::ptr_eq(e, endpoint)));
            if !kept {
                endpoint.set_draining(true, now);
                endpoint.publish_state(now);
                drained.push(Arc::clone(endpoint));
            }
        }
        drained
    }

    /// Cuts the exchanges still running on endpoints that have been draining for the
    /// cluster's `drain_timeout` (run once a second).
    pub fn cut_expired_drains(&self, now: u64) {
        for endpoint in &self.endpoints {
            endpoint.cut_if_due(now);
        }
    }

    /// Recomputes panic mode and publishes every endpoint's state gauges. Runs after every
    /// state change and once a second (ejections end and ramps finish by the clock).
    pub fn refresh(&self, now: u64) {
        let usable = self
            .endpoints
            .iter()
            .filter(|e| e.weight() > 0 && e.state_at(now).is_usable())
            .count();
        let weighted = self.endpoints.iter().filter(|e| e.weight() > 0).count();
        let panic = outlier::in_panic(usable, weighted, self.panic_threshold);
        let was = self.in_panic.swap(panic, Ordering::Relaxed);
        if panic != was {
            if panic {
                warn!(
                    cluster = self.name(),
                    usable,
                    total = weighted,
                    "panic mode: balancing over every endpoint not draining"
                );
            } else {
                info!(
                    cluster = self.name(),
                    usable,
                    total = weighted,
                    "panic mode over"
                );
            }
        }
        for endpoint in &self.endpoints {
            endpoint.publish_state(now);
        }
    }

    /// Whether the cluster is in panic mode (SPEC 3.1 `panic_threshold`).
    pub fn in_panic(&self) -> bool {
        self.in_panic.load(Ordering::Relaxed)
    }

    /// Feeds the outcome of one attempt on endpoint `index` to passive outlier detection;
    /// an ejection it causes takes effect for the next pick.
    pub fn record_outcome(&self, index: usize, outcome: Outcome, now: u64) {
        let Some(detector) = &self.outlier else {
            return;
        };
        let ejection = {
            let mut detector = detector.lock().unwrap_or_else(|p| p.into_inner());
            detector.expire(now);
            detector.record(index, outcome, now)
        };
        if let Some(ejection) = ejection {
            self.apply_ejection(ejection, now);
        }
    }

    /// The periodic part of passive detection: expired ejections are forgotten and, with
    /// `latency_factor`, endpoints far slower than the cluster's median are ejected.
    pub fn check_outliers(&self, now: u64) {
        if let Some(detector) = &self.outlier {
            let ejections = {
                let mut detector = detector.lock().unwrap_or_else(|p| p.into_inner());
                detector.expire(now);
                let latency: Vec<f64> = self
                    .endpoints
                    .iter()
                    .map(|e| {
                        if e.state_at(now).is_usable() {
                            e.latency_estimate_ns(now)
                        } else {
                            0.0
                        }
                    })
                    .collect();
                detector.check_latency(&latency, now)
            };
            for ejection in ejections {
                self.apply_ejection(ejection, now);
            }
        }
        self.refresh(now);
    }

    fn apply_ejection(&self, ejection: outlier::Ejection, now: u64) {
        let Some(endpoint) = self.endpoints.get(ejection.index) else {
            return;
        };
        let reason = ejection.reason.as_str();
        endpoint.eject(ejection.until, reason);
        warn!(
            cluster = self.name(),
            endpoint = %endpoint.name,
            reason,
            nth = ejection.nth,
            seconds = Duration::from_nanos(ejection.until.saturating_sub(now)).as_secs_f64(),
            "endpoint ejected"
        );
        self.refresh(now);
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
                    let now = clock::now();
                    endpoint.record_success(started.elapsed(), now);
                    self.record_outcome(index, Outcome::Success, now);
                    return Some((connection, in_flight));
                }
                Err((failure, error)) => {
                    debug!(cluster = self.name(), endpoint = %endpoint.name, %error, "connect failed");
                    let now = clock::now();
                    endpoint.record_connect_failure(failure, now);
                    self.record_outcome(index, Outcome::GatewayFailure, now);
                }
            }
            tried.push(index);
        }
        None
    }

    /// Picks an eligible endpoint not in `exclude` (the ones a connect already failed on).
    pub fn pick(&self, key: Option<u64>, exclude: &[usize]) -> Option<(usize, &Arc<Endpoint>)> {
        self.pick_at(key, exclude, clock::now())
    }

    /// [`Cluster::pick`] with the time already read (nanoseconds, [`clock::now`]).
    pub fn pick_at(
        &self,
        key: Option<u64>,
        exclude: &[usize],
        now: u64,
    ) -> Option<(usize, &Arc<Endpoint>)> {
        let load = Load {
            endpoints: &self.endpoints,
            now,
            in_panic: self.in_panic(),
        };
        let picker = self.picker.load();
        let index = rng::with_rng(|rng| picker.pick_excluding(key, &load, rng, exclude))?;
        self.endpoints.get(index).map(|e| (index, e))
    }
}

/// The picker over `endpoints` with `weights` (the configured or operator's of each).
fn build_picker(
    config: &model::Cluster,
    endpoints: &[Arc<Endpoint>],
    weights: &[u32],
) -> Result<Picker, ClusterBuildError> {
    let specs: Vec<EndpointSpec> = endpoints
        .iter()
        .zip(weights)
        .map(|(e, &w)| EndpointSpec::new(e.name.clone(), w))
        .collect();
    Picker::new(policy(config), &specs).map_err(|source| ClusterBuildError {
        cluster: config.name.clone(),
        source,
    })
}

/// The live numbers a picker reads.
struct Load<'a> {
    endpoints: &'a [Arc<Endpoint>],
    now: u64,
    in_panic: bool,
}

impl LoadView for Load<'_> {
    fn is_eligible(&self, i: usize) -> bool {
        self.endpoints[i].is_eligible_at(self.now, self.in_panic)
    }

    fn weight_factor(&self, i: usize) -> f64 {
        self.endpoints[i].weight_factor(self.now)
    }

    fn in_flight(&self, i: usize) -> u64 {
        self.endpoints[i].in_flight()
    }

    fn latency_cost(&self, i: usize) -> f64 {
        self.endpoints[i].latency_estimate_ns(self.now)
    }
}
