//! Plain SQL scripts split into statements the way psql splits them, without psql.
//!
//! A dump is hostile until restored, and psql interprets backslash meta-commands (`\!` runs a
//! shell, `\o |cmd` pipes into one, `\copy … program` runs one) wherever they stand. So scripts
//! are never given to psql. [`Script`] lexes the text as PostgreSQL's own scanner does (quoted
//! strings with and without backslash escapes, quoted identifiers, dollar quoting, nested block
//! comments, `BEGIN ATOMIC` bodies) and hands out one statement at a time, each to be sent as
//! one simple query; after a `COPY … FROM stdin` statement it hands out the data lines up to
//! `\.` in chunks. A backslash anywhere else is refused with its line number: in SQL it can only
//! stand inside a literal, so outside one it is a psql command. Nothing here runs anything;
//! the statements go to the server as they are, so what the lexer gets wrong can only split text
//! differently, never execute it.
//!
//! Statements that only set ownership or privileges (`ALTER … OWNER TO`, `GRANT`, `REVOKE`,
//! `ALTER DEFAULT PRIVILEGES`, `SET SESSION AUTHORIZATION`) are marked, so that they can be
//! skipped as `pg_restore --no-owner --no-acl` skips them: a DevDB database has one role, which
//! owns everything, and the source's roles do not exist there.

use std::io::{self, BufRead, Read};

/// The longest statement accepted (PostgreSQL's own limit on a query is 1 GiB).
pub const MAX_STATEMENT: usize = 256 << 20;
/// COPY data is handed out in chunks of about this size.
pub const COPY_CHUNK: usize = 256 << 10;

/// psql commands pg_dump itself writes (15.14+, 16.10+, 17.6+) around a plain dump, to stop psql
/// from running other meta-commands in between: harmless, so accepted and ignored.
const DUMP_GUARDS: [&[u8]; 2] = [b"\\restrict", b"\\unrestrict"];

/// Why a script cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error(
        "line {line}: the psql command {command} is not SQL; DevDB runs SQL only (psql commands are never interpreted){hint}"
    )]
    PsqlCommand { command: String, line: usize, hint: &'static str },
    #[error("line {line}: a statement longer than {} MiB", max >> 20)]
    TooLong { line: usize, max: usize },
    #[error("line {line}: a NUL byte, which SQL text cannot hold")]
    Nul { line: usize },
    #[error("cannot read the script: {0}")]
    Io(#[from] io::Error),
}

/// What a statement does, as far as restoring needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything else: sent as is.
    Sql,
    /// `COPY … FROM STDIN`: its data follows in the script ([`Script::copy_chunk`]).
    CopyFromStdin,
    /// Ownership or privileges only.
    OwnerOrPrivileges,
}

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The text, from its first token to its terminating semicolon (if any).
    pub sql: Vec<u8>,
    /// The line it starts on (1-based).
    pub line: usize,
    pub kind: Kind,
}

/// Where the lexer is inside the current statement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Normal,
    LineComment,
    BlockComment(usize),
    /// A `'…'` string; `escapes`: backslash escapes a character (E'' strings, or every string
    /// while `standard_conforming_strings` is off).
    Quote {
        escapes: bool,
    },
    Ident,
    Dollar(Vec<u8>),
}

/// A plain SQL script being read statement by statement.
pub struct Script<R> {
    input: R,
    /// The current line, and how much of it has been lexed.
    text: Vec<u8>,
    pos: usize,
    /// Lines read so far (the current line's number).
    line: usize,
    /// Whether backslashes in ordinary `'…'` strings are literal (the server's
    /// `standard_conforming_strings`; the caller keeps it current).
    standard_strings: bool,
    /// The longest statement accepted ([`MAX_STATEMENT`] unless a test says otherwise).
    max_statement: usize,
    statement: Statement,
    state: State,
    lexer: Tokens,
    /// In COPY data: whether the next byte starts a line (where `\.` ends the data).
    copy_line_start: bool,
}

