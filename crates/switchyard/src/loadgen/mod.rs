//! `switchyard bench`: the load generator behind drills and benchmarks.
//!
//! A drill asks "what do clients see while this fault is on?", so the generator behaves
//! like a fleet of real clients rather than like a benchmark loop: open-loop arrivals at a
//! fixed rate (latency measured from the intended send time, so a stall is not hidden by
//! coordinated omission), a client timeout per attempt, client-side retries on timeouts,
//! connect errors, resets and 5xx, and a weighted request mix. A closed loop over N
//! workers is there too, for ceiling measurements. Everything is bounded: the run's
//! duration, the requests in flight, the connections, and the memory of the series
//! ([`stats`]).
//!
//! The library API is [`start`] (returns a [`Running`] that can be polled for progress)
//! and [`Running::finish`]; [`cli`] is the subcommand.

pub mod cli;
mod client;
mod mix;
mod schedule;
pub mod stats;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use client::{Protocol, Target, Trust};
pub use mix::{Mix, MixEntry};
pub use schedule::Schedule;
pub use stats::{Completion, ErrorKind, Recorder, SecondSummary, Summary};

use client::{Pool, Prepared};

/// The longest run accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// The highest open-loop rate accepted (well above what one machine can send).
pub const MAX_RATE: f64 = 1_000_000.0;

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// A fixed arrival rate (requests per second), whatever the answers do.
    Open {
        /// Requests per second.
        rate: f64,
    },
    /// `concurrency` workers, each sending its next request when the last one finished.
    Closed {
        /// Workers.
        concurrency: usize,
    },
}

/// Which failures a client retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryOn {
    /// Attempt timeouts.
    pub timeout: bool,
    /// Connect (and TLS) failures.
    pub connect: bool,
    /// Broken connections.
    pub reset: bool,
    /// Status 500-599.
    pub status_5xx: bool,
}

impl Default for RetryOn {
    fn default() -> Self {
        Self {
            timeout: true,
            connect: true,
            reset: true,
            status_5xx: true,
        }
    }
}

impl RetryOn {
    /// Parses a list of `timeout`, `connect`, `reset`, `5xx`.
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut on = Self {
            timeout: false,
            connect: false,
            reset: false,
            status_5xx: false,
        };
        for word in words {
            match word.trim() {
                "timeout" => on.timeout = true,
                "connect" | "connect-failure" => on.connect = true,
                "reset" => on.reset = true,
                "5xx" => on.status_5xx = true,
                "" => {}
                other => {
                    return Err(format!(
                        "unknown retry condition {other:?} (use timeout, connect, reset, 5xx)"
                    ));
                }
            }
        }
        Ok(on)
    }

    /// Whether `error` is retried.
    pub fn allows(&self, error: ErrorKind) -> bool {
        match error {
            ErrorKind::Timeout => self.timeout,
            ErrorKind::Connect => self.connect,
            ErrorKind::Reset => self.reset,
            ErrorKind::Status(s) => self.status_5xx && s >= 500,
            ErrorKind::Tls | ErrorKind::Overload => false,
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Where requests go.
    pub target: Target,
    /// HTTP version.
    pub protocol: Protocol,
    /// Certificate checks for `https://`.
    pub trust: Trust,
    /// Open or closed loop.
    pub mode: Mode,
    /// How long requests are sent (at most [`MAX_DURATION`]).
    pub duration: Duration,
    /// Per-attempt client timeout.
    pub timeout: Duration,
    /// Client retries after the first attempt.
    pub retries: u32,
    /// Which failures are retried.
    pub retry_on: RetryOn,
    /// Pause before each retry.
    pub retry_backoff: Duration,
    /// The request mix.
    pub mix: Mix,
    /// HTTP/1.1: the most connections open at once; HTTP/2: the connections multiplexed.
    pub connections: usize,
    /// Open loop: requests in flight past this are not sent and count as `overload`.
    pub max_in_flight: usize,
    /// Seed of the mix draws.
    pub seed: u64,
    /// Local address to connect from (loopback aliases such as 127.0.0.2 separate crowds).
    pub source: Option<std::net::IpAddr>,
    /// HTTP/1.1: keep connections open between requests (default); `false` opens one per
    /// attempt, like clients that churn connections.
    pub keepalive: bool,
}

impl LoadSpec {
    /// A spec with the defaults: one GET of the target's path, 10 s, HTTP/1.1, closed
    /// loop over 16 workers, 10 s timeout, no retries.
    pub fn new(target: Target) -> Self {
        let mix = Mix::new(vec![MixEntry::get(&target.path)]).unwrap_or_else(|| {
            Mix::new(vec![MixEntry::get("/")]).expect("one positive-weight entry")
        });
        Self {
            target,
            protocol: Protocol::Http1,
            trust: Trust::System,
            mode: Mode::Closed { concurrency: 16 },
            duration: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            retries: 0,
            retry_on: RetryOn::default(),
            retry_backoff: Duration::ZERO,
            mix,
            connections: 16,
            max_in_flight: 10_000,
            seed: 1,
            source: None,
            keepalive: true,
        }
    }

    /// The longest a logical request can live: every attempt timing out, plus backoffs.
    pub fn request_lifetime(&self) -> Duration {
        let tries = self.retries.saturating_add(1);
        self.timeout.saturating_mul(tries) + self.retry_backoff.saturating_mul(self.retries)
    }
}

/// Live figures of a running load.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Since the load started.
    pub elapsed: Duration,
    /// Logical requests started.
    pub sent: u64,
    /// In flight now.
    pub in_flight: usize,
    /// The totals so far.
    pub summary: Summary,
    /// The last second that can no longer change.
    pub last_second: Option<SecondSummary>,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Wall time from the first request to the last answer, seconds.
    pub elapsed_s: f64,
    /// The sending phase, seconds.
    pub duration_s: f64,
    /// Open loop: the rate asked for.
    pub target_rate: Option<f64>,
    /// Logical requests started per second of the sending phase.
    pub rate_achieved: f64,
    /// The totals.
    pub summary: Summary,
    /// One entry per second of the sending phase.
    pub series: Vec<SecondSummary>,
}

