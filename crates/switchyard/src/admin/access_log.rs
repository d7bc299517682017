//! The access log (SPEC section 7): one JSON object per line, written off the request path.
//!
//! Connections hand finished lines to a bounded queue; one writer task drains it into
//! stdout or a file. A full queue never blocks a connection: the line is dropped and
//! counted in `access_log_dropped_total`. SIGUSR1 makes the writer reopen its file, so
//! logrotate can move the old one away.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::warn;

use super::metrics::{self, Counter, Registry};
use crate::config::model::{self, LogTarget};

/// Lines buffered between connections and the writer.
pub const QUEUE_LINES: usize = 8192;

/// The sending side every listener holds.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<String>>,
    dropped: Counter,
}

/// One L4 connection or UDP flow, as SPEC section 7 lists its keys.
#[derive(Debug, Serialize)]
pub struct L4Line<'a> {
    /// The listener's name.
    pub listener: &'a str,
    /// The cluster chosen, if any.
    pub cluster: Option<&'a str>,
    /// The endpoint connected to, if any.
    pub endpoint: Option<&'a str>,
    /// `tcp`, `udp` or `tls-passthrough`.
    pub protocol: &'a str,
    /// The resolved client `ip:port`.
    pub client: String,
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
    /// Connection lifetime in milliseconds.
    pub duration_ms: f64,
    /// Why it ended.
    pub close_reason: &'a str,
}

/// One HTTP request, as SPEC section 7 lists its keys (every key always present).
#[derive(Debug, Serialize)]
pub struct HttpLine<'a> {
    /// The listener's name.
    pub listener: &'a str,
    /// The route matched, if any.
    pub route: Option<&'a str>,
    /// The cluster chosen, if any.
    pub cluster: Option<&'a str>,
    /// The endpoint of the last attempt, if any.
    pub endpoint: Option<&'a str>,
    /// The request method.
    pub method: &'a str,
    /// The authority the client asked for.
    pub authority: Option<&'a str>,
    /// The path (the query only with `include_query`).
    pub path: &'a str,
    /// The status sent (0 if none was).
    pub status: u16,
    /// `upstream` or `proxy`.
    pub origin: &'a str,
    /// The `Proxy-Status` error token of a proxy-made answer.
    pub proxy_status: Option<&'a str>,
    /// Upstream attempts made.
    pub attempts: u32,
    /// Request body bytes from the client.
    pub bytes_in: u64,
    /// Response body bytes to the client.
    pub bytes_out: u64,
    /// From the request head to the end of the response, in milliseconds.
    pub duration_ms: f64,
    /// Time waiting on upstreams, in milliseconds.
    pub upstream_duration_ms: Option<f64>,
    /// The request id in force.
    pub request_id: Option<&'a str>,
    /// The resolved client `ip:port`.
    pub client: String,
    /// The negotiated TLS version (https listeners).
    pub tls_version: Option<&'a str>,
    /// The negotiated cipher suite (https listeners).
    pub tls_cipher: Option<&'a str>,
    /// The server name the client sent (https listeners).
    pub sni: Option<&'a str>,
    /// The gRPC status, for gRPC requests.
    pub grpc_status: Option<u32>,
}

#[derive(Serialize)]
struct Stamped<'a, T: Serialize> {
    time: String,
    #[serde(flatten)]
    line: &'a T,
}

impl AccessLog {
    /// A log that writes nothing (`enabled = false`).
    pub fn disabled(registry: &Registry) -> AccessLog {
        AccessLog {
            tx: None,
            dropped: registry.counter(&metrics::ACCESS_LOG_DROPPED_TOTAL, &[]),
        }
    }

    /// Starts the writer task for `config` on the current runtime.
    pub fn start(config: &model::AccessLog, registry: &Registry) -> std::io::Result<AccessLog> {
        let disabled = AccessLog::disabled(registry);
        if !config.enabled {
            return Ok(disabled);
        }
        let sink = Sink::open(&config.path)?;
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        tokio::spawn(write_lines(rx, sink));
        Ok(AccessLog {
            tx: Some(tx),
            dropped: disabled.dropped,
        })
    }

    /// Whether lines are written at all (callers skip building them otherwise).
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `line` with the current time; drops and counts it when the queue is full.
    pub fn log<T: Serialize>(&self, line: &T) {
        let Some(tx) = &self.tx else { return };
        let stamped = Stamped {
            time: rfc3339_millis(SystemTime::now()),
            line,
        };
        let Ok(text) = serde_json::to_string(&stamped) else {
            return;
        };
        if tx.try_send(text).is_err() {
            self.dropped.inc();
        }
    }
}

