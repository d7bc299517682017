//! One endpoint's live state: what the picker reads and what the admin API reports.
//!
//! The state is kept as a few independent facts, each written by one party: the active
//! health checker writes `checked_healthy`, passive outlier detection writes
//! `ejected_until`, the operator (or a reload removing the endpoint) writes `draining`, and
//! whoever made the endpoint usable again writes `usable_since`. The SPEC's single state
//! word is resolved from them at read time ([`EndpointState::resolve`]), so an ejection
//! ends and a slow-start ramp finishes on time without any task having to flip a flag.
//!
//! An endpoint outlives the snapshot that created it: a reload that keeps an endpoint (same
//! cluster, name and address) hands the same `Arc<Endpoint>` to the new snapshot
//! ([`Endpoint::adopt`]), so its health, latency estimate, in-flight count, ejection, ramp
//! and the operator's drain and weight carry over without being copied.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use switchyard_algo::balance::{EwmaConfig, PeakEwma};
pub use switchyard_algo::health::EndpointState;
use switchyard_algo::health::slow_start_factor_at;

use super::drain_cut::DrainCut;
use crate::admin::metrics::{self, Counter, Gauge, Registry};
use crate::config::model;

/// Why an upstream connect failed, as the `reason` label spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The endpoint answered with a reset.
    Refused,
    /// No answer within `connect_timeout`.
    Timeout,
    /// Anything else (unreachable, no buffer space, ...).
    Other,
}

impl ConnectFailure {
    /// The class of a failed connect's error (a refusal is the endpoint's own answer).
    pub fn of(error: &std::io::Error) -> ConnectFailure {
        if error.kind() == std::io::ErrorKind::ConnectionRefused {
            ConnectFailure::Refused
        } else {
            ConnectFailure::Other
        }
    }

    const ALL: [ConnectFailure; 3] = [
        ConnectFailure::Refused,
        ConnectFailure::Timeout,
        ConnectFailure::Other,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::Other => "other",
        }
    }
}

#[derive(Debug)]
struct EndpointMetrics {
    in_flight: Gauge,
    states: [Gauge; 5],
    connect_errors: [Counter; 3],
    ejections: [Counter; 4],
}

/// `ejections_total`'s reasons, in the algorithms crate's spelling.
const EJECTION_REASONS: [&str; 4] = [
    "consecutive_5xx",
    "gateway_failures",
    "error_rate",
    "latency",
];

/// `operator_weight` when the operator has not set one.
const NO_OPERATOR_WEIGHT: u32 = u32::MAX;

/// One backend address of a cluster with its live state.
#[derive(Debug)]
pub struct Endpoint {
    /// The endpoint's name (the configured key, else `ip:port`).
    pub name: String,
    /// Where to connect.
    pub address: SocketAddr,
    /// The configured weight (the last configuration that kept the endpoint).
    configured_weight: AtomicU32,
    /// The operator's weight (admin API), [`NO_OPERATOR_WEIGHT`] when not set.
    operator_weight: AtomicU32,
    in_flight: AtomicU32,
    latency: Mutex<PeakEwma>,
    attempts: AtomicU64,
    failures: AtomicU64,
    liveness: Liveness,
    /// Ends the exchanges still running `drain_timeout` after a drain began.
    drain: Arc<DrainCut>,
    metrics: EndpointMetrics,
}