struct Shared {
    recorder: Mutex<Recorder>,
    started: Instant,
    sent: AtomicU64,
    in_flight: AtomicUsize,
}

impl Shared {
    fn record(&self, completion: &Completion) {
        self.recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(completion);
    }
}

/// A load in progress.
#[derive(Debug)]
pub struct Running {
    shared: Arc<Shared>,
    driver: tokio::task::JoinHandle<Report>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

/// Why a load could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The spec is unusable.
    #[error("{0}")]
    Spec(String),
    /// The driver task failed.
    #[error("the load generator stopped: {0}")]
    Driver(String),
}

/// Starts sending at once on the current runtime.
pub fn start(spec: LoadSpec) -> Result<Running, LoadError> {
    if spec.duration > MAX_DURATION {
        return Err(LoadError::Spec(format!(
            "duration above the limit of {} s",
            MAX_DURATION.as_secs()
        )));
    }
    if spec.timeout.is_zero() {
        return Err(LoadError::Spec("the timeout must be above 0".into()));
    }
    if let Mode::Open { rate } = spec.mode {
        if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE) {
            return Err(LoadError::Spec(format!(
                "the rate must be above 0 and at most {MAX_RATE}"
            )));
        }
    }
    let pool = Pool::new(
        spec.target.clone(),
        spec.protocol,
        &spec.trust,
        spec.connections,
        spec.source,
        spec.keepalive,
    )
    .map_err(LoadError::Spec)?;
    let shared = Arc::new(Shared {
        recorder: Mutex::new(Recorder::new()),
        started: Instant::now(),
        sent: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let driver = tokio::spawn(drive(spec, Arc::new(pool), Arc::clone(&shared)));
    Ok(Running { shared, driver })
}

impl Running {
    /// The figures so far.
    pub fn progress(&self) -> Progress {
        let recorder = self
            .shared
            .recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Progress {
            elapsed: self.shared.started.elapsed(),
            sent: self.shared.sent.load(Ordering::Relaxed),
            in_flight: self.shared.in_flight.load(Ordering::Relaxed),
            summary: recorder.summary(),
            last_second: recorder.series().last().cloned(),
        }
    }

    /// When the load started.
    pub fn started(&self) -> Instant {
        self.shared.started
    }

    /// Waits for the sending phase and every answer.
    pub async fn finish(self) -> Result<Report, LoadError> {
        self.driver
            .await
            .map_err(|e| LoadError::Driver(e.to_string()))
    }
}

/// Sends, then waits for the stragglers, then reduces the series.
async fn drive(spec: LoadSpec, pool: Arc<Pool>, shared: Arc<Shared>) -> Report {
    let spec = Arc::new(spec);
    let lifetime = spec.request_lifetime();
    let closer = tokio::spawn(close_seconds(Arc::clone(&shared), lifetime));
    let mut tasks = JoinSet::new();
    match spec.mode {
        Mode::Open { rate } => {
            if let Some(schedule) = Schedule::new(rate) {
                open_loop(&spec, &pool, &shared, schedule, &mut tasks).await;
            }
        }
        Mode::Closed { concurrency } => {
            for worker in 0..concurrency.max(1) {
                let (spec, pool, shared) =
                    (Arc::clone(&spec), Arc::clone(&pool), Arc::clone(&shared));
                tasks.spawn(
                    async move { closed_worker(&spec, &pool, &shared, worker as u64).await },
                );
            }
        }
    }
    // Every request ends within its lifetime; the bound is a safety net only.
    let _ = tokio::time::timeout(lifetime + Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    closer.abort();
    let elapsed = shared.started.elapsed();
    let seconds = spec.duration.as_secs() + u64::from(spec.duration.subsec_nanos() > 0);
    let mut recorder = shared
        .recorder
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let series = recorder.finish_series(seconds);
    let sent = shared.sent.load(Ordering::Relaxed);
    Report {
        elapsed_s: elapsed.as_secs_f64(),
        duration_s: spec.duration.as_secs_f64(),
        target_rate: match spec.mode {
            Mode::Open { rate } => Some(rate),
            Mode::Closed { .. } => None,
        },
        rate_achieved: sent as f64 / spec.duration.as_secs_f64().max(1e-9),
        summary: recorder.summary(),
        series,
    }
}

/// Once a second, reduces the seconds whose requests have all finished.
async fn close_seconds(shared: Arc<Shared>, lifetime: Duration) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let settled = shared
            .started
            .elapsed()
            .saturating_sub(lifetime + Duration::from_millis(100));
        shared
            .recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .close_below(settled.as_secs());
    }
}

