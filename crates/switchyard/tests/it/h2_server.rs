//! The HTTP/2 server at the wire (RFC 9113, RFC 7541, SPEC section 4): the SETTINGS and
//! PING exchange, requests and responses on streams, malformed requests refused and never
//! forwarded, the header-size limit, CONTINUATION floods, stream-id and frame-size rules,
//! flow control in both directions, the concurrent-stream limit, frames to ignore,
//! trailers, the client's GOAWAY and RST_STREAM, and HPACK table use both ways. Where the
//! RFC lets the server choose (a stream error or a connection error, a 431 or a reset), the
//! assertions accept each choice.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use switchyard::backend::{BackendArgs, BackendHandle};
use switchyard::runtime::Server;
use tokio::io::AsyncWriteExt;

use crate::h2_wire::*;
use crate::support::*;

/// How long the server must stay quiet for the test to conclude it is waiting on the
/// client (flow control): nothing in the server waits this long for itself.
const QUIET: Duration = Duration::from_millis(300);

/// One backend (`b1`) behind listener `web`, the listener with `extra` keys.
async fn start(extra: &str) -> (BackendHandle, Server) {
    start_with(extra, "").await
}

/// [`start`], the cluster with `cluster_extra` keys.
async fn start_with(extra: &str, cluster_extra: &str) -> (BackendHandle, Server) {
    let b1 = backend(BackendArgs::for_test("b1")).await;
    let toml = format!(
        "{WEB}\ncluster = \"app\"\n{extra}\n[[cluster]]\nname = \"app\"\n{cluster_extra}\nendpoints = [\"{}\"]\n",
        b1.local_addr()
    );
    (b1, balancer(&toml).await)
}

/// A connection to listener `web` with the default SETTINGS.
async fn open(server: &Server) -> Conn {
    Conn::open(address(server, "web"), &[]).await
}

/// GET `path` on `stream`, read to its end.
async fn get_on(conn: &mut Conn, stream: u32, path: &str) -> Response {
    conn.send(&headers(stream, &get(path), true)).await;
    conn.response(stream).await
}

/// Reads to the end of the connection, which must be a GOAWAY with `code` followed by the
/// end of the connection (RFC 9113 section 5.4.1: a connection error closes it).
async fn assert_connection_error(conn: &mut Conn, code: u32) {
    let goaway = conn.goaway_or_eof().await.expect("a GOAWAY before the end");
    assert_eq!(goaway.code(), code, "GOAWAY code: {goaway:?}");
    let (after, end) = conn.until(|_| false).await;
    assert!(end.is_none(), "the connection closes after the GOAWAY");
    assert!(
        after.iter().all(|f| f.kind != HEADERS && f.kind != DATA),
        "nothing answered after the GOAWAY: {after:?}"
    );
}

#[tokio::test]
async fn the_server_speaks_settings_first_acks_ours_and_echoes_a_ping() {
    let (_b1, server) = start("").await;
    // `Conn::open` asserts that the server's first frame is a SETTINGS (not an ACK).
    let mut conn = Conn::open(address(&server, "web"), &[(MAX_FRAME_SIZE, 16_384)]).await;
    let (_, ack) = conn
        .until(|f| f.kind == SETTINGS && f.flags & ACK != 0)
        .await;
    let ack = ack.expect("the server ACKs our SETTINGS");
    assert_eq!((ack.stream, ack.payload.len()), (0, 0), "{ack:?}");

    let opaque = *b"\x01\x02swyd\xfe\xff";
    conn.send(&frame(PING, 0, 0, &opaque)).await;
    let (_, pong) = conn.until(|f| f.kind == PING).await;
    let pong = pong.expect("a PING answer");
    assert_eq!(pong.flags & ACK, ACK, "the answer is a PING ACK");
    assert_eq!(pong.stream, 0);
    assert_eq!(pong.payload, opaque, "the same 8 bytes");
}

