//! Zero-copy relaying between two TCP sockets with `splice(2)` through a pipe (Linux).
//!
//! A user-space relay copies every byte twice (kernel to buffer, buffer to kernel). With
//! `splice` the bytes move from one socket's receive queue into a pipe and from the pipe
//! into the other socket's send queue as page references, so bulk transfers cost fewer
//! copies and no user-space buffer. Each direction owns one pipe (two descriptors); when
//! pipes cannot be made (descriptor limit) the caller falls back to [`super::relay::relay`].

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::relay::{Activity, ByteCounters, DirectionError, RelayOutcome, Side, run_directions};
use crate::admin::metrics::Counter;

/// Bytes asked of one `splice` call: the default pipe capacity (16 pages).
const CHUNK: usize = 64 * 1024;

/// Empty pipes kept per worker thread for the next connections: creating and closing two
/// pipes per connection would cost six syscalls on every short connection.
const POOLED_PIPES_PER_THREAD: usize = 64;

/// A pipe owned by one direction of a relay.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes spliced in and not yet out: only an empty pipe may be reused.
    pending: AtomicUsize,
}

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    /// A pooled empty pipe, or a new one.
    fn take() -> io::Result<Pipe> {
        if let Some(pipe) = POOL.with(|pool| pool.borrow_mut().pop()) {
            return Ok(pipe);
        }
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Pipe {
            read,
            write,
            pending: AtomicUsize::new(0),
        })
    }

    /// Returns the pipe to this thread's pool if it is empty (else it is closed).
    fn give_back(self) {
        if self.pending.load(Ordering::Relaxed) != 0 {
            return;
        }
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOLED_PIPES_PER_THREAD {
                pool.push(self);
            }
        });
    }
}

/// Relays between two TCP sockets with `splice`; `Err` (with both sockets handed back)
/// when the pipes cannot be created, so the caller can copy instead.
pub async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    idle_timeout: Duration,
    counters: &ByteCounters,
    stop: impl Future<Output = ()>,
) -> Result<RelayOutcome, (TcpStream, TcpStream)> {
    let (Ok(to_upstream), Ok(to_client)) = (Pipe::take(), Pipe::take()) else {
        return Err((client, upstream));
    };
    let activity = Activity::new();
    let rx = AtomicU64::new(0);
    let tx = AtomicU64::new(0);
    let upstream_bound = pump(
        &client,
        &upstream,
        &to_upstream,
        Side::Client,
        &counters.rx,
        &rx,
        &activity,
    );
    let client_bound = pump(
        &upstream,
        &client,
        &to_client,
        Side::Upstream,
        &counters.tx,
        &tx,
        &activity,
    );
    let reason = run_directions(upstream_bound, client_bound, &activity, idle_timeout, stop).await;
    to_upstream.give_back();
    to_client.give_back();
    Ok(RelayOutcome {
        rx: rx.load(Ordering::Relaxed),
        tx: tx.load(Ordering::Relaxed),
        reason,
    })
}

/// Moves one direction: socket -> pipe -> socket until EOF, then shuts the write half of
/// the destination.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    read_side: Side,
    counter: &Counter,
    moved: &AtomicU64,
    activity: &Activity,
) -> Result<(), DirectionError> {
    let write_side = read_side.other();
    let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
    loop {
        let filled = loop {
            from.readable()
                .await
                .map_err(|_| DirectionError { side: read_side })?;
            match from.try_io(Interest::READABLE, || {
                splice(from, None, &pipe.write, None, CHUNK, flags).map_err(io::Error::from)
            }) {
                Ok(n) => {
                    pipe.pending.store(n, Ordering::Relaxed);
                    break n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return Err(DirectionError { side: read_side }),
            }
        };
        if filled == 0 {
            let _ = SockRef::from(to).shutdown(std::net::Shutdown::Write);
            return Ok(());
        }
        let mut left = filled;
        while left > 0 {
            to.writable()
                .await
                .map_err(|_| DirectionError { side: write_side })?;
            match to.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, to, None, left, flags).map_err(io::Error::from)
            }) {
                Ok(n) => {
                    left -= n;
                    pipe.pending.store(left, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return Err(DirectionError { side: write_side }),
            }
        }
        let bytes = filled as u64;
        counter.add(bytes);
        moved.fetch_add(bytes, Ordering::Relaxed);
        activity.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    #[tokio::test]
    async fn spliced_bytes_arrive_intact_both_ways_with_half_close() {
        let (mut client, client_proxy) = pair().await;
        let (upstream_proxy, mut upstream) = pair().await;
        let counters = ByteCounters {
            rx: Counter::default(),
            tx: Counter::default(),
        };
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
                .map_err(|_| "no pipes")
            }
        });
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.expect("write");
            client.shutdown().await.expect("shutdown");
            client
        });
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, payload);
        upstream.write_all(b"reply").await.expect("write");
        upstream.shutdown().await.expect("shutdown");
        let mut client = writer.await.expect("writer");
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"reply");
        let outcome = relay.await.expect("join").expect("spliced");
        assert_eq!((outcome.rx, outcome.tx), (1_000_000, 5));
        assert_eq!(counters.rx.get(), 1_000_000);
        assert_eq!(
            POOL.with(|pool| pool.borrow().len()),
            2,
            "both emptied pipes wait in the pool for the next connection"
        );
    }
}
