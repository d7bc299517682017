//! Balancing: choosing one endpoint of a cluster for a request or a flow.
//!
//! There is ONE interface, [`Picker`]: built from the cluster's endpoint set (names and
//! weights), rebuilt only when that set or a weight changes, shared by every worker thread
//! (`&self`, `Send + Sync`, lock-free), and asked per request with the live state the
//! runtime keeps in atomics, seen through [`LoadView`]. The split keeps the expensive part
//! (sequences, rings, tables) off the hot path and the per-request part allocation-free.
//!
//! Every policy keeps the same contract, checked by property tests: an endpoint is
//! *pickable* when `load.is_eligible(i)` and its configured weight is above 0; `pick` returns
//! a pickable endpoint whenever one exists, and `None` only when none does.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;

mod eligible;
pub mod ewma;
mod least_request;
pub mod maglev;
mod p2c;
mod random;
pub mod ring_hash;
mod round_robin;
mod static_load;
mod weighted;

pub use ewma::{AtomicPeakEwma, EwmaConfig, PeakEwma};
pub use maglev::{DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE, MaglevTable, is_prime, resolve_slots};
pub use ring_hash::{MAX_RING_SIZE, MIN_RING_SIZE};
pub use static_load::StaticLoad;
pub use weighted::MAX_PERIOD;

use least_request::LeastRequest;
use maglev::MaglevPicker;
use p2c::{P2c, P2cEwma};
use random::WeightedRandom;
use ring_hash::RingHash;
use round_robin::RoundRobin;
use weighted::SmoothWeighted;

/// One endpoint as the picker sees it: its stable name (the hash policies hash it) and its
/// configured weight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointSpec {
    /// The endpoint's name, unique per cluster (SPEC 1: the `name` key or `ip:port`).
    pub name: String,
    /// The configured (or operator-set) weight, 0-10000. Weight 0 means "no new picks"
    /// (SPEC 3.1) without being draining: such an endpoint is never picked, and the hash
    /// policies give it no slots or virtual nodes.
    pub weight: u32,
}

impl EndpointSpec {
    /// An endpoint named `name` with `weight`.
    pub fn new(name: impl Into<String>, weight: u32) -> EndpointSpec {
        EndpointSpec {
            name: name.into(),
            weight,
        }
    }
}

/// The live, per-endpoint state a picker reads, indexed like the `EndpointSpec` slice the
/// picker was built from. The runtime implements it over atomics; every method must be cheap
/// and must not block. Out-of-range indices are never asked.
pub trait LoadView {
    /// Whether endpoint `index` may receive new work now: not draining, not unhealthy, not
    /// ejected. In panic mode (SPEC 3.1) the runtime answers `true` for every endpoint that is
    /// not draining; pickers know nothing of panic.
    fn is_eligible(&self, index: usize) -> bool;

    /// Requests (L7) or connections (L4) currently in flight to endpoint `index`.
    fn in_flight(&self, index: usize) -> u64;

    /// Endpoint `index`'s current peak-EWMA latency in nanoseconds, decayed to now and
    /// including failure penalties: [`PeakEwma::cost`]. `0.0` (or anything not above 0, or
    /// NaN) means "no data yet"; `p2c-ewma` then gives it a neutral cost (see [`Policy::P2cEwma`]).
    /// Only `p2c-ewma` and the hash policies' key-less fallback read it.
    fn latency_cost(&self, index: usize) -> f64;

    /// The slow-start multiplier of endpoint `index`'s weight, in (0, 1]
    /// ([`crate::health::slow_start_factor`]). Values are clamped to `[0.01, 1]` (NaN reads
    /// as 0.01). Hash policies apply it per key: a slow-starting owner takes only the keys
    /// whose fixed fraction lies below its factor, so its share grows without keys
    /// flapping (the key-less fallback scales like p2c-ewma).
    fn weight_factor(&self, index: usize) -> f64 {
        let _ = index;
        1.0
    }
}

