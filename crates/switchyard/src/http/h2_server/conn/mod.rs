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
//!
//! This file holds the state and the turn; [`recv`] applies each frame the client sends,
//! [`send`] writes responses.

mod recv;
mod send;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::body::{Channel, H2BodyError};
use super::tasks::Tasks;
use crate::http::body::{ClientBody, ResponseBody};
use crate::http::h2_codec::frame::{self, Head, Reason, kind, setting};
use crate::http::h2_codec::hpack::Decoder;
use crate::http::read_buf;

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
// The body is kept in place in the stream map for the stream's life, never moved between
// variants on a hot path; boxing it would cost an allocation per stream.
#[allow(clippy::large_enum_variant)]
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
    /// Bytes were read or written since [`Connection::take_moved`] last asked.
    moved: bool,
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
            moved: false,
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

    /// Whether the connection waits on the client to read: frames are queued that its
    /// socket does not take, or streams wait for window it does not give.
    pub fn waits_on_client(&self) -> bool {
        !self.write.is_empty() || !self.blocked_on_window.is_empty()
    }

    /// Whether bytes moved either way since the last call.
    pub fn take_moved(&mut self) -> bool {
        std::mem::take(&mut self.moved)
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
                    read_buf::consume_written(&mut self.write, n);
                    self.unflushed = true;
                    self.moved = true;
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

    /// Shuts the write side (for TLS, sends close_notify).
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    /// Reads and drops what the client still sends, at most `budget` more bytes (the
    /// reading half of a lingering close).
    pub fn poll_discard(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> Poll<()> {
        read_buf::poll_discard(&mut self.io, &mut self.read, cx, budget)
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
                    Poll::Ready(Ok(_)) => {
                        progress = true;
                        self.moved = true;
                    }
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

    fn remember_reset(&mut self, id: u32) {
        if self.reset_ids.len() >= REMEMBERED_RESETS {
            self.reset_ids.pop_front();
        }
        self.reset_ids.push_back(id);
    }
}
