//! One HTTP/1.1 client connection's byte stream, shared by the server loop (which reads
//! request heads and writes responses) and the current request's body (which reads itself
//! off the same bytes as the pipeline pulls it, sometimes from another task: an HTTP/2
//! upstream sends bodies from its own). A mutex keeps the two apart; it is never held
//! across an await, and in the usual case one task takes it, so it is never contended.
//!
//! The body is decoded where it lies in the read buffer (by length, or chunk by chunk with
//! the chunk-size lines and trailers bounded), one read's worth at a time, so what a
//! request body holds in memory is at most one read chunk. A body the pipeline stopped
//! reading before its end is taken back by the loop ([`State::detach_body`]) and drained
//! or the connection closed; a body's handle from an earlier request then only errs.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;

use super::head::BodyFraming;
use crate::http::h1_codec::{ChunkedDecoder, Decoded};
use crate::http::read_buf;
use crate::http::upgrade::BoxedIo;

/// What a client that sent `Expect: 100-continue` is told before its body is read.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client closed before the declared end.
    #[error("the client closed the connection before the request body ended")]
    Truncated,
    /// A chunk-size line, chunk delimiter or trailer section is malformed or too long.
    #[error("malformed chunked request body")]
    Malformed,
    /// The connection failed.
    #[error("reading the request body: {0}")]
    Io(#[from] std::io::Error),
    /// The response was sent and the connection moved on without this body.
    #[error("the request is over; its body can no longer be read")]
    Detached,
}

/// Where the current request's body stands.
#[derive(Debug)]
enum Reading {
    /// No body, or read to its end.
    Idle,
    /// Bytes left by `Content-Length`.
    Length(u64),
    /// Chunked, decoding.
    Chunked(ChunkedDecoder),
    /// Framing broke or the connection failed: no further request can follow.
    Broken,
}

