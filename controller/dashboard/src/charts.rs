//! Time-series charts as inline SVG, drawn by the server: no script, readable without one,
//! each with a text alternative that says the latest values.

use maud::{Markup, html};

use devdb_shared::metrics::{Point, Range};

/// How a chart's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Count,
    PerSecond,
    Ratio,
    Seconds,
}

impl Unit {
    pub fn format(self, value: f64) -> String {
        match self {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Self::Bytes => devdb_shared::size::human(value.max(0.0) as u64),
            Self::Count => format!("{value:.0}"),
            Self::PerSecond if value >= 100.0 => format!("{value:.0}/s"),
            Self::PerSecond => format!("{value:.1}/s"),
            Self::Ratio => format!("{:.1}%", value * 100.0),
            Self::Seconds => format!("{value:.1} s"),
        }
    }
}

/// One line of a chart.
pub struct Line {
    pub label: &'static str,
    /// Its CSS class (its colour).
    pub class: &'static str,
    pub value: fn(&Point) -> Option<f64>,
}

/// The charts of a database page, in order: title, unit, lines.
pub fn all() -> Vec<(&'static str, Unit, Vec<Line>)> {
    #[allow(clippy::cast_precision_loss)]
    let size: fn(&Point) -> Option<f64> = |p| Some(p.size_bytes as f64);
    vec![
        ("Size", Unit::Bytes, vec![Line { label: "size", class: "s1", value: size }]),
        (
            "Connections",
            Unit::Count,
            vec![
                Line { label: "active", class: "s1", value: |p| Some(f64::from(p.active)) },
                Line { label: "idle", class: "s2", value: |p| Some(f64::from(p.idle)) },
                Line { label: "idle in transaction", class: "s3", value: |p| Some(f64::from(p.idle_in_transaction)) },
            ],
        ),
        (
            "Transactions",
            Unit::PerSecond,
            vec![
                Line { label: "commits", class: "s1", value: |p| p.commits },
                Line { label: "rollbacks", class: "s3", value: |p| p.rollbacks },
            ],
        ),
        (
            "Rows",
            Unit::PerSecond,
            vec![
                Line { label: "read", class: "s1", value: |p| p.rows_read },
                Line { label: "written", class: "s2", value: |p| p.rows_written },
            ],
        ),
        ("Cache hit ratio", Unit::Ratio, vec![Line { label: "hit", class: "s1", value: |p| p.cache_hit }]),
        (
            "Longest running query",
            Unit::Seconds,
            vec![Line { label: "longest", class: "s3", value: |p| Some(p.longest_query_secs) }],
        ),
    ]
}

// The drawing's own units: about the size it shows at in a chart's card, so its text reads.
const WIDTH: f64 = 320.0;
const HEIGHT: f64 = 130.0;
const LEFT: f64 = 52.0;
const BOTTOM: f64 = 16.0;

/// A chart of `lines` over `points`, the last `range` up to `now` (Unix seconds), or since the
/// first sample when the history is younger than that.
pub fn chart(title: &str, unit: Unit, lines: &[Line], points: &[Point], range: Range, now: i64) -> Markup {
    let first = points.first().map_or(now, |p| p.at);
    let start = (now - range.seconds()).max(first.min(now - 60));
    let span = now - start;
    let top = lines.iter().flat_map(|l| points.iter().filter_map(l.value)).fold(0.0_f64, f64::max);
    let top = nice_ceiling(if unit == Unit::Ratio { 1.0 } else { top });
    #[allow(clippy::cast_precision_loss)]
    let x = |at: i64| LEFT + (at - start) as f64 / span as f64 * (WIDTH - LEFT);
    let y = |v: f64| (HEIGHT - BOTTOM) - v / top * (HEIGHT - BOTTOM - 6.0);
    let latest = points.last();
    let summary = lines
        .iter()
        .map(|l| {
            let value = latest.and_then(l.value).map_or_else(|| "no value".to_string(), |v| unit.format(v));
            format!("{}: {value}", l.label)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let description = match latest {
        Some(_) => format!("{title} over the last {}; latest {summary}", range.as_str()),
        None => format!("{title}: no samples in the last {}", range.as_str()),
    };
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(description) {
                title { (description) }
                line.axis x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) {}
                line.grid x1=(LEFT) y1=(y(top)) x2=(WIDTH) y2=(y(top)) {}
                text.tick x=(LEFT - 4.0) y=(y(top) + 4.0) text-anchor="end" { (unit.format(top)) }
                text.tick x=(LEFT - 4.0) y=(HEIGHT - BOTTOM) text-anchor="end" { (unit.format(0.0)) }
                text.tick x=(LEFT) y=(HEIGHT - 3.0) { (format!("{} ago", ago(span, range))) }
                text.tick x=(WIDTH) y=(HEIGHT - 3.0) text-anchor="end" { "now" }
                @for line in lines {
                    @for segment in segments(points, line.value) {
                        polyline class=(line.class) points=(segment.iter().map(|(at, v)| format!("{:.1},{:.1}", x(*at), y(*v))).collect::<Vec<_>>().join(" ")) {}
                    }
                }
            }
            @if points.is_empty() {
                p.empty { "No samples yet: a running database is sampled every interval." }
            }
            ul.legend {
                @for line in lines {
                    li { span class=(format!("swatch {}", line.class)) {} (line.label) ": "
                        strong { (latest.and_then(line.value).map_or_else(|| "–".to_string(), |v| unit.format(v))) } }
                }
            }
        }
    }
}

