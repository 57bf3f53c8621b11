//! Errors of the transport service. Each names the file or peer it concerns and says what to
//! do next.

use std::path::Path;

use bulwark_format::FileIoError;

/// What went wrong in the transport service.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Io(#[from] FileIoError),
    #[error("network: {0}")]
    Net(#[source] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error(transparent)]
    Repo(#[from] bulwark_repository::RepoError),
    #[error(transparent)]
    Protocol(#[from] bulwark_protocol::ProtocolError),
    #[error("{0}")]
    Config(String),
    #[error("refusing to run as root: run `bulwark-repo serve` as the unprivileged service user that owns the repository (e.g. `sudo -u bulwark bulwark-repo serve DIR`)")]
    RunningAsRoot,
}

impl ServerError {
    pub(crate) fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        let on = FileIoError::on(path, action);
        move |source| ServerError::Io(on(source))
    }
}
