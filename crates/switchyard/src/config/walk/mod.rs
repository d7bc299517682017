//! The second stage: a hand-written walk over the spanned tree that checks every key and
//! value and builds the [`Config`] model with every SPEC 3.1 default applied.
//!
//! Serde derive would stop at the first mistake and lose positions; the walker instead
//! records an error (line, column, field path, "did you mean") and keeps going, so one
//! `switchyard check` shows every mistake. Getters return `None` after recording an error and
//! the caller substitutes a placeholder: the model built from a file with errors is thrown
//! away, never used. Cross-references (cluster names, listen conflicts, hash keys that need
//! HTTP) are checked once everything has been walked.
//!
//! One file per part of the schema: [`listener`], [`route`], [`cluster`], [`top`] (runtime,
//! admin, access log, defaults, rate limit, xdp); this file holds the shared getters.

mod cluster;
mod listener;
mod route;
mod top;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::ConfigError;
use super::model::{Config, HashKey, ValueMatch};
use super::raw::Positions;
use super::units;

/// A value of the spanned tree.
pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// A table being walked: its entries, where it starts, and its field path.
#[derive(Clone)]
pub(crate) struct Node<'a, 'i> {
    table: &'a DeTable<'i>,
    span: Range<usize>,
    path: String,
}

impl<'a, 'i> Node<'a, 'i> {
    /// The path of `key` inside this table.
    fn sub(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The raw value of `key`.
    fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.table.get(key)
    }

    /// The span of `key` itself (for errors about the key rather than its value).
    fn key_span(&self, key: &str) -> Range<usize> {
        self.table
            .get_key_value(key)
            .map(|(k, _)| k.span())
            .unwrap_or_else(|| self.span.clone())
    }

    /// Whether `key` is written.
    fn has(&self, key: &str) -> bool {
        self.table.get(key).is_some()
    }
}

/// `parent.key`, or `key` at the root.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= limit && *d < c.chars().count().max(1) && *c != word)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("did you mean {c:?}?"))
}

/// One entry of a string table: key, value, value span, field path.
type MapEntry<'a> = (String, &'a str, Range<usize>, String);

/// A reference to a cluster, checked once every cluster is known.
#[derive(Debug)]
pub(crate) struct ClusterRef {
    name: String,
    span: Range<usize>,
    path: String,
    /// Used by a listener that has no HTTP request to hash (tcp, udp, tls-passthrough).
    l4: bool,
}

/// An address something listens on, checked for conflicts once all are known.
#[derive(Debug)]
pub(crate) struct Bound {
    addr: SocketAddr,
    udp: bool,
    span: Range<usize>,
    path: String,
    what: String,
}

/// The walk's state: where errors go, and what is checked at the end.
pub(crate) struct Walker<'p> {
    pos: &'p Positions<'p>,
    base_dir: PathBuf,
    errors: Vec<ConfigError>,
    cluster_refs: Vec<ClusterRef>,
    bound: Vec<Bound>,
}

/// Walks the whole tree, returning the model and every error found (the model is only
/// meaningful when there are none).
pub(crate) fn walk(
    root: &Spanned<DeTable<'_>>,
    pos: &Positions<'_>,
    source: &Path,
) -> (Config, Vec<ConfigError>) {
    let base_dir = source
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut w = Walker {
        pos,
        base_dir,
        errors: Vec::new(),
        cluster_refs: Vec::new(),
        bound: Vec::new(),
    };
    let node = Node {
        table: root.get_ref(),
        span: root.span(),
        path: String::new(),
    };
    let config = top::walk_root(&mut w, &node, source);
    w.check_cluster_refs(&config);
    w.check_listen_conflicts();
    (config, w.errors)
}

