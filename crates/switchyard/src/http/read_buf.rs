//! Reading from a connection into its read buffer, the one way every HTTP connection (the
//! HTTP/1.1 and HTTP/2 servers, the HTTP/1.1 upstream client) does it: the buffer grows by
//! a fixed chunk only when little room is left, so a connection's read memory stays
//! bounded by what its parser has not yet consumed plus one chunk. Also the reading half
//! of a lingering close, which both servers end their connections with.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes a read asks for at least (the read buffer grows by this much when full).
pub const READ_CHUNK: usize = 16 * 1024;

/// Reads what `io` has into `buf`; `Ready(Ok(0))` at the end of the stream.
pub fn poll_fill<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    pin!(io.read_buf(buf)).poll(cx)
}

/// How long a closing connection may take to send its last bytes, and then how long it
/// reads and drops what the client still sends.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The most a closing connection reads and drops before it closes anyway.
pub const LINGER_BUDGET: usize = 1024 * 1024;

/// Reads and drops what `io` still sends, until its end, an error, or `budget` bytes: the
/// reading half of a lingering close (closing a socket with unread bytes sends a reset,
/// which can destroy the last response, or a GOAWAY, still on its way to the client).
pub fn poll_discard<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    budget: &mut usize,
) -> Poll<()> {
    loop {
        buf.clear();
        match std::task::ready!(poll_fill(io, buf, cx)) {
            Ok(n) if n > 0 && n <= *budget => *budget -= n,
            _ => return Poll::Ready(()),
        }
    }
}
