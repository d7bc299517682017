//! The shared fault state of one backend and the seeded sampling of faults.
//!
//! Tests, drills and the `/control` endpoint change faults while traffic flows, so the state
//! lives behind an [`ArcSwap`] (one lock-free load per request) and writes are serialised by a
//! mutex. Randomness comes from one seeded [`StdRng`]: the same seed and the same sequence of
//! requests give the same sequence of injected faults.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::units::{format_duration, parse_duration};

/// How long the backend waits before answering real traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// Always the same delay (`"5ms"`; `"0ms"` means none).
    Fixed(Duration),
    /// A delay drawn uniformly from `min..=max` for each request (`"5ms..50ms"`).
    Uniform {
        /// Shortest delay.
        min: Duration,
        /// Longest delay.
        max: Duration,
    },
}

impl Default for Latency {
    fn default() -> Self {
        Self::Fixed(Duration::ZERO)
    }
}

impl Latency {
    /// Parses `"5ms"` or `"5ms..50ms"` (a uniform range; `min` must not exceed `max`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once("..") {
            None => parse_duration(s.trim())
                .map(Self::Fixed)
                .map_err(|e| e.to_string()),
            Some((lo, hi)) => {
                let min = parse_duration(lo.trim()).map_err(|e| e.to_string())?;
                let max = parse_duration(hi.trim()).map_err(|e| e.to_string())?;
                Self::range(min, max)
            }
        }
    }

    /// A uniform range, rejecting `min > max`.
    pub fn range(min: Duration, max: Duration) -> Result<Self, String> {
        if min > max {
            return Err(format!(
                "latency range {}..{} has min above max",
                format_duration(min),
                format_duration(max)
            ));
        }
        Ok(Self::Uniform { min, max })
    }

    /// The JSON form used by `/control`: `"5ms"` or `{"min":"5ms","max":"50ms"}`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Fixed(d) => serde_json::Value::String(format_duration(*d)),
            Self::Uniform { min, max } => serde_json::json!({
                "min": format_duration(*min),
                "max": format_duration(*max),
            }),
        }
    }

    fn sample(&self, rng: &mut StdRng) -> Duration {
        match *self {
            Self::Fixed(d) => d,
            Self::Uniform { min, max } if min == max => min,
            Self::Uniform { min, max } => {
                let span = max.saturating_sub(min).as_nanos();
                let span = u64::try_from(span).unwrap_or(u64::MAX);
                min + Duration::from_nanos(rng.random_range(0..=span))
            }
        }
    }

    fn sample_fixed(&self) -> Duration {
        match *self {
            Self::Fixed(d) => d,
            Self::Uniform { min, .. } => min,
        }
    }

    fn needs_rng(&self) -> bool {
        matches!(self, Self::Uniform { min, max } if min != max)
    }
}

/// Every fault knob of a backend; `/control` reads and writes exactly these fields.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultState {
    /// Delay before answering (default none).
    pub latency: Latency,
    /// Share of requests (0-1) answered with `error_status` (default 0).
    pub error_rate: f64,
    /// Status of an injected error (default 503; out-of-range values answer 500).
    pub error_status: u16,
    /// Share of requests (0-1) whose connection is reset without a response (default 0).
    pub reset_rate: f64,
    /// Status of `/healthz` (default 200).
    pub healthz_status: u16,
    /// Whether `grpc.health.v1.Health/Check` answers SERVING (default true).
    pub grpc_serving: bool,
    /// Per-service overrides of `grpc_serving`, by the service name in the request.
    pub grpc_services: BTreeMap<String, bool>,
    /// Delay between a response's head and its body (slow body; default none).
    pub body_delay: Duration,
    /// Whether latency, errors and resets also hit `/healthz` and gRPC health (default false).
    pub apply_to_healthz: bool,
}

impl Default for FaultState {
    fn default() -> Self {
        Self {
            latency: Latency::default(),
            error_rate: 0.0,
            error_status: 503,
            reset_rate: 0.0,
            healthz_status: 200,
            grpc_serving: true,
            grpc_services: BTreeMap::new(),
            body_delay: Duration::ZERO,
            apply_to_healthz: false,
        }
    }
}

impl FaultState {
    fn normalise(&mut self) {
        let clamp = |r: f64| if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        self.error_rate = clamp(self.error_rate);
        self.reset_rate = clamp(self.reset_rate);
        if let Latency::Uniform { min, max } = self.latency {
            if min > max {
                self.latency = Latency::Uniform { min: max, max: min };
            }
        }
    }

