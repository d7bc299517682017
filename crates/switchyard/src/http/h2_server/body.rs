//! An HTTP/2 request body: the DATA the client sends on its stream, handed from the
//! connection (which reads every frame) to whoever reads the body (the pipeline, or an
//! HTTP/2 upstream's own task), then the trailers.
//!
//! Flow control makes the bound: the client may send only as much as the stream's window,
//! and the window reopens only as the body is read. The reader counts what it took and,
//! when the count was zero, wakes the connection (through the stream's waker), which
//! collects the count and sends WINDOW_UPDATEs once enough has gathered. A body dropped unread gives its buffered bytes back the
//! same way, so the connection's window is never lost to a request that ended early. A
//! request without a body (END_STREAM on its HEADERS, the usual GET) has no channel at
//! all.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::http::h2_codec::frame::Reason;

/// Why an HTTP/2 request body ended before its END_STREAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum H2BodyError {
    /// The client reset the stream.
    #[error("the client reset the stream ({0})")]
    Reset(Reason),
    /// The stream was reset for breaking a rule (a wrong Content-Length, a window
    /// overrun, malformed trailers).
    #[error("the request stream broke HTTP/2's rules ({0})")]
    Malformed(Reason),
    /// The connection ended.
    #[error("the HTTP/2 connection closed before the request body ended")]
    ConnectionClosed,
}

/// Where the sending side stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    Ended,
    Failed(H2BodyError),
}

/// The body's state, shared by the connection and the reader.
#[derive(Debug)]
struct Recv {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    end: End,
    /// The reader waiting for more.
    reader: Option<Waker>,
    /// Bytes read (or dropped unread) that the connection has not yet given back to the
    /// client's windows.
    consumed: usize,
    /// The reader dropped the body.
    reader_gone: bool,
}

/// The connection's side of one stream's request body.
#[derive(Debug)]
pub struct Channel {
    recv: Mutex<Recv>,
    /// Wakes the connection (the stream's waker) to send a WINDOW_UPDATE.
    connection: Waker,
}

