//! One module per subcommand.

pub mod init;
pub mod policy;
pub mod retention;
pub mod status;
pub mod verify;
