//! A session with a local server over its private Unix socket, speaking the wire protocol
//! directly: simple queries whose text is sent as raw bytes (a script's own `client_encoding`
//! applies, as with psql), `COPY … FROM STDIN` fed from a callback, rows returned as text.
//!
//! It is blocking on purpose: it runs where restores run (a blocking task, a Job's one process).
//! Sockets of DevDB's servers are private to the PostgreSQL user and trusted, so the only
//! authentication it speaks is "none needed".
//!
//! [`Session::admin`] is how the controller itself talks to a server as superuser: its
//! `search_path` is `pg_catalog, pg_temp` from the start packet on (a `search_path` a dump sets
//! on the database or a role is overridden), so no object a dump created can shadow a function
//! or operator the controller calls.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::{backend, frontend};

/// The superuser of every DevDB server.
pub const SUPERUSER: &str = "postgres";
/// The `search_path` of every superuser session of the controller.
const ADMIN_OPTIONS: &str = "-c search_path=pg_catalog,pg_temp";
/// The largest message read into memory. A server runs a dump's code, which can raise notices
/// or errors of hundreds of megabytes: a larger notice is skipped unread, a larger error or row
/// ends the session.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to the server's socket in {dir}: {source}")]
    Connect { dir: String, source: io::Error },
    #[error("lost the connection to the server: {0}")]
    Io(#[from] io::Error),
    #[error("the server asked for a password; DevDB's private sockets are trusted")]
    PasswordRequired,
    #[error("the server sent an unexpected {0} message")]
    Unexpected(&'static str),
    #[error("{0}")]
    Server(Box<ServerError>),
}

/// Supplies COPY data: appends a chunk to the buffer, returns false after the last one.
pub type CopySource<'a> = &'a mut dyn FnMut(&mut Vec<u8>) -> io::Result<bool>;

/// An `ErrorResponse`, with the fields people act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// Where it happened (`COPY items, line 1234`, a function's line).
    pub context: Option<String>,
    /// 1-based character position in the statement, when the server gives one.
    pub position: Option<usize>,
    /// The constraint that refused, when one did.
    pub constraint: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} (SQLSTATE {})", self.severity, self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, "; {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        if let Some(context) = &self.context {
            write!(f, "; context: {}", context.replace('\n', "; "))?;
        }
        Ok(())
    }
}

impl ServerError {
    /// The error without any value of the data: its code, its message with every quoted part
    /// left out (`invalid input syntax for type date: "…"`), and the constraint's name. For
    /// errors on data others must not see (the originals masking replaces); the DETAIL, which
    /// quotes rows and keys, is never part of it.
    pub fn without_values(&self) -> String {
        let mut message = if self.code.starts_with("23") {
            // Integrity violations quote names (of relations, constraints), never values: each
            // quoted part is left out, the sentence kept.
            self.message.split('"').enumerate().map(|(i, part)| if i % 2 == 1 { "\"…\"" } else { part }).collect()
        } else {
            // Elsewhere a quoted part may be a value, and values are quoted without escaping
            // (one may hold a quote of its own): everything from the first quote on goes.
            match self.message.find('"') {
                Some(at) => format!("{}\"…\"", &self.message[..at]),
                None => self.message.clone(),
            }
        };
        // The bytes an encoding error prints are a value's.
        if let Some(at) = message.find("byte sequence 0x") {
            message = format!("{}byte sequence …", &message[..at]);
        }
        match &self.constraint {
            Some(constraint) => format!("{message} (SQLSTATE {}, constraint {constraint})", self.code),
            None => format!("{message} (SQLSTATE {})", self.code),
        }
    }