/// The connection's state, behind the lock.
pub struct State {
    /// The stream (`None` once handed to an upgrade).
    io: Option<BoxedIo>,
    /// Read but not yet consumed.
    pub read: BytesMut,
    body: Reading,
    /// Which request's body may read (a body of an earlier request errs).
    generation: u64,
    /// Bytes of a `100 Continue` still to write before the body is read (`None`: none
    /// owed).
    continue_left: Option<usize>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("read", &self.read.len())
            .field("body", &self.body)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// A connection shared between its loop and its request's body.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// `io` with `read` already read from it.
    pub fn new(io: BoxedIo, read: BytesMut) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                io: Some(io),
                read,
                body: Reading::Idle,
                generation: 0,
                continue_left: None,
            }),
        })
    }

    /// The state, locked (a panic elsewhere never poisons a connection for good).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Reads what the client sent into [`State::read`]; `Ready(Ok(0))` at its end.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        match &mut self.io {
            Some(io) => read_buf::poll_fill(io, &mut self.read, cx),
            None => Poll::Ready(Ok(0)),
        }
    }

    /// Writes from `bufs` (in order, as one write where the stream allows).
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let Some(io) = &mut self.io else {
            return Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()));
        };
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        let first = filled.next().map_or(&[][..], |b| &b[..]);
        // One piece (the usual response: head and small body in one buffer) goes out by a
        // plain send, which costs the kernel less than a vectored write of one piece.
        if filled.next().is_some() && io.is_write_vectored() {
            return Pin::new(io).poll_write_vectored(cx, bufs);
        }
        Pin::new(io).poll_write(cx, first)
    }

    /// Flushes what the stream buffered.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Ends the write side (a TLS stream sends its close_notify).
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// A new request's body begins; returns the generation its handle reads as.
    pub fn start_body(&mut self, framing: BodyFraming, expect_continue: bool) -> u64 {
        self.generation += 1;
        self.body = match framing {
            BodyFraming::None => Reading::Idle,
            BodyFraming::Length(n) => Reading::Length(n),
            BodyFraming::Chunked => Reading::Chunked(ChunkedDecoder::default()),
        };
        self.continue_left = expect_continue.then_some(0);
        self.generation
    }

    /// The final response is about to be written: a `100 Continue` not yet begun is no
    /// longer owed. Returns whether the client was still waiting for one (it may never
    /// send the body, so the connection cannot be reused).
    pub fn final_response_begins(&mut self) -> bool {
        match self.continue_left {
            Some(0) => {
                self.continue_left = None;
                true
            }
            _ => false,
        }
    }

    /// Whether the current body was read to its end (or there was none).
    pub fn body_done(&self) -> bool {
        matches!(self.body, Reading::Idle)
    }

    /// Takes the current body from its handle, which errs from now on.
    pub fn detach_body(&mut self) {
        self.generation += 1;
    }

    /// Reads and discards the rest of the current body, at most `budget` more bytes;
    /// `Ready(true)` once it ended, `Ready(false)` when it cannot be drained (too long,
    /// broken, or the client closed).
    pub fn poll_drain(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> Poll<bool> {
        loop {
            match self.next_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let len = frame.data_ref().map_or(0, Bytes::len);
                    let Some(left) = budget.checked_sub(len) else {
                        return Poll::Ready(false);
                    };
                    *budget = left;
                }
                Poll::Ready(Some(Err(_))) => return Poll::Ready(false),
                Poll::Ready(None) => return Poll::Ready(true),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Whether what is left of the current body is known to be more than `budget` bytes
    /// beyond what was already read (so the response can say the connection will close).
    pub fn body_exceeds(&self, budget: usize) -> bool {
        match self.body {
            Reading::Length(left) => left > (budget + self.read.len()) as u64,
            Reading::Idle | Reading::Chunked(_) | Reading::Broken => false,
        }
    }

    /// Reads and throws away whatever the client still sends, at most `budget` more
    /// bytes; `Ready` at the end of the stream, an error, or the budget spent.
    pub fn poll_discard(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> Poll<()> {
        match &mut self.io {
            Some(io) => read_buf::poll_discard(io, &mut self.read, cx, budget),
            None => Poll::Ready(()),
        }
    }

    /// The stream and what was read past the last request, for an upgrade.
    pub fn take_io(&mut self) -> Option<(BoxedIo, Bytes)> {
        let io = self.io.take()?;
        Some((io, std::mem::take(&mut self.read).freeze()))
    }

    /// The next piece of the current body.
    fn next_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Err(error) = std::task::ready!(self.poll_continue(cx)) {
            self.body = Reading::Broken;
            return Poll::Ready(Some(Err(error.into())));
        }
        loop {
            match &mut self.body {
                Reading::Idle => return Poll::Ready(None),
                Reading::Broken => return Poll::Ready(Some(Err(BodyError::Malformed))),
                Reading::Length(left) if !self.read.is_empty() => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(self.read.len());
                    *left -= n as u64;
                    if *left == 0 {
                        self.body = Reading::Idle;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(self.read.split_to(n).freeze()))));
                }
                Reading::Length(_) => {}
                Reading::Chunked(decoder) => match decoder.decode(&mut self.read) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        self.body = Reading::Idle;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        self.body = Reading::Idle;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(_) => {
                        self.body = Reading::Broken;
                        return Poll::Ready(Some(Err(BodyError::Malformed)));
                    }
                },
            }
            match std::task::ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    self.body = Reading::Broken;
                    return Poll::Ready(Some(Err(BodyError::Truncated)));
                }
                Ok(_) => {}
                Err(error) => {
                    self.body = Reading::Broken;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    /// Writes the owed `100 Continue`, if any.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some(sent) = self.continue_left {
            if sent == CONTINUE.len() {
                std::task::ready!(self.poll_flush(cx))?;
                self.continue_left = None;
                break;
            }
            let n = std::task::ready!(self.poll_write(cx, &[IoSlice::new(&CONTINUE[sent..])]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.continue_left = Some(sent + n);
        }
        Poll::Ready(Ok(()))
    }
}

/// A request's body as the pipeline reads it: empty, or a reader of its connection.
#[derive(Debug)]
pub struct H1Body {
    source: Option<(Arc<Shared>, u64)>,
}

impl H1Body {
    /// A request without a body.
    pub fn empty() -> H1Body {
        H1Body { source: None }
    }

