//! What a drill tells its operator: a terminal summary (pass/fail per threshold, the runs
//! side by side), a self-contained HTML page with the charts, and JSON with the raw
//! series for scripts.

use std::fmt::Write as _;

use serde::Serialize;

use super::run::RunResult;
use super::scenario::Scenario;
use super::svg::{Chart, Line, PALETTE, state_strip};

/// Everything a drill produced.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// The scenario's name.
    pub scenario: String,
    /// Its description.
    pub description: String,
    /// The load's length, seconds.
    pub duration_s: f64,
    /// The runs: the scenario's configuration first, then the comparison.
    pub runs: Vec<RunResult>,
}

impl DrillReport {
    /// Whether the first run (the configuration under test) passed every threshold.
    pub fn passed(&self) -> bool {
        self.runs.first().is_some_and(|r| r.passed)
    }

    /// Builds the report of `runs`.
    pub fn new(scenario: &Scenario, runs: Vec<RunResult>) -> Self {
        Self {
            scenario: scenario.name.clone(),
            description: scenario.description.clone(),
            duration_s: scenario.duration.as_secs_f64(),
            runs,
        }
    }
}

fn pad(s: &str, w: usize) -> String {
    format!("{s:<w$}")
}

/// The terminal summary.
pub fn text(report: &DrillReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "drill {}: {}",
        report.scenario,
        report.description.trim()
    );
    let col = 26;
    let mut header = pad("", 34);
    for r in &report.runs {
        header.push_str(&pad(&r.config, col));
    }
    let _ = writeln!(out, "{}", header.trim_end());
    let names: Vec<(&str, String)> = report
        .runs
        .first()
        .map(|r| {
            r.verdicts
                .iter()
                .map(|v| (v.name, v.limit.clone()))
                .collect()
        })
        .unwrap_or_default();
    for (name, limit) in &names {
        let mut line = pad(&format!("{name} {limit}"), 34);
        for r in &report.runs {
            let cell = r
                .verdicts
                .iter()
                .find(|v| v.name == *name)
                .map_or_else(String::new, |v| {
                    format!("{} {}", v.actual, if v.pass { "PASS" } else { "FAIL" })
                });
            line.push_str(&pad(&cell, col));
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let mut facts = |label: &str, f: &dyn Fn(&RunResult) -> String| {
        let mut line = pad(label, 34);
        for r in &report.runs {
            line.push_str(&pad(&f(r), col));
        }
        let _ = writeln!(out, "{}", line.trim_end());
    };
    facts("client requests", &|r| r.load.summary.requests.to_string());
    facts("upstream attempts", &|r| {
        format!("{} ({:.3}/request)", r.upstream_attempts, r.amplification)
    });
    facts("latency p50 / p99 / max", &|r| {
        let l = &r.load.summary.latency_ms;
        format!("{:.1} / {:.1} / {:.0} ms", l.p50, l.p99, l.max)
    });
    facts("bad backend share at fault end", &|r| {
        r.bad_share_at_end
            .map_or_else(|| "-".to_owned(), |s| format!("{:.1}%", s * 100.0))
    });
    facts("errors", &|r| {
        let e: Vec<String> = r
            .load
            .summary
            .errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if e.is_empty() {
            "none".to_owned()
        } else {
            e.join(", ")
        }
    });
    facts("seconds with most failures", &|r| worst_seconds(r, 3));
    if report.runs.iter().any(|r| r.slow_clients.is_some()) {
        facts("slow clients opened / let go", &|r| {
            r.slow_clients
                .map_or_else(|| "-".to_owned(), |(o, c)| format!("{o} / {c}"))
        });
    }
    for (i, r) in report.runs.iter().enumerate() {
        let what = if i == 0 { "verdict" } else { "comparison" };
        let _ = writeln!(
            out,
            "{what}: {} {}",
            r.config,
            if r.passed {
                "PASS (every threshold held)"
            } else {
                "FAIL (a threshold failed)"
            }
        );
    }
    out
}

/// Up to `n` seconds with the most failed client requests, with their main error:
/// `"7s 120 timeout, 8s 95 timeout"` (`"none"` without failures).
fn worst_seconds(r: &RunResult, n: usize) -> String {
    let mut seconds: Vec<_> = r
        .load
        .series
        .iter()
        .filter(|s| s.requests > s.successes)
        .collect();
    seconds.sort_by_key(|s| std::cmp::Reverse(s.requests - s.successes));
    let shown: Vec<String> = seconds
        .iter()
        .take(n)
        .map(|s| {
            let main = s
                .errors
                .iter()
                .max_by_key(|(_, n)| **n)
                .map_or("", |(k, _)| k.as_str());
            format!("{}s {} {main}", s.second, s.requests - s.successes)
        })
        .collect();
    if shown.is_empty() {
        "none".to_owned()
    } else {
        shown.join(", ")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The charts of one run, in report order.
fn charts(r: &RunResult, x_max: f64) -> Vec<String> {
    let series = &r.load.series;
    let pts = |f: &dyn Fn(&crate::loadgen::SecondSummary) -> Option<f64>| -> Vec<(f64, f64)> {
        series
            .iter()
            .filter_map(|s| f(s).map(|v| (s.second as f64 + 0.5, v)))
            .collect()
    };
    let success = pts(&|s| (s.requests > 0).then(|| s.success_rate() * 100.0));
    let min_success = success.iter().map(|p| p.1).fold(100.0, f64::min);
    let p50 = pts(&|s| (s.requests > 0).then_some(s.p50_ms.max(0.01)));
    let p99 = pts(&|s| (s.requests > 0).then_some(s.p99_ms.max(0.01)));
    let lat_max = p99.iter().map(|p| p.1).fold(1.0, f64::max);
    let lat_min = p50.iter().map(|p| p.1).fold(lat_max, f64::min).max(0.01);
    let attempts = pts(&|s| (s.requests > 0).then(|| s.attempts_per_request()));
    let att_max = attempts
        .iter()
        .map(|p| p.1)
        .fold(1.0, f64::max)
        .max(r.amplification);
    let e = &r.endpoints;
    let shares: Vec<Line> = e
        .names
        .iter()
        .enumerate()
        .map(|(i, name)| Line {
            name: name.clone(),
            color: PALETTE[i % PALETTE.len()].to_owned(),
            points: e
                .seconds
                .iter()
                .map(|s| (s.second as f64 + 0.5, s.share(i) * 100.0))
                .collect(),
        })
        .collect();
    let share_max = shares
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(10.0, f64::max);
    let upstream: Vec<(f64, f64)> = e
        .seconds
        .iter()
        .zip(series)
        .filter(|(_, c)| c.requests > 0)
        .map(|(s, c)| {
            (
                s.second as f64 + 0.5,
                s.attempts.iter().sum::<u64>() as f64 / c.requests as f64,
            )
        })
        .collect();
    let w = &r.windows;
    let mut out = vec![
        Chart {
            id: "success",
            title: "Client success rate per second (with client retries)",
            unit: "%",
            x_max,
            y_min: (min_success - 5.0).clamp(0.0, 95.0).floor(),
            y_max: 100.0,
            log: false,
            lines: vec![Line {
                name: "success".into(),
                color: "#16a34a".into(),
                points: success,
            }],
            windows: w,
        }
        .render(),
        Chart {
            id: "latency",
            title: "Client latency from intended send time (log scale)",
            unit: "ms",
            x_max,
            y_min: 10f64.powf(lat_min.log10().floor()),
            y_max: 10f64.powf(lat_max.log10().ceil()),
            log: true,
            lines: vec![
                Line {
                    name: "p50".into(),
                    color: "#2563eb".into(),
                    points: p50,
                },
                Line {
                    name: "p99".into(),
                    color: "#dc2626".into(),
                    points: p99,
                },
            ],
            windows: w,
        }
        .render(),
        Chart {
            id: "attempts",
            title: "Attempts per client request",
            unit: "",
            x_max,
            y_min: 0.0,
            y_max: (att_max * 1.1).ceil(),
            log: false,
            lines: vec![
                Line {
                    name: "client attempts".into(),
                    color: "#7c3aed".into(),
                    points: attempts,
                },
                Line {
                    name: "upstream attempts".into(),
                    color: "#ea580c".into(),
                    points: upstream,
                },
            ],
            windows: w,
        }
        .render(),
        Chart {
            id: "share",
            title: "Each endpoint's share of upstream attempts",
            unit: "%",
            x_max,
            y_min: 0.0,
            y_max: (share_max * 1.1).min(100.0).ceil(),
            log: false,
            lines: shares,
            windows: w,
        }
        .render(),
    ];
    let states: Vec<(u64, Vec<String>)> = e
        .seconds
        .iter()
        .map(|s| (s.second, s.states.clone()))
        .collect();
    out.push(state_strip("state", &e.names, &states, x_max, w));
    out
}

/// The self-contained HTML page.
pub fn html(report: &DrillReport) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Drill {name}</title><style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#1f2937;background:#f9fafb}}
h1{{font-size:20px;margin:0 0 4px}} p.desc{{margin:0 0 16px;color:#4b5563}}
table{{border-collapse:collapse;margin:8px 0 18px;background:#fff}} td,th{{border:1px solid #e5e7eb;padding:4px 10px;font-size:13px;text-align:left}}
.pass{{color:#15803d;font-weight:600}} .fail{{color:#b91c1c;font-weight:600}}
.runs{{display:flex;gap:16px;flex-wrap:wrap}} .run{{background:#fff;border:1px solid #e5e7eb;padding:8px}} .run h2{{font-size:15px;margin:4px 0}}
svg.chart{{display:block;margin:6px 0}}
</style></head><body><h1>Drill: {name}</h1><p class="desc">{desc}</p>"#,
        name = esc(&report.scenario),
        desc = esc(report.description.trim())
    );
    s.push_str(r#"<table id="verdicts"><tr><th>threshold</th>"#);
    for r in &report.runs {
        let _ = write!(s, "<th>{}</th>", esc(&r.config));
    }
    s.push_str("</tr>");
    if let Some(first) = report.runs.first() {
        for v in &first.verdicts {
            let _ = write!(s, "<tr><td>{} {}</td>", v.name, esc(&v.limit));
            for r in &report.runs {
                match r.verdicts.iter().find(|x| x.name == v.name) {
                    Some(x) => {
                        let (class, word) = if x.pass {
                            ("pass", "PASS")
                        } else {
                            ("fail", "FAIL")
                        };
                        let _ = write!(s, r#"<td class="{class}">{} {word}</td>"#, esc(&x.actual));
                    }
                    None => s.push_str("<td></td>"),
                }
            }
            s.push_str("</tr>");
        }
    }
    let mut row = |label: &str, f: &dyn Fn(&RunResult) -> String| {
        let _ = write!(s, "<tr><td>{label}</td>");
        for r in &report.runs {
            let _ = write!(s, "<td>{}</td>", esc(&f(r)));
        }
        s.push_str("</tr>");
    };
    row("client requests", &|r| r.load.summary.requests.to_string());
    row("upstream attempts / request", &|r| {
        format!("{:.3}", r.amplification)
    });
    row("p50 / p99 / max", &|r| {
        let l = &r.load.summary.latency_ms;
        format!("{:.1} / {:.1} / {:.0} ms", l.p50, l.p99, l.max)
    });
    row("verdict", &|r| {
        if r.passed {
            "PASS".into()
        } else {
            "FAIL".into()
        }
    });
    s.push_str("</table><div class=\"runs\">");
    for r in &report.runs {
        let _ = write!(s, r#"<div class="run"><h2>{}</h2>"#, esc(&r.config));
        for chart in charts(r, report.duration_s) {
            s.push_str(&chart);
        }
        s.push_str("</div>");
    }
    s.push_str("</div></body></html>\n");
    s
}
