//! A route's `rate_limit`: one token bucket per key value (SPEC 3.1), kept in this
//! instance's memory.
//!
//! The key is read from the request (`source-ip`: the resolved client address; `header:N`:
//! that header's value, requests without it sharing the bucket `""`; `route`: one bucket).
//! Memory is bounded: at most [`MAX_KEYS`] buckets (plus the shared overflow bucket `""`)
//! are kept; when the map is full, buckets
//! that have refilled completely are dropped (a full bucket is the same as a new one), and
//! if every bucket is still in use a new key shares the overflow bucket `""` rather than
//! growing the map.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use http::HeaderMap;
use switchyard_algo::resilience::TokenBucket;

use super::global_limit::GlobalLimiter;
use super::jwt::{Claims, claim_text};
use crate::admin::metrics::Counter;
use crate::config::model::{RateLimit, RateLimitKey};

/// The most buckets one route keeps.
pub const MAX_KEYS: usize = 100_000;

/// The map and when it was last swept (a sweep is O(keys), so at most one a second).
#[derive(Debug, Default)]
struct Buckets {
    map: HashMap<Vec<u8>, TokenBucket>,
    swept_at: Option<u64>,
}

/// How often a full map may be swept for refilled buckets.
const SWEEP_EVERY_NS: u64 = 1_000_000_000;

/// The buckets of one route.
#[derive(Debug)]
pub struct RouteLimiter {
    config: RateLimit,
    buckets: Mutex<Buckets>,
    max_keys: usize,
    /// `rate_limited_total{route}`.
    denied: Counter,
}

impl RouteLimiter {
    /// The limiter for `config`, counting refusals on `denied`.
    pub fn new(config: &RateLimit, denied: Counter) -> RouteLimiter {
        RouteLimiter::with_capacity(config, denied, MAX_KEYS)
    }

    fn with_capacity(config: &RateLimit, denied: Counter, max_keys: usize) -> RouteLimiter {
        RouteLimiter {
            config: config.clone(),
            buckets: Mutex::default(),
            max_keys: max_keys.max(1),
            denied,
        }
    }

    /// The bucket key of a request (`jwt:claim` reads the route's verified claims).
    pub fn key(&self, client: IpAddr, headers: &HeaderMap, claims: Option<&Claims>) -> Vec<u8> {
        match &self.config.key {
            RateLimitKey::SourceIp => match client {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            },
            RateLimitKey::Header(name) => headers
                .get(name.as_str())
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default(),
            RateLimitKey::Jwt(claim) => claims
                .and_then(|c| claim_text(c, claim))
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default(),
            RateLimitKey::Route => Vec::new(),
        }
    }

    /// Takes a token for `key` at `now`; `Err(seconds)` (rounded up, at least 1) when the
    /// bucket is empty.
    pub fn check(&self, key: Vec<u8>, now: u64) -> Result<(), u32> {
        let config = &self.config;
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        let due = state
            .swept_at
            .is_none_or(|at| now.saturating_sub(at) >= SWEEP_EVERY_NS);
        if due && !state.map.contains_key(&key) && state.map.len() >= self.max_keys {
            state.swept_at = Some(now);
            state
                .map
                .retain(|_, bucket| bucket.available(now) < u64::from(config.burst));
        }
        let buckets = &mut state.map;
        let key = if buckets.contains_key(&key) || buckets.len() < self.max_keys || key.is_empty() {
            key
        } else {
            Vec::new()
        };
        let bucket = buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(config.rate, config.per, config.burst, now));
        bucket.try_take(now).map_err(|wait| {
            self.denied.inc();
            u32::try_from(wait.secs_rounded_up()).unwrap_or(u32::MAX)
        })
    }

    /// Takes a token for `key`: from the fleet's bucket when `global` is configured and
    /// answers in time, else from this instance's ([`RouteLimiter::check`]). Every refusal
    /// is counted here, whichever bucket made it.
    pub async fn take(
        &self,
        route: &str,
        key: Vec<u8>,
        global: Option<&GlobalLimiter>,
    ) -> Result<(), u32> {
        if let Some(global) = global {
            if let Ok(verdict) = global.take(route, &key, &self.config).await {
                if verdict.is_err() {
                    self.denied.inc();
                }
                return verdict;
            }
        }
        self.check(key, crate::runtime::clock::now())
    }

    /// Buckets kept now.
    pub fn keys(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: u64 = 1_000_000_000;

    fn limiter(key: RateLimitKey, max_keys: usize) -> RouteLimiter {
        let config = RateLimit {
            key,
            rate: 2,
            per: Duration::from_secs(1),
            burst: 2,
        };
        RouteLimiter::with_capacity(&config, Counter::default(), max_keys)
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let l = limiter(RateLimitKey::Header("x-api-key".into()), 10);
        let now = 10 * S;
        assert_eq!(l.check(b"a".to_vec(), now), Ok(()));
        assert_eq!(l.check(b"a".to_vec(), now), Ok(()));
        assert_eq!(l.check(b"a".to_vec(), now), Err(1));
        assert_eq!(l.check(b"b".to_vec(), now), Ok(()), "b is not slowed by a");
        assert_eq!(
            l.check(b"a".to_vec(), now + S / 2),
            Ok(()),
            "half a second refills one"
        );
        assert_eq!(l.denied.get(), 1);
    }

    #[test]
    fn the_map_stays_bounded_and_drops_refilled_buckets_first() {
        let l = limiter(RateLimitKey::SourceIp, 2);
        let now = 10 * S;
        assert!(l.check(b"a".to_vec(), now).is_ok());
        assert!(l.check(b"b".to_vec(), now).is_ok());
        // Full and both buckets busy: c shares the overflow bucket.
        assert!(l.check(b"c".to_vec(), now).is_ok());
        assert_eq!(l.keys(), 3, "a, b and the overflow bucket");
        // A second later a and b have refilled: they make room for c.
        assert!(l.check(b"c".to_vec(), now + 2 * S).is_ok());
        assert_eq!(l.keys(), 1);
    }

    #[test]
    fn keys_come_from_the_client_address_or_a_header() {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "k1".parse().unwrap());
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            limiter(RateLimitKey::SourceIp, 1).key(ip, &headers, None),
            [10, 1, 2, 3]
        );
        assert_eq!(
            limiter(RateLimitKey::Header("x-api-key".into()), 1).key(ip, &headers, None),
            b"k1"
        );
        assert!(
            limiter(RateLimitKey::Header("x-other".into()), 1)
                .key(ip, &headers, None)
                .is_empty()
        );
        assert!(
            limiter(RateLimitKey::Route, 1)
                .key(ip, &headers, None)
                .is_empty()
        );
    }
}