    /// The error as anyone who may see the project may read it: severity, message, SQLSTATE
    /// and constraint, never the DETAIL, HINT or CONTEXT (they quote rows, keys, function
    /// arguments and COPY data). Where the message itself can quote a value (data exceptions,
    /// class 22; integrity violations, class 23), its quoted parts are left out as in
    /// [`ServerError::without_values`]; a message the dump's own code raised (class P0) is not
    /// repeated at all. Other messages keep their quoted parts, which name objects
    /// (`relation "orders" does not exist`).
    pub fn public(&self) -> String {
        let severity = if self.severity.is_empty() { "ERROR" } else { self.severity.as_str() };
        let said = match self.code.get(..2) {
            Some("22" | "23") => format!("{severity}: {}", self.without_values()),
            Some("P0") => format!("{severity}: an error raised by the dump's own code (SQLSTATE {})", self.code),
            _ => format!("{severity}: {} (SQLSTATE {})", self.message, self.code),
        };
        // Where in a COPY, without the value the CONTEXT goes on to quote.
        match self.context.as_deref().and_then(copy_line) {
            Some(place) => format!("{said}; at {place}"),
            None => said,
        }
    }

    fn parse(fields: backend::ErrorFields<'_>) -> io::Result<Self> {
        let mut error = Self::default();
        let mut fields = fields;
        while let Some(field) = fields.next()? {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => error.severity = value,
                b'S' if error.severity.is_empty() => error.severity = value,
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                b'W' => error.context = Some(value),
                b'P' => error.position = value.parse().ok(),
                b'n' => error.constraint = Some(value),
                _ => {}
            }
        }
        Ok(error)
    }
}

/// `COPY items, line 1234` of a COPY's error context (`COPY items, line 1234, column note:
/// "…"`): the table and the line, never the value.
fn copy_line(context: &str) -> Option<String> {
    let first = context.lines().next()?;
    let rest = first.strip_prefix("COPY ")?;
    let (table, after) = rest.split_once(", line ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty() && !table.contains('"')).then(|| format!("COPY {table}, line {digits}"))
}

/// What a query did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Rows as text (NULL as `None`), when rows were asked for.
    pub rows: Vec<Vec<Option<String>>>,
    /// The first error, if any (the server goes on to `ReadyForQuery` after it).
    pub error: Option<ServerError>,
    /// The last command's tag (`UPDATE 42`).
    pub tag: Option<String>,
}

/// An open session.
pub struct Session {
    stream: UnixStream,
    buf: BytesMut,
    standard_strings: bool,
    /// Bytes read from the server so far.
    received: u64,
}

impl Session {
    /// Connects to the server whose socket is in `socket_dir` (named after `port`) as `user` to
    /// `database`, with `options` (`-c name=value …`) if any.
    ///
    /// # Errors
    /// [`SessionError`]: the socket, authentication, or the server refusing the session.
    pub fn connect(
        socket_dir: &Path,
        port: u16,
        user: &str,
        database: &str,
        options: Option<&str>,
    ) -> Result<Self, SessionError> {
        Self::connect_within(socket_dir, port, user, database, options, None)
    }

