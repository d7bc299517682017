//! Just enough gRPC to test a gRPC-aware balancer: `grpc.health.v1.Health/Check` and a unary
//! echo, framed by hand.
//!
//! A gRPC message is a 5-byte prefix (1 byte "compressed" flag, 4 bytes big-endian length)
//! followed by a protobuf message; the status travels in the `grpc-status` / `grpc-message`
//! trailers. The two health messages are tiny, so they are encoded by hand rather than pulling
//! a protobuf toolchain into the build.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};

use super::body::{BoxError, RespBody, boxed};
use super::control::read_bounded;
use super::faults::Control;
use crate::grpc_wire::{self, FrameError};

pub(crate) use crate::grpc_wire::HEALTH_CHECK;
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
    let Ok(service) = grpc_wire::decode_health_request(&message) else {
        return status_response(INVALID_ARGUMENT, "malformed HealthCheckRequest");
    };
    let serving = control.faults_arc().grpc_serving_for(&service);
    let status = if serving {
        grpc_wire::SERVING
    } else {
        grpc_wire::NOT_SERVING
    };
    message_response(&grpc_wire::health_response(status))
}

/// Extracts the single message of a unary request, as a gRPC status on failure.
fn unframe(body: &[u8]) -> Result<Bytes, (u32, &'static str)> {
    match grpc_wire::unframe(body) {
        Ok(message) => Ok(Bytes::copy_from_slice(message)),
        Err(FrameError::Compressed) => {
            Err((UNIMPLEMENTED, "compressed messages are not supported"))
        }
        Err(FrameError::MissingPrefix) => Err((INTERNAL, "missing gRPC message prefix")),
        Err(FrameError::NotOneMessage) => Err((INTERNAL, "expected exactly one gRPC message")),
    }
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
    grpc_response(vec![
        Frame::data(grpc_wire::frame(message)),
        Frame::trailers(trailers(OK, "")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc_wire::decode_health_request;

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