/// What the lexer remembers of the current statement's tokens.
#[derive(Debug, Default)]
struct Tokens {
    /// The word being read (kept only up to a keyword's length).
    word: Vec<u8>,
    in_word: bool,
    paren_depth: usize,
    /// psql's heuristic for `CREATE FUNCTION … BEGIN ATOMIC … END`: semicolons inside do not end
    /// the statement. The initials of the first words, and BEGIN/CASE … END nesting.
    initials: [u8; 4],
    words: usize,
    begin_depth: usize,
    /// The first two words (upper-case), and the last four top-level tokens (a word, or `None`
    /// for anything else), to classify the statement.
    first: [Option<String>; 2],
    last: [Option<String>; 4],
    previous_was_from: bool,
    from_stdin: bool,
}

const WORD_KEEP: usize = 16;

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

impl Tokens {
    fn push_word_byte(&mut self, b: u8) {
        self.in_word = true;
        if self.word.len() < WORD_KEEP {
            self.word.push(b.to_ascii_uppercase());
        }
    }

    /// A non-word token at the top level (punctuation, a literal, a quoted identifier).
    fn other_token(&mut self, quoted_ident: Option<String>) {
        self.end_word();
        self.previous_was_from = false;
        if self.paren_depth == 0 {
            self.last.rotate_left(1);
            self.last[3] = quoted_ident;
        }
    }

    fn end_word(&mut self) {
        if !self.in_word {
            return;
        }
        self.in_word = false;
        let word = String::from_utf8_lossy(&self.word).into_owned();
        self.word.clear();
        if !word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            // A number.
            self.previous_was_from = false;
            return;
        }
        self.track_atomic_body(&word);
        if self.paren_depth != 0 {
            return;
        }
        if self.first[0].is_none() {
            self.first[0] = Some(word.clone());
        } else if self.first[1].is_none() {
            self.first[1] = Some(word.clone());
        }
        if self.first[0].as_deref() == Some("COPY") {
            self.from_stdin |= self.previous_was_from && word == "STDIN";
            self.previous_was_from = word == "FROM";
        }
        self.last.rotate_left(1);
        self.last[3] = Some(word);
    }

    /// psql's `BEGIN … END` tracking (psqlscan.l): only in statements that begin
    /// `CREATE [OR REPLACE] FUNCTION|PROCEDURE`, only outside parentheses.
    fn track_atomic_body(&mut self, word: &str) {
        if self.words < self.initials.len() {
            self.initials[self.words] = match word {
                "CREATE" | "FUNCTION" | "PROCEDURE" | "OR" | "REPLACE" => word.as_bytes()[0].to_ascii_lowercase(),
                _ => 0,
            };
        }
        self.words += 1;
        let i = self.initials;
        let routine = i[0] == b'c'
            && (matches!(i[1], b'f' | b'p') || (i[1] == b'o' && i[2] == b'r' && matches!(i[3], b'f' | b'p')));
        if !routine || self.paren_depth != 0 {
            return;
        }
        match word {
            "BEGIN" => self.begin_depth += 1,
            "CASE" if self.begin_depth >= 1 => self.begin_depth += 1,
            "END" => self.begin_depth = self.begin_depth.saturating_sub(1),
            _ => {}
        }
    }

    fn kind(&self) -> Kind {
        let first = self.first[0].as_deref();
        let second = self.first[1].as_deref();
        let last = |i: usize| self.last[i].as_deref();
        let owner_to = last(1) == Some("OWNER")
            && last(2) == Some("TO")
            && self.last[3].is_some()
            && !matches!(last(0), Some("RENAME" | "COLUMN" | "CONSTRAINT" | "ATTRIBUTE"));
        match (first, second) {
            (Some("COPY"), _) if self.from_stdin => Kind::CopyFromStdin,
            (Some("GRANT" | "REVOKE"), _) | (Some("ALTER"), Some("DEFAULT")) => Kind::OwnerOrPrivileges,
            (Some("SET"), Some("SESSION")) if last(1) == Some("AUTHORIZATION") || last(2) == Some("AUTHORIZATION") => {
                Kind::OwnerOrPrivileges
            }
            (Some("ALTER"), _) if owner_to => Kind::OwnerOrPrivileges,
            _ => Kind::Sql,
        }
    }
}