    /// [`Session::connect`] with every read and write on the socket bounded by `timeout` from
    /// the start packet on (see [`Session::set_timeout`]): a server whose start-up waits (on a
    /// lock, or hung) fails the session instead of holding the thread. Connecting to the socket
    /// itself waits only while its backlog is full.
    ///
    /// # Errors
    /// As [`Session::connect`]; an I/O error of kind `WouldBlock` or `TimedOut` when the server
    /// did not answer in time.
    pub fn connect_timeout(
        socket_dir: &Path,
        port: u16,
        user: &str,
        database: &str,
        options: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, SessionError> {
        Self::connect_within(socket_dir, port, user, database, options, Some(timeout))
    }

    fn connect_within(
        socket_dir: &Path,
        port: u16,
        user: &str,
        database: &str,
        options: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Self, SessionError> {
        let path = socket_dir.join(format!(".s.PGSQL.{port}"));
        let stream = UnixStream::connect(&path)
            .map_err(|source| SessionError::Connect { dir: socket_dir.display().to_string(), source })?;
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        let mut session = Self { stream, buf: BytesMut::with_capacity(8192), standard_strings: true, received: 0 };
        let mut params = vec![("user", user), ("database", database), ("application_name", "devdb")];
        if let Some(options) = options {
            params.push(("options", options));
        }
        let mut out = BytesMut::new();
        frontend::startup_message(params, &mut out)?;
        session.stream.write_all(&out)?;
        match session.read()? {
            backend::Message::AuthenticationOk => {}
            backend::Message::ErrorResponse(body) => {
                return Err(SessionError::Server(Box::new(ServerError::parse(body.fields())?)));
            }
            _ => return Err(SessionError::PasswordRequired),
        }
        let outcome = session.finish(false, None)?;
        match outcome.error {
            Some(error) => Err(SessionError::Server(Box::new(error))),
            None => Ok(session),
        }
    }

    /// A superuser session (`search_path` = `pg_catalog, pg_temp`) to `database`.
    ///
    /// # Errors
    /// As [`Session::connect`].
    pub fn admin(socket_dir: &Path, port: u16, database: &str) -> Result<Self, SessionError> {
        Self::connect(socket_dir, port, SUPERUSER, database, Some(ADMIN_OPTIONS))
    }

    /// The bytes read from the server so far (what a caller's bounds hold it to).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bounds every later read and write on the session's socket (`None`: unbounded): one that
    /// waits longer fails with an I/O error of kind `WouldBlock` or `TimedOut`, after which the
    /// session is unusable (a message may have been cut).
    ///
    /// # Errors
    /// When the socket refuses the setting.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)?;
        self.stream.set_write_timeout(timeout)
    }

    /// The server's `standard_conforming_strings` as last reported.
    pub fn standard_strings(&self) -> bool {
        self.standard_strings
    }

    /// Runs `sql`, a `COPY … TO STDOUT`, handing each row's bytes (one line of COPY's text
    /// format, with its newline) to `row` as it arrives: a table of any size streams through
    /// without being held.
    ///
    /// # Errors
    /// [`SessionError::Server`] with the server's error, a connection failure, or what `row`
    /// returned (the rest of the rows are then read and dropped).
    pub fn copy_out(&mut self, sql: &str, row: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> Result<(), SessionError> {
        self.send_query(sql.as_bytes())?;
        let mut failed: Option<io::Error> = None;
        let mut server: Option<ServerError> = None;
        loop {
            match self.read()? {
                backend::Message::ReadyForQuery(_) => break,
                backend::Message::CopyData(data) if failed.is_none() => {
                    if let Err(e) = row(data.data()) {
                        failed = Some(e);
                    }
                }
                backend::Message::ErrorResponse(body) => {
                    server.get_or_insert(ServerError::parse(body.fields())?);
                }
                _ => {}
            }
        }
        if let Some(error) = server {
            return Err(SessionError::Server(Box::new(error)));
        }
        failed.map_or(Ok(()), |e| Err(SessionError::Io(e)))
    }

    /// Runs `sql` (one statement, or several in one implicit transaction) and fails on the
    /// first error.
    ///
    /// # Errors
    /// [`SessionError::Server`] with the server's error, or a connection failure.
    pub fn execute(&mut self, sql: &str) -> Result<(), SessionError> {
        self.run(sql.as_bytes(), None).and_then(into_result).map(drop)
    }

    /// Runs one statement and returns the rows it changed (from its command tag: `UPDATE 42`).
    ///
    /// # Errors
    /// As [`Session::execute`].
    pub fn execute_count(&mut self, sql: &str) -> Result<u64, SessionError> {
        let outcome = self.run(sql.as_bytes(), None).and_then(into_result)?;
        let count = outcome.tag.as_deref().and_then(|tag| tag.rsplit(' ').next()).and_then(|n| n.parse().ok());
        count.ok_or(SessionError::Unexpected("command tag without a row count"))
    }

    /// Runs statements one after the other, each in its own transaction (as `CREATE DATABASE`
    /// or `CHECKPOINT` need), stopping at the first error.
    ///
    /// # Errors
    /// As [`Session::execute`].
    pub fn execute_each(&mut self, statements: &[&str]) -> Result<(), SessionError> {
        statements.iter().try_for_each(|sql| self.execute(sql))
    }

    /// Runs one statement with text parameters (`$1`, `$2`… of type `text`) through the extended
    /// protocol: the values travel apart from the statement, so they are in neither its text
    /// (`pg_stat_activity`, the server's log) nor any setting a function it runs could read.
    ///
    /// # Errors
    /// As [`Session::execute`].
    pub fn execute_with(&mut self, sql: &str, params: &[&str]) -> Result<(), SessionError> {
        const TEXT: u32 = 25;
        let mut out = BytesMut::new();
        frontend::parse("", sql, params.iter().map(|_| TEXT), &mut out)?;
        let serialize = |value: &&str,
                         buf: &mut BytesMut|
         -> Result<postgres_protocol::IsNull, Box<dyn std::error::Error + Sync + Send>> {
            buf.put_slice(value.as_bytes());
            Ok(postgres_protocol::IsNull::No)
        };
        frontend::bind("", "", [0_i16], params.iter(), serialize, [0_i16], &mut out).map_err(|e| match e {
            frontend::BindError::Conversion(e) => io::Error::other(e.to_string()),
            frontend::BindError::Serialization(e) => e,
        })?;
        frontend::execute("", 0, &mut out)?;
        frontend::sync(&mut out);
        self.stream.write_all(&out)?;
        into_result(self.finish(false, None)?).map(drop)
    }

    /// Runs a query and returns its rows as text.
    ///
    /// # Errors
    /// As [`Session::execute`].
    pub fn rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, SessionError> {
        self.send_query(sql.as_bytes())?;
        into_result(self.finish(true, None)?).map(|o| o.rows)
    }

    /// Sends `sql` as one simple query. If the server asks for COPY data, `copy` supplies it: it
    /// appends a chunk to the buffer and returns false after the last one. Without `copy`, a
    /// COPY FROM STDIN is failed. COPY TO STDOUT output is discarded.
    ///
    /// # Errors
    /// A connection failure; the server's own error is in [`Outcome::error`].
    pub fn run(&mut self, sql: &[u8], copy: Option<CopySource<'_>>) -> Result<Outcome, SessionError> {
        self.send_query(sql)?;
        self.finish(false, copy)
    }

    fn send_query(&mut self, sql: &[u8]) -> Result<(), SessionError> {
        let len = i32::try_from(sql.len() + 5).map_err(|_| io::Error::other("statement too long"))?;
        let mut out = BytesMut::with_capacity(sql.len() + 6);
        out.put_u8(b'Q');
        out.put_i32(len);
        out.put_slice(sql);
        out.put_u8(0);
        self.stream.write_all(&out)?;
        Ok(())
    }

    /// Reads until `ReadyForQuery`.
    fn finish(&mut self, want_rows: bool, mut copy: Option<CopySource<'_>>) -> Result<Outcome, SessionError> {
        let mut outcome = Outcome::default();
        loop {
            let message = match self.read() {
                // A FATAL error (at start-up: no such role or database, too many connections)
                // ends the session: what the server said is the answer, not the closing.
                Err(SessionError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof && outcome.error.is_some() => {
                    return Ok(outcome);
                }
                message => message?,
            };
            match message {
                backend::Message::ReadyForQuery(_) => return Ok(outcome),
                backend::Message::ErrorResponse(body) => {
                    let error = ServerError::parse(body.fields())?;
                    outcome.error.get_or_insert(error);
                }
                backend::Message::ParameterStatus(body) if body.name()? == "standard_conforming_strings" => {
                    self.standard_strings = body.value()? == "on";
                }
                backend::Message::CommandComplete(body) => outcome.tag = Some(body.tag()?.to_string()),
                backend::Message::DataRow(row) if want_rows => {
                    let buffer = row.buffer();
                    let values = row
                        .ranges()
                        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned())))
                        .collect()?;
                    outcome.rows.push(values);
                }
                backend::Message::CopyInResponse(_) => match copy.take() {
                    Some(source) => {
                        if let Some(error) = self.copy_in(source)? {
                            outcome.error.get_or_insert(error);
                        }
                    }
                    None => {
                        let mut out = BytesMut::new();
                        frontend::copy_fail("COPY FROM STDIN was not expected here", &mut out)?;
                        self.stream.write_all(&out)?;
                    }
                },
                backend::Message::AuthenticationOk
                | backend::Message::AuthenticationCleartextPassword
                | backend::Message::AuthenticationMd5Password(_)
                | backend::Message::AuthenticationSasl(_) => return Err(SessionError::Unexpected("authentication")),
                // Row descriptions, unwanted rows, COPY TO STDOUT data, notices, notifications,
                // command tags and the start-up messages: nothing to act on.
                _ => {}
            }
        }
    }

