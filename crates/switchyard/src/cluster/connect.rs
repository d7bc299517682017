//! Opening a TCP connection to an endpoint, the same way for every tier: bounded by
//! `connect_timeout`, `TCP_NODELAY` on, keepalive probes as the cluster asks. The L4 relay
//! and the L7 connection pools both connect through here.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

use super::endpoint::ConnectFailure;

/// Connects to `address` within `timeout`; on failure, the failure class and a message.
pub async fn tcp(
    address: SocketAddr,
    timeout: Duration,
    keepalive: Option<Duration>,
) -> Result<TcpStream, (ConnectFailure, String)> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err((ConnectFailure::of(&error), error.to_string())),
        Err(_) => return Err((ConnectFailure::Timeout, "connect timed out".into())),
    };
    let _ = stream.set_nodelay(true);
    if let Some(idle) = keepalive {
        let _ = SockRef::from(&stream).set_tcp_keepalive(&TcpKeepalive::new().with_time(idle));
    }
    Ok(stream)
}