    /// Whether gRPC health answers SERVING for `service` (`""` is the whole server).
    pub fn grpc_serving_for(&self, service: &str) -> bool {
        self.grpc_services
            .get(service)
            .copied()
            .unwrap_or(self.grpc_serving)
    }
}

/// What the sampler decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Wait this long before anything else.
    pub(crate) latency: Duration,
    /// Reset the connection instead of answering.
    pub(crate) reset: bool,
    /// Answer with this error status instead of the real response.
    pub(crate) error: Option<u16>,
    /// Delay the body by this much.
    pub(crate) body_delay: Duration,
}

/// A point-in-time copy of the fault state and the counters, as `GET /control` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlSnapshot {
    /// The backend's name.
    pub name: String,
    /// The fault knobs.
    pub faults: FaultState,
    /// Real requests received (not `/control`, not health checks), including faulted ones.
    pub requests: u64,
    /// `/healthz` and gRPC health checks received.
    pub healthz_requests: u64,
    /// Requests answered with an injected error status.
    pub errors_injected: u64,
    /// Connections reset by an injected fault.
    pub resets_injected: u64,
    /// Connections accepted (TCP) since start.
    pub connections: u64,
}

impl ControlSnapshot {
    /// The JSON body of `GET /control` and `PUT /control`.
    pub fn to_json(&self) -> serde_json::Value {
        let f = &self.faults;
        serde_json::json!({
            "name": self.name,
            "latency": f.latency.to_json(),
            "error_rate": f.error_rate,
            "error_status": f.error_status,
            "reset_rate": f.reset_rate,
            "healthz_status": f.healthz_status,
            "grpc_serving": f.grpc_serving,
            "grpc_services": f.grpc_services,
            "body_delay": format_duration(f.body_delay),
            "apply_to_healthz": f.apply_to_healthz,
            "requests": self.requests,
            "healthz_requests": self.healthz_requests,
            "errors_injected": self.errors_injected,
            "resets_injected": self.resets_injected,
            "connections": self.connections,
        })
    }
}

struct Inner {
    name: String,
    state: ArcSwap<FaultState>,
    write: Mutex<()>,
    rng: Mutex<StdRng>,
    requests: AtomicU64,
    healthz_requests: AtomicU64,
    errors_injected: AtomicU64,
    resets_injected: AtomicU64,
    connections: AtomicU64,
}

/// A cheap, cloneable handle on a backend's fault state and counters.
///
/// Changes take effect for the next request on every connection.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("name", &self.inner.name)
            .field("faults", &*self.inner.state.load())
            .finish_non_exhaustive()
    }
}

impl Control {
    /// A control block named `name` with `faults`, sampling from `seed` (or the OS when `None`).
    pub fn new(name: String, faults: FaultState, seed: Option<u64>) -> Self {
        let mut faults = faults;
        faults.normalise();
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self {
            inner: Arc::new(Inner {
                name,
                state: ArcSwap::from_pointee(faults),
                write: Mutex::new(()),
                rng: Mutex::new(rng),
                requests: AtomicU64::new(0),
                healthz_requests: AtomicU64::new(0),
                errors_injected: AtomicU64::new(0),
                resets_injected: AtomicU64::new(0),
                connections: AtomicU64::new(0),
            }),
        }
    }

    /// The backend's name (the `x-backend` header).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The current fault state.
    pub fn faults(&self) -> FaultState {
        FaultState::clone(&self.inner.state.load())
    }

    pub(crate) fn faults_arc(&self) -> Arc<FaultState> {
        self.inner.state.load_full()
    }

    /// Changes the fault state in place and returns the result; rates are clamped to 0-1 and a
    /// latency range with `min > max` is swapped.
    ///
    /// `control.set(|f| f.error_rate = 1.0)` makes every real request fail.
    pub fn set(&self, change: impl FnOnce(&mut FaultState)) -> FaultState {
        let _guard = self
            .inner
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = self.faults();
        change(&mut next);
        next.normalise();
        self.inner.state.store(Arc::new(next.clone()));
        next
    }

    /// Replaces the whole fault state.
    pub fn replace(&self, faults: FaultState) -> FaultState {
        self.set(|f| *f = faults)
    }

    /// Like [`Control::set`], but the change may be refused; nothing changes on an error.
    pub(crate) fn try_set<E>(
        &self,
        change: impl FnOnce(FaultState) -> Result<FaultState, E>,
    ) -> Result<FaultState, E> {
        let _guard = self
            .inner
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = change(self.faults())?;
        next.normalise();
        self.inner.state.store(Arc::new(next.clone()));
        Ok(next)
    }

