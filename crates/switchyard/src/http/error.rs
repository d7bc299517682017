//! Every response the proxy makes itself, in one place.
//!
//! SPEC 3.2 fixes, for each situation the proxy (not an upstream) is answering for, the
//! HTTP status, the RFC 9209 `Proxy-Status` error token and, for gRPC requests, the
//! `grpc-status`. [`ProxyError`] names those situations; [`ProxyError::status`],
//! [`ProxyError::token`] and [`ProxyError::grpc_status`] are the one mapping, and the
//! renderers ([`ProxyError::to_response`], [`ProxyError::to_h1_bytes`]) are the only code
//! that builds such a response, so no phase invents a status of its own.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// Why the balancer shed a request instead of queueing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// `max_pending_requests` reached.
    Pending,
    /// `max_requests` reached.
    Requests,
    /// `max_connections` of the cluster reached.
    Connections,
    /// The circuit breaker is open.
    CircuitOpen,
}

impl ShedReason {
    /// Every reason, in the order metric handles are kept.
    pub const ALL: [ShedReason; 4] = [
        ShedReason::Pending,
        ShedReason::Requests,
        ShedReason::Connections,
        ShedReason::CircuitOpen,
    ];

    /// The `reason` label of `shed_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::Pending => "pending",
            ShedReason::Requests => "requests",
            ShedReason::Connections => "connections",
            ShedReason::CircuitOpen => "circuit-open",
        }
    }
}

/// A situation the proxy answers for itself (SPEC 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// No route matches: 404.
    DestinationNotFound,
    /// No eligible endpoint: 503.
    DestinationUnavailable,
    /// Every allowed connect was refused (the request was never sent): 503.
    ConnectionRefused,
    /// Every allowed connect timed out (never sent): 503.
    ConnectionTimeout,
    /// The upstream reset or closed before a full response: 502.
    ConnectionTerminated,
    /// The upstream's response was cut short or malformed: 502.
    ResponseIncomplete,
    /// No response head within `per_try_timeout` / `timeout`: 504.
    ResponseTimeout,
    /// The upstream's certificate was refused, or it refused ours: 502.
    TlsCertificateError,
    /// The TLS handshake with the upstream failed otherwise: 502.
    TlsProtocolError,
    /// Shed by a cluster limit: 503.
    Shed(ShedReason),
    /// A route's `auth.jwt` found no valid token: 401 with `WWW-Authenticate`.
    Unauthorized {
        /// Whether a token was sent (then `error="invalid_token"` is added).
        token_sent: bool,
    },
    /// A valid token whose claims fail the route's claim match: 403.
    Forbidden,
    /// A route's rate limit refused the request: 429 with `Retry-After` in whole seconds.
    RateLimited {
        /// Seconds until a token is available, rounded up.
        retry_after_secs: u32,
    },
    /// The request itself is at fault (malformed, ambiguous framing, too large, too slow).
    /// `status` is 400, 408, 413, 431 or 501; `details` names the rule that was broken.
    Request {
        /// The status sent.
        status: StatusCode,
        /// What was wrong, as the `details` parameter of `Proxy-Status`.
        details: &'static str,
    },
}

impl ProxyError {
    /// A malformed or ambiguous request (400).
    pub const fn bad_request(details: &'static str) -> ProxyError {
        ProxyError::Request {
            status: StatusCode::BAD_REQUEST,
            details,
        }
    }

