//! `[[listener.route]]`: matchers, the action (forward, redirect, direct response), timeouts,
//! retry, hedging, rate limiting, JWT auth and header edits, each with its SPEC 3.1 default.

use std::time::Duration;

use super::listener::walk_target;
use super::top::tables;
use super::{Node, Walker, is_token};
use crate::config::model::{
    Auth, DirectResponse, HeaderOps, Hedge, HedgeAfter, JwtAuth, PathMatch, RateLimit,
    RateLimitKey, Redirect, RetryOn, RetryPolicy, Rewrite, Route, RouteAction, RouteMatch, Target,
};
use crate::config::units;

const ROUTE_KEYS: &[&str] = &[
    "name",
    "match",
    "rewrite",
    "cluster",
    "split",
    "redirect",
    "direct_response",
    "timeout",
    "max_duration",
    "per_try_timeout",
    "retry",
    "hedge",
    "rate_limit",
    "auth",
    "request_headers",
    "response_headers",
];

const RETRY_WORDS: &[(&str, RetryOn)] = &[
    ("connect-failure", RetryOn::ConnectFailure),
    ("refused-stream", RetryOn::RefusedStream),
    ("reset", RetryOn::Reset),
    ("timeout", RetryOn::Timeout),
    ("gateway-error", RetryOn::GatewayError),
    ("5xx", RetryOn::Any5xx),
];

/// The default retry policy (SPEC 3.1): only requests that never reached an upstream.
pub(crate) fn default_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        on: vec![RetryOn::ConnectFailure, RetryOn::RefusedStream],
        backoff_base: Duration::from_millis(25),
        backoff_max: Duration::from_millis(250),
        buffer: 64 * 1024,
        budget: None,
        min_retries_per_second: None,
    }
}

/// A route with every default and the given action.
fn default_route(name: String, action: RouteAction) -> Route {
    let timeout = Duration::from_secs(15);
    Route {
        name,
        matcher: RouteMatch::default(),
        action,
        rewrite: None,
        timeout,
        max_duration: None,
        per_try_timeout: timeout,
        retry: default_retry(),
        hedge: None,
        rate_limit: None,
        auth: None,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    }
}

/// The catch-all route that `cluster =` / `split =` on an http listener stands for.
pub(super) fn catch_all(listener: &str, target: Target) -> Route {
    default_route(format!("{listener}#0"), RouteAction::Forward(target))
}

/// Walks a listener's `[[listener.route]]` tables.
pub(super) fn walk_routes(w: &mut Walker<'_>, n: &Node<'_, '_>, listener: &str) -> Vec<Route> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    for (i, r) in tables(w, n, "route").into_iter().enumerate() {
        let route = walk_route(w, &r, format!("{listener}#{i}"));
        let span = r
            .get("name")
            .map(toml::Spanned::span)
            .unwrap_or(r.span.clone());
        names.push((route.name.clone(), span, r.sub("name")));
        out.push(route);
    }
    w.unique(&names, "route");
    out
}

fn walk_route(w: &mut Walker<'_>, r: &Node<'_, '_>, default_name: String) -> Route {
    w.keys(r, ROUTE_KEYS);
    let name = match w.string(r, "name") {
        Some(("", span)) => {
            w.err(&span, &r.sub("name"), "a route name must not be empty");
            default_name
        }
        Some((s, _)) => s.to_string(),
        None => default_name,
    };
    let actions: Vec<&str> = ["cluster", "split", "redirect", "direct_response"]
        .into_iter()
        .filter(|k| r.has(k))
        .collect();
    let mut action = RouteAction::Forward(Target::Cluster(String::new()));
    match actions.as_slice() {
        [] => w.err_hint(
            &r.span.clone(),
            &r.path,
            "a route needs an action",
            Some("one of cluster, split, redirect, direct_response".into()),
        ),
        [_] | ["cluster", "split"] => {
            if let Some(t) = walk_target(w, r, false) {
                action = RouteAction::Forward(t);
            } else if let Some(red) = walk_redirect(w, r) {
                action = RouteAction::Redirect(red);
            } else if let Some(d) = walk_direct(w, r) {
                action = RouteAction::DirectResponse(d);
            }
        }
        [first, second, ..] => {
            let span = r.key_span(second);
            w.err(
                &span,
                &r.sub(second),
                format!("`{first}` and `{second}` are mutually exclusive (one action per route)"),
            );
        }
    }
    let mut route = default_route(name, action);
    if let Some(m) = w.table(r, "match") {
        route.matcher = walk_match(w, &m);
    }
    if let Some(t) = w.table(r, "rewrite") {
        w.keys(&t, &["path_prefix", "host"]);
        let path_prefix = w.string(&t, "path_prefix").map(|(s, _)| s.to_string());
        if path_prefix.is_some() && !matches!(route.matcher.path, Some(PathMatch::Prefix(_))) {
            let span = t.key_span("path_prefix");
            w.err(
                &span,
                &t.sub("path_prefix"),
                "rewrite.path_prefix needs match.path_prefix",
            );
        }
        let host = w.string(&t, "host").map(|(s, _)| s.to_string());
        route.rewrite = Some(Rewrite { path_prefix, host });
    }
    if let Some(t) = w.duration(r, "timeout") {
        route.timeout = t;
    }
    route.per_try_timeout = w.duration(r, "per_try_timeout").unwrap_or(route.timeout);
    route.max_duration = w.duration(r, "max_duration").filter(|d| !d.is_zero());
    if let Some(t) = w.table(r, "retry") {
        route.retry = walk_retry(w, &t);
    }
    if let Some(t) = w.table(r, "hedge") {
        route.hedge = walk_hedge(w, &t);
    }
    if let Some(t) = w.table(r, "rate_limit") {
        route.rate_limit = walk_rate_limit(w, &t);
    }
    if let Some(t) = w.table(r, "auth") {
        route.auth = walk_auth(w, &t);
    }
    if let Some(t) = w.table(r, "request_headers") {
        route.request_headers = walk_header_ops(w, &t);
    }
    if let Some(t) = w.table(r, "response_headers") {
        route.response_headers = walk_header_ops(w, &t);
    }
    route
}

