//! Just enough gRPC to test a gRPC-aware balancer: `grpc.health.v1.Health/Check` and a unary
//! echo, framed by hand.
//!
//! A gRPC message is a 5-byte prefix (1 byte "compressed" flag, 4 bytes big-endian length)
//! followed by a protobuf message; the status travels in the `grpc-status` / `grpc-message`
//! trailers. The two health messages are tiny, so they are encoded by hand rather than pulling
//! a protobuf toolchain into the build.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};

use super::body::{BoxError, RespBody, boxed};
use super::control::read_bounded;
use super::faults::Control;

/// The health check method.
pub(crate) const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// The unary echo method: answers the request message unchanged.
pub(crate) const ECHO: &str = "/switchyard.test.Echo/Echo";

/// `OK`.
pub(crate) const OK: u32 = 0;
/// `INVALID_ARGUMENT`.
const INVALID_ARGUMENT: u32 = 3;
/// `RESOURCE_EXHAUSTED`.
const RESOURCE_EXHAUSTED: u32 = 8;
/// `UNIMPLEMENTED`.
const UNIMPLEMENTED: u32 = 12;
/// `INTERNAL`.
const INTERNAL: u32 = 13;
/// `UNAVAILABLE`: what an injected error answers.
pub(crate) const UNAVAILABLE: u32 = 14;

/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u8 = 1;
/// `HealthCheckResponse.ServingStatus.NOT_SERVING`.
const NOT_SERVING: u8 = 2;

/// The largest request message accepted.
const MAX_MESSAGE: usize = 4 << 20;

/// Whether a request is gRPC (its content type is `application/grpc` or `application/grpc+...`).
pub(crate) fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct == "application/grpc"
                || ct.starts_with("application/grpc+")
                || ct.starts_with("application/grpc;")
        })
}

/// Serves one gRPC call.
pub(crate) async fn serve(control: &Control, req: Request<Incoming>) -> Response<RespBody> {
    let path = req.uri().path().to_owned();
    if path != HEALTH_CHECK && path != ECHO {
        return status_response(UNIMPLEMENTED, "unknown method");
    }
    let body = match read_bounded(req.into_body(), MAX_MESSAGE + 5).await {
        Ok(b) => b,
        Err(_) => return status_response(RESOURCE_EXHAUSTED, "request message too large"),
    };
    let message = match unframe(&body) {
        Ok(m) => m,
        Err((code, msg)) => return status_response(code, msg),
    };
    if path == ECHO {
        return message_response(&message);
    }
    let Ok(service) = decode_health_request(&message) else {
        return status_response(INVALID_ARGUMENT, "malformed HealthCheckRequest");
    };
    let serving = control.faults_arc().grpc_serving_for(&service);
    let status = if serving { SERVING } else { NOT_SERVING };
    // HealthCheckResponse { status = 1 (varint) }
    message_response(&[0x08, status])
}

/// Extracts the single message of a unary request.
fn unframe(body: &[u8]) -> Result<Bytes, (u32, &'static str)> {
    let Some((prefix, rest)) = body.split_first_chunk::<5>() else {
        return Err((INTERNAL, "missing gRPC message prefix"));
    };
    if prefix[0] != 0 {
        return Err((UNIMPLEMENTED, "compressed messages are not supported"));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    if usize::try_from(len).ok() != Some(rest.len()) {
        return Err((INTERNAL, "expected exactly one gRPC message"));
    }
    Ok(Bytes::copy_from_slice(rest))
}

/// Reads `HealthCheckRequest { string service = 1; }`, skipping unknown fields.
fn decode_health_request(mut b: &[u8]) -> Result<String, ()> {
    let mut service = String::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            1 => b = b.get(8..).ok_or(())?,
            2 => {
                let len = usize::try_from(varint(&mut b)?).map_err(|_| ())?;
                let value = b.get(..len).ok_or(())?;
                if key >> 3 == 1 {
                    service = String::from_utf8(value.to_vec()).map_err(|_| ())?;
                }
                b = &b[len..];
            }
            5 => b = b.get(4..).ok_or(())?,
            _ => return Err(()),
        }
    }
    Ok(service)
}

fn varint(b: &mut &[u8]) -> Result<u64, ()> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first().ok_or(())?;
        *b = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(())
}

fn trailers(code: u32, message: &str) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        if let Ok(v) = HeaderValue::from_str(message) {
            t.insert("grpc-message", v);
        }
    }
    t
}

fn grpc_response(frames: Vec<Frame<Bytes>>) -> Response<RespBody> {
    let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, BoxError>));
    let mut resp = Response::new(boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// A call that ends with `code` and no message (HTTP 200, status in the trailers).
pub(crate) fn status_response(code: u32, message: &str) -> Response<RespBody> {
    grpc_response(vec![Frame::trailers(trailers(code, message))])
}

/// A successful call answering one message.
fn message_response(message: &[u8]) -> Response<RespBody> {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    grpc_response(vec![
        Frame::data(framed.freeze()),
        Frame::trailers(trailers(OK, "")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_requests_decode_the_service_name() {
        assert_eq!(decode_health_request(&[]), Ok(String::new()));
        let mut msg = vec![0x0a, 3];
        msg.extend_from_slice(b"api");
        assert_eq!(decode_health_request(&msg), Ok("api".to_owned()));
        // An unknown varint field before it is skipped.
        let mut with_unknown = vec![0x10, 0x96, 0x01];
        with_unknown.extend_from_slice(&msg);
        assert_eq!(decode_health_request(&with_unknown), Ok("api".to_owned()));
        assert!(decode_health_request(&[0x0a, 9, b'a']).is_err());
        assert!(decode_health_request(&[0xff; 11]).is_err());
    }

    #[test]
    fn unframe_wants_exactly_one_uncompressed_message() {
        assert_eq!(
            unframe(&[0, 0, 0, 0, 2, 7, 8]),
            Ok(Bytes::from_static(&[7, 8]))
        );
        assert!(unframe(&[0, 0, 0]).is_err());
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err());
        assert!(unframe(&[0, 0, 0, 0, 3, 7]).is_err());
    }
}
