//! HTTP/2 client connections, served with the h2 crate directly: every stream runs inside
//! the connection's own task.
//!
//! hyper's HTTP/2 server spawns a task per stream, so each request crosses from the
//! connection task to its stream task and each response back: two wakeups and a task
//! allocation per request, on top of the h2 crate's own work. Here the streams are futures
//! in one `FuturesUnordered` polled by the task that also drives the connection; a stream
//! woken by its upstream socket is polled alone, and the frames it queues are written the
//! next time the connection is polled, in the same turn.
//!
//! A request with `Expect: 100-continue` and a body gets a `100 Continue` at once. Everything
//! else is hyper's HTTP/2 server's behaviour, kept: the listener's stream,
//! window and header-list limits and the rapid-reset bounds (h2's builder), a `Date` and a
//! `Content-Length` (when the body's length is known) on every response, request bodies
//! whose flow-control capacity is released as they are read (so a slow upstream pushes
//! back on the client through the stream window), responses written within the client's
//! window, trailers in both directions, and a client's RST_STREAM cancelling the request.
//! Shutdown sends GOAWAY(2^31-1) and a PING, then GOAWAY(last stream id), lets the open
//! streams finish, and drops what is left when the drain time ends.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::{CONTENT_LENGTH, DATE, EXPECT};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::body::{BoxError, ClientBody, ResponseBody};
use super::pipeline::{self, Downstream};
use super::server_fields;
use crate::runtime::shutdown::{Phase, Shutdown};

/// HTTP/2 streams a client may reset before the server has processed them, before the
/// connection is closed (CVE-2023-44487 "rapid reset").
const MAX_PENDING_RESETS: usize = 20;

/// HTTP/2 resets the server itself may send because of client errors before closing.
const MAX_LOCAL_ERROR_RESETS: usize = 256;