/// A balancing policy and its build parameters (SPEC 3 `balance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// `round-robin`: every pickable endpoint in turn, configuration order, weights ignored
    /// (0 still excludes); a slow-starting endpoint keeps its turn with probability equal to
    /// its factor.
    RoundRobin,
    /// `weighted-round-robin`: nginx's smooth weighted round-robin (5,1,1 gives
    /// `a a b a c a a`), precomputed per build and indexed by one atomic counter.
    WeightedRoundRobin,
    /// `random`: weighted random, probability proportional to `weight x weight_factor`.
    Random,
    /// `least-request`: least `(in_flight + 1) / (weight x weight_factor)` (Envoy's formula
    /// with bias 1: the `+ 1` lets weights decide between idle endpoints). Clusters of up to 4
    /// endpoints are scanned fully, ties broken uniformly at random; larger ones take the
    /// best of 4 random samples (ties: the first drawn), which keeps a pick O(1).
    LeastRequest,
    /// `p2c`: of two distinct random endpoints, the one with fewer in flight (divided by
    /// `weight_factor`); ties go to the first draw.
    P2c,
    /// `p2c-ewma` (the default): of two distinct random endpoints, the cheaper by
    /// `latency_cost x (in_flight + 1) / (weight x weight_factor)`. An endpoint without
    /// latency data borrows the other candidate's latency (a neutral cost: in-flight and
    /// weight decide), so a new endpoint is tried at once without being flooded.
    P2cEwma,
    /// `ring-hash`: consistent hashing on a ring of `"{name}#{i}"` virtual nodes.
    RingHash,
    /// `maglev`: Maglev consistent hashing with a table of `table_size` slots (a prime,
    /// default [`DEFAULT_TABLE_SIZE`]).
    Maglev {
        /// The lookup table size M.
        table_size: u32,
    },
}

impl Policy {
    /// The policy's configuration word (SPEC 3 `balance`).
    pub fn name(&self) -> &'static str {
        match self {
            Policy::RoundRobin => "round-robin",
            Policy::WeightedRoundRobin => "weighted-round-robin",
            Policy::Random => "random",
            Policy::LeastRequest => "least-request",
            Policy::P2c => "p2c",
            Policy::P2cEwma => "p2c-ewma",
            Policy::RingHash => "ring-hash",
            Policy::Maglev { .. } => "maglev",
        }
    }

    /// Every configuration word, in SPEC order.
    pub const NAMES: [&'static str; 8] = [
        "round-robin",
        "weighted-round-robin",
        "random",
        "least-request",
        "p2c",
        "p2c-ewma",
        "ring-hash",
        "maglev",
    ];

    /// Whether the policy hashes the request key (and so reads `hash_key`).
    pub fn is_hash(&self) -> bool {
        matches!(self, Policy::RingHash | Policy::Maglev { .. })
    }
}

impl Default for Policy {
    /// SPEC 3.1: `p2c-ewma`.
    fn default() -> Policy {
        Policy::P2cEwma
    }
}

/// A `balance` word that names no policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownPolicy(pub String);

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown balance policy {:?}, expected one of: {}",
            self.0,
            Policy::NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownPolicy {}

impl FromStr for Policy {
    type Err = UnknownPolicy;

    /// Parses a SPEC `balance` word; `maglev` gets the default table size.
    fn from_str(s: &str) -> Result<Policy, UnknownPolicy> {
        Ok(match s {
            "round-robin" => Policy::RoundRobin,
            "weighted-round-robin" => Policy::WeightedRoundRobin,
            "random" => Policy::Random,
            "least-request" => Policy::LeastRequest,
            "p2c" => Policy::P2c,
            "p2c-ewma" => Policy::P2cEwma,
            "ring-hash" => Policy::RingHash,
            "maglev" => Policy::Maglev {
                table_size: DEFAULT_TABLE_SIZE,
            },
            other => return Err(UnknownPolicy(other.to_owned())),
        })
    }
}