fn walk_match(w: &mut Walker<'_>, m: &Node<'_, '_>) -> RouteMatch {
    w.keys(
        m,
        &[
            "host",
            "path",
            "path_prefix",
            "path_regex",
            "methods",
            "headers",
            "cookies",
            "query",
            "jwt_claims",
        ],
    );
    let mut out = RouteMatch::default();
    if let Some(v) = m.get("host") {
        let path = m.sub("host");
        let hosts: Vec<_> = if v.get_ref().is_str() {
            w.string(m, "host")
                .map(|(s, span)| vec![(s, span, path.clone())])
                .unwrap_or_default()
        } else {
            w.str_list(m, "host").unwrap_or_default()
        };
        for (h, span, p) in hosts {
            let lower = h.to_ascii_lowercase();
            let name = lower.strip_prefix("*.").unwrap_or(&lower);
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            {
                w.err(&span, &p, format!("invalid host {h:?}"));
            } else {
                out.hosts.push(lower);
            }
        }
    }
    let paths: Vec<&str> = ["path", "path_prefix", "path_regex"]
        .into_iter()
        .filter(|k| m.has(k))
        .collect();
    if paths.len() > 1 {
        let span = m.key_span(paths[1]);
        w.err(
            &span,
            &m.sub(paths[1]),
            format!("`{}` and `{}` are mutually exclusive", paths[0], paths[1]),
        );
    } else if let Some(key) = paths.first() {
        if let Some((s, span)) = w.string(m, key) {
            let p = m.sub(key);
            out.path = match *key {
                "path_regex" => w
                    .regex(s, &span, &p)
                    .map(|()| PathMatch::Regex(s.to_string())),
                _ if !s.starts_with('/') => {
                    w.err(&span, &p, format!("a path must start with '/': {s:?}"));
                    None
                }
                "path" => Some(PathMatch::Exact(s.to_string())),
                _ => Some(PathMatch::Prefix(s.to_string())),
            };
        }
    }
    if let Some(list) = w.str_list(m, "methods") {
        for (s, span, p) in list {
            if is_token(s) {
                out.methods.push(s.to_ascii_uppercase());
            } else {
                w.err(&span, &p, format!("invalid method {s:?}"));
            }
        }
    }
    for (key, lower) in [
        ("headers", true),
        ("cookies", false),
        ("query", false),
        ("jwt_claims", false),
    ] {
        let Some(entries) = w.str_map(m, key) else {
            continue;
        };
        let mut list = Vec::new();
        for (k, v, span, p) in entries {
            if key != "query" && key != "jwt_claims" && !is_token(&k) {
                w.err(&span, &p, format!("invalid name {k:?}"));
                continue;
            }
            if let Some(vm) = w.value_match(v, &span, &p) {
                list.push((if lower { k.to_ascii_lowercase() } else { k }, vm));
            }
        }
        match key {
            "headers" => out.headers = list,
            "cookies" => out.cookies = list,
            "query" => out.query = list,
            _ => out.jwt_claims = list,
        }
    }
    out
}

