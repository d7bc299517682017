//! The flow table of one UDP listener and the small task that carries a flow's replies.
//!
//! The table is shared by the receive task (lookup, insert) and the flow tasks (removal on
//! idle). Its mutex is never held across an await. Idle expiry is decided *under the lock*:
//! the receive task records activity while holding it, so a flow that just got a datagram
//! can never be removed between the lookup and the send.
//!
//! A flow task holds no datagram buffer: it waits for readability, then reads into a
//! buffer owned by the worker thread and sends from it without awaiting. Only when the
//! listener socket has no room is the datagram copied, at its own size, to wait.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::debug;

use super::{DATAGRAM_BUFFER, UdpListenerRuntime};
use crate::admin::access_log::{AccessLog, L4Line};
use crate::cluster::endpoint::ConnectFailure;
use crate::cluster::{Cluster, InFlight};
use crate::listener::per_ip::PerIpSlot;
use crate::listener::relay::CloseReason;
use crate::runtime::clock;
use crate::runtime::shutdown::{Phase, Shutdown, TrackedConnection};

thread_local! {
    /// The reply buffer of this worker thread: flow tasks borrow it only inside one
    /// synchronous receive-and-send, so one per thread serves every flow.
    static REPLY_BUFFER: RefCell<Box<[u8]>> =
        RefCell::new(vec![0u8; DATAGRAM_BUFFER].into_boxed_slice());
}

/// One live flow: its upstream socket, endpoint and counters.
#[derive(Debug)]
pub(super) struct Flow {
    upstream: UdpSocket,
    /// Held for the flow's life: `endpoint_in_flight` counts flows.
    in_flight: InFlight,
    cluster: Arc<Cluster>,
    /// Held for the flow's life: `max_connections_per_ip` counts flows.
    _slot: PerIpSlot,
    runtime: Arc<UdpListenerRuntime>,
    /// Milliseconds since the table's epoch of the last datagram either way.
    last_activity: AtomicU64,
    rx: AtomicU64,
    tx: AtomicU64,
}

impl Flow {
    /// A new flow whose last activity is `now_ms` (the table's clock).
    pub(super) fn new(
        upstream: UdpSocket,
        in_flight: InFlight,
        cluster: Arc<Cluster>,
        slot: PerIpSlot,
        runtime: Arc<UdpListenerRuntime>,
        now_ms: u64,
    ) -> Flow {
        Flow {
            upstream,
            in_flight,
            cluster,
            _slot: slot,
            runtime,
            last_activity: AtomicU64::new(now_ms),
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
        }
    }

    /// Sends one client datagram upstream. A failure drops the datagram (UDP semantics);
    /// a refusal (an ICMP port-unreachable reported on this send) counts against the
    /// endpoint like a refused connect.
    pub(super) async fn forward(&self, datagram: &[u8]) {
        match self.upstream.send(datagram).await {
            Ok(n) => {
                let n = n as u64;
                self.rx.fetch_add(n, Ordering::Relaxed);
                self.runtime.bytes.rx.add(n);
            }
            Err(error) => self.upstream_error(&error),
        }
    }

    fn upstream_error(&self, error: &io::Error) {
        let endpoint = self.in_flight.endpoint();
        if error.kind() == io::ErrorKind::ConnectionRefused {
            endpoint.record_connect_failure(ConnectFailure::Refused, clock::now());
        }
        debug!(listener = %self.runtime.name, endpoint = %endpoint.name, %error,
            "udp upstream error; datagram lost");
    }
}

/// The flows of one listener, by client address.
#[derive(Debug)]
pub(super) struct FlowTable {
    epoch: Instant,
    flows: Mutex<HashMap<SocketAddr, Arc<Flow>>>,
}

impl FlowTable {
    /// An empty table.
    pub(super) fn new() -> FlowTable {
        FlowTable {
            epoch: Instant::now(),
            flows: Mutex::new(HashMap::new()),
        }
    }

