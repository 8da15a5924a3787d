//! A [`Session`] against a scripted server (a Unix socket this test serves): one that stops
//! answering, at start-up (a lock its start-up waits on, a hung process) or after it (a query
//! that never returns), ends a bounded session with an I/O error instead of holding its thread;
//! one that refuses the session after accepting it (a FATAL error, then it closes) is reported
//! as the error it sent.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use devdb_pgctl::session::{Session, SessionError};

const PORT: u16 = 5999;
const BOUND: Duration = Duration::from_millis(200);
/// Only so that a session that never ends fails the test instead of hanging it.
const HANG: Duration = Duration::from_secs(60);

/// `AuthenticationOk`.
const AUTHENTICATED: &[u8] = &[b'R', 0, 0, 0, 8, 0, 0, 0, 0];
/// `ReadyForQuery` (idle).
const READY: &[u8] = &[b'Z', 0, 0, 0, 5, b'I'];

/// What the scripted server does after its answer to the start packet.
enum Then {
    /// Reads whatever comes and answers nothing, until the client goes.
    Silence,
    /// Closes the connection.
    Close,
}

/// Serves one connection on `dir`'s socket: reads the start packet, answers `answer`, then
/// does what `then` says.
fn serve(dir: &Path, answer: Vec<u8>, then: Then) {
    let listener = UnixListener::bind(dir.join(format!(".s.PGSQL.{PORT}"))).expect("bind");
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut len = [0_u8; 4];
        stream.read_exact(&mut len).expect("start packet length");
        let mut rest = vec![0_u8; usize::try_from(u32::from_be_bytes(len)).expect("length") - 4];
        stream.read_exact(&mut rest).expect("start packet");
        stream.write_all(&answer).expect("answer");
        if let Then::Silence = then {
            let mut sink = [0_u8; 1024];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
    });
}

/// An `ErrorResponse` with severity FATAL, `code` and `message`.
fn fatal(code: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (kind, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', message)] {
        fields.push(kind);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&u32::try_from(fields.len() + 4).expect("length").to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

/// Runs `f` on a thread of its own and returns what it returned.
fn ends<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(HANG).expect("the session ended on its own")
}

fn timed_out(error: &SessionError) -> bool {
    matches!(error, SessionError::Io(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

#[test]
fn a_bounded_session_whose_server_never_finishes_its_start_up_ends_with_an_io_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    serve(dir.path(), AUTHENTICATED.to_vec(), Then::Silence);
    let socket = dir.path().to_path_buf();
    let connected = ends(move || Session::connect_timeout(&socket, PORT, "postgres", "postgres", None, BOUND).err());
    let error = connected.expect("no session without an answer");
    assert!(timed_out(&error), "{error}");
}

#[test]
fn a_query_the_server_never_answers_ends_with_an_io_error_once_the_session_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    serve(dir.path(), [AUTHENTICATED, READY].concat(), Then::Silence);
    let socket = dir.path().to_path_buf();
    let queried = ends(move || {
        let mut session = Session::connect(&socket, PORT, "postgres", "postgres", None).expect("start-up answered");
        session.set_timeout(Some(BOUND)).expect("timeout");
        session.rows("SELECT 1").err()
    });
    let error = queried.expect("no rows without an answer");
    assert!(timed_out(&error), "{error}");
}

#[test]
fn a_session_refused_after_authentication_fails_with_the_servers_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refusal = fatal("28000", "role \"devdb_monitor\" does not exist");
    serve(dir.path(), [AUTHENTICATED, &refusal].concat(), Then::Close);
    let error = Session::connect(dir.path(), PORT, "devdb_monitor", "postgres", None).err().expect("refused");
    match error {
        SessionError::Server(error) => {
            assert_eq!(
                (error.code.as_str(), error.message.as_str()),
                ("28000", "role \"devdb_monitor\" does not exist")
            );
        }
        other => panic!("not the server's error: {other}"),
    }
}
