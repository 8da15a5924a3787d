//! Running a dump through a session as the project's role: plain SQL statement by statement
//! ([`run_script`]), archives by turning them into SQL with `pg_restore` first ([`run_archive`]).
//!
//! `pg_restore` only converts here (`-f -`, no connection): it runs in the restore's sandbox,
//! reads the archive from a file descriptor this process opened (a directory dump, from the one
//! directory the sandbox shows it), and writes SQL to a pipe that [`run_script`] reads like any
//! script. So every dump, whatever its format, reaches the server through the same door, as the
//! same non-superuser role, and no tool that reads it can reach a server socket or any file but
//! the dump's.
//!
//! Errors say where the load stopped and what the server said, without the server's DETAIL,
//! HINT or CONTEXT and without values quoted in the message
//! ([`ServerError::public`](devdb_pgctl::session::ServerError::public)): a project's error is
//! shown to everyone who may use the project.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use devdb_pgctl::sandbox::Sandbox;
use devdb_pgctl::session::{ServerError, Session, SessionError};

use crate::format::{Dump, DumpFormat};
use crate::script::{Kind, Script, ScriptError};

/// Where a restore stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("line {line}{of}: {}", error.public())]
    Statement { line: usize, of: &'static str, error: Box<ServerError> },
    #[error("{0}")]
    Script(#[from] ScriptError),
    #[error("the restore session: {0}")]
    Session(#[from] SessionError),
    #[error("pg_restore could not read the archive: {0}")]
    Archive(String),
    #[error("stopped")]
    Stopped,
}

/// What a restore did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Statements sent.
    pub statements: u64,
    /// Ownership and privilege statements skipped (the database has one role).
    pub skipped: u64,
    /// Columns that look personal (see [`crate::scan`]), marked covered by the masking rules.
    pub findings: Vec<devdb_shared::api::PiiFinding>,
    /// With masking verification: how many sampled originals were looked for, and not found.
    pub verified: Option<u64>,
    /// The configuration initdb wrote, before any dump code ran: what
    /// [`seal`](crate::seal::seal) gives the template back.
    pub pristine: crate::seal::Pristine,
}

/// Runs a plain SQL script through `session`, stopping at the first error.
///
/// # Errors
/// [`LoadError`] with the line of the statement that failed.
pub fn run_script(session: &mut Session, input: impl BufRead) -> Result<Loaded, LoadError> {
    run(session, input, "", &AtomicBool::new(false))
}

/// [`run_script`], stopping before the next statement once `stop` is set.
///
/// # Errors
/// As [`run_script`]; [`LoadError::Stopped`] when stopped.
pub fn run_script_until(session: &mut Session, input: impl BufRead, stop: &AtomicBool) -> Result<Loaded, LoadError> {
    run(session, input, "", stop)
}

fn run(session: &mut Session, input: impl BufRead, of: &'static str, stop: &AtomicBool) -> Result<Loaded, LoadError> {
    let mut script = Script::new(input);
    let mut loaded = Loaded::default();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(LoadError::Stopped);
        }
        script.set_standard_strings(session.standard_strings());
        let Some(statement) = script.next_statement()? else { return Ok(loaded) };
        if statement.kind == Kind::OwnerOrPrivileges {
            loaded.skipped += 1;
            continue;
        }
        loaded.statements += 1;
        let outcome = if statement.kind == Kind::CopyFromStdin {
            let mut copy = |chunk: &mut Vec<u8>| script.copy_chunk(chunk).map_err(std::io::Error::other);
            session.run(&statement.sql, Some(&mut copy))?
        } else {
            session.run(&statement.sql, None)?
        };
        if let Some(error) = outcome.error {
            let line = statement.line + line_offset(&statement.sql, error.position);
            return Err(LoadError::Statement { line, of, error: Box::new(error) });
        }
    }
}

/// How many lines into `sql` the server's error position (in characters, 1-based) falls.
fn line_offset(sql: &[u8], position: Option<usize>) -> usize {
    let Some(position) = position.filter(|p| *p > 0) else { return 0 };
    let text = String::from_utf8_lossy(sql);
    text.chars().take(position - 1).filter(|c| *c == '\n').count()
}

/// Converts an archive (custom, tar or directory format) to SQL with `pg_restore` in the
/// restore's sandbox, without the source's owners and grants, and runs that SQL through
/// `session`. `pg_restore`'s messages go to `log`.
///
/// # Errors
/// [`LoadError`]: the first failing statement, or `pg_restore` failing to read the archive.
pub fn run_archive(
    session: &mut Session,
    sandbox: &mut Sandbox,
    dump: &Dump,
    log: &Path,
    stop: &AtomicBool,
) -> Result<Loaded, LoadError> {
    let io = |e: std::io::Error| LoadError::Archive(e.to_string());
    let directory = (dump.format == DumpFormat::Directory).then(|| sandbox.show_dump(&dump.path));
    let mut cmd = sandbox.command("pg_restore");
    cmd.args(["--no-owner", "--no-acl", "--file=-"]);
    if let Some(directory) = directory {
        cmd.arg(directory).stdin(Stdio::null());
    } else {
        cmd.stdin(std::fs::File::open(&dump.path).map_err(io)?);
    }
    // Its messages are read back through this handle, not by the path (in a directory the
    // sandbox may write).
    let mut messages_file = crate::seal::create_log(log).map_err(io)?;
    let stderr = messages_file.try_clone().map_err(io)?;
    let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().map_err(io)?;
    let stdout = child.stdout.take().ok_or_else(|| LoadError::Archive("no output pipe".into()))?;
    let result =
        run(session, BufReader::with_capacity(256 << 10, stdout), " of the SQL pg_restore made of the archive", stop);
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(io)?;
    let loaded = result?;
    if !status.success() {
        let messages = crate::seal::read_log(&mut messages_file);
        let last: Vec<String> = messages.lines().filter(|l| !l.trim().is_empty()).map(without_paths).collect();
        let last = last[last.len().saturating_sub(3)..].join(" | ");
        return Err(LoadError::Archive(if last.is_empty() { status.to_string() } else { last }));
    }
    Ok(loaded)
}

/// A `pg_restore` message without the file paths it quotes (paths inside the sandbox, or names
/// a hostile archive chose): `could not open input file "…": No such file or directory`.
fn without_paths(line: &str) -> String {
    let mut out = String::new();
    for (i, part) in line.split('"').enumerate() {
        if i > 0 {
            out.push('"');
        }
        out.push_str(if i % 2 == 1 && part.contains('/') { "…" } else { part });
    }
    out
}
