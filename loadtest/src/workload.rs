//! The clients: each runs the chosen workload in its own task and keeps its own histograms and
//! error counts, merged at the end (no shared lock on the hot path).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{LoadArgs, Mode};
use crate::report::{self, Errors, Latency, Memory, Report};
use crate::tls::{self, TlsError};

/// Why a run could not start (failures during the run are counted in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("preparing {name}: {reason}")]
    Setup { name: String, reason: String },
    #[error("--clients must be at least 1 and --names must not be empty")]
    NoClients,
}

/// Sessions opened at once in idle mode.
const OPENING: usize = 64;

/// The longest a session may take to open (TCP, TLS, authentication): a target that accepts
/// and then stalls is reported, not waited on forever.
const OPEN_LIMIT: Duration = Duration::from_secs(30);

/// What one client did.
struct Tally {
    latency: Histogram<u64>,
    connect: Histogram<u64>,
    by_kind: BTreeMap<&'static str, u64>,
    errors: Errors,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: report::histogram(),
            connect: report::histogram(),
            by_kind: BTreeMap::new(),
            errors: Errors::default(),
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        let _ = self.connect.add(&other.connect);
        for (kind, n) in other.by_kind {
            *self.by_kind.entry(kind).or_default() += n;
        }
        self.errors.merge(other.errors);
    }
}

/// When to count, when to stop.
struct Window {
    measure_from: Instant,
    until: Option<Instant>,
    /// With --count: transactions claimed so far, and the total.
    claimed: AtomicU64,
    count: Option<u64>,
}

impl Window {
    fn measuring(&self, at: Instant) -> bool {
        at >= self.measure_from
    }

    /// Whether a client may start another transaction.
    fn next(&self) -> bool {
        let now = Instant::now();
        if self.until.is_some_and(|until| now >= until) {
            return false;
        }
        match self.count {
            Some(count) if self.measuring(now) => self.claimed.fetch_add(1, Ordering::Relaxed) < count,
            _ => true,
        }
    }
}

/// The load generator, ready to run.
pub struct Load {
    args: LoadArgs,
    tls: MakeRustlsConnect,
}

impl Load {
    /// # Errors
    /// When TLS cannot be set up or there is nobody to run.
    pub fn new(args: LoadArgs) -> Result<Self, LoadError> {
        if args.clients == 0 || args.names.is_empty() {
            return Err(LoadError::NoClients);
        }
        let tls = tls::connector(args.ca.as_deref())?;
        Ok(Self { args, tls })
    }

    /// Where the report says it connected.
    pub fn target(&self) -> String {
        match &self.args.domain {
            Some(domain) => format!("{} (SNI *.{domain})", self.args.addr),
            None => self.args.addr.to_string(),
        }
    }

