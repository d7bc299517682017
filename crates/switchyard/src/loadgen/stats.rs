//! What a run measured: one HDR histogram for the whole run and a per-second series.
//!
//! Each request is filed under the second it was *meant* to be sent in, so a fault that
//! starts at t = 5 s shows at t = 5 s even when its victims complete a second later. A
//! second keeps its own (coarser) histogram only while requests filed under it can still
//! complete; then it is reduced to a [`SecondSummary`], so memory stays bounded by the
//! longest a request can live, not by the run's length.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Why a request did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// No complete answer within the client timeout.
    Timeout,
    /// The TCP connection could not be opened.
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// The connection broke (reset, closed, protocol error) before a complete answer.
    Reset,
    /// A status of 400 or above.
    Status(u16),
    /// The generator itself had too many requests in flight to send this one.
    Overload,
}

impl ErrorKind {
    /// Whether a client retries this by default: timeouts, connect errors, resets and 5xx.
    pub fn retryable(self) -> bool {
        match self {
            Self::Timeout | Self::Connect | Self::Reset => true,
            Self::Status(s) => s >= 500,
            Self::Tls | Self::Overload => false,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timeout"),
            Self::Connect => f.write_str("connect"),
            Self::Tls => f.write_str("tls"),
            Self::Reset => f.write_str("reset"),
            Self::Status(s) => write!(f, "status_{s}"),
            Self::Overload => f.write_str("overload"),
        }
    }
}

/// One finished logical request (with its client retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// When it was meant to be sent, from the start of the run.
    pub intended: Duration,
    /// From the intended send time to the final answer or failure.
    pub latency: Duration,
    /// Attempts made (1 + client retries; 0 when it was never sent).
    pub attempts: u32,
    /// The final outcome.
    pub error: Option<ErrorKind>,
    /// The backend that answered the last attempt (its `x-backend` header).
    pub backend: Option<String>,
}

/// Distinct backend names kept; more are counted as `"other"` (the header is network input).
const MAX_BACKENDS: usize = 256;
/// The longest latency recorded exactly (longer ones are clamped).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One second of the run, reduced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondSummary {
    /// Seconds from the start (requests meant to be sent in `[second, second + 1)`).
    pub second: u64,
    /// Logical requests.
    pub requests: u64,
    /// Those that succeeded.
    pub successes: u64,
    /// Attempts made for them.
    pub attempts: u64,
    /// Median latency, milliseconds (0 when there were no requests).
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Final answers by backend.
    pub backends: BTreeMap<String, u64>,
}

impl SecondSummary {
    /// Successes / requests (1 when there were none).
    pub fn success_rate(&self) -> f64 {
        ratio(self.successes, self.requests, 1.0)
    }

    /// Attempts / requests (0 when there were none).
    pub fn attempts_per_request(&self) -> f64 {
        ratio(self.attempts, self.requests, 0.0)
    }
}

fn ratio(a: u64, b: u64, empty: f64) -> f64 {
    if b == 0 { empty } else { a as f64 / b as f64 }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

struct SecondAcc {
    requests: u64,
    successes: u64,
    attempts: u64,
    errors: BTreeMap<String, u64>,
    backends: BTreeMap<String, u64>,
    latency: Histogram<u32>,
}

impl SecondAcc {
    fn new() -> Self {
        Self {
            requests: 0,
            successes: 0,
            attempts: 0,
            errors: BTreeMap::new(),
            backends: BTreeMap::new(),
            latency: histogram(2),
        }
    }

    fn reduce(self, second: u64) -> SecondSummary {
        let (p50, p99, max) = if self.requests == 0 {
            (0.0, 0.0, 0.0)
        } else {
            (
                ms(self.latency.value_at_quantile(0.5)),
                ms(self.latency.value_at_quantile(0.99)),
                ms(self.latency.max()),
            )
        };
        SecondSummary {
            second,
            requests: self.requests,
            successes: self.successes,
            attempts: self.attempts,
            p50_ms: p50,
            p99_ms: p99,
            max_ms: max,
            errors: self.errors,
            backends: self.backends,
        }
    }
}

fn histogram<T: hdrhistogram::Counter>(sigfig: u8) -> Histogram<T> {
    // 1 µs to an hour: the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, sigfig).expect("constant, valid bounds")
}

/// Latency percentiles of a whole run, milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// The totals of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Logical requests finished.
    pub requests: u64,
    /// Those that succeeded.
    pub successes: u64,
    /// Attempts made (client retries included).
    pub attempts: u64,
    /// Latency of every request, from its intended send time.
    pub latency_ms: Percentiles,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Final answers by backend.
    pub backends: BTreeMap<String, u64>,
}