    /// The HTTP status sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::DestinationNotFound => StatusCode::NOT_FOUND,
            ProxyError::DestinationUnavailable
            | ProxyError::ConnectionRefused
            | ProxyError::ConnectionTimeout
            | ProxyError::Shed(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectionTerminated
            | ProxyError::ResponseIncomplete
            | ProxyError::TlsCertificateError
            | ProxyError::TlsProtocolError => StatusCode::BAD_GATEWAY,
            ProxyError::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::Request { status, .. } => *status,
        }
    }

    /// The RFC 9209 error token.
    pub fn token(&self) -> &'static str {
        match self {
            ProxyError::DestinationNotFound => "destination_not_found",
            ProxyError::DestinationUnavailable => "destination_unavailable",
            ProxyError::ConnectionRefused => "connection_refused",
            ProxyError::ConnectionTimeout => "connection_timeout",
            ProxyError::ConnectionTerminated => "connection_terminated",
            ProxyError::ResponseIncomplete => "http_response_incomplete",
            ProxyError::ResponseTimeout => "http_response_timeout",
            ProxyError::TlsCertificateError => "tls_certificate_error",
            ProxyError::TlsProtocolError => "tls_protocol_error",
            ProxyError::Shed(_) => "connection_limit_reached",
            ProxyError::RateLimited { .. }
            | ProxyError::Unauthorized { .. }
            | ProxyError::Forbidden => "http_request_denied",
            ProxyError::Request { .. } => "http_request_error",
        }
    }

    /// The `details` parameter of `Proxy-Status`, where there is one.
    pub fn details(&self) -> Option<&'static str> {
        match self {
            ProxyError::Shed(ShedReason::CircuitOpen) => Some("circuit-open"),
            ProxyError::Shed(_) => Some("shed"),
            ProxyError::RateLimited { .. } => Some("rate_limit"),
            ProxyError::Unauthorized { .. } | ProxyError::Forbidden => Some("jwt"),
            ProxyError::Request { details, .. } => Some(details),
            _ => None,
        }
    }

    /// The `grpc-status` a gRPC client gets for this situation (SPEC 3.2).
    pub fn grpc_status(&self) -> u8 {
        match self.status().as_u16() {
            404 => 12,
            401 => 16,
            403 => 7,
            429 => 8,
            502 | 503 => 14,
            504 => 4,
            _ => 13,
        }
    }

    /// Whether the connection must be closed after this response (the request's framing
    /// can no longer be trusted, or the client was too slow).
    pub fn closes_connection(&self) -> bool {
        matches!(self, ProxyError::Request { status, .. } if *status != StatusCode::PAYLOAD_TOO_LARGE)
    }

    /// The `Proxy-Status` header value: `switchyard; error=TOKEN[; details="..."]`.
    pub fn proxy_status(&self) -> HeaderValue {
        let value = match self.details() {
            Some(details) => format!(
                "switchyard; error={}; details=\"{}\"",
                self.token(),
                details
            ),
            None => format!("switchyard; error={}", self.token()),
        };
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("switchyard"))
    }

    /// The response for a request; gRPC requests get HTTP 200 trailers-only with
    /// `grpc-status` (and `grpc-message`), everything else a short text body.
    pub fn to_response<B: From<Bytes>>(&self, grpc: bool) -> Response<B> {
        let mut response = if grpc {
            let mut response = Response::new(B::from(Bytes::new()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert(
                "grpc-status",
                HeaderValue::from(u16::from(self.grpc_status())),
            );
            headers.insert("grpc-message", HeaderValue::from_static(self.token()));
            response
        } else {
            let mut response = Response::new(B::from(Bytes::from(self.body())));
            *response.status_mut() = self.status();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            if self.closes_connection() {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        };
        let headers = response.headers_mut();
        headers.insert("proxy-status", self.proxy_status());
        match self {
            ProxyError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ProxyError::Unauthorized { token_sent } => {
                let challenge = if *token_sent {
                    "Bearer realm=\"switchyard\", error=\"invalid_token\""
                } else {
                    "Bearer realm=\"switchyard\""
                };
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            _ => {}
        }
        response
    }

    /// The whole HTTP/1.1 response as bytes, for answering below hyper (a request head
    /// the guard refused before hyper saw it). Always ends the connection.
    pub fn to_h1_bytes(&self) -> Bytes {
        let status = self.status();
        let body = self.body();
        let head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\nproxy-status: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.proxy_status().to_str().unwrap_or("switchyard"),
            body.len(),
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        Bytes::from(bytes)
    }

    fn body(&self) -> String {
        match self.details() {
            Some(details) => format!("{} {}: {}\n", self.status().as_u16(), self.token(), details),
            None => format!("{} {}\n", self.status().as_u16(), self.token()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[test]
    fn every_situation_maps_to_the_spec_status_and_token() {
        let cases = [
            (
                ProxyError::DestinationNotFound,
                404,
                "destination_not_found",
                12,
            ),
            (
                ProxyError::DestinationUnavailable,
                503,
                "destination_unavailable",
                14,
            ),
            (ProxyError::ConnectionRefused, 503, "connection_refused", 14),
            (ProxyError::ConnectionTimeout, 503, "connection_timeout", 14),
            (
                ProxyError::ConnectionTerminated,
                502,
                "connection_terminated",
                14,
            ),
            (
                ProxyError::ResponseIncomplete,
                502,
                "http_response_incomplete",
                14,
            ),
            (ProxyError::ResponseTimeout, 504, "http_response_timeout", 4),
            (
                ProxyError::TlsCertificateError,
                502,
                "tls_certificate_error",
                14,
            ),
            (ProxyError::TlsProtocolError, 502, "tls_protocol_error", 14),
            (
                ProxyError::Shed(ShedReason::Pending),
                503,
                "connection_limit_reached",
                14,
            ),
            (
                ProxyError::bad_request("bare CR"),
                400,
                "http_request_error",
                13,
            ),
        ];
        for (error, status, token, grpc) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.token(), token, "{error:?}");
            assert_eq!(error.grpc_status(), grpc, "{error:?}");
        }
    }

    #[test]
    fn shed_details_say_shed_or_circuit_open() {
        let shed = ProxyError::Shed(ShedReason::Requests).proxy_status();
        assert_eq!(
            shed.to_str().unwrap(),
            "switchyard; error=connection_limit_reached; details=\"shed\""
        );
        let open = ProxyError::Shed(ShedReason::CircuitOpen).proxy_status();
        assert_eq!(
            open.to_str().unwrap(),
            "switchyard; error=connection_limit_reached; details=\"circuit-open\""
        );
    }

    #[test]
    fn grpc_requests_get_trailers_only_200() {
        let response: Response<Full<Bytes>> = ProxyError::ResponseTimeout.to_response(true);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "4");
        assert_eq!(
            response.headers()["proxy-status"],
            "switchyard; error=http_response_timeout"
        );
    }

    #[test]
    fn raw_h1_bytes_are_a_complete_response_that_closes() {
        let bytes = ProxyError::Request {
            status: StatusCode::NOT_IMPLEMENTED,
            details: "unknown transfer coding",
        }
        .to_h1_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 501 Not Implemented\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nconnection: close\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
