//! Copying data directories file by file: a clone from a snapshot (local runtime), and a
//! finished template into the volume that is snapshotted (restore Jobs of masked projects).
//! Only what is in files is copied: blocks a file system freed (a deleted download, the old
//! files `VACUUM FULL` replaced) stay behind.

use std::path::Path;

/// Copies a stopped, [sealed](crate::seal) data directory file by file, as reflinks where the
/// filesystem allows: regular files and directories only (a link or a special file fails the
/// copy: a template holds none). In this process, not a `cp` child: a controller killed mid-copy
/// leaves no copier behind to race the next attempt.
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
        } else if !meta.is_file() {
            return Err(std::io::Error::other(format!(
                "{} is a link or a special file: a template holds none",
                source.strip_prefix(from).unwrap_or(&source).display()
            )));
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
    fn a_copied_tree_keeps_contents_and_modes_and_refuses_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("base/1")).expect("dirs");
        std::fs::write(from.join("PG_VERSION"), "15\n").expect("file");
        std::fs::write(from.join("base/1/1259"), vec![7_u8; 100_000]).expect("file");
        std::fs::set_permissions(from.join("base"), std::fs::Permissions::from_mode(0o700)).expect("mode");
        std::fs::set_permissions(from.join("PG_VERSION"), std::fs::Permissions::from_mode(0o600)).expect("mode");
        let to = dir.path().join("to");
        copy_tree(&from, &to).expect("copies");
        assert_eq!(std::fs::read(to.join("base/1/1259")).expect("read"), vec![7_u8; 100_000]);
        assert_eq!(std::fs::read_to_string(to.join("PG_VERSION")).expect("read"), "15\n");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&to.join("base")), 0o700);
        assert_eq!(mode(&to.join("PG_VERSION")), 0o600);
        assert!(copy_tree(&from, &to).is_err(), "never copies over an existing tree");
        std::os::unix::fs::symlink("/etc/passwd", from.join("base/1/16384")).expect("symlink");
        let err = copy_tree(&from, &dir.path().join("again")).expect_err("a link").to_string();
        assert!(err.contains("16384 is a link"), "{err}");
    }
}
