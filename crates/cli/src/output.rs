//! Output helpers: text or JSON, progress bars, exit codes — shared with the other command-line
//! programs in `bulwark-cli-common`.

pub use bulwark_cli_common::{human, utc, Output, EXIT_DAMAGE, EXIT_OK};