fn walk_redirect(w: &mut Walker<'_>, r: &Node<'_, '_>) -> Option<Redirect> {
    let t = w.table(r, "redirect")?;
    w.keys(&t, &["scheme", "host", "path", "code"]);
    let scheme = w.word(&t, "scheme", &["http", "https"]).map(str::to_string);
    let host = w.string(&t, "host").map(|(s, _)| s.to_string());
    let path = match w.string(&t, "path") {
        Some((s, span)) if !s.starts_with('/') => {
            w.err(
                &span,
                &t.sub("path"),
                format!("a path must start with '/': {s:?}"),
            );
            None
        }
        other => other.map(|(s, _)| s.to_string()),
    };
    let code = match t.get("code") {
        Some(v) => {
            let p = t.sub("code");
            match w.as_int(v, &p, 0, 999) {
                Some(c @ (301 | 302 | 303 | 307 | 308)) => c as u16,
                Some(c) => {
                    w.err(
                        &v.span(),
                        &p,
                        format!("redirect code {c} must be 301, 302, 303, 307 or 308"),
                    );
                    301
                }
                None => 301,
            }
        }
        None => 301,
    };
    Some(Redirect {
        scheme,
        host,
        path,
        code,
    })
}

fn walk_direct(w: &mut Walker<'_>, r: &Node<'_, '_>) -> Option<DirectResponse> {
    let t = w.table(r, "direct_response")?;
    w.keys(&t, &["status", "body"]);
    if !t.has("status") {
        w.missing(&t, "status");
    }
    let status = w.u32_in(&t, "status", 100, 599).unwrap_or(200) as u16;
    let body = w
        .string(&t, "body")
        .map(|(s, _)| s.to_string())
        .unwrap_or_default();
    Some(DirectResponse { status, body })
}

fn walk_retry(w: &mut Walker<'_>, t: &Node<'_, '_>) -> RetryPolicy {
    w.keys(
        t,
        &[
            "attempts",
            "on",
            "backoff_base",
            "backoff_max",
            "buffer",
            "budget",
            "min_retries_per_second",
        ],
    );
    let mut p = default_retry();
    if let Some(a) = w.u32_in(t, "attempts", 1, 100) {
        p.attempts = a;
    }
    if let Some(items) = w.array(t, "on") {
        let base = t.sub("on");
        p.on.clear();
        for (i, v) in items.iter().enumerate() {
            let path = format!("{base}[{i}]");
            let status = match v.get_ref() {
                toml::de::DeValue::Integer(_) => w.as_int(v, &path, 100, 599),
                toml::de::DeValue::String(s)
                    if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    let n: i64 = s.parse().unwrap_or(0);
                    if (100..=599).contains(&n) {
                        Some(n)
                    } else {
                        w.err(
                            &v.span(),
                            &path,
                            format!("status {n} is out of range (100-599)"),
                        );
                        None
                    }
                }
                toml::de::DeValue::String(s) => {
                    let words: Vec<&str> = RETRY_WORDS.iter().map(|(w, _)| *w).collect();
                    if let Some(word) = w.as_word(s, &v.span(), &path, &words) {
                        if let Some((_, on)) = RETRY_WORDS.iter().find(|(w, _)| *w == word) {
                            p.on.push(*on);
                        }
                    }
                    None
                }
                _ => {
                    w.wrong_type(v, &path, "a retry condition");
                    None
                }
            };
            if let Some(s) = status {
                p.on.push(RetryOn::Status(s as u16));
            }
        }
    }
    if let Some(d) = w.duration(t, "backoff_base") {
        p.backoff_base = d;
    }
    if let Some(d) = w.duration(t, "backoff_max") {
        p.backoff_max = d;
    }
    if p.backoff_max < p.backoff_base {
        let span = t
            .get("backoff_max")
            .or(t.get("backoff_base"))
            .map(toml::Spanned::span)
            .unwrap_or_default();
        w.err(
            &span,
            &t.sub("backoff_max"),
            "backoff_max must be at least backoff_base",
        );
    }
    if let Some(b) = w.size(t, "buffer") {
        p.buffer = b;
    }
    p.budget = w.number_with(t, "budget", units::check_ratio);
    p.min_retries_per_second = w.u32_in(t, "min_retries_per_second", 0, u32::MAX);
    p
}

