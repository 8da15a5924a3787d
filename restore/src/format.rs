//! Recognising a dump from its first bytes, and unpacking gzip and tar-packed directory dumps
//! (through [`crate::unpack`]: bounded, regular files and directories only).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::RestoreError;
use crate::guard::Guard;
use crate::limits::{Limits, MAX_GZIP_LAYERS};
use crate::unpack;

/// pg_dump's output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    /// `pg_dump` (SQL text), restored with psql.
    Plain,
    /// `pg_dump -Fc`, restored with `pg_restore -j`.
    Custom,
    /// `pg_dump -Ft`, restored with `pg_restore` (tar allows no parallelism).
    Tar,
    /// `pg_dump -Fd` (arrives packed as a tar), restored with `pg_restore -j`.
    Directory,
}

/// A dump ready for restoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub format: DumpFormat,
    /// The file (or directory, for [`DumpFormat::Directory`]) to give the restore tool.
    pub path: PathBuf,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const CUSTOM_MAGIC: &[u8] = b"PGDMP";
/// Every pg_dump plain-format dump ends with this line; without it the dump is cut short.
const PLAIN_END_MARKER: &str = "-- PostgreSQL database dump complete";

/// Recognises the dump at `path`, unpacking into `work` as needed (each gzip layer → a file of
/// its own, at most [`MAX_GZIP_LAYERS`]; a tar-packed directory dump → a directory; a
/// directory → a copy), within `limits` and `guard`.
///
/// # Errors
/// [`RestoreError::NotADump`] for anything that is not pg_dump output (or an archive holding
/// anything but regular files and directories), [`RestoreError::Truncated`] for a gzip stream
/// or plain dump cut short, the bounds' errors.
pub fn prepare(path: &Path, work: &Path, limits: &Limits, guard: &Guard) -> Result<Dump, RestoreError> {
    prepare_layer(path, work, limits, guard, 0)
}

fn prepare_layer(path: &Path, work: &Path, limits: &Limits, guard: &Guard, layer: usize) -> Result<Dump, RestoreError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| file_error(path, work, &e))?;
    if meta.is_dir() {
        if !path.join("toc.dat").is_file() {
            return Err(RestoreError::NotADump(format!("directory {} (no toc.dat)", path.display())));
        }
        // Copied, regular files and directories only: the restore reads what was checked.
        let copy = work.join("dump.dir");
        unpack::copy_dir(path, &copy, limits, guard)?;
        return Ok(Dump { format: DumpFormat::Directory, path: copy });
    }
    let head = read_head(path).map_err(|e| match e {
        RestoreError::File { reason, .. } => RestoreError::File { path: shown(path, work), reason },
        other => other,
    })?;
    if head.starts_with(&GZIP_MAGIC) {
        if layer >= MAX_GZIP_LAYERS {
            return Err(RestoreError::NotADump(format!("gzip inside gzip more than {MAX_GZIP_LAYERS} times over")));
        }
        let unpacked = work.join(format!("layer-{}", layer + 1));
        unpack::gunzip(path, &unpacked, limits, guard)?;
        return prepare_layer(&unpacked, work, limits, guard, layer + 1);
    }
    if head.starts_with(CUSTOM_MAGIC) {
        return Ok(Dump { format: DumpFormat::Custom, path: path.into() });
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return prepare_tar(path, work, limits, guard);
    }
    if looks_like_sql(&head) {
        // pg_dump's banner is in the first lines; its dumps must end with the completion line.
        // Hand-written SQL has no such line to check.
        if String::from_utf8_lossy(&head).contains("PostgreSQL database dump") {
            check_plain_complete(path)?;
        }
        return Ok(Dump { format: DumpFormat::Plain, path: path.into() });
    }
    Err(RestoreError::NotADump(describe_head(&head).into()))
}

