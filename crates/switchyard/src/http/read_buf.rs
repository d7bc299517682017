//! Reading from a connection into its read buffer, the one way both HTTP/1.1 sides (the
//! client-facing server and the upstream client) do it: the buffer grows by a fixed chunk
//! only when little room is left, so a connection's read memory stays bounded by what
//! its parser has not yet consumed plus one chunk.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

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
