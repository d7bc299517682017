//! The reading side of a connection: each frame the client sends, checked against RFC
//! 9113 and applied (new streams, request bodies and trailers, resets, settings, pings,
//! window updates).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::EXPECT;
use http::{HeaderMap, Request, Response, StatusCode};

use super::super::body::{Channel, ClientH2Body, H2BodyError};
use super::super::request::{Fields, Refusal};
use super::{ConnError, Connection, PartialBlock, RecvSide, SHUTDOWN_PING, SendSide, Stream};
use crate::http::body::{ClientBody, ResponseBody};
use crate::http::error::ProxyError;
use crate::http::h2_codec::frame::{self, Head, Reason, flag, setting};
use crate::http::h2_codec::hpack;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

impl<S, F, M> Connection<S, F, M>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Response<ResponseBody>>,
    M: FnMut(Request<ClientBody>) -> F,
{
    /// Whether `id` names a stream the client has not opened yet.
    pub(super) fn is_idle(&self, id: u32) -> bool {
        id > self.last_stream
    }

    pub(super) fn on_data(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
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

    pub(super) fn on_headers(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
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

    /// A header block may be at most twice the list size we allow. A legitimate block is
    /// never larger than the list it decodes to (save a few bytes of table updates), so
    /// one up to twice the limit is still decoded and its request answered 431 (SPEC 4);
    /// past that it can only be a flood (CONTINUATION without end), and since a block
    /// cannot be skipped without losing the compression state, the connection ends.
    pub(super) fn check_block_size(&self, size: usize) -> Result<(), ConnError> {
        if size > 2 * self.limits.max_header_list as usize {
            return Err(ConnError(
                Reason::ENHANCE_YOUR_CALM,
                "header block larger than twice max_header_bytes",
            ));
        }
        Ok(())
    }

    pub(super) fn on_continuation(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
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
    pub(super) fn decode(&mut self, block: &Bytes, fields: &mut Fields) -> Result<(), ConnError> {
        self.decoder
            .decode(block, |field, size| fields.add(field, size))
            .map_err(|_| ConnError(Reason::COMPRESSION_ERROR, "header block does not decode"))
    }

    pub(super) fn on_header_block(
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

    pub(super) fn on_trailers(&mut self, id: u32, end_stream: bool, fields: Fields) {
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

    pub(super) fn initial_recv_window(&self) -> i64 {
        let advertised = i64::from(self.limits.stream_window);
        if self.settings_acked {
            advertised
        } else {
            advertised.max(i64::from(frame::DEFAULT_WINDOW))
        }
    }

    pub(super) fn open_stream(
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
            let channel = Channel::new(self.tasks.waker(key).clone());
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
    pub(super) fn answer_too_large(&mut self, id: u32, end_stream: bool) {
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
        let head = crate::http::raw_fields::Head::of(&parts.headers);
        self.write_head(id, parts.status, head, Some(body.len() as u64), false);
        self.put_data(id, &body, true);
        if !end_stream {
            frame::put_reset(&mut self.write, id, Reason::NO_ERROR);
            self.remember_reset(id);
        }
    }

    pub(super) fn on_priority(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
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

    pub(super) fn on_reset(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
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

    pub(super) fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
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

    pub(super) fn on_ping(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
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

    pub(super) fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
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
}

/// Whether the request asks for `100 Continue` before it sends its body.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
