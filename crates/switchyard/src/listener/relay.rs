//! Moving bytes between a client and an upstream until both sides are done.
//!
//! Each direction is copied on its own, so a half-close travels through: when one side
//! shuts its write half, the other side's write half is shut after the last byte, and the
//! opposite direction keeps flowing (SPEC 7 "half-close in both directions"). Both
//! directions share one idle clock: the connection is idle only when *neither* moved a byte
//! for `idle_timeout`. A drain deadline closes the connection whatever it is doing.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::admin::metrics::{self, Counter, Registry};

/// Bytes buffered per direction.
pub const BUFFER_BYTES: usize = 16 * 1024;

/// Why a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides closed their write halves.
    Done,
    /// No byte moved either way for `idle_timeout`.
    Idle,
    /// Reading from or writing to the client failed.
    ClientError,
    /// Reading from or writing to the upstream failed.
    UpstreamError,
    /// The drain time of a shutdown ran out.
    Shutdown,
}

impl CloseReason {
    /// A short word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Done => "done",
            CloseReason::Idle => "idle_timeout",
            CloseReason::ClientError => "client_error",
            CloseReason::UpstreamError => "upstream_error",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// What a relay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOutcome {
    /// Bytes read from the client (and written upstream).
    pub rx: u64,
    /// Bytes read from the upstream (and written to the client).
    pub tx: u64,
    /// Why it ended.
    pub reason: CloseReason,
}

/// Byte counters of one listener, added to as bytes move.
#[derive(Debug, Clone)]
pub struct ByteCounters {
    /// From the client.
    pub rx: Counter,
    /// To the client.
    pub tx: Counter,
}

impl ByteCounters {
    /// `bytes_total{listener, direction}` of `listener`, both directions.
    pub fn new(listener: &str, registry: &Registry) -> ByteCounters {
        ByteCounters {
            rx: registry.counter(&metrics::BYTES_TOTAL, &[listener, "rx"]),
            tx: registry.counter(&metrics::BYTES_TOTAL, &[listener, "tx"]),
        }
    }
}

/// When the connection last moved a byte, shared by both directions.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records that bytes moved now.
    pub(crate) fn touch(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(elapsed, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = self.start + last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Which side of the connection an I/O error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Upstream,
}

impl Side {
    /// The side a direction reading from `self` writes to.
    pub(crate) fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }
}

/// A direction failed because of `side`.
#[derive(Debug)]
pub(crate) struct DirectionError {
    pub(crate) side: Side,
}

/// Runs both directions until both finish, one fails, the connection idles, or `stop`.
pub(crate) async fn run_directions(
    upstream_bound: impl Future<Output = Result<(), DirectionError>>,
    client_bound: impl Future<Output = Result<(), DirectionError>>,
    activity: &Activity,
    idle_timeout: Duration,
    stop: impl Future<Output = ()>,
) -> CloseReason {
    tokio::select! {
        result = async { tokio::try_join!(upstream_bound, client_bound) } => match result {
            Ok(_) => CloseReason::Done,
            Err(DirectionError { side: Side::Client }) => CloseReason::ClientError,
            Err(DirectionError { side: Side::Upstream }) => CloseReason::UpstreamError,
        },
        () = activity.idle(idle_timeout) => CloseReason::Idle,
        () = stop => CloseReason::Shutdown,
    }
}

/// Relays between `client` and `upstream` with user-space copies until both are done, one
/// errs, the connection is idle for `idle_timeout`, or `stop` resolves.
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    idle_timeout: Duration,
    counters: &ByteCounters,
    stop: impl Future<Output = ()>,
) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let activity = Activity::new();
    let rx = AtomicU64::new(0);
    let tx = AtomicU64::new(0);
    let upstream_bound = copy(
        &mut client_read,
        &mut upstream_write,
        Side::Client,
        &counters.rx,
        &rx,
        &activity,
    );
    let client_bound = copy(
        &mut upstream_read,
        &mut client_write,
        Side::Upstream,
        &counters.tx,
        &tx,
        &activity,
    );
    let reason = run_directions(upstream_bound, client_bound, &activity, idle_timeout, stop).await;
    RelayOutcome {
        rx: rx.load(Ordering::Relaxed),
        tx: tx.load(Ordering::Relaxed),
        reason,
    }
}

