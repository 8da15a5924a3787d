//! The configuration DevDB writes into a data directory: the settings every instance keeps
//! ([`BASE_CONF`]) and `postgresql.auto.conf` written anew, never through a link (a data
//! directory a dump's code could write in may hold one).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Settings every instance keeps: a small pg_wal (clones copy it), and sockets only for the
/// PostgreSQL user (local connections are trusted, so the socket is the boundary).
pub const BASE_CONF: &str = "max_wal_size = '64MB'\nmin_wal_size = '32MB'\nunix_socket_permissions = 0700\n";

/// Replaces `path` with a new file holding `bytes` (mode 0600): whatever was there (a link
/// among them) is unlinked, and the new file is created exclusively, never through a link.
///
/// # Errors
/// When it cannot be written.
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(bytes)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

/// Replaces `postgresql.auto.conf` (the file `ALTER SYSTEM` writes) of `data` with a new file
/// holding `conf`, never written through a link, owned as the data directory is.
///
/// # Errors
/// When the file cannot be written.
pub fn write_conf(data: &Path, conf: &str) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let path = data.join("postgresql.auto.conf");
    write_new(&path, conf.as_bytes())?;
    // The server's, as the data directory is.
    let dir = std::fs::symlink_metadata(data)?;
    std::os::unix::fs::lchown(&path, Some(dir.uid()), Some(dir.gid()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_configuration_replaces_a_link_and_never_writes_through_it() {
        let data = tempfile::tempdir().expect("data");
        let outside = tempfile::NamedTempFile::new().expect("a host file");
        std::fs::write(outside.path(), "precious").expect("write");
        let conf = data.path().join("postgresql.auto.conf");
        std::os::unix::fs::symlink(outside.path(), &conf).expect("link");
        write_conf(data.path(), BASE_CONF).expect("written");
        assert_eq!(std::fs::read_to_string(outside.path()).expect("read"), "precious");
        assert_eq!(std::fs::read_to_string(&conf).expect("read"), BASE_CONF);
        let meta = std::fs::symlink_metadata(&conf).expect("meta");
        assert!(meta.is_file() && meta.permissions().mode() & 0o777 == 0o600, "{meta:?}");
    }
}
