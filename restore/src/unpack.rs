//! Unpacking what a source hands over into the restore's own directory: gzip streams, tar
//! archives and directory dumps. The input is hostile:
//! - only **regular files and directories** are made: a symbolic or hard link, a device, a
//!   FIFO or a sparse member refuses the archive (a link would let `pg_restore`, which opens
//!   files by the names the archive's `toc.dat` gives, read any file of the host);
//! - names are **relative and plain** (no `..`, no absolute path), at most [`MAX_DEPTH`]
//!   levels, and each file is created new (`O_EXCL`, never through a link: `O_NOFOLLOW`);
//! - every size is **bounded**: each file's, the whole output's (`max_source_bytes`), the
//!   expansion of a compressed stream ([`Limits::max_ratio`]), the number of members
//!   ([`MAX_MEMBERS`]), the long names and extension headers tar keeps in memory
//!   ([`MAX_HEADER`]); and every chunk is counted by the restore's [`Guard`] (its owner's disk,
//!   the room left for others, a cancel, the deadline).

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use crate::RestoreError;
use crate::guard::Guard;
use crate::limits::Limits;

/// Tar members at most (a directory dump has one file per table and per large object batch).
pub const MAX_MEMBERS: usize = 200_000;
/// Directory levels at most below the archive's root.
pub const MAX_DEPTH: usize = 8;
/// The largest long name or extension header read into memory.
pub const MAX_HEADER: u64 = 64 << 10;
/// Bytes copied per chunk (each counted by the guard).
const CHUNK: usize = 1 << 20;

/// Copies `from` into `to` (a new file), at most `max` bytes of it, counting every chunk.
/// Returns the bytes copied.
fn copy_bounded(
    mut from: impl Read,
    to: &Path,
    max: u64,
    guard: &Guard,
    too_large: RestoreError,
) -> Result<u64, RestoreError> {
    let mut out = create_new(to)?;
    let mut buf = vec![0_u8; CHUNK];
    let mut total = 0_u64;
    let result = loop {
        guard.check()?;
        let n = match from.read(&mut buf) {
            Ok(0) => break Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        total += n as u64;
        if total > max {
            drop(out);
            let _ = std::fs::remove_file(to);
            return Err(too_large);
        }
        out.write_all(&buf[..n])?;
        guard.wrote(n as u64)?;
    };
    result.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => RestoreError::Truncated("the gzip stream ends early".into()),
        std::io::ErrorKind::StorageFull => RestoreError::from(e),
        _ => RestoreError::NotADump(format!("a damaged compressed file ({e})")),
    })
}

/// Creates `path` as a new file, never through a link, readable by the sandbox (0644 whatever
/// the process's umask: a directory dump is shown to the sandbox's user read-only).
fn create_new(path: &Path) -> Result<File, RestoreError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => RestoreError::NotADump("an archive that names a file twice".into()),
            _ => RestoreError::from(e),
        })?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    Ok(file)
}

/// Creates the directory `path` (not there yet), readable by the sandbox (0755).
fn create_dir(path: &Path) -> Result<(), RestoreError> {
    std::fs::create_dir(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Decompresses `from` into `to`: at most `limits.max_source_bytes`, and at most
/// `limits.max_ratio` times the compressed size (at least 1 MiB).
///
/// # Errors
/// [`RestoreError::TooLarge`] past either bound; what the guard says.
pub fn gunzip(from: &Path, to: &Path, limits: &Limits, guard: &Guard) -> Result<u64, RestoreError> {
    let compressed = std::fs::metadata(from)?.len();
    let by_ratio = compressed.saturating_mul(limits.max_ratio).max(1 << 20);
    let max = limits.max_source_bytes.min(by_ratio);
    let too_large = if max < limits.max_source_bytes {
        RestoreError::Expands { ratio: limits.max_ratio }
    } else {
        RestoreError::TooLarge { limit: limits.max_source_bytes }
    };
    let decoder = flate2::read::MultiGzDecoder::new(BufReader::new(File::open(from)?));
    copy_bounded(decoder, to, max, guard, too_large)
}

/// The name of a tar member as a safe relative path, or why it is refused.
fn member_path(name: &[u8]) -> Result<PathBuf, String> {
    let text = std::str::from_utf8(name).map_err(|_| "a member name that is not UTF-8".to_string())?;
    let mut path = PathBuf::new();
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            _ => return Err(format!("a member named {text:?} (names must be relative, without ..)")),
        }
    }
    if path.components().count() > MAX_DEPTH {
        return Err(format!("a member more than {MAX_DEPTH} directories deep"));
    }
    Ok(path)
}

