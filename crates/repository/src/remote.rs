//! A second tier holding copies of sealed restore points (S3 Object Lock storage), read when
//! the local file is missing. The tier's code lives in its own crate; the repository only
//! knows this trait, so it never links an S3 client.

use std::fs::File;

use bulwark_format::PointId;

/// Why a remote tier could not answer.
pub type RemoteError = Box<dyn std::error::Error + Send + Sync>;

/// A store holding checked copies of sealed restore-point files.
pub trait RemoteStore: Send + Sync {
    /// A short description for messages (`s3 bucket NAME at URL`).
    fn describe(&self) -> String;
    /// Jobs with restore points in the store.
    fn jobs(&self) -> Result<Vec<String>, RemoteError>;
    /// (chain, point) of every restore point of `job` the store holds.
    fn points(&self, job: &str) -> Result<Vec<(PointId, PointId)>, RemoteError>;
    /// A local copy of one restore point's file, checked against the recorded hash; the copy
    /// disappears when the file is closed.
    fn fetch(&self, job: &str, chain: PointId, point: PointId) -> Result<File, RemoteError>;
}