impl<R: BufRead> Script<R> {
    pub fn new(input: R) -> Self {
        Self::with_limit(input, MAX_STATEMENT)
    }

    /// A script whose statements may be at most `max_statement` bytes long.
    pub fn with_limit(input: R, max_statement: usize) -> Self {
        Self {
            max_statement,
            input,
            text: Vec::new(),
            pos: 0,
            line: 0,
            standard_strings: true,
            statement: Statement { sql: Vec::new(), line: 0, kind: Kind::Sql },
            state: State::Normal,
            lexer: Tokens::default(),
            copy_line_start: true,
        }
    }

    /// Tells the lexer the server's `standard_conforming_strings`, which a script may change.
    pub fn set_standard_strings(&mut self, on: bool) {
        self.standard_strings = on;
    }

    /// The number of the last line read.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Reads the next line into `text`; false at the end of the input.
    fn read_line(&mut self) -> Result<bool, ScriptError> {
        self.text.clear();
        self.pos = 0;
        let limit = (self.max_statement + 1 - self.statement.sql.len().min(self.max_statement)) as u64;
        let read = (&mut self.input).take(limit).read_until(b'\n', &mut self.text)?;
        if read == 0 {
            return Ok(false);
        }
        self.line += 1;
        if self.text.len() as u64 >= limit && self.text.last() != Some(&b'\n') {
            return Err(ScriptError::TooLong { line: self.statement_line(), max: self.max_statement });
        }
        if self.line == 1 && self.text.starts_with(b"\xEF\xBB\xBF") {
            self.pos = 3;
        }
        Ok(true)
    }

    fn statement_line(&self) -> usize {
        if self.statement.sql.is_empty() { self.line } else { self.statement.line }
    }

    /// The next statement, or `None` at the end of the script.
    ///
    /// # Errors
    /// [`ScriptError`]: a psql command, an overlong statement, a NUL byte, or a read error.
    pub fn next_statement(&mut self) -> Result<Option<Statement>, ScriptError> {
        loop {
            if self.pos >= self.text.len() {
                if !self.read_line()? {
                    // Like psql, send what is left without a semicolon.
                    return Ok(self.finish_statement());
                }
                if self.statement.sql.is_empty() && self.state == State::Normal && is_dump_guard(&self.text) {
                    self.pos = self.text.len();
                    continue;
                }
            }
            if let Some(statement) = self.lex()? {
                return Ok(Some(statement));
            }
        }
    }

    /// Ends the current statement, if it holds anything.
    fn finish_statement(&mut self) -> Option<Statement> {
        self.lexer.end_word();
        let kind = self.lexer.kind();
        self.lexer = Tokens::default();
        self.state = State::Normal;
        if self.statement.sql.is_empty() {
            return None;
        }
        let mut statement =
            std::mem::replace(&mut self.statement, Statement { sql: Vec::new(), line: 0, kind: Kind::Sql });
        statement.kind = kind;
        Some(statement)
    }

    fn push(&mut self, b: u8) -> Result<(), ScriptError> {
        if b == 0 {
            return Err(ScriptError::Nul { line: self.line });
        }
        if self.statement.sql.is_empty() {
            self.statement.line = self.line;
        }
        if self.statement.sql.len() >= self.max_statement {
            return Err(ScriptError::TooLong { line: self.statement.line, max: self.max_statement });
        }
        self.statement.sql.push(b);
        Ok(())
    }