/// How long ago a chart starts: its range's length, or the history's when shorter.
fn ago(span: i64, range: Range) -> String {
    match range {
        _ if span < range.seconds() && span < 3600 => format!("{} min", (span + 59) / 60),
        _ if span < range.seconds() && span < 2 * 86_400 => format!("{} h", (span + 3599) / 3600),
        _ if span < range.seconds() => format!("{} days", (span + 86_399) / 86_400),
        Range::Hour => "1 hour".into(),
        Range::Day => "24 hours".into(),
        Range::Week => "7 days".into(),
    }
}

/// Runs of consecutive known values (an unknown value breaks the line).
fn segments(points: &[Point], value: fn(&Point) -> Option<f64>) -> Vec<Vec<(i64, f64)>> {
    let mut runs = vec![Vec::new()];
    for point in points {
        match value(point) {
            Some(v) => runs.last_mut().map_or((), |run| run.push((point.at, v))),
            None if runs.last().is_some_and(|r| !r.is_empty()) => runs.push(Vec::new()),
            None => {}
        }
    }
    // A single point draws as a short flat line, so it shows.
    runs.into_iter()
        .filter(|r| !r.is_empty())
        .map(|r| if r.len() == 1 { vec![(r[0].0 - 1, r[0].1), r[0]] } else { r })
        .collect()
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `value` (1 for nothing).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10_f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|c| *c >= value).unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: i64, commits: Option<f64>) -> Point {
        Point { at, commits, samples: 1, ..Point::default() }
    }

    #[test]
    fn scales_are_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(0.04), 0.05);
    }

    #[test]
    fn unknown_values_break_lines() {
        let points = [point(1, Some(1.0)), point(2, Some(2.0)), point(3, None), point(4, Some(3.0))];
        let runs = segments(&points, |p| p.commits);
        assert_eq!(runs, vec![vec![(1, 1.0), (2, 2.0)], vec![(3, 3.0), (4, 3.0)]]);
    }

    #[test]
    fn a_chart_says_its_latest_values_in_words_and_draws_a_line_per_series() {
        let points = [point(3000, Some(4.0)), point(3030, Some(8.0))];
        let lines = [Line { label: "commits", class: "s1", value: |p| p.commits }];
        let svg = chart("Transactions", Unit::PerSecond, &lines, &points, Range::Hour, 3600).into_string();
        assert!(svg.contains(">10 min ago<"), "a young history fills the chart: {svg}");
        assert!(svg.contains("aria-label=\"Transactions over the last hour; latest commits: 8.0/s\""), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains(">10.0/s<"), "the scale's top: {svg}");
        let old = [point(0, Some(1.0)), point(3600, Some(1.0))];
        let full = chart("Transactions", Unit::PerSecond, &lines, &old, Range::Hour, 3600).into_string();
        assert!(full.contains(">1 hour ago<"), "{full}");
        let empty = chart("Transactions", Unit::PerSecond, &lines, &[], Range::Day, 3600).into_string();
        assert!(empty.contains("no samples in the last day") && !empty.contains("<polyline"), "{empty}");
    }
}
