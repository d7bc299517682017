//! The gate: keys the schema defines but this build's runtime does not implement yet.
//!
//! A key that is accepted but silently ignored is a lie to the operator, so every such key
//! is rejected with `not implemented yet: <field path>` at the key's line. The walker still
//! validates these keys in full, so when a feature lands its issue only deletes lines from
//! [`NOT_IMPLEMENTED`] (or widens a rule in [`VALUE_RULES`]) and nothing else changes.
//!
//! Patterns are field paths with array indexes elided (`cluster[].health` matches
//! `cluster[3].health`); a pattern also covers everything below it. The gate runs on the raw
//! tree, i.e. on keys actually written, so the defaults the model fills in never trip it.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::ConfigError;
use super::raw::Positions;

/// Keys rejected as "not implemented yet" (indexes elided). Shrink this as features land.
pub const NOT_IMPLEMENTED: &[&str] = &[];

/// Keys whose only implemented values are listed (other valid values are rejected). A
/// word ending in `*` admits every value with that prefix (`header:*`).
pub const VALUE_RULES: &[(&str, &[&str])] = &[
    (
        "listener[].protocol",
        &["tcp", "udp", "tls-passthrough", "http", "https"],
    ),
    (
        "cluster[].hash_key",
        &[
            "source-ip",
            "5-tuple",
            "path",
            "header:*",
            "cookie:*",
            "jwt:*",
        ],
    ),
    ("cluster[].protocol", &["http1", "h2", "auto"]),
    (
        "listener[].route[].rate_limit.key",
        &["source-ip", "route", "header:*", "jwt:*"],
    ),
];

fn admits(allowed: &[&str], word: &str) -> bool {
    allowed.iter().any(|rule| match rule.strip_suffix('*') {
        Some(prefix) => word.starts_with(prefix),
        None => *rule == word,
    })
}

/// Every key of `root` this build does not implement, skipping fields the walker already
/// reported (a wrong value is reported once, not twice).
pub(crate) fn gate(
    root: &Spanned<DeTable<'_>>,
    pos: &Positions<'_>,
    already: &[ConfigError],
) -> Vec<ConfigError> {
    let mut out = Vec::new();
    visit(root.get_ref(), "", "", pos, &mut out);
    out.retain(|e| {
        !already.iter().any(|a| {
            a.path == e.path || a.path.starts_with(&format!("{}.", e.path)) && a.line == e.line
        })
    });
    out
}

fn visit(
    table: &DeTable<'_>,
    path: &str,
    pattern: &str,
    pos: &Positions<'_>,
    out: &mut Vec<ConfigError>,
) {
    for (k, v) in table.iter() {
        let key = k.get_ref().as_ref();
        let path = super::walk::join(path, key);
        let pattern = super::walk::join(pattern, key);
        if NOT_IMPLEMENTED.contains(&pattern.as_str()) {
            out.push(pos.error(
                &k.span(),
                &path,
                format!("not implemented yet: {path}"),
                None,
            ));
            continue;
        }
        if let Some((_, allowed)) = VALUE_RULES.iter().find(|(p, _)| *p == pattern) {
            let word = match v.get_ref() {
                DeValue::String(s) => Some((s.as_ref(), format!("{s:?}"))),
                DeValue::Boolean(true) => Some(("true", "true".to_owned())),
                DeValue::Boolean(false) => Some(("false", "false".to_owned())),
                _ => None,
            };
            if let Some((word, written)) = word {
                if !admits(allowed, word) {
                    out.push(pos.error(
                        &v.span(),
                        &path,
                        format!("not implemented yet: {path} = {written}"),
                        None,
                    ));
                }
            }
            continue;
        }
        match v.get_ref() {
            DeValue::Table(t) => visit(t, &path, &pattern, pos, out),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let DeValue::Table(t) = item.get_ref() {
                        visit(
                            t,
                            &format!("{path}[{i}]"),
                            &format!("{pattern}[]"),
                            pos,
                            out,
                        );
                    }
                }
            }
            _ => {}
        }
    }
}
