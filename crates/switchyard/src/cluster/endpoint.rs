//! One endpoint's live state: what the picker reads and what the admin API reports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use switchyard_algo::balance::{EwmaConfig, PeakEwma};
pub use switchyard_algo::health::EndpointState;

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
}

/// One backend address of a cluster with its live state.
#[derive(Debug)]
pub struct Endpoint {
    /// The endpoint's name (the configured key, else `ip:port`).
    pub name: String,
    /// Where to connect.
    pub address: SocketAddr,
    /// The configured weight.
    pub weight: u32,
    in_flight: AtomicU32,
    latency: Mutex<PeakEwma>,
    attempts: AtomicU64,
    failures: AtomicU64,
    metrics: EndpointMetrics,
}

impl Endpoint {
    /// A new endpoint of `cluster`, with its metric series created at zero.
    pub fn new(cluster: &str, config: &model::Endpoint, registry: &Registry) -> Endpoint {
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
        for reason in [
            "consecutive_5xx",
            "gateway_failures",
            "error_rate",
            "latency",
        ] {
            registry.counter(&metrics::EJECTIONS_TOTAL, &[cluster, &config.name, reason]);
        }
        registry.histogram(&metrics::UPSTREAM_REQUEST_DURATION_SECONDS, &labels);
        let endpoint = Endpoint {
            name: config.name.clone(),
            address: config.address,
            weight: config.weight,
            in_flight: AtomicU32::new(0),
            latency: Mutex::new(PeakEwma::new(&EwmaConfig::default())),
            attempts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            metrics: EndpointMetrics {
                in_flight: registry.gauge(&metrics::ENDPOINT_IN_FLIGHT, &labels),
                states,
                connect_errors,
            },
        };
        endpoint.publish_state();
        endpoint
    }

    /// The endpoint's state. Health checks, ejection and drain arrive with later issues;
    /// until then every configured endpoint is healthy and passive feedback acts through
    /// the latency estimate alone.
    pub fn state(&self) -> EndpointState {
        EndpointState::Healthy
    }

    fn publish_state(&self) {
        let current = self.state();
        for (gauge, state) in self.metrics.states.iter().zip(EndpointState::ALL) {
            gauge.set(i64::from(state == current));
        }
    }

    /// Whether a new request or connection may go here.
    pub fn is_eligible(&self) -> bool {
        self.weight > 0 && self.state().is_usable()
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
