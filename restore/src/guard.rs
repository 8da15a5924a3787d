//! What a restore may still do: a [`Guard`] is asked at every step (each chunk downloaded or
//! unpacked, each statement loaded) and watches the work directory while the server writes.
//! It ends the restore, with the reason, when
//! - it is cancelled (the project was deleted or refreshed again): within a chunk or a
//!   statement, and the restore server is killed under a statement that is still running;
//! - the restore would take more disk than its owner has left ([`Guard::new`]'s `allowance`,
//!   counted while it runs, not only once it is done);
//! - the file system would have less than the `reserve` left free: what one owner's restore
//!   fills, other owners' clones and starts cannot use;
//! - its deadline passes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::RestoreError;
use crate::limits::{free_bytes, human};

/// Why a guard ended its restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    Cancelled,
    /// More than the owner's remaining disk quota (bytes).
    Quota {
        allowance: u64,
    },
    /// Less than this left free on the file system.
    Reserve {
        reserve: u64,
    },
    /// Fewer than a twentieth of the file system's inodes left free.
    Inodes,
    /// The whole restore took longer than this.
    Deadline {
        limit: Duration,
    },
}

impl From<Halt> for RestoreError {
    fn from(halt: Halt) -> Self {
        match halt {
            Halt::Cancelled => Self::Cancelled,
            Halt::Quota { allowance } => Self::Halted(format!(
                "the restore needs more disk than its owner's quota leaves ({}); ask for a larger disk quota or delete databases",
                human(allowance)
            )),
            Halt::Reserve { reserve } => Self::Halted(format!(
                "the disk is nearly full: restores stop {} short of full, which is kept for databases",
                human(reserve)
            )),
            Halt::Inodes => Self::Halted(
                "the disk is nearly out of room for files (inodes): restores stop a twentieth short of full, which is kept for databases".into(),
            ),
            Halt::Deadline { limit } => Self::Halted(format!(
                "the restore took longer than {} (--max-restore-time)",
                humantime::format_duration(limit)
            )),
        }
    }
}

/// What a restore may take of its owner's disk quota: `bytes` in all, and `fits`, told this
/// restore's use now, says whether it (with the owner's other restores in flight) still fits.
#[derive(Clone)]
pub struct Allowance {
    pub bytes: u64,
    pub fits: Arc<dyn Fn(u64) -> bool + Send + Sync>,
}

impl Allowance {
    /// An allowance of `bytes` for this restore alone.
    pub fn alone(bytes: u64) -> Self {
        Self { bytes, fits: Arc::new(move |used| used <= bytes) }
    }
}

impl std::fmt::Debug for Allowance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allowance").field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

/// One restore's guard; clones share it.
#[derive(Debug, Clone)]
pub struct Guard(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    stop: AtomicBool,
    halt: Mutex<Option<Halt>>,
    /// The restore's directory, measured while its server writes.
    dir: PathBuf,
    allowance: Option<Allowance>,
    reserve: u64,
    started: Instant,
    limit: Option<Duration>,
    /// Bytes the streaming steps wrote, and what the last measure of the directory found.
    used: AtomicU64,
    /// The restore server's process, killed when the restore must end.
    server: Mutex<Option<nix::unistd::Pid>>,
}

/// How often the directory is measured while the server writes.
const MEASURE_EVERY: Duration = Duration::from_millis(500);

impl Guard {
    /// A guard of the restore working in `dir`: what its directory holds must fit `allowance`
    /// (none: no quota), at least `reserve` bytes left free on its file system (and a share of
    /// its inodes), done within `limit`.
    pub fn new(dir: &Path, allowance: Option<Allowance>, reserve: u64, limit: Option<Duration>) -> Self {
        Self(Arc::new(Inner {
            stop: AtomicBool::new(false),
            halt: Mutex::new(None),
            dir: dir.to_path_buf(),
            allowance,
            reserve,
            started: Instant::now(),
            limit,
            used: AtomicU64::new(0),
            server: Mutex::new(None),
        }))
    }