/// The facts the state word is resolved from (module docs).
#[derive(Debug)]
struct Liveness {
    /// The active checks' verdict (true when the cluster has no active checks).
    checked_healthy: AtomicBool,
    /// Ejected until this instant (process nanoseconds); 0 when never ejected.
    ejected_until: AtomicU64,
    /// Ejections so far (the admin API's `ejections`).
    ejections: AtomicU32,
    /// Operator or reload drain.
    draining: AtomicBool,
    /// When the current drain began (process nanoseconds).
    draining_since: AtomicU64,
    /// The cluster's `drain_timeout`, in nanoseconds.
    drain_timeout_ns: AtomicU64,
    /// When the endpoint last became usable, for the slow-start ramp; 0 = no ramp.
    usable_since: AtomicU64,
    /// The cluster's `slow_start` window, in nanoseconds.
    slow_start_ns: AtomicU64,
    /// Whether the active checks ever admitted it (a later pass is then a recovery).
    admitted: AtomicBool,
    /// Added while the balancer was running (reload, DNS): its first admission ramps too.
    joined_running: bool,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Endpoint {
    /// A new endpoint of `cluster`, with its metric series created at zero. With active
    /// checks it starts `unhealthy` until the first one passes; without, `healthy`. One
    /// that `joins_running` (added by a reload or DNS, not present at start-up) slow-starts
    /// from the moment it becomes usable; at start-up every endpoint starts together.
    pub fn new(
        cluster: &model::Cluster,
        config: &model::Endpoint,
        registry: &Registry,
        joins_running: bool,
    ) -> Endpoint {
        let checked = cluster.health.is_none();
        let slow_start = nanos(cluster.slow_start);
        let drain_timeout = nanos(cluster.drain_timeout);
        let now = crate::runtime::clock::now();
        let usable_since = if joins_running && checked {
            now.max(1)
        } else {
            0
        };
        let cluster = cluster.name.as_str();
        let labels = [cluster, config.name.as_str()];
        let states = EndpointState::ALL.map(|state| {
            registry.gauge(
                &metrics::ENDPOINT_STATE,
                &[cluster, config.name.as_str(), state.as_str()],
            )
        });
        let connect_errors = ConnectFailure::ALL.map(|reason| {
            registry.counter(
                &metrics::UPSTREAM_CONNECT_ERRORS_TOTAL,
                &[cluster, config.name.as_str(), reason.as_str()],
            )
        });
        let ejections = EJECTION_REASONS.map(|reason| {
            registry.counter(&metrics::EJECTIONS_TOTAL, &[cluster, &config.name, reason])
        });
        registry.histogram(&metrics::UPSTREAM_REQUEST_DURATION_SECONDS, &labels);
        let endpoint = Endpoint {
            name: config.name.clone(),
            address: config.address,
            configured_weight: AtomicU32::new(config.weight),
            operator_weight: AtomicU32::new(NO_OPERATOR_WEIGHT),
            in_flight: AtomicU32::new(0),
            latency: Mutex::new(PeakEwma::new(&EwmaConfig::default())),
            attempts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            liveness: Liveness {
                checked_healthy: AtomicBool::new(checked),
                ejected_until: AtomicU64::new(0),
                ejections: AtomicU32::new(0),
                draining: AtomicBool::new(false),
                draining_since: AtomicU64::new(0),
                drain_timeout_ns: AtomicU64::new(drain_timeout),
                usable_since: AtomicU64::new(usable_since),
                slow_start_ns: AtomicU64::new(slow_start),
                admitted: AtomicBool::new(checked),
                joined_running: joins_running,
            },
            drain: Arc::default(),
            metrics: EndpointMetrics {
                in_flight: registry.gauge(&metrics::ENDPOINT_IN_FLIGHT, &labels),
                states,
                connect_errors,
                ejections,
            },
        };
        endpoint.publish_state(now);
        endpoint
    }

    /// Whether a reload's `config` of `cluster` describes this same endpoint (same name
    /// and address), so its live state carries over.
    pub fn is_same(&self, config: &model::Endpoint) -> bool {
        self.name == config.name && self.address == config.address
    }

    /// Takes the settings a reload may change (configured weight, slow-start window, whether
    /// active checks exist) from the new configuration; the live state stays.
    pub fn adopt(&self, cluster: &model::Cluster, config: &model::Endpoint) {
        let l = &self.liveness;
        self.configured_weight
            .store(config.weight, Ordering::Relaxed);
        l.slow_start_ns
            .store(nanos(cluster.slow_start), Ordering::Relaxed);
        l.drain_timeout_ns
            .store(nanos(cluster.drain_timeout), Ordering::Relaxed);
        if cluster.health.is_none() {
            // Checks were removed: nothing will ever admit it, so passive detection decides.
            l.checked_healthy.store(true, Ordering::Relaxed);
            l.admitted.store(true, Ordering::Relaxed);
        }
    }

    /// The weight in force: the operator's if set, else the configured one.
    pub fn weight(&self) -> u32 {
        self.weight_given(self.configured_weight())
    }

    /// The weight in force if `configured` were the configured weight (the operator's
    /// weight wins).
    pub fn weight_given(&self, configured: u32) -> u32 {
        match self.operator_weight.load(Ordering::Relaxed) {
            NO_OPERATOR_WEIGHT => configured,
            operator => operator,
        }
    }

    /// The configured weight.
    pub fn configured_weight(&self) -> u32 {
        self.configured_weight.load(Ordering::Relaxed)
    }

    /// Whether the operator's weight is in force.
    pub fn has_operator_weight(&self) -> bool {
        self.operator_weight.load(Ordering::Relaxed) != NO_OPERATOR_WEIGHT
    }

    /// Sets the operator's weight (SPEC 3.1): setting the configured weight again clears
    /// the override. Returns whether the weight in force changed.
    pub fn set_operator_weight(&self, weight: u32) -> bool {
        let before = self.weight();
        let value = if weight == self.configured_weight() {
            NO_OPERATOR_WEIGHT
        } else {
            weight
        };
        self.operator_weight.store(value, Ordering::Relaxed);
        before != self.weight()
    }
    /// The endpoint's state at `now` (SPEC precedence: draining > unhealthy > ejected >
    /// slow-starting > healthy).
    pub fn state_at(&self, now: u64) -> EndpointState {
        let l = &self.liveness;
        EndpointState::resolve(
            l.draining.load(Ordering::Relaxed),
            l.checked_healthy.load(Ordering::Relaxed),
            self.is_ejected(now),
            self.weight_factor(now) < 1.0,
        )
    }

    /// The endpoint's state now.
    pub fn state(&self) -> EndpointState {
        self.state_at(crate::runtime::clock::now())
    }

    /// Sets the `endpoint_state` gauges to the state at `now`.
    pub fn publish_state(&self, now: u64) {
        let current = self.state_at(now);
        for (gauge, state) in self.metrics.states.iter().zip(EndpointState::ALL) {
            gauge.set(i64::from(state == current));
        }
    }

    /// Whether a new request or connection may go here at `now`; in panic mode (SPEC 3.1)
    /// every endpoint that is not draining may.
    pub fn is_eligible_at(&self, now: u64, in_panic: bool) -> bool {
        self.weight() > 0 && self.state_at(now).is_eligible(in_panic)
    }

    /// Whether passive outlier detection holds the endpoint out at `now`.
    pub fn is_ejected(&self, now: u64) -> bool {
        now < self.liveness.ejected_until.load(Ordering::Relaxed)
    }

    /// Until when the endpoint is ejected (process nanoseconds), if it is at `now`.
    pub fn ejected_until(&self, now: u64) -> Option<u64> {
        let until = self.liveness.ejected_until.load(Ordering::Relaxed);
        (now < until).then_some(until)
    }

    /// Ejections so far.
    pub fn ejections(&self) -> u32 {
        self.liveness.ejections.load(Ordering::Relaxed)
    }

    /// The slow-start multiplier of the weight at `now`: 0.1 rising linearly to 1 over the
    /// cluster's `slow_start` after the endpoint last became usable.
    pub fn weight_factor(&self, now: u64) -> f64 {
        let since = self.liveness.usable_since.load(Ordering::Relaxed);
        if since == 0 || now < since {
            return 1.0;
        }
        let window = Duration::from_nanos(self.liveness.slow_start_ns.load(Ordering::Relaxed));
        slow_start_factor_at(since, now, window)
    }

    /// Holds the endpoint out until `until` for `reason`; its slow-start ramp begins when
    /// the ejection ends.
    pub fn eject(&self, until: u64, reason: &str) {
        let l = &self.liveness;
        l.ejected_until.store(until, Ordering::Relaxed);
        l.usable_since.store(until.max(1), Ordering::Relaxed);
        l.ejections.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = EJECTION_REASONS.iter().position(|r| *r == reason) {
            self.metrics.ejections[slot].inc();
        }
    }

    /// The active checks' verdict changed (or was first given). A return to health starts
    /// the slow-start ramp at `now`; the first admission of an endpoint present since
    /// start-up does not, since every endpoint starts together.
    pub fn set_checked_healthy(&self, healthy: bool, now: u64) {
        let l = &self.liveness;
        let was = l.checked_healthy.swap(healthy, Ordering::Relaxed);
        if healthy {
            let admitted_before = l.admitted.swap(true, Ordering::Relaxed);
            if !was && (admitted_before || l.joined_running) {
                l.usable_since.store(now.max(1), Ordering::Relaxed);
            }
        }
    }

    /// Whether the active checks ever admitted it (then thresholds rule its changes).
    pub fn was_admitted(&self) -> bool {
        self.liveness.admitted.load(Ordering::Relaxed)
    }

    /// Whether the active checks pass (true without active checks).
    pub fn is_checked_healthy(&self) -> bool {
        self.liveness.checked_healthy.load(Ordering::Relaxed)
    }

    /// Sets or clears the drain flag; an undrained endpoint slow-starts from `now`.
    pub fn set_draining(&self, draining: bool, now: u64) {
        let l = &self.liveness;
        let was = l.draining.swap(draining, Ordering::Relaxed);
        if was && !draining {
            l.usable_since.store(now.max(1), Ordering::Relaxed);
            self.drain.reset();
        }
        if draining && !was {
            l.draining_since.store(now, Ordering::Relaxed);
            self.drain.reset();
        }
    }

    /// The cluster's `drain_timeout`: how long exchanges may run on after a drain began.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_nanos(self.liveness.drain_timeout_ns.load(Ordering::Relaxed))
    }

