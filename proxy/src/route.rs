//! Stage 2 of a connection: which database instance the client asked for, and whether it can
//! take the session now.
//!
//! The name comes from the TLS SNI `<name>.<domain>`; clients that send no SNI (host given as an
//! IP address, drivers without SNI) may name it in the startup `options` as `endpoint=<name>`,
//! which is stripped before the startup message reaches PostgreSQL.

use std::time::Duration;

use devdb_shared::{Domain, HostError, Name, Route, RouteState};
use pgwire::messages::startup::Startup;

use crate::error::{ClientFacing, Side, client_error, sqlstate};
use crate::protocol::ClientError;
use crate::routes::Routes;

/// Why a session has nowhere to go.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no SNI and no endpoint option")]
    NoName { domain: Domain },
    #[error("SNI host {host:?} is not under {domain}")]
    ForeignHost { host: String, domain: Domain },
    #[error("invalid database instance name: {0}")]
    BadName(String),
    #[error("unknown database instance {0}")]
    Unknown(Name),
    #[error("database instance {0} still starting")]
    Starting(Name),
    #[error("database instance {0} is stopped")]
    Stopped(Name),
    #[error("database instance {0} is asleep and nothing can wake it")]
    Asleep(Name),
    /// Over a wake limit, or refused by the controller: the reason is for the log only.
    #[error("database instance {name} cannot be woken: {why}")]
    WakeRefused { name: Name, why: crate::activity::WakeError },
}

impl ClientFacing for RouteError {
    fn client_error(&self) -> Option<ClientError> {
        use sqlstate::*;
        Some(match self {
            Self::NoName { domain } => client_error(
                PROTOCOL_VIOLATION,
                format!("no database instance named: use host <name>.{domain} or options=endpoint=<name>"),
            )
            .detail("the client sent no TLS server name (SNI); libpq sends none when host is an IP address")
            .hint(format!(
                "connect with host=<name>.{domain} (add hostaddr=<ip> to skip DNS), or add options=endpoint=<name>"
            )),
            Self::ForeignHost { host, domain } => {
                client_error(PROTOCOL_VIOLATION, format!("host \"{host}\" is not under \"{domain}\""))
                    .hint(format!("connect to <name>.{domain}, or add options=endpoint=<name>"))
            }
            Self::BadName(why) => client_error(PROTOCOL_VIOLATION, format!("invalid database instance name: {why}")),
            Self::Unknown(name) => {
                client_error(UNKNOWN_DATABASE, format!("database instance \"{name}\" does not exist"))
                    .hint("check the name; `devdb db list` shows your databases")
            }
            Self::Starting(name) => {
                client_error(CANNOT_CONNECT_NOW, format!("database instance \"{name}\" is starting, retry"))
                    .hint("it is being created or woken from sleep; connect again in a moment (`devdb db show` tells)")
            }
            Self::Stopped(name) => client_error(CANNOT_CONNECT_NOW, format!("database instance \"{name}\" is stopped"))
                .hint("it failed: `devdb db show` says why; `devdb db reset` makes it again"),
            Self::Asleep(name) => client_error(CANNOT_CONNECT_NOW, format!("database instance \"{name}\" is asleep"))
                .hint(format!("start it with `devdb db start {name}`")),
            // One answer, whatever the reason (a wake limit, the owner's quota): a client that
            // has not authenticated learns nothing of the owner, its quotas or its databases.
            Self::WakeRefused { name, .. } => client_error(
                CANNOT_CONNECT_NOW,
                format!("database instance \"{name}\" is asleep and cannot be woken now"),
            )
            .hint(format!("retry later, or start it with `devdb db start {name}`, which says why if it cannot")),
        })
    }

    fn side(&self) -> Side {
        Side::Client
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::NoName { .. } => "no_name",
            Self::ForeignHost { .. } => "foreign_host",
            Self::BadName(_) => "bad_name",
            Self::Unknown(_) => "unknown_name",
            Self::Starting(_) => "starting",
            Self::Stopped(_) => "stopped",
            Self::Asleep(_) => "asleep",
            Self::WakeRefused { why: crate::activity::WakeError::Limited(_), .. } => "wake_limited",
            Self::WakeRefused { .. } => "wake_refused",
        }
    }
}

