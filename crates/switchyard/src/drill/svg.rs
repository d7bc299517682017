//! Hand-written SVG charts for the HTML report: line charts over the drill's seconds with
//! the fault windows shaded, and a state strip (one row per endpoint, one cell per
//! second).
//!
//! A plotting crate would pull in font handling for axis labels; these charts need lines,
//! rectangles and `<text>`, which SVG does natively, so the report stays dependency-free
//! and byte-for-byte deterministic for a given run.

use std::fmt::Write as _;

use super::timeline::Window;

const W: f64 = 520.0;
const H: f64 = 226.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 44.0;

/// A colour per series, cycling.
pub const PALETTE: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939",
];

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend text.
    pub name: String,
    /// Stroke colour.
    pub color: String,
    /// (second, value) points.
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    /// `data-chart` attribute (what tests look for).
    pub id: &'a str,
    /// Title.
    pub title: &'a str,
    /// Unit shown on the y axis.
    pub unit: &'a str,
    /// Seconds on the x axis.
    pub x_max: f64,
    /// Y range; a log scale when `log` (then `y_min` must be above 0).
    pub y_min: f64,
    /// Top of the y range.
    pub y_max: f64,
    /// Log scale.
    pub log: bool,
    /// The lines.
    pub lines: Vec<Line>,
    /// Fault windows to shade.
    pub windows: &'a [Window],
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_tick(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Chart<'_> {
    fn x(&self, s: f64) -> f64 {
        LEFT + (s / self.x_max.max(1.0)).clamp(0.0, 1.0) * (W - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        let plot = H - TOP - BOTTOM;
        let f = if self.log {
            let (lo, hi) = (
                self.y_min.max(1e-9).log10(),
                self.y_max.max(self.y_min * 10.0).log10(),
            );
            (v.max(self.y_min).log10() - lo) / (hi - lo)
        } else {
            (v - self.y_min) / (self.y_max - self.y_min).max(1e-9)
        };
        TOP + plot * (1.0 - f.clamp(0.0, 1.0))
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut t = Vec::new();
            let mut v = 10f64.powf(self.y_min.max(1e-9).log10().floor());
            while v <= self.y_max * 1.0001 {
                if v >= self.y_min * 0.9999 {
                    t.push(v);
                }
                v *= 10.0;
            }
            t
        } else {
            (0..=4)
                .map(|i| self.y_min + (self.y_max - self.y_min) * f64::from(i) / 4.0)
                .collect()
        }
    }

    /// The `<svg>` element.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg class="chart" data-chart="{}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
            esc(self.id),
            esc(self.title)
        );
        let _ = write!(
            s,
            r##"<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>"##
        );
        let _ = write!(
            s,
            r##"<text x="{LEFT}" y="16" font-size="13" font-weight="bold" fill="#222">{}</text>"##,
            esc(self.title)
        );
        shade(&mut s, self.windows, |x| self.x(x), TOP, H - BOTTOM);
        for t in self.ticks() {
            let y = self.y(t);
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{}{}</text>"##,
                W - RIGHT,
                LEFT - 4.0,
                y + 3.0,
                fmt_tick(t),
                esc(self.unit)
            );
        }
        let step = if self.x_max > 60.0 {
            10.0
        } else if self.x_max > 20.0 {
            5.0
        } else {
            2.0
        };
        let mut t = 0.0;
        while t <= self.x_max + 1e-9 {
            let x = self.x(t);
            let _ = write!(
                s,
                r##"<text x="{x:.1}" y="{}" font-size="10" text-anchor="middle" fill="#555">{t:.0}s</text>"##,
                H - BOTTOM + 14.0
            );
            t += step;
        }
        let _ = write!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
            W - LEFT - RIGHT,
            H - TOP - BOTTOM
        );
        for line in &self.lines {
            if line.points.is_empty() {
                continue;
            }
            let pts: Vec<String> = line
                .points
                .iter()
                .map(|&(x, v)| format!("{:.1},{:.1}", self.x(x), self.y(v)))
                .collect();
            let _ = write!(
                s,
                r#"<polyline class="series" data-series="{}" fill="none" stroke="{}" stroke-width="1.6" points="{}"/>"#,
                esc(&line.name),
                esc(&line.color),
                pts.join(" ")
            );
        }
        // Legend under the x axis.
        let mut lx = LEFT;
        for line in self.lines.iter().take(16) {
            let _ = write!(
                s,
                r##"<rect x="{lx:.1}" y="{:.1}" width="9" height="9" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#333">{}</text>"##,
                H - 15.0,
                esc(&line.color),
                lx + 11.0,
                H - 7.0,
                esc(&line.name)
            );
            lx += 18.0 + 6.0 * line.name.len() as f64;
        }
        s.push_str("</svg>");
        s
    }
}