/// Why a picker or a Maglev table could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// Two endpoints share a name (names must be unique per cluster: the hash policies and
    /// the runtime's state carry-over key on them).
    DuplicateName(String),
    /// An endpoint weight is above 10000 (SPEC 3.1).
    WeightTooLarge {
        /// The endpoint's name.
        name: String,
        /// Its weight.
        weight: u32,
    },
    /// The Maglev table size is not a prime.
    TableSizeNotPrime(u32),
    /// The Maglev table size is smaller than the number of weighted endpoints.
    TableTooSmall {
        /// The requested size.
        size: u32,
        /// Endpoints with a weight above 0.
        endpoints: usize,
    },
    /// The Maglev table size is above [`MAX_TABLE_SIZE`].
    TableTooLarge(u32),
    /// A [`MaglevTable`] was asked for without any endpoint of weight above 0 (a [`Picker`]
    /// accepts that and never picks).
    NoWeightedEndpoint,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::DuplicateName(n) => write!(f, "endpoint name {n:?} appears twice"),
            BuildError::WeightTooLarge { name, weight } => {
                write!(
                    f,
                    "endpoint {name:?} has weight {weight}, above the maximum of 10000"
                )
            }
            BuildError::TableSizeNotPrime(m) => write!(f, "maglev table size {m} is not a prime"),
            BuildError::TableTooSmall { size, endpoints } => write!(
                f,
                "maglev table size {size} is smaller than the number of weighted endpoints ({endpoints})"
            ),
            BuildError::TableTooLarge(m) => {
                write!(
                    f,
                    "maglev table size {m} is above the maximum of {MAX_TABLE_SIZE}"
                )
            }
            BuildError::NoWeightedEndpoint => {
                write!(
                    f,
                    "a maglev table needs at least one endpoint with a weight above 0"
                )
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// The largest endpoint weight (SPEC 3.1).
pub const MAX_WEIGHT: u32 = 10_000;

/// The built state of one policy.
#[derive(Debug)]
enum Inner {
    RoundRobin(RoundRobin),
    WeightedRoundRobin(SmoothWeighted),
    Random(WeightedRandom),
    LeastRequest(LeastRequest),
    P2c(P2c),
    P2cEwma(P2cEwma),
    RingHash(RingHash),
    Maglev(MaglevPicker),
}

/// A built balancer for one endpoint set and one [`Policy`]. `Send + Sync`; every pick is
/// lock-free (round-robin counters are atomics, everything else is read-only after build).
#[derive(Debug)]
pub struct Picker {
    policy: Policy,
    len: usize,
    inner: Inner,
}

/// A view that hides the excluded endpoints, for [`Picker::pick_excluding`].
struct Excluding<'a> {
    load: &'a dyn LoadView,
    exclude: &'a [usize],
}

impl LoadView for Excluding<'_> {
    fn is_eligible(&self, index: usize) -> bool {
        !self.exclude.contains(&index) && self.load.is_eligible(index)
    }
    fn in_flight(&self, index: usize) -> u64 {
        self.load.in_flight(index)
    }
    fn latency_cost(&self, index: usize) -> f64 {
        self.load.latency_cost(index)
    }
    fn weight_factor(&self, index: usize) -> f64 {
        self.load.weight_factor(index)
    }
}