/// Names the instance a session is for, and strips `endpoint=` from the startup options.
///
/// The SNI wins when it is under the domain; a host name outside it (a CNAME of the client's
/// own, say) falls back to `endpoint=`.
///
/// # Errors
/// [`RouteError`] when no usable name was given.
pub fn target(sni: Option<&str>, startup: &mut Startup, domain: &Domain) -> Result<Name, RouteError> {
    let endpoint = take_endpoint_option(startup);
    let from_endpoint = |endpoint: String| Name::new(endpoint).map_err(|e| RouteError::BadName(e.to_string()));
    match (sni, endpoint) {
        (Some(host), endpoint) => match domain.route_key(host) {
            Ok(name) => Ok(name),
            Err(HostError::BadName { source, .. }) => Err(RouteError::BadName(source.to_string())),
            Err(HostError::NotUnderDomain { .. }) => match endpoint {
                Some(endpoint) => from_endpoint(endpoint),
                None => Err(RouteError::ForeignHost { host: host.to_string(), domain: domain.clone() }),
            },
        },
        (None, Some(endpoint)) => from_endpoint(endpoint),
        (None, None) => Err(RouteError::NoName { domain: domain.clone() }),
    }
}

/// Whether the session is the controller's sampling ([`devdb_shared::MONITOR_APPLICATION_NAME`]):
/// it keeps no database busy and wakes none.
pub fn is_monitor(startup: &Startup) -> bool {
    startup.parameters.get("application_name").is_some_and(|a| a == devdb_shared::MONITOR_APPLICATION_NAME)
}

/// Who wakes an asleep database for a session: the controller, asked for a client at `client`
/// (the PROXY protocol's address when there is one), which has not authenticated.
#[derive(Clone, Copy)]
pub struct Waker<'a> {
    pub controller: &'a crate::activity::Controller,
    pub client: std::net::IpAddr,
}

/// Waits (up to `wait`) for the instance to be ready and returns its route. An asleep one is
/// woken by `waker` first; the client's startup packet waits meanwhile.
///
/// # Errors
/// [`RouteError::Unknown`], [`RouteError::Stopped`], [`RouteError::Asleep`] without a waker,
/// [`RouteError::WakeRefused`] over a wake limit or the owner's quota, or
/// [`RouteError::Starting`] when the wait runs out.
pub async fn ready(
    routes: &Routes,
    name: &Name,
    wait: Duration,
    waker: Option<Waker<'_>>,
) -> Result<Route, RouteError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = routes.subscribe();
    let mut woken = false;
    // A wake this session asked for: others join it until this returns (the route changed).
    let mut _waking = None;
    // Another session's wake this one joined: when it ends with the database still asleep
    // (refused, or that session gone), this one asks for itself.
    let mut joined: Option<tokio::sync::watch::Receiver<()>> = None;
    loop {
        let route = match routes.get(name) {
            Some(route) => route,
            // No table yet (the proxy, or the controller it follows, just started): every name
            // would look unknown; wait for the first one.
            None if !routes.loaded() => {
                if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                    return Err(RouteError::Starting(name.clone()));
                }
                continue;
            }
            None => return Err(RouteError::Unknown(name.clone())),
        };
        match route.state {
            RouteState::Ready => return Ok(route),
            RouteState::Stopped => return Err(RouteError::Stopped(name.clone())),
            RouteState::Asleep => match waker {
                None => return Err(RouteError::Asleep(name.clone())),
                Some(Waker { controller, client }) if !woken && joined.is_none() => {
                    match controller.wake(name, client).await {
                        Ok(crate::activity::Wake::Asked(waking)) => (woken, _waking) = (true, Some(waking)),
                        Ok(crate::activity::Wake::Joined(under_way)) => joined = Some(under_way),
                        Ok(crate::activity::Wake::NotTaken) => woken = true,
                        Err(why) => return Err(RouteError::WakeRefused { name: name.clone(), why }),
                    }
                }
                Some(_) => {}
            },
            RouteState::Starting => {}
        }
        let wake_ended = async {
            match joined.as_mut() {
                // Only its end is sent (the sender dropped).
                Some(under_way) => while under_way.changed().await.is_ok() {},
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, changes.changed()) => {
                if changed.is_err() {
                    return Err(RouteError::Starting(name.clone()));
                }
            }
            () = wake_ended => joined = None,
        }
    }
}

