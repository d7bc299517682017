//! Reading from a connection into its read buffer, the one way every HTTP connection (the
//! HTTP/1.1 and HTTP/2 servers, the HTTP/1.1 upstream client) does it: the buffer grows by
//! a fixed chunk only when little room is left, so a connection's read memory stays
//! bounded by what its parser has not yet consumed plus one chunk, and an emptied buffer
//! starts again at the front of its allocation. Also how a write buffer drops what went
//! out (staying at its front too), and the reading half of a lingering close, which both
//! servers end their connections with.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes a read asks for at least (the read buffer grows by this much when full).
pub const READ_CHUNK: usize = 16 * 1024;

/// Drops the first `n` bytes of a write buffer once they are written. A buffer written
/// out whole is cleared, which keeps it at the front of its allocation: advancing it
/// instead would move its start on, and the next message would be encoded onto lines
/// nobody has touched for a while (as [`reuse_from_start`] explains for reads).
pub fn consume_written(buf: &mut BytesMut, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else {
        buf.advance(n);
    }
}

/// Reads what `io` has into `buf`; `Ready(Ok(0))` at the end of the stream.
pub fn poll_fill<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    reuse_from_start(buf);
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    pin!(io.read_buf(buf)).poll(cx)
}

/// Moves an empty read buffer back to the start of its allocation when nothing else
/// shares it, so the next read lands on memory the last one just touched.
///
/// Why: consuming a buffer (`split_to`, `advance`) moves its start forward, and a buffer
/// is otherwise only moved back once too little room is left. A connection's reads then
/// walk through the whole allocation, each landing on cache lines nobody has touched for
/// a while; with many connections that is a cache miss per line the kernel copies into.
/// (Write buffers need no reclaim: [`consume_written`] never moves one written out
/// whole.) A buffer still shared (a head or body frame cut from it is
/// alive) is left where it is: nothing is allocated or copied. So is one with a whole
/// [`READ_CHUNK`] of room: it is most likely at its front already (one just moved back,
/// or fresh), and the check keeps the common call to a comparison.
fn reuse_from_start(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() < READ_CHUNK {
        // Asking for one byte more than the room left succeeds only by reclaiming the
        // space before the start, which needs nothing copied: the buffer is empty.
        let _ = buf.try_reclaim(buf.capacity() + 1);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn an_emptied_buffer_nobody_shares_starts_again_at_its_front() {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let front = buf.as_ptr();
        buf.put_slice(b"GET / HTTP/1.1\r\n\r\n");
        drop(buf.split_to(18).freeze());
        assert_ne!(buf.as_ptr(), front);
        reuse_from_start(&mut buf);
        assert_eq!(buf.as_ptr(), front);
        assert_eq!(buf.capacity(), READ_CHUNK);

        // One consumed by `advance` (never split) comes back too.
        buf.put_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        buf.advance(19);
        reuse_from_start(&mut buf);
        assert_eq!(buf.as_ptr(), front);
        assert_eq!(buf.capacity(), READ_CHUNK);
    }

    #[test]
    fn a_write_buffer_written_out_whole_stays_at_its_front() {
        let mut buf = BytesMut::with_capacity(1024);
        let front = buf.as_ptr();
        for _ in 0..3 {
            buf.put_slice(b"GET / HTTP/1.1\r\n\r\n");
            consume_written(&mut buf, 18);
            assert!(buf.is_empty());
            assert_eq!((buf.as_ptr(), buf.capacity()), (front, 1024));
        }

        buf.put_slice(b"HTTP/1.1 200 OK\r\n\r\nok");
        consume_written(&mut buf, 9);
        assert_eq!(
            &buf[..],
            b"200 OK\r\n\r\nok",
            "a partial write leaves the rest"
        );
        consume_written(&mut buf, 12);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_shared_or_non_empty_buffer_stays_where_it_is() {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        buf.put_slice(b"GET / HTTP/1.1\r\n\r\nGET");
        let head = buf.split_to(18).freeze();
        let (at, room) = (buf.as_ptr(), buf.capacity());
        reuse_from_start(&mut buf);
        assert_eq!(
            (buf.as_ptr(), buf.capacity()),
            (at, room),
            "bytes left to parse"
        );

        buf.clear();
        reuse_from_start(&mut buf);
        assert_eq!(
            (buf.as_ptr(), buf.capacity()),
            (at, room),
            "the head still shares it"
        );
        assert_eq!(&head[..], b"GET / HTTP/1.1\r\n\r\n");

        let mut roomy = BytesMut::with_capacity(2 * READ_CHUNK);
        roomy.put_slice(b"x");
        roomy.advance(1);
        let at = roomy.as_ptr();
        reuse_from_start(&mut roomy);
        assert_eq!(roomy.as_ptr(), at, "a chunk of room left: not worth a look");

        let mut fresh = BytesMut::new();
        reuse_from_start(&mut fresh);
        assert_eq!(fresh.capacity(), 0, "nothing is allocated");
    }
}