impl Walker<'_> {
    /// Records an error at `span`.
    fn err(&mut self, span: &Range<usize>, path: &str, message: impl Into<String>) {
        self.err_hint(span, path, message, None);
    }

    /// Records an error with a hint.
    fn err_hint(
        &mut self,
        span: &Range<usize>,
        path: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let e = self.pos.error(span, path, message.into(), hint);
        self.errors.push(e);
    }

    /// Reports every key of `node` not in `allowed`, with a "did you mean".
    fn keys(&mut self, node: &Node<'_, '_>, allowed: &[&str]) {
        for (k, _) in node.table.iter() {
            let key = k.get_ref().as_ref();
            if !allowed.contains(&key) {
                let hint = did_you_mean(key, allowed.iter().copied());
                self.err_hint(
                    &k.span(),
                    &node.sub(key),
                    format!("unknown key {key:?}"),
                    hint,
                );
            }
        }
    }

    /// Reports that `key` is required.
    fn missing(&mut self, node: &Node<'_, '_>, key: &str) {
        let span = node.span.clone();
        self.err(
            &span,
            &node.sub(key),
            format!("missing required key {key:?}"),
        );
    }

    /// Reports a value of the wrong type.
    fn wrong_type(&mut self, v: &Value<'_>, path: &str, expected: &str) {
        let found = v.get_ref().type_str();
        self.err(
            &v.span(),
            path,
            format!("expected {expected}, found {found}"),
        );
    }

    /// The table `v`, or an error.
    fn as_node<'a, 'i>(&mut self, v: &'a Value<'i>, path: String) -> Option<Node<'a, 'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(Node {
                table: t,
                span: v.span(),
                path,
            }),
            _ => {
                self.wrong_type(v, &path, "a table");
                None
            }
        }
    }

    /// The sub-table `key`, if written.
    fn table<'a, 'i>(&mut self, node: &Node<'a, 'i>, key: &str) -> Option<Node<'a, 'i>> {
        let v = node.get(key)?;
        self.as_node(v, node.sub(key))
    }

    /// The array `key`, if written.
    fn array<'a, 'i>(&mut self, node: &Node<'a, 'i>, key: &str) -> Option<&'a [Value<'i>]> {
        let v = node.get(key)?;
        match v.get_ref() {
            DeValue::Array(a) => Some(a.as_ref()),
            _ => {
                self.wrong_type(v, &node.sub(key), "an array");
                None
            }
        }
    }

    /// The string `v`, or an error.
    fn as_str<'a>(&mut self, v: &'a Value<'_>, path: &str) -> Option<&'a str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.wrong_type(v, path, "a string");
                None
            }
        }
    }

    /// The string `key` with its span, if written.
    fn string<'a>(&mut self, node: &Node<'a, '_>, key: &str) -> Option<(&'a str, Range<usize>)> {
        let v = node.get(key)?;
        let s = self.as_str(v, &node.sub(key))?;
        Some((s, v.span()))
    }

    /// The string `key`, which must be written.
    fn req_string<'a>(
        &mut self,
        node: &Node<'a, '_>,
        key: &str,
    ) -> Option<(&'a str, Range<usize>)> {
        if !node.has(key) {
            self.missing(node, key);
            return None;
        }
        self.string(node, key)
    }

    /// The boolean `key`, if written.
    fn boolean(&mut self, node: &Node<'_, '_>, key: &str) -> Option<bool> {
        let v = node.get(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(v, &node.sub(key), "a boolean");
                None
            }
        }
    }

    /// The integer `v` within `lo..=hi`, or an error.
    fn as_int(&mut self, v: &Value<'_>, path: &str, lo: i64, hi: i64) -> Option<i64> {
        let DeValue::Integer(i) = v.get_ref() else {
            self.wrong_type(v, path, "an integer");
            return None;
        };
        let n = i64::from_str_radix(i.as_str(), i.radix()).ok();
        match n {
            Some(n) if (lo..=hi).contains(&n) => Some(n),
            _ => {
                let shown = i.to_string();
                let range = if hi == i64::from(u32::MAX) || hi == i64::MAX {
                    format!("at least {lo}")
                } else {
                    format!("{lo}-{hi}")
                };
                self.err(
                    &v.span(),
                    path,
                    format!("{shown} is out of range ({range})"),
                );
                None
            }
        }
    }

    /// The integer `key` within `lo..=hi`, as a `u32`, if written.
    fn u32_in(&mut self, node: &Node<'_, '_>, key: &str, lo: u32, hi: u32) -> Option<u32> {
        let v = node.get(key)?;
        let n = self.as_int(v, &node.sub(key), i64::from(lo), i64::from(hi))?;
        u32::try_from(n).ok()
    }

    /// The number (integer or float) `v`, or an error.
    fn as_number(&mut self, v: &Value<'_>, path: &str) -> Option<f64> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            _ => {
                self.wrong_type(v, path, "a number");
                return None;
            }
        };
        match n {
            Some(n) if n.is_finite() => Some(n),
            _ => {
                self.err(&v.span(), path, "expected a finite number");
                None
            }
        }
    }

    /// A number checked by `check` (a percentage, a ratio), if written.
    fn number_with(
        &mut self,
        node: &Node<'_, '_>,
        key: &str,
        check: fn(f64) -> Result<f64, units::UnitError>,
    ) -> Option<f64> {
        let v = node.get(key)?;
        let path = node.sub(key);
        let n = self.as_number(v, &path)?;
        self.unit(v, &path, check(n))
    }

    /// Records a unit error at `v`.
    fn unit<T>(&mut self, v: &Value<'_>, path: &str, r: Result<T, units::UnitError>) -> Option<T> {
        match r {
            Ok(t) => Some(t),
            Err(e) => {
                self.err_hint(&v.span(), path, e.message, e.hint);
                None
            }
        }
    }

    /// The duration `key`, if written.
    fn duration(&mut self, node: &Node<'_, '_>, key: &str) -> Option<Duration> {
        let v = node.get(key)?;
        let path = node.sub(key);
        let s = self.as_str(v, &path)?;
        self.unit(v, &path, units::parse_duration(s))
    }

    /// The duration `key`, which must be greater than 0; `default` when it is not written
    /// (or, after the error, when it is 0).
    fn positive_duration(&mut self, node: &Node<'_, '_>, key: &str, default: Duration) -> Duration {
        match self.duration(node, key) {
            Some(d) if d.is_zero() => {
                let span = node.get(key).map(toml::Spanned::span).unwrap_or_default();
                self.err(
                    &span,
                    &node.sub(key),
                    format!("{key} must be greater than 0"),
                );
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// The size `key` in bytes, if written.
    fn size(&mut self, node: &Node<'_, '_>, key: &str) -> Option<u64> {
        let v = node.get(key)?;
        let path = node.sub(key);
        let s = self.as_str(v, &path)?;
        self.unit(v, &path, units::parse_size(s))
    }

    /// The size `key`, which must fit a `u32` (HTTP/2 windows), if written.
    fn size_u32(&mut self, node: &Node<'_, '_>, key: &str, min: u64) -> Option<u32> {
        let n = self.size(node, key)?;
        match u32::try_from(n) {
            Ok(n) if u64::from(n) >= min => Some(n),
            _ => {
                let span = node.get(key).map(Spanned::span).unwrap_or_default();
                self.err(
                    &span,
                    &node.sub(key),
                    format!(
                        "{} is out of range ({}-{})",
                        units::format_size(n),
                        units::format_size(min),
                        units::format_size(u64::from(u32::MAX)),
                    ),
                );
                None
            }
        }
    }

    /// One of `words`, if written (with a "did you mean" otherwise).
    fn word<'w>(&mut self, node: &Node<'_, '_>, key: &str, words: &[&'w str]) -> Option<&'w str> {
        let v = node.get(key)?;
        let path = node.sub(key);
        let s = self.as_str(v, &path)?;
        self.as_word(s, &v.span(), &path, words)
    }

    /// `s` if it is one of `words`.
    fn as_word<'w>(
        &mut self,
        s: &str,
        span: &Range<usize>,
        path: &str,
        words: &[&'w str],
    ) -> Option<&'w str> {
        if let Some(w) = words.iter().find(|w| **w == s) {
            return Some(w);
        }
        let hint = did_you_mean(s, words.iter().copied()).or_else(|| {
            Some(format!(
                "one of {}",
                words
                    .iter()
                    .map(|w| format!("{w:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        });
        self.err_hint(span, path, format!("unknown value {s:?}"), hint);
        None
    }

    /// A list of strings `key`, if written.
    fn str_list<'a>(
        &mut self,
        node: &Node<'a, '_>,
        key: &str,
    ) -> Option<Vec<(&'a str, Range<usize>, String)>> {
        let items = self.array(node, key)?;
        let mut out = Vec::new();
        for (i, v) in items.iter().enumerate() {
            let path = format!("{}[{i}]", node.sub(key));
            if let Some(s) = self.as_str(v, &path) {
                out.push((s, v.span(), path));
            }
        }
        Some(out)
    }

    /// A table of string values `key` (`headers = { "x-canary" = "1" }`), in file order.
    fn str_map<'a>(&mut self, node: &Node<'a, '_>, key: &str) -> Option<Vec<MapEntry<'a>>> {
        let t = self.table(node, key)?;
        let mut entries: Vec<_> = t.table.iter().collect();
        entries.sort_by_key(|(_, v)| v.span().start);
        let mut out = Vec::new();
        for (k, v) in entries {
            let path = t.sub(k.get_ref());
            if let Some(s) = self.as_str(v, &path) {
                out.push((k.get_ref().to_string(), s, v.span(), path));
            }
        }
        Some(out)
    }

    /// A value matcher: `"/.../"` is a regex (checked to compile), anything else exact.
    fn value_match(&mut self, s: &str, span: &Range<usize>, path: &str) -> Option<ValueMatch> {
        if s.len() >= 2 && s.starts_with('/') && s.ends_with('/') {
            let re = &s[1..s.len() - 1];
            self.regex(re, span, path)?;
            Some(ValueMatch::Regex(re.to_string()))
        } else {
            Some(ValueMatch::Exact(s.to_string()))
        }
    }

    /// Checks that `re` compiles.
    fn regex(&mut self, re: &str, span: &Range<usize>, path: &str) -> Option<()> {
        match regex::RegexBuilder::new(re).size_limit(1 << 20).build() {
            Ok(_) => Some(()),
            Err(e) => {
                let msg = e.to_string();
                let last = msg.lines().last().unwrap_or("").trim().to_string();
                self.err(span, path, format!("invalid regex {re:?}: {last}"));
                None
            }
        }
    }

    /// A file path `key` resolved against the config file's folder, if written.
    fn file_path(&mut self, node: &Node<'_, '_>, key: &str) -> Option<(PathBuf, Range<usize>)> {
        let (s, span) = self.string(node, key)?;
        if s.is_empty() {
            self.err(&span, &node.sub(key), "a file path must not be empty");
            return None;
        }
        Some((self.base_dir.join(s), span))
    }

    /// Checks that `path` exists and holds at least one PEM certificate.
    fn pem_certs(&mut self, path: &Path, span: &Range<usize>, field: &str) -> bool {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let Some(bytes) = self.read(path, span, field) else {
            return false;
        };
        let mut n = 0;
        for item in CertificateDer::pem_slice_iter(&bytes) {
            match item {
                Ok(_) => n += 1,
                Err(e) => {
                    let msg = format!("{}: not a valid PEM certificate: {e}", path.display());
                    self.err(span, field, msg);
                    return false;
                }
            }
        }
        if n == 0 {
            let msg = format!("{}: no PEM certificate found", path.display());
            self.err(span, field, msg);
            return false;
        }
        true
    }

    /// Checks that `path` exists and holds a PEM private key.
    fn pem_key(&mut self, path: &Path, span: &Range<usize>, field: &str) -> bool {
        use rustls_pki_types::PrivateKeyDer;
        use rustls_pki_types::pem::PemObject;
        let Some(bytes) = self.read(path, span, field) else {
            return false;
        };
        match PrivateKeyDer::from_pem_slice(&bytes) {
            Ok(_) => true,
            Err(e) => {
                let msg = format!("{}: no valid PEM private key: {e}", path.display());
                self.err(span, field, msg);
                false
            }
        }
    }

    /// Checks that the key file `key` is the private key of the certificate in `cert`
    /// (both already read as PEM), reporting at the key.
    fn key_pair(&mut self, cert: &Path, key: &Path, span: &Range<usize>, field: &str) -> bool {
        match crate::tls::certs::load_pair(cert, key) {
            Ok(_) => true,
            Err(error) => {
                self.err(span, field, error.to_string());
                false
            }
        }
    }

    /// Reads a referenced file (capped at 16 MiB), or records why it cannot be.
    fn read(&mut self, path: &Path, span: &Range<usize>, field: &str) -> Option<Vec<u8>> {
        use std::io::Read;
        let result = std::fs::File::open(path).and_then(|f| {
            let mut buf = Vec::new();
            f.take(16 << 20).read_to_end(&mut buf)?;
            Ok(buf)
        });
        match result {
            Ok(b) => Some(b),
            Err(e) => {
                self.err(span, field, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    /// Checks that a file referenced by the config exists and is readable.
    fn file_exists(&mut self, path: &Path, span: &Range<usize>, field: &str) -> bool {
        self.read(path, span, field).is_some()
    }

    /// Reports names that appear twice (`what` = "listener", "endpoint", ...).
    fn unique(&mut self, names: &[(String, Range<usize>, String)], what: &str) {
        for (i, (name, span, path)) in names.iter().enumerate() {
            if let Some((_, first, _)) = names[..i].iter().find(|(n, _, _)| n == name) {
                let (line, _) = self.pos.line_col(first.start);
                self.err(
                    span,
                    path,
                    format!("duplicate {what} name {name:?} (first defined on line {line})"),
                );
            }
        }
    }

    /// Records a cluster reference for the final check.
    fn cluster_ref(&mut self, name: &str, span: Range<usize>, path: String, l4: bool) {
        self.cluster_refs.push(ClusterRef {
            name: name.to_string(),
            span,
            path,
            l4,
        });
    }

    /// Records a bound address for the final conflict check.
    fn bind(
        &mut self,
        addr: SocketAddr,
        udp: bool,
        span: Range<usize>,
        path: String,
        what: String,
    ) {
        self.bound.push(Bound {
            addr,
            udp,
            span,
            path,
            what,
        });
    }

    /// Every referenced cluster exists, and an L4 listener's cluster hashes on an L4 key.
    fn check_cluster_refs(&mut self, config: &Config) {
        let refs = std::mem::take(&mut self.cluster_refs);
        for r in refs {
            match config.cluster(&r.name) {
                None => {
                    let hint =
                        did_you_mean(&r.name, config.clusters.iter().map(|c| c.name.as_str()));
                    self.err_hint(
                        &r.span,
                        &r.path,
                        format!("unknown cluster {:?}", r.name),
                        hint,
                    );
                }
                Some(c) if r.l4 && c.balance.is_hash() && !c.hash_key.is_l4() => {
                    let key = match &c.hash_key {
                        HashKey::Header(h) => format!("header:{h}"),
                        HashKey::Cookie(h) => format!("cookie:{h}"),
                        HashKey::Jwt(h) => format!("jwt:{h}"),
                        _ => "path".to_string(),
                    };
                    self.err_hint(
                        &r.span,
                        &r.path,
                        format!(
                            "cluster {:?} hashes on {key:?}, which a tcp/udp/tls-passthrough listener does not have",
                            r.name
                        ),
                        Some("use hash_key = \"source-ip\" or \"5-tuple\"".into()),
                    );
                }
                Some(c) if r.l4 && c.tls.is_some() => {
                    self.err_hint(
                        &r.span,
                        &r.path,
                        format!(
                            "cluster {:?} re-encrypts ([cluster.tls]), which only HTTP listeners do; a tcp/udp/tls-passthrough listener relays bytes as they are",
                            r.name
                        ),
                        Some("use a cluster without [cluster.tls] here".into()),
                    );
                }
                Some(_) => {}
            }
        }
    }

    /// No two sockets of the same kind bind overlapping addresses (port 0 never conflicts).
    fn check_listen_conflicts(&mut self) {
        let bound = std::mem::take(&mut self.bound);
        for (i, b) in bound.iter().enumerate() {
            let clash = bound[..i].iter().find(|a| {
                a.udp == b.udp
                    && a.addr.port() != 0
                    && a.addr.port() == b.addr.port()
                    && (a.addr.ip() == b.addr.ip()
                        || (a.addr.ip().is_unspecified() && (a.addr.is_ipv6() || b.addr.is_ipv4()))
                        || (b.addr.ip().is_unspecified() && (b.addr.is_ipv6() || a.addr.is_ipv4())))
            });
            if let Some(a) = clash {
                let (line, _) = self.pos.line_col(a.span.start);
                self.err(
                    &b.span,
                    &b.path,
                    format!(
                        "address {} conflicts with {} {} (line {line})",
                        b.addr, a.what, a.addr
                    ),
                );
            }
        }
    }
}

/// Whether `n` is prime (trial division; `n` is at most a few million).
pub(crate) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// Whether `s` is a valid HTTP header / cookie name (an RFC 9110 token).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests;
