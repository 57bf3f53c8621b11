//! Errors of the tier catalog.
//!
//! Policy: every error names the local file it concerns and says what to do next. The S3
//! tier turns each variant into the `TierError` variant of the same name, so a message reads
//! the same whichever crate raised it.

use std::path::{Path, PathBuf};

use bulwark_format::FileIoError;
use bulwark_repository::RepoError;

/// What went wrong reading or writing the tier catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Io(#[from] FileIoError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("{0}")]
    Config(String),
    #[error("credentials file {path}: {why}")]
    Credentials { path: PathBuf, why: String },
}

impl CatalogError {
    /// Maps an I/O error on `path` while doing `action` ("reading", "listing", …).
    pub fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        let on = FileIoError::on(path, action);
        move |source| CatalogError::Io(on(source))
    }
}

/// Result type of this crate.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;
