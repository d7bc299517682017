//! A slowloris crowd: connections that send a request head one byte at a time and never
//! finish it, reconnecting whenever the balancer closes them.
//!
//! The crowd connects from its own loopback address (127.0.0.2 by default) so per-IP
//! limits can tell it from the normal clients on 127.0.0.1, as they would tell apart two
//! real client networks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The crowd's loopback address.
pub const CROWD_ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// What the crowd saw.
#[derive(Debug, Default)]
pub struct CrowdStats {
    /// Connections opened.
    pub opened: AtomicU64,
    /// Connections the balancer closed (or refused).
    pub closed: AtomicU64,
}

/// A running crowd; dropping it closes every connection.
#[derive(Debug)]
pub struct Crowd {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Its counters.
    pub stats: Arc<CrowdStats>,
}

impl Crowd {
    /// Opens `count` slow connections to `target`.
    pub fn start(target: SocketAddr, count: usize, interval: Duration) -> Self {
        let (stop, rx) = watch::channel(false);
        let stats = Arc::new(CrowdStats::default());
        let mut tasks = JoinSet::new();
        for _ in 0..count {
            tasks.spawn(slow_client(
                target,
                interval,
                Arc::clone(&stats),
                rx.clone(),
            ));
        }
        Self { stop, tasks, stats }
    }

    /// Closes every connection.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        self.tasks.abort_all();
    }
}

async fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    // Fall back to the default source where 127.0.0.2 is not routable.
    if socket.bind(SocketAddr::new(CROWD_ADDRESS, 0)).is_err() {
        return TcpStream::connect(target).await;
    }
    socket.connect(target).await
}

/// The pause before a client of the crowd reconnects.
const RECONNECT: Duration = Duration::from_secs(1);

const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: drill\r\nUser-Agent: slowloris\r\nX-Slow: ";

async fn slow_client(
    target: SocketAddr,
    interval: Duration,
    stats: Arc<CrowdStats>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let Ok(stream) = connect(target).await else {
            stats.closed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RECONNECT).await;
            continue;
        };
        stats.opened.fetch_add(1, Ordering::Relaxed);
        let (mut read, mut write) = stream.into_split();
        let mut sent = 0usize;
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                r = read.read(&mut buf) => {
                    // An answer (408, 431) or a close: either way the balancer let go.
                    if matches!(r, Ok(0) | Err(_)) {
                        break;
                    }
                }
                () = tokio::time::sleep(interval) => {
                    let byte = HEAD.get(sent).copied().unwrap_or(b'a');
                    sent += 1;
                    if write.write_all(&[byte]).await.is_err() {
                        break;
                    }
                }
            }
        }
        stats.closed.fetch_add(1, Ordering::Relaxed);
        // Come back after a pause, as a crowd that wants to stay does; reconnecting at once
        // would turn every refusal into a SYN flood, a different drill.
        tokio::time::sleep(RECONNECT).await;
    }
}