impl Picker {
    /// Builds the picker for `policy` over `endpoints`. An empty set, or one where every
    /// weight is 0, is allowed (every pick is `None`); duplicate names, weights above 10000
    /// and bad Maglev table sizes are not.
    pub fn new(policy: Policy, endpoints: &[EndpointSpec]) -> Result<Picker, BuildError> {
        eligible::check_endpoints(endpoints)?;
        let inner = match policy {
            Policy::RoundRobin => Inner::RoundRobin(RoundRobin::new(endpoints)),
            Policy::WeightedRoundRobin => Inner::WeightedRoundRobin(SmoothWeighted::new(endpoints)),
            Policy::Random => Inner::Random(WeightedRandom::new(endpoints)),
            Policy::LeastRequest => Inner::LeastRequest(LeastRequest::new(endpoints)),
            Policy::P2c => Inner::P2c(P2c::new(endpoints)),
            Policy::P2cEwma => Inner::P2cEwma(P2cEwma::new(endpoints)),
            Policy::RingHash => Inner::RingHash(RingHash::new(endpoints)),
            Policy::Maglev { table_size } => {
                Inner::Maglev(MaglevPicker::new(endpoints, table_size)?)
            }
        };
        Ok(Picker {
            policy,
            len: endpoints.len(),
            inner,
        })
    }

    /// Chooses an endpoint index for one request or flow, or `None` when no endpoint is
    /// pickable (eligible with a weight above 0).
    ///
    /// `key` is the request's hash key ([`crate::hash`]); only the hash policies read it, and
    /// they balance a request without one by p2c-ewma (SPEC 3.1). A keyed pick whose owner is
    /// not pickable walks on deterministically (ring: the following virtual nodes; Maglev:
    /// the following table slots), so keys of pickable endpoints never move and instances
    /// that agree on eligibility agree on the pick.
    pub fn pick(
        &self,
        key: Option<u64>,
        load: &dyn LoadView,
        rng: &mut dyn RngCore,
    ) -> Option<usize> {
        match &self.inner {
            Inner::RoundRobin(p) => p.pick(load, rng),
            Inner::WeightedRoundRobin(p) => p.pick(load, rng),
            Inner::Random(p) => p.pick(load, rng),
            Inner::LeastRequest(p) => p.pick(load, rng),
            Inner::P2c(p) => p.pick(load, rng),
            Inner::P2cEwma(p) => p.pick(load, rng),
            Inner::RingHash(p) => p.pick(key, load, rng),
            Inner::Maglev(p) => p.pick(key, load, rng),
        }
    }

    /// Like [`Picker::pick`], treating the endpoints in `exclude` as ineligible: the next
    /// candidate after a failed connect, or the endpoint for a retry or a hedge. Returns
    /// `None` when every pickable endpoint is excluded (the caller decides whether to reuse
    /// one). For a hash policy the result is the owner's deterministic successor.
    pub fn pick_excluding(
        &self,
        key: Option<u64>,
        load: &dyn LoadView,
        rng: &mut dyn RngCore,
        exclude: &[usize],
    ) -> Option<usize> {
        if exclude.is_empty() {
            return self.pick(key, load, rng);
        }
        self.pick(key, &Excluding { load, exclude }, rng)
    }

    /// The policy the picker was built for.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The number of endpoints the picker was built from.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the picker was built from an empty endpoint set.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The Maglev table, for `Policy::Maglev` with at least one weighted endpoint.
    pub fn maglev_table(&self) -> Option<&MaglevTable> {
        match &self.inner {
            Inner::Maglev(p) => p.table(),
            _ => None,
        }
    }
}

