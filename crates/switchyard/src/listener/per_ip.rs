//! `max_connections_per_ip`: a cap on concurrent connections (or UDP flows) per client.
//!
//! IPv4 clients are counted per address; IPv6 clients per /64 prefix, since one host
//! usually owns a whole /64 and could otherwise rotate addresses to dodge the cap
//! (SPEC 3.1 listener limits). Entries exist only while a client has something open, so
//! the table is bounded by the listener's `max_connections`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The unit a client is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// One IPv4 address (IPv4-mapped IPv6 addresses count as IPv4).
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl ClientKey {
    /// The key `ip` is counted under.
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(u32::from(v4)),
                None => ClientKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Open connections per client of one listener.
#[derive(Debug, Default)]
pub struct PerIpCounts {
    open: Mutex<HashMap<ClientKey, u32>>,
}

/// Held while a client's connection is open; dropping it releases the slot.
#[derive(Debug)]
pub struct PerIpSlot {
    counts: Arc<PerIpCounts>,
    key: ClientKey,
}

impl PerIpCounts {
    /// Takes a slot for `ip` unless it already holds `limit` (0 = no limit: always granted).
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr, limit: u32) -> Option<PerIpSlot> {
        let key = ClientKey::of(ip);
        let mut open = self.lock();
        let count = open.entry(key).or_insert(0);
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(PerIpSlot {
            counts: Arc::clone(self),
            key,
        })
    }

    /// Clients with at least one open connection.
    pub fn clients(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, u32>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut open = self.counts.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_client_gets_at_most_limit_slots_and_gets_them_back() {
        let counts = Arc::new(PerIpCounts::default());
        let a = counts.try_acquire(ip("10.0.0.1"), 2).expect("first");
        let _b = counts.try_acquire(ip("10.0.0.1"), 2).expect("second");
        assert!(counts.try_acquire(ip("10.0.0.1"), 2).is_none());
        assert!(
            counts.try_acquire(ip("10.0.0.2"), 2).is_some(),
            "other clients unaffected"
        );
        drop(a);
        assert!(counts.try_acquire(ip("10.0.0.1"), 2).is_some());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_prefix_and_mapped_v4_as_v4() {
        let counts = Arc::new(PerIpCounts::default());
        let _a = counts.try_acquire(ip("2001:db8:1:2::1"), 1).expect("first");
        assert!(
            counts.try_acquire(ip("2001:db8:1:2::ffff"), 1).is_none(),
            "same /64"
        );
        assert!(
            counts.try_acquire(ip("2001:db8:1:3::1"), 1).is_some(),
            "other /64"
        );
        let _v4 = counts.try_acquire(ip("192.0.2.7"), 1).expect("v4");
        assert!(counts.try_acquire(ip("::ffff:192.0.2.7"), 1).is_none());
    }

    #[test]
    fn the_table_forgets_clients_with_nothing_open() {
        let counts = Arc::new(PerIpCounts::default());
        let slot = counts.try_acquire(ip("10.0.0.1"), 0).expect("unlimited");
        assert_eq!(counts.clients(), 1);
        drop(slot);
        assert_eq!(counts.clients(), 0);
        assert!(counts.try_acquire(ip("10.0.0.9"), 0).is_some());
    }
}