fn walk_hedge(w: &mut Walker<'_>, t: &Node<'_, '_>) -> Option<Hedge> {
    w.keys(t, &["after", "max_extra"]);
    let max_extra = w.u32_in(t, "max_extra", 1, 10).unwrap_or(1);
    let (s, span) = w.req_string(t, "after")?;
    let path = t.sub("after");
    let after = if let Some(p) = s.strip_prefix('p') {
        match p.parse::<u8>() {
            Ok(n) if (1..=99).contains(&n) && !p.starts_with('+') => HedgeAfter::Percentile(n),
            _ => {
                w.err_hint(
                    &span,
                    &path,
                    format!("invalid percentile {s:?}"),
                    Some("p1 to p99, for example \"p95\"".into()),
                );
                return None;
            }
        }
    } else {
        match units::parse_duration(s) {
            Ok(d) => HedgeAfter::Delay(d),
            Err(e) => {
                w.err_hint(
                    &span,
                    &path,
                    e.message,
                    Some("a duration like \"50ms\" or a percentile like \"p95\"".into()),
                );
                return None;
            }
        }
    };
    Some(Hedge { after, max_extra })
}

fn walk_rate_limit(w: &mut Walker<'_>, t: &Node<'_, '_>) -> Option<RateLimit> {
    w.keys(t, &["key", "rate", "per", "burst"]);
    if !t.has("rate") {
        w.missing(t, "rate");
    }
    let rate = w.u32_in(t, "rate", 1, u32::MAX);
    let per = match w.duration(t, "per") {
        Some(d) if d.is_zero() => {
            let span = t.get("per").map(toml::Spanned::span).unwrap_or_default();
            w.err(&span, &t.sub("per"), "per must be greater than 0");
            None
        }
        Some(d) => Some(d),
        None if t.has("per") => None,
        None => Some(Duration::from_secs(1)),
    };
    let burst = w.u32_in(t, "burst", 1, u32::MAX);
    let (k, span) = w.req_string(t, "key")?;
    let path = t.sub("key");
    let key = match k {
        "source-ip" => RateLimitKey::SourceIp,
        "route" => RateLimitKey::Route,
        _ => {
            if let Some(h) = k.strip_prefix("header:").filter(|h| is_token(h)) {
                RateLimitKey::Header(h.to_ascii_lowercase())
            } else if let Some(c) = k.strip_prefix("jwt:").filter(|c| !c.is_empty()) {
                RateLimitKey::Jwt(c.to_string())
            } else {
                let hint = super::did_you_mean(k, ["source-ip", "route", "header:", "jwt:"])
                    .or_else(|| Some("one of source-ip, header:NAME, jwt:CLAIM, route".into()));
                w.err_hint(&span, &path, format!("invalid rate-limit key {k:?}"), hint);
                return None;
            }
        }
    };
    let rate = rate?;
    Some(RateLimit {
        key,
        rate,
        per: per?,
        burst: burst.unwrap_or(rate),
    })
}

fn walk_auth(w: &mut Walker<'_>, t: &Node<'_, '_>) -> Option<Auth> {
    w.keys(t, &["jwt"]);
    if !t.has("jwt") {
        w.missing(t, "jwt");
    }
    let j = w.table(t, "jwt")?;
    w.keys(&j, &["issuer", "audiences", "jwks_file"]);
    let issuer = w.req_string(&j, "issuer").map(|(s, _)| s.to_string());
    let audiences = w
        .str_list(&j, "audiences")
        .map(|l| l.into_iter().map(|(s, _, _)| s.to_string()).collect())
        .unwrap_or_default();
    if !j.has("jwks_file") {
        w.missing(&j, "jwks_file");
    }
    let jwks = w
        .file_path(&j, "jwks_file")
        .filter(|(p, span)| w.file_exists(p, span, &j.sub("jwks_file")));
    Some(Auth {
        jwt: JwtAuth {
            issuer: issuer?,
            audiences,
            jwks_file: jwks?.0,
        },
    })
}

fn walk_header_ops(w: &mut Walker<'_>, t: &Node<'_, '_>) -> HeaderOps {
    w.keys(t, &["add", "set", "remove"]);
    let mut ops = HeaderOps::default();
    for key in ["add", "set"] {
        let Some(entries) = w.str_map(t, key) else {
            continue;
        };
        let mut list = Vec::new();
        for (k, v, span, p) in entries {
            if !is_token(&k) {
                w.err(&span, &p, format!("invalid header name {k:?}"));
            } else if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                w.err(&span, &p, "a header value must not contain CR, LF or NUL");
            } else {
                list.push((k.to_ascii_lowercase(), v.to_string()));
            }
        }
        if key == "add" {
            ops.add = list;
        } else {
            ops.set = list;
        }
    }
    if let Some(list) = w.str_list(t, "remove") {
        for (s, span, p) in list {
            if is_token(s) {
                ops.remove.push(s.to_ascii_lowercase());
            } else {
                w.err(&span, &p, format!("invalid header name {s:?}"));
            }
        }
    }
    ops
}
