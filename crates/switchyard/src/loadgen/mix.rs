//! The request mix: which method and path each request uses, by weight.
//!
//! Real traffic is not one URL. A mix entry is a method, a path, a weight and an optional
//! body size; a seeded draw picks one per request, so a run with the same seed sends the
//! same sequence.

use std::fmt;

/// One kind of request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixEntry {
    /// HTTP method.
    pub method: http::Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Relative weight (at least 1).
    pub weight: u32,
    /// Request body bytes (0 = no body).
    pub body: usize,
}

impl MixEntry {
    /// `GET path` with weight 1.
    pub fn get(path: &str) -> Self {
        Self {
            method: http::Method::GET,
            path: path.to_owned(),
            weight: 1,
            body: 0,
        }
    }

    /// Parses `METHOD PATH [WEIGHT] [BODY]`, e.g. `"POST /echo 1 1KiB"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return Err(format!(
                "mix entry {s:?}: expected \"METHOD PATH [WEIGHT] [BODY]\""
            ));
        };
        let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("mix entry {s:?}: bad method {method:?}"))?;
        if !path.starts_with('/') {
            return Err(format!("mix entry {s:?}: the path must start with /"));
        }
        let weight = match parts.next() {
            None => 1,
            Some(w) => w.parse::<u32>().ok().filter(|w| *w > 0).ok_or_else(|| {
                format!("mix entry {s:?}: weight {w:?} is not a whole number above 0")
            })?,
        };
        let body = match parts.next() {
            None => 0,
            Some(b) => crate::config::units::parse_size(b)
                .ok()
                .or_else(|| b.parse().ok())
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("mix entry {s:?}: body size {b:?} (bytes, or like 1KiB)"))?,
        };
        if parts.next().is_some() {
            return Err(format!("mix entry {s:?}: too many fields"));
        }
        Ok(Self {
            method,
            path: path.to_owned(),
            weight,
            body,
        })
    }
}

impl fmt::Display for MixEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.method, self.path, self.weight)?;
        if self.body > 0 {
            write!(f, " {}B", self.body)?;
        }
        Ok(())
    }
}

/// A weighted set of requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    entries: Vec<MixEntry>,
    /// Running sums of the weights, for the draw.
    cumulative: Vec<u64>,
}

impl Mix {
    /// A mix of `entries` (at least one).
    pub fn new(entries: Vec<MixEntry>) -> Option<Self> {
        if entries.is_empty() || entries.iter().any(|e| e.weight == 0) {
            return None;
        }
        let mut sum = 0u64;
        let cumulative = entries
            .iter()
            .map(|e| {
                sum += u64::from(e.weight);
                sum
            })
            .collect();
        Some(Self {
            entries,
            cumulative,
        })
    }

    /// The entries.
    pub fn entries(&self) -> &[MixEntry] {
        &self.entries
    }

    /// The sum of the weights.
    pub fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(1)
    }

    /// The entry for a uniform draw `r` (any u64; reduced modulo the total weight).
    pub fn pick(&self, r: u64) -> &MixEntry {
        let point = r % self.total_weight();
        let i = self.cumulative.partition_point(|&c| c <= point);
        &self.entries[i.min(self.entries.len() - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_defaults() {
        assert_eq!(MixEntry::parse("GET /").expect("ok"), MixEntry::get("/"));
        let e = MixEntry::parse("post /echo 3 1KiB").expect("ok");
        assert_eq!(e.method, http::Method::POST);
        assert_eq!((e.path.as_str(), e.weight, e.body), ("/echo", 3, 1024));
        assert!(MixEntry::parse("GET").is_err());
        assert!(MixEntry::parse("GET x").is_err());
        assert!(MixEntry::parse("GET / 0").is_err());
        assert!(MixEntry::parse("GET / 1 2 3").is_err());
    }

    #[test]
    fn draws_follow_the_weights_exactly() {
        let mix = Mix::new(vec![
            MixEntry::parse("GET /a 3").expect("ok"),
            MixEntry::parse("GET /b 1").expect("ok"),
        ])
        .expect("valid");
        let picks: Vec<&str> = (0..8).map(|r| mix.pick(r).path.as_str()).collect();
        assert_eq!(picks, ["/a", "/a", "/a", "/b", "/a", "/a", "/a", "/b"]);
        assert!(Mix::new(Vec::new()).is_none());
    }
}