    /// Real requests received so far (not `/control`, not health checks).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// `/healthz` and gRPC health checks received so far.
    pub fn healthz_requests(&self) -> u64 {
        self.inner.healthz_requests.load(Ordering::Relaxed)
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        for c in [
            &self.inner.requests,
            &self.inner.healthz_requests,
            &self.inner.errors_injected,
            &self.inner.resets_injected,
            &self.inner.connections,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// State and counters together, as `GET /control` reports them.
    pub fn snapshot(&self) -> ControlSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ControlSnapshot {
            name: self.inner.name.clone(),
            faults: self.faults(),
            requests: load(&self.inner.requests),
            healthz_requests: load(&self.inner.healthz_requests),
            errors_injected: load(&self.inner.errors_injected),
            resets_injected: load(&self.inner.resets_injected),
            connections: load(&self.inner.connections),
        }
    }

    pub(crate) fn count_connection(&self) {
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request and samples its faults. `health` marks `/healthz` and gRPC health,
    /// which are spared unless `apply_to_healthz` is set.
    pub(crate) fn decide(&self, health: bool) -> Decision {
        let counter = if health {
            &self.inner.healthz_requests
        } else {
            &self.inner.requests
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let f = self.inner.state.load();
        let none = Decision {
            latency: Duration::ZERO,
            reset: false,
            error: None,
            body_delay: f.body_delay,
        };
        if health && !f.apply_to_healthz {
            return Decision {
                body_delay: Duration::ZERO,
                ..none
            };
        }
        let random = |rate: f64| rate > 0.0 && rate < 1.0;
        let mut decision = none;
        if f.latency.needs_rng() || random(f.reset_rate) || random(f.error_rate) {
            // One lock per request, and only when something is random; the order of draws is
            // fixed so that a seed reproduces the same sequence.
            let mut rng = self
                .inner
                .rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            decision.latency = f.latency.sample(&mut rng);
            decision.reset = draw(&mut rng, f.reset_rate);
            decision.error = draw(&mut rng, f.error_rate).then_some(f.error_status);
        } else {
            decision.latency = f.latency.sample_fixed();
            decision.reset = f.reset_rate >= 1.0;
            decision.error = (f.error_rate >= 1.0).then_some(f.error_status);
        }
        if decision.reset {
            decision.error = None;
            self.inner.resets_injected.fetch_add(1, Ordering::Relaxed);
        } else if decision.error.is_some() {
            self.inner.errors_injected.fetch_add(1, Ordering::Relaxed);
        }
        decision
    }
}

fn draw(rng: &mut StdRng, rate: f64) -> bool {
    if rate <= 0.0 {
        false
    } else if rate >= 1.0 {
        true
    } else {
        rng.random_bool(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_parses_fixed_and_ranges() {
        assert_eq!(
            Latency::parse("5ms"),
            Ok(Latency::Fixed(Duration::from_millis(5)))
        );
        assert_eq!(
            Latency::parse("5ms..50ms"),
            Ok(Latency::Uniform {
                min: Duration::from_millis(5),
                max: Duration::from_millis(50)
            })
        );
        assert!(Latency::parse("50ms..5ms").is_err());
        assert!(Latency::parse("5").is_err());
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let faults = FaultState {
            error_rate: 0.5,
            latency: Latency::Uniform {
                min: Duration::ZERO,
                max: Duration::from_millis(10),
            },
            ..FaultState::default()
        };
        let a = Control::new("a".into(), faults.clone(), Some(7));
        let b = Control::new("b".into(), faults, Some(7));
        let run = |c: &Control| (0..100).map(|_| c.decide(false)).collect::<Vec<_>>();
        let (ra, rb) = (run(&a), run(&b));
        assert_eq!(ra, rb);
        assert!(ra.iter().any(|d| d.error.is_some()));
        assert!(ra.iter().any(|d| d.error.is_none()));
        assert_eq!(a.requests(), 100);
    }

    #[test]
    fn health_checks_are_spared_unless_asked() {
        let c = Control::new(
            "c".into(),
            FaultState {
                error_rate: 1.0,
                ..FaultState::default()
            },
            Some(1),
        );
        assert_eq!(c.decide(true).error, None);
        assert_eq!(c.decide(false).error, Some(503));
        c.set(|f| f.apply_to_healthz = true);
        assert_eq!(c.decide(true).error, Some(503));
        assert_eq!(c.healthz_requests(), 2);
        assert_eq!(c.requests(), 1);
    }
}
