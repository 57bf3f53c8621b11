//! One module per subcommand.

pub mod audit;
pub mod clients;
pub mod enroll;
pub mod init;
pub mod install;
pub mod policy;
pub mod report;
pub mod retention;
pub mod serve;
pub mod space;
pub mod status;
pub mod synthesize;
pub mod verify;

pub use bulwark_cli_common::owner::as_repo_owner;
