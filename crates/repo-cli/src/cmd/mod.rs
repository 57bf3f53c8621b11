//! One module per subcommand.

pub mod init;
pub mod status;
pub mod verify;
