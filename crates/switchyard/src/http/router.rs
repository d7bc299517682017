//! Picking a listener's route for a request (SPEC 3.1 "Routes"), and the weighted split.
//!
//! Routes are tried in file order and the first whose matchers all hold wins. Checking every
//! route in turn would evaluate regexes of routes that cannot match anyway, because most
//! configurations select on the host first. So [`Router::build`] precomputes, for every
//! host the configuration names, the ordered list of routes that host can reach at all
//! (its exact routes, the wildcard routes covering it, and the host-less routes, merged in
//! file order). A request then costs one hash lookup (a few more for hosts only wildcards
//! cover) and checks path, method, headers, cookies and query only on those candidates.
//! File order, not specificity, decides between an exact and a wildcard route.
//!
//! Everything here is pure: no I/O, no clock, no randomness ([`Split::choose`] takes the
//! random point from the caller), so the rules are tested exactly.

use std::borrow::Cow;
use std::collections::HashMap;

use http::{HeaderMap, HeaderName, Method};
use regex::{Regex, RegexBuilder};

use super::jwt::{Claims, claim_text};

use crate::config::model::{PathMatch, RouteMatch, ValueMatch};

/// The same compiled-size bound validation checked the regexes against.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Longest host lowercased on the stack; longer ones (never valid DNS names) allocate.
const HOST_BUFFER: usize = 256;

/// What the router looks at in a request; borrowed, so building one costs nothing.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The request method.
    pub method: &'a Method,
    /// HTTP/2 `:authority` or the `Host` header, as sent (it may carry a port).
    pub authority: Option<&'a str>,
    /// The path, without the query.
    pub path: &'a str,
    /// The query string, without the `?`.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// Verified JWT claims for the routes that match on `jwt_claims` (none: such routes
    /// match nothing).
    pub claims: Option<&'a dyn ClaimsSource>,
}

/// Where the router gets a route's verified JWT claims: the route's own `auth.jwt` verifies
/// the request's token (lazily, once per verifier and request).
pub trait ClaimsSource: std::fmt::Debug {
    /// The claims of the request's token as route `route` (file order) verifies them;
    /// `None` when there is no token, it is invalid, or the route has no `auth.jwt`.
    fn claims(&self, route: usize) -> Option<&Claims>;
}

/// A route that could not be compiled (validation already rejects these; kept typed so a
/// snapshot build reports rather than panics).
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A `path_regex` or a `/.../` value did not compile.
    #[error("route #{route}: invalid regex {pattern:?}: {source}")]
    Regex {
        /// The route's index in file order.
        route: usize,
        /// The pattern as written.
        pattern: String,
        /// Why it failed.
        #[source]
        source: regex::Error,
    },
    /// A header matcher names something that is not a header name.
    #[error("route #{route}: invalid header name {name:?}")]
    HeaderName {
        /// The route's index in file order.
        route: usize,
        /// The name as written.
        name: String,
    },
}

/// A listener's routes, compiled; `T` is whatever the caller attaches to each route.
///
/// Regex matchers (`path_regex`, `/.../` values) are applied with `is_match` as written:
/// anchor them with `^`/`$` for a whole-value match.
///
/// `jwt_claims` match verified claims only ([`ClaimsSource`]): a request without a valid
/// token matches no route that has them.
#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<(CompiledRoute, T)>,
    /// Normalised exact host → every route that host can reach, in file order.
    exact_hosts: HashMap<String, Vec<usize>>,
    /// `example.com` (for `*.example.com`) → every route a host below it can reach, when
    /// this is the longest wildcard suffix of the host, in file order.
    wildcard_suffixes: HashMap<String, Vec<usize>>,
    /// The routes without a host matcher, in file order: all a request for another host
    /// (or without a host) can reach.
    hostless: Vec<usize>,
}

