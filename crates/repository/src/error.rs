//! Errors of the repository layer.
//!
//! Policy: every error names the file (and block, where there is one) it concerns, and its
//! message says what the operator can do next. Format errors keep their own variant so that
//! callers can tell damage (exit 1) from operational failures (exit 2).

use std::path::{Path, PathBuf};

use bulwark_format::{FileIoError, FormatError};

/// What went wrong in the repository layer.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Io(#[from] FileIoError),
    #[error("{path}")]
    Format {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error("no Bulwark repository at {0} (repository.toml missing); create one with `bulwark-repo init {0}`")]
    NotARepository(PathBuf),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Usage(String),
    #[error("job {0:?} has no restore points in this repository; run a backup first (see `bulwark list`)")]
    NoSuchJob(String),
    #[error("no restore point {point} in job {job:?}; `bulwark list --job {job}` shows the existing ones")]
    NoSuchPoint { job: String, point: String },
    #[error("another backup of job {0:?} is running (its lock is held); wait for it to finish")]
    Busy(String),
    #[error("restore point {point} references {missing}, which is missing or damaged: {why}")]
    BrokenChain {
        point: String,
        missing: String,
        why: String,
    },
    #[error("reading from the remote tier ({what})")]
    Remote {
        what: String,
        #[source]
        source: crate::RemoteError,
    },
    #[error("sealing failed for {path}: {why}")]
    Seal { path: PathBuf, why: String },
    /// The file is complete but the immutability service did not confirm its seal in time.
    #[error("{}", seal_delayed_text(*point, *sealed, why))]
    SealDelayed {
        point: bulwark_format::PointId,
        /// What the service's ledger said afterwards: `Some(false)` not sealed (yet), `None`
        /// unknown (the service did not answer the query either).
        sealed: Option<bool>,
        why: String,
    },
}

fn seal_delayed_text(point: bulwark_format::PointId, sealed: Option<bool>, why: &str) -> String {
    let state = match sealed {
        Some(true) => "it IS sealed",
        Some(false) => {
            "it is NOT sealed yet: the complete file waits in incoming/ and is sealed when the \
             service catches up or by the next backup of this job"
        }
        None => {
            "whether it is sealed is unknown (the service did not answer a query either); \
             it is sealed by the next backup of this job if it is not"
        }
    };
    format!(
        "sealing delayed for restore point {point}: the immutability service did not confirm the \
         seal in time ({why}); {state}. Check the service (`bulwark-repo status`, \
         `bulwark-immutd status`) and run `bulwark list` later: a sealed point shows as immutable"
    )
}

impl RepoError {
    pub(crate) fn io(
        path: &Path,
        action: &'static str,
    ) -> impl FnOnce(std::io::Error) -> RepoError {
        let on = FileIoError::on(path, action);
        move |source| RepoError::Io(on(source))
    }
    pub(crate) fn format(path: &Path) -> impl FnOnce(FormatError) -> RepoError {
        let path = path.to_path_buf();
        move |source| RepoError::Format { path, source }
    }
    /// True when the error says stored data is damaged (rather than an operational failure
    /// such as an I/O error or a full disk).
    pub fn is_damage(&self) -> bool {
        match self {
            RepoError::Format { source, .. } => {
                !matches!(source, FormatError::Io { .. } | FormatError::Invalid(_))
            }
            RepoError::BrokenChain { .. } => true,
            _ => false,
        }
    }
    /// True when the underlying cause is a full filesystem (or the service user's quota).
    pub fn is_no_space(&self) -> bool {
        let io = match self {
            RepoError::Io(e) => Some(&e.source),
            RepoError::Format {
                source: FormatError::Io { source, .. },
                ..
            } => Some(source),
            _ => None,
        };
        bulwark_sys::errno::is_no_space(io.and_then(|e| e.raw_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full filesystem and an exceeded quota are both "no space" (the copy and the service
    /// then report a full target and remove the partial file); other errors are not.
    #[test]
    fn a_full_filesystem_and_an_exceeded_quota_are_no_space() {
        let io = |code: i32| {
            RepoError::Io(bulwark_format::FileIoError {
                path: "/r/incoming/x".into(),
                action: "writing",
                source: std::io::Error::from_raw_os_error(code),
            })
        };
        assert!(io(bulwark_sys::errno::ENOSPC).is_no_space());
        assert!(io(bulwark_sys::errno::EDQUOT).is_no_space());
        assert!(!io(bulwark_sys::errno::EBUSY).is_no_space());
        assert!(!RepoError::Usage("no space".into()).is_no_space());
    }
}