/// Copies one direction; on EOF shuts the destination's write half. `read_side` is the
/// side read from: an error while writing is blamed on the other side.
async fn copy<R, W>(
    from: &mut R,
    to: &mut W,
    read_side: Side,
    counter: &Counter,
    moved: &AtomicU64,
    activity: &Activity,
) -> Result<(), DirectionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let write_side = read_side.other();
    let mut buf = vec![0u8; BUFFER_BYTES];
    loop {
        let n = from
            .read(&mut buf)
            .await
            .map_err(|_| DirectionError { side: read_side })?;
        if n == 0 {
            // A peer that already closed its read side makes shutdown fail; the
            // direction is finished either way.
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n])
            .await
            .map_err(|_| DirectionError { side: write_side })?;
        let bytes = n as u64;
        counter.add(bytes);
        moved.fetch_add(bytes, Ordering::Relaxed);
        activity.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> ByteCounters {
        ByteCounters {
            rx: Counter::default(),
            tx: Counter::default(),
        }
    }

    #[tokio::test]
    async fn half_close_travels_and_the_other_direction_keeps_flowing() {
        let (mut client, client_proxy) = tokio::io::duplex(64);
        let (upstream_proxy, mut upstream) = tokio::io::duplex(64);
        let counters = counters();
        let relay = tokio::spawn({
            let counters = counters.clone();
            async move {
                relay(
                    client_proxy,
                    upstream_proxy,
                    Duration::from_secs(30),
                    &counters,
                    std::future::pending(),
                )
                .await
            }
        });
        client.write_all(b"ping").await.expect("write");
        client.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.expect("read to EOF");
        assert_eq!(got, b"ping");
        upstream
            .write_all(b"pong after half-close")
            .await
            .expect("write");
        upstream.shutdown().await.expect("shutdown");
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"pong after half-close");
        let outcome = relay.await.expect("relay");
        assert_eq!(outcome.reason, CloseReason::Done);
        assert_eq!((outcome.rx, outcome.tx), (4, 21));
        assert_eq!((counters.rx.get(), counters.tx.get()), (4, 21));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let (_client, client_proxy) = tokio::io::duplex(64);
        let (upstream_proxy, _upstream) = tokio::io::duplex(64);
        let started = Instant::now();
        let outcome = relay(
            client_proxy,
            upstream_proxy,
            Duration::from_secs(60),
            &counters(),
            std::future::pending(),
        )
        .await;
        assert_eq!(outcome.reason, CloseReason::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_in_one_direction_keeps_the_connection_alive() {
        let (mut client, client_proxy) = tokio::io::duplex(1024);
        let (upstream_proxy, mut upstream) = tokio::io::duplex(1024);
        let relay = tokio::spawn(async move {
            relay(
                client_proxy,
                upstream_proxy,
                Duration::from_secs(10),
                &counters(),
                std::future::pending(),
            )
            .await
        });
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"x").await.expect("write");
            let mut one = [0u8; 1];
            upstream.read_exact(&mut one).await.expect("read");
        }
        assert!(!relay.is_finished(), "30 s of one-way traffic is not idle");
        let outcome = relay.await.expect("relay");
        assert_eq!(outcome.reason, CloseReason::Idle);
        assert_eq!(outcome.rx, 5);
    }

    #[tokio::test]
    async fn stop_closes_a_busy_connection() {
        let (_client, client_proxy) = tokio::io::duplex(64);
        let (upstream_proxy, _upstream) = tokio::io::duplex(64);
        let outcome = relay(
            client_proxy,
            upstream_proxy,
            Duration::from_secs(60),
            &counters(),
            async {},
        )
        .await;
        assert_eq!(outcome.reason, CloseReason::Shutdown);
    }
}
