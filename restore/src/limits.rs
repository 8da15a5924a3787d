//! Bounds on the work a source can cause: how large it may be (downloaded, and once
//! decompressed), how far it may expand, how slowly it may arrive and how long its whole restore
//! may take. A source that breaks them fails with a reason instead of holding a restore
//! forever or filling the disk. (Disk per owner and the room left for everyone else are the
//! [`crate::guard`]'s.)

use std::time::Duration;

use clap::Args;

/// The bounds of one restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest source accepted, downloaded and again once decompressed (a gzip bomb stops
    /// here).
    pub max_source_bytes: u64,
    /// Decompressed bytes per compressed byte, at most (gzip itself reaches about 1030).
    pub max_ratio: u64,
    /// A download must bring at least [`Limits::stall_min_bytes`] in every window this long:
    /// a source that stops, or trickles, fails.
    pub stall_window: Duration,
    pub stall_min_bytes: u64,
    /// The whole restore (download, load, masking) ends by then.
    pub max_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_source_bytes: 100 << 30,
            max_ratio: 200,
            stall_window: Duration::from_secs(60),
            stall_min_bytes: 64 << 10,
            max_time: Duration::from_secs(6 * 3600),
        }
    }
}

/// Gzip layers unpacked at most (a gzip inside a gzip is already unusual).
pub const MAX_GZIP_LAYERS: usize = 2;

/// The limits as flags (the controller's and the restore Job's), each with an environment
/// fallback.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Restore limits")]
pub struct LimitArgs {
    /// The largest source accepted, downloaded and once decompressed (e.g. 100GiB, 512MiB).
    #[arg(long, env = "DEVDB_MAX_SOURCE_SIZE", default_value = "100GiB", value_parser = parse_bytes)]
    pub max_source_size: u64,

    /// How far a compressed source may expand: decompressed bytes per compressed byte (a gzip
    /// bomb, or a gzip inside a gzip, stops there).
    #[arg(long, env = "DEVDB_MAX_DECOMPRESSION_RATIO", default_value_t = 200, value_parser = clap::value_parser!(u64).range(2..))]
    pub max_decompression_ratio: u64,

    /// A download that brings less than 64 KiB in this long fails as stalled.
    #[arg(long, env = "DEVDB_SOURCE_STALL_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub source_stall_timeout: Duration,

    /// The longest a whole restore (download, load, masking) may take: a source that trickles
    /// just fast enough, or a dump whose statements never end, fails then.
    #[arg(long, env = "DEVDB_MAX_RESTORE_TIME", default_value = "6h", value_parser = humantime::parse_duration)]
    pub max_restore_time: Duration,
}

impl From<&LimitArgs> for Limits {
    fn from(args: &LimitArgs) -> Self {
        Self {
            max_source_bytes: args.max_source_size,
            max_ratio: args.max_decompression_ratio,
            stall_window: args.source_stall_timeout,
            max_time: args.max_restore_time,
            ..Self::default()
        }
    }
}

pub use devdb_shared::size::{human, parse as parse_bytes};

/// Bytes free for this process's user on the file system of `path`.
///
/// # Errors
/// When the file system cannot be asked.
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(stat.blocks_available() * stat.fragment_size())
}

/// Inodes free for this process's user on the file system of `path`, and in all (0 where the
/// file system has no fixed number).
///
/// # Errors
/// When the file system cannot be asked.
pub fn free_inodes(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok((stat.files_available(), stat.files()))
}

/// The size of the file system of `path`.
///
/// # Errors
/// When the file system cannot be asked.
pub fn total_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(stat.blocks() * stat.fragment_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_from_the_file_system() {
        let root = std::path::Path::new("/");
        let (free, total) = (free_bytes(root).expect("statvfs"), total_bytes(root).expect("statvfs"));
        assert!(free > 0 && total >= free, "{free} of {total}");
    }
}
