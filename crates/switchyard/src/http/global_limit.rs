//! Fleet-wide rate limits (`[global_rate_limit] redis = "redis://..."`): every instance
//! takes its tokens from one bucket per (route, key) kept in Redis, so a limit of 100/s is
//! 100/s for the fleet, not per instance.
//!
//! One round trip per request: a Lua script refills and takes a token atomically, reading
//! the clock of the Redis server so instances with skewed clocks agree. A request never
//! waits on Redis for more than `[global_rate_limit] timeout` ([`DEFAULT_CALL_TIMEOUT`]): a
//! slow or dead Redis makes the instance fall back to its local bucket for that request
//! (counted in `rate_limit_backend_errors_total`, logged once per outage), and a background
//! task reconnects once a second. The connection is multiplexed: every request shares it.
//!
//! One late answer says nothing about the connection (a loaded machine can miss a few
//! milliseconds now and then), so a timeout keeps it; only a broken connection, or one
//! that has not answered anything for [`RECONNECT_EVERY`] while requests wait on it, is
//! replaced. Dropping it at the first timeout would turn one late reply into a second of
//! local-only decisions on this instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use tracing::{info, warn};

use crate::admin::metrics::Counter;
use crate::config::model::RateLimit;

/// The longest a request waits on Redis before the local bucket decides, unless
/// `[global_rate_limit] timeout` says otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(5);

/// How often a lost connection is retried.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// Refill and take one token; returns `{allowed (0/1), wait_ms}`. KEYS[1] the bucket;
/// ARGV rate, per (ms), burst.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / per)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * per / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * per / rate) + 1000)
return {allowed, wait}
";

/// The shared store of one process.
#[derive(Debug)]
pub struct GlobalLimiter {
    url: String,
    call_timeout: Duration,
    connection: ArcSwapOption<MultiplexedConnection>,
    /// When Redis last answered (or the connection was made), on the process clock.
    last_answer: AtomicU64,
    errors: Counter,
    down_logged: AtomicBool,
}

/// Why the shared bucket could not answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No connection (Redis down or not reached yet).
    #[error("not connected")]
    NotConnected,
    /// No answer within the call timeout.
    #[error("no answer in time")]
    Timeout,
    /// Redis answered with an error, or the connection broke.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl GlobalLimiter {
    /// A limiter for `url` that waits at most `call_timeout` per request; call
    /// [`GlobalLimiter::maintain`] in a task to connect.
    pub fn new(url: &str, call_timeout: Duration, errors: Counter) -> Arc<GlobalLimiter> {
        Arc::new(GlobalLimiter {
            url: url.to_owned(),
            call_timeout,
            connection: ArcSwapOption::empty(),
            last_answer: AtomicU64::new(0),
            errors,
            down_logged: AtomicBool::new(false),
        })
    }

    /// Keeps a connection open: connects now, and again a second after it is lost.
    pub async fn maintain(self: Arc<Self>) {
        let client = match redis::Client::open(self.url.as_str()) {
            Ok(client) => client,
            Err(error) => {
                warn!(url = %self.url, %error, "global_rate_limit: bad redis url; local buckets only");
                return;
            }
        };
        loop {
            if self.connection.load().is_none() {
                let connect = client.get_multiplexed_async_connection();
                match tokio::time::timeout(RECONNECT_EVERY, connect).await {
                    Ok(Ok(connection)) => {
                        info!(url = %self.url, "global_rate_limit: connected to redis");
                        self.down_logged.store(false, Ordering::Relaxed);
                        self.note_answer();
                        self.connection.store(Some(Arc::new(connection)));
                    }
                    Ok(Err(error)) => self.note_down(&BackendError::Redis(error)),
                    Err(_) => self.note_down(&BackendError::Timeout),
                }
            }
            tokio::time::sleep(RECONNECT_EVERY).await;
        }
    }

    fn note_down(&self, error: &BackendError) {
        if !self.down_logged.swap(true, Ordering::Relaxed) {
            warn!(url = %self.url, %error, "global_rate_limit: redis unreachable; falling back to local buckets");
        }
    }

    /// Takes a token from the shared bucket of (`route`, `key`): `Ok(Ok(()))` allowed,
    /// `Ok(Err(seconds))` refused, `Err` when Redis could not answer in time (the error is
    /// counted and the caller uses its local bucket).
    pub async fn take(
        &self,
        route: &str,
        key: &[u8],
        limit: &RateLimit,
    ) -> Result<Result<(), u32>, BackendError> {
        let result = self.call(route, key, limit).await;
        match &result {
            Ok(_) => self.note_answer(),
            Err(error) => {
                self.errors.inc();
                self.note_down(error);
                if self.connection_is_lost(error) {
                    // The maintenance task connects again.
                    self.connection.store(None);
                }
            }
        }
        result
    }

    fn note_answer(&self) {
        self.last_answer
            .store(crate::runtime::clock::now(), Ordering::Relaxed);
    }

    /// Whether `error` means the connection must be replaced: it broke, or it is stuck
    /// (nothing answered for [`RECONNECT_EVERY`]). A single late reply keeps it.
    fn connection_is_lost(&self, error: &BackendError) -> bool {
        match error {
            BackendError::NotConnected => false,
            BackendError::Redis(_) => true,
            BackendError::Timeout => {
                let last = self.last_answer.load(Ordering::Relaxed);
                let silent = crate::runtime::clock::now().saturating_sub(last);
                silent >= u64::try_from(RECONNECT_EVERY.as_nanos()).unwrap_or(u64::MAX)
            }
        }
    }

    async fn call(
        &self,
        route: &str,
        key: &[u8],
        limit: &RateLimit,
    ) -> Result<Result<(), u32>, BackendError> {
        let Some(connection) = self.connection.load_full() else {
            return Err(BackendError::NotConnected);
        };
        let mut connection = (*connection).clone();
        let bucket = bucket_name(route, key);
        let per_ms = u64::try_from(limit.per.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut command = redis::cmd("EVAL");
        command
            .arg(TAKE)
            .arg(1)
            .arg(bucket)
            .arg(limit.rate.max(1))
            .arg(per_ms)
            .arg(limit.burst);
        let reply = tokio::time::timeout(
            self.call_timeout,
            command.query_async::<(i64, i64)>(&mut connection),
        )
        .await
        .map_err(|_| BackendError::Timeout)??;
        Ok(match reply {
            (1, _) => Ok(()),
            (_, wait_ms) => {
                let seconds = u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000).max(1);
                Err(u32::try_from(seconds).unwrap_or(u32::MAX))
            }
        })
    }
}

/// The Redis key of a bucket: the route's name and the key's bytes in hex, so any key
/// value (binary addresses, header bytes) makes a safe name.
pub fn bucket_name(route: &str, key: &[u8]) -> String {
    use std::fmt::Write;
    let mut name = String::with_capacity(12 + route.len() + 2 * key.len());
    name.push_str("switchyard:rl:");
    name.push_str(route);
    name.push(':');
    for byte in key {
        let _ = write!(name, "{byte:02x}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_are_safe_for_any_key() {
        assert_eq!(
            bucket_name("api", &[10, 0, 0, 1]),
            "switchyard:rl:api:0a000001"
        );
        assert_eq!(bucket_name("api", b""), "switchyard:rl:api:");
        assert_eq!(bucket_name("r", b"k 1"), "switchyard:rl:r:6b2031");
    }
}