/// Test endpoints `{prefix}0`, `{prefix}1`, ... with `weights`, for every policy's tests.
#[cfg(test)]
pub(crate) fn test_endpoints(prefix: &str, weights: &[u32]) -> Vec<EndpointSpec> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| EndpointSpec::new(format!("{prefix}{i}"), w))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn a_picker_can_be_shared_by_all_worker_threads() {
        assert_send_sync::<Picker>();
        assert_send_sync::<MaglevTable>();
    }

    #[test]
    fn every_spec_word_parses_and_round_trips() {
        for word in Policy::NAMES {
            let p: Policy = word.parse().expect("a SPEC word");
            assert_eq!(p.name(), word);
        }
        assert!("least-connections".parse::<Policy>().is_err());
        assert_eq!(Policy::default(), Policy::P2cEwma);
        assert_eq!(
            "maglev".parse::<Policy>(),
            Ok(Policy::Maglev { table_size: 65_537 })
        );
    }

    #[test]
    fn duplicate_names_and_oversized_weights_are_refused() {
        let eps = [EndpointSpec::new("a", 1), EndpointSpec::new("a", 2)];
        let err = Picker::new(Policy::RoundRobin, &eps).err();
        assert_eq!(err, Some(BuildError::DuplicateName("a".into())));
        let eps = [EndpointSpec::new("a", 10_001)];
        assert!(matches!(
            Picker::new(Policy::Random, &eps),
            Err(BuildError::WeightTooLarge { weight: 10_001, .. })
        ));
    }

    #[test]
    fn an_empty_picker_never_picks() {
        let mut rng = SmallRng::seed_from_u64(0);
        for word in Policy::NAMES {
            let p = Picker::new(word.parse().expect("policy"), &[]).expect("picker");
            assert!(p.is_empty());
            assert_eq!(p.pick(Some(1), &StaticLoad::uniform(0), &mut rng), None);
            assert_eq!(p.pick(None, &StaticLoad::uniform(0), &mut rng), None);
        }
    }

    #[test]
    fn retries_go_to_a_different_endpoint_until_none_is_left() {
        let eps: Vec<_> = (0..3)
            .map(|i| EndpointSpec::new(format!("e{i}"), 1))
            .collect();
        let load = StaticLoad::uniform(3);
        let mut rng = SmallRng::seed_from_u64(5);
        for word in Policy::NAMES {
            let p = Picker::new(word.parse().expect("policy"), &eps).expect("picker");
            for key in [None, Some(12_345)] {
                let first = p.pick(key, &load, &mut rng).expect("first");
                let second = p
                    .pick_excluding(key, &load, &mut rng, &[first])
                    .expect("second");
                assert_ne!(first, second, "{word}");
                let third = p
                    .pick_excluding(key, &load, &mut rng, &[first, second])
                    .expect("third");
                assert!(third != first && third != second, "{word}");
                assert_eq!(
                    p.pick_excluding(key, &load, &mut rng, &[0, 1, 2]),
                    None,
                    "{word}"
                );
            }
        }
    }

    #[test]
    fn a_hash_policy_without_a_key_balances_by_latency() {
        let eps: Vec<_> = (0..2)
            .map(|i| EndpointSpec::new(format!("e{i}"), 1))
            .collect();
        let mut load = StaticLoad::uniform(2);
        load.latency_ns = vec![100e6, 1e6];
        let mut rng = SmallRng::seed_from_u64(1);
        for policy in [Policy::RingHash, Policy::Maglev { table_size: 251 }] {
            let p = Picker::new(policy, &eps).expect("picker");
            assert!(
                (0..100).all(|_| p.pick(None, &load, &mut rng) == Some(1)),
                "{policy:?}"
            );
            let keyed = p.pick(Some(7), &load, &mut rng);
            assert!((0..100).all(|_| p.pick(Some(7), &load, &mut rng) == keyed));
        }
    }

    #[test]
    fn worker_threads_share_one_round_robin_counter() {
        let eps: Vec<_> = (0..4)
            .map(|i| EndpointSpec::new(format!("e{i}"), 1))
            .collect();
        let picker = std::sync::Arc::new(Picker::new(Policy::RoundRobin, &eps).expect("picker"));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let picker = picker.clone();
                std::thread::spawn(move || {
                    let load = StaticLoad::uniform(4);
                    let mut rng = SmallRng::seed_from_u64(t);
                    let mut counts = [0u32; 4];
                    for _ in 0..10_000 {
                        counts[picker.pick(None, &load, &mut rng).expect("pick")] += 1;
                    }
                    counts
                })
            })
            .collect();
        let mut total = [0u32; 4];
        for h in handles {
            for (t, c) in total.iter_mut().zip(h.join().expect("thread")) {
                *t += c;
            }
        }
        assert_eq!(total, [10_000; 4]);
    }
}
