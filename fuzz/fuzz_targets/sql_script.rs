//! Fuzzes the SQL script splitter a dump is restored through: no input may panic or hand out
//! more than it read, and every statement it hands out splits again into exactly itself (so the
//! statement boundaries do not depend on what came before, and a psql command is never found
//! inside a statement that was accepted).
#![no_main]

use devdb_restore_script::{Kind, Script, ScriptError};
use libfuzzer_sys::fuzz_target;

/// Small, so that the fuzzer reaches the limit.
const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut script = Script::with_limit(data, LIMIT);
    let mut handed_out = 0;
    loop {
        match script.next_statement() {
            Ok(Some(statement)) => {
                assert!(!statement.sql.is_empty() && statement.sql.len() <= LIMIT);
                handed_out += statement.sql.len();
                // (A byte order mark is dropped where a script begins, and only there: a
                // statement starting with one splits differently on its own.)
                if !statement.sql.starts_with(b"\xEF\xBB\xBF") {
                    let mut again = Script::with_limit(&statement.sql[..], LIMIT);
                    match again.next_statement() {
                        Ok(Some(same)) => {
                            assert_eq!(same.sql, statement.sql, "a statement splits into itself");
                            assert_eq!(same.kind, statement.kind);
                        }
                        other => panic!("{:?} did not split into itself: {other:?}", statement.sql),
                    }
                    assert!(matches!(again.next_statement(), Ok(None)), "and into nothing more");
                }
                if statement.kind == Kind::CopyFromStdin {
                    let mut data = Vec::new();
                    while script.copy_chunk(&mut data).expect("reading a slice cannot fail") {}
                    handed_out += data.len();
                }
                assert!(handed_out <= data.len(), "never more than was read");
            }
            Ok(None) => break,
            Err(ScriptError::PsqlCommand { line, .. } | ScriptError::Nul { line } | ScriptError::TooLong { line, .. }) => {
                assert!(line >= 1);
                break;
            }
            Err(ScriptError::Io(e)) => panic!("reading a slice cannot fail: {e}"),
        }
    }
});
