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

/// `512MiB`, `100GiB`, `1TB`, `4096` → bytes.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a size like 512MiB or 100GiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{text:?} is not a size like 512MiB or 100GiB")),
    };
    number.checked_mul(factor).ok_or_else(|| format!("{text:?} is too large"))
}

/// `1073741824` → `1.0 GiB`.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", units[unit]) }
}

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
    fn sizes_read_and_print_like_people_write_them() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("100GiB"), Ok(100 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("2 gb"), Ok(2 << 30));
        assert!(parse_bytes("lots").is_err() && parse_bytes("5 parsecs").is_err());
        assert_eq!(human(1 << 30), "1.0 GiB");
        assert_eq!(human(300 << 20), "300.0 MiB");
        assert_eq!(human(12), "12 B");
        assert!(free_bytes(std::path::Path::new("/")).expect("statvfs") > 0);
    }
}
