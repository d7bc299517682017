//! One HTTP/2 connection served over bytes in memory: the client's bytes are read from a
//! buffer, what the server writes is collected, and every request is answered by a small
//! echo of its method, path and body length instead of the pipeline. The connection's
//! whole state machine runs exactly as on a socket, without a runtime, so the fuzz target
//! (`fuzz/fuzz_targets/h2_connection.rs`), its corpus replay and the frame-level unit
//! tests all drive it the same way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::{Connection, Limits};
use crate::http::body::{ClientBody, ResponseBody};

/// The most turns one script gets (each turn reads, handles and writes what it can).
const MAX_TURNS: usize = 10_000;

/// The limits a scripted connection runs with: small windows and lists, so scripts reach
/// them with little input.
pub const SCRIPTED_LIMITS: Limits = Limits {
    max_concurrent_streams: 4,
    stream_window: 65_535,
    connection_window: 1 << 20,
    max_header_list: 8 * 1024,
};

/// The client's bytes in, the server's bytes out.
#[derive(Debug, Default)]
struct Wire {
    input: Bytes,
    output: Vec<u8>,
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.input.len().min(buf.remaining());
        let chunk = self.input.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The echo answer: `METHOD PATH BODY-LENGTH`, once the whole body was read (a body
/// that fails is answered with `-1` as its length).
async fn echo(request: Request<ClientBody>) -> Response<ResponseBody> {
    let (parts, body) = request.into_parts();
    let length = match body.collect().await {
        Ok(collected) => collected.to_bytes().len() as i64,
        Err(_) => -1,
    };
    let text = format!("{} {} {}", parts.method, parts.uri.path(), length);
    Response::new(ResponseBody::full(Bytes::from(text)))
}

/// Serves `input` (the bytes after the client preface) on one connection with
/// [`SCRIPTED_LIMITS`] until it ends or stops moving; returns what the server wrote.
pub fn serve_scripted(input: &[u8]) -> Vec<u8> {
    let wire = Wire {
        input: Bytes::copy_from_slice(input),
        output: Vec::new(),
    };
    let mut connection = Connection::new(wire, BytesMut::new(), SCRIPTED_LIMITS, echo);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..MAX_TURNS {
        if connection.poll_turn(&mut cx).is_ready() {
            break;
        }
    }
    let _ = connection.poll_flush_all(&mut cx);
    connection.into_io().output
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::http::h2_codec::frame::{self, Head, Reason, flag, kind};
    use crate::http::h2_codec::hpack::{Decoder, FieldName};

    /// GET / with `:authority: t`.
    const GET: &[u8] = &[0x82, 0x86, 0x84, 0x41, 0x01, b't'];
    /// POST / with `:authority: t`.
    const POST: &[u8] = &[0x83, 0x86, 0x84, 0x41, 0x01, b't'];

    fn put(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut head = BytesMut::new();
        frame::put_head(&mut head, payload.len(), kind, flags, stream);
        out.extend_from_slice(&head);
        out.extend_from_slice(payload);
    }

    /// A frame the client sends: (kind, flags, stream, payload).
    type ClientFrame<'a> = (u8, u8, u32, &'a [u8]);

    fn client(frames: &[ClientFrame<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out, kind::SETTINGS, 0, 0, &[]);
        for &(kind, flags, stream, payload) in frames {
            put(&mut out, kind, flags, stream, payload);
        }
        out
    }

    /// The server's frames: (kind, flags, stream, payload).
    fn frames(mut wire: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(head) = Head::parse(wire) {
            let end = frame::HEAD_LEN + head.length as usize;
            out.push((
                head.kind,
                head.flags,
                head.stream,
                wire[frame::HEAD_LEN..end].to_vec(),
            ));
            wire = &wire[end..];
        }
        assert!(wire.is_empty(), "a partial frame at the end");
        out
    }

    fn of_kind(frames: &[(u8, u8, u32, Vec<u8>)], wanted: u8) -> Vec<(u8, u32, Vec<u8>)> {
        frames
            .iter()
            .filter(|f| f.0 == wanted)
            .map(|f| (f.1, f.2, f.3.clone()))
            .collect()
    }

    fn goaway_reason(frames: &[(u8, u8, u32, Vec<u8>)]) -> Option<Reason> {
        of_kind(frames, kind::GOAWAY)
            .first()
            .map(|(_, _, p)| Reason(u32::from_be_bytes(p[4..8].try_into().unwrap())))
    }

    #[test]
    fn a_get_is_answered_after_our_settings_and_the_ack_of_theirs() {
        let out = frames(&serve_scripted(&client(&[(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            GET,
        )])));
        let kinds: Vec<(u8, u8, u32)> = out.iter().map(|f| (f.0, f.1, f.2)).collect();
        assert_eq!(
            kinds,
            vec![
                (kind::SETTINGS, 0, 0),
                (kind::WINDOW_UPDATE, 0, 0),
                (kind::SETTINGS, flag::ACK, 0),
                (kind::HEADERS, flag::END_HEADERS, 1),
                (kind::DATA, flag::END_STREAM, 1),
            ]
        );
        assert_eq!(out[1].3, ((1u32 << 20) - 65_535).to_be_bytes());
        assert_eq!(out[4].3, b"GET / 0");
        let mut fields = Vec::new();
        Decoder::new(4096)
            .decode(&Bytes::from(out[3].3.clone()), |field, _| {
                fields.push(field)
            })
            .unwrap();
        assert_eq!(fields[0].name, FieldName::Status);
        assert_eq!(fields[0].value, "200");
        let length = fields
            .iter()
            .find(|f| f.name == FieldName::Header(http::header::CONTENT_LENGTH))
            .unwrap();
        assert_eq!(length.value, "7");
        assert!(
            fields
                .iter()
                .any(|f| f.name == FieldName::Header(http::header::DATE))
        );
    }

    #[test]
    fn a_request_body_is_read_and_its_window_given_back_at_half() {
        let chunk = vec![b'x'; 16_384];
        // The body stays open: the client still sends when the script ends.
        let out = frames(&serve_scripted(&client(&[
            (kind::HEADERS, flag::END_HEADERS, 1, POST),
            (kind::DATA, 0, 1, &chunk),
            (kind::DATA, 0, 1, &chunk),
        ])));
        let updates = of_kind(&out, kind::WINDOW_UPDATE);
        assert_eq!(
            updates[1..],
            [(0, 1, 32_768u32.to_be_bytes().to_vec())],
            "one stream update for the 32,768 bytes read (half the window); none for the connection"
        );
        assert!(of_kind(&out, kind::DATA).is_empty());
    }

    #[test]
    fn a_body_and_its_end_are_echoed() {
        let out = frames(&serve_scripted(&client(&[
            (kind::HEADERS, flag::END_HEADERS, 1, POST),
            (kind::DATA, 0, 1, b"abc"),
            (
                kind::DATA,
                flag::END_STREAM | flag::PADDED,
                1,
                &[2, b'd', 0, 0],
            ),
        ])));
        assert_eq!(
            of_kind(&out, kind::DATA),
            vec![(flag::END_STREAM, 1, b"POST / 4".to_vec())]
        );
    }

    #[test]
    fn a_ping_is_acknowledged_with_its_payload() {
        let out = frames(&serve_scripted(&client(&[(kind::PING, 0, 0, b"12345678")])));
        assert_eq!(
            of_kind(&out, kind::PING),
            vec![(flag::ACK, 0, b"12345678".to_vec())]
        );
    }

    #[test]
    fn a_stream_past_the_concurrency_limit_is_refused() {
        let mut script = Vec::new();
        for id in [1, 3, 5, 7, 9] {
            script.push((kind::HEADERS, flag::END_HEADERS, id, POST));
        }
        let out = frames(&serve_scripted(&client(&script)));
        assert_eq!(
            of_kind(&out, kind::RST_STREAM),
            vec![(0, 9, Reason::REFUSED_STREAM.0.to_be_bytes().to_vec())]
        );
    }

    #[test]
    fn a_body_shorter_than_its_content_length_resets_the_stream() {
        // content-length (static index 28) = 5, as a literal without indexing.
        let mut head = POST.to_vec();
        head.extend_from_slice(&[0x0f, 0x0d, 0x01, b'5']);
        let out = frames(&serve_scripted(&client(&[
            (kind::HEADERS, flag::END_HEADERS, 1, &head),
            (kind::DATA, flag::END_STREAM, 1, b"abc"),
        ])));
        assert_eq!(
            of_kind(&out, kind::RST_STREAM),
            vec![(0, 1, Reason::PROTOCOL_ERROR.0.to_be_bytes().to_vec())]
        );
        assert!(of_kind(&out, kind::HEADERS).is_empty(), "never answered");
    }

    #[test]
    fn a_continuation_flood_ends_the_connection_once_the_block_passes_the_list_limit() {
        let piece = vec![0u8; 1024];
        let mut script = vec![(kind::HEADERS, 0, 1, &piece[..])];
        for _ in 0..100 {
            script.push((kind::CONTINUATION, 0, 1, &piece[..]));
        }
        let input = client(&script);
        let out = frames(&serve_scripted(&input));
        assert_eq!(goaway_reason(&out), Some(Reason::ENHANCE_YOUR_CALM));
    }

    #[test]
    fn streams_reset_before_their_answer_use_up_the_credit_and_end_the_connection() {
        let reset = Reason::CANCEL.0.to_be_bytes();
        let mut script = Vec::new();
        let ids: Vec<u32> = (0..super::super::conn::RESET_CREDIT + 5)
            .map(|n| 2 * n + 1)
            .collect();
        for &id in &ids {
            script.push((kind::HEADERS, flag::END_HEADERS, id, POST));
            script.push((kind::RST_STREAM, 0, id, &reset[..]));
        }
        let out = frames(&serve_scripted(&client(&script)));
        assert_eq!(goaway_reason(&out), Some(Reason::ENHANCE_YOUR_CALM));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any sequence of frames (of every type, on a few streams, with any flags and
        /// short payloads, some of them valid requests) is served without a panic, and
        /// what comes out is whole frames.
        #[test]
        fn any_frame_sequence_is_served_without_a_panic(
            script in proptest::collection::vec(
                (0u8..11, proptest::prelude::any::<u8>(), 0u32..8, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24), proptest::prelude::any::<bool>()),
                0..48,
            )
        ) {
            let mut input = Vec::new();
            for (kind, flags, stream, payload, request) in script {
                let payload: &[u8] = if request && kind == kind::HEADERS { if flags & 1 == 0 { POST } else { GET } } else { &payload };
                put(&mut input, kind, flags, stream, payload);
            }
            let _ = frames(&serve_scripted(&input));
        }

        /// Any bytes at all are served without a panic.
        #[test]
        fn any_bytes_are_served_without_a_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = serve_scripted(&bytes);
        }
    }