/// Removes an `endpoint=<name>` token from the `options` parameter and returns the name.
fn take_endpoint_option(startup: &mut Startup) -> Option<String> {
    let options = startup.parameters.get("options")?;
    let mut endpoint = None;
    let rest: Vec<&str> = split_options(options)
        .into_iter()
        .filter(|token| match token.strip_prefix("endpoint=").or_else(|| token.strip_prefix("--endpoint=")) {
            Some(value) => {
                endpoint = Some(value.to_string());
                false
            }
            None => true,
        })
        .collect();
    endpoint.as_ref()?;
    if rest.is_empty() {
        startup.parameters.remove("options");
    } else {
        startup.parameters.insert("options".into(), rest.join(" "));
    }
    endpoint
}

/// Splits `options` on whitespace not escaped with a backslash, as PostgreSQL does
/// (`pg_split_opts`), keeping each token's escapes so it is forwarded unchanged.
fn split_options(options: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut start = None;
    let mut escaped = false;
    for (i, c) in options.char_indices() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => {
                escaped = true;
                start.get_or_insert(i);
            }
            (false, c) if c.is_ascii_whitespace() => {
                if let Some(s) = start.take() {
                    tokens.push(&options[s..i]);
                }
            }
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    if let Some(s) = start {
        tokens.push(&options[s..]);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use devdb_shared::RouteTable;

    fn domain() -> Domain {
        Domain::new("db.test").expect("valid")
    }

    fn startup(options: Option<&str>) -> Startup {
        let mut s = Startup::new();
        s.parameters.insert("user".into(), "kate".into());
        if let Some(o) = options {
            s.parameters.insert("options".into(), o.into());
        }
        s
    }

    #[test]
    fn only_the_monitors_exact_application_name_marks_a_monitor() {
        let mut s = startup(None);
        assert!(!is_monitor(&s));
        s.parameters.insert("application_name".into(), "devdb-monitor".into());
        assert!(is_monitor(&s));
        s.parameters.insert("application_name".into(), "devdb-monitor-x".into());
        assert!(!is_monitor(&s));
    }

    #[test]
    fn sni_names_the_instance() {
        let mut s = startup(None);
        assert_eq!(
            target(Some("kate-pg.db.test"), &mut s, &domain()).ok().map(|n| n.to_string()),
            Some("kate-pg".into())
        );
    }

    #[test]
    fn endpoint_option_names_the_instance_and_is_stripped() {
        let mut s = startup(Some("-c search_path=a\\ b endpoint=kate-pg  -c work_mem=4MB"));
        assert_eq!(target(None, &mut s, &domain()).ok().map(|n| n.to_string()), Some("kate-pg".into()));
        assert_eq!(s.parameters.get("options").map(String::as_str), Some("-c search_path=a\\ b -c work_mem=4MB"));
        let mut s = startup(Some("endpoint=kate-pg"));
        assert!(target(None, &mut s, &domain()).is_ok());
        assert!(!s.parameters.contains_key("options"), "empty options are removed");
        let mut s = startup(Some("--endpoint=kate-pg"));
        assert_eq!(target(None, &mut s, &domain()).ok().map(|n| n.to_string()), Some("kate-pg".into()));
    }

    #[test]
    fn endpoint_is_stripped_even_when_sni_decides() {
        let mut s = startup(Some("endpoint=other"));
        assert_eq!(
            target(Some("kate-pg.db.test"), &mut s, &domain()).ok().map(|n| n.to_string()),
            Some("kate-pg".into())
        );
        assert!(!s.parameters.contains_key("options"));
    }

    #[test]
    fn foreign_sni_falls_back_to_endpoint_or_is_refused() {
        let mut s = startup(Some("endpoint=kate-pg"));
        assert_eq!(
            target(Some("db.mycorp.com"), &mut s, &domain()).ok().map(|n| n.to_string()),
            Some("kate-pg".into())
        );
        let mut s = startup(None);
        assert!(matches!(target(Some("db.mycorp.com"), &mut s, &domain()), Err(RouteError::ForeignHost { .. })));
    }

    #[test]
    fn missing_and_invalid_names_are_refused() {
        assert!(matches!(target(None, &mut startup(None), &domain()), Err(RouteError::NoName { .. })));
        assert!(matches!(target(None, &mut startup(Some("-c a=b")), &domain()), Err(RouteError::NoName { .. })));
        assert!(matches!(target(None, &mut startup(Some("endpoint=Bad")), &domain()), Err(RouteError::BadName(_))));
    }

    #[test]
    fn every_route_error_has_its_contract_sqlstate() {
        let n = || Name::new("x").expect("valid");
        for (err, code) in [
            (RouteError::NoName { domain: domain() }, "08P01"),
            (RouteError::ForeignHost { host: "h".into(), domain: domain() }, "08P01"),
            (RouteError::Unknown(n()), "3D000"),
            (RouteError::Starting(n()), "57P03"),
            (RouteError::Stopped(n()), "57P03"),
            (RouteError::Asleep(n()), "57P03"),
            (RouteError::WakeRefused { name: n(), why: crate::activity::WakeError::Refused("quota".into()) }, "57P03"),
        ] {
            assert_eq!(err.client_error().map(|e| e.code), Some(code), "{err}");
        }
    }

    #[test]
    fn a_refused_wake_tells_the_client_nothing_of_why() {
        let refused = |why| RouteError::WakeRefused { name: Name::new("kate-pg").expect("valid"), why };
        let quota =
            refused(crate::activity::WakeError::Refused("quota exceeded: running databases: kate has 3 of 3".into()))
                .client_error()
                .expect("an error");
        let limited = refused(crate::wake::Limited::Database(2).into()).client_error().expect("an error");
        assert_eq!((quota.code, &quota.message, &quota.hint), (limited.code, &limited.message, &limited.hint));
        let shown = format!("{} {:?} {:?}", quota.message, quota.detail, quota.hint);
        for secret in ["kate has", "quota", "3 of 3", "limit"] {
            assert!(!shown.contains(secret), "{secret}: {shown}");
        }
    }

    #[tokio::test]
    async fn a_starting_route_is_awaited_until_ready_or_the_limit() {
        let routes = Routes::default();
        let name = Name::new("kate-pg").expect("valid");
        let route = |state| Route { name: name.clone(), backend: "127.0.0.1:1".into(), state };
        routes.replace(RouteTable { version: 1, routes: vec![route(RouteState::Starting)] });
        let err = ready(&routes, &name, Duration::from_millis(20), None).await.expect_err("still starting");
        assert!(matches!(err, RouteError::Starting(_)));

        let waiter = tokio::spawn({
            let (routes, name) = (routes.clone(), name.clone());
            async move { ready(&routes, &name, Duration::from_secs(30), None).await }
        });
        tokio::task::yield_now().await;
        routes.upsert(route(RouteState::Ready));
        let got = waiter.await.expect("joined").expect("ready");
        assert_eq!(got.state, RouteState::Ready);
        // Before the first table a name is not unknown yet: it waits for the table.
        let fresh = Routes::default();
        let waiter = tokio::spawn({
            let (fresh, name) = (fresh.clone(), name.clone());
            async move { ready(&fresh, &name, Duration::from_secs(30), None).await }
        });
        tokio::task::yield_now().await;
        fresh.replace(RouteTable { version: 1, routes: vec![route(RouteState::Ready)] });
        assert_eq!(waiter.await.expect("joined").expect("found once loaded").state, RouteState::Ready);
        let empty = Routes::default();
        empty.replace(RouteTable::default());
        assert!(matches!(ready(&empty, &name, Duration::from_secs(30), None).await, Err(RouteError::Unknown(_))));
        // Asleep, with nothing to wake it (a routes file): refused at once.
        routes.upsert(route(RouteState::Asleep));
        let err = ready(&routes, &name, Duration::from_secs(30), None).await.expect_err("asleep");
        assert!(matches!(err, RouteError::Asleep(_)));
    }
}
