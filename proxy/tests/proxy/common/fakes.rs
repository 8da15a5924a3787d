//! Stand-ins for what the proxy talks to, on loopback ports in the test's runtime:
//! [`FakeBackend`] speaks just enough PostgreSQL (through `pgwire`'s messages) to take a session
//! and records what each session's startup carried; [`FakeController`] is the controller as the
//! proxy sees it (route feed, wakes, activity reports), recording what it is asked.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::BytesMut;
use devdb_shared::{Name, Route, RouteState, RouteTable};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::response::{CommandComplete, ErrorResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey, Startup};
use pgwire::messages::{DecodeContext, PgWireBackendMessage as B, PgWireFrontendMessage as F, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{PASSWORD, USER};

/// A route to `backend` for `name` in `state`.
pub fn route(name: &str, backend: &str, state: RouteState) -> Route {
    Route { name: Name::new(name).expect("name"), backend: backend.into(), state }
}

/// A PostgreSQL server as far as the proxy can tell: it asks for the test password (in
/// cleartext), refuses any other with 28P01 as PostgreSQL does, and then answers each simple
/// query with one row: `SHOW cluster_name` with its name, `SELECT <x>` with `<x>`.
pub struct FakeBackend {
    pub name: String,
    addr: SocketAddr,
    /// Each session's startup parameters, in order of arrival.
    startups: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBackend {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let startups: Arc<Mutex<Vec<_>>> = Arc::default();
        let (seen, cluster) = (Arc::clone(&startups), name.to_string());
        let pids = Arc::new(AtomicI32::new(1000));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, cluster, pid) = (seen.clone(), cluster.clone(), pids.fetch_add(1, Ordering::Relaxed));
                tokio::spawn(async move {
                    let _ = session(stream, &cluster, pid, &seen).await;
                });
            }
        });
        Self { name: name.into(), addr, startups, task }
    }

    /// `host:port`, as a route's backend.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// A ready route to this backend under its own name.
    pub fn route(&self) -> Route {
        route(&self.name, &self.addr(), RouteState::Ready)
    }

    /// The startup parameters of every session so far.
    pub fn startups(&self) -> Vec<BTreeMap<String, String>> {
        self.startups.lock().expect("lock").clone()
    }
}

