//! Recognising a dump from its first bytes, and unpacking gzip and tar-packed directory dumps.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::RestoreError;

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

/// Recognises the dump at `path`, unpacking into `work` as needed (gzip → file, tar-packed
/// directory dump → directory).
///
/// # Errors
/// [`RestoreError::NotADump`] for anything that is not pg_dump output, [`RestoreError::Truncated`]
/// for a gzip stream or plain dump cut short.
pub fn prepare(path: &Path, work: &Path) -> Result<Dump, RestoreError> {
    if path.is_dir() {
        return if path.join("toc.dat").is_file() {
            Ok(Dump { format: DumpFormat::Directory, path: path.into() })
        } else {
            Err(RestoreError::NotADump(format!("directory {} (no toc.dat)", path.display())))
        };
    }
    let head = read_head(path)?;
    if head.starts_with(&GZIP_MAGIC) {
        let unpacked = work.join("dump.unzipped");
        gunzip(path, &unpacked)?;
        return prepare(&unpacked, work);
    }
    if head.starts_with(CUSTOM_MAGIC) {
        return Ok(Dump { format: DumpFormat::Custom, path: path.into() });
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return prepare_tar(path, work);
    }
    if looks_like_sql(&head) {
        // pg_dump's banner is in the first lines; its dumps must end with the completion line.
        // Hand-written SQL has no such line to check.
        if String::from_utf8_lossy(&head).contains("PostgreSQL database dump") {
            check_plain_complete(path)?;
        }
        return Ok(Dump { format: DumpFormat::Plain, path: path.into() });
    }
    Err(RestoreError::NotADump(describe_head(&head)))
}

fn read_head(path: &Path) -> Result<Vec<u8>, RestoreError> {
    let file =
        File::open(path).map_err(|e| RestoreError::File { path: path.display().to_string(), reason: e.to_string() })?;
    let mut head = Vec::with_capacity(1024);
    file.take(1024).read_to_end(&mut head)?;
    Ok(head)
}

fn gunzip(from: &Path, to: &Path) -> Result<(), RestoreError> {
    let mut decoder = flate2::read::GzDecoder::new(BufReader::new(File::open(from)?));
    let mut out = File::create(to)?;
    std::io::copy(&mut decoder, &mut out).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => RestoreError::Truncated("the gzip stream ends early".into()),
        _ => RestoreError::NotADump(format!("a damaged gzip file ({e})")),
    })?;
    Ok(())
}

/// A pg_dump tar archive has `restore.sql` beside `toc.dat`; a directory dump packed with tar
/// has `toc.dat` (possibly under one top-level folder) and no `restore.sql`.
fn prepare_tar(path: &Path, work: &Path) -> Result<Dump, RestoreError> {
    let mut archive = tar::Archive::new(File::open(path)?);
    let mut names = Vec::new();
    for entry in archive.entries().map_err(|e| RestoreError::NotADump(format!("an unreadable tar archive ({e})")))? {
        let entry = entry.map_err(|e| RestoreError::Truncated(format!("the tar archive is damaged ({e})")))?;
        names.push(entry.path().map(|p| p.to_path_buf()).unwrap_or_default());
    }
    let is = |n: &Path, file: &str| n.file_name().is_some_and(|f| f == file);
    if names.iter().any(|n| is(n, "restore.sql")) && names.iter().any(|n| n.as_os_str() == "toc.dat") {
        return Ok(Dump { format: DumpFormat::Tar, path: path.into() });
    }
    let Some(toc) = names.iter().find(|n| is(n, "toc.dat") && n.components().count() <= 2) else {
        return Err(RestoreError::NotADump("a tar archive without toc.dat".into()));
    };
    let dir = work.join("dump.dir");
    std::fs::create_dir_all(&dir)?;
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(0))?;
    tar::Archive::new(file)
        .unpack(&dir)
        .map_err(|e| RestoreError::Truncated(format!("cannot unpack the directory dump ({e})")))?;
    let root = toc.parent().map_or(dir.clone(), |p| dir.join(p));
    Ok(Dump { format: DumpFormat::Directory, path: root })
}

fn looks_like_sql(head: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(&head[..head.len().min(512)]).or_else(|e| {
        // The 1024-byte window may cut a multibyte character.
        std::str::from_utf8(&head[..e.valid_up_to()])
    }) else {
        return false;
    };
    let trimmed = text.trim_start();
    text.contains("PostgreSQL database dump")
        || ["--", "SET ", "CREATE ", "BEGIN", "\\connect", "SELECT "].iter().any(|p| trimmed.starts_with(p))
}

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

/// Meta-commands pg_dump itself writes into plain dumps (17.6+ brackets them with these).
const ALLOWED_PSQL_COMMANDS: [&str; 2] = ["\\restrict", "\\unrestrict"];