    /// Milliseconds since the table's epoch.
    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<Flow>>> {
        self.flows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The flow of `client`, its activity refreshed (under the lock, see the module docs).
    pub(super) fn touch(&self, client: SocketAddr) -> Option<Arc<Flow>> {
        let flows = self.lock();
        let flow = flows.get(&client)?;
        flow.last_activity.store(self.now_ms(), Ordering::Relaxed);
        Some(Arc::clone(flow))
    }

    /// Adds the flow of `client`.
    pub(super) fn insert(&self, client: SocketAddr, flow: Arc<Flow>) {
        self.lock().insert(client, flow);
    }

    /// Whether no flow is live.
    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Removes `flow` if it is still `client`'s entry.
    fn remove(&self, client: SocketAddr, flow: &Arc<Flow>) {
        let mut flows = self.lock();
        if flows.get(&client).is_some_and(|f| Arc::ptr_eq(f, flow)) {
            flows.remove(&client);
        }
    }

    /// Removes `flow` if nothing moved for `timeout`; says whether it did.
    fn remove_if_idle(&self, client: SocketAddr, flow: &Arc<Flow>, timeout: Duration) -> bool {
        let mut flows = self.lock();
        let last = Duration::from_millis(flow.last_activity.load(Ordering::Relaxed));
        if self.epoch.elapsed() < last + timeout {
            return false;
        }
        if flows.get(&client).is_some_and(|f| Arc::ptr_eq(f, flow)) {
            flows.remove(&client);
        }
        true
    }

    /// Resolves once `flow` was idle for `timeout` and has been removed.
    async fn expired(&self, client: SocketAddr, flow: &Arc<Flow>, timeout: Duration) {
        loop {
            let last = Duration::from_millis(flow.last_activity.load(Ordering::Relaxed));
            tokio::time::sleep_until(self.epoch + last + timeout).await;
            if self.remove_if_idle(client, flow, timeout) {
                return;
            }
        }
    }
}

/// Carries `flow`'s replies to `client` from the listener socket until the flow is idle
/// for the listener's `idle_timeout` or the drain time runs out; then removes the flow.
pub(super) async fn run(
    flow: Arc<Flow>,
    client: SocketAddr,
    table: Arc<FlowTable>,
    listener: Arc<UdpSocket>,
    log: AccessLog,
    shutdown: Shutdown,
    tracked: TrackedConnection,
) {
    let _tracked = tracked;
    let started = Instant::now();
    let timeout = flow.runtime.idle_timeout;
    let reason = tokio::select! {
        () = replies(&flow, client, &table, &listener) => CloseReason::Shutdown,
        () = table.expired(client, &flow, timeout) => CloseReason::Idle,
        () = shutdown.reached(Phase::Closed) => {
            table.remove(client, &flow);
            CloseReason::Shutdown
        }
    };
    flow.runtime.flows.dec();
    flow.runtime.active.dec();
    debug!(
        listener = %flow.runtime.name,
        endpoint = %flow.in_flight.endpoint().name,
        %client,
        rx = flow.rx.load(Ordering::Relaxed),
        tx = flow.tx.load(Ordering::Relaxed),
        duration_ms = started.elapsed().as_millis() as u64,
        close_reason = reason.as_str(),
        "udp flow closed"
    );
    log.log(&L4Line {
        listener: &flow.runtime.name,
        cluster: Some(flow.cluster.name()),
        endpoint: Some(&flow.in_flight.endpoint().name),
        protocol: "udp",
        client: client.to_string(),
        bytes_in: flow.rx.load(Ordering::Relaxed),
        bytes_out: flow.tx.load(Ordering::Relaxed),
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
        close_reason: reason.as_str(),
    });
}

/// What one synchronous read of the upstream socket gave.
enum Received {
    /// A reply of this many bytes was sent to the client.
    Sent(usize),
    /// A reply arrived but the listener socket had no room: it waits, copied.
    Blocked(Vec<u8>),
    /// Nothing more to read now.
    Drained,
    /// Reading the upstream socket failed (a pending ICMP error, ...).
    Failed(io::Error),
    /// Sending to the client failed; the reply is lost.
    Lost,
}

/// Forwards replies forever (the caller's `select!` ends the flow).
async fn replies(flow: &Flow, client: SocketAddr, table: &FlowTable, listener: &UdpSocket) {
    loop {
        // An ICMP error (port unreachable) wakes a socket with EPOLLERR alone, not as
        // readable, so the error readiness is awaited too.
        match flow
            .upstream
            .ready(Interest::READABLE | Interest::ERROR)
            .await
        {
            Ok(ready) if ready.is_error() => {
                if let Ok(Some(error)) = flow.upstream.take_error() {
                    flow.upstream_error(&error);
                }
                // Clear the error readiness, or the next wait would return at once.
                let _ = flow.upstream.try_io(Interest::ERROR, || {
                    Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
                });
            }
            Ok(_) => {}
            Err(error) => {
                // The socket's registration is gone: nothing more will arrive; idle expiry
                // or shutdown ends the flow.
                debug!(%error, "udp upstream socket unusable");
                std::future::pending::<()>().await;
            }
        }
        loop {
            let sent = match receive_and_send(&flow.upstream, listener, client) {
                Received::Drained => break,
                Received::Sent(n) => Some(n),
                Received::Blocked(copy) => match listener.send_to(&copy, client).await {
                    Ok(n) => Some(n),
                    Err(error) => {
                        debug!(%client, %error, "udp reply to client failed; datagram lost");
                        None
                    }
                },
                Received::Failed(error) => {
                    flow.upstream_error(&error);
                    None
                }
                Received::Lost => None,
            };
            if let Some(n) = sent {
                let n = n as u64;
                flow.tx.fetch_add(n, Ordering::Relaxed);
                flow.runtime.bytes.tx.add(n);
                flow.last_activity.store(table.now_ms(), Ordering::Relaxed);
            }
        }
    }
}

/// Reads one datagram from `upstream` into the thread's buffer and sends it to `client`
/// without waiting.
fn receive_and_send(upstream: &UdpSocket, listener: &UdpSocket, client: SocketAddr) -> Received {
    REPLY_BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => receive_into(&mut buf, upstream, listener, client),
        // Never re-entered in practice; a temporary buffer keeps it correct if it were.
        Err(_) => receive_into(&mut vec![0u8; DATAGRAM_BUFFER], upstream, listener, client),
    })
}

fn receive_into(
    buf: &mut [u8],
    upstream: &UdpSocket,
    listener: &UdpSocket,
    client: SocketAddr,
) -> Received {
    let n = match upstream.try_recv(buf) {
        Ok(n) => n,
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Received::Drained,
        Err(error) => return Received::Failed(error),
    };
    let reply = &buf[..n];
    match listener.try_send_to(reply, client) {
        Ok(sent) => Received::Sent(sent),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
            Received::Blocked(reply.to_vec())
        }
        Err(error) => {
            debug!(%client, %error, "udp reply to client failed; datagram lost");
            Received::Lost
        }
    }
}
