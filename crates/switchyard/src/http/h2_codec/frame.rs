//! HTTP/2 frames (RFC 9113 section 4 and 6): the 9-byte frame header, the checks every
//! frame's payload must pass before its content is believed, and the writers for the
//! frames a server sends. Pure: bytes in, values or bytes out.

use bytes::{BufMut, Bytes, BytesMut};

/// The frame header's length.
pub const HEAD_LEN: usize = 9;

/// SETTINGS_MAX_FRAME_SIZE's initial value, and the least a peer may set.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// The largest SETTINGS_MAX_FRAME_SIZE a peer may set.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

/// The initial stream and connection flow-control window.
pub const DEFAULT_WINDOW: u32 = 65_535;

/// The largest a flow-control window may grow.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Frame types (RFC 9113 section 6).
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY.
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    /// DATA, HEADERS: the last frame the sender sends on the stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: an acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, CONTINUATION: the header block ends here.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS: a pad length byte leads and padding follows.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: stream dependency and weight lead.
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS parameters (RFC 9113 section 6.5.2).
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes (RFC 9113 section 7), as sent in RST_STREAM and GOAWAY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    /// Graceful end.
    pub const NO_ERROR: Reason = Reason(0x0);
    /// A protocol rule was broken.
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    /// Something went wrong on our side.
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    /// Flow control was violated.
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    /// A frame arrived on a half-closed stream.
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    /// A frame had the wrong size.
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    /// The stream was not processed (safe to retry).
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    /// The stream is no longer needed.
    pub const CANCEL: Reason = Reason(0x8);
    /// The header compression context could not be kept.
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    /// The peer behaves in a way that might be generating excessive load.
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);

    /// The name RFC 9113 gives the code, for logs.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The payload's length.
    pub length: u32,
    /// The frame type.
    pub kind: u8,
    /// The flags.
    pub flags: u8,
    /// The stream identifier (the reserved bit cleared).
    pub stream: u32,
}

impl Head {
    /// Reads a frame header from the first [`HEAD_LEN`] bytes of `bytes`; `None` when
    /// fewer are there.
    pub fn parse(bytes: &[u8]) -> Option<Head> {
        let head: &[u8; HEAD_LEN] = bytes.get(..HEAD_LEN)?.try_into().ok()?;
        Some(Head {
            length: u32::from_be_bytes([0, head[0], head[1], head[2]]),
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & MAX_WINDOW,
        })
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Appends a frame header.
pub fn put_head(dst: &mut BytesMut, length: usize, kind: u8, flags: u8, stream: u32) {
    let length = u32::try_from(length)
        .unwrap_or(MAX_MAX_FRAME_SIZE)
        .to_be_bytes();
    dst.put_slice(&[length[1], length[2], length[3], kind, flags]);
    dst.put_u32(stream & MAX_WINDOW);
}

/// Why a frame's payload cannot be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadError {
    /// The payload is shorter than its fixed fields, or padding longer than the payload
    /// (RFC 9113: PROTOCOL_ERROR for padding, FRAME_SIZE_ERROR for fixed sizes).
    Size,
    /// The padding is as long as the payload or longer.
    Padding,
}

/// The payload of a DATA or HEADERS frame without its padding; the pad length byte and
/// the padding still count toward flow control, which the caller charges with the whole
/// frame length.
pub fn strip_padding(flags: u8, mut payload: Bytes) -> Result<Bytes, PayloadError> {
    if flags & flag::PADDED == 0 {
        return Ok(payload);
    }
    let Some(&pad) = payload.first() else {
        return Err(PayloadError::Size);
    };
    let pad = usize::from(pad);
    if pad >= payload.len() {
        return Err(PayloadError::Padding);
    }
    payload.truncate(payload.len() - pad);
    Ok(payload.split_off(1))
}

/// A HEADERS frame's priority fields, which lead its block when the PRIORITY flag is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// The stream this one depends on.
    pub depends_on: u32,
}

