//! A [`LoadView`] over plain vectors. The runtime implements `LoadView` over atomics; tests,
//! benchmarks and simulations (here and in the runtime crate) need the same view over values
//! they set by hand, and should not each write their own.

use super::LoadView;

/// Per-endpoint load as plain, public vectors (all of one length).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StaticLoad {
    /// `is_eligible` answers.
    pub eligible: Vec<bool>,
    /// `in_flight` answers.
    pub in_flight: Vec<u64>,
    /// `latency_cost` answers, nanoseconds (0.0 = no data).
    pub latency_ns: Vec<f64>,
    /// `weight_factor` answers.
    pub factor: Vec<f64>,
}

impl StaticLoad {
    /// `n` endpoints, all eligible, idle, at full weight, without latency data.
    pub fn uniform(n: usize) -> StaticLoad {
        StaticLoad {
            eligible: vec![true; n],
            in_flight: vec![0; n],
            latency_ns: vec![0.0; n],
            factor: vec![1.0; n],
        }
    }
}

impl LoadView for StaticLoad {
    fn is_eligible(&self, index: usize) -> bool {
        self.eligible[index]
    }

    fn in_flight(&self, index: usize) -> u64 {
        self.in_flight[index]
    }

    fn latency_cost(&self, index: usize) -> f64 {
        self.latency_ns[index]
    }

    fn weight_factor(&self, index: usize) -> f64 {
        self.factor[index]
    }
}
