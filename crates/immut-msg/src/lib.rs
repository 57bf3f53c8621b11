//! The contract between the repository (unprivileged) and the immutability service (root):
//! where files live in a repository, and the messages they exchange on the Unix socket.
//! `docs/immutd-protocol.md` is the normative text of the messages.

pub mod client;
pub mod frame;
pub mod layout;
pub mod msg;

pub use client::{ClientError, ImmutClient};
pub use frame::{read_frame, write_frame, FrameError, MAX_FRAME};
pub use msg::{
    DecodeError, ErrorCode, FileInfo, FileState, Request, Response, StatusInfo, Target,
    TimePreview, PROTOCOL_VERSION,
};