fn prepare(mix: &Mix, rng: &mut SmallRng) -> Prepared {
    let entry = mix.pick(rng.random());
    Prepared {
        method: entry.method.clone(),
        path: entry.path.clone(),
        body: if entry.body == 0 {
            Bytes::new()
        } else {
            Bytes::from(vec![b'x'; entry.body])
        },
    }
}

async fn open_loop(
    spec: &Arc<LoadSpec>,
    pool: &Arc<Pool>,
    shared: &Arc<Shared>,
    schedule: Schedule,
    tasks: &mut JoinSet<()>,
) {
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let total = schedule.total(spec.duration);
    let mut next = 0u64;
    while next < total {
        let elapsed = shared.started.elapsed();
        let due = schedule.due_by(elapsed).min(total);
        while next < due {
            let intended = schedule.at(next);
            next += 1;
            let prepared = prepare(&spec.mix, &mut rng);
            shared.sent.fetch_add(1, Ordering::Relaxed);
            if shared.in_flight.load(Ordering::Relaxed) >= spec.max_in_flight {
                shared.record(&Completion {
                    intended,
                    latency: Duration::ZERO,
                    attempts: 0,
                    error: Some(ErrorKind::Overload),
                    backend: None,
                });
                continue;
            }
            shared.in_flight.fetch_add(1, Ordering::Relaxed);
            let (spec, pool, shared) = (Arc::clone(spec), Arc::clone(pool), Arc::clone(shared));
            tasks.spawn(async move {
                let completion = execute(&spec, &pool, &prepared, shared.started, intended).await;
                shared.record(&completion);
                shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        // Reap finished tasks so the set stays as small as what is in flight.
        while tasks.try_join_next().is_some() {}
        if next < total {
            tokio::time::sleep_until(shared.started + schedule.at(next)).await;
        }
    }
}

async fn closed_worker(spec: &LoadSpec, pool: &Pool, shared: &Shared, worker: u64) {
    let mut rng = SmallRng::seed_from_u64(spec.seed.wrapping_add(worker));
    loop {
        let intended = shared.started.elapsed();
        if intended >= spec.duration {
            return;
        }
        let prepared = prepare(&spec.mix, &mut rng);
        shared.sent.fetch_add(1, Ordering::Relaxed);
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let completion = execute(spec, pool, &prepared, shared.started, intended).await;
        shared.record(&completion);
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One logical request: attempts with client retries, timed from `intended`.
async fn execute(
    spec: &LoadSpec,
    pool: &Pool,
    prepared: &Prepared,
    started: Instant,
    intended: Duration,
) -> Completion {
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let (error, backend) = match pool.attempt(prepared, spec.timeout).await {
            Ok(answer) if answer.status < 400 => (None, answer.backend),
            Ok(answer) => (Some(ErrorKind::Status(answer.status)), answer.backend),
            Err(kind) => (Some(kind), None),
        };
        let retry = error.is_some_and(|e| spec.retry_on.allows(e)) && attempts <= spec.retries;
        if !retry {
            return Completion {
                intended,
                latency: started.elapsed().saturating_sub(intended),
                attempts,
                error,
                backend,
            };
        }
        if !spec.retry_backoff.is_zero() {
            tokio::time::sleep(spec.retry_backoff).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_conditions_parse() {
        let on = RetryOn::parse(["timeout", "5xx"]).expect("ok");
        assert!(on.allows(ErrorKind::Timeout));
        assert!(on.allows(ErrorKind::Status(503)));
        assert!(!on.allows(ErrorKind::Status(429)));
        assert!(!on.allows(ErrorKind::Connect));
        assert!(RetryOn::parse(["sometimes"]).is_err());
    }

    #[test]
    fn a_request_lives_at_most_every_attempt_and_backoff() {
        let target = Target {
            tls: false,
            authority: "127.0.0.1:1".into(),
            host: "127.0.0.1".into(),
            addr: "127.0.0.1:1".parse().expect("addr"),
            path: "/".into(),
        };
        let mut spec = LoadSpec::new(target);
        spec.timeout = Duration::from_secs(1);
        spec.retries = 2;
        spec.retry_backoff = Duration::from_millis(10);
        assert_eq!(spec.request_lifetime(), Duration::from_millis(3020));
    }
}