    /// Streams COPY data until `source` says it is done, then `CopyDone`. A reader thread
    /// drains what the server sends meanwhile (notices a trigger raises per row would
    /// otherwise fill the socket and stall both sides); an error it sees is returned.
    fn copy_in(&mut self, source: CopySource<'_>) -> Result<Option<ServerError>, SessionError> {
        let mut reader = self.stream.try_clone()?;
        let pending = std::mem::take(&mut self.buf);
        let failed = AtomicBool::new(false);
        let (sent, drained) = std::thread::scope(|scope| {
            let drain = scope.spawn(|| drain_during_copy(&mut reader, pending, &failed));
            let sent = self.send_copy_data(source, &failed);
            // Unblocks the drain whatever happened: it ends at the server's answer to CopyDone
            // or CopyFail.
            if sent.is_err() {
                let mut out = BytesMut::new();
                let _ = frontend::copy_fail("the script could not be read", &mut out);
                let _ = self.stream.write_all(&out);
            }
            (sent, drain.join())
        });
        let (buf, error, standard_strings) =
            drained.map_err(|_| io::Error::other("the COPY reader thread panicked"))??;
        self.buf = buf;
        if let Some(on) = standard_strings {
            self.standard_strings = on;
        }
        sent?;
        Ok(error)
    }

