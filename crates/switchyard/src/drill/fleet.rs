//! The drill's backends: `switchyard backend` instances in this process, one per slot,
//! that can be degraded, restored, killed and started again on the same address.
//!
//! Killing drops the backend (every connection closes at once, as when a process dies);
//! starting again binds the same port with a fresh fault state and fresh counters, as a
//! restarted process would. The slot keeps the requests of earlier lives, so per-second
//! attempt counts stay continuous across a restart.

use std::net::SocketAddr;
use std::time::Duration;

use super::scenario::Backends;
use super::timeline::Degrade;
use crate::backend::{self, BackendArgs, BackendHandle};

struct Slot {
    args: BackendArgs,
    address: SocketAddr,
    handle: Option<BackendHandle>,
    /// Requests served by earlier lives of this slot.
    earlier: u64,
}

/// The fleet.
pub struct Fleet {
    slots: Vec<Slot>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("backends", &self.slots.len())
            .finish()
    }
}

impl Fleet {
    /// Starts `spec.count` backends named b1..bN on loopback.
    pub async fn start(spec: &Backends, seed: u64) -> Result<Self, String> {
        let mut slots = Vec::with_capacity(spec.count);
        for i in 0..spec.count {
            let mut args = BackendArgs::for_test(&format!("b{}", i + 1));
            args.concurrency = spec.concurrency;
            args.latency = Some(spec.service_time);
            args.seed = Some(seed.wrapping_mul(1000).wrapping_add(i as u64));
            let handle = backend::spawn(args.clone())
                .await
                .map_err(|e| e.to_string())?;
            let address = handle.local_addr();
            args.listen = address;
            slots.push(Slot {
                args,
                address,
                handle: Some(handle),
                earlier: 0,
            });
        }
        Ok(Self { slots })
    }

    /// `(name, address)` of every backend.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("b{}", i + 1), s.address))
            .collect()
    }

    /// The names, b1..bN.
    pub fn names(&self) -> Vec<String> {
        (1..=self.slots.len()).map(|i| format!("b{i}")).collect()
    }

    /// Requests each backend received so far, over all its lives.
    pub fn requests(&self) -> Vec<u64> {
        self.slots
            .iter()
            .map(|s| s.earlier + s.handle.as_ref().map_or(0, |h| h.control().requests()))
            .collect()
    }

    /// Whether backend `i` is running.
    pub fn alive(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.handle.is_some())
    }

    /// Makes backend `i`'s answers worse (no effect while it is killed).
    pub fn degrade(&self, i: usize, how: Degrade) {
        let Some(handle) = self.slots.get(i).and_then(|s| s.handle.as_ref()) else {
            return;
        };
        handle.control().set(|f| match how {
            Degrade::Latency(l) => f.latency = l,
            Degrade::Errors {
                rate,
                status,
                latency,
                healthz,
            } => {
                f.error_rate = rate;
                f.error_status = status;
                if let Some(l) = latency {
                    f.latency = l;
                }
                f.apply_to_healthz = healthz;
            }
        });
    }

    /// Gives backend `i` back its initial fault state.
    pub fn restore(&self, i: usize) {
        if let Some(slot) = self.slots.get(i) {
            if let Some(handle) = &slot.handle {
                handle.control().replace(slot.args.faults());
            }
        }
    }

    /// Kills backend `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(slot) = self.slots.get_mut(i) {
            if let Some(handle) = slot.handle.take() {
                slot.earlier += handle.control().requests();
                drop(handle);
            }
        }
    }

    /// Starts backend `i` again on its address (retrying the bind for up to 2 s while the
    /// old socket is released).
    pub async fn restart(&mut self, i: usize) -> Result<(), String> {
        let Some(slot) = self.slots.get_mut(i) else {
            return Err(format!("no backend {}", i + 1));
        };
        if slot.handle.is_some() {
            return Ok(());
        }
        let mut last = String::new();
        for _ in 0..40 {
            match backend::spawn(slot.args.clone()).await {
                Ok(handle) => {
                    slot.handle = Some(handle);
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("cannot restart b{}: {last}", i + 1))
    }
}
