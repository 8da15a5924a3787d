//! Types that cross the boundary between the DevDB proxy and the controller. No I/O lives here.
//!
//! # Layout
//! - [`api`]: the controller's REST request and response types.
//! - [`metrics`]: a database's monitoring points over a range.
//! - [`reports`]: use against quotas, the usage report, a project's personal-data scan.
//! - [`names`]: validated DNS-label names of databases and projects ([`Name`]).
//! - [`route`]: the routing-table wire format ([`Route`], [`RouteTable`], [`RouteChanges`]) and the one rule that
//!   maps a host name `<name>.<domain>` to a route key and back ([`Domain`]).
//! - [`source`]: the display form of a source URL, the one place secrets in it are hidden.
//! - [`size`]: sizes in bytes as people read and write them.

pub mod api;
pub mod metrics;
pub mod names;
pub mod reports;
pub mod route;
pub mod size;
pub mod source;

pub use names::{Name, NameError};

/// The `application_name` of the controller's monitoring sessions through the proxy: they
/// neither count as activity nor wake an asleep database. A client that sends it only opts its
/// own session out of both.
pub const MONITOR_APPLICATION_NAME: &str = "devdb-monitor";
pub use route::{Domain, DomainError, HostError, Route, RouteChanges, RouteState, RouteTable, RouteUpdate};
