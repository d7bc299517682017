//! HTTP/1.1 client connections, served by the proxy's own loop.
//!
//! hyper's HTTP/1 server could not be told enough: it drops `Content-Length` when
//! `Transfer-Encoding` is also present (SPEC 4 wants 400), answers its own parse errors
//! without `Proxy-Status`, cannot answer 501 for an unknown coding, and hands bodies across
//! a channel. A guard in front of it had to parse every head once more. Here one parse
//! ([`head`]) both checks a head and builds the request, the request body reads itself off
//! the connection ([`conn`]), and the response is framed and written by [`response`] in as
//! few writes as the body allows (the head and every body frame already there go out
//! together), all in the connection's task.
//!
//! One request at a time: a pipelined request waits in the read buffer until the response
//! before it is written. Timeouts: the first head must be complete within
//! `header_read_timeout` of the accept, a later one within `header_read_timeout` of its
//! first byte, and between requests the connection may sit idle for `idle_timeout`; a
//! response write the client takes no byte of for `idle_timeout` closes the connection. A
//! refused head is answered with the proxy's own response (400, 408, 413, 431, 501, each
//! with `Proxy-Status`) and the connection closed. A request body the pipeline did not read
//! to its end is drained (up to [`DRAIN_BUDGET`]) so the connection can be reused, or the
//! connection is closed; a close lingers (reads and drops for a bounded time) so the
//! client's unread bytes do not turn it into a reset that destroys the last response. Shutdown: once it stops accepting, the request in flight is
//! answered with `Connection: close`; an idle connection waits [`KEEPALIVE_GRACE`] for a
//! request already on its way, then closes.

pub mod conn;
pub mod head;
pub mod response;

use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::UPGRADE;
use http::{Method, StatusCode, Version};
use http_body::Body;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use self::conn::{H1Body, Shared};
use self::head::{HeadLimits, RequestHead, Verdict};
use self::response::{Exchange, Framing, ResponseFields};
use super::MAX_HEADER_FIELDS;
use super::body::{ClientBody, ResponseBody};
use super::error::ProxyError;
use super::h1_codec;
use super::pipeline::{self, Downstream};
use super::raw_fields::Head;
use super::read_buf::{self, CLOSE_WAIT, LINGER_BUDGET};
use super::rewind::Rewind;
use super::server_fields;
use super::upgrade::{BoxedIo, ClientUpgrade};
use crate::runtime::shutdown::{Phase, Reached, Shutdown};

/// How long an idle keep-alive connection stays open once shutdown began, so a client's
/// next request (already on its way) is answered with `Connection: close` instead of
/// meeting a closed socket.
pub const KEEPALIVE_GRACE: Duration = Duration::from_secs(1);

/// The most of an unread request body read and discarded to keep the connection.
const DRAIN_BUDGET: usize = 64 * 1024;

/// What a connection refused, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    /// A head broke a rule; answered with this error.
    Malformed(ProxyError),
    /// A head did not complete within `header_read_timeout` (answered 408).
    SlowHead,
}

/// What waiting for the next head ended with.
enum Next {
    Request(RequestHead),
    Refused(Rejection),
    /// The client closed, went idle past `idle_timeout`, or shutdown ended the wait.
    End,
}

/// What a served request leaves the connection with.
enum After {
    KeepAlive,
    Close,
    Upgraded,
}

/// Serves one HTTP/1.1 connection, `read` holding bytes already read from it.
pub async fn serve(downstream: Arc<Downstream>, io: BoxedIo, read: BytesMut, shutdown: Shutdown) {
    let closed = shutdown.reached(Phase::Closed);
    let stop_accepting = shutdown.reached(Phase::StopAccepting);
    let mut connection = Connection {
        downstream,
        shared: Shared::new(io, read),
        shutdown,
        stop_accepting: Some(stop_accepting),
        clock: Box::pin(tokio::time::sleep(Duration::ZERO)),
        write_buf: BytesMut::new(),
    };
    // Biased: the connection first, and no random draw on every wakeup of its task.
    tokio::select! {
        biased;
        () = connection.run() => {}
        () = closed => {}
    }
}