    #[test]
    fn connection_errors_are_answered_with_goaway() {
        let cases: Vec<(Vec<ClientFrame>, Reason)> = vec![
            (vec![(kind::DATA, 0, 0, b"x")], Reason::PROTOCOL_ERROR),
            (
                vec![(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 2, GET)],
                Reason::PROTOCOL_ERROR,
            ),
            (
                vec![(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0])],
                Reason::PROTOCOL_ERROR,
            ),
            (
                vec![(kind::WINDOW_UPDATE, 0, 0, &[0x7f, 0xff, 0xff, 0xff])],
                Reason::FLOW_CONTROL_ERROR,
            ),
            (vec![(kind::PING, 0, 0, b"short")], Reason::FRAME_SIZE_ERROR),
            (
                vec![(kind::SETTINGS, 0, 0, &[0, 5, 0, 0, 0, 1])],
                Reason::PROTOCOL_ERROR,
            ),
            (
                vec![(kind::CONTINUATION, flag::END_HEADERS, 1, GET)],
                Reason::PROTOCOL_ERROR,
            ),
            (
                vec![(
                    kind::HEADERS,
                    flag::END_HEADERS,
                    1,
                    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                )],
                Reason::COMPRESSION_ERROR,
            ),
        ];
        for (script, reason) in cases {
            let out = frames(&serve_scripted(&client(&script)));
            assert_eq!(goaway_reason(&out), Some(reason), "{script:?}");
        }
    }
}
