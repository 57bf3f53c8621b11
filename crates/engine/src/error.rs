//! Errors of the pipelines.

use std::path::PathBuf;

use bulwark_repository::RepoError;

/// What went wrong during a backup or restore.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("source {path}: {action}")]
    SourceIo {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("source {path} is not a regular file or block device; give a raw disk image or a device such as /dev/sdb")]
    SourceKind { path: PathBuf },
    #[error("source {path} changed size during the backup ({before} bytes at the start, {after} at the end); nothing was saved. Back up a snapshot, or retry when the disk is quiet")]
    SourceChanged {
        path: PathBuf,
        before: u64,
        after: u64,
    },
    #[error("target {path}: {action}")]
    TargetIo {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

impl EngineError {
    /// True when the error reports damaged repository data (exit code 1).
    pub fn is_damage(&self) -> bool {
        matches!(self, EngineError::Repo(e) if e.is_damage())
    }
}