    /// Cuts the exchanges still running if the endpoint has been draining for its
    /// `drain_timeout` at `now`; true when this call cut them.
    pub fn cut_if_due(&self, now: u64) -> bool {
        let l = &self.liveness;
        if !self.is_draining() || self.drain.is_cut() {
            return false;
        }
        let since = l.draining_since.load(Ordering::Relaxed);
        let timeout = l.drain_timeout_ns.load(Ordering::Relaxed);
        if now.saturating_sub(since) < timeout {
            return false;
        }
        let cut = self.drain.fire();
        if cut {
            tracing::info!(endpoint = %self.name, "drain_timeout passed; cutting the exchanges still running");
        }
        cut
    }

    /// The signal that ends this endpoint's running exchanges when its drain runs out.
    pub fn drain_cut(&self) -> Arc<DrainCut> {
        Arc::clone(&self.drain)
    }

    /// Whether the endpoint is draining.
    pub fn is_draining(&self) -> bool {
        self.liveness.draining.load(Ordering::Relaxed)
    }

    /// Requests or connections on the endpoint now.
    pub fn in_flight(&self) -> u64 {
        u64::from(self.in_flight.load(Ordering::Relaxed))
    }

    /// Counts one more request or connection until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight.inc();
        InFlight {
            endpoint: Arc::clone(self),
        }
    }

    /// The latency estimate at `now`, in nanoseconds.
    pub fn latency_estimate_ns(&self, now: u64) -> f64 {
        self.latency_lock().cost(now)
    }

    /// Records a successful attempt that took `latency` (L4: the connect time).
    pub fn record_success(&self, latency: Duration, now: u64) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let sample = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_lock().observe(sample, now);
    }

    /// Records a failed connect.
    pub fn record_connect_failure(&self, failure: ConnectFailure, now: u64) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.latency_lock().observe_failure(now);
        let slot = ConnectFailure::ALL
            .iter()
            .position(|f| *f == failure)
            .unwrap_or(2);
        self.metrics.connect_errors[slot].inc();
    }

    /// Records an attempt that failed after it was sent (reset, timeout).
    pub fn record_failure(&self, now: u64) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.latency_lock().observe_failure(now);
    }

    /// Share of attempts that succeeded, `None` before the first.
    pub fn success_rate(&self) -> Option<f64> {
        let attempts = self.attempts.load(Ordering::Relaxed);
        let failures = self.failures.load(Ordering::Relaxed);
        (attempts > 0).then(|| (attempts - failures.min(attempts)) as f64 / attempts as f64)
    }

    fn latency_lock(&self) -> std::sync::MutexGuard<'_, PeakEwma> {
        self.latency
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One request or connection on an endpoint; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
}

impl InFlight {
    /// The endpoint this counts against.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.endpoint.metrics.in_flight.dec();
    }
}