/// Splits a HEADERS payload (padding already stripped) into its priority fields and its
/// header block fragment.
pub fn split_priority(
    flags: u8,
    mut payload: Bytes,
) -> Result<(Option<Priority>, Bytes), PayloadError> {
    if flags & flag::PRIORITY == 0 {
        return Ok((None, payload));
    }
    if payload.len() < 5 {
        return Err(PayloadError::Size);
    }
    let depends_on =
        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & MAX_WINDOW;
    Ok((Some(Priority { depends_on }), payload.split_off(5)))
}

/// A big-endian `u32` payload (RST_STREAM's error code, WINDOW_UPDATE's increment); `None`
/// unless the payload is exactly four bytes.
pub fn u32_payload(payload: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(payload.try_into().ok()?))
}

/// The parameters of a SETTINGS payload; `None` when its length is not a multiple of six.
pub fn settings(payload: &[u8]) -> Option<impl Iterator<Item = (u16, u32)> + '_> {
    (payload.len() % 6 == 0).then(|| {
        payload.chunks_exact(6).map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
            )
        })
    })
}

/// Appends a SETTINGS frame carrying `params`.
pub fn put_settings(dst: &mut BytesMut, params: &[(u16, u32)]) {
    put_head(dst, params.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, value) in params {
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

/// Appends a SETTINGS acknowledgement.
pub fn put_settings_ack(dst: &mut BytesMut) {
    put_head(dst, 0, kind::SETTINGS, flag::ACK, 0);
}

/// Appends a PING, or its acknowledgement, with `opaque` data.
pub fn put_ping(dst: &mut BytesMut, ack: bool, opaque: [u8; 8]) {
    put_head(dst, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    dst.put_slice(&opaque);
}

/// Appends a GOAWAY naming the last stream processed.
pub fn put_goaway(dst: &mut BytesMut, last_stream: u32, reason: Reason) {
    put_head(dst, 8, kind::GOAWAY, 0, 0);
    dst.put_u32(last_stream & MAX_WINDOW);
    dst.put_u32(reason.0);
}

/// Appends an RST_STREAM.
pub fn put_reset(dst: &mut BytesMut, stream: u32, reason: Reason) {
    put_head(dst, 4, kind::RST_STREAM, 0, stream);
    dst.put_u32(reason.0);
}

/// Appends a WINDOW_UPDATE (`stream` 0: the connection's window).
pub fn put_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    put_head(dst, 4, kind::WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment & MAX_WINDOW);
}

/// Appends a DATA frame.
pub fn put_data(dst: &mut BytesMut, stream: u32, data: &[u8], end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    put_head(dst, data.len(), kind::DATA, flags, stream);
    dst.put_slice(data);
}

/// Appends a header block as one HEADERS frame and as many CONTINUATION frames as
/// `max_frame` requires. `block_start` is where the encoded block begins in `dst`: the
/// block is encoded in place first, then framed, so it is never copied to a second buffer.
pub fn frame_header_block(
    dst: &mut BytesMut,
    block_start: usize,
    stream: u32,
    end_stream: bool,
    max_frame: usize,
) {
    let block = dst.split_off(block_start);
    let max_frame = max_frame.max(1);
    let mut rest: &[u8] = &block;
    let mut first = true;
    loop {
        let take = rest.len().min(max_frame);
        let (piece, after) = rest.split_at(take);
        let last = after.is_empty();
        let (kind, mut flags) = if first {
            (kind::HEADERS, if end_stream { flag::END_STREAM } else { 0 })
        } else {
            (kind::CONTINUATION, 0)
        };
        if last {
            flags |= flag::END_HEADERS;
        }
        put_head(dst, piece.len(), kind, flags, stream);
        dst.put_slice(piece);
        rest = after;
        first = false;
        if last {
            break;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_head_reads_back_what_was_written_and_the_reserved_bit_is_dropped() {
        let mut out = BytesMut::new();
        put_head(
            &mut out,
            0x01_02_03,
            kind::HEADERS,
            flag::END_HEADERS,
            0x8000_0005,
        );
        assert_eq!(
            Head::parse(&out),
            Some(Head {
                length: 0x01_02_03,
                kind: kind::HEADERS,
                flags: flag::END_HEADERS,
                stream: 5
            })
        );
        assert_eq!(Head::parse(&out[..8]), None);
    }

    #[test]
    fn padding_is_removed_and_padding_as_long_as_the_payload_is_refused() {
        let padded = Bytes::from_static(&[2, b'h', b'i', 0, 0]);
        assert_eq!(
            strip_padding(flag::PADDED, padded).unwrap(),
            Bytes::from_static(b"hi")
        );
        assert_eq!(
            strip_padding(0, Bytes::from_static(b"x")).unwrap(),
            Bytes::from_static(b"x")
        );
        assert_eq!(
            strip_padding(flag::PADDED, Bytes::from_static(&[3, 0, 0])),
            Err(PayloadError::Padding)
        );
        assert_eq!(
            strip_padding(flag::PADDED, Bytes::new()),
            Err(PayloadError::Size)
        );
        assert_eq!(
            strip_padding(flag::PADDED, Bytes::from_static(&[0])).unwrap(),
            Bytes::new()
        );
    }

    #[test]
    fn priority_fields_lead_a_block_only_with_the_flag() {
        let payload = Bytes::from_static(&[0x80, 0, 0, 3, 15, 0x82]);
        let (priority, block) = split_priority(flag::PRIORITY, payload.clone()).unwrap();
        assert_eq!(priority, Some(Priority { depends_on: 3 }));
        assert_eq!(block, Bytes::from_static(&[0x82]));
        assert_eq!(split_priority(0, payload.clone()).unwrap().1, payload);
        assert_eq!(
            split_priority(flag::PRIORITY, Bytes::from_static(&[0, 0])),
            Err(PayloadError::Size)
        );
    }

    #[test]
    fn settings_are_read_in_sixes() {
        let payload = [0, 4, 0, 0, 0, 100, 0, 5, 0, 0, 0x80, 0];
        let read: Vec<_> = settings(&payload).unwrap().collect();
        assert_eq!(
            read,
            vec![
                (setting::INITIAL_WINDOW_SIZE, 100),
                (setting::MAX_FRAME_SIZE, 32_768)
            ]
        );
        assert!(settings(&payload[..5]).is_none());
        let mut out = BytesMut::new();
        put_settings(&mut out, &read);
        assert_eq!(&out[HEAD_LEN..], &payload);
        assert_eq!(Head::parse(&out).unwrap().length, 12);
    }

    #[test]
    fn a_long_header_block_is_split_into_headers_and_continuations() {
        let mut out = BytesMut::from(&b"xx"[..]);
        out.extend_from_slice(&[7u8; 10]);
        frame_header_block(&mut out, 2, 3, true, 4);
        let mut frames = Vec::new();
        let mut rest = &out[2..];
        while let Some(head) = Head::parse(rest) {
            let end = HEAD_LEN + head.length as usize;
            frames.push((head.kind, head.flags, head.length));
            rest = &rest[end..];
        }
        assert_eq!(
            frames,
            vec![
                (kind::HEADERS, flag::END_STREAM, 4),
                (kind::CONTINUATION, 0, 4),
                (kind::CONTINUATION, flag::END_HEADERS, 2),
            ]
        );
        let mut single = BytesMut::new();
        single.extend_from_slice(&[1, 2]);
        frame_header_block(&mut single, 0, 1, false, 16_384);
        assert_eq!(
            Head::parse(&single).unwrap(),
            Head {
                length: 2,
                kind: kind::HEADERS,
                flags: flag::END_HEADERS,
                stream: 1
            }
        );
    }

    #[test]
    fn control_frames_have_their_fixed_sizes() {
        let mut out = BytesMut::new();
        put_goaway(&mut out, 7, Reason::ENHANCE_YOUR_CALM);
        put_reset(&mut out, 3, Reason::CANCEL);
        put_window_update(&mut out, 0, 1000);
        put_ping(&mut out, true, [1; 8]);
        assert_eq!(out.len(), 4 * HEAD_LEN + 8 + 4 + 4 + 8);
        assert_eq!(&out[HEAD_LEN..HEAD_LEN + 8], &[0, 0, 0, 7, 0, 0, 0, 0xb]);
        assert_eq!(
            u32_payload(&out[2 * HEAD_LEN + 8..2 * HEAD_LEN + 12]),
            Some(8)
        );
        assert_eq!(u32_payload(&[1, 2, 3]), None);
    }
}