    /// Lexes the rest of the current line; returns a statement when one ends on it.
    fn lex(&mut self) -> Result<Option<Statement>, ScriptError> {
        while self.pos < self.text.len() {
            let b = self.text[self.pos];
            let next = self.text.get(self.pos + 1).copied();
            let keep = !self.statement.sql.is_empty();
            self.pos += 1;
            let state = std::mem::replace(&mut self.state, State::Normal);
            self.state = match state {
                State::Normal => return self.normal(b, next),
                State::LineComment => {
                    if keep {
                        self.push(b)?;
                    }
                    if b == b'\n' { State::Normal } else { State::LineComment }
                }
                State::BlockComment(depth) => {
                    let closes = b == b'*' && next == Some(b'/');
                    let opens = b == b'/' && next == Some(b'*');
                    if keep {
                        self.push(b)?;
                    }
                    if closes || opens {
                        if keep {
                            self.push(self.text[self.pos])?;
                        }
                        self.pos += 1;
                    }
                    match (closes, opens) {
                        (true, _) if depth == 1 => State::Normal,
                        (true, _) => State::BlockComment(depth - 1),
                        (_, true) => State::BlockComment(depth + 1),
                        _ => State::BlockComment(depth),
                    }
                }
                State::Quote { escapes } => {
                    self.push(b)?;
                    if (escapes && b == b'\\') || (b == b'\'' && next == Some(b'\'')) {
                        // An escaped character, or a doubled quote.
                        if let Some(c) = next {
                            self.push(c)?;
                            self.pos += 1;
                        }
                        State::Quote { escapes }
                    } else if b == b'\'' {
                        State::Normal
                    } else {
                        State::Quote { escapes }
                    }
                }
                State::Ident => {
                    self.push(b)?;
                    if b == b'"' && next == Some(b'"') {
                        self.push(b'"')?;
                        self.pos += 1;
                        State::Ident
                    } else if b == b'"' {
                        State::Normal
                    } else {
                        State::Ident
                    }
                }
                State::Dollar(tag) => {
                    if b == b'$' && self.text[self.pos - 1..].starts_with(&tag) {
                        for i in 0..tag.len() {
                            self.push(self.text[self.pos - 1 + i])?;
                        }
                        self.pos += tag.len() - 1;
                        State::Normal
                    } else {
                        self.push(b)?;
                        State::Dollar(tag)
                    }
                }
            };
        }
        Ok(None)
    }