/// How a file is named in an error: a `file://` source by its path (the admin's own), what the
/// restore made in its work directory by what it is (a server's paths are nobody's business).
fn shown(path: &Path, work: &Path) -> String {
    if path.starts_with(work) { "the downloaded dump".into() } else { path.display().to_string() }
}

fn file_error(path: &Path, work: &Path, e: &std::io::Error) -> RestoreError {
    RestoreError::File { path: shown(path, work), reason: e.kind().to_string() }
}

fn read_head(path: &Path) -> Result<Vec<u8>, RestoreError> {
    let file =
        File::open(path).map_err(|e| RestoreError::File { path: path.display().to_string(), reason: e.to_string() })?;
    let mut head = Vec::with_capacity(1024);
    file.take(1024).read_to_end(&mut head)?;
    Ok(head)
}

/// A pg_dump tar archive has `restore.sql` beside `toc.dat`; a directory dump packed with tar
/// has `toc.dat` (possibly under one top-level folder) and no `restore.sql`.
fn prepare_tar(path: &Path, work: &Path, limits: &Limits, guard: &Guard) -> Result<Dump, RestoreError> {
    let names = unpack::tar_names(path)?;
    let is = |n: &Path, file: &str| n.file_name().is_some_and(|f| f == file);
    if names.iter().any(|n| is(n, "restore.sql")) && names.iter().any(|n| n.as_os_str() == "toc.dat") {
        return Ok(Dump { format: DumpFormat::Tar, path: path.into() });
    }
    let Some(toc) = names.iter().find(|n| is(n, "toc.dat") && n.components().count() <= 2) else {
        return Err(RestoreError::NotADump("a tar archive without toc.dat".into()));
    };
    let dir = work.join("dump.dir");
    unpack::untar(path, &dir, limits, guard)?;
    let root = toc.parent().map_or(dir.clone(), |p| dir.join(p));
    Ok(Dump { format: DumpFormat::Directory, path: root })
}

/// Whether a file's first bytes read as SQL: after comments and white space, an SQL command
/// word (any case), a parenthesis, or a backslash (a psql command, which the restore then
/// refuses with its line). Any SQL file is a source, not only pg_dump's output.
fn looks_like_sql(head: &[u8]) -> bool {
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        // The window may cut a multibyte character in two.
        Err(e) if e.valid_up_to() + 4 >= head.len() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    let mut rest = text.trim_start_matches('\u{feff}');
    loop {
        rest = rest.trim_start();
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            rest = comment.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    if rest.is_empty() {
        // Only comments so far: a script with a long header.
        return !text.trim().is_empty();
    }
    if rest.starts_with(['(', '\\']) {
        return true;
    }
    let word: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
    SQL_COMMANDS.contains(&word.to_ascii_uppercase().as_str())
}

/// The words an SQL command can begin with (PostgreSQL's "SQL Commands" reference).
const SQL_COMMANDS: &[&str] = &[
    "ABORT",
    "ALTER",
    "ANALYSE",
    "ANALYZE",
    "BEGIN",
    "CALL",
    "CHECKPOINT",
    "CLOSE",
    "CLUSTER",
    "COMMENT",
    "COMMIT",
    "COPY",
    "CREATE",
    "DEALLOCATE",
    "DECLARE",
    "DELETE",
    "DISCARD",
    "DO",
    "DROP",
    "END",
    "EXECUTE",
    "EXPLAIN",
    "FETCH",
    "GRANT",
    "IMPORT",
    "INSERT",
    "LISTEN",
    "LOAD",
    "LOCK",
    "MERGE",
    "MOVE",
    "NOTIFY",
    "PREPARE",
    "REASSIGN",
    "REFRESH",
    "REINDEX",
    "RELEASE",
    "RESET",
    "REVOKE",
    "ROLLBACK",
    "SAVEPOINT",
    "SECURITY",
    "SELECT",
    "SET",
    "SHOW",
    "START",
    "TABLE",
    "TRUNCATE",
    "UNLISTEN",
    "UPDATE",
    "VACUUM",
    "VALUES",
    "WITH",
];

fn check_plain_complete(path: &Path) -> Result<(), RestoreError> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(512)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    if String::from_utf8_lossy(&tail).contains(PLAIN_END_MARKER) {
        return Ok(());
    }
    Err(RestoreError::Truncated(format!("the SQL dump does not end with {PLAIN_END_MARKER:?}")))
}