fn shade(s: &mut String, windows: &[Window], x: impl Fn(f64) -> f64, top: f64, bottom: f64) {
    for (i, w) in windows.iter().enumerate() {
        let (x0, x1) = (x(w.start_s), x(w.end_s));
        let color = if w.planned { "#3b82f6" } else { "#ef4444" };
        let _ = write!(
            s,
            r#"<g class="fault" data-fault="{}"><rect x="{x0:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="0.08"/><line x1="{x0:.1}" x2="{x0:.1}" y1="{top}" y2="{bottom}" stroke="{color}" stroke-width="1.2"/><line x1="{x1:.1}" x2="{x1:.1}" y1="{top}" y2="{bottom}" stroke="{color}" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" font-size="10" fill="{color}">{}</text></g>"#,
            esc(&w.label),
            (x1 - x0).max(1.0),
            bottom - top,
            x0 + 3.0,
            top + 11.0 + 11.0 * (i % 3) as f64,
            esc(&w.label)
        );
    }
}

/// The colour of an endpoint state.
pub fn state_color(state: &str) -> &'static str {
    match state {
        "healthy" => "#4ade80",
        "slow-starting" => "#facc15",
        "ejected" => "#fb923c",
        "unhealthy" => "#ef4444",
        "draining" => "#60a5fa",
        "down" => "#111827",
        _ => "#d1d5db",
    }
}

/// One row per endpoint, one cell per second, coloured by state.
pub fn state_strip(
    id: &str,
    names: &[String],
    states: &[(u64, Vec<String>)],
    x_max: f64,
    windows: &[Window],
) -> String {
    let row = 12.0;
    let height = TOP + row * names.len() as f64 + BOTTOM;
    let x = |s: f64| LEFT + (s / x_max.max(1.0)).clamp(0.0, 1.0) * (W - LEFT - RIGHT);
    let cell = (W - LEFT - RIGHT) / x_max.max(1.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="chart" data-chart="{}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" role="img" aria-label="endpoint states"><rect x="0" y="0" width="{W}" height="{height}" fill="#ffffff"/><text x="{LEFT}" y="16" font-size="13" font-weight="bold" fill="#222">Endpoint state</text>"##,
        esc(id)
    );
    for (i, name) in names.iter().enumerate() {
        let y = TOP + row * i as f64;
        let _ = write!(
            s,
            r##"<text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{}</text>"##,
            LEFT - 4.0,
            y + 9.0,
            esc(name)
        );
        for (second, row_states) in states {
            let state = row_states.get(i).map_or("?", String::as_str);
            let _ = write!(
                s,
                r#"<rect class="state" data-state="{}" x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                esc(state),
                x(*second as f64),
                cell.max(1.0),
                row - 1.0,
                state_color(state)
            );
        }
    }
    let bottom = TOP + row * names.len() as f64;
    shade(&mut s, windows, x, TOP, bottom);
    let mut lx = LEFT;
    for state in [
        "healthy",
        "slow-starting",
        "ejected",
        "unhealthy",
        "draining",
        "down",
    ] {
        let _ = write!(
            s,
            r##"<rect x="{lx:.1}" y="{:.1}" width="9" height="9" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#333">{state}</text>"##,
            bottom + 8.0,
            state_color(state),
            lx + 11.0,
            bottom + 16.0
        );
        lx += 20.0 + 6.0 * state.len() as f64;
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_its_lines_and_fault_markers() {
        let w = [Window {
            label: "slow b12".into(),
            kind: "slow",
            backends: vec![11],
            start_s: 2.0,
            end_s: 8.0,
            degrades: true,
            planned: false,
        }];
        let c = Chart {
            id: "success",
            title: "Success <rate>",
            unit: "%",
            x_max: 10.0,
            y_min: 0.0,
            y_max: 100.0,
            log: false,
            lines: vec![Line {
                name: "success".into(),
                color: "#000".into(),
                points: vec![(0.0, 100.0), (10.0, 0.0)],
            }],
            windows: &w,
        };
        let svg = c.render();
        assert!(svg.starts_with(r#"<svg class="chart" data-chart="success""#));
        assert!(svg.contains("Success &lt;rate&gt;"));
        assert!(svg.contains(r#"points="52.0,26.0 508.0,182.0""#), "{svg}");
        assert!(svg.contains(r#"data-fault="slow b12""#));
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn log_scales_put_decades_evenly() {
        let c = Chart {
            id: "l",
            title: "",
            unit: "ms",
            x_max: 1.0,
            y_min: 1.0,
            y_max: 100.0,
            log: true,
            lines: Vec::new(),
            windows: &[],
        };
        assert_eq!(c.ticks(), [1.0, 10.0, 100.0]);
        let (a, b, d) = (c.y(1.0), c.y(10.0), c.y(100.0));
        assert!(((a - b) - (b - d)).abs() < 1e-9);
    }
}
