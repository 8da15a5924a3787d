//! What a run did: counts, throughput, latency percentiles, errors (with samples) and, in idle
//! mode, memory; printed as a table and written as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use comfy_table::Table;
use comfy_table::presets::UTF8_BORDERS_ONLY;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::Mode;

/// At most this many distinct error messages are kept as samples.
const ERROR_SAMPLES: usize = 5;

/// Latencies in microseconds, from 1 µs to 10 minutes at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// Records `elapsed` into `histogram` (clamped into its range).
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).clamp(1, histogram.high());
    histogram.saturating_record(micros);
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl From<&Histogram<u64>> for Latency {
    fn from(h: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// Memory of the watched process (idle mode).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Memory {
    pub pid: u32,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    /// (after − before) / sessions.
    pub bytes_per_session: u64,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub target: String,
    pub clients: usize,
    /// Measured time (warm-up excluded).
    pub seconds: f64,
    /// Transactions completed while measuring (idle: sessions opened).
    pub transactions: u64,
    /// Completed transactions by kind (query mode: simple, prepared, insert).
    pub by_kind: BTreeMap<&'static str, u64>,
    pub per_second: f64,
    /// Transaction latency (connect mode: connect, query, close).
    pub latency: Latency,
    /// Connect mode: from TCP connect to ready for query (TLS and authentication included).
    pub connect: Option<Latency>,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub memory: Option<Memory>,
}

/// Counts errors and keeps a few distinct messages.
#[derive(Debug, Default)]
pub struct Errors {
    pub count: u64,
    pub samples: Vec<String>,
}

impl Errors {
    pub fn add(&mut self, error: &dyn std::fmt::Display) {
        self.count += 1;
        self.keep(error.to_string());
    }

    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        for message in other.samples {
            self.keep(message);
        }
    }

    /// Keeps `message` as a sample if there is room and it is new.
    fn keep(&mut self, message: String) {
        if self.samples.len() < ERROR_SAMPLES && !self.samples.contains(&message) {
            self.samples.push(message);
        }
    }
}

impl Report {
    /// The human-readable summary.
    pub fn table(&self) -> String {
        let mut table = Table::new();
        table.load_style(UTF8_BORDERS_ONLY);
        table.set_header([
            "mode",
            "clients",
            "transactions",
            "per second",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "errors",
        ]);
        let row = |what: String, l: &Latency, per_second: String| {
            vec![
                what,
                self.clients.to_string(),
                l.count.to_string(),
                per_second,
                format!("{:.3}", l.p50_ms),
                format!("{:.3}", l.p90_ms),
                format!("{:.3}", l.p99_ms),
                format!("{:.3}", l.max_ms),
                self.errors.to_string(),
            ]
        };
        let mode = serde_json::to_value(self.mode).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        table.add_row(row(mode, &self.latency, format!("{:.1}", self.per_second)));
        if let Some(connect) = &self.connect {
            table.add_row(row("  of which connect".into(), connect, String::new()));
        }
        let mut out = format!("{} → {}\n{table}\n", self.target, self.seconds_label());
        if !self.by_kind.is_empty() {
            let kinds: Vec<String> = self.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            out.push_str(&format!("by kind: {}\n", kinds.join(", ")));
        }
        if let Some(m) = &self.memory {
            out.push_str(&format!(
                "memory of pid {}: {:.1} MiB before, {:.1} MiB with {} sessions: {:.1} KiB per session\n",
                m.pid,
                m.rss_before_bytes as f64 / 1048576.0,
                m.rss_after_bytes as f64 / 1048576.0,
                self.transactions,
                m.bytes_per_session as f64 / 1024.0
            ));
        }
        for sample in &self.error_samples {
            out.push_str(&format!("error: {sample}\n"));
        }
        out
    }

    fn seconds_label(&self) -> String {
        format!("{:.1} s measured", self.seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_what_was_recorded() {
        let mut h = histogram();
        for ms in 1..=100 {
            record(&mut h, Duration::from_millis(ms));
        }
        let l = Latency::from(&h);
        assert_eq!(l.count, 100);
        assert!((l.p50_ms - 50.0).abs() < 0.1, "{l:?}");
        assert!((l.p99_ms - 99.0).abs() < 0.1, "{l:?}");
        assert!((l.max_ms - 100.0).abs() < 0.1, "{l:?}");
        assert_eq!(Latency::from(&histogram()), Latency::default(), "nothing recorded, nothing claimed");
    }

    #[test]
    fn errors_are_all_counted_and_a_few_kept() {
        let mut errors = Errors::default();
        for i in 0..20 {
            errors.add(&format!("failure {}", i % 7));
        }
        assert_eq!(errors.count, 20);
        assert_eq!(errors.samples.len(), ERROR_SAMPLES);
        let mut more = Errors::default();
        more.add(&"another");
        errors.merge(more);
        assert_eq!(errors.count, 21);
    }
}
