//! Opening listening sockets.
//!
//! A listener address that is already taken must be an error (SPEC 3.1 "Binding"), even
//! though a listener's workers share it with `SO_REUSEPORT`: [`tcp_group`] first probes the
//! address with a plain bind (which fails if anyone holds the port, with or without
//! `SO_REUSEPORT`), then opens one `SO_REUSEPORT` socket per worker so the kernel spreads
//! new connections over the accept loops. `SO_REUSEADDR` is set so a restart does not wait
//! out TIME_WAIT. A UDP socket gets no `SO_REUSEADDR`: on Linux that option lets two UDP
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

/// Binds one TCP listening socket for `listener` on `address`.
pub fn tcp(listener: &str, address: SocketAddr) -> Result<tokio::net::TcpListener, BindError> {
    open(listener, address, false)
}

/// Binds `sockets` TCP listening sockets sharing `address` (one per worker). With one
/// socket this is [`tcp`]; with more, the address is probed first so a port held by
/// anyone else is still an error, and port 0 resolves to one port shared by all.
pub fn tcp_group(
    listener: &str,
    address: SocketAddr,
    sockets: usize,
) -> Result<Vec<tokio::net::TcpListener>, BindError> {
    if sockets <= 1 {
        return Ok(vec![tcp(listener, address)?]);
    }
    if address.port() != 0 {
        drop(open(listener, address, false)?);
    }
    let first = open(listener, address, true)?;
    let shared = first.local_addr().map_err(|source| BindError {
        listener: listener.to_owned(),
        address,
        source,
    })?;
    let mut group = vec![first];
    for _ in 1..sockets {
        group.push(open(listener, shared, true)?);
    }
    Ok(group)
}

/// A non-blocking socket of `kind` bound to `address` (IPv6 sockets are v6-only, so a
/// `[::]` listener never silently takes the IPv4 port too).
fn bound_socket(
    address: SocketAddr,
    kind: Type,
    protocol: Protocol,
    configure: impl FnOnce(&Socket) -> io::Result<()>,
) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), kind, Some(protocol))?;
    configure(&socket)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

fn open(
    listener: &str,
    address: SocketAddr,
    reuse_port: bool,
) -> Result<tokio::net::TcpListener, BindError> {
    let error = |source| BindError {
        listener: listener.to_owned(),
        address,
        source,
    };
    let socket = bound_socket(address, Type::STREAM, Protocol::TCP, |socket| {
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        Ok(())
    })
    .map_err(error)?;
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
    let socket = bound_socket(address, Type::DGRAM, Protocol::UDP, |_| Ok(())).map_err(error)?;
    tokio::net::UdpSocket::from_std(socket.into()).map_err(error)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_shares_one_port_and_a_taken_port_is_still_an_error() {
        let group = tcp_group("web", "127.0.0.1:0".parse().expect("addr"), 3).expect("bound");
        let ports: Vec<u16> = group
            .iter()
            .map(|s| s.local_addr().expect("addr").port())
            .collect();
        assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
        let taken = group[0].local_addr().expect("addr");
        let error = tcp_group("again", taken, 2).expect_err("in use");
        assert_eq!(error.source.kind(), io::ErrorKind::AddrInUse);
        assert!(error.to_string().contains("\"again\""));
    }
}
