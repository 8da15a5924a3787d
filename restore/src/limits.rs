//! Bounds on the work a source can cause: how large it may be (downloaded, and once
//! decompressed) and how slowly it may arrive. A source that breaks them fails with a reason
//! instead of holding a restore forever or filling the disk.

use std::time::Duration;

use clap::Args;

/// The bounds of one restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest source accepted, downloaded and again once decompressed (a gzip bomb stops
    /// here).
    pub max_source_bytes: u64,
    /// A download must bring at least [`Limits::stall_min_bytes`] in every window this long:
    /// a source that stops, or trickles, fails.
    pub stall_window: Duration,
    pub stall_min_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_source_bytes: 100 << 30, stall_window: Duration::from_secs(60), stall_min_bytes: 64 << 10 }
    }
}

/// The limits as flags (the controller's and the restore Job's), each with an environment
/// fallback.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Restore limits")]
pub struct LimitArgs {
    /// The largest source accepted, downloaded and once decompressed (e.g. 100GiB, 512MiB).
    #[arg(long, env = "DEVDB_MAX_SOURCE_SIZE", default_value = "100GiB", value_parser = parse_bytes)]
    pub max_source_size: u64,

    /// A download that brings less than 64 KiB in this long fails as stalled.
    #[arg(long, env = "DEVDB_SOURCE_STALL_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub source_stall_timeout: Duration,
}

impl From<&LimitArgs> for Limits {
    fn from(args: &LimitArgs) -> Self {
        Self { max_source_bytes: args.max_source_size, stall_window: args.source_stall_timeout, ..Self::default() }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_from_the_file_system() {
        assert!(free_bytes(std::path::Path::new("/")).expect("statvfs") > 0);
    }
}
