//! Sampling a local instance for the monitor: over its private socket, into its `postgres`
//! database (never the tenant's own, see [`devdb_core::monitor::sampling`]), as the monitoring
//! role [`MONITOR_ROLE`], on a blocking thread whose every read and write gives up after
//! [`SAMPLE_BOUND`], and no more than [`SampleLimit`] lets run at once: a sample that stalls
//! ends on its own, and stalled samples never take the blocking threads clones, starts and stops
//! need.
//!
//! The role may log in, reads statistics (`pg_read_all_stats`: every session's state, any
//! database's size) and nothing more; it has no password, so only the private socket (trusted)
//! lets it in. A snapshot never holds it (restores make none but the project's role), so the
//! first sample of each instance makes it, as superuser in a session bounded like the sample's:
//! clones of every snapshot, older ones included, and instances adopted from an earlier
//! controller all get it the same way.

use std::path::{Path, PathBuf};

use devdb_core::monitor::sampling::{SAMPLE_BOUND, SAMPLE_DATABASE, SAMPLE_OPTIONS, SampleLimit, sample_sql};
use devdb_core::runtime::Counters;
use devdb_core::runtime::RuntimeError;
use devdb_pgctl::session::{SUPERUSER, Session, SessionError};

/// The role samples are read as.
pub const MONITOR_ROLE: &str = "devdb_monitor";

/// Makes [`MONITOR_ROLE`]. Its connection limit keeps what samples leave behind (server
/// processes still waiting after their sample gave up) from taking the owner's connections.
const CREATE_ROLE: &str = "CREATE ROLE devdb_monitor LOGIN CONNECTION LIMIT 8 IN ROLE pg_read_all_stats";

/// The counters of `database` in the instance whose socket is in `sock`.
///
/// # Errors
/// [`RuntimeError::Step`] when `limit` has no place for it, the instance does not answer within
/// the bound, refuses, or has no database of that name.
pub async fn sample(limit: &SampleLimit, sock: PathBuf, port: u16, database: &str) -> Result<Counters, RuntimeError> {
    let admitted = limit.admit()?;
    let sql = sample_sql(database);
    // The place goes with the thread: it is free again when the thread is, not when the
    // monitor stops waiting.
    let rows = tokio::task::spawn_blocking(move || {
        let _running = admitted.start();
        read(&sock, port, &sql)
    })
    .await
    .map_err(|e| RuntimeError::Step { step: "sampling", detail: e.to_string() })?
    .map_err(failed)?;
    let row = rows.into_iter().next().ok_or_else(|| RuntimeError::Step {
        step: "sampling",
        detail: format!("the instance has no database named {database}"),
    })?;
    Ok(Counters::from_row(&row))
}

/// Runs `sql` as [`MONITOR_ROLE`], making the role first when the instance lacks it.
fn read(sock: &Path, port: u16, sql: &str) -> Result<Vec<Vec<Option<String>>>, SessionError> {
    let connect =
        |user: &str| Session::connect_timeout(sock, port, user, SAMPLE_DATABASE, Some(SAMPLE_OPTIONS), SAMPLE_BOUND);
    let mut session = match connect(MONITOR_ROLE) {
        // 28000: no such role.
        Err(SessionError::Server(error)) if error.code == "28000" => {
            match connect(SUPERUSER)?.execute(CREATE_ROLE) {
                // Made meanwhile by another sample: 42710 once it is there, 23505 while both
                // were making it.
                Err(SessionError::Server(error)) if ["42710", "23505"].contains(&error.code.as_str()) => {}
                made => made?,
            }
            connect(MONITOR_ROLE)?
        }
        session => session?,
    };
    session.rows(sql)
}

/// A failed sample, saying so plainly when the server did not answer in time.
fn failed(error: SessionError) -> RuntimeError {
    let detail = match &error {
        SessionError::Io(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            format!("the instance did not answer within {SAMPLE_BOUND:?}")
        }
        _ => error.to_string(),
    };
    RuntimeError::Step { step: "sampling", detail }
}