/// Refuses a plain SQL dump with psql meta-commands (`\!` runs a shell, `\o` writes files, `\i`
/// reads them) at the start of a line outside COPY data, where pg_dump never puts any.
///
/// # Errors
/// [`RestoreError::PsqlCommand`] naming the command and line.
pub fn check_plain_sql(path: &Path) -> Result<(), RestoreError> {
    use std::io::BufRead;
    let mut in_copy = false;
    for (index, line) in BufReader::new(File::open(path)?).split(b'\n').enumerate() {
        let line = line?;
        if in_copy {
            in_copy = line.as_slice() != b"\\.";
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.starts_with("COPY ") && text.ends_with("FROM stdin;") {
            in_copy = true;
        } else if text.starts_with('\\') {
            let command = text.split_whitespace().next().unwrap_or(text);
            if !ALLOWED_PSQL_COMMANDS.contains(&command) {
                return Err(RestoreError::PsqlCommand { command: command.to_string(), line: index + 1 });
            }
        }
    }
    Ok(())
}

fn describe_head(head: &[u8]) -> String {
    if head.is_empty() {
        return "an empty file".into();
    }
    let printable: String =
        head.iter().take(16).map(|b| if b.is_ascii_graphic() || *b == b' ' { *b as char } else { '.' }).collect();
    format!("a file starting with {printable:?}")
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

    const PLAIN: &[u8] = b"--\n-- PostgreSQL database dump\n--\nCREATE TABLE t (id int);\n--\n-- PostgreSQL database dump complete\n--\n";

    #[test]
    fn formats_are_recognised_by_content_not_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        assert_eq!(prepare(&write(d, "a.sql", b"PGDMP\x01\x0e"), d).expect("custom").format, DumpFormat::Custom);
        assert_eq!(prepare(&write(d, "b.dump", PLAIN), d).expect("plain").format, DumpFormat::Plain);
        let gz = write(d, "c.bin", &gzip(b"PGDMP\x01\x0e"));
        assert_eq!(prepare(&gz, d).expect("gzip custom").format, DumpFormat::Custom);
        let pgtar = tar_of(&[("toc.dat", b"PGDMP"), ("3000.dat", b""), ("restore.sql", b"--")]);
        assert_eq!(prepare(&write(d, "d", &pgtar), d).expect("tar").format, DumpFormat::Tar);
        let packed = tar_of(&[("shop/toc.dat", b"PGDMP"), ("shop/3000.dat.gz", b"")]);
        let dump = prepare(&write(d, "e", &gzip(&packed)), d).expect("directory");
        assert_eq!(dump.format, DumpFormat::Directory);
        assert!(dump.path.join("toc.dat").is_file(), "{dump:?}");
    }

    #[test]
    fn other_files_are_refused_with_what_they_look_like() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for (bytes, want) in [
            (&b""[..], "an empty file"),
            (b"\x89PNG\r\n\x1a\n0000", "PNG"),
            (b"<html><body>Not found</body></html>", "<html>"),
        ] {
            let err = prepare(&write(d, "x", bytes), d).expect_err("refused").to_string();
            assert!(err.contains("is not a PostgreSQL dump") && err.contains(want), "{err}");
        }
        let tar = tar_of(&[("readme.txt", b"hi")]);
        assert!(prepare(&write(d, "t", &tar), d).expect_err("refused").to_string().contains("without toc.dat"));
    }

    #[test]
    fn psql_commands_outside_copy_data_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let ok = b"\\restrict abc\nCREATE TABLE t (x text);\nCOPY public.t (x) FROM stdin;\n\\N\n\\! not a command in data\n\\.\n\\unrestrict abc\n";
        assert!(check_plain_sql(&write(d, "ok.sql", ok)).is_ok());
        for (sql, command) in [
            (&b"SELECT 1;\n\\! id > /tmp/owned\n"[..], "\\!"),
            (b"  \\o /etc/passwd\n", "\\o"),
            (b"COPY t FROM stdin;\n\\.\n\\i /root/secret\n", "\\i"),
        ] {
            let err = check_plain_sql(&write(d, "bad.sql", sql)).expect_err("refused");
            assert!(matches!(&err, RestoreError::PsqlCommand { command: c, .. } if c == command), "{err}");
        }
    }

    #[test]
    fn truncated_dumps_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let cut = &PLAIN[..PLAIN.len() - 30];
        assert!(matches!(prepare(&write(d, "p", cut), d), Err(RestoreError::Truncated(_))));
        let gz = gzip(PLAIN);
        assert!(matches!(prepare(&write(d, "g", &gz[..gz.len() / 2]), d), Err(RestoreError::Truncated(_))));
    }
}
