//! Errors of the S3 tier.
//!
//! Policy: every error names the object (key and version) or local file it concerns and says
//! what to do next. Errors the store may recover from (timeouts, 5xx, refused connections) are
//! retried by the SDK with backoff before they surface here; a failed sync is resumed by
//! running it again, because a restore point counts as copied only once its record exists.

use std::path::Path;

use bulwark_repository::RepoError;
use bulwark_tier_catalog::CatalogError;

/// What went wrong in the S3 tier.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// Local files, configuration, credentials and the repository: the tier catalog's own
    /// errors, so a message reads the same whichever crate raised it.
    #[error(transparent)]
    Local(#[from] CatalogError),
    #[error("the store at {endpoint} refused the credentials ({code}); check access_key_id and secret_access_key in the credentials file")]
    BadCredentials { endpoint: String, code: String },
    #[error("bucket {bucket} has no Object Lock ({why}); Object Lock can only be turned on when a bucket is created, e.g. `aws s3api create-bucket --bucket {bucket} --object-lock-enabled-for-bucket` (plus --endpoint-url for a non-AWS store), then run `bulwark-tier add` again with that bucket")]
    NoObjectLock { bucket: String, why: String },
    #[error("the store does not enforce Object Lock: {0}; refusing it, because a copy there could be deleted or unlocked by anyone holding the bucket's keys. Use a store whose COMPLIANCE mode is enforced (AWS S3, Ceph RGW, MinIO)")]
    LockNotEnforced(String),
    #[error("S3 {op} {key}: {why}")]
    S3 {
        op: &'static str,
        key: String,
        /// The store's error code, when it sent one.
        code: Option<String>,
        why: String,
    },
    #[error("object {key} version {version}: {why}")]
    Object {
        key: String,
        version: String,
        why: String,
    },
    #[error("immutability service: {0}")]
    Immut(String),
}

impl TierError {
    pub(crate) fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        let local = CatalogError::io(path, action);
        move |source| TierError::Local(local(source))
    }

    /// A configuration error: what is wrong and what to change.
    pub(crate) fn config(msg: String) -> Self {
        TierError::Local(CatalogError::Config(msg))
    }

    /// The store's error code, if this is an S3 error that carried one.
    pub fn code(&self) -> Option<&str> {
        match self {
            TierError::S3 { code, .. } => code.as_deref(),
            TierError::BadCredentials { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<RepoError> for TierError {
    fn from(e: RepoError) -> Self {
        TierError::Local(CatalogError::Repo(e))
    }
}

/// Result type of this crate.
pub type Result<T, E = TierError> = std::result::Result<T, E>;
