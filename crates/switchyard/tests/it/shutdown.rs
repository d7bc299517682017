//! Graceful shutdown of HTTP clients (SPEC 3.1), watched at the wire: HTTP/2 clients see
//! GOAWAY(2^31-1), a PING, then GOAWAY(last stream id) while their stream finishes;
//! HTTP/1.1 clients get `Connection: close` on the response in flight.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::h2_wire::{DATA, GOAWAY, HEADERS, PING, SETTINGS, frame, read_frame};
use crate::support::*;

async fn slow_balancer() -> (
    switchyard::runtime::Server,
    switchyard::backend::BackendHandle,
) {
    let mut args = switchyard::backend::BackendArgs::for_test("slow");
    args.latency = Some(switchyard::backend::Latency::Fixed(Duration::from_millis(
        300,
    )));
    let slow = backend(args).await;
    let toml = format!(
        "{WEB}\ncluster = \"app\"\n[defaults]\ndrain_timeout = \"5s\"\n[[cluster]]\nname = \"app\"\nendpoints = [\"{}\"]\n",
        slow.local_addr()
    );
    (balancer(&toml).await, slow)
}

#[tokio::test]
async fn h2_clients_get_two_goaways_and_their_stream_finishes() {
    let (server, _slow) = slow_balancer().await;
    let mut stream = within(TcpStream::connect(address(&server, "web")))
        .await
        .unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    // GET http://t/ : static-table :method GET, :scheme http, :path /, then :authority "t".
    hello.extend(frame(
        HEADERS,
        0x5,
        1,
        &[0x82, 0x86, 0x84, 0x41, 0x01, b't'],
    ));
    within(stream.write_all(&hello)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shutdown = tokio::spawn(server.shutdown());

    let mut goaways = Vec::new();
    let mut response_status = None;
    let mut finished = false;
    while !finished {
        let f = read_frame(&mut stream).await;
        match f.kind {
            SETTINGS if f.flags & 1 == 0 => {
                within(stream.write_all(&frame(SETTINGS, 1, 0, &[])))
                    .await
                    .unwrap();
            }
            PING if f.flags & 1 == 0 => {
                within(stream.write_all(&frame(PING, 1, 0, &f.payload)))
                    .await
                    .unwrap();
            }
            GOAWAY => {
                let last = u32::from_be_bytes(f.payload[..4].try_into().unwrap()) & 0x7fff_ffff;
                let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
                goaways.push((last, code, response_status.is_some()));
            }
            HEADERS if f.stream == 1 => {
                // :status 200 is static-table index 8.
                response_status = Some(f.payload.first() == Some(&0x88));
                finished = f.flags & 1 == 1;
            }
            DATA if f.stream == 1 => finished = f.flags & 1 == 1,
            _ => {}
        }
    }
    assert_eq!(
        response_status,
        Some(true),
        "the in-flight stream was answered 200"
    );
    assert!(goaways.len() >= 2, "{goaways:?}");
    assert_eq!(
        goaways[0],
        (0x7fff_ffff, 0, false),
        "first GOAWAY(2^31-1, NO_ERROR)"
    );
    assert_eq!(
        (goaways[1].0, goaways[1].1),
        (1, 0),
        "then GOAWAY(last stream id = 1)"
    );
    within(shutdown).await.unwrap();
}

#[tokio::test]
async fn h1_clients_get_connection_close_on_the_response_in_flight() {
    let (server, _slow) = slow_balancer().await;
    let web = address(&server, "web");
    let mut stream = within(TcpStream::connect(web)).await.unwrap();
    within(stream.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shutdown = tokio::spawn(server.shutdown());
    let mut answer = Vec::new();
    within(stream.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    within(shutdown).await.unwrap();
    assert!(
        TcpStream::connect(web).await.is_err(),
        "the listener is closed"
    );
}