/// One connection's loop and what it needs.
struct Connection {
    downstream: Arc<Downstream>,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    /// Resolves when shutdown stops accepting (`None` once it did): made once per
    /// connection, not once per wait for a head.
    stop_accepting: Option<Reached>,
    /// The head-read and idle clock, reset for each wait.
    clock: Pin<Box<Sleep>>,
    /// The buffer responses are encoded into, kept between requests.
    write_buf: BytesMut,
}

impl Connection {
    async fn run(&mut self) {
        let config = &self.downstream.listener.config;
        let limits = HeadLimits {
            max_header_bytes: usize::try_from(config.max_header_bytes).unwrap_or(usize::MAX),
            max_headers: MAX_HEADER_FIELDS,
        };
        // The first head's clock runs from the accept.
        let mut head_deadline = Some(Instant::now() + config.header_read_timeout);
        loop {
            let next = self.next_head(&limits, head_deadline.take()).await;
            let head = match next {
                Next::Request(head) => head,
                Next::End => break,
                Next::Refused(rejection) => {
                    self.refuse(rejection).await;
                    break;
                }
            };
            match self.serve_request(head).await {
                After::KeepAlive => {}
                After::Close => break,
                After::Upgraded => return,
            }
        }
        self.close().await;
    }

    /// Waits for the next complete head. `first_deadline`: the first head's clock, which
    /// runs whether or not a byte came.
    async fn next_head(&mut self, limits: &HeadLimits, first_deadline: Option<Instant>) -> Next {
        let config = &self.downstream.listener.config;
        let mut in_head = first_deadline.is_some() || !self.shared.lock().read.is_empty();
        let deadline = first_deadline.unwrap_or_else(|| {
            Instant::now()
                + if in_head {
                    config.header_read_timeout
                } else {
                    config.idle_timeout
                }
        });
        self.clock.as_mut().reset(deadline);
        if self.shutdown.phase() >= Phase::StopAccepting {
            self.stop_accepting = None;
            if !in_head {
                return Next::End;
            }
        }
        // Where the search for the head's end resumes (a head is parsed only once its end
        // may be there, so a head sent a byte at a time is not parsed a byte at a time).
        let mut scanned = 0;
        // The first byte of a later head came: its clock is armed only if that read did
        // not complete the head (the usual head arrives whole, and moving a timer earlier
        // costs more than the parse).
        let mut head_clock_due = false;
        loop {
            {
                let mut state = self.shared.lock();
                if may_hold_a_head(&state.read, &mut scanned, limits) {
                    match head::parse(&mut state.read, limits) {
                        Verdict::Complete(head) => return Next::Request(head),
                        Verdict::Reject(error) => {
                            return Next::Refused(Rejection::Malformed(error));
                        }
                        Verdict::Partial => {}
                    }
                }
            }
            if head_clock_due {
                head_clock_due = false;
                self.clock
                    .as_mut()
                    .reset(Instant::now() + config.header_read_timeout);
            }
            let shared = &self.shared;
            // Biased, read first: no random draw per wait, and the clock is polled only
            // while the read waits (bytes that keep coming end in a head or in
            // `max_header_bytes`, so they cannot keep the clock from being looked at).
            tokio::select! {
                biased;
                read = poll_fn(|cx| shared.lock().poll_fill(cx)) => match read {
                    Ok(0) | Err(_) => return Next::End,
                    Ok(_) => {
                        if !in_head {
                            in_head = true;
                            head_clock_due = true;
                        }
                    }
                },
                () = self.clock.as_mut() => {
                    return if in_head {
                        Next::Refused(Rejection::SlowHead)
                    } else {
                        Next::End
                    };
                }
                () = async { if let Some(stop) = &mut self.stop_accepting { stop.await } }, if self.stop_accepting.is_some() => {
                    self.stop_accepting = None;
                    if !in_head {
                        let grace = Instant::now() + KEEPALIVE_GRACE;
                        if grace < self.clock.deadline() {
                            self.clock.as_mut().reset(grace);
                        }
                    }
                }
            }
        }
    }

