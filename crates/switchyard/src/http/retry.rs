//! The decisions of the retry policy that need no I/O (SPEC 3.1 and 4): whether a request
//! may be sent again at all, which `retry.on` word an outcome meets, how long a
//! `Retry-After` asks to wait, and the budgets that cap retries and hedges together.
//!
//! The attempt loop in `pipeline.rs` asks these questions in order; keeping them here means
//! the rules read in one place and are tested without sockets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderMap, Method};
use switchyard_algo::resilience::RetryBudget;

use crate::admin::metrics::{self, Counter, Registry};
use crate::config::model::{self, RetryOn};

/// SPEC 4's idempotency rule: GET, HEAD, OPTIONS, PUT, DELETE (and TRACE, which RFC 9110
/// also names), or any request carrying `idempotency-key`.
pub fn is_idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key("idempotency-key")
}

/// The first word of `on` an upstream response with `status` meets.
pub fn status_word(on: &[RetryOn], status: u16) -> Option<RetryOn> {
    on.iter().copied().find(|word| word.matches_status(status))
}

/// What a response's `Retry-After` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// No header: the policy's own backoff applies.
    Absent,
    /// Wait this long before trying again.
    Wait(Duration),
    /// A value the proxy cannot honour (a date, garbage): do not retry.
    Unusable,
}

/// Reads `Retry-After` from a 503 or 429 (other statuses' headers are not a request to
/// wait). Only delay-seconds are honoured; an HTTP date is refused rather than guessed at.
pub fn retry_after(status: u16, headers: &HeaderMap) -> RetryAfter {
    if status != 503 && status != 429 {
        return RetryAfter::Absent;
    }
    let Some(value) = headers.get(RETRY_AFTER) else {
        return RetryAfter::Absent;
    };
    match value.to_str().ok().map(str::trim).map(str::parse::<u64>) {
        Some(Ok(seconds)) => RetryAfter::Wait(Duration::from_secs(seconds)),
        _ => RetryAfter::Unusable,
    }
}

/// The budgets a retry or hedge must fit: the cluster's, shared by every route that uses
/// it, and a route's own stricter one.
#[derive(Debug)]
pub struct Budget {
    budget: Mutex<RetryBudget>,
}

impl Budget {
    /// A budget of `ratio` retries per first attempt plus `min_per_second`.
    pub fn new(ratio: Option<f64>, min_per_second: u32) -> Budget {
        Budget {
            budget: Mutex::new(RetryBudget::new(ratio, min_per_second)),
        }
    }

    /// The route's own budget, when its `retry` sets one.
    pub fn of_route(policy: &model::RetryPolicy, cluster_floor: u32) -> Option<Budget> {
        if policy.budget.is_none() && policy.min_retries_per_second.is_none() {
            return None;
        }
        Some(Budget::new(
            policy.budget,
            policy.min_retries_per_second.unwrap_or(cluster_floor),
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RetryBudget> {
        self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A first attempt at `now` deposits.
    pub fn deposit(&self, now: u64) {
        self.lock().record_first_attempt(now);
    }

    /// Asks for one retry or hedge at `now`.
    pub fn try_withdraw(&self, now: u64) -> bool {
        self.lock().try_withdraw(now)
    }
}

/// `retries_total{cluster,reason}`: the fixed words made at start-up, status words on first
/// use (a retry is never the hot path).
#[derive(Debug)]
pub struct RetryCounters {
    cluster: String,
    registry: Arc<Registry>,
    fixed: [Counter; 6],
    statuses: Mutex<HashMap<u16, Counter>>,
}

const FIXED_WORDS: [RetryOn; 6] = [
    RetryOn::ConnectFailure,
    RetryOn::RefusedStream,
    RetryOn::Reset,
    RetryOn::Timeout,
    RetryOn::GatewayError,
    RetryOn::Any5xx,
];

impl RetryCounters {
    /// The counters of `cluster`.
    pub fn new(cluster: &str, registry: &Arc<Registry>) -> RetryCounters {
        RetryCounters {
            cluster: cluster.to_owned(),
            registry: Arc::clone(registry),
            fixed: FIXED_WORDS
                .map(|word| registry.counter(&metrics::RETRIES_TOTAL, &[cluster, &word.word()])),
            statuses: Mutex::default(),
        }
    }

    /// Counts one retry made for `word`.
    pub fn count(&self, word: RetryOn) {
        if let Some(slot) = FIXED_WORDS.iter().position(|w| *w == word) {
            self.fixed[slot].inc();
        } else if let RetryOn::Status(status) = word {
            let mut statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
            statuses
                .entry(status)
                .or_insert_with(|| {
                    self.registry
                        .counter(&metrics::RETRIES_TOTAL, &[&self.cluster, &word.word()])
                })
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn only_safe_methods_or_an_idempotency_key_may_be_sent_twice() {
        let none = HeaderMap::new();
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_idempotent(&method, &none), "{method}");
        }
        assert!(!is_idempotent(&Method::POST, &none));
        assert!(!is_idempotent(&Method::PATCH, &none));
        assert!(is_idempotent(&Method::POST, &with("idempotency-key", "k1")));
    }

    #[test]
    fn statuses_meet_the_first_matching_word() {
        let on = [RetryOn::Reset, RetryOn::GatewayError, RetryOn::Status(409)];
        assert_eq!(status_word(&on, 503), Some(RetryOn::GatewayError));
        assert_eq!(status_word(&on, 409), Some(RetryOn::Status(409)));
        assert_eq!(status_word(&on, 500), None);
        assert_eq!(status_word(&[RetryOn::Any5xx], 500), Some(RetryOn::Any5xx));
        assert_eq!(status_word(&[RetryOn::Any5xx], 404), None);
        assert!(RetryOn::ConnectFailure.never_sent());
        assert!(!RetryOn::Timeout.never_sent());
    }

    #[test]
    fn retry_after_is_read_from_503_and_429_only() {
        assert_eq!(
            retry_after(503, &with("retry-after", "2")),
            RetryAfter::Wait(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(429, &with("retry-after", " 0 ")),
            RetryAfter::Wait(Duration::ZERO)
        );
        assert_eq!(
            retry_after(503, &with("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")),
            RetryAfter::Unusable
        );
        assert_eq!(
            retry_after(502, &with("retry-after", "2")),
            RetryAfter::Absent
        );
        assert_eq!(retry_after(503, &HeaderMap::new()), RetryAfter::Absent);
    }

    #[test]
    fn a_route_budget_exists_only_when_the_route_writes_one() {
        let mut policy = model::RetryPolicy {
            attempts: 2,
            on: vec![RetryOn::ConnectFailure],
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            buffer: 65536,
            budget: None,
            min_retries_per_second: None,
        };
        assert!(Budget::of_route(&policy, 10).is_none());
        policy.budget = Some(0.0);
        policy.min_retries_per_second = Some(0);
        let budget = Budget::of_route(&policy, 10).expect("a route budget");
        budget.deposit(0);
        assert!(
            !budget.try_withdraw(0),
            "ratio 0 with no floor allows nothing"
        );
    }
}
