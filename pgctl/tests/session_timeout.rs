//! A bounded [`Session`] against a server that stops answering: at start-up (a lock its start-up
//! waits on, a hung process) and after it (a query that never returns). The session ends with an
//! I/O error instead of holding its thread. The "server" is a Unix socket this test serves.

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

/// Serves one connection on `dir`'s socket: answers the start packet with `AuthenticationOk`
/// and `ReadyForQuery` when `answer_startup`, then reads whatever comes and answers nothing.
fn silent_server(dir: &Path, answer_startup: bool) {
    let listener = UnixListener::bind(dir.join(format!(".s.PGSQL.{PORT}"))).expect("bind");
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut len = [0_u8; 4];
        stream.read_exact(&mut len).expect("start packet length");
        let mut rest = vec![0_u8; usize::try_from(u32::from_be_bytes(len)).expect("length") - 4];
        stream.read_exact(&mut rest).expect("start packet");
        if answer_startup {
            stream.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I']).expect("answer");
        }
        // Read (and so never block the client's writes) until the client goes.
        let mut sink = [0_u8; 1024];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    });
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
    silent_server(dir.path(), false);
    let socket = dir.path().to_path_buf();
    let connected = ends(move || Session::connect_timeout(&socket, PORT, "postgres", "postgres", None, BOUND).err());
    let error = connected.expect("no session without an answer");
    assert!(timed_out(&error), "{error}");
}

#[test]
fn a_query_the_server_never_answers_ends_with_an_io_error_once_the_session_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    silent_server(dir.path(), true);
    let socket = dir.path().to_path_buf();
    let queried = ends(move || {
        let mut session = Session::connect(&socket, PORT, "postgres", "postgres", None).expect("start-up answered");
        session.set_timeout(Some(BOUND)).expect("timeout");
        session.rows("SELECT 1").err()
    });
    let error = queried.expect("no rows without an answer");
    assert!(timed_out(&error), "{error}");
}