    /// A guard that only stops when told (tests, and where the platform bounds the rest).
    pub fn unbounded(dir: &Path) -> Self {
        Self::new(dir, None, 0, None)
    }

    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends the restore for `why` (the first reason given is kept): the steps stop at their next
    /// check, and the server is killed.
    pub fn halt(&self, why: Halt) {
        Self::lock(&self.0.halt).get_or_insert(why);
        self.0.stop.store(true, Ordering::SeqCst);
        if let Some(pid) = *Self::lock(&self.0.server) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Cancels the restore.
    pub fn cancel(&self) {
        self.halt(Halt::Cancelled);
    }

    /// Why it ended, if it did.
    pub fn halted(&self) -> Option<Halt> {
        self.0.stop.load(Ordering::SeqCst).then(|| Self::lock(&self.0.halt).clone()).flatten()
    }

    /// The flag the loading steps look at between statements.
    pub fn flag(&self) -> &AtomicBool {
        &self.0.stop
    }

    /// `Err` with the reason once the restore must end (the deadline is looked at here).
    ///
    /// # Errors
    /// The reason, as a [`RestoreError`].
    pub fn check(&self) -> Result<(), RestoreError> {
        if let Some(limit) = self.0.limit
            && self.0.started.elapsed() > limit
        {
            self.halt(Halt::Deadline { limit });
        }
        match self.halted() {
            Some(halt) => Err(halt.into()),
            None => Ok(()),
        }
    }

    /// A streaming step wrote `bytes` more into the directory.
    ///
    /// # Errors
    /// As [`Guard::check`], after counting them.
    pub fn wrote(&self, bytes: u64) -> Result<(), RestoreError> {
        let used = self.0.used.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.judge(used);
        self.check()
    }

    /// What the directory holds now (measured), judged.
    ///
    /// # Errors
    /// As [`Guard::check`].
    pub fn measure(&self) -> Result<(), RestoreError> {
        let used = crate::files::dir_size(&self.0.dir);
        self.0.used.store(used, Ordering::SeqCst);
        self.judge(used);
        self.check()
    }

    fn judge(&self, used: u64) {
        if let Some(allowance) = &self.0.allowance
            && !(allowance.fits)(used)
        {
            self.halt(Halt::Quota { allowance: allowance.bytes });
        }
        if self.0.reserve > 0 {
            if free_bytes(&self.0.dir).is_ok_and(|free| free < self.0.reserve) {
                self.halt(Halt::Reserve { reserve: self.0.reserve });
            }
            // Inodes too: a restore of many small files could leave none with bytes to spare.
            if crate::limits::free_inodes(&self.0.dir)
                .is_ok_and(|(free, total)| total > 0 && free < (total / 20).max(64))
            {
                self.halt(Halt::Inodes);
            }
        }
    }

    /// The restore server is `pid` (killed if the restore must end); `None` once it stopped.
    pub fn set_server(&self, pid: Option<nix::unistd::Pid>) {
        *Self::lock(&self.0.server) = pid;
        if pid.is_some() && self.0.stop.load(Ordering::SeqCst) {
            self.halt(Halt::Cancelled);
        }
    }

    /// Runs `work` while a thread measures the directory every half second (and checks the
    /// deadline), halting the restore when it breaks a bound.
    pub fn watching<T>(&self, work: impl FnOnce() -> T) -> T {
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(Ordering::SeqCst) && !self.0.stop.load(Ordering::SeqCst) {
                    let _ = self.measure();
                    std::thread::park_timeout(MEASURE_EVERY);
                }
            });
            let result = work();
            done.store(true, Ordering::SeqCst);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_stands_and_every_check_after_it_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = Guard::new(dir.path(), Some(Allowance::alone(1000)), 0, None);
        guard.wrote(600).expect("within the allowance");
        let err = guard.wrote(600).expect_err("over it");
        assert!(err.to_string().contains("owner's quota leaves (1000 B)"), "{err}");
        guard.cancel();
        assert_eq!(guard.halted(), Some(Halt::Quota { allowance: 1000 }), "the first reason is kept");
        assert!(guard.check().is_err() && guard.flag().load(Ordering::SeqCst));
    }

    #[test]
    fn a_measure_counts_what_the_directory_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = Guard::new(dir.path(), Some(Allowance::alone(10_000)), 0, None);
        std::fs::write(dir.path().join("a"), vec![0_u8; 5000]).expect("write");
        guard.measure().expect("5000 of 10000");
        std::fs::create_dir(dir.path().join("sub")).expect("dir");
        std::fs::write(dir.path().join("sub/b"), vec![0_u8; 6000]).expect("write");
        assert!(guard.measure().is_err(), "11000 of 10000");
    }

    #[test]
    fn a_reserve_larger_than_what_is_free_stops_at_the_first_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = Guard::new(dir.path(), None, u64::MAX, None);
        let err = guard.wrote(1).expect_err("nothing fits");
        assert!(err.to_string().contains("the disk is nearly full"), "{err}");
    }

    #[test]
    fn a_restore_of_many_small_files_stops_while_the_file_system_has_inodes_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(_disk) = devdb_testkit::SmallDisk::mount_with(dir.path(), "size=64m,nr_inodes=1000") else {
            return;
        };
        let guard = Guard::new(dir.path(), None, 1, None);
        let touch = |range: std::ops::Range<u32>| {
            for i in range {
                std::fs::write(dir.path().join(i.to_string()), b"").expect("touch");
            }
        };
        touch(0..800);
        guard.measure().expect("a fifth of the inodes are free");
        touch(800..960);
        let err = guard.measure().expect_err("fewer than a twentieth free");
        assert!(err.to_string().contains("nearly out of room for files (inodes)"), "{err}");
    }

    #[test]
    fn a_passed_deadline_ends_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = Guard::new(dir.path(), None, 0, Some(Duration::ZERO));
        std::thread::sleep(Duration::from_millis(2));
        let err = guard.check().expect_err("past it");
        assert!(err.to_string().contains("took longer than"), "{err}");
    }
}