    /// Runs one request through the pipeline and writes its response.
    async fn serve_request(&mut self, head: RequestHead) -> After {
        let (request, exchange, switch) = self.begin(head);
        let response = match pipeline::handle(Arc::clone(&self.downstream), request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, mut body) = response.into_parts();
        let closing = self.shutdown.phase() >= Phase::StopAccepting;
        let cannot_reuse = {
            let mut state = self.shared.lock();
            // A client still waiting for `100 Continue` may never send the body; one
            // longer than the drain budget will not be read to its end.
            state.final_response_begins() || state.body_exceeds(DRAIN_BUDGET)
        };
        let exchange = Exchange {
            keep_alive: exchange.keep_alive && !closing && !cannot_reuse,
            switching: switch.is_some() && parts.status == StatusCode::SWITCHING_PROTOCOLS,
            ..exchange
        };
        let raw = body.take_raw_fields();
        let head = Head {
            map: &parts.headers,
            raw: raw.as_deref(),
        };
        let fields = ResponseFields::of(head);
        let declared = fields.declared_length.is_some();
        let known_length = server_fields::length_to_declare(parts.status, declared, &body);
        let plan = response::plan(parts.status, &fields, known_length, exchange);
        let mut out = std::mem::take(&mut self.write_buf);
        response::encode_head(
            parts.status,
            head,
            &fields,
            &plan,
            &exchange,
            &server_fields::now_date(),
            &mut out,
        );
        h1_codec::recycle_map(parts.headers);
        if exchange.switching {
            return match self.switch(out, switch).await {
                Ok(()) => After::Upgraded,
                Err(error) => {
                    debug!(%error, "switching protocols failed");
                    After::Close
                }
            };
        }
        let written = self.write_body(&mut out, body, plan.framing).await;
        self.write_buf = h1_codec::emptied(out);
        if let Err(error) = written {
            debug!(listener = %self.downstream.listener.name, %error, "HTTP/1.1 response not delivered");
            return After::Close;
        }
        if !plan.keep_alive {
            return After::Close;
        }
        if self.finish_request_body().await {
            After::KeepAlive
        } else {
            After::Close
        }
    }

    /// The request `head` starts, as the pipeline takes it; what its response is sent by;
    /// and, for a request that asks to switch protocols, where the switched connection
    /// goes. Apart from [`Connection::serve_request`] so the head's pieces are not kept in
    /// its future while the pipeline runs.
    fn begin(
        &self,
        head: RequestHead,
    ) -> (
        pipeline::ClientRequest,
        Exchange,
        Option<oneshot::Sender<BoxedIo>>,
    ) {
        let RequestHead {
            mut request,
            body: framing,
            upgrade,
            connect,
            keep_alive,
            expect_continue,
        } = head;
        let exchange = Exchange {
            head_request: request.method() == Method::HEAD,
            http10: request.version() == Version::HTTP_10,
            keep_alive: keep_alive && !connect,
            switching: false,
        };
        let generation = self.shared.lock().start_body(framing, expect_continue);
        let body = match framing {
            head::BodyFraming::None => H1Body::empty(),
            _ => H1Body::reading(Arc::clone(&self.shared), generation),
        };
        let protocol = upgrade
            .then(|| request.headers().get(UPGRADE).cloned())
            .flatten();
        let switch = protocol.map(|protocol| {
            let (extension, sender) = ClientUpgrade::pair(protocol);
            request.extensions_mut().insert(extension);
            sender
        });
        *request.body_mut() = pipeline::client_body(&self.downstream, ClientBody::Left(body));
        (request, exchange, switch)
    }

