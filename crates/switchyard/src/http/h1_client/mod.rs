//! The upstream side of an HTTP/1.1 exchange, driven inside the request's own task.
//!
//! hyper's client runs every upstream connection as a task of its own and hands each
//! request to it through a channel: two wakeups and a cross-task handoff per request, plus
//! a second HTTP/1.1 encoder and parser. Here the request's task writes the head and body
//! and reads the response itself; the response body owns the connection while it streams
//! and gives it back to the pool ([`Checkin`]) the moment the last byte was read, so an
//! HTTP/1.1 client, its upstream and the proxy's work for one request share one task.
//!
//! The exchange is full duplex, like hyper's: the request body keeps streaming while the
//! response head and body are read (an upstream may answer before it has read the whole
//! upload), with one frame of the request body held at a time, so memory per exchange is
//! bounded by the largest frame plus the read buffer. A connection goes back to the pool
//! only when both directions ended cleanly, the upstream allows keep-alive, and nothing
//! unexpected follows the response; anything else closes it.
//!
//! Upgrades (WebSocket) do not come here: they take a hyper connection of their own,
//! which is never pooled ([`super::upstream`]).

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Response, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::added_fields::AddedFields;
use super::body::{BoxError, RequestBody};
use super::h1_codec::{
    self as codec, BodyEncoding, ChunkedDecoder, Decoded, RequestFraming, ResponseFraming,
};
use super::raw_fields::RawFields;
use super::read_buf;
use super::upstream::UpstreamRequest;
use crate::tls::upstream::{TlsFailure, UpstreamStream, failure_of};

/// An open HTTP/1.1 connection to an upstream, between exchanges.
#[derive(Debug)]
pub struct Connection {
    io: UpstreamStream,
    read: BytesMut,
    /// The buffer request heads are encoded into, kept between exchanges.
    write: BytesMut,
}

impl Connection {
    /// A connection over `io`, nothing read yet.
    pub fn new(io: UpstreamStream) -> Connection {
        Connection {
            io,
            read: BytesMut::new(),
            write: BytesMut::new(),
        }
    }

    /// Whether an idle connection can carry a request: the upstream has neither closed it
    /// nor sent anything unasked. Reads without waiting (a TLS record such as a session
    /// ticket is consumed on the way).
    pub fn is_alive(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }
}

/// Where a connection goes when an exchange ended cleanly (dropped unused: the connection
/// is closed and its place under the limits freed).
pub trait Checkin: Send + Sync + 'static {
    /// Takes the connection back.
    fn put_back(self: Box<Self>, connection: Connection);
}

/// Why an exchange failed before a response head.
#[derive(Debug)]
pub enum HeadFailure {
    /// Not one byte of the request was written: the request, untouched, can go out on
    /// another connection.
    Unsent(UpstreamRequest),
    /// The request body failed (the client went away, or a limit cut it off).
    RequestBody,
    /// The connection broke, or the upstream answered with something that is not an
    /// HTTP/1.1 response.
    Upstream,
    /// TLS to the upstream failed after the handshake (in TLS 1.3 an upstream refuses a
    /// client certificate with an alert that arrives after the handshake has ended).
    Tls(TlsFailure),
}

/// The request side of an exchange.
#[derive(Debug)]
struct Writer {
    /// The request, in the box it came in (moving its head and body out would copy them
    /// into the exchange): whole until its first byte is written, so an unsent request
    /// can be handed back; then its header map goes back for reuse and its body streams.
    /// `None` once handed back.
    request: Option<UpstreamRequest>,
    /// The head's added fields (module `added_fields`), written with the head and kept
    /// with it for the same reason.
    added: AddedFields,
    /// The request's body still has frames to send (a body that is done, or refused, is
    /// replaced by an empty one, so it is dropped as soon as it is).
    body_open: bool,
    /// How the body's frames go on the wire (and what a length still owes).
    encoding: BodyEncoding,
    /// Framing (and small frames) waiting to be written.
    out: BytesMut,
    /// A large frame waiting to be written after `out`, then `tail`.
    data: Bytes,
    tail: &'static [u8],
    wrote: bool,
    needs_flush: bool,
    done: bool,
}

/// How the request side stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteFailure {
    /// The connection refused a write.
    Io,
    /// The request body failed or did not match its declared length.
    Body,
}

