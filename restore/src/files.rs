//! Copying data directories file by file: a clone from a snapshot (local runtime), and a
//! finished template into the volume that is snapshotted (restore Jobs of masked projects).
//! Only what is in files is copied: blocks a file system freed (a deleted download, the old
//! files `VACUUM FULL` replaced) stay behind.

use std::path::Path;

/// Copies a stopped data directory file by file, as reflinks where the filesystem allows. In
/// this process, not a `cp` child: a controller killed mid-copy leaves no copier behind to race
/// the next attempt.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((source, target)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&source)?;
        if meta.is_dir() {
            std::fs::create_dir(&target)?;
            std::fs::set_permissions(&target, meta.permissions())?;
            for entry in std::fs::read_dir(&source)? {
                let entry = entry?;
                stack.push((entry.path(), target.join(entry.file_name())));
            }
        } else if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else {
            reflink_copy::reflink_or_copy(&source, &target)?;
            std::fs::set_permissions(&target, meta.permissions())?;
        }
    }
    Ok(())
}

/// The bytes the files under `dir` hold (links and what cannot be read count nothing).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_copied_tree_keeps_contents_modes_and_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("base/1")).expect("dirs");
        std::fs::write(from.join("PG_VERSION"), "15\n").expect("file");
        std::fs::write(from.join("base/1/1259"), vec![7_u8; 100_000]).expect("file");
        std::fs::set_permissions(from.join("base"), std::fs::Permissions::from_mode(0o700)).expect("mode");
        std::fs::set_permissions(from.join("PG_VERSION"), std::fs::Permissions::from_mode(0o600)).expect("mode");
        std::os::unix::fs::symlink("base/1", from.join("link")).expect("symlink");
        let to = dir.path().join("to");
        copy_tree(&from, &to).expect("copies");
        assert_eq!(std::fs::read(to.join("base/1/1259")).expect("read"), vec![7_u8; 100_000]);
        assert_eq!(std::fs::read_to_string(to.join("PG_VERSION")).expect("read"), "15\n");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&to.join("base")), 0o700);
        assert_eq!(mode(&to.join("PG_VERSION")), 0o600);
        assert_eq!(std::fs::read_link(to.join("link")).expect("link"), Path::new("base/1"));
        assert!(copy_tree(&from, &to).is_err(), "never copies over an existing tree");
    }
}
