//! Process plumbing every DevDB binary shares: logging ([`telemetry`]), the shutdown signal
//! ([`shutdown`]) and how a binary reports a fatal error and exits ([`exit`]).

pub mod exit;
pub mod shutdown;
pub mod telemetry;