    /// Writes the response head already in `out`, then the body framed as `framing`.
    async fn write_body(
        &mut self,
        out: &mut BytesMut,
        mut body: ResponseBody,
        framing: Framing,
    ) -> Result<(), WriteError> {
        let mut encoding = framing.encoding();
        let mut large = Bytes::new();
        loop {
            // Every frame already there goes into this write; the first one not there
            // yet is waited for after the write.
            let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    self.write(out, &mut large).await?;
                    poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let frame = match frame {
                None => {
                    encoding.end(None, out)?;
                    return self.write(out, &mut large).await;
                }
                Some(Err(error)) => {
                    // What came is sent; the body cannot be completed, so the
                    // connection closes and the client sees it cut short.
                    let _ = self.write(out, &mut large).await;
                    return Err(WriteError::Body(error));
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => {
                    if let Some(frame) = encoding.data(data, out)? {
                        large = frame.data;
                        self.write(out, &mut large).await?;
                        out.extend_from_slice(frame.tail);
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        encoding.end(Some(&trailers), out)?;
                        return self.write(out, &mut large).await;
                    }
                    continue;
                }
            }
            if body.is_end_stream() {
                encoding.end(None, out)?;
                return self.write(out, &mut large).await;
            }
            if out.len() >= h1_codec::COALESCE {
                self.write(out, &mut large).await?;
            }
        }
    }

    /// Writes `out` then `large`, both emptied, and flushes. A client that takes no
    /// byte for `idle_timeout` fails the write (SPEC 3.1: an exchange with no bytes moving
    /// either way ends); the clock is armed only when the socket makes the write wait.
    async fn write(&mut self, out: &mut BytesMut, large: &mut Bytes) -> Result<(), WriteError> {
        let shared = &self.shared;
        let idle = self.downstream.listener.config.idle_timeout;
        let clock = &mut self.clock;
        let mut armed = false;
        // The outcome of a write the socket made wait: an error once the client has taken
        // nothing for `idle_timeout` since the write first waited or last moved.
        let mut stalled = |cx: &mut std::task::Context<'_>, armed: &mut bool| {
            if !*armed {
                *armed = true;
                clock.as_mut().reset(Instant::now() + idle);
            }
            std::task::ready!(clock.as_mut().poll(cx));
            Poll::Ready(Err(WriteError::Stalled(idle)))
        };
        poll_fn(|cx| {
            let mut state = shared.lock();
            while !out.is_empty() || !large.is_empty() {
                let written = state.poll_write(cx, &[IoSlice::new(out), IoSlice::new(large)]);
                let n = match written {
                    Poll::Ready(written) => written?,
                    Poll::Pending => return stalled(cx, &mut armed),
                };
                if n == 0 {
                    return Poll::Ready(Err(
                        std::io::Error::from(std::io::ErrorKind::WriteZero).into()
                    ));
                }
                // Bytes moved: the next wait starts a new `idle_timeout`.
                armed = false;
                let from_out = n.min(out.len());
                read_buf::consume_written(out, from_out);
                large.advance(n - from_out);
            }
            match state.poll_flush(cx) {
                Poll::Ready(flushed) => Poll::Ready(flushed.map_err(WriteError::Io)),
                Poll::Pending => stalled(cx, &mut armed),
            }
        })
        .await
    }

    /// Writes the `101` head and hands the connection, with whatever the client sent
    /// after its request, to the tunnel.
    async fn switch(
        &mut self,
        mut out: BytesMut,
        sender: Option<oneshot::Sender<BoxedIo>>,
    ) -> Result<(), WriteError> {
        self.write(&mut out, &mut Bytes::new()).await?;
        let taken = self.shared.lock().take_io();
        if let (Some(sender), Some((io, read))) = (sender, taken) {
            let io: BoxedIo = Box::new(Rewind::new(read, io));
            let _ = sender.send(io);
        }
        Ok(())
    }

    /// Makes the connection ready for the next request: the body of this one read to its
    /// end (drained within [`DRAIN_BUDGET`] and `header_read_timeout` if the pipeline left
    /// it). False when the connection cannot carry another request.
    async fn finish_request_body(&mut self) -> bool {
        {
            let mut state = self.shared.lock();
            if state.body_done() {
                return true;
            }
            state.detach_body();
        }
        let shared = &self.shared;
        let mut budget = DRAIN_BUDGET;
        let drain = poll_fn(|cx| shared.lock().poll_drain(cx, &mut budget));
        let limit = self.downstream.listener.config.header_read_timeout;
        tokio::time::timeout(limit, drain).await.unwrap_or(false)
    }