/// What a file that is not a dump looks like, for the error: its kind, never its content (the
/// answer of a server the caller should not read).
fn describe_head(head: &[u8]) -> &'static str {
    let text = String::from_utf8_lossy(&head[..head.len().min(256)]).trim_start().to_ascii_lowercase();
    match head {
        [] => "an empty file",
        [0x89, b'P', b'N', b'G', ..] => "a PNG image",
        [b'P', b'K', 3, 4, ..] => "a ZIP archive",
        [b'%', b'P', b'D', b'F', ..] => "a PDF document",
        [b'B', b'Z', b'h', ..] => "a bzip2 file (DevDB reads gzip-compressed or uncompressed dumps)",
        [0xfd, b'7', b'z', b'X', b'Z', ..] => "an xz file (DevDB reads gzip-compressed or uncompressed dumps)",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "a zstd file (DevDB reads gzip-compressed or uncompressed dumps)",
        _ if text.starts_with("<!doctype html") || text.starts_with("<html") => "an HTML page",
        _ if text.starts_with('<') => "an XML or HTML document",
        _ if text.starts_with(['{', '[']) => "a JSON document",
        _ if std::str::from_utf8(head).is_ok() => "text that does not begin with an SQL command",
        _ => "binary data",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).expect("gzip");
        enc.finish().expect("gzip")
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).expect("append");
        }
        builder.into_inner().expect("tar")
    }

    /// Prepares `path` in a fresh work directory under `work`.
    fn prepare_(path: &Path, work: &Path) -> Result<Dump, RestoreError> {
        let limits = Limits { max_source_bytes: 1 << 30, ..Limits::default() };
        let fresh = tempfile::tempdir_in(work).expect("tempdir").keep();
        prepare(path, &fresh, &limits, &Guard::unbounded(&fresh))
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_size_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bomb = write(dir.path(), "bomb", &gzip(&vec![b'-'; 5 << 20]));
        assert!(std::fs::metadata(&bomb).expect("meta").len() < 64 << 10, "small compressed");
        let limits = Limits { max_source_bytes: 1 << 20, max_ratio: 10_000, ..Limits::default() };
        let err = prepare(&bomb, dir.path(), &limits, &Guard::unbounded(dir.path())).expect_err("refused");
        assert!(matches!(err, RestoreError::TooLarge { limit } if limit == 1 << 20), "{err}");
        assert!(err.to_string().contains("larger than 1.0 MiB"), "{err}");
        assert!(!dir.path().join("layer-1").exists(), "nothing half-written stays");
    }

    #[test]
    fn a_gzip_inside_a_gzip_unpacks_into_files_of_its_own_and_no_deeper() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let twice = write(d, "twice", &gzip(&gzip(PLAIN)));
        let dump = prepare_(&twice, d).expect("two layers are read");
        assert_eq!(dump.format, DumpFormat::Plain);
        assert!(dump.path.ends_with("layer-2"), "{dump:?}");
        let thrice = write(d, "thrice.gz", &gzip(&gzip(&gzip(PLAIN))));
        let err = prepare_(&thrice, d).expect_err("too deep").to_string();
        assert!(err.contains("gzip inside gzip more than 2 times"), "{err}");
    }

    const PLAIN: &[u8] = b"--\n-- PostgreSQL database dump\n--\nCREATE TABLE t (id int);\n--\n-- PostgreSQL database dump complete\n--\n";

    #[test]
    fn formats_are_recognised_by_content_not_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        assert_eq!(prepare_(&write(d, "a.sql", b"PGDMP\x01\x0e"), d).expect("custom").format, DumpFormat::Custom);
        assert_eq!(prepare_(&write(d, "b.dump", PLAIN), d).expect("plain").format, DumpFormat::Plain);
        let gz = write(d, "c.bin", &gzip(b"PGDMP\x01\x0e"));
        assert_eq!(prepare_(&gz, d).expect("gzip custom").format, DumpFormat::Custom);
        let pgtar = tar_of(&[("toc.dat", b"PGDMP"), ("3000.dat", b""), ("restore.sql", b"--")]);
        assert_eq!(prepare_(&write(d, "d", &pgtar), d).expect("tar").format, DumpFormat::Tar);
        let packed = tar_of(&[("shop/toc.dat", b"PGDMP"), ("shop/3000.dat.gz", b"")]);
        let dump = prepare_(&write(d, "e", &gzip(&packed)), d).expect("directory");
        assert_eq!(dump.format, DumpFormat::Directory);
        assert!(dump.path.join("toc.dat").is_file(), "{dump:?}");
    }

    #[test]
    fn other_files_are_refused_with_what_they_look_like() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for (bytes, want) in [
            (&b""[..], "an empty file"),
            (b"\x89PNG\r\n\x1a\n0000", "a PNG image"),
            (b"<html><body>Not found</body></html>", "an HTML page"),
            (b"# HELP devdb_projects Projects by status\n", "text that does not begin with an SQL command"),
            (b"{\"error\": \"AccessDenied\"}", "a JSON document"),
            (b"\xff\xfe\x00secret", "binary data"),
        ] {
            let err = prepare_(&write(d, "x", bytes), d).expect_err("refused").to_string();
            assert!(err.contains("not a PostgreSQL dump") && err.contains(want), "{err}");
            // Never a word of the answer itself: it may come from a server the caller may not read.
            for quoted in ["Not found", "HELP", "AccessDenied", "secret"] {
                assert!(!err.contains(quoted), "{err}");
            }
        }
        let tar = tar_of(&[("readme.txt", b"hi")]);
        assert!(prepare_(&write(d, "t", &tar), d).expect_err("refused").to_string().contains("without toc.dat"));
    }

    #[test]
    fn any_sql_text_is_a_plain_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sql in [
            &b"create table t (id int);\ninsert into t values (1);\n"[..],
            b"\xEF\xBB\xBF-- seed data\n/* for the demo */\nInsert Into t Values (1);",
            b"-- schema.sql generated by a framework\n",
            b"  WITH x AS (SELECT 1) SELECT * FROM x;",
            b"\\set ON_ERROR_STOP on\nselect 1;",
        ] {
            assert_eq!(prepare_(&write(d, "s", sql), d).expect("plain").format, DumpFormat::Plain, "{sql:?}");
            let work = tempfile::tempdir().expect("tempdir");
            let gz = write(d, "g", &gzip(sql));
            assert_eq!(prepare_(&gz, work.path()).expect("gzip plain").format, DumpFormat::Plain);
        }
    }

    #[test]
    fn errors_name_a_downloaded_file_by_what_it_is_not_by_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = Guard::unbounded(dir.path());
        let err = prepare(&dir.path().join("gone"), dir.path(), &Limits::default(), &guard).expect_err("missing");
        let err = err.to_string();
        assert!(!err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("the downloaded dump"), "{err}");
    }

    #[test]
    fn truncated_dumps_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let cut = &PLAIN[..PLAIN.len() - 30];
        assert!(matches!(prepare_(&write(d, "p", cut), d), Err(RestoreError::Truncated(_))));
        let gz = gzip(PLAIN);
        assert!(matches!(prepare_(&write(d, "g", &gz[..gz.len() / 2]), d), Err(RestoreError::Truncated(_))));
    }
}
