//! One HTTP/2 connection's state: the frames it reads, checked against RFC 9113 as they
//! arrive; its streams with their flow-control windows; and the frames it writes, queued
//! in one buffer and written together.
//!
//! Reading, parsing and writing happen in [`Connection::poll_turn`], called by the
//! connection's task whenever it is woken; the streams' pipeline runs and response bodies
//! are polled in the same turn (see [`super::tasks`]). A broken rule that concerns one
//! stream resets that stream; one that concerns the connection (or leaves the header
//! compression state unknowable) ends it with GOAWAY. What one client may make the proxy
//! hold is bounded: request DATA by the windows we advertise, a header block by
//! `max_header_bytes`, queued output by [`WRITE_HIGH_WATER`] (past it, nothing more is read
//! or produced until the client takes what is queued), and resets of unanswered streams
//! by [`RESET_CREDIT`] (CVE-2023-44487).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, DATE, EXPECT};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::body::{Channel, ClientH2Body, H2BodyError};
use super::request::{Fields, Refusal, is_connection_specific_response_field};
use super::tasks::Tasks;
use crate::http::body::{ClientBody, ResponseBody};
use crate::http::error::ProxyError;
use crate::http::h2_codec::frame::{self, Head, Reason, flag, kind, setting};
use crate::http::h2_codec::hpack::{self, Decoder};
use crate::http::read_buf;
use crate::http::server_fields;

/// Queued output past which the connection stops reading and streams stop producing.
pub const WRITE_HIGH_WATER: usize = 64 * 1024;

/// Resets of unanswered streams a client may have outstanding: each costs one, each
/// answered stream earns one back, and a connection that runs out is closed with
/// ENHANCE_YOUR_CALM (the rapid-reset attack opens and cancels streams without end).
pub const RESET_CREDIT: u32 = 100;

/// The header table size we advertise (RFC 7541's default).
const HEADER_TABLE_SIZE: usize = 4096;

/// The opaque data of the PING sent with the first GOAWAY of a graceful shutdown.
pub const SHUTDOWN_PING: [u8; 8] = *b"swyd-bye";

/// Streams we reset whose late frames are still ignored rather than a connection error.
const REMEMBERED_RESETS: usize = 128;

/// Most rounds (read, handle, drive woken streams, write) in one turn before the task
/// yields to others.
const ROUNDS_PER_TURN: usize = 8;

/// Most frames handled in one turn before the task yields to others.
const FRAMES_PER_TURN: usize = 256;

/// Listener settings the connection enforces and advertises.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub stream_window: u32,
    /// The connection window we open (by WINDOW_UPDATE) past the initial 65,535.
    pub connection_window: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE (`max_header_bytes`).
    pub max_header_list: u32,
}

