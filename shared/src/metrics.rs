//! A database's monitoring as the controller serves it (`GET /v1/databases/{name}/metrics`):
//! points of its history over a range. The server, the dashboard and any client read it as
//! these types.

use serde::{Deserialize, Serialize};

/// One point of a database's history: the values at `at` (Unix seconds) and the rates over
/// the interval before it. A coarse point stands for several samples: the largest gauges, the
/// mean rates.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Point {
    pub at: i64,
    /// `pg_database_size`.
    pub size_bytes: u64,
    pub active: u32,
    pub idle: u32,
    pub idle_in_transaction: u32,
    /// Per second over the interval before `at`; `None` for the first sample after a
    /// (controller or database) restart, when there is nothing to compare with.
    pub commits: Option<f64>,
    pub rollbacks: Option<f64>,
    pub rows_read: Option<f64>,
    pub rows_written: Option<f64>,
    /// Share of block reads served from shared buffers over the interval (0–1).
    pub cache_hit: Option<f64>,
    /// Seconds the longest running statement had been running.
    pub longest_query_secs: f64,
    /// How many samples this point stands for.
    #[serde(default = "one")]
    pub samples: u32,
    /// How many of them had rates (the first after a restart has none).
    #[serde(default)]
    pub rated: u32,
}

fn one() -> u32 {
    1
}

impl Point {
    /// All sessions.
    pub fn connections(&self) -> u32 {
        self.active + self.idle + self.idle_in_transaction
    }
}

/// The span a chart shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Range {
    #[default]
    Hour,
    Day,
    Week,
}

impl Range {
    pub const ALL: [Range; 3] = [Range::Hour, Range::Day, Range::Week];

    /// Its length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Self::Hour => 3600,
            Self::Day => 86_400,
            Self::Week => 7 * 86_400,
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
        }
    }
}

/// A database's samples over a range.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseMetrics {
    pub database: String,
    pub range: Range,
    /// The sampling interval, in seconds.
    pub sample_every_secs: u64,
    /// Oldest first: every sample of the last hour, five-minute points for a day, hourly ones
    /// for a week.
    pub points: Vec<Point>,
}