#[tokio::test]
async fn a_get_on_stream_1_gets_a_200_head_and_the_backends_body() {
    let (b1, server) = start("").await;
    let mut conn = open(&server).await;
    let response = get_on(&mut conn, 1, "/hello?x=1").await;
    assert_eq!(response.status, Some(200), "{response:?}");
    assert!(response.ended, "END_STREAM closes the response");
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["name"], "b1");
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/hello");
    assert_eq!(body["query"], "x=1");
    assert_eq!(b1.control().requests(), 1);

    let sized = get_on(&mut conn, 3, "/bytes/20000").await;
    assert_eq!(sized.status, Some(200), "{sized:?}");
    assert_eq!(sized.body.len(), 20_000);
    assert!(sized.ended);
}

#[tokio::test]
async fn a_head_gets_its_headers_and_no_data_bytes() {
    let (_b1, server) = start("").await;
    let mut conn = open(&server).await;
    conn.send(&headers(1, &request("HEAD", "/bytes/1000", &[]), true))
        .await;
    let response = conn.response(1).await;
    assert_eq!(response.status, Some(200), "{response:?}");
    assert!(response.ended, "{response:?}");
    assert!(response.body.is_empty(), "{response:?}");
    // The connection goes on.
    assert_eq!(get_on(&mut conn, 3, "/").await.status, Some(200));
}

/// Sends `block` (with `body`, if any, as one DATA frame ending the stream) on stream 1
/// and asserts that the server refuses it as malformed (RFC 9113 section 8.1.1:
/// RST_STREAM or GOAWAY with PROTOCOL_ERROR, no response) and that the connection (after a
/// stream error) or a new one (after a connection error) still serves a request. With
/// `counted`, the backend saw only that second request: the malformed one was not
/// forwarded.
async fn assert_refused_as_malformed(block: Vec<u8>, body: Option<&[u8]>, counted: bool) {
    let (b1, server) = start("").await;
    let mut conn = open(&server).await;
    let mut bytes = headers(1, &block, body.is_none());
    if let Some(body) = body {
        bytes.extend(data(1, body, true));
    }
    conn.send(&bytes).await;
    let refused = conn.response(1).await;
    assert!(refused.refused_with(PROTOCOL_ERROR), "{refused:?}");
    let next = if refused.goaway.is_some() {
        let mut fresh = open(&server).await;
        get_on(&mut fresh, 1, "/").await
    } else {
        get_on(&mut conn, 3, "/").await
    };
    assert_eq!(
        next.status,
        Some(200),
        "the next request is served: {next:?}"
    );
    if counted {
        assert_eq!(
            b1.control().requests(),
            1,
            "only the good request was forwarded"
        );
    }
}

