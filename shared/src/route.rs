//! The routing table's wire format and the host-name rule: `<name>.<domain>` ↔ route key `<name>`.
//!
//! The proxy parses SNI host names with [`Domain::route_key`]; the controller builds connection
//! host names with [`Domain::host_for`]. Both live here so the rule exists exactly once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::names::{Name, NameError};

/// The DNS suffix under which every database instance has a host name, e.g. `db.devdb.example.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Domain(String);

/// Why a string is not a usable [`Domain`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid domain {0:?}: expected DNS labels separated by dots, such as db.devdb.example.com")]
pub struct DomainError(String);

impl Domain {
    /// Validates and normalises (lower case, no trailing dot) a domain.
    ///
    /// # Errors
    /// [`DomainError`] when any label is empty, too long or has characters outside `[a-z0-9-]`.
    pub fn new(s: &str) -> Result<Self, DomainError> {
        let norm = s.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if norm.is_empty() || !norm.split('.').all(label_ok) {
            return Err(DomainError(s.to_string()));
        }
        Ok(Self(norm))
    }

    /// The domain as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host name clients use for the instance `name`: `<name>.<domain>`.
    pub fn host_for(&self, name: &Name) -> String {
        format!("{name}.{}", self.0)
    }

    /// The route key named by a host name (usually the TLS SNI): `kate-pg.db.example.com` under
    /// `db.example.com` is `kate-pg`. Matching ignores case and a trailing dot, as DNS does.
    ///
    /// # Errors
    /// [`HostError::NotUnderDomain`] when the host is not exactly one label below the domain,
    /// [`HostError::BadName`] when that label is not a valid [`Name`].
    pub fn route_key(&self, host: &str) -> Result<Name, HostError> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let label = host
            .strip_suffix(self.0.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .filter(|label| !label.is_empty() && !label.contains('.'))
            .ok_or_else(|| HostError::NotUnderDomain { host: host.clone() })?;
        Name::new(label).map_err(|source| HostError::BadName { host: host.clone(), source })
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Domain {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// Why a host name does not name a database instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host {host:?} is not a name directly under the domain")]
    NotUnderDomain { host: String },
    #[error("host {host:?} does not start with a valid database name: {source}")]
    BadName { host: String, source: NameError },
}

/// Whether a route's backend can take connections now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RouteState {
    /// Accepting connections.
    #[default]
    Ready,
    /// Being created or woken: the proxy holds new connections for a bounded time.
    Starting,
    /// Not running, and cannot be woken (failed): connections are refused at once.
    Stopped,
    /// Stopped, with its data kept: a connection wakes it (the proxy asks the controller to
    /// start it and holds the client meanwhile).
    Asleep,
}

impl fmt::Display for RouteState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ready => "ready",
            Self::Starting => "starting",
            Self::Stopped => "stopped",
            Self::Asleep => "asleep",
        })
    }
}

/// One entry of the routing table: where the instance `name` is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The route key, i.e. the first label of the instance's host name.
    pub name: Name,
    /// `host:port` of the PostgreSQL server, resolved when a session connects (so a Kubernetes
    /// service name works).
    pub backend: String,
    #[serde(default)]
    pub state: RouteState,
}

/// A whole routing table: the routes file's content and the controller's snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RouteTable {
    /// Increases with every change; absent in hand-written files.
    #[serde(default)]
    pub version: u64,
    pub routes: Vec<Route>,
}

impl RouteTable {
    /// What changed from this table to `newer`: its routes added or changed, and the names of
    /// those it no longer has.
    pub fn changes_to(&self, newer: &RouteTable) -> RouteChanges {
        let old: std::collections::HashMap<&Name, &Route> = self.routes.iter().map(|r| (&r.name, r)).collect();
        let now: std::collections::HashSet<&Name> = newer.routes.iter().map(|r| &r.name).collect();
        RouteChanges {
            version: newer.version,
            changed: newer.routes.iter().filter(|r| old.get(&r.name) != Some(r)).cloned().collect(),
            removed: self.routes.iter().filter(|r| !now.contains(&r.name)).map(|r| r.name.clone()).collect(),
        }
    }
}

/// A change of the routing table: what `GET /v1/routes/watch?changes=true` sends after the
/// whole table (a heartbeat is a change of nothing), so a proxy is not sent a thousand routes
/// for one database that woke.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RouteChanges {
    /// The table's version once applied.
    pub version: u64,
    /// Routes added or changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<Route>,
    /// Names whose routes are gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Name>,
}

