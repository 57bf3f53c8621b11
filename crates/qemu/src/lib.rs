//! QEMU's block layer as a Bulwark source.
//!
//! - [`img`]: the format of an image, probed from its content as `qemu-img info` does (never
//!   from its name), and what `qemu-img info` says of it (virtual size, persistent bitmaps).
//! - [`process`]: `qemu-nbd` and `qemu-storage-daemon` started on a private Unix socket and
//!   stopped when their guard is dropped, also on failure, Ctrl-C or Bulwark's death.
//! - [`qmp`]: a small QMP client (JSON lines over a Unix socket).
//! - [`qga`]: the QEMU guest agent's filesystem freeze and thaw.

pub mod img;
pub mod process;
pub mod qga;
pub mod qmp;

use std::path::PathBuf;

pub use img::{probe_format, ImageBitmap, ImageInfo};
pub use process::Daemon;
pub use qga::GuestAgent;
pub use qmp::Qmp;

/// What went wrong with a QEMU tool.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("{tool} is not installed (looked in PATH): install QEMU's tools (`apt-get install qemu-utils`)")]
    Missing { tool: &'static str },
    #[error("running {tool}: {source}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed: {message}")]
    Failed { tool: &'static str, message: String },
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP at {socket}: {why}")]
    Qmp { socket: PathBuf, why: String },
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("guest agent at {socket}: {why}")]
    Agent { socket: PathBuf, why: String },
    #[error("{0}")]
    Usage(String),
}

/// Result type of this crate.
pub type Result<T, E = QemuError> = std::result::Result<T, E>;

/// The path of QEMU tool `name` in PATH.
pub fn tool(name: &'static str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(QemuError::Missing { tool: name })
}

/// True when QEMU tool `name` is installed.
pub fn has_tool(name: &'static str) -> bool {
    tool(name).is_ok()
}