impl<T> Router<T> {
    /// Compiles `routes` (in file order) and indexes them by host.
    pub fn build(routes: Vec<(&RouteMatch, T)>) -> Result<Router<T>, RouterError> {
        let mut exact_direct: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard_direct: HashMap<String, Vec<usize>> = HashMap::new();
        let mut hostless = Vec::new();
        let mut compiled = Vec::with_capacity(routes.len());
        for (index, (matcher, target)) in routes.into_iter().enumerate() {
            if matcher.hosts.is_empty() {
                hostless.push(index);
            }
            for host in &matcher.hosts {
                let lower = host.to_ascii_lowercase();
                match lower.strip_prefix("*.") {
                    Some(suffix) => wildcard_direct
                        .entry(normalise_host(suffix).to_string())
                        .or_default()
                        .push(index),
                    None => exact_direct
                        .entry(normalise_host(&lower).to_string())
                        .or_default()
                        .push(index),
                }
            }
            compiled.push((CompiledRoute::compile(index, matcher)?, target));
        }

        let wildcards_covering = |host: &str, include_leading_dot: bool| {
            let mut out = Vec::new();
            for (dot, _) in host.match_indices('.') {
                if dot == 0 && !include_leading_dot {
                    continue;
                }
                if let Some(list) = wildcard_direct.get(&host[dot + 1..]) {
                    out.extend_from_slice(list);
                }
            }
            out
        };
        let merged = |mut list: Vec<usize>| {
            list.extend_from_slice(&hostless);
            list.sort_unstable();
            list.dedup();
            list
        };

        let exact_hosts = exact_direct
            .iter()
            .map(|(host, direct)| {
                // `*.X` covers `host` when host = L + "." + X with L non-empty.
                let mut list = wildcards_covering(host, false);
                list.extend_from_slice(direct);
                (host.clone(), merged(list))
            })
            .collect();
        let wildcard_suffixes = wildcard_direct
            .iter()
            .map(|(suffix, direct)| {
                // A host that reaches `suffix` is L + "." + suffix, so every `*.X` with X a
                // dot-suffix of `suffix` covers it too, even one after a leading dot.
                let mut list = wildcards_covering(suffix, true);
                list.extend_from_slice(direct);
                (suffix.clone(), merged(list))
            })
            .collect();

        Ok(Router {
            routes: compiled,
            exact_hosts,
            wildcard_suffixes,
            hostless,
        })
    }

    /// The value attached to the first route (in file order) that matches `request`.
    pub fn find(&self, request: &RequestFacts<'_>) -> Option<&T> {
        let index = self.find_index(request)?;
        self.routes.get(index).map(|(_, target)| target)
    }

    /// The file-order index of the first route that matches `request`.
    pub fn find_index(&self, request: &RequestFacts<'_>) -> Option<usize> {
        self.candidates(request.authority)
            .iter()
            .copied()
            .find(|&index| {
                self.routes
                    .get(index)
                    .is_some_and(|(route, _)| route.matches(index, request))
            })
    }

    /// The first route (file order) that matches `request` on everything but its
    /// `jwt_claims`: when no route matched, the one whose `auth.jwt` answers 401 or 403.
    pub fn jwt_refusal(&self, request: &RequestFacts<'_>) -> Option<usize> {
        self.candidates(request.authority)
            .iter()
            .copied()
            .find(|&index| {
                self.routes.get(index).is_some_and(|(route, _)| {
                    !route.jwt_claims.is_empty() && route.matches_without_claims(request)
                })
            })
    }

    /// The value attached to route `index` (file order).
    pub fn get(&self, index: usize) -> Option<&T> {
        self.routes.get(index).map(|(_, target)| target)
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes (every request is then a 404).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes whose host matcher accepts `authority`, in file order. Only these are
    /// checked further.
    fn candidates(&self, authority: Option<&str>) -> &[usize] {
        // Without a route that names a host, every authority gets the same list.
        let no_host_routes = self.exact_hosts.is_empty() && self.wildcard_suffixes.is_empty();
        let Some(authority) = authority.filter(|_| !no_host_routes) else {
            return &self.hostless;
        };
        let host = normalise_host(authority);
        if !host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.candidates_for_lowercase(host);
        }
        if host.len() <= HOST_BUFFER {
            let mut buffer = [0u8; HOST_BUFFER];
            let lowered = &mut buffer[..host.len()];
            lowered.copy_from_slice(host.as_bytes());
            lowered.make_ascii_lowercase();
            // ASCII lowercasing keeps UTF-8 valid, so this never fails.
            return match std::str::from_utf8(lowered) {
                Ok(lowered) => self.candidates_for_lowercase(lowered),
                Err(_) => &self.hostless,
            };
        }
        self.candidates_for_lowercase(&host.to_ascii_lowercase())
    }

    fn candidates_for_lowercase(&self, host: &str) -> &[usize] {
        if let Some(list) = self.exact_hosts.get(host) {
            return list;
        }
        if !self.wildcard_suffixes.is_empty() {
            // The first dot-suffix found is the longest, whose list already holds the
            // shorter suffixes' routes.
            for (dot, _) in host.match_indices('.') {
                if dot == 0 {
                    continue;
                }
                if let Some(list) = self.wildcard_suffixes.get(&host[dot + 1..]) {
                    return list;
                }
            }
        }
        &self.hostless
    }
}

