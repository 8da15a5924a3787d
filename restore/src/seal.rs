//! Sealing a built template before anyone trusts it. The restore's sandbox could write anything
//! in its data directory (a server or `pg_restore` taken over by a hostile dump would), and what
//! it leaves is copied into every clone and run there as the PostgreSQL user, next to every
//! other tenant's instances. So once nothing of the sandbox runs any more:
//! - the tree holds **regular files and directories only**: a symbolic link (into another
//!   instance's files, or to a host file a later write or read would follow), a device or a FIFO
//!   refuses the template, and `pg_tblspc` is empty (DevDB templates have no tablespace);
//! - nothing makes a clone **recover or replay** (`recovery.signal`, `standby.signal`,
//!   `backup_label`, `tablespace_map`): a `restore_command` would run as the PostgreSQL user;
//! - the **configuration** is the controller's: `postgresql.conf`, `pg_hba.conf` and
//!   `pg_ident.conf` as initdb wrote them before any dump code ran ([`Pristine`]), and
//!   `postgresql.auto.conf` as `BASE_CONF`; each written anew, never through a link.
//!
//! The files are read and written by this process without following links, so a link planted
//! while the sandbox ran leads nowhere (`devdb_pgctl::conf::write_new`, [`read_regular`]).

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use devdb_pgctl::conf::{BASE_CONF, write_new};

use crate::RestoreError;

/// The configuration files initdb writes, as it wrote them.
const CONFIG_FILES: [&str; 3] = ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"];
/// Files that make a starting server recover, replay or restore.
const RECOVERY_FILES: [&str; 4] = ["recovery.signal", "standby.signal", "backup_label", "tablespace_map"];

/// The configuration files of a fresh data directory, read before any dump code ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pristine(Vec<(&'static str, Vec<u8>)>);