impl Summary {
    /// Successes / requests (1 when there were none).
    pub fn success_rate(&self) -> f64 {
        ratio(self.successes, self.requests, 1.0)
    }

    /// Attempts / requests.
    pub fn attempts_per_request(&self) -> f64 {
        ratio(self.attempts, self.requests, 0.0)
    }
}

/// Collects completions; see the module docs.
pub struct Recorder {
    total: Histogram<u64>,
    requests: u64,
    successes: u64,
    attempts: u64,
    errors: BTreeMap<String, u64>,
    backends: BTreeMap<String, u64>,
    open: BTreeMap<u64, SecondAcc>,
    closed: Vec<SecondSummary>,
    /// Seconds below this are closed; a late completion for one is still counted in the
    /// totals but not in the series.
    closed_below: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("requests", &self.requests)
            .field("open_seconds", &self.open.len())
            .field("closed_seconds", &self.closed.len())
            .finish_non_exhaustive()
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if map.len() < MAX_BACKENDS {
        map.insert(key.to_owned(), 1);
    } else {
        *map.entry("other".to_owned()).or_insert(0) += 1;
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            total: histogram(3),
            requests: 0,
            successes: 0,
            attempts: 0,
            errors: BTreeMap::new(),
            backends: BTreeMap::new(),
            open: BTreeMap::new(),
            closed: Vec::new(),
            closed_below: 0,
        }
    }

    /// Files one completion.
    pub fn record(&mut self, c: &Completion) {
        let us = u64::try_from(c.latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_US);
        self.total.saturating_record(us);
        self.requests += 1;
        self.attempts += u64::from(c.attempts);
        let ok = c.error.is_none();
        self.successes += u64::from(ok);
        let error = c.error.map(|e| e.to_string());
        if let Some(e) = &error {
            bump(&mut self.errors, e);
        }
        if let Some(b) = &c.backend {
            bump(&mut self.backends, b);
        }
        let second = c.intended.as_secs();
        if second < self.closed_below {
            return;
        }
        let acc = self.open.entry(second).or_insert_with(SecondAcc::new);
        acc.requests += 1;
        acc.successes += u64::from(ok);
        acc.attempts += u64::from(c.attempts);
        acc.latency.saturating_record(us);
        if let Some(e) = &error {
            bump(&mut acc.errors, e);
        }
        if let Some(b) = &c.backend {
            bump(&mut acc.backends, b);
        }
    }

    /// Reduces every second below `second` (no request filed there can still finish).
    /// Seconds without any request become empty summaries, so the series has no gaps.
    pub fn close_below(&mut self, second: u64) {
        while self.closed_below < second {
            let s = self.closed_below;
            let acc = self.open.remove(&s).unwrap_or_else(SecondAcc::new);
            self.closed.push(acc.reduce(s));
            self.closed_below += 1;
        }
    }

    /// The closed seconds, oldest first.
    pub fn series(&self) -> &[SecondSummary] {
        &self.closed
    }

    /// Closes every second below `end` and returns the whole series.
    pub fn finish_series(&mut self, end: u64) -> Vec<SecondSummary> {
        self.close_below(end);
        self.closed.clone()
    }

    /// Logical requests finished so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The totals so far.
    pub fn summary(&self) -> Summary {
        let h = &self.total;
        let q = |q: f64| {
            if self.requests == 0 {
                0.0
            } else {
                ms(h.value_at_quantile(q))
            }
        };
        Summary {
            requests: self.requests,
            successes: self.successes,
            attempts: self.attempts,
            latency_ms: Percentiles {
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
                p999: q(0.999),
                max: if self.requests == 0 { 0.0 } else { ms(h.max()) },
                mean: if self.requests == 0 {
                    0.0
                } else {
                    h.mean() / 1000.0
                },
            },
            errors: self.errors.clone(),
            backends: self.backends.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Latencies below 256 µs are exact at two significant figures, below 2048 µs at three.
    fn done(
        intended_ms: u64,
        latency_us: u64,
        error: Option<ErrorKind>,
        backend: &str,
    ) -> Completion {
        Completion {
            intended: Duration::from_millis(intended_ms),
            latency: Duration::from_micros(latency_us),
            attempts: if error.is_some() { 3 } else { 1 },
            error,
            backend: Some(backend.to_owned()),
        }
    }

    #[test]
    fn requests_are_filed_under_their_intended_second() {
        let mut r = Recorder::new();
        r.record(&done(100, 10, None, "b1"));
        r.record(&done(900, 200, Some(ErrorKind::Timeout), "b2"));
        r.record(&done(1500, 20, None, "b1"));
        r.close_below(3);
        let s = r.series();
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].requests, s[0].successes, s[0].attempts), (2, 1, 4));
        assert_eq!(s[0].errors.get("timeout"), Some(&1));
        assert_eq!(s[0].backends.get("b1"), Some(&1));
        assert_eq!(s[0].max_ms, 0.2);
        assert_eq!((s[1].requests, s[1].p50_ms), (1, 0.02));
        assert_eq!((s[2].requests, s[2].success_rate()), (0, 1.0));
        assert_eq!(s[0].attempts_per_request(), 2.0);
    }

    #[test]
    fn late_completions_count_in_totals_only() {
        let mut r = Recorder::new();
        r.close_below(2);
        r.record(&done(500, 10, None, "b1"));
        assert_eq!(r.series()[0].requests, 0);
        assert_eq!(r.summary().requests, 1);
    }

    #[test]
    fn the_summary_has_exact_percentiles() {
        let mut r = Recorder::new();
        for i in 1..=999 {
            r.record(&done(0, i, None, "b1"));
        }
        r.record(&done(0, 1500, Some(ErrorKind::Status(503)), "b2"));
        let s = r.summary();
        assert_eq!((s.requests, s.successes), (1000, 999));
        assert_eq!(s.latency_ms.p50, 0.5);
        assert_eq!(s.latency_ms.p90, 0.9);
        assert_eq!(s.latency_ms.p999, 0.999);
        assert_eq!(s.latency_ms.max, 1.5);
        assert_eq!(s.errors.get("status_503"), Some(&1));
        assert_eq!(s.backends.get("b1"), Some(&999));
    }

    #[test]
    fn backend_names_are_bounded() {
        let mut r = Recorder::new();
        for i in 0..(MAX_BACKENDS + 10) {
            r.record(&done(0, 1, None, &format!("b{i}")));
        }
        let s = r.summary();
        assert_eq!(s.backends.len(), MAX_BACKENDS + 1);
        assert_eq!(s.backends.get("other"), Some(&10));
    }

    #[test]
    fn retry_defaults_follow_real_clients() {
        assert!(ErrorKind::Timeout.retryable());
        assert!(ErrorKind::Status(503).retryable());
        assert!(!ErrorKind::Status(404).retryable());
        assert!(!ErrorKind::Tls.retryable());
        assert_eq!(ErrorKind::Status(503).to_string(), "status_503");
    }
}