/// One line of the routes watch stream: a whole table (always the first), or a change of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RouteUpdate {
    Table(RouteTable),
    Changes(RouteChanges),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_names_only_the_routes_added_changed_or_removed_and_lines_tell_tables_from_changes() {
        let route = |name: &str, state: RouteState| Route {
            name: Name::new(name).expect("name"),
            backend: "b:5432".into(),
            state,
        };
        let before = RouteTable {
            version: 7,
            routes: vec![route("a", RouteState::Ready), route("b", RouteState::Asleep), route("c", RouteState::Ready)],
        };
        let after = RouteTable {
            version: 8,
            routes: vec![
                route("a", RouteState::Ready),
                route("b", RouteState::Starting),
                route("d", RouteState::Ready),
            ],
        };
        let changes = before.changes_to(&after);
        assert_eq!(changes.version, 8);
        assert_eq!(changes.changed, vec![route("b", RouteState::Starting), route("d", RouteState::Ready)]);
        assert_eq!(changes.removed, vec![Name::new("c").expect("name")]);
        assert_eq!(after.changes_to(&after), RouteChanges { version: 8, ..RouteChanges::default() }, "a heartbeat");

        let line = serde_json::to_string(&RouteUpdate::Changes(changes.clone())).expect("json");
        assert_eq!(serde_json::from_str::<RouteUpdate>(&line).expect("parses"), RouteUpdate::Changes(changes));
        let line = serde_json::to_string(&RouteUpdate::Table(after.clone())).expect("json");
        assert_eq!(serde_json::from_str::<RouteUpdate>(&line).expect("parses"), RouteUpdate::Table(after));
        let heartbeat = serde_json::to_string(&RouteChanges { version: 9, ..RouteChanges::default() }).expect("json");
        assert_eq!(heartbeat, r#"{"version":9}"#);
        assert!(matches!(serde_json::from_str::<RouteUpdate>(&heartbeat), Ok(RouteUpdate::Changes(_))));
    }

    fn domain() -> Domain {
        Domain::new("db.devdb.example.com").expect("valid domain")
    }

    #[test]
    fn host_names_map_to_route_keys() {
        let d = domain();
        for (host, key) in [
            ("kate-pg.db.devdb.example.com", "kate-pg"),
            ("KATE-PG.DB.DEVDB.EXAMPLE.COM", "kate-pg"),
            ("kate-pg.db.devdb.example.com.", "kate-pg"),
        ] {
            assert_eq!(d.route_key(host).map(|n| n.to_string()), Ok(key.to_string()), "{host}");
        }
    }

    #[test]
    fn hosts_outside_the_domain_are_refused() {
        let d = domain();
        for host in [
            "db.devdb.example.com",
            ".db.devdb.example.com",
            "a.b.db.devdb.example.com",
            "kate-pg.example.com",
            "kate-pgdb.devdb.example.com",
            "kate-pg.db.devdb.example.com.evil.com",
            "127.0.0.1",
        ] {
            assert!(
                matches!(d.route_key(host), Err(HostError::NotUnderDomain { .. })),
                "{host}: {:?}",
                d.route_key(host)
            );
        }
    }

    #[test]
    fn bad_labels_under_the_domain_say_why() {
        let err = domain().route_key("9lives.db.devdb.example.com").expect_err("refused");
        assert!(matches!(err, HostError::BadName { .. }), "{err:?}");
    }

    #[test]
    fn host_for_round_trips() {
        let d = domain();
        let name = Name::new("kate-pg").expect("valid");
        assert_eq!(d.host_for(&name), "kate-pg.db.devdb.example.com");
        assert_eq!(d.route_key(&d.host_for(&name)), Ok(name));
    }

    #[test]
    fn domains_are_validated_and_normalised() {
        assert_eq!(Domain::new("DB.Example.com.").map(|d| d.to_string()), Ok("db.example.com".into()));
        for bad in ["", ".", "a..b", "-a.b", "a_b.c", "a b"] {
            assert!(Domain::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn route_table_reads_the_documented_file_format() {
        let json = r#"{ "routes": [ { "name": "kate-pg", "backend": "127.0.0.1:5433" },
                                    { "name": "bob", "backend": "bob:5432", "state": "starting" } ] }"#;
        let table: RouteTable = serde_json::from_str(json).expect("parses");
        assert_eq!(table.version, 0);
        assert_eq!(table.routes[0].state, RouteState::Ready);
        assert_eq!(table.routes[1].state, RouteState::Starting);
        assert!(serde_json::from_str::<RouteTable>(r#"{"routes":[{"name":"Bad","backend":"x:1"}]}"#).is_err());
    }
}
