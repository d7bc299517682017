//! A VIP's Maglev table, built by `switchyard_algo` from the VIP's cluster exactly as an
//! L4/L7 `maglev` cluster builds its own, and the slots resolved for the endpoints eligible
//! right now ([`switchyard_algo::resolve_slots`]: an ineligible owner's slots go where the
//! keyed picker would send them, nothing else moves).
//!
//! The key of a packet is the SPEC 3.1 `5-tuple` key, which `bpf/lb.c` computes with the
//! same xxh64, so [`predict`] tells which endpoint any flow reaches: the control plane and
//! the tests use it, and a flow gets the same endpoint from the XDP tier as from an L4
//! listener over a `maglev` cluster with `hash_key = "5-tuple"` and the same eligibility.

use std::net::SocketAddrV4;

use switchyard_algo::hash::key_for_five_tuple;
use switchyard_algo::{BuildError, EndpointSpec, MaglevTable, resolve_slots};

/// One VIP's table over its cluster's endpoints (in cluster order).
#[derive(Debug, Clone)]
pub struct VipTable {
    specs: Vec<EndpointSpec>,
    table: Option<MaglevTable>,
    size: u32,
}

impl VipTable {
    /// Builds the table of `size` slots over `(name, weight)` endpoints. A cluster whose
    /// endpoints all weigh 0 has no table: every slot is empty.
    pub fn build(endpoints: &[(String, u32)], size: u32) -> Result<VipTable, BuildError> {
        let specs: Vec<EndpointSpec> = endpoints
            .iter()
            .map(|(name, weight)| EndpointSpec::new(name.clone(), *weight))
            .collect();
        let table = match MaglevTable::build(&specs, size) {
            Ok(t) => Some(t),
            Err(BuildError::NoWeightedEndpoint) => None,
            Err(e) => return Err(e),
        };
        Ok(VipTable { specs, table, size })
    }

    /// The table size M.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The endpoints' names and weights the table was built from.
    pub fn endpoints(&self) -> &[EndpointSpec] {
        &self.specs
    }

    /// Every slot's endpoint (index into the endpoints) when `eligible[i]` says which may
    /// be picked; `None` where no endpoint is eligible.
    pub fn resolve(&self, eligible: &[bool]) -> Vec<Option<u32>> {
        match &self.table {
            Some(table) => resolve_slots(table, &self.specs, &|i| {
                eligible.get(i).copied().unwrap_or(false)
            }),
            None => vec![None; self.size as usize],
        }
    }
}

/// The slot of a flow: the SPEC 3.1 `5-tuple` key modulo M.
pub fn slot_of(client: SocketAddrV4, vip: SocketAddrV4, protocol: u8, size: u32) -> usize {
    let key = key_for_five_tuple(client.into(), vip.into(), protocol);
    (key % u64::from(size.max(1))) as usize
}

/// The endpoint a new flow reaches through resolved `slots`.
pub fn predict(
    slots: &[Option<u32>],
    client: SocketAddrV4,
    vip: SocketAddrV4,
    protocol: u8,
) -> Option<u32> {
    let size = slots.len() as u32;
    slots
        .get(slot_of(client, vip, protocol, size))
        .copied()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<(String, u32)> {
        (1..=n).map(|i| (format!("b{i}"), 1)).collect()
    }

    #[test]
    fn the_resolved_table_with_everyone_eligible_is_the_algo_crates_table() {
        let t = VipTable::build(&names(3), 251).expect("table");
        let specs: Vec<EndpointSpec> = names(3)
            .into_iter()
            .map(|(n, w)| EndpointSpec::new(n, w))
            .collect();
        let algo = MaglevTable::build(&specs, 251).expect("table");
        let resolved = t.resolve(&[true; 3]);
        assert!(
            resolved
                .iter()
                .zip(algo.slots())
                .all(|(a, b)| *a == Some(*b))
        );
        assert!(t.resolve(&[false; 3]).iter().all(Option::is_none));
    }

    #[test]
    fn an_unweighted_cluster_has_empty_slots() {
        let t = VipTable::build(&[("a".into(), 0)], 7).expect("table");
        assert_eq!(t.resolve(&[true]), vec![None; 7]);
    }
}