enum Sink {
    Stdout,
    File(PathBuf, std::io::BufWriter<std::fs::File>),
}

impl Sink {
    fn open(target: &LogTarget) -> std::io::Result<Sink> {
        Ok(match target {
            LogTarget::Stdout => Sink::Stdout,
            LogTarget::File(path) => Sink::File(path.clone(), open_append(path)?),
        })
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")
            }
            Sink::File(_, file) => {
                file.write_all(line.as_bytes())?;
                file.write_all(b"\n")
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout => std::io::stdout().flush(),
            Sink::File(_, file) => file.flush(),
        }
    }

    fn reopen(&mut self) {
        if let Sink::File(path, file) = self {
            let _ = file.flush();
            match open_append(path) {
                Ok(reopened) => *file = reopened,
                Err(error) => warn!(path = %path.display(), %error, "cannot reopen the access log"),
            }
        }
    }
}

fn open_append(path: &PathBuf) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(std::io::BufWriter::new(file))
}

async fn write_lines(mut rx: mpsc::Receiver<String>, mut sink: Sink) {
    let mut reopen =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    loop {
        let line = tokio::select! {
            line = rx.recv() => line,
            Some(()) = async { match reopen.as_mut() { Some(s) => s.recv().await, None => None } } => {
                sink.reopen();
                continue;
            }
        };
        let Some(line) = line else { break };
        // Writing happens on a blocking-tolerant path: lines are small and the queue
        // absorbs bursts; a slow disk shows up as dropped lines, never as slow requests.
        if let Err(error) = sink.write(&line) {
            warn!(%error, "access log write failed");
        }
        while let Ok(more) = rx.try_recv() {
            let _ = sink.write(&more);
        }
        let _ = sink.flush();
    }
    let _ = sink.flush();
}

/// `time` of SPEC section 7: RFC 3339, UTC, milliseconds (`2026-12-01T21:29:46.123Z`).
pub fn rfc3339_millis(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (eras of 400 years).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_millis(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(at(951_782_400, 5)),
            "2000-02-29T00:00:00.005Z"
        );
        assert_eq!(
            rfc3339_millis(at(1_796_160_600, 123)),
            "2026-12-01T21:30:00.123Z"
        );
        assert_eq!(
            rfc3339_millis(at(4_102_444_799, 999)),
            "2099-12-31T23:59:59.999Z"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let registry = Registry::new();
        let (tx, _rx) = mpsc::channel(1);
        let log = AccessLog {
            tx: Some(tx),
            dropped: registry.counter(&metrics::ACCESS_LOG_DROPPED_TOTAL, &[]),
        };
        let line = L4Line {
            listener: "pg",
            cluster: Some("db"),
            endpoint: None,
            protocol: "tcp",
            client: "127.0.0.1:5".into(),
            bytes_in: 1,
            bytes_out: 2,
            duration_ms: 0.5,
            close_reason: "done",
        };
        log.log(&line);
        log.log(&line);
        log.log(&line);
        assert_eq!(
            registry
                .counter(&metrics::ACCESS_LOG_DROPPED_TOTAL, &[])
                .get(),
            2
        );
    }

    #[tokio::test]
    async fn a_line_has_every_l4_key() {
        let registry = Registry::new();
        let (tx, mut rx) = mpsc::channel(4);
        let log = AccessLog {
            tx: Some(tx),
            dropped: registry.counter(&metrics::ACCESS_LOG_DROPPED_TOTAL, &[]),
        };
        log.log(&L4Line {
            listener: "pg",
            cluster: Some("db"),
            endpoint: None,
            protocol: "tcp",
            client: "127.0.0.1:5".into(),
            bytes_in: 1,
            bytes_out: 2,
            duration_ms: 0.5,
            close_reason: "done",
        });
        let text = rx.recv().await.expect("line");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        for key in [
            "time",
            "listener",
            "cluster",
            "endpoint",
            "protocol",
            "client",
            "bytes_in",
            "bytes_out",
            "duration_ms",
            "close_reason",
        ] {
            assert!(json.get(key).is_some(), "{key} in {text}");
        }
        assert!(json["endpoint"].is_null());
    }
}