    /// One byte outside any literal or comment (the state is `Normal` on entry).
    fn normal(&mut self, b: u8, next: Option<u8>) -> Result<Option<Statement>, ScriptError> {
        let keep = !self.statement.sql.is_empty();
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                self.lexer.end_word();
                if keep {
                    self.push(b)?;
                }
            }
            b'-' if next == Some(b'-') => {
                self.lexer.end_word();
                self.state = State::LineComment;
                if keep {
                    self.push(b)?;
                }
            }
            b'/' if next == Some(b'*') => {
                self.lexer.end_word();
                self.state = State::BlockComment(1);
                self.pos += 1;
                if keep {
                    self.push(b'/')?;
                    self.push(b'*')?;
                }
            }
            b'\'' => {
                // E'…' (a lone E token right before the quote) takes backslash escapes.
                let prefix_e = self.lexer.in_word && self.lexer.word == b"E";
                self.lexer.in_word = false;
                self.lexer.word.clear();
                self.lexer.other_token(None);
                self.state = State::Quote { escapes: prefix_e || !self.standard_strings };
                self.push(b)?;
            }
            b'"' => {
                let ident = self.quoted_ident_at(self.pos);
                self.lexer.other_token(ident);
                self.state = State::Ident;
                self.push(b)?;
            }
            b'$' if !self.lexer.in_word => {
                self.lexer.other_token(None);
                match self.dollar_tag() {
                    Some(tag) => {
                        for &c in &tag {
                            self.push(c)?;
                        }
                        self.pos += tag.len() - 1;
                        self.state = State::Dollar(tag);
                    }
                    // A parameter ($1) or a lone dollar: the server judges.
                    None => self.push(b)?,
                }
            }
            b'\\' => return Err(self.psql_command()),
            b';' => {
                self.lexer.end_word();
                if self.lexer.paren_depth == 0 && self.lexer.begin_depth == 0 {
                    if !keep {
                        // An empty statement: nothing to send.
                        return Ok(None);
                    }
                    self.push(b)?;
                    return Ok(self.finish_statement());
                }
                self.lexer.other_token(None);
                self.push(b)?;
            }
            b'(' => {
                self.lexer.other_token(None);
                self.lexer.paren_depth += 1;
                self.push(b)?;
            }
            b')' => {
                self.lexer.other_token(None);
                self.lexer.paren_depth = self.lexer.paren_depth.saturating_sub(1);
                self.push(b)?;
            }
            c if (self.lexer.in_word && is_ident_char(c)) || is_ident_start(c) || c.is_ascii_digit() => {
                self.lexer.push_word_byte(c);
                self.push(c)?;
            }
            _ => {
                self.lexer.other_token(None);
                self.push(b)?;
            }
        }
        Ok(None)
    }

    /// The quoted identifier whose opening quote is just before `start`, as a token.
    fn quoted_ident_at(&self, start: usize) -> Option<String> {
        let end = self.text[start..].iter().position(|&c| c == b'"')?;
        Some(format!("\"{}\"", String::from_utf8_lossy(&self.text[start..start + end])))
    }

    /// At a `$` (just consumed): the dollar-quote opening tag (`$tag$` or `$$`) starting there.
    fn dollar_tag(&self) -> Option<Vec<u8>> {
        let start = self.pos - 1;
        let rest = &self.text[self.pos..];
        if rest.first().is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let len = rest.iter().position(|&c| !(is_ident_start(c) || c.is_ascii_digit()))?;
        (rest[len] == b'$').then(|| self.text[start..self.pos + len + 1].to_vec())
    }

    /// The error for a backslash outside any literal, naming the command.
    fn psql_command(&self) -> ScriptError {
        let start = self.pos - 1;
        let len = self.text[start + 1..].iter().position(|c| c.is_ascii_whitespace() || *c == b'\\');
        let end = len.map_or(self.text.len(), |len| start + 1 + len).min(start + 24);
        let command = String::from_utf8_lossy(&self.text[start..end]).into_owned();
        let hint = match command.as_str() {
            "\\connect" | "\\c" => " (dump without --create: DevDB restores into the project's own database)",
            "\\." => " (COPY data without a COPY … FROM stdin statement before it)",
            _ => "",
        };
        ScriptError::PsqlCommand { command, line: self.line, hint }
    }

    /// After a [`Kind::CopyFromStdin`] statement: appends the next lines of its data to `out`
    /// (about [`COPY_CHUNK`] bytes at a time; a longer line arrives in pieces). Returns false
    /// once the data has ended: at a line `\.` (not included), or at the end of the input, as
    /// in psql.
    ///
    /// # Errors
    /// A read error.
    pub fn copy_chunk(&mut self, out: &mut Vec<u8>) -> Result<bool, ScriptError> {
        while out.len() < COPY_CHUNK {
            let start = out.len();
            let read = (&mut self.input).take(COPY_CHUNK as u64).read_until(b'\n', out)?;
            if read == 0 {
                self.copy_line_start = true;
                return Ok(false);
            }
            let piece = &out[start..];
            if self.copy_line_start && matches!(piece, b"\\.\n" | b"\\.\r\n" | b"\\.") {
                out.truncate(start);
                self.line += 1;
                return Ok(false);
            }
            self.copy_line_start = piece.ends_with(b"\n");
            if self.copy_line_start {
                self.line += 1;
            }
        }
        Ok(true)
    }
}

