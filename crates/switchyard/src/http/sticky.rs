//! Cookie affinity (`sticky = { cookie, ttl }`): a client that carries the cluster's cookie
//! goes back to the endpoint it names while that endpoint is eligible; otherwise the policy
//! picks and the response sets the cookie to the endpoint it chose.
//!
//! The cookie holds a token derived from the endpoint's name (xxh64, seed 0, as 16 hex
//! digits), not its address: every instance of a fleet reads the same cookie the same way,
//! a reload keeps it valid while the endpoint keeps its name, and the backend's address is
//! not disclosed to clients.

use http::HeaderValue;
use http::header::SET_COOKIE;
use switchyard_algo::hash::key_for_bytes;

use super::router::cookies;
use crate::cluster::Cluster;
use crate::config::model::Sticky;

/// The token that names `endpoint` in a sticky cookie.
pub fn token(endpoint: &str) -> String {
    format!("{:016x}", key_for_bytes(endpoint.as_bytes()))
}

/// The cookie's value in `headers`, if the client sent one.
pub fn requested<'h>(sticky: &Sticky, headers: &'h http::HeaderMap) -> Option<&'h str> {
    cookies(headers)
        .find(|(name, _)| *name == sticky.cookie)
        .map(|(_, value)| value)
}

/// The index of the endpoint `value` names, when it may take the request at `now`.
pub fn pinned(cluster: &Cluster, value: &str, now: u64) -> Option<usize> {
    let in_panic = cluster.in_panic();
    cluster
        .endpoints()
        .iter()
        .position(|e| token(&e.name) == value)
        .filter(|&i| cluster.endpoints()[i].is_eligible_at(now, in_panic))
}

/// `Set-Cookie` pinning the client to `endpoint`.
pub fn set_cookie(sticky: &Sticky, endpoint: &str) -> Option<HeaderValue> {
    let value = format!(
        "{}={}; Max-Age={}; Path=/; HttpOnly",
        sticky.cookie,
        token(endpoint),
        sticky.ttl.as_secs()
    );
    HeaderValue::from_str(&value).ok()
}

/// Adds the cookie to a response unless the client already carries the right one.
pub fn remember(
    sticky: &Sticky,
    sent: Option<&str>,
    endpoint: &str,
    headers: &mut http::HeaderMap,
) {
    if sent == Some(token(endpoint).as_str()) {
        return;
    }
    if let Some(cookie) = set_cookie(sticky, endpoint) {
        headers.append(SET_COOKIE, cookie);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tokens_are_stable_and_the_cookie_carries_its_ttl() {
        assert_eq!(token("b1"), token("b1"));
        assert_ne!(token("b1"), token("b2"));
        assert_eq!(token("b1").len(), 16);
        let sticky = Sticky {
            cookie: "sy".into(),
            ttl: Duration::from_secs(3600),
        };
        let cookie = set_cookie(&sticky, "b1").expect("a valid header");
        assert_eq!(
            cookie.to_str().ok(),
            Some(format!("sy={}; Max-Age=3600; Path=/; HttpOnly", token("b1")).as_str())
        );
        let mut headers = http::HeaderMap::new();
        remember(&sticky, Some(&token("b1")), "b1", &mut headers);
        assert!(headers.is_empty(), "the right cookie is not set again");
        remember(&sticky, Some("stale"), "b1", &mut headers);
        assert_eq!(headers.len(), 1);
    }
}
