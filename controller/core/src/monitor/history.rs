//! A database's monitoring history: every sample of the last hour, five-minute points for the
//! last day and hourly points for the last week. Bounded by time and by count, whatever the
//! sampling interval, so its document stays small.

use devdb_shared::metrics::{Point, Range};
use serde::{Deserialize, Serialize};

/// The most points a series keeps, whatever the interval: an hour at one sample every three
/// seconds (faster sampling keeps a shorter hour), so a history stays well under a ConfigMap's
/// 1 MiB on Kubernetes.
pub const MAX_POINTS: usize = 1200;

/// Folds `later` into `point`: gauges keep their largest value, rates their mean.
fn absorb(point: &mut Point, later: &Point) {
    fn mean(a: Option<f64>, an: u32, b: Option<f64>, bn: u32) -> Option<f64> {
        match (a, b) {
            (Some(a), Some(b)) => Some((a * f64::from(an) + b * f64::from(bn)) / f64::from(an + bn)),
            (a, b) => a.or(b),
        }
    }
    let (n, m) = (point.rated, later.rated);
    point.commits = mean(point.commits, n, later.commits, m);
    point.rollbacks = mean(point.rollbacks, n, later.rollbacks, m);
    point.rows_read = mean(point.rows_read, n, later.rows_read, m);
    point.rows_written = mean(point.rows_written, n, later.rows_written, m);
    point.cache_hit = mean(point.cache_hit, n, later.cache_hit, m);
    point.at = later.at;
    point.size_bytes = point.size_bytes.max(later.size_bytes);
    point.active = point.active.max(later.active);
    point.idle = point.idle.max(later.idle);
    point.idle_in_transaction = point.idle_in_transaction.max(later.idle_in_transaction);
    point.longest_query_secs = point.longest_query_secs.max(later.longest_query_secs);
    point.samples += later.samples;
    point.rated = n + m;
}

/// The width of one point at this range (0: every sample).
fn step(range: Range) -> i64 {
    match range {
        Range::Hour => 0,
        Range::Day => 300,
        Range::Week => 3600,
    }
}

/// A database's history, one series per [`Range`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub hour: Vec<Point>,
    pub day: Vec<Point>,
    pub week: Vec<Point>,
}

impl History {
    /// Adds a sample, dropping what has aged out of each series.
    pub fn push(&mut self, point: Point) {
        for range in Range::ALL {
            let (series, width) = (self.series_mut(range), step(range));
            match series.last_mut() {
                Some(last) if width > 0 && last.at.div_euclid(width) == point.at.div_euclid(width) => {
                    absorb(last, &point);
                }
                _ => series.push(point),
            }
            let oldest = point.at - range.seconds();
            let aged = series.iter().take_while(|p| p.at <= oldest).count();
            let over = series.len().saturating_sub(aged).saturating_sub(MAX_POINTS);
            series.drain(..aged + over);
        }
    }

    /// The points of `range`.
    pub fn series(&self, range: Range) -> &[Point] {
        match range {
            Range::Hour => &self.hour,
            Range::Day => &self.day,
            Range::Week => &self.week,
        }
    }

    fn series_mut(&mut self, range: Range) -> &mut Vec<Point> {
        match range {
            Range::Hour => &mut self.hour,
            Range::Day => &mut self.day,
            Range::Week => &mut self.week,
        }
    }

    /// The latest sample.
    pub fn latest(&self) -> Option<&Point> {
        self.hour.last()
    }

    /// The history as its store document: each point a row of numbers (rates to a thousandth),
    /// about a third of the size of the points' own JSON. On Kubernetes the documents are
    /// ConfigMaps, and every byte of them is written to etcd.
    ///
    /// # Errors
    /// Never in practice (numbers and arrays only).
    pub fn to_document(&self) -> serde_json::Result<String> {
        let rows = |series: &[Point]| series.iter().map(Row::from).collect::<Vec<_>>();
        serde_json::to_string(&Document { v: 2, hour: rows(&self.hour), day: rows(&self.day), week: rows(&self.week) })
    }

    /// Reads a store document: [`History::to_document`]'s, or the points' own JSON that earlier
    /// versions kept.
    ///
    /// # Errors
    /// When the document is neither.
    pub fn from_document(text: &str) -> serde_json::Result<Self> {
        match serde_json::from_str::<Document>(text) {
            Ok(doc) => {
                let points = |rows: Vec<Row>| rows.into_iter().map(Point::from).collect();
                Ok(Self { hour: points(doc.hour), day: points(doc.day), week: points(doc.week) })
            }
            Err(_) => serde_json::from_str(text),
        }
    }
}

/// [`History::to_document`]'s shape.
#[derive(Serialize, Deserialize)]
struct Document {
    v: u8,
    hour: Vec<Row>,
    day: Vec<Row>,
    week: Vec<Row>,
}

/// A [`Point`] as a row: at, size, active, idle, idle in transaction, commits, rollbacks, rows
/// read, rows written, cache hit, longest query, samples, rated.
#[derive(Serialize, Deserialize)]
#[allow(clippy::type_complexity)]
struct Row(i64, u64, u32, u32, u32, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>, f64, u32, u32);