impl Pristine {
    /// Reads them from `data`, just after initdb.
    ///
    /// # Errors
    /// When one cannot be read (or is not a regular file).
    pub fn read(data: &Path) -> Result<Self, RestoreError> {
        CONFIG_FILES
            .iter()
            .map(|name| Ok((*name, read_regular(&data.join(name), 1 << 20)?)))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

fn refused(what: String) -> RestoreError {
    RestoreError::Step { step: "checking the template", detail: what }
}

/// Reads the regular file `path` (never through a link), at most `limit` bytes.
///
/// # Errors
/// When it is not a regular file, or cannot be read.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, RestoreError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| refused(format!("{}: {e}", path.display())))?;
    if !file.metadata()?.is_file() {
        return Err(refused(format!("{} is not a regular file", path.display())));
    }
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Seals the stopped data directory `data` (see the module documentation). Call it once nothing
/// of the sandbox that built it runs.
///
/// # Errors
/// [`RestoreError::Step`] naming what the template holds that no template may.
pub fn seal(data: &Path, pristine: &Pristine) -> Result<(), RestoreError> {
    let mut stack = vec![data.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            let shown = path.strip_prefix(data).unwrap_or(&path).display().to_string();
            if kind.is_dir() {
                stack.push(path);
            } else if !kind.is_file() {
                return Err(refused(format!("the template holds {shown}, which is a link or a special file")));
            }
        }
    }
    if std::fs::read_dir(data.join("pg_tblspc"))?.next().is_some() {
        return Err(refused("the template has a tablespace".into()));
    }
    for name in RECOVERY_FILES {
        if std::fs::symlink_metadata(data.join(name)).is_ok() {
            return Err(refused(format!("the template holds {name}")));
        }
    }
    for (name, bytes) in &pristine.0 {
        write_new(&data.join(name), bytes)?;
    }
    write_new(&data.join("postgresql.auto.conf"), BASE_CONF.as_bytes())?;
    Ok(())
}

/// Creates the log file `path` for a sandboxed program (a new file, never through a link), to
/// be read back through the returned handle with [`read_log`].
///
/// # Errors
/// When it cannot be created.
pub fn create_log(path: &Path) -> std::io::Result<std::fs::File> {
    write_new(path, b"")?;
    std::fs::OpenOptions::new().read(true).write(true).custom_flags(nix::libc::O_NOFOLLOW).open(path)
}

/// The last 64 KiB of a log written through `file` (read through the handle: whatever the path
/// became meanwhile).
pub fn read_log(file: &mut std::fs::File) -> String {
    use std::io::Seek as _;
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(std::io::SeekFrom::Start(len.saturating_sub(64 << 10)));
    let mut bytes = Vec::new();
    let _ = file.take(64 << 10).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Writes every file and directory of the sealed tree `data` to disk (what `initdb --sync-only`
/// does, without running a program on it).
///
/// # Errors
/// When a file cannot be synced.
pub fn sync_tree(data: &Path) -> std::io::Result<()> {
    let mut stack = vec![data.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(entry.path())?
                    .sync_all()?;
            }
        }
        std::fs::File::open(&dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> (tempfile::TempDir, Pristine) {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path();
        for sub in ["base/1", "pg_tblspc", "global"] {
            std::fs::create_dir_all(data.join(sub)).expect("dirs");
        }
        for name in CONFIG_FILES {
            std::fs::write(data.join(name), format!("# {name} by initdb\n")).expect("conf");
        }
        std::fs::write(data.join("base/1/1259"), b"rows").expect("file");
        let pristine = Pristine::read(data).expect("read");
        (dir, pristine)
    }

    #[test]
    fn what_the_sandbox_changed_in_the_configuration_is_replaced() {
        let (dir, pristine) = template();
        let data = dir.path();
        std::fs::write(data.join("postgresql.conf"), "restore_command = 'id > /tmp/pwned'\n").expect("tamper");
        std::fs::write(data.join("pg_hba.conf"), "host all all 0.0.0.0/0 trust\n").expect("tamper");
        std::fs::write(data.join("postgresql.auto.conf"), "shared_preload_libraries = 'evil'\n").expect("tamper");
        seal(data, &pristine).expect("sealed");
        assert_eq!(
            std::fs::read_to_string(data.join("postgresql.conf")).expect("read"),
            "# postgresql.conf by initdb\n"
        );
        assert_eq!(std::fs::read_to_string(data.join("pg_hba.conf")).expect("read"), "# pg_hba.conf by initdb\n");
        assert_eq!(std::fs::read_to_string(data.join("postgresql.auto.conf")).expect("read"), BASE_CONF);
    }

    #[test]
    fn a_configuration_file_made_a_link_refuses_the_template_and_nothing_is_written_through_it() {
        let (dir, pristine) = template();
        let outside = tempfile::NamedTempFile::new().expect("a host file");
        std::fs::write(outside.path(), "precious").expect("write");
        std::fs::remove_file(dir.path().join("postgresql.auto.conf")).ok();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("postgresql.auto.conf")).expect("link");
        assert!(seal(dir.path(), &pristine).is_err(), "refused");
        assert_eq!(
            std::fs::read_to_string(outside.path()).expect("read"),
            "precious",
            "never written through the link"
        );
        write_new(&dir.path().join("postgresql.auto.conf"), b"x").expect("replaced");
        assert_eq!(std::fs::read_to_string(outside.path()).expect("read"), "precious", "the link itself is replaced");
    }

    #[test]
    fn links_special_files_tablespaces_and_recovery_refuse_the_template() {
        for tamper in [
            |d: &Path| std::os::unix::fs::symlink("/var/lib/postgresql", d.join("base/1/16384")).expect("link"),
            |d: &Path| std::os::unix::fs::symlink("/elsewhere", d.join("pg_tblspc/16400")).expect("link"),
            |d: &Path| std::fs::write(d.join("recovery.signal"), b"").expect("signal"),
            |d: &Path| std::fs::write(d.join("backup_label"), b"").expect("label"),
            |d: &Path| nix::unistd::mkfifo(&d.join("global/fifo"), nix::sys::stat::Mode::S_IRWXU).expect("fifo"),
        ] {
            let (dir, pristine) = template();
            tamper(dir.path());
            let err = seal(dir.path(), &pristine).expect_err("refused").to_string();
            assert!(err.contains("checking the template failed"), "{err}");
        }
    }

    #[test]
    fn files_are_read_only_when_regular_and_never_through_a_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("log")).expect("link");
        assert!(read_regular(&dir.path().join("log"), 100).is_err());
        std::fs::write(dir.path().join("real"), b"0123456789").expect("file");
        assert_eq!(read_regular(&dir.path().join("real"), 4).expect("read"), b"0123");
    }
}