fn good(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "t"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect();
    all.extend(
        fields
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    all
}

fn encode(fields: &[(String, String)]) -> Vec<u8> {
    fields.iter().flat_map(|(n, v)| literal(n, v)).collect()
}

#[tokio::test]
async fn an_uppercase_field_name_is_malformed() {
    assert_refused_as_malformed(encode(&good(&[("X-Upper", "1")])), None, true).await;
}

#[tokio::test]
async fn a_connection_field_is_malformed() {
    assert_refused_as_malformed(encode(&good(&[("connection", "keep-alive")])), None, true).await;
}

#[tokio::test]
async fn a_transfer_encoding_field_is_malformed() {
    assert_refused_as_malformed(
        encode(&good(&[("transfer-encoding", "chunked")])),
        None,
        true,
    )
    .await;
}

#[tokio::test]
async fn a_te_field_other_than_trailers_is_malformed() {
    assert_refused_as_malformed(encode(&good(&[("te", "gzip")])), None, true).await;
}

#[tokio::test]
async fn a_request_without_path_is_malformed() {
    let mut fields = good(&[]);
    fields.retain(|(n, _)| n != ":path");
    assert_refused_as_malformed(encode(&fields), None, true).await;
}

#[tokio::test]
async fn a_request_without_method_is_malformed() {
    let mut fields = good(&[]);
    fields.retain(|(n, _)| n != ":method");
    assert_refused_as_malformed(encode(&fields), None, true).await;
}

#[tokio::test]
async fn a_duplicated_path_is_malformed() {
    let mut fields = good(&[]);
    fields.insert(3, (":path".to_owned(), "/other".to_owned()));
    assert_refused_as_malformed(encode(&fields), None, true).await;
}

#[tokio::test]
async fn a_pseudo_header_after_a_regular_field_is_malformed() {
    let mut fields = good(&[]);
    fields.insert(2, ("x-early".to_owned(), "1".to_owned()));
    assert_refused_as_malformed(encode(&fields), None, true).await;
}

#[tokio::test]
async fn an_unknown_pseudo_header_is_malformed() {
    assert_refused_as_malformed(encode(&good(&[(":foo", "bar")])), None, true).await;
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_malformed() {
    let mut fields = good(&[("content-length", "5")]);
    fields[0].1 = "POST".to_owned();
    // The head may reach the backend before the body turns out short (a proxy streams
    // bodies), so the backend's count is not asserted; the request gets no response.
    assert_refused_as_malformed(encode(&fields), Some(b"abc"), false).await;
}

#[tokio::test]
async fn a_header_block_over_max_header_bytes_gets_431_or_a_reset_and_is_not_forwarded() {
    let (b1, server) = start("max_header_bytes = \"8KiB\"").await;
    let mut conn = open(&server).await;
    assert_eq!(
        conn.server_setting(MAX_HEADER_LIST_SIZE),
        Some(8192),
        "the limit is advertised (docs/configuration.md)"
    );
    let big = "a".repeat(10_000);
    conn.send(&headers(1, &request("GET", "/", &[("x-big", &big)]), true))
        .await;
    let response = conn.response(1).await;
    // SPEC section 4: 431. RFC 9113 section 10.5.1 also lets the server reset the stream
    // or close the connection; it must never answer or forward the request.
    let refused = response.status == Some(431)
        || (response.status.is_none() && (response.reset.is_some() || response.goaway.is_some()));
    assert!(refused, "{response:?}");
    let next = if response.goaway.is_some() || response.closed {
        let mut fresh = open(&server).await;
        get_on(&mut fresh, 1, "/").await
    } else {
        get_on(&mut conn, 3, "/").await
    };
    assert_eq!(next.status, Some(200), "{next:?}");
    assert_eq!(
        b1.control().requests(),
        1,
        "the big request was not forwarded"
    );
}

#[tokio::test]
async fn a_continuation_flood_ends_the_connection_long_before_it_ends_and_others_are_served() {
    const FRAMES: usize = 2048;
    let (_b1, server) = start("").await;
    let mut conn = open(&server).await;
    // A header block that never ends: HEADERS without END_HEADERS, then 1 KiB
    // CONTINUATION frames, each one whole literal field.
    let mut first = request("GET", "/", &[]);
    first.extend(literal("x-flood", &"f".repeat(1000)));
    conn.send(&frame(HEADERS, END_STREAM, 1, &first)).await;
    let piece = literal("x-flood", &"f".repeat(1010));
    assert!((1000..=1024).contains(&piece.len()));
    let mut writer = conn.take_writer();
    let flood = tokio::spawn(async move {
        let mut written = 0;
        for _ in 0..FRAMES {
            let bytes = frame(CONTINUATION, 0, 1, &piece);
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
            written += 1;
        }
        written
    });
    // Meanwhile another client is served.
    let mut other = open(&server).await;
    assert_eq!(get_on(&mut other, 1, "/").await.status, Some(200));

    let end = conn.goaway_or_eof().await;
    if let Some(goaway) = &end {
        assert_ne!(goaway.code(), NO_ERROR, "{goaway:?}");
    }
    let written = within(flood).await.unwrap();
    assert!(
        written < FRAMES,
        "the connection was still open after the whole 2 MiB flood ({end:?})"
    );
    let mut after = open(&server).await;
    assert_eq!(get_on(&mut after, 1, "/").await.status, Some(200));
}

#[tokio::test]
async fn a_data_frame_on_stream_0_is_a_connection_error() {
    let (_b1, server) = start("").await;
    let mut conn = open(&server).await;
    conn.send(&data(0, b"stray", false)).await;
    assert_connection_error(&mut conn, PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn a_headers_frame_on_stream_0_is_a_connection_error() {
    let (_b1, server) = start("").await;
    let mut conn = open(&server).await;
    conn.send(&headers(0, &get("/"), true)).await;
    assert_connection_error(&mut conn, PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn a_client_stream_with_an_even_id_is_a_connection_error() {
    let (b1, server) = start("").await;
    let mut conn = open(&server).await;
    conn.send(&headers(2, &get("/"), true)).await;
    assert_connection_error(&mut conn, PROTOCOL_ERROR).await;
    assert_eq!(b1.control().requests(), 0);
}

#[tokio::test]
async fn a_stream_id_lower_than_one_already_used_is_a_connection_error() {
    let (b1, server) = start("").await;
    let mut conn = open(&server).await;
    assert_eq!(get_on(&mut conn, 5, "/").await.status, Some(200));
    conn.send(&headers(3, &get("/"), true)).await;
    assert_connection_error(&mut conn, PROTOCOL_ERROR).await;
    assert_eq!(b1.control().requests(), 1);
}

#[tokio::test]
async fn a_headers_frame_over_the_max_frame_size_is_a_frame_size_error() {
    let (b1, server) = start("").await;
    let mut conn = open(&server).await;
    let limit = conn.server_setting(MAX_FRAME_SIZE).unwrap_or(16_384);
    let limit = usize::try_from(limit).unwrap();
    // A valid block one byte too big: a field block frame is a connection error (RFC 9113
    // section 4.2).
    let mut block = request("GET", "/", &[]);
    let filler = limit + 1 - block.len() - literal("x-fill", "").len() - 2;
    block.extend(literal("x-fill", &"z".repeat(filler)));
    assert_eq!(block.len(), limit + 1);
    conn.send(&headers(1, &block, true)).await;
    assert_connection_error(&mut conn, FRAME_SIZE_ERROR).await;
    assert_eq!(b1.control().requests(), 0);
}

#[tokio::test]
async fn a_data_frame_over_the_max_frame_size_is_a_frame_size_error() {
    let (_b1, server) = start("").await;
    let mut conn = open(&server).await;
    let limit = usize::try_from(conn.server_setting(MAX_FRAME_SIZE).unwrap_or(16_384)).unwrap();
    conn.send(&headers(1, &request("POST", "/", &[]), false))
        .await;
    conn.send(&data(1, &vec![b'd'; limit + 1], true)).await;
    let response = conn.response(1).await;
    // A DATA frame may be a stream error or a connection error (RFC 9113 section 4.2).
    assert!(response.refused_with(FRAME_SIZE_ERROR), "{response:?}");
}

#[tokio::test]
async fn a_window_update_of_zero_on_the_connection_is_a_protocol_error() {
    let (_b1, server) = start("").await;
    let mut conn = open(&server).await;
    conn.send(&window_update(0, 0)).await;
    assert_connection_error(&mut conn, PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn a_connection_window_over_2_31_minus_1_is_a_flow_control_error() {
    let (_b1, server) = start("").await;
    let mut conn = open(&server).await;
    // 65,535 + (2^31 - 1) overflows the server's send window on the connection.
    conn.send(&window_update(0, 0x7fff_ffff)).await;
    assert_connection_error(&mut conn, FLOW_CONTROL_ERROR).await;
}

/// Reads DATA on `stream` (and nothing else that matters) until the server has been quiet
/// for [`QUIET`] or the stream ended; the bytes received and whether it ended.
async fn data_until_quiet(conn: &mut Conn, stream: u32) -> (usize, bool) {
    let mut bytes = 0;
    for _ in 0..10_000 {
        let Some(f) = conn.next_within(QUIET).await else {
            assert!(!conn.eof, "the connection ended");
            return (bytes, false);
        };
        assert!(
            !(f.kind == RST_STREAM || f.kind == GOAWAY),
            "unexpected end: {f:?}"
        );
        if f.kind == DATA && f.stream == stream {
            bytes += f.data().len();
            if f.ends_stream() {
                return (bytes, true);
            }
        }
    }
    panic!("more than 10,000 frames");
}

#[tokio::test]
async fn the_server_sends_no_more_than_the_clients_stream_window() {
    let (_b1, server) = start("").await;
    let mut conn = Conn::open(address(&server, "web"), &[(INITIAL_WINDOW_SIZE, 100)]).await;
    conn.send(&headers(1, &get("/bytes/1000"), true)).await;
    let (first, ended) = data_until_quiet(&mut conn, 1).await;
    assert!(!ended, "1,000 bytes do not fit a window of 100");
    assert!(first <= 100, "{first} bytes sent in a window of 100");
    conn.send(&window_update(1, 900)).await;
    let response = conn.response(1).await;
    assert!(response.ended, "{response:?}");
    assert_eq!(first + response.body.len(), 1000);
}

#[tokio::test]
async fn the_server_sends_no_more_than_the_clients_connection_window() {
    const SIZE: usize = 100_000;
    let (_b1, server) = start("").await;
    let mut conn = Conn::open(address(&server, "web"), &[(INITIAL_WINDOW_SIZE, 1 << 20)]).await;
    conn.send(&headers(1, &get(&format!("/bytes/{SIZE}")), true))
        .await;
    let (first, ended) = data_until_quiet(&mut conn, 1).await;
    assert!(!ended, "100,000 bytes do not fit the connection's 65,535");
    assert!(first <= 65_535, "{first} bytes sent in a window of 65,535");
    let rest = u32::try_from(SIZE - 65_535).unwrap();
    conn.send(&window_update(0, rest)).await;
    let response = conn.response(1).await;
    assert!(response.ended, "{response:?}");
    assert_eq!(first + response.body.len(), SIZE);
}

#[tokio::test]
async fn the_servers_data_frames_respect_a_larger_client_max_frame_size() {
    const SIZE: usize = 200_000;
    let (_b1, server) = start("").await;
    let mut conn = Conn::open(
        address(&server, "web"),
        &[(MAX_FRAME_SIZE, 32_768), (INITIAL_WINDOW_SIZE, 1 << 20)],
    )
    .await;
    conn.send(&window_update(0, 1 << 20)).await;
    conn.send(&headers(
        1,
        &get(&format!("/bytes/{SIZE}?chunk=65536")),
        true,
    ))
    .await;
    let mut largest = 0;
    let mut body = 0;
    for _ in 0..10_000 {
        let f = conn.next().await.expect("the response");
        assert!(
            f.payload.len() <= 32_768,
            "a frame over 32,768 bytes: {f:?}"
        );
        if f.kind == DATA && f.stream == 1 {
            largest = largest.max(f.payload.len());
            body += f.data().len();
            if f.ends_stream() {
                break;
            }
        }
        assert!(f.kind != RST_STREAM && f.kind != GOAWAY, "{f:?}");
    }
    assert_eq!(body, SIZE, "the whole body (largest frame {largest})");
}

#[tokio::test]
async fn a_client_sending_past_the_servers_stream_window_gets_a_flow_control_error() {
    let (_b1, server) = start("http2_initial_stream_window = \"64KiB\"").await;
    let mut conn = open(&server).await;
    let stream_window = conn.server_setting(INITIAL_WINDOW_SIZE).unwrap_or(65_535);
    assert_eq!(stream_window, 65_536, "the configured window is advertised");
    // The backend sleeps before it reads the body, so once the buffers between are full
    // the server has nowhere to put more and must not grant more window.
    conn.send(&headers(1, &request("POST", "/delay/30s", &[]), false))
        .await;
    let mut stream_credit = i64::from(stream_window);
    let mut connection_credit: i64 = 65_535;
    let piece = vec![b'x'; 16_384];
    let mut sent: usize = 0;
    let mut over = false;
    loop {
        assert!(
            sent < 32 << 20,
            "the server kept granting window for 32 MiB without reading"
        );
        // Everything the windows allow, in whole frames.
        while stream_credit.min(connection_credit) >= 16_384 {
            if !conn.try_send(&data(1, &piece, false)).await {
                break;
            }
            stream_credit -= 16_384;
            connection_credit -= 16_384;
            sent += 16_384;
        }
        match conn.next_within(QUIET).await {
            Some(f) if f.kind == WINDOW_UPDATE => {
                let credit = i64::from(f.increment());
                if f.stream == 0 {
                    connection_credit += credit;
                } else if f.stream == 1 {
                    stream_credit += credit;
                }
            }
            Some(f) if f.kind == RST_STREAM && f.stream == 1 => {
                assert!(over, "reset before the window was exceeded: {f:?}");
                assert_eq!(f.code(), FLOW_CONTROL_ERROR, "{f:?}");
                break;
            }
            Some(f) if f.kind == GOAWAY => {
                assert!(over, "GOAWAY before the window was exceeded: {f:?}");
                assert_eq!(f.code(), FLOW_CONTROL_ERROR, "{f:?}");
                break;
            }
            Some(_) => {}
            None => {
                assert!(!conn.eof, "the connection ended without a GOAWAY");
                // The server is quiet: it granted all it will for now. One more frame
                // than the stream window allows.
                if stream_credit < 16_384 {
                    let _ = conn.try_send(&data(1, &piece, false)).await;
                    stream_credit -= 16_384;
                    connection_credit -= 16_384;
                    sent += 16_384;
                    over = stream_credit < 0;
                }
            }
        }
    }
}

#[tokio::test]
async fn a_stream_past_max_concurrent_streams_is_refused_and_the_others_finish() {
    let (b1, server) = start("http2_max_concurrent_streams = 2").await;
    let mut conn = open(&server).await;
    assert_eq!(conn.server_setting(MAX_CONCURRENT_STREAMS), Some(2));
    let mut bytes = headers(1, &get("/delay/300ms"), true);
    bytes.extend(headers(3, &get("/delay/300ms"), true));
    bytes.extend(headers(5, &get("/"), true));
    conn.send(&bytes).await;
    let third = conn.response(5).await;
    assert!(
        third.status.is_none()
            && third.goaway.is_none()
            && matches!(third.reset, Some(REFUSED_STREAM | PROTOCOL_ERROR)),
        "the third stream is reset with REFUSED_STREAM or PROTOCOL_ERROR: {third:?}"
    );
    for stream in [1, 3] {
        let response = conn.response(stream).await;
        assert_eq!(response.status, Some(200), "stream {stream}: {response:?}");
        assert!(response.ended);
    }
    assert_eq!(
        b1.control().requests(),
        2,
        "the refused stream was not forwarded"
    );
}

#[tokio::test]
async fn unknown_frame_types_and_priority_frames_are_ignored() {
    let (_b1, server) = start("").await;
    let mut conn = open(&server).await;
    // PRIORITY for the stream about to open (exclusive on 0, weight 16), an unknown
    // frame type on the connection and on the stream.
    let mut bytes = frame(PRIORITY, 0, 1, &[0x80, 0, 0, 0, 15]);
    bytes.extend(frame(0xfa, 0xff, 0, b"unknown"));
    bytes.extend(headers(1, &get("/"), true));
    bytes.extend(frame(0xfa, 0, 1, b"also unknown"));
    conn.send(&bytes).await;
    let response = conn.response(1).await;
    assert_eq!(response.status, Some(200), "{response:?}");
    // PRIORITY on a closed stream and on an idle one, then more traffic.
    let mut bytes = frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 200]);
    bytes.extend(frame(PRIORITY, 0, 9, &[0, 0, 0, 1, 0]));
    bytes.extend(frame(0xfa, 0, 0, b""));
    conn.send(&bytes).await;
    assert_eq!(get_on(&mut conn, 3, "/").await.status, Some(200));
    conn.send(&frame(PING, 0, 0, b"stillok!")).await;
    let (seen, pong) = conn.until(|f| f.kind == PING).await;
    assert_eq!(pong.expect("PING ACK").payload, b"stillok!");
    assert!(
        seen.iter()
            .all(|f| f.kind != GOAWAY && f.kind != RST_STREAM)
    );
}

#[tokio::test]
async fn a_body_and_trailers_reach_the_backend_whole() {
    // An HTTP/2 upstream, which the backend's echo answers with the request's trailers.
    let (_b1, server) = start_with("", "protocol = \"h2\"").await;
    let mut conn = open(&server).await;
    let mut bytes = headers(
        1,
        &request(
            "POST",
            "/echo",
            &[("te", "trailers"), ("content-type", "text/plain")],
        ),
        false,
    );
    bytes.extend(data(1, b"hello, ", false));
    bytes.extend(data(1, b"trailers", false));
    bytes.extend(headers(1, &block(&[("x-checksum", "31337")]), true));
    conn.send(&bytes).await;
    let response = conn.response(1).await;
    assert_eq!(response.status, Some(200), "{response:?}");
    assert_eq!(response.body, b"hello, trailers");
    assert!(response.ended);
    let trailers = response.trailers.expect("the echoed trailers");
    assert!(
        trailers.iter().any(|f| f.value.as_deref() == Some("31337")),
        "{trailers:?}"
    );
}

#[tokio::test]
async fn the_clients_goaway_lets_its_open_stream_finish() {
    let (_b1, server) = start("").await;
    let mut conn = open(&server).await;
    conn.send(&headers(1, &get("/delay/200ms"), true)).await;
    conn.send(&goaway(0, NO_ERROR)).await;
    let response = conn.response(1).await;
    assert_eq!(response.status, Some(200), "{response:?}");
    assert!(response.ended);
}

#[tokio::test]
async fn the_clients_cancel_of_an_open_stream_is_accepted_and_the_connection_goes_on() {
    let (_b1, server) = start("").await;
    let mut conn = open(&server).await;
    conn.send(&headers(1, &request("POST", "/echo", &[]), false))
        .await;
    conn.send(&data(1, b"partial", false)).await;
    conn.send(&rst_stream(1, CANCEL)).await;
    let next = get_on(&mut conn, 3, "/").await;
    assert_eq!(next.status, Some(200), "{next:?}");
    conn.send(&frame(PING, 0, 0, b"afterrst")).await;
    let (seen, pong) = conn.until(|f| f.kind == PING).await;
    assert_eq!(pong.expect("PING ACK").payload, b"afterrst");
    assert!(seen.iter().all(|f| f.kind != GOAWAY), "{seen:?}");
}

#[tokio::test]
async fn with_a_header_table_size_of_0_responses_decode_without_the_dynamic_table() {
    let (_b1, server) = start("").await;
    let mut conn = Conn::open(address(&server, "web"), &[(HEADER_TABLE_SIZE, 0)]).await;
    for stream in [1, 3, 5] {
        let response = get_on(&mut conn, stream, "/bytes/10").await;
        assert_eq!(response.status, Some(200), "{response:?}");
        assert_eq!(response.field("content-length"), Some("10"), "{response:?}");
        assert_eq!(response.body.len(), 10);
    }
    assert!(
        !conn.decoder.used_dynamic,
        "no reference into a dynamic table of size 0"
    );
}

#[tokio::test]
async fn a_request_repeated_with_hpack_indexing_is_understood_both_times() {
    let (_b1, server) = start("").await;
    let mut conn = open(&server).await;
    // The first block adds three entries; the dynamic table is then (newest first)
    // 62 x-hpack: one, 63 :authority: t, 64 :path: /indexed.
    let mut first = vec![0x82, 0x86];
    first.extend(literal_indexed(":path", "/indexed"));
    first.extend(literal_indexed(":authority", "t"));
    first.extend(literal_indexed("x-hpack", "one"));
    let mut second = vec![0x82, 0x86];
    second.extend(indexed(64));
    second.extend(indexed(63));
    second.extend(indexed(62));
    assert_eq!(second[2..], [0xc0, 0xbf, 0xbe]);
    for (stream, block) in [(1, first), (3, second)] {
        conn.send(&headers(stream, &block, true)).await;
        let response = conn.response(stream).await;
        assert_eq!(response.status, Some(200), "stream {stream}: {response:?}");
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["path"], "/indexed", "stream {stream}");
        assert_eq!(body["headers"]["x-hpack"], "one", "stream {stream}");
    }
}

#[tokio::test]
async fn a_real_client_with_a_header_table_size_of_0_reads_every_response_field() {
    let (_b1, server) = start("").await;
    let tcp = within(tokio::net::TcpStream::connect(address(&server, "web")))
        .await
        .unwrap();
    let (client, connection) = within(
        h2::client::Builder::new()
            .header_table_size(0)
            .handshake::<_, bytes::Bytes>(tcp),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(connection);
    let mut client = within(client.ready()).await.unwrap();
    for _ in 0..3 {
        let request = http::Request::get("http://t/bytes/10").body(()).unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = within(response).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-backend"], "b1");
        assert_eq!(response.headers()["content-length"], "10");
        assert_eq!(
            response.headers()["content-type"],
            "application/octet-stream"
        );
        let mut body = response.into_body();
        let mut length = 0;
        while let Some(chunk) = within(body.data()).await {
            let chunk = chunk.unwrap();
            length += chunk.len();
            body.flow_control().release_capacity(chunk.len()).unwrap();
        }
        assert_eq!(length, 10);
        client = within(client.ready()).await.unwrap();
    }
    drop(client);
    within(driver).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_connection_without_open_streams_for_idle_timeout_gets_goaway_and_closes() {
    let (_b1, server) = start("idle_timeout = \"1s\"").await;
    let mut conn = open(&server).await;
    assert_eq!(get_on(&mut conn, 1, "/").await.status, Some(200));
    let started = std::time::Instant::now();
    let goaway = conn.goaway_or_eof().await.expect("a GOAWAY before the end");
    let waited = started.elapsed();
    assert_eq!(
        (goaway.last_stream(), goaway.code()),
        (1, NO_ERROR),
        "{goaway:?}"
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "GOAWAY after {waited:?}"
    );
    let (_, end) = conn.until(|_| false).await;
    assert!(end.is_none(), "the connection closes after the GOAWAY");
}

#[tokio::test]
async fn a_stream_open_longer_than_idle_timeout_is_not_cut() {
    let (_b1, server) = start("idle_timeout = \"1s\"").await;
    let mut conn = open(&server).await;
    let response = get_on(&mut conn, 1, "/delay/1500ms").await;
    assert_eq!(response.status, Some(200), "{response:?}");
    assert!(response.ended, "{response:?}");
}

#[tokio::test]
async fn past_max_header_bytes_or_100_fields_a_request_gets_431_with_proxy_status() {
    let (b1, server) = start("max_header_bytes = \"8KiB\"").await;
    let mut conn = open(&server).await;
    let big = "a".repeat(10_000);
    conn.send(&headers(1, &request("GET", "/", &[("x-big", &big)]), true))
        .await;
    let response = conn.response(1).await;
    assert_eq!(response.status, Some(431), "{response:?}");
    assert!(response.ended, "{response:?}");
    assert!(
        response
            .field("proxy-status")
            .is_some_and(|v| v.contains("max_header_bytes")),
        "proxy-made: {response:?}"
    );
    let names: Vec<String> = (0..101).map(|i| format!("x-f{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    conn.send(&headers(3, &request("GET", "/", &many), true))
        .await;
    let response = conn.response(3).await;
    assert_eq!(response.status, Some(431), "{response:?}");
    assert!(response.field("proxy-status").is_some(), "{response:?}");
    // 90 fields pass (the test backend, like hyper, takes at most 100 with the
    // forwarding fields the proxy adds).
    conn.send(&headers(5, &request("GET", "/", &many[..90]), true))
        .await;
    assert_eq!(conn.response(5).await.status, Some(200));
    assert_eq!(
        b1.control().requests(),
        1,
        "only the last request was forwarded"
    );
}
