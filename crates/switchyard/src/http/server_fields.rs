//! What the server side adds to every response it sends a client, over HTTP/1.1 and
//! HTTP/2 alike: a `Date` (RFC 9110 6.6.1: a server with a clock sends one), and the
//! body's length when it is known before the first byte, so a client need not wait for a
//! chunked end or the stream's close to know the response is whole.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, StatusCode};
use http_body::Body;

/// The `Date` value for now, formatted once per second per thread.
pub fn now_date() -> HeaderValue {
    thread_local! {
        static CACHED: RefCell<(u64, Option<HeaderValue>)> = const { RefCell::new((0, None)) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second || cached.1.is_none() {
            let text = httpdate::fmt_http_date(now);
            cached.1 = HeaderValue::from_str(&text).ok();
            cached.0 = second;
        }
        cached
            .1
            .clone()
            .unwrap_or_else(|| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
    })
}

/// The `Content-Length` to add to a response with `status` whose body is `body`: its
/// exact length when the body knows it, unless the response already `declared` one or
/// may not carry one (1xx, 204, 304).
pub fn length_to_declare(status: StatusCode, declared: bool, body: &impl Body) -> Option<u64> {
    if declared
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return None;
    }
    let exact = body.size_hint().exact()?;
    (exact > 0 || body.is_end_stream()).then_some(exact)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{Empty, Full, StreamBody};

    #[test]
    fn a_known_length_is_declared_once_and_never_where_no_body_may_be() {
        let full = Full::new(Bytes::from_static(b"hello"));
        let empty = Empty::<Bytes>::new();
        assert_eq!(length_to_declare(StatusCode::OK, false, &full), Some(5));
        assert_eq!(length_to_declare(StatusCode::OK, false, &empty), Some(0));
        assert_eq!(
            length_to_declare(StatusCode::NO_CONTENT, false, &empty),
            None
        );
        assert_eq!(
            length_to_declare(StatusCode::NOT_MODIFIED, false, &empty),
            None
        );
        assert_eq!(length_to_declare(StatusCode::CONTINUE, false, &empty), None);
        assert_eq!(length_to_declare(StatusCode::OK, true, &full), None);
        let stream = StreamBody::new(futures_util::stream::empty::<
            Result<http_body::Frame<Bytes>, std::convert::Infallible>,
        >());
        assert_eq!(length_to_declare(StatusCode::OK, false, &stream), None);
    }

    #[test]
    fn the_date_is_an_http_date() {
        let date = now_date();
        assert!(httpdate::parse_http_date(date.to_str().unwrap()).is_ok());
    }
}
