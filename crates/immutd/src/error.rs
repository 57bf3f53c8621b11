//! Errors of the service. Startup and state errors carry the path involved and say what to
//! do; request errors carry the protocol error code the client receives.

use std::io;
use std::path::PathBuf;

use bulwark_immut_msg::ErrorCode;

/// What can stop the service or one of its commands.
#[derive(Debug, thiserror::Error)]
pub enum ImmutdError {
    #[error("configuration {path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("{context} ({path}): {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path} is damaged: {msg}; it is root's to inspect (keep a copy), the service will not guess")]
    State { path: PathBuf, msg: String },
    #[error("repository {path}: {msg}")]
    Repository { path: PathBuf, msg: String },
    #[error("{0}")]
    Other(String),
}

impl ImmutdError {
    /// Wraps an I/O error with what was being done and where.
    pub fn io(context: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| ImmutdError::Io {
            context,
            path,
            source,
        }
    }
}

/// A refused or failed request: the code and message the client receives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReqError {
    pub code: ErrorCode,
    pub message: String,
}

impl ReqError {
    /// A request error with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ReqError {
            code,
            message: message.into(),
        }
    }
    /// A refusal ([`ErrorCode::Refused`]).
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Refused, message)
    }
    /// An internal failure ([`ErrorCode::Internal`]).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

/// Result of this crate.
pub type Result<T, E = ImmutdError> = std::result::Result<T, E>;