fn is_dump_guard(line: &[u8]) -> bool {
    let line = line.trim_ascii();
    let mut words = line.split(|c| c.is_ascii_whitespace()).filter(|w| !w.is_empty());
    let (Some(command), Some(key), None) = (words.next(), words.next(), words.next()) else { return false };
    DUMP_GUARDS.contains(&command) && key.iter().all(u8::is_ascii_alphanumeric)
}

/// The properties the `sql_script` fuzzer checks, on one input (the fuzzer and the seed-corpus
/// test call this), with a small statement limit so that the fuzzer reaches it: no input panics
/// or hands out more than it read, and every statement handed out splits again into exactly
/// itself (so statement boundaries do not depend on what came before, and a psql command is never
/// found inside a statement that was accepted).
///
/// # Panics
/// When a property does not hold.
#[doc(hidden)]
pub fn check_fuzzed_properties(data: &[u8]) {
    const LIMIT: usize = 4096;
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
            Err(
                ScriptError::PsqlCommand { line, .. } | ScriptError::Nul { line } | ScriptError::TooLong { line, .. },
            ) => {
                assert!(line >= 1);
                break;
            }
            Err(ScriptError::Io(e)) => panic!("reading a slice cannot fail: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzzer's seed corpus (with inputs it once found), replayed on every test run.
    #[test]
    fn the_fuzz_corpus_keeps_its_properties() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/sql_script");
        let mut inputs = 0;
        for entry in std::fs::read_dir(&corpus).expect("the seed corpus") {
            check_fuzzed_properties(&std::fs::read(entry.expect("entry").path()).expect("a seed"));
            inputs += 1;
        }
        assert!(inputs >= 5, "only {inputs} seeds in {}", corpus.display());
    }

    /// Splits `sql` into (statement text, line, kind); COPY data is collected as a statement of
    /// its own kind `Sql` prefixed with `DATA:`.
    fn split(sql: &str) -> Result<Vec<(String, usize, Kind)>, ScriptError> {
        let mut script = Script::new(sql.as_bytes());
        let mut out = Vec::new();
        while let Some(statement) = script.next_statement()? {
            let text = String::from_utf8(statement.sql).expect("utf8");
            out.push((text, statement.line, statement.kind));
            if statement.kind == Kind::CopyFromStdin {
                let mut data = Vec::new();
                while script.copy_chunk(&mut data)? {}
                out.push((format!("DATA:{}", String::from_utf8(data).expect("utf8")), 0, Kind::Sql));
            }
        }
        Ok(out)
    }

    fn texts(sql: &str) -> Vec<String> {
        split(sql).expect("splits").into_iter().map(|(t, _, _)| t).collect()
    }

    fn refused(sql: &str) -> (String, usize) {
        match split(sql) {
            Err(ScriptError::PsqlCommand { command, line, .. }) => (command, line),
            other => panic!("{sql:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn statements_end_at_top_level_semicolons() {
        assert_eq!(
            texts("-- header\nSELECT 1;  SELECT 'a;b', \"c;d\" FROM t;\n\n/* c; */ SELECT (1;2);\n;;\nSELECT 3"),
            ["SELECT 1;", "SELECT 'a;b', \"c;d\" FROM t;", "SELECT (1;2);", "SELECT 3"]
        );
        let lines: Vec<usize> = split("SELECT 1;\n\nSELECT\n2;").expect("splits").iter().map(|s| s.1).collect();
        assert_eq!(lines, [1, 3]);
    }

    #[test]
    fn literals_comments_and_dollar_quotes_hide_semicolons_and_backslashes() {
        let sql = "INSERT INTO t VALUES ('it''s; \\! not a command', E'esc\\'aped; \\\\', $$ \\! ; $$, $fn$ $$ ; $fn$);\n\
                   /* nested /* \\! ; */ still comment ; */ SELECT \"we\"\"ird;\\\";\n\
                   SELECT U&'d\\0061t;', B'101', X'1F', 1e5, $1;";
        let out = texts(sql);
        assert_eq!(out.len(), 3, "{out:#?}");
        assert!(out[0].ends_with("$fn$ $$ ; $fn$);"), "{}", out[0]);
        assert!(out[1].starts_with("SELECT \"we\"\"ird;\\\";"), "{}", out[1]);
    }

    #[test]
    fn non_standard_strings_take_backslash_escapes_when_the_server_says_so() {
        let mut script = Script::new(&b"SELECT 'a\\'; b'; SELECT 2;"[..]);
        script.set_standard_strings(false);
        let first = script.next_statement().expect("ok").expect("statement");
        assert_eq!(first.sql, b"SELECT 'a\\'; b';");
        // With standard strings the backslash is literal and the quote ends the string: what
        // follows is a psql command outside any literal.
        assert!(matches!(split("SELECT 'a\\'; b\\';"), Err(ScriptError::PsqlCommand { .. })));
    }

    #[test]
    fn begin_atomic_bodies_keep_their_semicolons() {
        let sql = "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN true THEN 1 ELSE 2 END;\n  SELECT 2;\nEND;\nSELECT 3;";
        let out = texts(sql);
        assert_eq!(out.len(), 2, "{out:#?}");
        assert!(out[0].ends_with("END;"));
        // Only in routines: BEGIN elsewhere is a transaction.
        assert_eq!(texts("BEGIN; SELECT 1; END;"), ["BEGIN;", "SELECT 1;", "END;"]);
    }

    #[test]
    fn copy_data_runs_to_its_terminator_and_may_hold_anything() {
        let sql = "COPY public.t (a, b) FROM stdin;\n1\t\\N\n\\! not a command\n/* ; */\n\\.\nSELECT 1;\n";
        let out = split(sql).expect("splits");
        assert_eq!(out[0].2, Kind::CopyFromStdin);
        assert_eq!(out[1].0, "DATA:1\t\\N\n\\! not a command\n/* ; */\n");
        assert_eq!(out[2].0, "SELECT 1;");
        assert_eq!(out[2].1, 6, "line numbers count the data");
        // COPY data ends at the end of the script when the terminator is missing, as in psql.
        assert_eq!(split("copy t from STDIN;\nx\n").expect("splits")[1].0, "DATA:x\n");
        // Not COPY FROM STDIN: a file, stdout, or STDIN inside a query.
        for sql in ["COPY t FROM '/etc/passwd';", "COPY t TO STDOUT;", "COPY (SELECT * FROM stdin) TO STDOUT;"] {
            assert_eq!(split(sql).expect("splits")[0].2, Kind::Sql, "{sql}");
        }
    }

    #[test]
    fn psql_commands_are_refused_wherever_they_stand() {
        assert_eq!(refused("SELECT 1; \\! id > /tmp/x\n"), ("\\!".into(), 1));
        assert_eq!(refused("SELECT 1;\n  \\o |sh\n"), ("\\o".into(), 2));
        assert_eq!(refused("/* COPY t FROM stdin; */\n\\! id\n"), ("\\!".into(), 2));
        assert_eq!(refused("-- COPY t FROM stdin;\n\\! id\n"), ("\\!".into(), 2));
        assert_eq!(refused("\\copy t from program 'id'\n"), ("\\copy".into(), 1));
        assert_eq!(refused("SELECT 'x' \\gexec\n"), ("\\gexec".into(), 1));
        assert_eq!(refused("COPY t FROM stdin;\n\\.\n\\i /etc/shadow\n"), ("\\i".into(), 3));
        assert_eq!(refused("SELECT $$a$$\\!id\n"), ("\\!id".into(), 1));
        let Err(err) = split("\\connect shop\n") else { panic!("refused") };
        assert!(err.to_string().contains("--create"), "{err}");
    }

    #[test]
    fn pg_dump_guards_are_accepted_and_nothing_else_like_them() {
        let sql = "\\restrict Ab12\nSET x = 1;\n\\unrestrict Ab12\n";
        assert_eq!(texts(sql), ["SET x = 1;"]);
        assert_eq!(refused("\\restrict a b\n").0, "\\restrict");
        assert_eq!(refused("SELECT 1\n\\restrict k\n").0, "\\restrict", "not inside a statement");
    }

    #[test]
    fn ownership_and_privileges_are_recognised_and_nothing_else() {
        let kinds = |sql: &str| split(sql).expect("splits").into_iter().map(|s| s.2).collect::<Vec<_>>();
        for sql in [
            "ALTER TABLE public.t OWNER TO someone_else;",
            "ALTER FUNCTION public.f(integer, text) OWNER TO \"Some Role\";",
            "ALTER SCHEMA s OWNER TO CURRENT_USER;",
            "GRANT SELECT ON TABLE t TO reader;",
            "REVOKE ALL ON SCHEMA public FROM PUBLIC;",
            "ALTER DEFAULT PRIVILEGES FOR ROLE x GRANT SELECT ON TABLES TO y;",
            "SET SESSION AUTHORIZATION 'owner';",
        ] {
            assert_eq!(kinds(sql), [Kind::OwnerOrPrivileges], "{sql}");
        }
        for sql in [
            "ALTER TABLE t RENAME COLUMN owner TO holder;",
            "ALTER TABLE t RENAME owner TO holder;",
            "ALTER TABLE t ADD COLUMN owner text;",
            "CREATE TABLE grants (owner text);",
            "SET search_path = public;",
            "SELECT 'GRANT ALL';",
        ] {
            assert_eq!(kinds(sql), [Kind::Sql], "{sql}");
        }
    }

    #[test]
    fn a_byte_order_mark_nul_bytes_and_overlong_statements_are_handled() {
        assert_eq!(texts("\u{feff}SELECT 1;"), ["SELECT 1;"]);
        assert!(matches!(split("SELECT 1;\nSELECT '\0';"), Err(ScriptError::Nul { line: 2 })));
        let too_long = |sql: &str| {
            let mut script = Script::with_limit(sql.as_bytes(), 1000);
            loop {
                match script.next_statement() {
                    Err(ScriptError::TooLong { line, .. }) => return line,
                    Ok(Some(_)) => {}
                    other => panic!("not refused: {other:?}"),
                }
            }
        };
        assert_eq!(too_long(&format!("SELECT 1;\nSELECT '{}';", "x".repeat(1000))), 2);
        assert_eq!(too_long(&format!("SELECT\n{}", "'x' ||\n".repeat(200))), 1);
        assert!(Script::with_limit(&b"SELECT 1;"[..], 9).next_statement().is_ok(), "exactly the limit");
    }

    #[test]
    fn long_copy_lines_arrive_in_pieces_and_whole() {
        let value = "v".repeat(COPY_CHUNK * 3 + 17);
        let sql = format!("COPY t FROM stdin;\n{value}\n\\.\nSELECT 1;");
        let mut script = Script::new(sql.as_bytes());
        assert_eq!(script.next_statement().expect("ok").expect("copy").kind, Kind::CopyFromStdin);
        let (mut data, mut chunks) = (Vec::new(), 0);
        loop {
            let mut chunk = Vec::new();
            let more = script.copy_chunk(&mut chunk).expect("data");
            assert!(chunk.len() <= COPY_CHUNK * 2, "chunks stay bounded");
            data.extend_from_slice(&chunk);
            chunks += 1;
            if !more {
                break;
            }
        }
        assert!(chunks > 3);
        assert_eq!(data, format!("{value}\n").as_bytes());
        assert_eq!(script.next_statement().expect("ok").expect("select").sql, b"SELECT 1;");
    }
}
