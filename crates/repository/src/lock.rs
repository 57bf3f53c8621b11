//! One writer per job: an exclusive `flock` on `locks/<job>.lock`.

use std::fs::File;
use std::path::Path;

use crate::{RepoError, Result};

/// Held while a job is being written; released on drop (or when the process dies).
pub struct JobLock {
    _file: File,
}

impl JobLock {
    /// Takes the lock of `job`, failing (within 50 ms) if another process holds it.
    pub fn acquire(repo: &Path, job: &str) -> Result<JobLock> {
        let dir = repo.join("locks");
        let path = dir.join(format!("{job}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(RepoError::io(&path, "opening lock file"))?;
        // A lock just released can stay held for a moment by a child process forked while
        // it was held (its copy of the descriptor lives until its exec closes it): a few
        // short retries tell that apart from a writer that really holds the job.
        for attempt in 0..5 {
            match bulwark_sys::try_lock_exclusive(&file) {
                Ok(true) => return Ok(JobLock { _file: file }),
                Ok(false) if attempt < 4 => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Ok(false) => break,
                Err(e) => return Err(RepoError::io(&path, "locking")(e)),
            }
        }
        Err(RepoError::Busy(job.to_string()))
    }
}