/// Reads frontend messages off `stream` into `buf`; `None` at end of stream.
async fn next(stream: &mut TcpStream, buf: &mut BytesMut, ctx: &DecodeContext) -> Option<F> {
    loop {
        if let Some(message) = F::decode(buf, ctx).expect("a frontend message") {
            return Some(message);
        }
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

async fn send(stream: &mut TcpStream, messages: Vec<B>) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    for message in messages {
        message.encode(&mut out).expect("encodable");
    }
    stream.write_all(&out).await
}

fn row(value: &str) -> Vec<B> {
    let mut data = BytesMut::new();
    data.extend_from_slice(&(value.len() as i32).to_be_bytes());
    data.extend_from_slice(value.as_bytes());
    let text = FieldDescription::new("?column?".into(), 0, 0, 25, -1, -1, 0);
    vec![
        B::RowDescription(RowDescription::new(vec![text])),
        B::DataRow(DataRow::new(data, 1)),
        B::CommandComplete(CommandComplete::new("SELECT 1".into())),
        B::ReadyForQuery(ReadyForQuery::new(TransactionStatus::Idle)),
    ]
}

async fn session(
    mut stream: TcpStream,
    cluster: &str,
    pid: i32,
    seen: &Mutex<Vec<BTreeMap<String, String>>>,
) -> std::io::Result<()> {
    let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    ctx.awaiting_frontend_ssl = false;
    let mut buf = BytesMut::new();
    let Some(F::Startup(Startup { parameters, .. })) = next(&mut stream, &mut buf, &ctx).await else {
        return Ok(());
    };
    ctx.awaiting_frontend_startup = false;
    let user = parameters.get("user").cloned().unwrap_or_default();
    seen.lock().expect("lock").push(parameters);
    send(&mut stream, vec![B::Authentication(Authentication::CleartextPassword)]).await?;
    let Some(F::PasswordMessageFamily(password)) = next(&mut stream, &mut buf, &ctx).await else {
        return Ok(());
    };
    if password.into_password().map(|p| p.password).ok().as_deref() != Some(PASSWORD) || user != USER {
        let fields = vec![
            (b'S', "FATAL".to_string()),
            (b'V', "FATAL".to_string()),
            (b'C', "28P01".to_string()),
            (b'M', format!("password authentication failed for user \"{user}\"")),
        ];
        return send(&mut stream, vec![B::ErrorResponse(ErrorResponse::new(fields))]).await;
    }
    let status = |name: &str, value: &str| B::ParameterStatus(ParameterStatus::new(name.into(), value.into()));
    send(
        &mut stream,
        vec![
            B::Authentication(Authentication::Ok),
            status("server_version", "17.0"),
            status("server_encoding", "UTF8"),
            status("client_encoding", "UTF8"),
            status("standard_conforming_strings", "on"),
            status("DateStyle", "ISO, MDY"),
            status("integer_datetimes", "on"),
            B::BackendKeyData(BackendKeyData::new(pid, SecretKey::I32(pid.wrapping_mul(7919)))),
            B::ReadyForQuery(ReadyForQuery::new(TransactionStatus::Idle)),
        ],
    )
    .await?;
    while let Some(message) = next(&mut stream, &mut buf, &ctx).await {
        match message {
            F::Query(query) => {
                let sql = query.query.trim().trim_end_matches(';');
                let value = match sql.strip_prefix("SELECT ") {
                    _ if sql.eq_ignore_ascii_case("SHOW cluster_name") => cluster,
                    Some(value) => value,
                    None => sql,
                };
                send(&mut stream, row(value)).await?;
            }
            F::Terminate(_) => break,
            _ => {}
        }
    }
    Ok(())
}

/// What the controller the proxy follows saw and says.
pub struct FakeController {
    pub url: String,
    table: watch::Sender<RouteTable>,
    /// `name` of each start asked for, with `?wake=true` or not.
    starts: Mutex<Vec<(String, bool)>>,
    /// Every activity report, and how many there have been.
    reports: Mutex<Vec<serde_json::Value>>,
    reported: watch::Sender<usize>,
    /// Databases whose start the controller refuses, with its quota message.
    pub over_quota: Mutex<HashSet<String>>,
}

#[derive(serde::Deserialize)]
struct StartQuery {
    #[serde(default)]
    wake: bool,
}

impl FakeController {
    /// Serves a controller with `names` asleep, each routed to `backend`.
    pub async fn start(names: &[&str], backend: &str) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let routes = names.iter().map(|n| route(n, backend, RouteState::Asleep)).collect();
        let fake = Arc::new(Self {
            url: format!("http://{}", listener.local_addr().expect("addr")),
            table: watch::channel(RouteTable { version: 1, routes }).0,
            starts: Mutex::default(),
            reports: Mutex::default(),
            reported: watch::channel(0).0,
            over_quota: Mutex::default(),
        });
        let watch = |State(fake): State<Arc<Self>>| async move {
            let changes = fake.table.subscribe();
            let lines = futures_util::stream::unfold((changes, true), |(mut changes, first)| async move {
                if !first && changes.changed().await.is_err() {
                    return None;
                }
                let line = format!("{}\n", serde_json::to_string(&*changes.borrow_and_update()).expect("json"));
                Some((Ok::<_, std::io::Error>(line), (changes, false)))
            });
            axum::body::Body::from_stream(lines)
        };
        let start = |State(fake): State<Arc<Self>>, Path(name): Path<String>, Query(q): Query<StartQuery>| async move {
            fake.starts.lock().expect("lock").push((name.clone(), q.wake));
            if fake.over_quota.lock().expect("lock").contains(&name) {
                let body = serde_json::json!({"error": {"code": "quota_exceeded", "message": "quota exceeded: running databases: kate has 3 of 3"}});
                return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
            }
            fake.set(&name, RouteState::Ready);
            (StatusCode::ACCEPTED, axum::Json(serde_json::json!({}))).into_response()
        };
        let report = |State(fake): State<Arc<Self>>, axum::Json(body): axum::Json<serde_json::Value>| async move {
            let count = {
                let mut reports = fake.reports.lock().expect("lock");
                reports.push(body);
                reports.len()
            };
            fake.reported.send_replace(count);
            StatusCode::NO_CONTENT
        };
        let app = axum::Router::new()
            .route("/v1/routes/watch", get(watch))
            .route("/v1/databases/{name}/start", post(start))
            .route("/v1/activity", post(report))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// Sets `name`'s state in the table the proxy follows.
    pub fn set(&self, name: &str, state: RouteState) {
        self.table.send_modify(|t| {
            t.version += 1;
            for route in t.routes.iter_mut().filter(|r| r.name.as_str() == name) {
                route.state = state;
            }
        });
    }

    /// For each start of `name` asked for, whether it was a proxy's wake.
    pub fn starts(&self, name: &str) -> Vec<bool> {
        self.starts.lock().expect("lock").iter().filter(|(n, _)| n == name).map(|(_, wake)| *wake).collect()
    }

    /// Every activity report so far.
    pub fn reports(&self) -> Vec<serde_json::Value> {
        self.reports.lock().expect("lock").clone()
    }

    /// Waits until the proxy has reported twice after the first `from` reports (so one report
    /// covers only what happened after this call); returns every report so far.
    pub async fn reports_after(&self, from: usize) -> Vec<serde_json::Value> {
        let mut reported = self.reported.subscribe();
        reported.wait_for(|count| *count >= from + 2).await.expect("the controller is up");
        self.reports()
    }
}
