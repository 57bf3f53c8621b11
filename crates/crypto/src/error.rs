/// What can go wrong with keys and encrypted blocks. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the operating system gave no randomness: {0}")]
    Random(String),
    #[error("wrong passphrase for key file {path}: the passphrase does not open it (nothing was read or written); try again, or use another copy of the key")]
    WrongPassphrase { path: String },
    #[error("key file {path} is damaged or not a Bulwark key file: {why}; use another copy of the key (for example the paper copy from `bulwark key paper`)")]
    BadKeyFile { path: String, why: String },
    #[error("{0}")]
    WrongKey(String),
    #[error("block {block}: the encrypted block does not authenticate{why}: it was altered, moved from another position or restore point, or the key is wrong")]
    Authentication { block: u64, why: String },
    #[error("invalid encryption record: {0}")]
    Record(String),
    #[error("invalid wrapped key: {0}")]
    Wrapped(String),
    #[error("{0}")]
    Usage(String),
}
