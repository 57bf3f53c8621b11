//! Errors of the client side. A refusal by the server keeps its code and message.

use std::path::{Path, PathBuf};

use bulwark_format::FileIoError;
use bulwark_protocol::{ErrorCode, ProtocolError};

/// What went wrong talking to a repository service.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Io(#[from] FileIoError),
    #[error("cannot reach the repository at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with the repository: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{}", refused_text(*code, message))]
    Refused { code: ErrorCode, message: String },
    #[error("protocol: {0}")]
    Protocol(ProtocolError),
    #[error(transparent)]
    Engine(#[from] bulwark_engine::EngineError),
    #[error("not enrolled with {addr}: no credentials in {dir}; run `bulwark enroll {addr} TOKEN --fingerprint FP` first (or pass --config-dir)")]
    NotEnrolled { addr: String, dir: PathBuf },
    #[error("damaged data from the repository: {0}")]
    Damaged(String),
    #[error("{0}")]
    Usage(String),
}

/// A server's `Error` as the user reads it: what happened, then the server's words (which say
/// what to do).
fn refused_text(code: ErrorCode, message: &str) -> String {
    match code {
        ErrorCode::RepositoryFull => format!("the repository is full: {message}"),
        ErrorCode::SealDelayed => {
            format!("the restore point was written but its seal is not confirmed: {message}")
        }
        ErrorCode::Limit => format!("refused by a repository limit: {message}"),
        _ => format!("the repository refused ({code}): {message}"),
    }
}

impl From<ProtocolError> for RemoteError {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::Remote { code, message } => RemoteError::Refused { code, message },
            ProtocolError::Io(io) => match io
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .cloned()
            {
                Some(t) => RemoteError::Tls(t),
                None => RemoteError::Protocol(ProtocolError::Io(io)),
            },
            e => RemoteError::Protocol(e),
        }
    }
}

impl RemoteError {
    pub(crate) fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        let on = FileIoError::on(path, action);
        move |source| RemoteError::Io(on(source))
    }
    /// True when the error reports damaged repository data (exit code 1).
    pub fn is_damage(&self) -> bool {
        match self {
            RemoteError::Damaged(_) => true,
            RemoteError::Refused { code, .. } => *code == ErrorCode::Damaged,
            RemoteError::Engine(e) => e.is_damage(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_refusals_say_what_happened_first() {
        let t = |code| {
            RemoteError::Refused {
                code,
                message: "m".into(),
            }
            .to_string()
        };
        assert_eq!(t(ErrorCode::RepositoryFull), "the repository is full: m");
        assert!(t(ErrorCode::SealDelayed).contains("seal is not confirmed"));
        assert_eq!(t(ErrorCode::Limit), "refused by a repository limit: m");
        assert_eq!(t(ErrorCode::Busy), "the repository refused (job busy): m");
        assert!(!RemoteError::Refused {
            code: ErrorCode::RepositoryFull,
            message: String::new()
        }
        .is_damage());
    }
}
