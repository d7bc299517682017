//! The writing side of a connection: a stream's response head, then its body within the
//! client's windows and frame size, then the stream's end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, DATE};
use http::{Request, Response, StatusCode};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::super::request::is_connection_specific;
use super::{Connection, RESET_CREDIT, RecvSide, SendSide, WRITE_HIGH_WATER};
use crate::http::body::{ClientBody, ResponseBody};
use crate::http::forwarding::X_REQUEST_ID;
use crate::http::h2_codec::frame::{self, Reason};
use crate::http::h2_codec::hpack;
use crate::http::raw_fields::{Head, RawFields};
use crate::http::server_fields;

impl<S, F, M> Connection<S, F, M>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Response<ResponseBody>>,
    M: FnMut(Request<ClientBody>) -> F,
{
    pub(super) fn start_response(&mut self, id: u32, response: Response<ResponseBody>) {
        let (parts, mut body) = response.into_parts();
        // The upstream's raw fields are encoded as they are, beside the map (not moved
        // into it first).
        let raw = body.take_raw_fields();
        let head = Head {
            map: &parts.headers,
            raw: raw.as_deref(),
        };
        let declared = head.map.contains_key(CONTENT_LENGTH)
            || head
                .raw
                .is_some_and(|r| r.summary().content_length.is_some());
        let length = server_fields::length_to_declare(parts.status, declared, &body);
        let end = body.is_end_stream();
        self.write_head(id, parts.status, head, length, end);
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
    pub(super) fn write_head(
        &mut self,
        id: u32,
        status: StatusCode,
        head: Head<'_>,
        length: Option<u64>,
        end: bool,
    ) {
        let start = self.write.len();
        let out = &mut self.write;
        hpack::encode_status(status, out);
        if let Some(raw) = head.raw {
            raw.for_each_field(|name, value| {
                if !is_connection_specific(&name) {
                    hpack::encode_field(&name, &value, out);
                }
            });
        }
        for (name, value) in head.map {
            if !is_connection_specific(name) {
                hpack::encode_field(name, value, out);
            }
        }
        // After the upstream's fields, as the HTTP/1.1 server writes it.
        if let Some(id) = head.raw.and_then(RawFields::request_id) {
            hpack::encode_field(&X_REQUEST_ID, id, out);
        }
        if !head.map.contains_key(DATE) && !head.raw.is_some_and(|r| r.summary().date) {
            hpack::encode_field(&DATE, &server_fields::now_date(), out);
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
    pub(super) fn put_data(&mut self, id: u32, mut data: &[u8], end: bool) {
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
    pub(super) fn send_body(&mut self, id: u32) {
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
    pub(super) fn close_if_done(&mut self, id: u32) {
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
}
