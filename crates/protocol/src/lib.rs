//! Bulwark's wire protocol, version 1. `docs/protocol.md` is the normative spec; this crate is
//! its only implementation. It encodes and decodes; it owns no sockets and no policy.
//!
//! A connection carries frames: a 5-byte header (`u32` little-endian payload length, `u8`
//! message type) and the payload. Every length is checked against the type's limit before
//! anything is allocated.

mod codec;
mod copy;
mod error;
mod fingerprint;
mod frame;
mod locks;
mod msg;

pub use copy::{
    CopyBegin, CopyMsg, CopyPlanMsg, HeldEntry, COPY_HEADER_LEN, COPY_TRAILER_LEN, MAX_COPY_META,
    MAX_HELD_PER_FRAME, MAX_MAP_ENTRIES_PER_FRAME, MAX_NEED_PER_FRAME,
};
pub use error::{ErrorCode, ProtocolError};
pub use fingerprint::Fingerprint;
pub use frame::{check_header, read_frame, write_msg, FrameBuf, Payload, FRAME_HEADER_LEN};
pub use locks::{LockClock, LockEntry, LockMsg, LockPage, MAX_LOCKS_PER_FRAME, MAX_LOCK_ALERT};
pub use msg::{
    BackupReady, BackupRequest, DamagedPoint, Msg, MsgType, PointSummary, SealedInfo, VerifyReport,
    BLOCK_HEADER_LEN, MAX_CONTROL_PAYLOAD, MAX_DAMAGED_BLOCKS, MAX_DATA_PAYLOAD, MAX_JOBS,
    MAX_KNOWN_PER_FRAME, MAX_MAP_PER_FRAME, MAX_NET_BLOCK_SIZE, MAX_POINTS_PER_FRAME,
    MAX_READ_BLOCKS,
};

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u16 = 1;
/// TLS ALPN of authenticated sessions (backup, restore, list, verify).
pub const ALPN_SESSION: &[u8] = b"bulwark/1";
/// TLS ALPN of enrollment sessions (no client certificate yet).
pub const ALPN_ENROLL: &[u8] = b"bulwark-enroll/1";
/// TCP port the repository service listens on by default.
pub const DEFAULT_PORT: u16 = 6162;
/// DNS name every repository server certificate carries; clients verify it against the
/// pinned repository CA (the CA, not the host name, is the repository's identity).
pub const SERVER_NAME: &str = "bulwark-repository";

/// Result type of this crate.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