    /// Answers a refused head and accounts for it.
    async fn refuse(&mut self, rejection: Rejection) {
        let listener = &self.downstream.listener;
        let error = match rejection {
            Rejection::SlowHead => {
                listener.rejected.count("slow_head");
                ProxyError::Request {
                    status: StatusCode::REQUEST_TIMEOUT,
                    details: "header_read_timeout",
                }
            }
            Rejection::Malformed(error) => {
                debug!(listener = %listener.name, client = %self.downstream.hop.peer, details = error.details(), "request head refused");
                listener.unrouted.count(error.status().as_u16(), true);
                error
            }
        };
        let mut answer = BytesMut::from(&error.to_h1_bytes()[..]);
        let _ = tokio::time::timeout(CLOSE_WAIT, self.write(&mut answer, &mut Bytes::new())).await;
    }

    /// Ends the connection: the write side shut (a TLS close_notify sent), then what the
    /// client still sends read and dropped for a while (a lingering close: closing a
    /// socket with unread bytes sends a reset, which can destroy the response still on
    /// its way to the client), each within a bound.
    async fn close(&mut self) {
        let shared = &self.shared;
        let shutdown = poll_fn(|cx| shared.lock().poll_shutdown(cx));
        if tokio::time::timeout(CLOSE_WAIT, shutdown).await.is_err() {
            return;
        }
        let mut budget = LINGER_BUDGET;
        let linger = poll_fn(|cx| shared.lock().poll_discard(cx, &mut budget));
        let _ = tokio::time::timeout(CLOSE_WAIT, linger).await;
    }
}

/// Whether `read` may now hold a complete head (or has grown past the limit, which the
/// parse reports): its end, an empty line, lies at or after `scanned`, which moves on.
fn may_hold_a_head(read: &[u8], scanned: &mut usize, limits: &HeadLimits) -> bool {
    if read.is_empty() {
        return false;
    }
    if read.len() > limits.max_header_bytes || *scanned == 0 {
        // The first look parses whatever came, so garbage is refused at once.
        *scanned = read.len();
        return true;
    }
    let from = scanned.saturating_sub(3);
    *scanned = read.len();
    // A blank line at the very start is skipped by the parse, so it counts as an end too.
    read.get(from..)
        .is_some_and(|tail| tail.windows(2).any(|w| w == b"\n\n" || w == b"\n\r"))
}

/// Why a response could not be written whole.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("writing to the client: {0}")]
    Io(std::io::Error),
    #[error("the client took no byte for idle_timeout ({0:?})")]
    Stalled(Duration),
    #[error("the response body failed: {0}")]
    Body(super::body::BoxError),
    #[error(transparent)]
    Framing(#[from] h1_codec::EncodeError),
}

impl From<std::io::Error> for WriteError {
    fn from(error: std::io::Error) -> Self {
        WriteError::Io(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 64,
        max_headers: 100,
    };

    #[test]
    fn a_head_is_parsed_only_once_its_end_may_have_come() {
        let mut scanned = 0;
        assert!(
            may_hold_a_head(b"GET / HTTP/1.1\r\n", &mut scanned, &LIMITS),
            "first look"
        );
        assert!(!may_hold_a_head(
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            &mut scanned,
            &LIMITS
        ));
        assert_eq!(scanned, 25);
        assert!(may_hold_a_head(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            &mut scanned,
            &LIMITS
        ));
        let mut scanned = 3;
        assert!(may_hold_a_head(
            b"GET / HTTP/1.1\n\n",
            &mut scanned,
            &LIMITS
        ));
        let long = [b'a'; 65];
        let mut scanned = 0;
        assert!(
            may_hold_a_head(&long, &mut scanned, &LIMITS),
            "past the limit: parse to refuse"
        );
        assert!(!may_hold_a_head(b"", &mut 0, &LIMITS));
    }
}
