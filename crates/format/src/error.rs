use std::path::{Path, PathBuf};

use crate::{BlockNo, Digest};

/// An I/O error on a named file: what was being done ("reading", "listing", …), the file,
/// and the system's error. The error enums of the repository, the transport service, the tier
/// catalog and the client carry it as their `Io` variant, so it reads the same in all.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}")]
pub struct FileIoError {
    pub path: PathBuf,
    pub action: &'static str,
    #[source]
    pub source: std::io::Error,
}

impl FileIoError {
    /// Maps an I/O error on `path` while doing `action`.
    pub fn on(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> FileIoError {
        let path = path.to_path_buf();
        move |source| FileIoError {
            path,
            action,
            source,
        }
    }
}

/// What can be wrong with a restore-point file. Every variant says where.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("I/O error {context}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("not a Bulwark restore point (bad magic in the {0})")]
    BadMagic(&'static str),
    #[error("restore-point format version {found} is not supported by this build (it reads version 1 only); upgrade Bulwark")]
    UnsupportedVersion { found: u32 },
    #[error("file is truncated: {len} bytes, at least {min} expected")]
    Truncated { len: u64, min: u64 },
    #[error("{0} checksum mismatch: the file is damaged")]
    Checksum(&'static str),
    #[error("root digest mismatch: metadata or block map damaged (trailer says {expected}, content gives {actual})")]
    RootDigest { expected: Digest, actual: Digest },
    #[error("inconsistent layout: {0}")]
    Layout(String),
    #[error("invalid metadata: {0}")]
    Meta(String),
    #[error("block {block}: stored bytes at offset {offset} do not match their hash")]
    StoredHash { block: BlockNo, offset: u64 },
    #[error("block {block}: plain data does not match its hash after decoding")]
    PlainHash { block: BlockNo },
    #[error("block {block}: cannot decompress: {reason}")]
    Decompress { block: BlockNo, reason: String },
    #[error("byte {offset} of the file is {value:#04x}, but it lies in {region}, which must be zero: the file is damaged or was altered")]
    Padding {
        offset: u64,
        value: u8,
        region: String,
    },
    #[error("block {block} is encrypted: give the key it was written with (--key KEYFILE, or --restore-key PRIVATE for a write-only client's backups)")]
    Encrypted { block: BlockNo },
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl FormatError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| FormatError::Io { context, source }
    }
}
