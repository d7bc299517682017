//! Resilience decisions of the attempt loop and the admission phase: may this retry happen
//! (budget, backoff, deadline), when to hedge (a recent latency percentile), may this
//! request be admitted (rate limit, circuit breakers).
//! Each is a small state machine over explicit time, so the runtime wires them to its clock
//! and its atomics, and every limit is tested here with exact numbers.

pub mod backoff;
pub mod breaker;
pub mod hedge;
pub mod retry_budget;
pub mod token_bucket;

pub use backoff::{backoff, backoff_cap, fits_deadline};
pub use breaker::{Breaker, BreakerState, Gauge, Limit, LimitReached, Limits};
pub use hedge::LatencyWindow;
pub use retry_budget::RetryBudget;
pub use token_bucket::{RetryAfter, TokenBucket};