/// To a thousandth: what a chart shows, in a few digits.
fn thousandths(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl From<&Point> for Row {
    fn from(p: &Point) -> Self {
        let rate = |x: Option<f64>| x.map(thousandths);
        Self(
            p.at,
            p.size_bytes,
            p.active,
            p.idle,
            p.idle_in_transaction,
            rate(p.commits),
            rate(p.rollbacks),
            rate(p.rows_read),
            rate(p.rows_written),
            rate(p.cache_hit),
            thousandths(p.longest_query_secs),
            p.samples,
            p.rated,
        )
    }
}

impl From<Row> for Point {
    fn from(r: Row) -> Self {
        Self {
            at: r.0,
            size_bytes: r.1,
            active: r.2,
            idle: r.3,
            idle_in_transaction: r.4,
            commits: r.5,
            rollbacks: r.6,
            rows_read: r.7,
            rows_written: r.8,
            cache_hit: r.9,
            longest_query_secs: r.10,
            samples: r.11,
            rated: r.12,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: i64, active: u32, commits: f64) -> Point {
        Point {
            at,
            active,
            commits: Some(commits),
            size_bytes: 1000 + at as u64,
            samples: 1,
            rated: 1,
            ..Point::default()
        }
    }

    #[test]
    fn each_series_keeps_its_span_at_its_resolution() {
        let mut history = History::default();
        // Eight days of a sample every 30 s.
        let start = 1_700_000_000 - 1_700_000_000 % 3600;
        for i in 0..(8 * 86_400 / 30) {
            history.push(point(start + i * 30, (i % 7) as u32, 2.0));
        }
        let end = history.latest().expect("a sample").at;
        assert_eq!(history.hour.len(), 120, "an hour of 30 s samples");
        assert_eq!(history.day.len(), 288, "a day of five-minute points");
        assert_eq!(history.week.len(), 168, "a week of hourly points");
        for range in Range::ALL {
            let series = history.series(range);
            assert!(series.iter().all(|p| p.at > end - range.seconds()), "{range:?} holds only its span");
            assert!(series.windows(2).all(|w| w[0].at < w[1].at), "{range:?} in time order");
        }
        // A five-minute point stands for ten samples: the largest gauge, the mean rate.
        let full = &history.day[history.day.len() - 2];
        assert_eq!(full.samples, 10);
        assert_eq!(full.active, 6);
        assert_eq!(full.commits, Some(2.0));
    }

    #[test]
    fn coarse_points_average_rates_weighted_by_samples_and_skip_unknown_ones() {
        let mut history = History::default();
        history.push(Point { at: 3600, commits: None, samples: 1, ..Point::default() });
        history.push(point(3630, 1, 1.0));
        history.push(point(3660, 3, 4.0));
        let day = history.series(Range::Day);
        assert_eq!(day.len(), 1);
        assert_eq!(day[0].commits, Some(2.5));
        assert_eq!(day[0].active, 3);
        assert_eq!(day[0].size_bytes, 1000 + 3660);
        assert_eq!(day[0].samples, 3);
        assert_eq!(history.hour.len(), 3, "the hour keeps every sample");
    }

    /// A week of 30 s samples: the document reads back as the history (rates to a thousandth),
    /// is under a third of the points' own JSON, and documents of earlier versions still read.
    #[test]
    fn the_store_document_is_compact_and_reads_back_and_old_documents_still_read() {
        let mut history = History::default();
        for i in 0..(7 * 24 * 120) {
            let mut p = point(1_700_000_000 + i * 30, 3, 12.345_678_9 + f64::from(u32::try_from(i % 7).unwrap_or(0)));
            p.cache_hit = Some(0.987_654_321);
            p.size_bytes = 123_456_789;
            history.push(p);
        }
        let document = history.to_document().expect("document");
        let plain = serde_json::to_string(&history).expect("json");
        assert!(document.len() * 3 < plain.len(), "{} bytes vs {}", document.len(), plain.len());
        let back = History::from_document(&document).expect("reads");
        assert_eq!(back.hour.len(), history.hour.len());
        assert_eq!(back.week.len(), history.week.len());
        let (a, b) = (history.latest().expect("latest"), back.latest().expect("latest"));
        assert_eq!((a.at, a.size_bytes, a.active, a.samples), (b.at, b.size_bytes, b.active, b.samples));
        assert!((a.commits.unwrap_or_default() - b.commits.unwrap_or_default()).abs() < 0.001);
        let earlier = History::from_document(&plain).expect("an earlier document");
        assert_eq!(
            (earlier.hour.len(), earlier.day.len(), earlier.week.len()),
            (history.hour.len(), history.day.len(), history.week.len())
        );
        assert_eq!(earlier.latest().map(|p| (p.at, p.samples)), history.latest().map(|p| (p.at, p.samples)));
    }

    #[test]
    fn a_tiny_interval_is_bounded_by_count() {
        let mut history = History::default();
        for i in 0..5000 {
            let full = Some(123_456.789);
            history.push(Point {
                size_bytes: 1 << 40,
                idle: 100,
                idle_in_transaction: 100,
                rollbacks: full,
                rows_read: full,
                rows_written: full,
                cache_hit: Some(0.999_999),
                longest_query_secs: 86_400.123,
                ..point(i, 100, 123_456.789)
            });
        }
        assert_eq!(history.hour.len(), MAX_POINTS, "the last 1200 samples of an hour at one a second");
        assert_eq!(history.hour.first().map(|p| p.at), Some(5000 - MAX_POINTS as i64));
        assert!(serde_json::to_string(&history).expect("json").len() < 512 * 1024, "a document well under 1 MiB");
        let mut dense = History::default();
        for i in 0..(MAX_POINTS as i64 + 10) {
            dense.push(Point { at: i / 4, ..Point::default() });
        }
        assert!(dense.hour.len() <= MAX_POINTS);
    }
}
