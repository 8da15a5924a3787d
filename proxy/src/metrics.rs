//! Prometheus metrics of the proxy, served on the admin port at `/metrics`.
//!
//! Series per database (a `route` label with its name) are kept only where `/metrics` needs a
//! token (or where asked for): otherwise whoever reaches the admin port could list every
//! database, and each session is counted under `route="*"` (no database name is a `*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `client_to_backend` or `backend_to_client`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// The `route` label of sessions when metrics name no database.
pub const ALL_ROUTES: &str = "*";

/// Every metric the proxy keeps.
pub struct Metrics {
    registry: Registry,
    /// Whether sessions are counted per database (else all under [`ALL_ROUTES`]).
    per_database: bool,
    /// Sessions relayed, by route.
    pub connections: Family<RouteLabel, Counter>,
    /// Sessions being relayed now, by route.
    pub active: Family<RouteLabel, Gauge>,
    /// Connections refused or failed before the relay, by reason.
    pub errors: Family<ReasonLabel, Counter>,
    /// Bytes relayed, by direction (counted when a session ends).
    pub bytes: Family<DirectionLabel, Counter>,
    /// From accept to a started relay (TLS, startup, routing, backend auth).
    pub handshake_seconds: Histogram,
    /// Cancel requests, by outcome.
    pub cancels: Family<OutcomeLabel, Counter>,
}

impl Default for Metrics {
    /// Metrics that name no database.
    fn default() -> Self {
        Self::new(false)
    }
}

impl Metrics {
    /// `per_database`: count sessions per database, labelled with its name.
    pub fn new(per_database: bool) -> Self {
        let mut registry = Registry::with_prefix("devdb_proxy");
        let connections = Family::<RouteLabel, Counter>::default();
        let active = Family::<RouteLabel, Gauge>::default();
        let errors = Family::<ReasonLabel, Counter>::default();
        let bytes = Family::<DirectionLabel, Counter>::default();
        let handshake_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let cancels = Family::<OutcomeLabel, Counter>::default();
        registry.register("connections", "Sessions relayed", connections.clone());
        registry.register("active_connections", "Sessions being relayed", active.clone());
        registry.register("handshake_errors", "Connections refused or failed before relaying", errors.clone());
        registry.register("bytes", "Bytes relayed", bytes.clone());
        registry.register("handshake_duration_seconds", "Accept to relay start", handshake_seconds.clone());
        registry.register("cancel_requests", "Cancel requests", cancels.clone());
        Self { registry, per_database, connections, active, errors, bytes, handshake_seconds, cancels }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a session's relayed bytes.
    pub fn add_bytes(&self, up: u64, down: u64) {
        self.bytes.get_or_create(&DirectionLabel { direction: "client_to_backend" }).inc_by(up);
        self.bytes.get_or_create(&DirectionLabel { direction: "backend_to_client" }).inc_by(down);
    }
}

/// Counts a session as active until dropped.
pub struct ActiveGuard {
    gauge: Gauge,
}

impl ActiveGuard {
    pub fn new(metrics: &Metrics, route: &str) -> Self {
        let route = if metrics.per_database { route } else { ALL_ROUTES };
        let label = RouteLabel { route: route.to_string() };
        metrics.connections.get_or_create(&label).inc();
        let gauge = metrics.active.get_or_create(&label).clone();
        gauge.inc();
        Self { gauge }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_series_per_database_no_name_is_shown() {
        let metrics = Metrics::default();
        let guard = ActiveGuard::new(&metrics, "kate-pg");
        let text = metrics.encode();
        assert!(text.contains("devdb_proxy_active_connections{route=\"*\"} 1") && !text.contains("kate-pg"), "{text}");
        drop(guard);
    }

    #[test]
    fn active_sessions_are_counted_while_alive() {
        let metrics = Metrics::new(true);
        let guard = ActiveGuard::new(&metrics, "kate-pg");
        assert!(metrics.encode().contains("devdb_proxy_active_connections{route=\"kate-pg\"} 1"));
        drop(guard);
        let text = metrics.encode();
        assert!(text.contains("devdb_proxy_active_connections{route=\"kate-pg\"} 0"), "{text}");
        assert!(text.contains("devdb_proxy_connections_total{route=\"kate-pg\"} 1"), "{text}");
    }
}