impl Writer {
    /// `out`: the (empty) buffer to encode into.
    fn new(mut request: UpstreamRequest, mut out: BytesMut) -> Result<Writer, UpstreamRequest> {
        let body = request.body();
        let exact = body.size_hint().exact();
        let Some(framing) = RequestFraming::of(request.headers(), body.is_end_stream(), exact)
        else {
            return Err(request);
        };
        let added = request.body_mut().take_added_fields();
        codec::encode_request_head(
            request.method(),
            request.uri(),
            request.headers(),
            &added,
            framing,
            &mut out,
        );
        let (body_open, encoding) = match framing {
            RequestFraming::Empty | RequestFraming::Length(0) => (false, BodyEncoding::Discard),
            RequestFraming::Length(n) => (true, BodyEncoding::Length(n)),
            RequestFraming::Chunked => (true, BodyEncoding::Chunked),
        };
        let mut writer = Writer {
            request: Some(request),
            added,
            body_open,
            encoding,
            out,
            data: Bytes::new(),
            tail: b"",
            wrote: false,
            needs_flush: true,
            done: false,
        };
        if !body_open {
            writer.close_body();
        }
        Ok(writer)
    }

    /// Drops the request's body (replaced by an empty one): it has nothing more to send.
    fn close_body(&mut self) {
        self.body_open = false;
        if let Some(request) = &mut self.request {
            *request.body_mut() = RequestBody::empty();
        }
    }

    /// The (emptied) write buffer, for the connection's next exchange; a large one is not
    /// kept.
    fn take_buffer(&mut self) -> BytesMut {
        codec::emptied(std::mem::take(&mut self.out))
    }

    /// The request back, when not one byte of it went out.
    fn unsent(&mut self) -> Option<UpstreamRequest> {
        if self.wrote {
            return None;
        }
        let mut request = self.request.take()?;
        request
            .body_mut()
            .set_added_fields(std::mem::take(&mut self.added));
        Some(request)
    }

    /// Writes what is pending and pulls the body on, frame by frame, until the request
    /// has gone out (`Ready(Ok)`), the socket or the body makes it wait, or it fails.
    fn poll_send(
        &mut self,
        io: &mut UpstreamStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WriteFailure>> {
        loop {
            while !self.out.is_empty() || !self.data.is_empty() || !self.tail.is_empty() {
                let pending: &[u8] = if !self.out.is_empty() {
                    &self.out
                } else if !self.data.is_empty() {
                    &self.data
                } else {
                    self.tail
                };
                let n = match Pin::new(&mut *io).poll_write(cx, pending) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(WriteFailure::Io));
                    }
                    Poll::Ready(Ok(n)) => n,
                    Poll::Pending => return Poll::Pending,
                };
                if !self.wrote {
                    self.wrote = true;
                    // The head went out: it can no longer be handed back.
                    if let Some(request) = &mut self.request {
                        codec::recycle_map(std::mem::take(request.headers_mut()));
                    }
                }
                if !self.out.is_empty() {
                    read_buf::consume_written(&mut self.out, n);
                } else if !self.data.is_empty() {
                    self.data.advance(n);
                } else {
                    self.tail = &self.tail[n..];
                }
                self.needs_flush = true;
            }
            if self.needs_flush {
                match Pin::new(&mut *io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.needs_flush = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(WriteFailure::Io)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let Some(request) = self.request.as_mut().filter(|_| self.body_open) else {
                self.done = true;
                return Poll::Ready(Ok(()));
            };
            match Pin::new(request.body_mut()).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => self.frame(frame)?,
                Poll::Ready(None) => self.end(None)?,
                Poll::Ready(Some(Err(_))) => {
                    self.close_body();
                    return Poll::Ready(Err(WriteFailure::Body));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Frames one piece of the body for the wire.
    fn frame(&mut self, frame: Frame<Bytes>) -> Result<(), WriteFailure> {
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                return match frame.into_trailers() {
                    Ok(trailers) => self.end(Some(&trailers)),
                    Err(_) => Ok(()),
                };
            }
        };
        match self.encoding.data(data, &mut self.out) {
            Ok(Some(large)) => {
                self.data = large.data;
                self.tail = large.tail;
            }
            Ok(None) => {}
            Err(_) => {
                self.close_body();
                return Err(WriteFailure::Body);
            }
        }
        if self.encoding.is_full() {
            // Nothing more may go out; whatever the body still holds would be refused by
            // its own length check.
            self.close_body();
        }
        Ok(())
    }

    /// The body ended (with `trailers`, for a chunked body).
    fn end(&mut self, trailers: Option<&HeaderMap>) -> Result<(), WriteFailure> {
        self.close_body();
        self.encoding
            .end(trailers, &mut self.out)
            .map_err(|_| WriteFailure::Body)
    }
}

/// How the rest of the response body is delimited.
#[derive(Debug)]
enum Reading {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// One request and its response on one connection.
pub struct Exchange {
    connection: Connection,
    writer: Writer,
    write_failure: Option<WriteFailure>,
    head_request: bool,
    reading: Reading,
    keep_alive: bool,
    checkin: Option<Box<dyn Checkin>>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("reading", &self.reading)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// Starts `request` on `connection`; `checkin` takes the connection back if the
    /// exchange ends cleanly. Gives the request back (and drops the connection) when its
    /// `Content-Length` is not a number.
    pub fn start(
        connection: Connection,
        request: UpstreamRequest,
        checkin: Box<dyn Checkin>,
    ) -> Result<Box<Exchange>, UpstreamRequest> {
        let head_request = request.method() == Method::HEAD;
        let mut connection = connection;
        let writer = Writer::new(request, std::mem::take(&mut connection.write))?;
        Ok(Box::new(Exchange {
            connection,
            writer,
            write_failure: None,
            head_request,
            reading: Reading::Done,
            keep_alive: false,
            checkin: Some(checkin),
        }))
    }

