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
    #[error("TLS with the repository: {}", tls_text(.0))]
    Tls(#[from] rustls::Error),
    #[error("the repository service closed the connection before the end (it stopped, restarted or failed; its log says why); nothing of this operation was kept: run it again")]
    Closed,
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

/// A TLS failure as the user reads it: rustls's words, and what they mean here where the
/// usual cause is known.
fn tls_text(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let why = match e {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature | C::NotValidForName) => {
            "the service does not present a certificate of the repository this client enrolled with \
             (another repository answers at this address, or something is in between): check the address; \
             if the repository was set up anew, enroll again (bulwark enroll ADDR TOKEN --fingerprint FP)"
        }
        E::AlertReceived(A::BadCertificate | A::CertificateRevoked | A::UnknownCA | A::CertificateUnknown) => {
            "the repository refused this client's certificate (revoked, or issued by another repository): \
             ask its administrator for a new enrollment token"
        }
        _ => return e.to_string(),
    };
    format!("{e}: {why}")
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
                // The stream ended mid-frame or without TLS's closing message.
                None if io.kind() == std::io::ErrorKind::UnexpectedEof => RemoteError::Closed,
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

    #[test]
    fn certificate_failures_and_a_dropped_connection_say_what_they_mean() {
        let other_repo = RemoteError::Tls(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        let t = other_repo.to_string();
        assert!(
            t.contains("UnknownIssuer") && t.contains("enroll again"),
            "{t}"
        );
        let revoked = RemoteError::Tls(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRevoked,
        ));
        assert!(
            revoked.to_string().contains("new enrollment token"),
            "{revoked}"
        );
        let other = RemoteError::Tls(rustls::Error::HandshakeNotComplete);
        assert_eq!(
            other.to_string(),
            format!(
                "TLS with the repository: {}",
                rustls::Error::HandshakeNotComplete
            )
        );
        let eof = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "peer closed connection without sending TLS close_notify",
        );
        let closed = RemoteError::from(ProtocolError::Io(eof));
        assert!(matches!(closed, RemoteError::Closed), "{closed}");
        assert!(closed.to_string().contains("run it again"));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(matches!(
            RemoteError::from(ProtocolError::Io(reset)),
            RemoteError::Protocol(_)
        ));
    }
}
