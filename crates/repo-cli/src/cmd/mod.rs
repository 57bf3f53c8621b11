//! One module per subcommand.

pub mod audit;
pub mod init;
pub mod policy;
pub mod retention;
pub mod space;
pub mod status;
pub mod synthesize;
pub mod verify;
