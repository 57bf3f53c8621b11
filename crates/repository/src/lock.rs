//! One writer per job: an exclusive `flock` on `locks/<job>.lock`.

use std::fs::File;
use std::path::Path;

use crate::{RepoError, Result};

/// Held while a job is being written; released on drop (or when the process dies).
pub struct JobLock {
    _file: File,
}

impl JobLock {
    /// Takes the lock of `job`, failing at once if another process holds it.
    pub fn acquire(repo: &Path, job: &str) -> Result<JobLock> {
        let dir = repo.join("locks");
        let path = dir.join(format!("{job}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(RepoError::io(&path, "opening lock file"))?;
        match bulwark_sys::try_lock_exclusive(&file) {
            Ok(true) => Ok(JobLock { _file: file }),
            Ok(false) => Err(RepoError::Busy(job.to_string())),
            Err(e) => Err(RepoError::io(&path, "locking")(e)),
        }
    }
}