/// The host of an authority: without userinfo, port, IPv6 brackets or a trailing dot.
/// Case is left alone.
fn normalise_host(authority: &str) -> &str {
    // One pass over the bytes: this runs for every request.
    let bytes = authority.as_bytes();
    let start = bytes
        .iter()
        .rposition(|&b| b == b'@')
        .map_or(0, |at| at + 1);
    let authority = &authority[start..];
    let bytes = authority.as_bytes();
    let host = if bytes.first() == Some(&b'[') {
        match bytes.iter().position(|&b| b == b']') {
            Some(end) => &authority[1..end],
            None => authority,
        }
    } else {
        let mut colons = bytes.iter().enumerate().filter(|(_, b)| **b == b':');
        match (colons.next(), colons.next()) {
            // host:port
            (Some((colon, _)), None) => &authority[..colon],
            // No port, or a bare IPv6 address (only a configuration would write one).
            _ => authority,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// One route's matchers other than the host (which the index has already applied).
#[derive(Debug)]
struct CompiledRoute {
    /// Matched against verified claims only.
    jwt_claims: Vec<(String, ValueMatcher)>,
    methods: Vec<String>,
    path: Option<PathMatcher>,
    headers: Vec<(HeaderName, ValueMatcher)>,
    cookies: Vec<(String, ValueMatcher)>,
    query: Vec<(String, ValueMatcher)>,
}

#[derive(Debug)]
enum PathMatcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

impl ValueMatcher {
    fn compile(route: usize, value: &ValueMatch) -> Result<ValueMatcher, RouterError> {
        Ok(match value {
            ValueMatch::Exact(exact) => ValueMatcher::Exact(exact.clone()),
            ValueMatch::Regex(pattern) => ValueMatcher::Regex(compile_regex(route, pattern)?),
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatcher::Exact(exact) => exact == value,
            ValueMatcher::Regex(regex) => regex.is_match(value),
        }
    }

    /// Header values are bytes; a value that is not UTF-8 can still equal an exact one
    /// byte for byte, but never matches a regex.
    fn matches_bytes(&self, value: &[u8]) -> bool {
        match self {
            ValueMatcher::Exact(exact) => exact.as_bytes() == value,
            ValueMatcher::Regex(regex) => {
                std::str::from_utf8(value).is_ok_and(|value| regex.is_match(value))
            }
        }
    }
}

fn compile_regex(route: usize, pattern: &str) -> Result<Regex, RouterError> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|source| RouterError::Regex {
            route,
            pattern: pattern.to_string(),
            source,
        })
}

impl CompiledRoute {
    fn compile(route: usize, matcher: &RouteMatch) -> Result<CompiledRoute, RouterError> {
        let path = match &matcher.path {
            None => None,
            Some(PathMatch::Exact(path)) => Some(PathMatcher::Exact(path.clone())),
            Some(PathMatch::Prefix(prefix)) => Some(PathMatcher::Prefix(prefix.clone())),
            Some(PathMatch::Regex(pattern)) => {
                Some(PathMatcher::Regex(compile_regex(route, pattern)?))
            }
        };
        let headers =
            matcher
                .headers
                .iter()
                .map(|(name, value)| {
                    let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|_| RouterError::HeaderName {
                            route,
                            name: name.clone(),
                        })?;
                    Ok((header, ValueMatcher::compile(route, value)?))
                })
                .collect::<Result<_, RouterError>>()?;
        let named = |list: &[(String, ValueMatch)]| {
            list.iter()
                .map(|(name, value)| Ok((name.clone(), ValueMatcher::compile(route, value)?)))
                .collect::<Result<Vec<_>, RouterError>>()
        };
        Ok(CompiledRoute {
            jwt_claims: named(&matcher.jwt_claims)?,
            methods: matcher.methods.clone(),
            path,
            headers,
            cookies: named(&matcher.cookies)?,
            query: named(&matcher.query)?,
        })
    }

    /// Whether every matcher holds, cheapest first; the claims (a signature check) last.
    fn matches(&self, index: usize, request: &RequestFacts<'_>) -> bool {
        if !self.matches_without_claims(request) {
            return false;
        }
        if self.jwt_claims.is_empty() {
            return true;
        }
        let Some(claims) = request.claims.and_then(|source| source.claims(index)) else {
            return false;
        };
        self.jwt_claims.iter().all(|(name, matcher)| {
            claim_text(claims, name).is_some_and(|value| matcher.matches(&value))
        })
    }

    /// Whether every matcher but `jwt_claims` holds.
    fn matches_without_claims(&self, request: &RequestFacts<'_>) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == request.method.as_str()) {
            return false;
        }
        let path_ok = match &self.path {
            None => true,
            Some(PathMatcher::Exact(path)) => request.path == path,
            Some(PathMatcher::Prefix(prefix)) => request.path.starts_with(prefix.as_str()),
            Some(PathMatcher::Regex(regex)) => regex.is_match(request.path),
        };
        if !path_ok {
            return false;
        }
        let headers_ok = self.headers.iter().all(|(name, matcher)| {
            request
                .headers
                .get_all(name)
                .iter()
                .any(|value| matcher.matches_bytes(value.as_bytes()))
        });
        if !headers_ok {
            return false;
        }
        let cookies_ok = self.cookies.iter().all(|(name, matcher)| {
            cookies(request.headers).any(|(n, value)| n == name && matcher.matches(value))
        });
        if !cookies_ok {
            return false;
        }
        self.query.iter().all(|(name, matcher)| {
            let query = request.query.unwrap_or("");
            query_pairs(query).any(|(n, value)| n == name.as_str() && matcher.matches(&value))
        })
    }
}

