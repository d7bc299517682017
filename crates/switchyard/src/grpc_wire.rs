//! The few bytes of gRPC framing and of `grpc.health.v1` that Switchyard needs, encoded by
//! hand so no protobuf toolchain enters the build. The test upstream (`switchyard backend`)
//! answers health checks with them and the active health checker asks with them, so both
//! sides share one encoding.
//!
//! A gRPC message is a 5-byte prefix (1 byte "compressed" flag, 4 bytes big-endian length)
//! followed by a protobuf message; the status travels in the `grpc-status` trailer.

use bytes::{BufMut, Bytes, BytesMut};

/// The health check method.
pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckResponse.ServingStatus.SERVING`.
pub const SERVING: u64 = 1;
/// `HealthCheckResponse.ServingStatus.NOT_SERVING`.
pub const NOT_SERVING: u64 = 2;

/// Why a body is not exactly one uncompressed gRPC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer than 5 bytes.
    #[error("missing gRPC message prefix")]
    MissingPrefix,
    /// The compressed flag is set.
    #[error("compressed messages are not supported")]
    Compressed,
    /// The length prefix disagrees with the body.
    #[error("expected exactly one gRPC message")]
    NotOneMessage,
}

/// A protobuf message that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf message")]
pub struct Malformed;

/// `message` with its 5-byte prefix.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// The single message of a unary body.
pub fn unframe(body: &[u8]) -> Result<&[u8], FrameError> {
    let Some((prefix, rest)) = body.split_first_chunk::<5>() else {
        return Err(FrameError::MissingPrefix);
    };
    if prefix[0] != 0 {
        return Err(FrameError::Compressed);
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    if usize::try_from(len).ok() != Some(rest.len()) {
        return Err(FrameError::NotOneMessage);
    }
    Ok(rest)
}

/// `HealthCheckRequest { string service = 1; }`.
pub fn health_request(service: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        out.push(0x0a);
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// `HealthCheckResponse { ServingStatus status = 1; }`.
pub fn health_response(status: u64) -> Vec<u8> {
    let mut out = vec![0x08];
    put_varint(&mut out, status);
    out
}

/// Reads `HealthCheckRequest.service`, skipping unknown fields.
pub fn decode_health_request(message: &[u8]) -> Result<String, Malformed> {
    let mut service = String::new();
    walk_fields(message, |field, value| {
        if let (1, Field::Bytes(bytes)) = (field, value) {
            service = String::from_utf8(bytes.to_vec()).map_err(|_| Malformed)?;
        }
        Ok(())
    })?;
    Ok(service)
}

/// Reads `HealthCheckResponse.status` (0 = UNKNOWN when absent), skipping unknown fields.
pub fn decode_health_response(message: &[u8]) -> Result<u64, Malformed> {
    let mut status = 0;
    walk_fields(message, |field, value| {
        if let (1, Field::Varint(v)) = (field, value) {
            status = v;
        }
        Ok(())
    })?;
    Ok(status)
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Calls `each` with every field of a protobuf message.
fn walk_fields<'a>(
    mut b: &'a [u8],
    mut each: impl FnMut(u64, Field<'a>) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let value = match key & 7 {
            0 => Field::Varint(varint(&mut b)?),
            1 => {
                b = b.get(8..).ok_or(Malformed)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?).map_err(|_| Malformed)?;
                let value = b.get(..len).ok_or(Malformed)?;
                b = &b[len..];
                Field::Bytes(value)
            }
            5 => {
                b = b.get(4..).ok_or(Malformed)?;
                Field::Fixed
            }
            _ => return Err(Malformed),
        };
        each(key >> 3, value)?;
    }
    Ok(())
}

fn varint(b: &mut &[u8]) -> Result<u64, Malformed> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first().ok_or(Malformed)?;
        *b = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Malformed)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages_round_trip() {
        let long = "s".repeat(300);
        for service in ["", "shop.Cart", long.as_str()] {
            let framed = frame(&health_request(service));
            let message = unframe(&framed).expect("one message");
            assert_eq!(decode_health_request(message), Ok(service.to_owned()));
        }
        for status in [0, SERVING, NOT_SERVING, 300] {
            assert_eq!(decode_health_response(&health_response(status)), Ok(status));
        }
        assert_eq!(decode_health_response(&[]), Ok(0));
    }

    #[test]
    fn malformed_frames_and_fields_are_refused() {
        assert_eq!(unframe(&[0, 0]), Err(FrameError::MissingPrefix));
        assert_eq!(unframe(&[1, 0, 0, 0, 0]), Err(FrameError::Compressed));
        assert_eq!(unframe(&[0, 0, 0, 0, 2, 1]), Err(FrameError::NotOneMessage));
        assert_eq!(decode_health_response(&[0x08]), Err(Malformed));
        assert_eq!(decode_health_request(&[0x0a, 5, b'a']), Err(Malformed));
        assert_eq!(decode_health_response(&[0x0b]), Err(Malformed));
    }
}