/// What one member of a tar archive is.
enum Member {
    File(PathBuf),
    Dir(PathBuf),
}

/// Reads the archive at `path` member by member (raw headers: long names and extension headers
/// are bounded here rather than read whole by the tar library), calling `each` with every
/// regular file or directory and its data. Anything else refuses the archive.
fn walk(
    path: &Path,
    mut each: impl FnMut(Member, &mut dyn Read) -> Result<(), RestoreError>,
) -> Result<(), RestoreError> {
    let damaged = |e: std::io::Error| RestoreError::Truncated(format!("the tar archive is damaged ({e})"));
    let mut archive = tar::Archive::new(BufReader::new(File::open(path)?));
    let entries = archive.entries().map_err(|e| RestoreError::NotADump(format!("an unreadable tar archive ({e})")))?;
    let mut long_name: Option<Vec<u8>> = None;
    for (count, entry) in entries.raw(true).enumerate() {
        if count >= MAX_MEMBERS {
            return Err(RestoreError::NotADump(format!("a tar archive of more than {MAX_MEMBERS} members")));
        }
        let mut entry = entry.map_err(damaged)?;
        let kind = entry.header().entry_type();
        let size = entry.header().entry_size().map_err(damaged)?;
        let small = |what: &str| {
            if size > MAX_HEADER {
                return Err(RestoreError::NotADump(format!("a tar archive with a {what} larger than 64 KiB")));
            }
            Ok(())
        };
        let refused = |what: &str| {
            Err(RestoreError::NotADump(format!(
                "a tar archive holding {what}: DevDB reads only regular files and directories"
            )))
        };
        match kind {
            tar::EntryType::GNULongName => {
                small("long name")?;
                let mut name = Vec::new();
                entry.read_to_end(&mut name).map_err(damaged)?;
                while name.last() == Some(&0) {
                    name.pop();
                }
                long_name = Some(name);
            }
            tar::EntryType::XHeader => {
                small("extension header")?;
                let mut pax = Vec::new();
                entry.read_to_end(&mut pax).map_err(damaged)?;
                for extension in tar::PaxExtensions::new(&pax) {
                    let extension = extension.map_err(damaged)?;
                    match extension.key() {
                        Ok("path") => long_name = Some(extension.value_bytes().to_vec()),
                        Ok("linkpath") => return refused("a link"),
                        Ok(key) if key.starts_with("GNU.sparse") => return refused("a sparse file"),
                        _ => {}
                    }
                }
            }
            tar::EntryType::XGlobalHeader => small("global extension header")?,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => {
                let name = long_name.take().unwrap_or_else(|| entry.header().path_bytes().into_owned());
                let path = member_path(&name).map_err(RestoreError::NotADump)?;
                let member = if kind == tar::EntryType::Directory { Member::Dir(path) } else { Member::File(path) };
                each(member, &mut entry)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link | tar::EntryType::GNULongLink => return refused("a link"),
            tar::EntryType::GNUSparse => return refused("a sparse file"),
            _ => return refused("a device, a FIFO or another special file"),
        }
    }
    Ok(())
}

/// The names of an archive's regular files (to tell pg_dump's tar format from a packed
/// directory dump).
///
/// # Errors
/// As [`walk`]: anything but regular files and directories refuses it.
pub fn tar_names(path: &Path) -> Result<Vec<PathBuf>, RestoreError> {
    let mut names = Vec::new();
    walk(path, |member, _| {
        if let Member::File(name) = member {
            names.push(name);
        }
        Ok(())
    })?;
    Ok(names)
}

/// Unpacks the tar archive at `path` into `into` (which must not exist), regular files and
/// directories only, within `limits` and the guard.
///
/// # Errors
/// See the module documentation.
pub fn untar(path: &Path, into: &Path, limits: &Limits, guard: &Guard) -> Result<(), RestoreError> {
    create_dir(into)?;
    let mut left = limits.max_source_bytes;
    walk(path, |member, data| match member {
        Member::Dir(dir) => make_dirs(into, &dir),
        Member::File(file) => {
            if let Some(parent) = file.parent() {
                make_dirs(into, parent)?;
            }
            let too_large = RestoreError::TooLarge { limit: limits.max_source_bytes };
            let copied = copy_bounded(data, &into.join(&file), left, guard, too_large)?;
            left -= copied;
            Ok(())
        }
    })
}

/// Creates `rel` (safe, relative) under `root`, one level at a time, never through a link.
fn make_dirs(root: &Path, rel: &Path) -> Result<(), RestoreError> {
    let mut dir = root.to_path_buf();
    for part in rel.components() {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(RestoreError::NotADump("an archive that names a file and a directory alike".into())),
            Err(_) => create_dir(&dir)?,
        }
    }
    Ok(())
}

