//! Switchyard's pure algorithms: every balancing and resilience decision that can be made
//! without I/O. No tokio, no sockets, no clock: time is an argument and randomness an
//! injected RNG, so each decision is testable with exact assertions, and the packet (XDP)
//! tier builds its Maglev table from the very same code as the L4/L7 hash policies.
//!
//! # Conventions
//!
//! * **Instants** are `now: u64`, nanoseconds since an origin the caller chooses (the
//!   runtime: one process-wide monotonic origin). A `now` earlier than a stored instant
//!   counts as no time elapsed; nothing wraps. **Spans** from the configuration are
//!   [`std::time::Duration`]s.
//! * **Randomness** is `&mut dyn rand::RngCore` (seed it from `SWITCHYARD_SEED` in drills,
//!   `SmallRng::seed_from_u64` in tests). Per-thread RNGs keep picks lock-free.
//!
//! # Picking an endpoint
//!
//! Build one [`Picker`] per endpoint set (and per weight change) with
//! [`Picker::new`]`(policy, &[EndpointSpec])`; share it by `Arc` across workers (it is
//! `Send + Sync`). Per request call [`Picker::pick`]`(key, &load, &mut rng)` where `load`
//! implements [`LoadView`] over the runtime's per-endpoint atomics (eligibility after
//! health, ejection, drain and panic; in-flight count; [`PeakEwma::cost`]; slow-start factor
//! from [`health::slow_start_factor`]). For a retry or the next connect candidate call
//! [`Picker::pick_excluding`] with the endpoints already tried. `key` comes from [`hash`]
//! (`key_for_source_ip`, `key_for_five_tuple`, `key_for_bytes`) and is read only by the
//! hash policies; without a key they balance by p2c-ewma.
//!
//! Contract of every policy: an endpoint is pickable when `is_eligible` and its weight is
//! above 0; `pick` returns a pickable endpoint whenever one exists and `None` only when none
//! does.
//!
//! # State machines
//!
//! [`health`] (check flips, slow start, state precedence), [`outlier`] (ejection, doubling,
//! max percent, panic), [`resilience`] (retry budget, backoff, token bucket, limits and
//! breaker) and [`PeakEwma`] are plain structs the runtime keeps per endpoint or per cluster,
//! behind whatever synchronisation it prefers.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod balance;
pub mod hash;
pub mod health;
pub mod outlier;
pub mod resilience;

mod rng;
mod time;
mod window;

pub use balance::{
    AtomicPeakEwma, BuildError, EndpointSpec, EwmaConfig, LoadView, MaglevTable, PeakEwma, Picker,
    Policy, StaticLoad, resolve_slots,
};