    /// Sends the request and reads up to the response head (informational answers such
    /// as `100 Continue` are skipped).
    pub async fn head(mut self: Box<Self>) -> Result<Response<DirectBody>, HeadFailure> {
        let head = std::future::poll_fn(|cx| self.poll_head(cx)).await?;
        self.keep_alive = head.keep_alive;
        self.reading = match head.framing {
            ResponseFraming::None | ResponseFraming::Length(0) => Reading::Done,
            ResponseFraming::Length(n) => Reading::Length(n),
            ResponseFraming::Chunked => Reading::Chunked(ChunkedDecoder::default()),
            ResponseFraming::UntilClose => Reading::UntilClose,
        };
        let mut response = Response::new(());
        *response.status_mut() = head.status;
        *response.version_mut() = Version::HTTP_11;
        *response.headers_mut() = head.headers;
        let mut body = DirectBody {
            exchange: Some(self),
            raw: head.raw,
        };
        body.end_if_done();
        Ok(response.map(|()| body))
    }

    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<codec::ResponseHead, HeadFailure>> {
        loop {
            self.drive_writer(cx);
            if self.write_failure == Some(WriteFailure::Body) {
                return Poll::Ready(Err(HeadFailure::RequestBody));
            }
            // Nothing read yet (the usual first poll): nothing to parse.
            if !self.connection.read.is_empty() {
                match codec::parse_response_head(&mut self.connection.read, self.head_request) {
                    Ok(Some(head)) if head.status.is_informational() => continue,
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(_) => return Poll::Ready(Err(HeadFailure::Upstream)),
                }
            }
            match self.poll_read(cx) {
                Poll::Ready(Ok(n)) if n > 0 => {}
                Poll::Ready(Err(error)) => {
                    if let Some(failure) = failure_of(&error) {
                        return Poll::Ready(Err(HeadFailure::Tls(failure)));
                    }
                    return Poll::Ready(Err(self.broken()));
                }
                Poll::Ready(Ok(_)) => return Poll::Ready(Err(self.broken())),
                Poll::Pending if self.write_failure.is_some() => {
                    return Poll::Ready(Err(self.broken()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The failure of a connection that broke before the response head.
    fn broken(&mut self) -> HeadFailure {
        match self.writer.unsent() {
            Some(request) => HeadFailure::Unsent(request),
            None => HeadFailure::Upstream,
        }
    }

    /// Moves the request side on, keeping its first failure.
    fn drive_writer(&mut self, cx: &mut Context<'_>) {
        if self.writer.done || self.write_failure.is_some() {
            return;
        }
        if let Poll::Ready(Err(failure)) = self.writer.poll_send(&mut self.connection.io, cx) {
            self.write_failure = Some(failure);
        }
    }

    /// Reads more of the response into the read buffer: `Ok(0)` at the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let connection = &mut self.connection;
        read_buf::poll_fill(&mut connection.io, &mut connection.read, cx)
    }

    /// The next piece of the response body.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            self.drive_writer(cx);
            let read = &mut self.connection.read;
            let frame = match &mut self.reading {
                Reading::Done => return Poll::Ready(None),
                Reading::Length(left) if !read.is_empty() => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(read.len());
                    *left -= n as u64;
                    if *left == 0 {
                        self.reading = Reading::Done;
                    }
                    Frame::data(read.split_to(n).freeze())
                }
                Reading::UntilClose if !read.is_empty() => Frame::data(read.split().freeze()),
                Reading::Chunked(decoder) => match decoder.decode(read) {
                    Ok(Decoded::Data(data)) => Frame::data(data),
                    Ok(Decoded::Trailers(trailers)) => {
                        self.reading = Reading::Done;
                        Frame::trailers(trailers)
                    }
                    Ok(Decoded::End) => {
                        self.reading = Reading::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => match self.poll_read(cx) {
                        Poll::Ready(Ok(n)) if n > 0 => continue,
                        Poll::Ready(_) => return Poll::Ready(Some(Err(incomplete()))),
                        Poll::Pending => return Poll::Pending,
                    },
                    Err(error) => return Poll::Ready(Some(Err(Box::new(error)))),
                },
                Reading::Length(_) | Reading::UntilClose => match self.poll_read(cx) {
                    Poll::Ready(Ok(n)) if n > 0 => continue,
                    Poll::Ready(Ok(_)) if matches!(self.reading, Reading::UntilClose) => {
                        self.reading = Reading::Done;
                        self.keep_alive = false;
                        return Poll::Ready(None);
                    }
                    Poll::Ready(_) => return Poll::Ready(Some(Err(incomplete()))),
                    Poll::Pending => return Poll::Pending,
                },
            };
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    /// Whether the connection can carry another request: both directions ended cleanly,
    /// the upstream keeps it alive, nothing unread follows the response.
    fn reusable(&self) -> bool {
        self.keep_alive
            && self.writer.done
            && self.write_failure.is_none()
            && matches!(self.reading, Reading::Done)
            && self.connection.read.is_empty()
    }
}

fn incomplete() -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "upstream closed before the end of the response body",
    ))
}

/// A response body read straight from the upstream connection; the connection goes back
/// to its pool the moment the body has been read to its end.
#[derive(Debug)]
pub struct DirectBody {
    exchange: Option<Box<Exchange>>,
    /// The head's fields when they were kept raw (module `raw_fields`): they travel with
    /// the body, which goes wherever the head goes.
    raw: Option<Box<RawFields>>,
}

impl DirectBody {
    /// The response head's raw fields, taken.
    pub fn take_raw_fields(&mut self) -> Option<Box<RawFields>> {
        self.raw.take()
    }

    /// Once the body has ended: the connection goes back (or is closed).
    fn end_if_done(&mut self) {
        let done = self
            .exchange
            .as_ref()
            .is_some_and(|e| matches!(e.reading, Reading::Done));
        if !done {
            return;
        }
        if let Some(mut exchange) = self.exchange.take() {
            // A request body still streaming when the response ended is not waited for.
            let mut cx = Context::from_waker(Waker::noop());
            exchange.drive_writer(&mut cx);
            if exchange.reusable() {
                if let Some(checkin) = exchange.checkin.take() {
                    let mut connection = exchange.connection;
                    connection.write = exchange.writer.take_buffer();
                    checkin.put_back(connection);
                }
            }
        }
    }
}

impl Body for DirectBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(exchange) = self.exchange.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = exchange.poll_body(cx);
        match &polled {
            Poll::Ready(Some(Err(_))) => self.exchange = None,
            Poll::Ready(_) => self.end_if_done(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.exchange.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exchange.as_ref().map(|e| &e.reading) {
            None | Some(Reading::Done) => SizeHint::with_exact(0),
            Some(Reading::Length(n)) => SizeHint::with_exact(*n),
            Some(Reading::Chunked(_) | Reading::UntilClose) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::{HeaderValue, Request};

    use super::*;
    use crate::http::added_fields::AddedValues;

    #[test]
    fn an_unsent_request_comes_back_with_the_fields_written_beside_its_map() {
        let added = AddedFields::new(AddedValues {
            via: Some(HeaderValue::from_static("1.1 switchyard")),
            ..AddedValues::default()
        });
        let request = Request::builder()
            .uri("/x")
            .header("host", "a.example")
            .body(RequestBody::empty().with_added_fields(added.clone()))
            .unwrap();
        let mut writer = Writer::new(Box::new(request), BytesMut::new()).unwrap();
        assert_eq!(
            &writer.out[..],
            b"GET /x HTTP/1.1\r\nhost: a.example\r\nvia: 1.1 switchyard\r\n\r\n"
        );
        let mut back = writer.unsent().unwrap();
        assert_eq!(back.headers().len(), 1);
        assert_eq!(back.body_mut().take_added_fields(), added);
    }
}