    /// Sends chunks until the source is done, or the server has already refused the COPY (the
    /// rest would only be discarded).
    fn send_copy_data(&mut self, source: CopySource<'_>, failed: &AtomicBool) -> io::Result<()> {
        let mut chunk = Vec::new();
        let mut out = BytesMut::new();
        loop {
            chunk.clear();
            let more = !failed.load(Ordering::Relaxed) && source(&mut chunk)?;
            if !chunk.is_empty() {
                out.clear();
                frontend::CopyData::new(&chunk[..])?.write(&mut out);
                self.stream.write_all(&out)?;
            }
            if !more {
                out.clear();
                frontend::copy_done(&mut out);
                return self.stream.write_all(&out);
            }
        }
    }

    /// The next message.
    fn read(&mut self) -> Result<backend::Message, SessionError> {
        let mut counted = Counted { stream: &mut self.stream, read: 0 };
        let message = read_message(&mut counted, &mut self.buf).map_err(SessionError::Io);
        self.received += counted.read;
        message
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.stream.write_all(&out);
    }
}

fn into_result(outcome: Outcome) -> Result<Outcome, SessionError> {
    match outcome.error {
        Some(error) => Err(SessionError::Server(Box::new(error))),
        None => Ok(outcome),
    }
}

fn read_message(stream: &mut impl Read, buf: &mut BytesMut) -> io::Result<backend::Message> {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > MAX_MESSAGE {
                let tag = buf[0];
                if tag != b'N' {
                    let what = if tag == b'E' { "an error message" } else { "a message" };
                    return Err(io::Error::other(format!(
                        "the server sent {what} larger than {} MiB",
                        MAX_MESSAGE >> 20
                    )));
                }
                // A notice that large: skipped without holding it.
                skip(stream, buf, len + 1)?;
                continue;
            }
        }
        if let Some(message) = backend::Message::parse(buf)? {
            return Ok(message);
        }
        fill(stream, buf)?;
    }
}

