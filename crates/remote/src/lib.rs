//! The client side of Bulwark's network protocol: enrollment, a remote [`BlockSink`] for the
//! backup pipeline, remote restore with parallel verification and decompression, list and
//! verify of the client's own jobs.
//!
//! [`BlockSink`]: bulwark_engine::BlockSink

mod backup;
mod config;
mod conn;
mod enroll;
mod error;
mod export;
mod live;
mod ops;
mod restore;
mod tls;

pub use backup::{backup_remote_with, RemoteBackupSummary};
pub use config::{config_dir, enrolled_as, parse_repo_arg, Credentials, RemoteAddr, RepoTarget};
pub use conn::Conn;
pub use enroll::{enroll, Enrolled};
pub use error::RemoteError;
pub use export::RemotePoint;
pub use live::backup_remote_live;
pub use ops::{list_jobs, list_points, points_on, verify_remote};
pub use restore::restore_remote_with;

/// Result type of this crate.
pub type Result<T, E = RemoteError> = std::result::Result<T, E>;