    /// The body of the request `generation` on `shared`.
    pub fn reading(shared: Arc<Shared>, generation: u64) -> H1Body {
        H1Body {
            source: Some((shared, generation)),
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some((shared, generation)) = &self.source else {
            return Poll::Ready(None);
        };
        let mut state = shared.lock();
        if state.generation != *generation {
            return Poll::Ready(Some(Err(BodyError::Detached)));
        }
        state.next_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.source.as_ref().is_none_or(|(shared, generation)| {
            let state = shared.lock();
            state.generation == *generation && state.body_done()
        })
    }

    fn size_hint(&self) -> SizeHint {
        let Some((shared, generation)) = &self.source else {
            return SizeHint::with_exact(0);
        };
        let state = shared.lock();
        match &state.body {
            Reading::Idle if state.generation == *generation => SizeHint::with_exact(0),
            Reading::Length(left) if state.generation == *generation => SizeHint::with_exact(*left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    async fn body_of(framing: BodyFraming, sent: &[u8]) -> (Result<Vec<u8>, String>, Vec<u8>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let shared = Shared::new(Box::new(server), BytesMut::new());
        let generation = shared.lock().start_body(framing, false);
        let mut client = client;
        client.write_all(sent).await.unwrap();
        drop(client);
        let body = H1Body::reading(Arc::clone(&shared), generation);
        let collected = body
            .collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .map_err(|e| e.to_string());
        let rest = shared.lock().read.to_vec();
        (collected, rest)
    }

    #[tokio::test]
    async fn a_length_body_stops_at_its_length_and_leaves_the_next_request() {
        let (body, rest) = body_of(BodyFraming::Length(5), b"helloGET / HTTP/1.1\r\n").await;
        assert_eq!(body.unwrap(), b"hello");
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_and_a_truncated_one_errs() {
        let (body, rest) =
            body_of(BodyFraming::Chunked, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nX").await;
        assert_eq!(body.unwrap(), b"abcde");
        assert_eq!(rest, b"X");
        let (body, _) = body_of(BodyFraming::Length(10), b"short").await;
        assert!(body.unwrap_err().contains("before the request body ended"));
        let (body, _) = body_of(BodyFraming::Chunked, b"zz\r\n").await;
        assert!(body.unwrap_err().contains("malformed"));
    }

    #[tokio::test]
    async fn a_detached_body_errs_and_the_loop_drains_within_a_budget() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let shared = Shared::new(Box::new(server), BytesMut::new());
        let generation = shared.lock().start_body(BodyFraming::Length(6), false);
        client.write_all(b"abcdefNEXT").await.unwrap();
        let mut body = H1Body::reading(Arc::clone(&shared), generation);
        shared.lock().detach_body();
        let frame = body.frame().await.unwrap();
        assert!(matches!(frame, Err(BodyError::Detached)));
        let mut budget = 4;
        let drained = std::future::poll_fn(|cx| shared.lock().poll_drain(cx, &mut budget)).await;
        assert!(!drained, "6 bytes do not fit a budget of 4");
        let generation = shared.lock().start_body(BodyFraming::Length(2), false);
        let _ = generation;
        let mut budget = 4;
        let drained = std::future::poll_fn(|cx| shared.lock().poll_drain(cx, &mut budget)).await;
        assert!(drained);
    }

    #[tokio::test]
    async fn continue_is_written_before_the_body_is_read_and_only_once() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let shared = Shared::new(Box::new(server), BytesMut::new());
        let generation = shared.lock().start_body(BodyFraming::Length(2), true);
        let mut body = H1Body::reading(Arc::clone(&shared), generation);
        client.write_all(b"ok").await.unwrap();
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&data[..], b"ok");
        let mut answer = vec![0; CONTINUE.len()];
        tokio::io::AsyncReadExt::read_exact(&mut client, &mut answer)
            .await
            .unwrap();
        assert_eq!(answer, CONTINUE);
        assert!(!shared.lock().final_response_begins(), "already sent");
        let generation = shared.lock().start_body(BodyFraming::Length(2), true);
        let _ = generation;
        assert!(shared.lock().final_response_begins(), "never asked for");
    }
}
