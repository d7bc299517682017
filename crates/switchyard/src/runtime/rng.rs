//! Randomness for pickers and splits: one small, fast RNG per worker thread.
//!
//! `SWITCHYARD_SEED` makes runs reproducible: every thread's RNG is then seeded from it and
//! the thread's ordinal, so a single-threaded test sees the same sequence on every run.
//! Without it each thread seeds from the operating system.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

/// The environment variable that seeds every RNG.
pub const SEED_VAR: &str = "SWITCHYARD_SEED";

fn new_thread_rng() -> SmallRng {
    static ORDINAL: AtomicU64 = AtomicU64::new(0);
    match std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        Some(seed) => {
            let ordinal = ORDINAL.fetch_add(1, Ordering::Relaxed);
            SmallRng::seed_from_u64(seed ^ ordinal.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        }
        None => SmallRng::from_os_rng(),
    }
}

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(new_thread_rng());
}

/// Runs `f` with this thread's RNG.
pub fn with_rng<T>(f: impl FnOnce(&mut dyn RngCore) -> T) -> T {
    RNG.with(|rng| f(&mut *rng.borrow_mut()))
}