/// A stream that counts what is read from it.
struct Counted<'a> {
    stream: &'a mut UnixStream,
    read: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Reads more of the stream into `buf`.
fn fill(stream: &mut impl Read, buf: &mut BytesMut) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let read = stream.read(&mut chunk)?;
    if read == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    buf.extend_from_slice(&chunk[..read]);
    Ok(())
}

/// Drops the next `n` bytes of the stream (what `buf` holds first).
fn skip(stream: &mut impl Read, buf: &mut BytesMut, mut n: usize) -> io::Result<()> {
    loop {
        let here = n.min(buf.len());
        let _ = buf.split_to(here);
        n -= here;
        if n == 0 {
            return Ok(());
        }
        fill(stream, buf)?;
    }
}

type Drained = (BytesMut, Option<ServerError>, Option<bool>);

/// During COPY IN: reads until the server's `CommandComplete` or `ErrorResponse` for the COPY
/// (it sends nothing else but notices and parameter changes meanwhile), keeping the first
/// error; what follows (`ReadyForQuery`) is left in the returned buffer.
fn drain_during_copy(stream: &mut UnixStream, mut buf: BytesMut, failed: &AtomicBool) -> io::Result<Drained> {
    let mut standard_strings = None;
    loop {
        match read_message(stream, &mut buf)? {
            backend::Message::CommandComplete(_) => return Ok((buf, None, standard_strings)),
            backend::Message::ErrorResponse(body) => {
                failed.store(true, Ordering::Relaxed);
                return Ok((buf, Some(ServerError::parse(body.fields())?), standard_strings));
            }
            backend::Message::ParameterStatus(body) if body.name()? == "standard_conforming_strings" => {
                standard_strings = Some(body.value()? == "on");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, message: &str, detail: Option<&str>, context: Option<&str>) -> ServerError {
        ServerError {
            severity: "ERROR".into(),
            code: code.into(),
            message: message.into(),
            detail: detail.map(Into::into),
            context: context.map(Into::into),
            ..ServerError::default()
        }
    }

    #[test]
    fn the_public_form_keeps_names_and_places_but_no_value() {
        let dup = error(
            "23505",
            "duplicate key value violates unique constraint \"customers_email_key\"",
            Some("Key (email)=(alice.private@acme.test) already exists."),
            None,
        );
        assert_eq!(dup.public(), "ERROR: duplicate key value violates unique constraint \"…\" (SQLSTATE 23505)");
        let copy = error(
            "22P02",
            "invalid input syntax for type integer: \"123-45-6789\"",
            None,
            Some("COPY people, line 3, column ssn: \"123-45-6789\""),
        );
        assert_eq!(
            copy.public(),
            "ERROR: invalid input syntax for type integer: \"…\" (SQLSTATE 22P02); at COPY people, line 3"
        );
        // A value may hold quotes of its own: nothing after the first quote is shown.
        let quoted = error("22P02", "invalid input syntax for type integer: \"x\" 4111-1111 SECRET-TAIL\"", None, None);
        assert_eq!(quoted.public(), "ERROR: invalid input syntax for type integer: \"…\" (SQLSTATE 22P02)");
        let bytes = error(
            "22P05",
            "character with byte sequence 0xe2 0x82 0xac in encoding \"UTF8\" has no equivalent in encoding \"LATIN1\"",
            None,
            None,
        );
        assert_eq!(bytes.public(), "ERROR: character with byte sequence … (SQLSTATE 22P05)");
        let raised = error("P0001", "leaked 123-45-6789", None, Some("PL/pgSQL function f() line 3 at RAISE"));
        assert!(!raised.public().contains("123-45"), "{}", raised.public());
        let missing = error("42P01", "relation \"orders\" does not exist", None, None);
        assert_eq!(missing.public(), "ERROR: relation \"orders\" does not exist (SQLSTATE 42P01)");
    }
}
