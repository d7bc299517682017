//! Raw TCP and UDP echo, the upstreams of L4 listener tests.
//!
//! The TCP echo honours half-close: when the client shuts its write side, everything already
//! sent is echoed, then the echo shuts its own write side, so a test can check that a proxy
//! propagates FIN in both directions. Faults apply per connection (TCP) or per datagram (UDP).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;

use super::faults::Control;
use super::wait_shutdown;

/// Echoes one TCP connection until the client half-closes, then half-closes too.
pub(crate) async fn tcp_connection(stream: TcpStream, control: Control) {
    control.count_connection();
    let decision = control.decide(false);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    if decision.reset {
        super::server::reset(&stream);
        return;
    }
    if decision.error.is_some() {
        // An injected error on a byte stream: close (FIN) without echoing anything.
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    let _ = stream.shutdown().await;
    // Wait (bounded) for the client to close, so our FIN is not followed by an RST if unread
    // data arrives late.
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
}

/// Echoes every datagram back to its sender; an injected error or reset drops the datagram.
pub(crate) async fn udp(socket: UdpSocket, control: Control, mut shutdown: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                Err(_) => continue,
            },
            () = wait_shutdown(&mut shutdown) => return,
        };
        let decision = control.decide(false);
        if decision.reset || decision.error.is_some() {
            continue;
        }
        if !decision.latency.is_zero() {
            // Sequential on purpose: latency on UDP delays every later datagram too.
            tokio::time::sleep(decision.latency).await;
        }
        let _ = socket.send_to(&buf[..n], peer).await;
    }
}