impl Channel {
    /// An open body whose reader wakes `connection` when it reads the first bytes since
    /// the connection last collected the count ([`Channel::take_consumed`]).
    pub fn new(connection: Waker) -> Arc<Channel> {
        Arc::new(Channel {
            recv: Mutex::new(Recv {
                chunks: VecDeque::new(),
                trailers: None,
                end: End::Open,
                reader: None,
                consumed: 0,
                reader_gone: false,
            }),
            connection,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Recv> {
        self.recv.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the reader a DATA payload; one the reader will never read counts as
    /// consumed at once.
    pub fn push(&self, data: Bytes) {
        let mut recv = self.lock();
        if recv.reader_gone {
            recv.consumed += data.len();
            return;
        }
        recv.chunks.push_back(data);
        if let Some(reader) = recv.reader.take() {
            reader.wake();
        }
    }

    /// The client ended the body (with `trailers`, if it sent any).
    pub fn finish(&self, trailers: Option<HeaderMap>) {
        let mut recv = self.lock();
        recv.trailers = trailers;
        recv.end = End::Ended;
        if let Some(reader) = recv.reader.take() {
            reader.wake();
        }
    }

    /// The body cannot end well; the reader sees `error` after what is buffered.
    pub fn fail(&self, error: H2BodyError) {
        let mut recv = self.lock();
        if recv.end == End::Open {
            recv.end = End::Failed(error);
        }
        if let Some(reader) = recv.reader.take() {
            reader.wake();
        }
    }

    /// Bytes to give back to the client's windows since the last call.
    pub fn take_consumed(&self) -> usize {
        std::mem::take(&mut self.lock().consumed)
    }

    /// Whether the reader dropped the body.
    pub fn reader_gone(&self) -> bool {
        self.lock().reader_gone
    }

    /// The connection forgets the stream: what was read and what is still buffered is
    /// given back now (the reader may still read the buffered bytes; nothing counts them
    /// again).
    pub fn release_all(&self) -> usize {
        let mut recv = self.lock();
        let buffered: usize = recv.chunks.iter().map(Bytes::len).sum();
        std::mem::take(&mut recv.consumed) + buffered
    }
}

/// A client's HTTP/2 request body.
#[derive(Debug)]
pub struct ClientH2Body {
    /// `None`: the request has no body.
    channel: Option<Arc<Channel>>,
}

impl ClientH2Body {
    /// The body of a request that ended with its headers.
    pub fn empty() -> ClientH2Body {
        ClientH2Body { channel: None }
    }

    /// The body fed through `channel`.
    pub fn streaming(channel: Arc<Channel>) -> ClientH2Body {
        ClientH2Body {
            channel: Some(channel),
        }
    }
}

impl Body for ClientH2Body {
    type Data = Bytes;
    type Error = H2BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H2BodyError>>> {
        let Some(channel) = &self.channel else {
            return Poll::Ready(None);
        };
        let mut recv = channel.lock();
        if let Some(data) = recv.chunks.pop_front() {
            let before = recv.consumed;
            recv.consumed += data.len();
            if before == 0 && recv.consumed > 0 {
                channel.connection.wake_by_ref();
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(trailers) = recv.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match recv.end {
            End::Ended => Poll::Ready(None),
            End::Failed(error) => Poll::Ready(Some(Err(error))),
            End::Open => {
                match &mut recv.reader {
                    Some(reader) if reader.will_wake(cx.waker()) => {}
                    reader => *reader = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let Some(channel) = &self.channel else {
            return true;
        };
        let recv = channel.lock();
        recv.end == End::Ended && recv.chunks.is_empty() && recv.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.channel.is_none() {
            return SizeHint::with_exact(0);
        }
        SizeHint::default()
    }
}

impl Drop for ClientH2Body {
    fn drop(&mut self) {
        let Some(channel) = &self.channel else {
            return;
        };
        let mut recv = channel.lock();
        recv.reader_gone = true;
        let unread: usize = recv.chunks.drain(..).map(|chunk| chunk.len()).sum();
        recv.consumed += unread;
        let open = recv.end == End::Open;
        drop(recv);
        if unread > 0 || open {
            channel.connection.wake_by_ref();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(body: &mut ClientH2Body) -> Poll<Option<Result<Frame<Bytes>, H2BodyError>>> {
        let waker = Waker::from(Arc::new(Count::default()));
        Pin::new(body).poll_frame(&mut Context::from_waker(&waker))
    }

    #[test]
    fn data_then_trailers_then_the_end_and_reads_are_counted_for_the_window() {
        let woken = Arc::new(Count::default());
        let channel = Channel::new(Waker::from(Arc::clone(&woken)));
        let mut body = ClientH2Body::streaming(Arc::clone(&channel));
        assert!(poll(&mut body).is_pending());
        channel.push(Bytes::from_static(b"abc"));
        channel.push(Bytes::from_static(b"defg"));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        channel.finish(Some(trailers));
        let first = poll(&mut body);
        assert!(matches!(first, Poll::Ready(Some(Ok(ref f))) if f.data_ref().unwrap() == "abc"));
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "the first bytes read wake the connection"
        );
        let _ = poll(&mut body);
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "more bytes before the count was collected do not wake it again"
        );
        assert!(!body.is_end_stream());
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(ref f))) if f.is_trailers()));
        assert!(body.is_end_stream());
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
        assert_eq!(channel.take_consumed(), 7);
        assert_eq!(channel.take_consumed(), 0);
    }

    #[test]
    fn a_body_dropped_unread_gives_its_bytes_back_and_later_data_counts_at_once() {
        let woken = Arc::new(Count::default());
        let channel = Channel::new(Waker::from(Arc::clone(&woken)));
        let body = ClientH2Body::streaming(Arc::clone(&channel));
        channel.push(Bytes::from_static(b"0123456789"));
        drop(body);
        assert!(channel.reader_gone());
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        channel.push(Bytes::from_static(b"xy"));
        assert_eq!(channel.take_consumed(), 12);
    }

    #[test]
    fn a_failed_body_reports_its_error_after_what_was_buffered() {
        let channel = Channel::new(Waker::from(Arc::new(Count::default())));
        let mut body = ClientH2Body::streaming(Arc::clone(&channel));
        channel.push(Bytes::from_static(b"a"));
        channel.fail(H2BodyError::Reset(Reason::CANCEL));
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(
            poll(&mut body),
            Poll::Ready(Some(Err(H2BodyError::Reset(Reason::CANCEL))))
        ));
        let mut none = ClientH2Body::empty();
        assert!(none.is_end_stream());
        assert!(matches!(poll(&mut none), Poll::Ready(None)));
    }
}