/// Copies the directory dump `from` (a `file://` source) into `into` (which must not exist):
/// regular files and directories only, never through a link, within `limits` and the guard.
///
/// # Errors
/// [`RestoreError::NotADump`] naming a link or special file found; the bounds'.
pub fn copy_dir(from: &Path, into: &Path, limits: &Limits, guard: &Guard) -> Result<(), RestoreError> {
    let mut left = limits.max_source_bytes;
    let mut stack = vec![(from.to_path_buf(), into.to_path_buf(), 0_usize)];
    while let Some((source, target, depth)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&source)?;
        let rel = source.strip_prefix(from).unwrap_or(&source).display().to_string();
        if meta.is_dir() {
            if depth > MAX_DEPTH {
                return Err(RestoreError::NotADump(format!("a directory more than {MAX_DEPTH} levels deep")));
            }
            create_dir(&target)?;
            for entry in std::fs::read_dir(&source)? {
                let entry = entry?;
                stack.push((entry.path(), target.join(entry.file_name()), depth + 1));
            }
        } else if meta.is_file() {
            let file = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(&source)?;
            let too_large = RestoreError::TooLarge { limit: limits.max_source_bytes };
            left -= copy_bounded(file, &target, left, guard, too_large)?;
        } else {
            return Err(RestoreError::NotADump(format!(
                "a directory dump holding {rel:?}, which is a link or a special file: DevDB reads only regular files and directories"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(0o644);
        header
    }

    fn unpack(bytes: &[u8]) -> Result<tempfile::TempDir, RestoreError> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.tar"), bytes).expect("write");
        let guard = Guard::unbounded(dir.path());
        untar(&dir.path().join("a.tar"), &dir.path().join("out"), &Limits::default(), &guard).map(|()| dir)
    }

    #[test]
    fn links_devices_and_fifos_refuse_the_archive() {
        for (kind, what) in [
            (tar::EntryType::Symlink, "a link"),
            (tar::EntryType::Link, "a link"),
            (tar::EntryType::Char, "special file"),
            (tar::EntryType::Block, "special file"),
            (tar::EntryType::Fifo, "special file"),
            (tar::EntryType::GNUSparse, "sparse"),
        ] {
            let mut builder = tar::Builder::new(Vec::new());
            let mut toc = header(tar::EntryType::Regular, 5);
            builder.append_data(&mut toc, "toc.dat", &b"PGDMP"[..]).expect("toc");
            let mut bad = header(kind, 0);
            if kind == tar::EntryType::Symlink || kind == tar::EntryType::Link {
                bad.set_size(0);
                builder.append_link(&mut bad, "3000.dat", "/etc/passwd").expect("link");
            } else {
                builder.append_data(&mut bad, "3000.dat", &b""[..]).expect("member");
            }
            let err = unpack(&builder.into_inner().expect("tar")).expect_err("refused").to_string();
            assert!(err.contains(what) && err.contains("only regular files and directories"), "{kind:?}: {err}");
        }
    }

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        for name in ["../escape.dat", "/etc/cron.d/x", "a/../../b"] {
            let mut raw = header(tar::EntryType::Regular, 1);
            // The tar library refuses such names when building, so the header is written by hand.
            let gnu = raw.as_gnu_mut().expect("gnu");
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            raw.set_cksum();
            let mut bytes = raw.as_bytes().to_vec();
            bytes.extend_from_slice(&[b'x'; 512]);
            bytes.extend_from_slice(&[0; 1024]);
            let err = unpack(&bytes).expect_err("refused").to_string();
            assert!(err.contains("names must be relative"), "{name}: {err}");
        }
    }

    #[test]
    fn a_huge_long_name_is_refused_without_being_read() {
        let mut long = header(tar::EntryType::GNULongName, 1 << 30);
        long.set_cksum();
        let mut bytes = long.as_bytes().to_vec();
        bytes.extend_from_slice(&[b'a'; 4096]);
        let err = unpack(&bytes).expect_err("refused").to_string();
        assert!(err.contains("long name larger than 64 KiB"), "{err}");
    }

    #[test]
    fn a_long_name_and_directories_unpack_into_place() {
        let mut builder = tar::Builder::new(Vec::new());
        let long = format!("shop/{}/toc.dat", "d".repeat(150));
        let mut file = header(tar::EntryType::Regular, 5);
        builder.append_data(&mut file, &long, &b"PGDMP"[..]).expect("long");
        let dir = unpack(&builder.into_inner().expect("tar")).expect("unpacks");
        assert_eq!(std::fs::read(dir.path().join("out").join(&long)).expect("read"), b"PGDMP");
    }

    #[test]
    fn a_nested_gzip_stops_at_the_ratio() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0_u8; 64 << 20]).expect("gzip");
        std::fs::write(dir.path().join("bomb.gz"), enc.finish().expect("gzip")).expect("write");
        let guard = Guard::unbounded(dir.path());
        let limits = Limits { max_ratio: 100, ..Limits::default() };
        let err = gunzip(&dir.path().join("bomb.gz"), &dir.path().join("out"), &limits, &guard).expect_err("bomb");
        assert!(matches!(err, RestoreError::Expands { ratio: 100 }), "{err}");
        assert!(!dir.path().join("out").exists(), "nothing half-written stays");
    }

    #[test]
    fn a_cancel_stops_a_decompression_within_a_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![7_u8; 16 << 20]).expect("gzip");
        std::fs::write(dir.path().join("big.gz"), enc.finish().expect("gzip")).expect("write");
        let guard = Guard::unbounded(dir.path());
        guard.cancel();
        let err = gunzip(&dir.path().join("big.gz"), &dir.path().join("out"), &Limits::default(), &guard);
        assert!(matches!(err, Err(RestoreError::Cancelled)), "{err:?}");
    }

    #[test]
    fn a_directory_dump_with_a_link_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let from = dir.path().join("dump");
        std::fs::create_dir(&from).expect("dir");
        std::fs::write(from.join("toc.dat"), b"PGDMP").expect("toc");
        std::os::unix::fs::symlink("/etc/passwd", from.join("3000.dat")).expect("link");
        let guard = Guard::unbounded(dir.path());
        let err = copy_dir(&from, &dir.path().join("copy"), &Limits::default(), &guard).expect_err("refused");
        assert!(err.to_string().contains("\"3000.dat\", which is a link"), "{err}");
    }
}
