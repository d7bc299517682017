//! What an L4 listener must read before it can choose an upstream: a PROXY protocol
//! header (when `proxy_protocol = true`) and, on `tls-passthrough`, the ClientHello.
//!
//! Both are read under one deadline (`header_read_timeout`) into one bounded buffer. The
//! bytes are not consumed: everything after the PROXY header (the ClientHello included)
//! is replayed to the chosen endpoint before the relay starts, so the upstream sees the
//! client's bytes exactly as sent.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::proxy_protocol::{self, Parsed, ProxyProtocolError};
use super::sni::{self, Peek};

/// What the prelude found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prelude {
    /// The client: the PROXY header's source when one carried it, else the peer.
    pub client: SocketAddr,
    /// The address the client connected to: the PROXY header's destination, else ours.
    pub destination: SocketAddr,
    /// The ClientHello's server name (passthrough only).
    pub sni: Option<String>,
    /// Bytes read after the PROXY header, to replay to the upstream.
    pub replay: Vec<u8>,
}

/// What to read.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// A PROXY v1/v2 header first.
    pub proxy_protocol: bool,
    /// Then a complete ClientHello.
    pub client_hello: bool,
}

/// Why a connection was refused during its prelude.
#[derive(Debug, thiserror::Error)]
pub enum PreludeError {
    /// Nothing complete within `header_read_timeout`.
    #[error("incomplete {0} after the header read timeout")]
    Timeout(&'static str),
    /// The client closed before the prelude was complete.
    #[error("client closed before a complete {0}")]
    Closed(&'static str),
    /// The PROXY header is malformed (or absent).
    #[error(transparent)]
    ProxyProtocol(#[from] ProxyProtocolError),
    /// The bytes are not a TLS ClientHello.
    #[error("not a TLS ClientHello: {0}")]
    NotTls(&'static str),
    /// Reading failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

impl PreludeError {
    /// The `connections_rejected_total` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            PreludeError::ProxyProtocol(_) => "proxy_protocol",
            PreludeError::NotTls(_) => "tls",
            PreludeError::Timeout(_) | PreludeError::Closed(_) | PreludeError::Io(_) => "slow_head",
        }
    }
}

/// Reads the prelude from `stream`, within `timeout` overall.
pub async fn read(
    stream: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    expect: Expect,
    timeout: Duration,
) -> Result<Prelude, PreludeError> {
    let what = if expect.proxy_protocol {
        "PROXY header"
    } else {
        "ClientHello"
    };
    match tokio::time::timeout(timeout, read_unbounded_in_time(stream, peer, local, expect)).await {
        Ok(result) => result,
        Err(_) => Err(PreludeError::Timeout(what)),
    }
}

async fn read_unbounded_in_time(
    stream: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    expect: Expect,
) -> Result<Prelude, PreludeError> {
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let mut prelude = Prelude {
        client: peer,
        destination: local,
        sni: None,
        replay: Vec::new(),
    };
    if expect.proxy_protocol {
        loop {
            match proxy_protocol::parse(&buf)? {
                Parsed::NeedMore => fill(stream, &mut buf, "PROXY header").await?,
                Parsed::Complete {
                    header_len,
                    addresses,
                } => {
                    if let Some(addresses) = addresses {
                        prelude.client = addresses.source;
                        prelude.destination = addresses.destination;
                    }
                    buf.drain(..header_len);
                    break;
                }
            }
        }
    }
    if expect.client_hello {
        loop {
            match sni::peek_client_hello(&buf) {
                Peek::NeedMore => fill(stream, &mut buf, "ClientHello").await?,
                Peek::Complete(info) => {
                    prelude.sni = info.server_name;
                    break;
                }
                Peek::NotTls(why) | Peek::Malformed(why) => return Err(PreludeError::NotTls(why)),
            }
        }
    }
    prelude.replay = buf;
    Ok(prelude)
}

/// Reads more bytes; the parsers bound how much they ask for, so `buf` stays bounded
/// (PROXY v2 at most 4 KiB, a ClientHello at most [`sni::MAX_CLIENT_HELLO`]).
async fn fill(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    what: &'static str,
) -> Result<(), PreludeError> {
    if buf.len() > sni::MAX_CLIENT_HELLO + proxy_protocol::V2_MAX_LEN {
        return Err(PreludeError::NotTls("prelude larger than any valid header"));
    }
    buf.reserve(4096);
    let n = stream.read_buf(buf).await?;
    if n == 0 {
        return Err(PreludeError::Closed(what));
    }
    Ok(())
}
