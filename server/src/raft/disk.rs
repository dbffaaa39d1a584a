//! The free-space guard of the data directory: a leader refuses new writes while the
//! filesystem holding the Raft store has less than `min_free_disk` bytes available, and
//! takes them again as soon as space returns.
//!
//! Why above Raft and not in the store: an I/O error inside the store (ENOSPC in the
//! middle of a commit, a failed fsync) is fatal to openraft, which cannot know what reached
//! the disk; the process then exits and must be restarted. Refusing writes before they are
//! proposed keeps the common case, a slowly filling disk, away from that path: the server
//! stays up, keeps serving reads and its followers, says why in one log line, and recovers
//! by itself. Nothing refused here was proposed, so nothing is half-applied.
//!
//! Invariant: one log line per transition (low → ok, ok → low), never one per write.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::ServerError;

/// Checks the free space of one directory's filesystem.
#[derive(Debug)]
pub(crate) struct DiskGuard {
    path: PathBuf,
    reserve: u64,
    low: AtomicBool,
}

impl DiskGuard {
    /// A guard for `path` that wants `reserve` bytes free (0 disables it).
    pub(crate) fn new(path: &Path, reserve: u64) -> Self {
        DiskGuard {
            path: path.to_path_buf(),
            reserve,
            low: AtomicBool::new(false),
        }
    }

    /// `Ok` when a write may be proposed; [`ServerError::DiskFull`] while space is short.
    pub(crate) fn check(&self) -> Result<(), ServerError> {
        if self.reserve == 0 {
            return Ok(());
        }
        let free = match free_bytes(&self.path) {
            Ok(free) => free,
            Err(e) => {
                // Cannot tell: let the write go; a real I/O failure stays fatal in the store.
                tracing::debug!(path = %self.path.display(), error = %e, "statvfs failed");
                return Ok(());
            }
        };
        self.judge(free)
    }

    /// The decision for `free` bytes available, with its transition log line.
    fn judge(&self, free: u64) -> Result<(), ServerError> {
        if free < self.reserve {
            if !self.low.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    path = %self.path.display(),
                    free_bytes = free,
                    min_free_bytes = self.reserve,
                    "data_dir is almost full: refusing catalog writes until space is freed"
                );
            }
            return Err(ServerError::DiskFull {
                path: self.path.display().to_string(),
                free,
                reserve: self.reserve,
            });
        }
        if self.low.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                path = %self.path.display(),
                free_bytes = free,
                "data_dir has free space again: accepting catalog writes"
            );
        }
        Ok(())
    }
}

/// Bytes available to an unprivileged writer on the filesystem of `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_below_the_reserve_and_recovers() {
        let g = DiskGuard::new(Path::new("/data"), 1000);
        assert!(g.judge(5000).is_ok());
        let e = g.judge(999).unwrap_err();
        assert!(e.is_disk_full());
        assert_eq!(
            e.to_string(),
            "Disk full: 999 bytes free in /data, catalog writes need 1000"
        );
        assert!(g.low.load(Ordering::Relaxed));
        assert!(g.judge(1000).is_ok());
        assert!(!g.low.load(Ordering::Relaxed));
    }

    #[test]
    fn reads_the_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(DiskGuard::new(dir.path(), 1).check().is_ok());
        assert!(DiskGuard::new(dir.path(), u64::MAX).check().is_err());
        assert!(DiskGuard::new(dir.path(), 0).check().is_ok());
    }
}