/// Every `name=value` pair of every `Cookie` header (`a=1; b=2`), trimmed, with a quoted
/// value unquoted. Pairs without `=` and non-UTF-8 headers are skipped.
pub fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let value = value.trim_matches([' ', '\t']);
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some((name.trim_matches([' ', '\t']), value))
        })
}

/// Every `name=value` pair of a query string, percent-decoded (`%XX`, and `+` as a space);
/// a parameter without `=` has the empty value. Empty pieces (`a=1&&b=2`) are skipped.
fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(name), percent_decode(value))
    })
}

/// Decodes `%XX` and `+`; borrows when there is nothing to decode. A `%` not followed by
/// two hex digits stays as written; bytes that do not form UTF-8 become U+FFFD.
pub fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let high = bytes.get(i + 1).and_then(|&b| hex_value(b));
                let low = bytes.get(i + 2).and_then(|&b| hex_value(b));
                if let (Some(high), Some(low)) = (high, low) {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            other => out.push(other),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// A weighted choice among branches (a route's `split`), drawn per request.
///
/// The caller supplies the random point, drawn uniformly from `0..total()`, so the choice
/// itself is deterministic and testable.
#[derive(Debug, Clone)]
pub struct Split<T> {
    /// Each branch with the running total of weights up to and including it.
    branches: Vec<(u64, T)>,
    total: u64,
}

impl<T> Split<T> {
    /// A split over `branches` (value, weight); `None` when there is no branch or every
    /// weight is 0. Branches of weight 0 are kept but never chosen.
    pub fn new(branches: Vec<(T, u32)>) -> Option<Self> {
        let mut total = 0u64;
        let branches: Vec<(u64, T)> = branches
            .into_iter()
            .map(|(target, weight)| {
                total += u64::from(weight);
                (total, target)
            })
            .collect();
        (total > 0).then_some(Split { branches, total })
    }

    /// The branch `point` falls in. `point` should lie in `0..total()`; a larger one is
    /// taken modulo the total rather than panicking.
    pub fn choose(&self, point: u64) -> &T {
        self.branch(self.index_of(point))
    }

    /// The index of the branch `point` falls in (same rule as [`Split::choose`]).
    pub fn index_of(&self, point: u64) -> usize {
        let point = point % self.total;
        // The first branch whose running total exceeds the point; one exists because
        // point < total, the last running total.
        let index = self.branches.partition_point(|&(end, _)| end <= point);
        index.min(self.branches.len() - 1)
    }

    /// The index of a branch chosen with `draw`, which gives a point in `0..total` (the
    /// total is its argument) and is not called when there is one branch to choose.
    pub fn pick_index(&self, draw: impl FnOnce(u64) -> u64) -> usize {
        if self.branches.len() == 1 {
            return 0;
        }
        self.index_of(draw(self.total))
    }

    /// The branch at `index` (clamped to the last).
    pub fn branch(&self, index: usize) -> &T {
        let index = index.min(self.branches.len() - 1);
        &self.branches[index].1
    }

    /// The sum of the weights: the caller draws points from `0..total()`.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn hosts(list: &[&str]) -> RouteMatch {
        RouteMatch {
            hosts: list.iter().map(|h| h.to_string()).collect(),
            ..RouteMatch::default()
        }
    }

    fn router(routes: &[RouteMatch]) -> Router<usize> {
        Router::build(routes.iter().enumerate().map(|(i, m)| (m, i)).collect()).unwrap()
    }

    /// A request: GET `target` (path and optional query) with these headers.
    struct Request {
        method: Method,
        authority: Option<String>,
        path: String,
        query: Option<String>,
        headers: HeaderMap,
    }

    impl Request {
        fn new(authority: Option<&str>, target: &str) -> Request {
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_string(), Some(q.to_string())),
                None => (target.to_string(), None),
            };
            Request {
                method: Method::GET,
                authority: authority.map(str::to_string),
                path,
                query,
                headers: HeaderMap::new(),
            }
        }

        fn host(authority: &str) -> Request {
            Request::new(Some(authority), "/")
        }

        fn method(mut self, method: Method) -> Request {
            self.method = method;
            self
        }

        fn header(mut self, name: &'static str, value: &str) -> Request {
            self.headers
                .append(name, HeaderValue::from_str(value).unwrap());
            self
        }

        fn facts(&self) -> RequestFacts<'_> {
            RequestFacts {
                method: &self.method,
                authority: self.authority.as_deref(),
                path: &self.path,
                query: self.query.as_deref(),
                headers: &self.headers,
                claims: None,
            }
        }
    }

    fn pick(router: &Router<usize>, request: &Request) -> Option<usize> {
        router.find(&request.facts()).copied()
    }

    #[test]
    fn hosts_lose_userinfo_port_brackets_and_a_trailing_dot() {
        for (authority, host) in [
            ("a.example", "a.example"),
            ("a.example:8080", "a.example"),
            ("user:pw@a.example:80", "a.example"),
            ("A.Example.", "A.Example"),
            ("a.example.:80", "a.example"),
            ("[::1]:8080", "::1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("[::1", "[::1"),
            ("", ""),
        ] {
            assert_eq!(normalise_host(authority), host, "{authority}");
        }
    }

    #[test]
    fn no_route_matching_gives_none() {
        let r = router(&[hosts(&["api.example.com"])]);
        assert_eq!(pick(&r, &Request::host("other.example.com")), None);
        assert_eq!(pick(&r, &Request::new(None, "/")), None);
        let empty = router(&[]);
        assert!(empty.is_empty());
        assert_eq!(pick(&empty, &Request::host("a")), None);
    }

    #[test]
    fn a_route_without_matchers_matches_every_request() {
        let r = router(&[RouteMatch::default()]);
        assert_eq!(pick(&r, &Request::host("anything.example")), Some(0));
        assert_eq!(pick(&r, &Request::new(None, "/x?y=1")), Some(0));
    }

    #[test]
    fn the_first_match_wins_when_two_routes_match() {
        let r = router(&[RouteMatch::default(), hosts(&["api.example.com"])]);
        assert_eq!(pick(&r, &Request::host("api.example.com")), Some(0));
        let r = router(&[hosts(&["api.example.com"]), RouteMatch::default()]);
        assert_eq!(pick(&r, &Request::host("api.example.com")), Some(0));
        assert_eq!(pick(&r, &Request::host("www.example.com")), Some(1));
    }

    #[test]
    fn find_and_find_index_agree_on_the_attached_value() {
        let routes = [hosts(&["a.test"]), hosts(&["b.test"])];
        let r = Router::build(vec![(&routes[0], "first"), (&routes[1], "second")]).unwrap();
        let request = Request::host("b.test");
        assert_eq!(r.find_index(&request.facts()), Some(1));
        assert_eq!(r.find(&request.facts()), Some(&"second"));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn exact_hosts_ignore_ascii_case_and_the_port() {
        let r = router(&[hosts(&["api.example.com"])]);
        assert_eq!(pick(&r, &Request::host("API.Example.COM:8080")), Some(0));
        assert_eq!(pick(&r, &Request::host("api.example.com")), Some(0));
        assert_eq!(pick(&r, &Request::host("api.example.com.")), Some(0));
        assert_eq!(pick(&r, &Request::host("api.example.com.:443")), Some(0));
        assert_eq!(pick(&r, &Request::host("api.example.co")), None);
    }

    #[test]
    fn an_ipv6_authority_matches_without_brackets_or_port() {
        let r = router(&[hosts(&["[::1]"]), hosts(&["2001:db8::1"])]);
        assert_eq!(pick(&r, &Request::host("[::1]:8080")), Some(0));
        assert_eq!(pick(&r, &Request::host("[::1]")), Some(0));
        assert_eq!(pick(&r, &Request::host("[2001:DB8::1]:443")), Some(1));
    }

    #[test]
    fn a_wildcard_host_matches_one_or_more_labels_but_not_the_bare_domain() {
        let r = router(&[hosts(&["*.example.com"])]);
        assert_eq!(pick(&r, &Request::host("a.example.com")), Some(0));
        assert_eq!(pick(&r, &Request::host("a.b.example.com")), Some(0));
        assert_eq!(pick(&r, &Request::host("A.B.Example.Com:80")), Some(0));
        assert_eq!(pick(&r, &Request::host("example.com")), None);
        assert_eq!(pick(&r, &Request::host(".example.com")), None);
        assert_eq!(pick(&r, &Request::host("badexample.com")), None);
    }

    #[test]
    fn wildcard_and_exact_ordering_follows_file_order_not_specificity() {
        let r = router(&[hosts(&["*.example.com"]), hosts(&["api.example.com"])]);
        assert_eq!(pick(&r, &Request::host("api.example.com")), Some(0));
        let r = router(&[hosts(&["api.example.com"]), hosts(&["*.example.com"])]);
        assert_eq!(pick(&r, &Request::host("api.example.com")), Some(0));
        assert_eq!(pick(&r, &Request::host("www.example.com")), Some(1));
    }

    #[test]
    fn nested_wildcards_all_apply_in_file_order() {
        let mut outer = hosts(&["*.example.com"]);
        outer.path = Some(PathMatch::Prefix("/outer".into()));
        let r = router(&[
            outer,
            hosts(&["*.b.example.com"]),
            hosts(&["*.example.com"]),
        ]);
        let request = Request::new(Some("a.b.example.com"), "/outer/x");
        assert_eq!(pick(&r, &request), Some(0));
        assert_eq!(pick(&r, &Request::host("a.b.example.com")), Some(1));
        assert_eq!(pick(&r, &Request::host("b.example.com")), Some(2));
        assert_eq!(pick(&r, &Request::host("c.example.com")), Some(2));
    }

    #[test]
    fn a_list_of_hosts_is_an_or() {
        let r = router(&[hosts(&["a.test", "*.b.test"])]);
        assert_eq!(pick(&r, &Request::host("a.test")), Some(0));
        assert_eq!(pick(&r, &Request::host("x.b.test")), Some(0));
        assert_eq!(pick(&r, &Request::host("c.test")), None);
    }

    #[test]
    fn a_regex_route_is_not_a_candidate_for_a_host_that_selects_other_routes() {
        let mut regex_route = hosts(&["slow.example.com"]);
        regex_route.path = Some(PathMatch::Regex("^/u/[0-9]+$".into()));
        let mut wildcard_regex = hosts(&["*.other.example"]);
        wildcard_regex.path = Some(PathMatch::Regex("^/w/".into()));
        let r = router(&[regex_route, wildcard_regex, hosts(&["api.example.com"])]);
        // By structure: the regex routes are not in the lists the request is checked against.
        assert_eq!(r.candidates(Some("api.example.com")), &[2]);
        assert_eq!(r.candidates(Some("API.example.com:1")), &[2]);
        assert_eq!(r.candidates(Some("nobody.example")), &[] as &[usize]);
        assert_eq!(r.candidates(Some("x.other.example")), &[1]);
        assert_eq!(r.candidates(None), &[] as &[usize]);
    }

    #[test]
    fn hostless_routes_are_merged_into_every_host_in_file_order() {
        let r = router(&[
            RouteMatch::default(),
            hosts(&["a.test"]),
            hosts(&["*.test"]),
            RouteMatch::default(),
        ]);
        assert_eq!(r.candidates(Some("a.test")), &[0, 1, 2, 3]);
        assert_eq!(r.candidates(Some("b.test")), &[0, 2, 3]);
        assert_eq!(r.candidates(Some("elsewhere")), &[0, 3]);
    }

    #[test]
    fn paths_match_exactly_by_prefix_or_by_regex_without_the_query() {
        let exact = RouteMatch {
            path: Some(PathMatch::Exact("/exact".into())),
            ..RouteMatch::default()
        };
        let prefix = RouteMatch {
            path: Some(PathMatch::Prefix("/v2/".into())),
            ..RouteMatch::default()
        };
        let regex = RouteMatch {
            path: Some(PathMatch::Regex("^/u/[0-9]+$".into())),
            ..RouteMatch::default()
        };
        let r = router(&[exact, prefix, regex]);
        assert_eq!(pick(&r, &Request::new(None, "/exact")), Some(0));
        assert_eq!(pick(&r, &Request::new(None, "/exact?x=1")), Some(0));
        assert_eq!(pick(&r, &Request::new(None, "/exact/")), None);
        assert_eq!(pick(&r, &Request::new(None, "/v2/users")), Some(1));
        assert_eq!(pick(&r, &Request::new(None, "/v2")), None);
        assert_eq!(pick(&r, &Request::new(None, "/u/42")), Some(2));
        assert_eq!(pick(&r, &Request::new(None, "/u/42?page=2")), Some(2));
        assert_eq!(pick(&r, &Request::new(None, "/u/4a")), None);
    }

    #[test]
    fn methods_match_exactly_and_a_list_is_an_or() {
        let m = RouteMatch {
            methods: vec!["GET".into(), "POST".into()],
            ..RouteMatch::default()
        };
        let r = router(&[m]);
        assert_eq!(pick(&r, &Request::host("a")), Some(0));
        assert_eq!(pick(&r, &Request::host("a").method(Method::POST)), Some(0));
        assert_eq!(pick(&r, &Request::host("a").method(Method::DELETE)), None);
        let lower = Method::from_bytes(b"get").unwrap();
        assert_eq!(pick(&r, &Request::host("a").method(lower)), None);
    }

    #[test]
    fn all_matchers_of_a_route_must_hold() {
        let mut m = hosts(&["api.example.com"]);
        m.path = Some(PathMatch::Prefix("/v2/".into()));
        m.methods = vec!["GET".into()];
        m.headers = vec![("x-canary".into(), ValueMatch::Exact("1".into()))];
        let r = router(&[m]);
        let good = Request::new(Some("api.example.com"), "/v2/x").header("x-canary", "1");
        assert_eq!(pick(&r, &good), Some(0));
        let wrong_path = Request::new(Some("api.example.com"), "/v1/x").header("x-canary", "1");
        assert_eq!(pick(&r, &wrong_path), None);
        let no_header = Request::new(Some("api.example.com"), "/v2/x");
        assert_eq!(pick(&r, &no_header), None);
        let wrong_method = Request::new(Some("api.example.com"), "/v2/x")
            .header("x-canary", "1")
            .method(Method::PUT);
        assert_eq!(pick(&r, &wrong_method), None);
    }

    #[test]
    fn header_values_match_case_sensitively_or_by_regex_on_any_repeated_value() {
        let exact = RouteMatch {
            headers: vec![("X-Canary".into(), ValueMatch::Exact("On".into()))],
            ..RouteMatch::default()
        };
        let regex = RouteMatch {
            headers: vec![("x-tier".into(), ValueMatch::Regex("^gold|platinum$".into()))],
            ..RouteMatch::default()
        };
        let r = router(&[exact, regex]);
        assert_eq!(
            pick(&r, &Request::host("a").header("x-canary", "On")),
            Some(0)
        );
        assert_eq!(pick(&r, &Request::host("a").header("x-canary", "on")), None);
        let repeated = Request::host("a")
            .header("x-canary", "off")
            .header("x-canary", "On");
        assert_eq!(pick(&r, &repeated), Some(0));
        assert_eq!(
            pick(&r, &Request::host("a").header("x-tier", "gold")),
            Some(1)
        );
        let repeated = Request::host("a")
            .header("x-tier", "bronze")
            .header("x-tier", "platinum");
        assert_eq!(pick(&r, &repeated), Some(1));
        assert_eq!(
            pick(&r, &Request::host("a").header("x-tier", "bronze")),
            None
        );
    }

    #[test]
    fn cookies_are_parsed_from_every_cookie_header() {
        let m = RouteMatch {
            cookies: vec![
                ("flag".into(), ValueMatch::Exact("on".into())),
                ("user".into(), ValueMatch::Regex("^u[0-9]+$".into())),
            ],
            ..RouteMatch::default()
        };
        let r = router(&[m]);
        let one_line = Request::host("a").header("cookie", "a=1; flag=on; user=u7");
        assert_eq!(pick(&r, &one_line), Some(0));
        let two_lines = Request::host("a")
            .header("cookie", "user=u7")
            .header("cookie", "x=2;flag=\"on\"");
        assert_eq!(pick(&r, &two_lines), Some(0));
        let wrong = Request::host("a").header("cookie", "flag=off; user=u7; flagged=on");
        assert_eq!(pick(&r, &wrong), None);
        let repeated = Request::host("a").header("cookie", "flag=off; flag=on; user=u1");
        assert_eq!(pick(&r, &repeated), Some(0));
        assert_eq!(pick(&r, &Request::host("a")), None);
    }

    #[test]
    fn query_parameters_are_percent_decoded_and_any_occurrence_may_match() {
        let m = RouteMatch {
            query: vec![
                ("debug".into(), ValueMatch::Exact("1".into())),
                ("q name".into(), ValueMatch::Exact("a b/c".into())),
            ],
            ..RouteMatch::default()
        };
        let r = router(&[m]);
        let plain = Request::new(None, "/?debug=1&q%20name=a+b%2Fc");
        assert_eq!(pick(&r, &plain), Some(0));
        let repeated = Request::new(None, "/?debug=0&q+name=a%20b/c&debug=1");
        assert_eq!(pick(&r, &repeated), Some(0));
        let missing = Request::new(None, "/?debug=1");
        assert_eq!(pick(&r, &missing), None);
        assert_eq!(pick(&r, &Request::new(None, "/")), None);
    }

    #[test]
    fn a_query_regex_sees_the_decoded_value_and_a_bare_name_has_an_empty_value() {
        let m = RouteMatch {
            query: vec![("v".into(), ValueMatch::Regex("^é$".into()))],
            ..RouteMatch::default()
        };
        let bare = RouteMatch {
            query: vec![("flag".into(), ValueMatch::Exact(String::new()))],
            ..RouteMatch::default()
        };
        let r = router(&[m, bare]);
        assert_eq!(pick(&r, &Request::new(None, "/?v=%C3%A9")), Some(0));
        assert_eq!(pick(&r, &Request::new(None, "/?a=1&&flag")), Some(1));
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes_and_borrows_plain_text() {
        assert!(matches!(percent_decode("plain"), Cow::Borrowed("plain")));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41+%62"), "A b");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
    }

    #[derive(Debug)]
    struct Verified(Option<Claims>);

    impl ClaimsSource for Verified {
        fn claims(&self, _route: usize) -> Option<&Claims> {
            self.0.as_ref()
        }
    }

    #[test]
    fn jwt_claims_match_verified_claims_only() {
        let jwt = RouteMatch {
            jwt_claims: vec![
                ("tier".into(), ValueMatch::Exact("gold".into())),
                ("level".into(), ValueMatch::Regex("^[5-9]$".into())),
            ],
            ..RouteMatch::default()
        };
        let r = router(&[jwt, RouteMatch::default()]);
        let request = Request::host("a");
        assert_eq!(
            pick(&r, &request),
            Some(1),
            "no claims: the route is skipped"
        );
        let claims = |v: serde_json::Value| Verified(v.as_object().cloned());
        let gold = claims(serde_json::json!({"tier": "gold", "level": 7}));
        let mut facts = request.facts();
        facts.claims = Some(&gold);
        assert_eq!(r.find_index(&facts), Some(0));
        let silver = claims(serde_json::json!({"tier": "silver", "level": 7}));
        facts.claims = Some(&silver);
        assert_eq!(r.find_index(&facts), Some(1));
        assert_eq!(r.jwt_refusal(&facts), Some(0));
    }

    #[test]
    fn an_invalid_regex_is_a_typed_error() {
        let m = RouteMatch {
            path: Some(PathMatch::Regex("(".into())),
            ..RouteMatch::default()
        };
        let err = Router::build(vec![(&m, ())]).unwrap_err();
        assert!(matches!(err, RouterError::Regex { route: 0, .. }), "{err}");
        let m = RouteMatch {
            headers: vec![("bad name".into(), ValueMatch::Exact("1".into()))],
            ..RouteMatch::default()
        };
        let err = Router::build(vec![(&m, ())]).unwrap_err();
        assert!(
            matches!(err, RouterError::HeaderName { route: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_split_picks_the_branch_each_point_falls_in() {
        let split = Split::new(vec![("a", 2), ("none", 0), ("b", 3)]).unwrap();
        assert_eq!(split.total(), 5);
        let picks: Vec<_> = (0..5).map(|p| *split.choose(p)).collect();
        assert_eq!(picks, ["a", "a", "b", "b", "b"]);
        assert_eq!(*split.choose(5), "a", "out of range points wrap");
    }

    #[test]
    fn a_split_draws_a_point_only_when_there_is_a_choice() {
        let single = Split::new(vec![("only", 7)]).unwrap();
        assert_eq!(single.pick_index(|_| panic!("no draw for one branch")), 0);
        let two = Split::new(vec![("a", 2), ("b", 3)]).unwrap();
        let mut asked = None;
        let index = two.pick_index(|total| {
            asked = Some(total);
            4
        });
        assert_eq!((asked, index), (Some(5), 1));
    }

    #[test]
    fn a_split_without_weight_is_none() {
        assert!(Split::<&str>::new(vec![]).is_none());
        assert!(Split::new(vec![("a", 0)]).is_none());
    }

    #[test]
    fn a_ninety_nine_to_one_split_sends_about_one_percent_to_the_small_branch() {
        let split = Split::new(vec![("big", 99), ("small", 1)]).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let small = (0..10_000)
            .filter(|_| *split.choose(rng.random_range(0..split.total())) == "small")
            .count();
        assert!((50..150).contains(&small), "{small}");
    }
}