    /// Session settings of client `i`.
    fn session(&self, i: usize) -> tokio_postgres::Config {
        let a = &self.args;
        let mut config = tokio_postgres::Config::new();
        match &a.domain {
            Some(domain) => config.host(format!("{}.{domain}", a.names[i % a.names.len()])).hostaddr(a.addr.ip()),
            None => config.host(a.addr.ip().to_string()),
        };
        config
            .port(a.addr.port())
            .user(&a.user)
            .password(&a.password)
            .dbname(&a.dbname)
            .ssl_mode(SslMode::Require)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    async fn connect(&self, i: usize) -> Result<tokio_postgres::Client, String> {
        self.open(i).await.map(|(client, _)| client)
    }

    /// Opens client `i`'s session within [`OPEN_LIMIT`]; the task driving it ends with it.
    async fn open(&self, i: usize) -> Result<(tokio_postgres::Client, JoinHandle<()>), String> {
        match tokio::time::timeout(OPEN_LIMIT, self.session(i).connect(self.tls.clone())).await {
            Ok(Ok((client, connection))) => Ok((client, tokio::spawn(async move { drop(connection.await) }))),
            Ok(Err(error)) => Err(describe(&error)),
            Err(_) => Err(format!("opening the session took over {}", humantime::format_duration(OPEN_LIMIT))),
        }
    }

    /// Runs the workload; `done` counts transactions as they complete (for a progress line).
    ///
    /// # Errors
    /// When the query workload's table cannot be prepared.
    pub async fn run(self: Arc<Self>, done: Arc<AtomicU64>) -> Result<Report, LoadError> {
        match self.args.mode {
            Mode::Idle => Ok(self.idle(done).await),
            mode => {
                if mode == Mode::Query {
                    self.prepare().await?;
                }
                Ok(self.timed(done).await)
            }
        }
    }

    /// Creates the query workload's table in each database.
    async fn prepare(&self) -> Result<(), LoadError> {
        for (i, name) in self.args.names.iter().enumerate() {
            let setup = async {
                self.connect(i)
                    .await?
                    .batch_execute(
                        "CREATE TABLE IF NOT EXISTS devdb_loadtest \
                         (id bigserial PRIMARY KEY, client int NOT NULL, at timestamptz NOT NULL DEFAULT now())",
                    )
                    .await
                    .map_err(|e| describe(&e))
            };
            setup.await.map_err(|reason| LoadError::Setup { name: name.clone(), reason })?;
        }
        Ok(())
    }

    /// Connect and query modes: every client until the window closes.
    async fn timed(self: Arc<Self>, done: Arc<AtomicU64>) -> Report {
        let start = Instant::now();
        let measure_from = start + self.args.warmup;
        let window = Arc::new(Window {
            measure_from,
            until: self.args.count.is_none().then(|| measure_from + self.args.duration),
            claimed: AtomicU64::new(0),
            count: self.args.count,
        });
        let clients: Vec<_> = (0..self.args.clients)
            .map(|i| {
                let (load, window, done) = (self.clone(), window.clone(), done.clone());
                tokio::spawn(async move {
                    match load.args.mode {
                        Mode::Connect => load.connect_client(i, &window, &done).await,
                        _ => load.query_client(i, &window, &done).await,
                    }
                })
            })
            .collect();
        let mut total = Tally::new();
        for client in clients {
            match client.await {
                Ok(tally) => total.merge(tally),
                Err(panic) => total.errors.add(&format!("a client task failed: {panic}")),
            }
        }
        let seconds = Instant::now().saturating_duration_since(measure_from).as_secs_f64();
        self.report(total, seconds, None)
    }

    fn report(&self, total: Tally, seconds: f64, memory: Option<Memory>) -> Report {
        let latency = Latency::from(&total.latency);
        Report {
            mode: self.args.mode,
            target: self.target(),
            clients: self.args.clients,
            seconds,
            transactions: latency.count,
            by_kind: total.by_kind,
            per_second: if seconds > 0.0 { latency.count as f64 / seconds } else { 0.0 },
            latency,
            connect: (self.args.mode == Mode::Connect).then(|| Latency::from(&total.connect)),
            errors: total.errors.count,
            error_samples: total.errors.samples,
            memory,
        }
    }

    async fn connect_client(&self, i: usize, window: &Window, done: &AtomicU64) -> Tally {
        let mut tally = Tally::new();
        while window.next() {
            let began = Instant::now();
            let transaction = async {
                let (client, connection) = self.open(i).await?;
                let connected = began.elapsed();
                client.simple_query("SELECT 1").await.map_err(|e| describe(&e))?;
                drop(client);
                let _ = connection.await;
                Ok::<_, String>(connected)
            };
            let result = transaction.await;
            if !window.measuring(began) {
                continue;
            }
            match result {
                Ok(connected) => {
                    report::record(&mut tally.latency, began.elapsed());
                    report::record(&mut tally.connect, connected);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => tally.errors.add(&error),
            }
        }
        tally
    }

    async fn query_client(&self, i: usize, window: &Window, done: &AtomicU64) -> Tally {
        let mut tally = Tally::new();
        let mut session = None;
        let mut turn = 0_usize;
        while window.next() {
            let began = Instant::now();
            let result = async {
                if session.is_none() {
                    let client = self.connect(i).await?;
                    let select = client.prepare("SELECT $1::int4 + 1").await.map_err(|e| describe(&e))?;
                    let insert = client
                        .prepare("INSERT INTO devdb_loadtest (client) VALUES ($1)")
                        .await
                        .map_err(|e| describe(&e))?;
                    session = Some((client, select, insert));
                }
                let Some((client, select, insert)) = &session else { unreachable!("connected above") };
                let client_id = i32::try_from(i).unwrap_or(i32::MAX);
                let (kind, result) = match turn % 3 {
                    0 => ("simple", client.simple_query("SELECT 1").await.map(drop)),
                    1 => ("prepared", client.query_one(select, &[&client_id]).await.map(drop)),
                    _ => ("insert", client.execute(insert, &[&client_id]).await.map(drop)),
                };
                result.map(|()| kind).map_err(|e| describe(&e))
            }
            .await;
            turn += 1;
            match result {
                Ok(kind) if window.measuring(began) => {
                    report::record(&mut tally.latency, began.elapsed());
                    *tally.by_kind.entry(kind).or_default() += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(error) => {
                    if window.measuring(began) {
                        tally.errors.add(&error);
                    }
                    // A broken session is opened again; an unreachable target is not hammered.
                    session = None;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        tally
    }

    /// Idle mode: opens the sessions, holds them, checks each still answers.
    async fn idle(self: Arc<Self>, done: Arc<AtomicU64>) -> Report {
        let before = self.args.watch_pid.and_then(rss_bytes);
        let began = Instant::now();
        let opened: Vec<(usize, Result<tokio_postgres::Client, String>, Duration)> =
            futures_util::stream::iter(0..self.args.clients)
                .map(|i| {
                    let (load, done) = (self.clone(), done.clone());
                    async move {
                        let began = Instant::now();
                        let session = load.connect(i).await;
                        if session.is_ok() {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        (i, session, began.elapsed())
                    }
                })
                .buffer_unordered(OPENING)
                .collect()
                .await;
        let opening = began.elapsed();
        let mut tally = Tally::new();
        let mut sessions = Vec::new();
        for (_, session, took) in opened {
            match session {
                Ok(client) => {
                    report::record(&mut tally.latency, took);
                    sessions.push(client);
                }
                Err(error) => tally.errors.add(&error),
            }
        }
        // Let allocations settle before reading the memory.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = self.args.watch_pid.and_then(rss_bytes);
        tokio::time::sleep(self.args.duration).await;
        for client in &sessions {
            if let Err(error) = client.simple_query("SELECT 1").await {
                tally.errors.add(&format!("an idle session no longer answers: {}", describe(&error)));
            }
        }
        let memory = match (self.args.watch_pid, before, after) {
            (Some(pid), Some(before), Some(after)) => Some(Memory {
                pid,
                rss_before_bytes: before,
                rss_after_bytes: after,
                bytes_per_session: after.saturating_sub(before) / (sessions.len().max(1) as u64),
            }),
            _ => None,
        };
        self.report(tally, opening.as_secs_f64(), memory)
    }
}

/// An error as the server said it (SQLSTATE and message), or the whole chain of causes.
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// Resident memory of a process, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
