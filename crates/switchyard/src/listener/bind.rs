//! Opening listening sockets.
//!
//! A listener address that is already taken must be an error (SPEC 3.1 "Binding"), so a
//! socket is bound without `SO_REUSEPORT`: a second process on the same port fails loudly
//! instead of silently sharing it. `SO_REUSEADDR` is set so a restart does not wait out
//! TIME_WAIT. A UDP socket gets no `SO_REUSEADDR`: on Linux that option lets two UDP
//! sockets share a port, which would hide exactly the conflict we must report.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// The accept backlog: deep enough for connection bursts; the kernel caps it at somaxconn.
const BACKLOG: i32 = 4096;

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("listener {listener:?}: cannot bind {address}: {source}")]
pub struct BindError {
    /// The listener's name.
    pub listener: String,
    /// The address asked for.
    pub address: SocketAddr,
    /// What the kernel said.
    #[source]
    pub source: io::Error,
}

/// Binds a TCP listening socket for `listener` on `address`.
pub fn tcp(listener: &str, address: SocketAddr) -> Result<tokio::net::TcpListener, BindError> {
    let error = |source| BindError {
        listener: listener.to_owned(),
        address,
        source,
    };
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(error)?;
    socket.set_reuse_address(true).map_err(error)?;
    if address.is_ipv6() {
        socket.set_only_v6(true).map_err(error)?;
    }
    socket.set_nonblocking(true).map_err(error)?;
    socket.bind(&address.into()).map_err(error)?;
    socket.listen(BACKLOG).map_err(error)?;
    tokio::net::TcpListener::from_std(socket.into()).map_err(error)
}

/// Binds a UDP socket for `listener` on `address` (no `SO_REUSEADDR`, see the module docs).
pub fn udp(listener: &str, address: SocketAddr) -> Result<tokio::net::UdpSocket, BindError> {
    let error = |source| BindError {
        listener: listener.to_owned(),
        address,
        source,
    };
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(error)?;
    if address.is_ipv6() {
        socket.set_only_v6(true).map_err(error)?;
    }
    socket.set_nonblocking(true).map_err(error)?;
    socket.bind(&address.into()).map_err(error)?;
    tokio::net::UdpSocket::from_std(socket.into()).map_err(error)
}