/// Why a connection ends.
#[derive(Debug)]
pub enum Ended {
    /// The client closed it, or every stream finished after a GOAWAY.
    Closed,
    /// We sent GOAWAY with this error.
    Error(Reason, &'static str),
    /// Reading or writing failed.
    Io(std::io::Error),
}

/// A connection error: GOAWAY with `reason`, then the end.
#[derive(Debug, Clone, Copy)]
struct ConnError(Reason, &'static str);

/// Stream ids hash to themselves, spread: the map holds a connection's open streams.
#[derive(Default)]
struct StreamIdHasher(u64);

impl Hasher for StreamIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type StreamMap = HashMap<u32, Stream, BuildHasherDefault<StreamIdHasher>>;

/// The client's half of a stream.
#[derive(Debug)]
enum RecvSide {
    /// DATA may still come.
    Open {
        /// What the client may still send before a WINDOW_UPDATE.
        window: i64,
        /// Read (or dropped) bytes not yet given back by a WINDOW_UPDATE.
        unacked: u32,
        content_length: Option<u64>,
        received: u64,
    },
    /// END_STREAM seen.
    Closed,
}

/// Our half of a stream.
enum SendSide {
    /// The pipeline is running.
    Waiting,
    /// The head went out; the body is being sent.
    Body {
        body: ResponseBody,
        /// Data polled from the body and not yet sent for want of window.
        pending: Bytes,
        /// `pending` is the body's last data.
        pending_ends: bool,
    },
    /// END_STREAM (or RST_STREAM) sent.
    Done,
}

/// One open stream.
struct Stream {
    /// Its slot in the task set.
    key: usize,
    /// Where its request body goes (`None`: the request ended with its head).
    channel: Option<Arc<Channel>>,
    recv: RecvSide,
    send: SendSide,
    /// What we may still send on it.
    send_window: i64,
}

/// A header block spread over HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct PartialBlock {
    stream: u32,
    end_stream: bool,
    self_dependent: bool,
    block: BytesMut,
}

/// One HTTP/2 connection; `M` makes the future that runs one request through the
/// pipeline.
pub struct Connection<S, F, M> {
    io: S,
    read: BytesMut,
    write: BytesMut,
    /// Written but not yet flushed through (TLS keeps records until flushed).
    unflushed: bool,
    read_closed: bool,
    decoder: Decoder,
    starter: M,
    tasks: Tasks<F>,
    /// The stream each task slot serves.
    slot_streams: Vec<u32>,
    streams: StreamMap,
    /// Streams that wait for send window (woken by WINDOW_UPDATE or SETTINGS).
    blocked_on_window: Vec<u32>,
    /// Streams that wait for room in the write buffer (woken once it drained).
    blocked_on_write: Vec<u32>,
    /// Streams reset by us while the client could still send on them: frames for them
    /// may still be on their way and are ignored (the most recent [`REMEMBERED_RESETS`]).
    reset_ids: VecDeque<u32>,
    limits: Limits,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE and SETTINGS_MAX_FRAME_SIZE.
    peer_window: u32,
    peer_max_frame: u32,
    /// Our SETTINGS were acknowledged: until then the client may use the defaults.
    settings_acked: bool,
    /// What we may still send on the connection.
    send_window: i64,
    /// What the client may still send on the connection, and what it was given back.
    recv_window: i64,
    recv_unacked: u32,
    /// The highest stream id the client opened.
    last_stream: u32,
    /// A GOAWAY with this last stream id went out: later streams are ignored.
    goaway_last: Option<u32>,
    /// The client sent GOAWAY: no new streams will come.
    peer_going_away: bool,
    partial: Option<PartialBlock>,
    reset_credit: u32,
    /// The ack of [`SHUTDOWN_PING`] arrived.
    shutdown_ping_acked: bool,
}

impl<S, F, M> Connection<S, F, M>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Response<ResponseBody>>,
    M: FnMut(Request<ClientBody>) -> F,
{
    /// A connection whose preface was read (and is no longer in `read`), with our SETTINGS
    /// and connection WINDOW_UPDATE queued.
    pub fn new(io: S, read: BytesMut, limits: Limits, starter: M) -> Self {
        let mut write = BytesMut::with_capacity(16 * 1024);
        frame::put_settings(
            &mut write,
            &[
                (
                    setting::MAX_CONCURRENT_STREAMS,
                    limits.max_concurrent_streams,
                ),
                (setting::INITIAL_WINDOW_SIZE, limits.stream_window),
                (setting::MAX_HEADER_LIST_SIZE, limits.max_header_list),
                (setting::ENABLE_PUSH, 0),
            ],
        );
        let opened = limits
            .connection_window
            .saturating_sub(frame::DEFAULT_WINDOW);
        if opened > 0 {
            frame::put_window_update(&mut write, 0, opened);
        }
        Connection {
            io,
            read,
            write,
            unflushed: false,
            read_closed: false,
            decoder: Decoder::new(HEADER_TABLE_SIZE),
            starter,
            tasks: Tasks::new(),
            slot_streams: Vec::new(),
            streams: StreamMap::default(),
            blocked_on_window: Vec::new(),
            blocked_on_write: Vec::new(),
            reset_ids: VecDeque::new(),
            limits,
            peer_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
            settings_acked: false,
            send_window: i64::from(frame::DEFAULT_WINDOW),
            recv_window: i64::from(frame::DEFAULT_WINDOW.max(limits.connection_window)),
            recv_unacked: 0,
            last_stream: 0,
            goaway_last: None,
            peer_going_away: false,
            partial: None,
            reset_credit: RESET_CREDIT,
            shutdown_ping_acked: false,
        }
    }

    /// The connection's byte stream.
    pub fn into_io(self) -> S {
        self.io
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether the shutdown PING came back.
    pub fn shutdown_ping_acked(&self) -> bool {
        self.shutdown_ping_acked
    }

    /// Graceful shutdown, first step: GOAWAY(2^31-1) and a PING, so streams already on
    /// their way are still taken.
    pub fn announce_shutdown(&mut self) {
        frame::put_goaway(&mut self.write, frame::MAX_WINDOW, Reason::NO_ERROR);
        frame::put_ping(&mut self.write, false, SHUTDOWN_PING);
    }

    /// Graceful shutdown, second step (or an idle close): GOAWAY naming the last stream
    /// taken; later streams are refused by being ignored.
    pub fn go_away(&mut self) {
        if self.goaway_last.is_none() {
            self.goaway_last = Some(self.last_stream);
            frame::put_goaway(&mut self.write, self.last_stream, Reason::NO_ERROR);
        }
    }

    /// Whether the connection has nothing left to do after a GOAWAY from either side.
    pub fn finished(&self) -> bool {
        (self.goaway_last.is_some() || self.peer_going_away) && self.streams.is_empty()
    }

    /// Writes what is queued; `Ready` once everything went out (or writing failed).
    pub fn poll_flush_all(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.write.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.write) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    self.write.advance(n);
                    self.unflushed = true;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads, handles frames, drives woken streams and writes, until nothing more can
    /// happen without a wakeup (`Pending`), the connection ends, or [`ROUNDS_PER_TURN`]
    /// rounds went by (then it wakes itself and returns `Pending`, so other connections
    /// get their turn).
    pub fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        let mut frames = 0;
        for _ in 0..ROUNDS_PER_TURN {
            let mut progress = false;
            if !self.read_closed && self.write.len() < WRITE_HIGH_WATER {
                match read_buf::poll_fill(&mut self.io, &mut self.read, cx) {
                    Poll::Ready(Ok(0)) => self.read_closed = true,
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Ready(Err(error)) => return Poll::Ready(Ended::Io(error)),
                    Poll::Pending => {}
                }
            }
            while self.write.len() < WRITE_HIGH_WATER {
                let Some(head) = Head::parse(&self.read) else {
                    break;
                };
                if head.length > frame::DEFAULT_MAX_FRAME_SIZE {
                    return Poll::Ready(self.fail(ConnError(
                        Reason::FRAME_SIZE_ERROR,
                        "frame larger than SETTINGS_MAX_FRAME_SIZE",
                    )));
                }
                let total = frame::HEAD_LEN + head.length as usize;
                if self.read.len() < total {
                    self.read.reserve(total - self.read.len());
                    break;
                }
                let mut bytes = self.read.split_to(total);
                bytes.advance(frame::HEAD_LEN);
                if let Err(error) = self.handle_frame(head, bytes.freeze()) {
                    return Poll::Ready(self.fail(error));
                }
                progress = true;
                frames += 1;
                if frames >= FRAMES_PER_TURN {
                    break;
                }
            }
            if let Some(woken) = self.tasks.take_woken(cx) {
                progress = true;
                for &key in &woken {
                    if let Some(&id) = self.slot_streams.get(key) {
                        if self.tasks.is_live(key) {
                            self.drive(id);
                        }
                    }
                }
                self.tasks.recycle(woken);
            }
            if let Poll::Ready(Err(error)) = self.poll_flush_all(cx) {
                return Poll::Ready(Ended::Io(error));
            }
            if self.write.len() < WRITE_HIGH_WATER / 2 && !self.blocked_on_write.is_empty() {
                progress = true;
                for id in std::mem::take(&mut self.blocked_on_write) {
                    self.wake(id);
                }
            }
            if self.read_closed && self.write.is_empty() {
                return Poll::Ready(Ended::Closed);
            }
            if self.finished() && self.write.is_empty() {
                return Poll::Ready(Ended::Closed);
            }
            if frames >= FRAMES_PER_TURN {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Still moving: yield to other tasks (and get a fresh budget from tokio, whose
        // sockets answer Pending once a task used its budget) rather than loop on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Queues GOAWAY for a connection error; the caller flushes and ends.
    fn fail(&mut self, ConnError(reason, why): ConnError) -> Ended {
        debug!(%reason, why, "HTTP/2 connection error");
        frame::put_goaway(&mut self.write, self.last_stream, reason);
        Ended::Error(reason, why)
    }

    fn handle_frame(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if let Some(partial) = &self.partial {
            if head.kind != kind::CONTINUATION || head.stream != partial.stream {
                return Err(ConnError(
                    Reason::PROTOCOL_ERROR,
                    "header block interrupted",
                ));
            }
        }
        match head.kind {
            kind::DATA => self.on_data(head, payload),
            kind::HEADERS => self.on_headers(head, payload),
            kind::CONTINUATION => self.on_continuation(head, &payload),
            kind::PRIORITY => self.on_priority(head, &payload),
            kind::RST_STREAM => self.on_reset(head, &payload),
            kind::SETTINGS => self.on_settings(head, &payload),
            kind::PING => self.on_ping(head, &payload),
            kind::GOAWAY => {
                if head.stream != 0 {
                    return Err(ConnError(Reason::PROTOCOL_ERROR, "GOAWAY on a stream"));
                }
                if payload.len() < 8 {
                    return Err(ConnError(Reason::FRAME_SIZE_ERROR, "short GOAWAY"));
                }
                self.peer_going_away = true;
                Ok(())
            }
            kind::WINDOW_UPDATE => self.on_window_update(head, &payload),
            kind::PUSH_PROMISE => Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "PUSH_PROMISE from a client",
            )),
            _ => Ok(()),
        }
    }

    /// Whether `id` names a stream the client has not opened yet.
    fn is_idle(&self, id: u32) -> bool {
        id > self.last_stream
    }

    fn on_data(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        let charged = head.length;
        if i64::from(charged) > self.recv_window {
            return Err(ConnError(
                Reason::FLOW_CONTROL_ERROR,
                "DATA past the connection window",
            ));
        }
        self.recv_window -= i64::from(charged);
        let data = frame::strip_padding(head.flags, payload)
            .map_err(|_| ConnError(Reason::PROTOCOL_ERROR, "bad DATA padding"))?;
        let Some(stream) = self.streams.get_mut(&head.stream) else {
            if self.is_idle(head.stream) {
                return Err(ConnError(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            // A stream already closed (often one we reset): its bytes are given back.
            self.give_back_connection(charged);
            return Ok(());
        };
        let channel = &stream.channel;
        let RecvSide::Open {
            window,
            unacked,
            content_length,
            received,
        } = &mut stream.recv
        else {
            self.give_back_connection(charged);
            self.reset_stream(head.stream, Reason::STREAM_CLOSED);
            return Ok(());
        };
        if i64::from(charged) > *window {
            self.give_back_connection(charged);
            self.reset_stream(head.stream, Reason::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        *window -= i64::from(charged);
        // Padding is given back at once; the data when it is read.
        let padding = charged - data.len() as u32;
        *unacked += padding;
        *received += data.len() as u64;
        let end = head.has(flag::END_STREAM);
        let length_broken = content_length
            .is_some_and(|declared| *received > declared || (end && *received != declared));
        if length_broken {
            if let Some(channel) = channel {
                channel.fail(H2BodyError::Malformed(Reason::PROTOCOL_ERROR));
            }
            self.recv_unacked += padding;
            self.give_back_connection(data.len() as u32);
            self.reset_stream(head.stream, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        if let Some(channel) = channel {
            if !data.is_empty() {
                channel.push(data);
            }
            if end {
                channel.finish(None);
            }
        }
        if end {
            stream.recv = RecvSide::Closed;
        }
        self.recv_unacked += padding;
        self.send_connection_update();
        if end {
            self.drive(head.stream);
        }
        Ok(())
    }

    fn on_headers(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "HEADERS on stream 0"));
        }
        let payload = frame::strip_padding(head.flags, payload)
            .map_err(|_| ConnError(Reason::PROTOCOL_ERROR, "bad HEADERS padding"))?;
        let (priority, fragment) = frame::split_priority(head.flags, payload)
            .map_err(|_| ConnError(Reason::FRAME_SIZE_ERROR, "short HEADERS priority"))?;
        let self_dependent = priority.is_some_and(|p| p.depends_on == head.stream);
        let end_stream = head.has(flag::END_STREAM);
        if head.has(flag::END_HEADERS) {
            return self.on_header_block(head.stream, end_stream, self_dependent, &fragment);
        }
        self.check_block_size(fragment.len())?;
        self.partial = Some(PartialBlock {
            stream: head.stream,
            end_stream,
            self_dependent,
            block: BytesMut::from(&fragment[..]),
        });
        Ok(())
    }

    /// A header block may be at most the list size we allow plus some slack: its encoding
    /// is never larger than the list it decodes to, save a few bytes of table updates.
    fn check_block_size(&self, size: usize) -> Result<(), ConnError> {
        if size > self.limits.max_header_list as usize + 1024 {
            return Err(ConnError(
                Reason::ENHANCE_YOUR_CALM,
                "header block larger than max_header_bytes",
            ));
        }
        Ok(())
    }

    fn on_continuation(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let Some(partial) = &mut self.partial else {
            return Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS",
            ));
        };
        partial.block.extend_from_slice(payload);
        let size = partial.block.len();
        self.check_block_size(size)?;
        if !head.has(flag::END_HEADERS) {
            return Ok(());
        }
        let Some(PartialBlock {
            stream,
            end_stream,
            self_dependent,
            block,
        }) = self.partial.take()
        else {
            return Ok(());
        };
        self.on_header_block(stream, end_stream, self_dependent, &block.freeze())
    }

    /// Decodes a complete header block into `fields`.
    fn decode(&mut self, block: &Bytes, fields: &mut Fields) -> Result<(), ConnError> {
        self.decoder
            .decode(block, |field, size| fields.add(field, size))
            .map_err(|_| ConnError(Reason::COMPRESSION_ERROR, "header block does not decode"))
    }

    fn on_header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        self_dependent: bool,
        block: &Bytes,
    ) -> Result<(), ConnError> {
        let max_list = self.limits.max_header_list as usize;
        if self.streams.contains_key(&id) {
            let mut fields = Fields::trailers(max_list);
            self.decode(block, &mut fields)?;
            self.on_trailers(id, end_stream, fields);
            return Ok(());
        }
        if !self.is_idle(id) {
            // Decoded to keep the table in step. A stream we reset may still get the
            // client's frames; any other stream below the last one is closed for good.
            let mut fields = Fields::trailers(max_list);
            self.decode(block, &mut fields)?;
            if self.reset_ids.contains(&id) {
                return Ok(());
            }
            return Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "HEADERS on a closed stream",
            ));
        }
        if id % 2 == 0 {
            return Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "even stream id from a client",
            ));
        }
        self.last_stream = id;
        let mut fields = Fields::head(max_list);
        self.decode(block, &mut fields)?;
        if self.goaway_last.is_some_and(|last| id > last) {
            return Ok(());
        }
        if self_dependent {
            self.reset_stream(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        if self.streams.len() >= self.limits.max_concurrent_streams as usize {
            debug!(stream = id, "HTTP/2 stream refused: max concurrent streams");
            self.reset_stream(id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        let head = match fields.into_request() {
            Ok(head) => head,
            Err(Refusal::Malformed(why)) => {
                debug!(stream = id, why, "malformed HTTP/2 request");
                self.reset_stream(id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
            Err(Refusal::TooLarge) => {
                self.answer_too_large(id, end_stream);
                return Ok(());
            }
        };
        self.open_stream(id, end_stream, head.request, head.content_length);
        Ok(())
    }

    fn on_trailers(&mut self, id: u32, end_stream: bool, fields: Fields) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let channel = &stream.channel;
        let RecvSide::Open {
            content_length,
            received,
            ..
        } = &mut stream.recv
        else {
            self.reset_stream(id, Reason::STREAM_CLOSED);
            return;
        };
        let verdict = match fields.into_trailers() {
            Ok(_) if !end_stream => Err(()),
            Ok(_) if content_length.is_some_and(|declared| declared != *received) => Err(()),
            Ok(trailers) => Ok(trailers),
            Err(_) => Err(()),
        };
        match verdict {
            Ok(trailers) => {
                if let Some(channel) = channel {
                    channel.finish(Some(trailers));
                }
                stream.recv = RecvSide::Closed;
                self.drive(id);
            }
            Err(()) => {
                if let Some(channel) = channel {
                    channel.fail(H2BodyError::Malformed(Reason::PROTOCOL_ERROR));
                }
                self.reset_stream(id, Reason::PROTOCOL_ERROR);
            }
        }
    }

    fn initial_recv_window(&self) -> i64 {
        let advertised = i64::from(self.limits.stream_window);
        if self.settings_acked {
            advertised
        } else {
            advertised.max(i64::from(frame::DEFAULT_WINDOW))
        }
    }

    fn open_stream(
        &mut self,
        id: u32,
        end_stream: bool,
        request: Request<()>,
        content_length: Option<u64>,
    ) {
        if end_stream && content_length.is_some_and(|declared| declared != 0) {
            self.reset_stream(id, Reason::PROTOCOL_ERROR);
            return;
        }
        let expects_continue = !end_stream && expects_continue(request.headers());
        let key = self.tasks.vacant();
        let (body, channel, recv) = if end_stream {
            (ClientH2Body::empty(), None, RecvSide::Closed)
        } else {
            let channel = Channel::new(self.tasks.waker(key).clone(), 1);
            (
                ClientH2Body::streaming(Arc::clone(&channel)),
                Some(channel),
                RecvSide::Open {
                    window: self.initial_recv_window(),
                    unacked: 0,
                    content_length,
                    received: 0,
                },
            )
        };
        let future = (self.starter)(request.map(|()| ClientBody::Right(body)));
        self.tasks.start(key, future);
        if self.slot_streams.len() <= key {
            self.slot_streams.resize(key + 1, 0);
        }
        self.slot_streams[key] = id;
        self.streams.insert(
            id,
            Stream {
                key,
                channel,
                recv,
                send: SendSide::Waiting,
                send_window: i64::from(self.peer_window),
            },
        );
        if expects_continue {
            // Sent at once rather than when the body is first read: the client waits for
            // it before it uploads.
            let start = self.write.len();
            hpack::encode_status(StatusCode::CONTINUE, &mut self.write);
            frame::frame_header_block(
                &mut self.write,
                start,
                id,
                false,
                self.peer_max_frame as usize,
            );
        }
    }

    /// A request whose header list is past `max_header_bytes`: 431, never forwarded.
    fn answer_too_large(&mut self, id: u32, end_stream: bool) {
        let error = ProxyError::Request {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            details: "max_header_bytes",
        };
        debug!(
            stream = id,
            "HTTP/2 request header list past max_header_bytes"
        );
        let response: Response<Bytes> = error.to_response(false);
        let (parts, body) = response.into_parts();
        self.write_head(
            id,
            parts.status,
            &parts.headers,
            Some(body.len() as u64),
            false,
        );
        self.put_data(id, &body, true);
        if !end_stream {
            frame::put_reset(&mut self.write, id, Reason::NO_ERROR);
            self.remember_reset(id);
        }
    }

    fn on_priority(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
        }
        if payload.len() != 5 {
            self.reset_stream(head.stream, Reason::FRAME_SIZE_ERROR);
            return Ok(());
        }
        let depends_on = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
            & frame::MAX_WINDOW;
        if depends_on == head.stream {
            self.reset_stream(head.stream, Reason::PROTOCOL_ERROR);
        }
        Ok(())
    }

    fn on_reset(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0"));
        }
        let Some(code) = frame::u32_payload(payload) else {
            return Err(ConnError(
                Reason::FRAME_SIZE_ERROR,
                "RST_STREAM not 4 bytes",
            ));
        };
        if self.is_idle(head.stream) {
            return Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "RST_STREAM on an idle stream",
            ));
        }
        let Some(stream) = self.streams.get(&head.stream) else {
            return Ok(());
        };
        if !matches!(stream.send, SendSide::Done) {
            self.reset_credit = self.reset_credit.saturating_sub(1);
            if self.reset_credit == 0 {
                return Err(ConnError(
                    Reason::ENHANCE_YOUR_CALM,
                    "too many streams reset before their answer",
                ));
            }
        }
        if let Some(channel) = &stream.channel {
            channel.fail(H2BodyError::Reset(Reason(code)));
        }
        self.close_stream(head.stream);
        Ok(())
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if head.has(flag::ACK) {
            if !payload.is_empty() {
                return Err(ConnError(
                    Reason::FRAME_SIZE_ERROR,
                    "SETTINGS ack with a payload",
                ));
            }
            self.settings_acked = true;
            return Ok(());
        }
        let Some(params) = frame::settings(payload) else {
            return Err(ConnError(
                Reason::FRAME_SIZE_ERROR,
                "SETTINGS not a multiple of 6 bytes",
            ));
        };
        let mut window_grew = false;
        for (id, value) in params {
            match id {
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(ConnError(
                        Reason::PROTOCOL_ERROR,
                        "SETTINGS_ENABLE_PUSH not 0 or 1",
                    ));
                }
                setting::INITIAL_WINDOW_SIZE => {
                    if value > frame::MAX_WINDOW {
                        return Err(ConnError(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE too large",
                        ));
                    }
                    let delta = i64::from(value) - i64::from(self.peer_window);
                    for stream in self.streams.values_mut() {
                        stream.send_window += delta;
                        if stream.send_window > i64::from(frame::MAX_WINDOW) {
                            return Err(ConnError(
                                Reason::FLOW_CONTROL_ERROR,
                                "stream window past 2^31-1",
                            ));
                        }
                    }
                    window_grew |= delta > 0;
                    self.peer_window = value;
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE).contains(&value)
                    {
                        return Err(ConnError(
                            Reason::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = value;
                }
                _ => {}
            }
        }
        frame::put_settings_ack(&mut self.write);
        if window_grew {
            self.wake_blocked();
        }
        Ok(())
    }

    fn on_ping(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "PING on a stream"));
        }
        let Ok(opaque) = <[u8; 8]>::try_from(payload) else {
            return Err(ConnError(Reason::FRAME_SIZE_ERROR, "PING not 8 bytes"));
        };
        if head.has(flag::ACK) {
            if opaque == SHUTDOWN_PING {
                self.shutdown_ping_acked = true;
            }
        } else {
            frame::put_ping(&mut self.write, true, opaque);
        }
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let Some(increment) = frame::u32_payload(payload) else {
            return Err(ConnError(
                Reason::FRAME_SIZE_ERROR,
                "WINDOW_UPDATE not 4 bytes",
            ));
        };
        let increment = i64::from(increment & frame::MAX_WINDOW);
        if head.stream == 0 {
            if increment == 0 {
                return Err(ConnError(
                    Reason::PROTOCOL_ERROR,
                    "WINDOW_UPDATE of 0 on the connection",
                ));
            }
            self.send_window += increment;
            if self.send_window > i64::from(frame::MAX_WINDOW) {
                return Err(ConnError(
                    Reason::FLOW_CONTROL_ERROR,
                    "connection window past 2^31-1",
                ));
            }
            self.wake_blocked();
            return Ok(());
        }
        if self.is_idle(head.stream) {
            return Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let Some(stream) = self.streams.get_mut(&head.stream) else {
            return Ok(());
        };
        if increment == 0 {
            self.reset_stream(head.stream, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        stream.send_window += increment;
        if stream.send_window > i64::from(frame::MAX_WINDOW) {
            self.reset_stream(head.stream, Reason::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        let key = stream.key;
        self.tasks.waker(key).wake_by_ref();
        Ok(())
    }

    /// Resets stream `id` (which may not be open) and forgets it.
    fn reset_stream(&mut self, id: u32, reason: Reason) {
        frame::put_reset(&mut self.write, id, reason);
        self.remember_reset(id);
        if let Some(channel) = self.streams.get(&id).and_then(|s| s.channel.as_ref()) {
            channel.fail(H2BodyError::Malformed(reason));
        }
        self.close_stream(id);
    }

    /// Forgets stream `id`: its task stops, its body is dropped, its unread request bytes
    /// go back to the connection window.
    fn close_stream(&mut self, id: u32) {
        let Some(stream) = self.streams.remove(&id) else {
            return;
        };
        // The stream's own window no longer matters; the connection's gets back what
        // the body read, and what it still buffers.
        let released = stream.channel.map_or(0, |c| c.release_all() as u32);
        if released > 0 {
            self.give_back_connection(released);
        }
        self.tasks.release(stream.key);
    }

    /// Gives `bytes` back to the client's connection window (sent once enough gathered).
    fn give_back_connection(&mut self, bytes: u32) {
        self.recv_unacked = self.recv_unacked.saturating_add(bytes);
        self.send_connection_update();
    }

    fn send_connection_update(&mut self) {
        let target = i64::from(self.limits.connection_window.max(frame::DEFAULT_WINDOW));
        if self.recv_unacked > 0 && i64::from(self.recv_unacked) >= target / 2 {
            frame::put_window_update(&mut self.write, 0, self.recv_unacked);
            self.recv_window += i64::from(self.recv_unacked);
            self.recv_unacked = 0;
        }
    }

    /// Queues stream `id` to be driven.
    fn wake(&self, id: u32) {
        if let Some(stream) = self.streams.get(&id) {
            self.tasks.waker(stream.key).wake_by_ref();
        }
    }

    /// Wakes the streams that wait for window.
    fn wake_blocked(&mut self) {
        for id in std::mem::take(&mut self.blocked_on_window) {
            self.wake(id);
        }
    }

    /// Moves stream `id` on: window updates for what its body read, its pipeline run,
    /// its response.
    fn drive(&mut self, id: u32) {
        self.give_back_stream(id);
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if matches!(stream.send, SendSide::Waiting) {
            let Poll::Ready(response) = self.tasks.poll(stream.key) else {
                return;
            };
            self.start_response(id, response);
        }
        self.send_body(id);
        self.close_if_done(id);
    }

    /// WINDOW_UPDATEs for what stream `id`'s body reader consumed.
    fn give_back_stream(&mut self, id: u32) {
        let half_window = self.limits.stream_window / 2;
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(channel) = &stream.channel else {
            return;
        };
        let consumed = channel.take_consumed() as u32;
        self.recv_unacked = self.recv_unacked.saturating_add(consumed);
        let RecvSide::Open {
            window, unacked, ..
        } = &mut stream.recv
        else {
            self.send_connection_update();
            return;
        };
        *unacked += consumed;
        if *unacked >= half_window.max(1) {
            frame::put_window_update(&mut self.write, id, *unacked);
            *window += i64::from(*unacked);
            *unacked = 0;
        }
        self.send_connection_update();
    }

    fn start_response(&mut self, id: u32, response: Response<ResponseBody>) {
        let (parts, body) = response.into_parts();
        let declared = parts.headers.contains_key(CONTENT_LENGTH);
        let length = server_fields::length_to_declare(parts.status, declared, &body);
        let end = body.is_end_stream();
        self.write_head(id, parts.status, &parts.headers, length, end);
        self.reset_credit = (self.reset_credit + 1).min(RESET_CREDIT);
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.send = if end {
                SendSide::Done
            } else {
                SendSide::Body {
                    body,
                    pending: Bytes::new(),
                    pending_ends: false,
                }
            };
        }
    }

    /// Queues a response head: status, fields (those HTTP/2 forbids left out), `Date`
    /// when missing, the length when given.
    fn write_head(
        &mut self,
        id: u32,
        status: StatusCode,
        headers: &HeaderMap,
        length: Option<u64>,
        end: bool,
    ) {
        let start = self.write.len();
        hpack::encode_status(status, &mut self.write);
        for (name, value) in headers {
            if !is_connection_specific_response_field(name) {
                hpack::encode_field(name, value, &mut self.write);
            }
        }
        if !headers.contains_key(DATE) {
            hpack::encode_field(&DATE, &server_fields::now_date(), &mut self.write);
        }
        if let Some(length) = length {
            hpack::encode_field(
                &CONTENT_LENGTH,
                &http::HeaderValue::from(length),
                &mut self.write,
            );
        }
        frame::frame_header_block(
            &mut self.write,
            start,
            id,
            end,
            self.peer_max_frame as usize,
        );
    }

    /// Queues `data` as DATA frames no larger than the client allows (the caller checked
    /// the windows).
    fn put_data(&mut self, id: u32, mut data: &[u8], end: bool) {
        let max = self.peer_max_frame as usize;
        loop {
            let take = data.len().min(max);
            let (piece, rest) = data.split_at(take);
            frame::put_data(&mut self.write, id, piece, end && rest.is_empty());
            data = rest;
            if data.is_empty() {
                return;
            }
        }
    }

    /// Sends what stream `id`'s response body has, within the windows and the write
    /// buffer's room.
    fn send_body(&mut self, id: u32) {
        loop {
            let Some(stream) = self.streams.get_mut(&id) else {
                return;
            };
            let SendSide::Body {
                body,
                pending,
                pending_ends,
            } = &mut stream.send
            else {
                return;
            };
            if !pending.is_empty() || *pending_ends {
                let room = stream.send_window.min(self.send_window).max(0) as usize;
                if room == 0 && !pending.is_empty() {
                    self.blocked_on_window.push(id);
                    return;
                }
                let piece = pending.split_to(room.min(pending.len()));
                let last = pending.is_empty() && *pending_ends;
                stream.send_window -= piece.len() as i64;
                self.send_window -= piece.len() as i64;
                if last {
                    stream.send = SendSide::Done;
                }
                self.put_data(id, &piece, last);
                if last {
                    return;
                }
                continue;
            }
            if self.write.len() >= WRITE_HIGH_WATER {
                self.blocked_on_write.push(id);
                return;
            }
            let key = stream.key;
            let mut cx = Context::from_waker(self.tasks.waker(key));
            match Pin::new(&mut *body).poll_frame(&mut cx) {
                Poll::Pending => return,
                Poll::Ready(None) => {
                    stream.send = SendSide::Done;
                    frame::put_data(&mut self.write, id, &[], true);
                    return;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        *pending_ends = body.is_end_stream();
                        *pending = data;
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            stream.send = SendSide::Done;
                            let start = self.write.len();
                            hpack::encode_headers(&trailers, &mut self.write);
                            frame::frame_header_block(
                                &mut self.write,
                                start,
                                id,
                                true,
                                self.peer_max_frame as usize,
                            );
                            return;
                        }
                    }
                },
                Poll::Ready(Some(Err(error))) => {
                    debug!(stream = id, %error, "HTTP/2 response body failed; stream reset");
                    self.reset_stream(id, Reason::INTERNAL_ERROR);
                    return;
                }
            }
        }
    }

    /// Forgets stream `id` once both halves are done; a client still sending a body
    /// nobody will read is told to stop (RST_STREAM NO_ERROR).
    fn close_if_done(&mut self, id: u32) {
        let Some(stream) = self.streams.get(&id) else {
            return;
        };
        if !matches!(stream.send, SendSide::Done) {
            return;
        }
        if let RecvSide::Open { .. } = &stream.recv {
            let reader_left = stream.channel.as_ref().is_none_or(|c| c.reader_gone());
            if !reader_left {
                return;
            }
            frame::put_reset(&mut self.write, id, Reason::NO_ERROR);
            self.remember_reset(id);
        }
        self.close_stream(id);
    }

    fn remember_reset(&mut self, id: u32) {
        if self.reset_ids.len() >= REMEMBERED_RESETS {
            self.reset_ids.pop_front();
        }
        self.reset_ids.push_back(id);
    }
}

/// Whether the request asks for `100 Continue` before it sends its body.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