/// A stream's work, boxed: the request future is several kilobytes and the set moves
/// pointers, not futures.
type StreamTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves one HTTP/2 connection until the client closes it, it fails, or shutdown ends it.
pub async fn serve<S>(downstream: Arc<Downstream>, stream: S, shutdown: Shutdown)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &downstream.listener.config;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .initial_window_size(config.http2_initial_stream_window)
        .initial_connection_window_size(config.http2_initial_connection_window)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS));
    let handshake = builder.handshake::<S, Bytes>(stream);
    let mut closed = shutdown.reached(Phase::Closed);
    let mut connection = tokio::select! {
        handshake = handshake => match handshake {
            Ok(connection) => connection,
            Err(error) => {
                debug!(listener = %downstream.listener.name, %error, "HTTP/2 handshake failed");
                return;
            }
        },
        () = &mut closed => return,
    };
    let mut stop_accepting = shutdown.reached(Phase::StopAccepting);
    let mut streams: FuturesUnordered<StreamTask> = FuturesUnordered::new();
    let mut going_away = false;
    loop {
        // Every stream that can move does so before the connection is polled, so the
        // frames they queue go out together in one write.
        let event = poll_fn(|cx| {
            loop {
                while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
                if Pin::new(&mut closed).poll(cx).is_ready() {
                    return Poll::Ready(Event::Closed);
                }
                if !going_away && Pin::new(&mut stop_accepting).poll(cx).is_ready() {
                    return Poll::Ready(Event::StopAccepting);
                }
                match connection.poll_accept(cx) {
                    Poll::Ready(Some(Ok((request, respond)))) => {
                        // Started at once: the loop polls it before the connection again.
                        let downstream = Arc::clone(&downstream);
                        streams.push(Box::pin(serve_stream(downstream, request, respond)));
                    }
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Event::Failed(error)),
                    Poll::Ready(None) => return Poll::Ready(Event::Ended),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        match event {
            Event::Failed(error) => {
                debug!(listener = %downstream.listener.name, %error, "HTTP/2 connection ended with an error");
                break;
            }
            Event::Ended => break,
            Event::StopAccepting => {
                going_away = true;
                connection.graceful_shutdown();
            }
            Event::Closed => return,
        }
    }
    // The connection is done; streams still answering finish what they can (their sends
    // fail at once when the connection is gone).
    tokio::select! {
        () = async { while streams.next().await.is_some() {} } => {}
        () = &mut closed => {}
    }
}

/// What woke the connection's loop.
enum Event {
    /// The connection failed.
    Failed(h2::Error),
    /// The client closed the connection, or GOAWAY completed with every stream done.
    Ended,
    /// Shutdown stopped accepting: time for GOAWAY.
    StopAccepting,
    /// The drain time is over.
    Closed,
}

/// One stream: the request through the pipeline, then the response onto the stream.
async fn serve_stream(
    downstream: Arc<Downstream>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    if expects_continue(request.headers()) && !request.body().is_end_stream() {
        // Sent at once rather than when the body is first read: the client waits for it
        // (or a timeout of its own) before it uploads, and a route that answers without
        // reading the body only resets the stream after its response.
        let mut interim = Response::new(());
        *interim.status_mut() = StatusCode::CONTINUE;
        let _ = respond.send_informational(interim);
    }
    let request = request.map(|recv| ClientBody::Right(ClientH2Body::new(recv)));
    // A client's RST_STREAM cancels the request (and with it the upstream exchange).
    let handled = UntilReset {
        handled: pipeline::handle(downstream, request),
        respond: &mut respond,
    };
    let response = match handled.await {
        Some(Ok(response)) => response,
        Some(Err(never)) => match never {},
        None => return,
    };
    let (mut parts, body) = response.into_parts();
    if !parts.headers.contains_key(DATE) {
        parts.headers.insert(DATE, server_fields::now_date());
    }
    let end = body.is_end_stream();
    let declared = parts.headers.contains_key(CONTENT_LENGTH);
    if let Some(length) = server_fields::length_to_declare(parts.status, declared, &body) {
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    let Ok(send) = respond.send_response(Response::from_parts(parts, ()), end) else {
        return;
    };
    if !end {
        if let Err(error) = pipe(body, send).await {
            debug!(%error, "HTTP/2 response body not delivered");
        }
    }
}

pin_project_lite::pin_project! {
    /// A stream's run through the pipeline, ended early when the client resets the
    /// stream. Written out rather than as a `select!`, which would move the pipeline's
    /// state (kilobytes) into a tuple of its own.
    struct UntilReset<'a, F> {
        #[pin]
        handled: F,
        respond: &'a mut SendResponse<Bytes>,
    }
}

impl<F: Future> Future for UntilReset<'_, F> {
    /// `None`: the client reset the stream.
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.handled.poll(cx) {
            return Poll::Ready(Some(output));
        }
        this.respond.poll_reset(cx).map(|_| None)
    }
}

/// Whether the request asks for `100 Continue` before it sends its body.
fn expects_continue(headers: &http::HeaderMap) -> bool {
    headers
        .get(EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Streams `body` onto `send` within the client's flow-control window.
async fn pipe(mut body: ResponseBody, mut send: SendStream<Bytes>) -> Result<(), BoxError> {
    loop {
        let frame = tokio::select! {
            frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => frame,
            reset = poll_fn(|cx| send.poll_reset(cx)) => {
                return Err(format!("client reset the stream ({reset:?})").into());
            }
        };
        let Some(frame) = frame else {
            send.send_data(Bytes::new(), true)?;
            return Ok(());
        };
        let frame = match frame?.into_data() {
            Ok(mut data) => {
                let last = body.is_end_stream();
                while !data.is_empty() {
                    send.reserve_capacity(data.len());
                    let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
                        Some(granted) => granted?,
                        None => return Err("stream closed before its body was sent".into()),
                    };
                    if granted == 0 {
                        continue;
                    }
                    let piece = data.split_to(granted.min(data.len()));
                    send.send_data(piece, last && data.is_empty())?;
                }
                if last {
                    return Ok(());
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            send.send_trailers(trailers)?;
            return Ok(());
        }
    }
}

/// An HTTP/2 request body: data as the client sends it (its flow-control capacity given
/// back as it is read, so the window reopens only as fast as the upstream takes it), then
/// the trailers.
#[derive(Debug)]
pub struct ClientH2Body {
    recv: RecvStream,
    data_done: bool,
}

impl ClientH2Body {
    fn new(recv: RecvStream) -> ClientH2Body {
        ClientH2Body {
            recv,
            data_done: false,
        }
    }
}

impl Body for ClientH2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => this.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
