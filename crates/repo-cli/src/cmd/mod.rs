//! One module per subcommand.

pub mod clients;
pub mod enroll;
pub mod init;
pub mod serve;
pub mod status;
pub mod verify;
