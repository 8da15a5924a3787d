//! Notices when files change, by polling their contents. Polling (rather than inotify) also sees
//! the symlink swaps Kubernetes uses to update mounted Secrets and ConfigMaps.

use std::path::PathBuf;
use std::time::Duration;

/// Watches a set of files; [`FileWatch::changed`] resolves when any of them differs from what
/// was last seen.
pub struct FileWatch {
    paths: Vec<PathBuf>,
    every: Duration,
    /// Contents at the last look; `None` for a file that could not be read.
    seen: Vec<Option<Vec<u8>>>,
}

impl FileWatch {
    /// Starts watching, taking the files' current contents as the baseline. Create the watch
    /// *before* the initial load, so a change in between is not missed.
    pub fn new(paths: Vec<PathBuf>, every: Duration) -> Self {
        let seen = read_all(&paths);
        Self { paths, every, seen }
    }

    /// Waits until the files' contents change.
    ///
    /// # Cancel safety
    /// Cancel safe: a change seen is only recorded when this returns.
    pub async fn changed(&mut self) {
        loop {
            tokio::time::sleep(self.every).await;
            let paths = self.paths.clone();
            let now = tokio::task::spawn_blocking(move || read_all(&paths)).await.unwrap_or_default();
            if now != self.seen {
                self.seen = now;
                return;
            }
        }
    }
}

fn read_all(paths: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    paths.iter().map(|p| std::fs::read(p).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rewritten_file_is_noticed_and_an_untouched_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, "one").expect("write");
        let mut watch = FileWatch::new(vec![path.clone()], Duration::from_millis(10));
        let quiet = tokio::time::timeout(Duration::from_millis(100), watch.changed()).await;
        assert!(quiet.is_err(), "no change yet");
        std::fs::write(&path, "two").expect("write");
        tokio::time::timeout(Duration::from_secs(5), watch.changed()).await.expect("change seen");
    }
}
