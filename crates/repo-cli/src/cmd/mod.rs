//! One module per subcommand.

pub mod init;
pub mod policy;
pub mod retention;
pub mod space;
pub mod status;
pub mod synthesize;
pub mod tier;
pub mod verify;
