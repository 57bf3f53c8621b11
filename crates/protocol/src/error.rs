//! Errors of the protocol layer and the error codes carried by `Error` messages.

/// Why a frame or message was refused, or what failed while moving it.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the peer")]
    Closed,
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    #[error("{ty:?} frame of {len} bytes exceeds its {max}-byte limit")]
    TooLarge {
        ty: crate::MsgType,
        len: u32,
        max: u32,
    },
    #[error("malformed {ty:?} message: {why}")]
    Malformed { ty: crate::MsgType, why: String },
    #[error("peer reported {code}: {message}")]
    Remote { code: ErrorCode, message: String },
    #[error("unexpected {got:?} message; expected {expected}")]
    Unexpected {
        got: crate::MsgType,
        expected: &'static str,
    },
}

impl ProtocolError {
    /// The code to send the peer when this error closes a connection.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::TooLarge { .. } => ErrorCode::TooLarge,
            ProtocolError::Unexpected { .. } => ErrorCode::OutOfOrder,
            ProtocolError::Remote { code, .. } => *code,
            _ => ErrorCode::Malformed,
        }
    }
}

/// Error codes of the `Error` message (`docs/protocol.md`, "Error codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A frame or message could not be decoded.
    Malformed,
    /// The peer speaks no protocol version we do.
    Version,
    /// A message arrived in a state that does not allow it.
    OutOfOrder,
    /// A frame exceeded its type's length limit.
    TooLarge,
    /// A frame or request did not arrive in time.
    Timeout,
    /// The client may not do this (not its job, not enrolled).
    Unauthorized,
    /// The job has no restore points the client may see.
    NoSuchJob,
    /// The restore point does not exist.
    NoSuchPoint,
    /// A job or client name is not allowed.
    InvalidName,
    /// Another backup of the job is running.
    Busy,
    /// The enrollment token is wrong, used or expired.
    TokenRejected,
    /// Too many attempts; wait.
    RateLimited,
    /// A repository limit (flood defence, size) refuses the request.
    Limit,
    /// Stored data is damaged.
    Damaged,
    /// The server failed; its log says why.
    Internal,
    /// An argument is out of range.
    Usage,
    /// The repository's filesystem is full (ENOSPC on the server); nothing was kept.
    RepositoryFull,
    /// The restore point is complete but the immutability service did not confirm its seal in
    /// time; the message says whether it is sealed.
    SealDelayed,
    /// A code this build does not know.
    Unknown(u16),
}

impl ErrorCode {
    /// Wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::Version => 2,
            ErrorCode::OutOfOrder => 3,
            ErrorCode::TooLarge => 4,
            ErrorCode::Timeout => 5,
            ErrorCode::Unauthorized => 6,
            ErrorCode::NoSuchJob => 7,
            ErrorCode::NoSuchPoint => 8,
            ErrorCode::InvalidName => 9,
            ErrorCode::Busy => 10,
            ErrorCode::TokenRejected => 11,
            ErrorCode::RateLimited => 12,
            ErrorCode::Limit => 13,
            ErrorCode::Damaged => 14,
            ErrorCode::Internal => 15,
            ErrorCode::Usage => 16,
            ErrorCode::RepositoryFull => 17,
            ErrorCode::SealDelayed => 18,
            ErrorCode::Unknown(c) => c,
        }
    }
    /// From the wire value; unknown values are kept.
    pub fn from_u16(c: u16) -> Self {
        match c {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::Version,
            3 => ErrorCode::OutOfOrder,
            4 => ErrorCode::TooLarge,
            5 => ErrorCode::Timeout,
            6 => ErrorCode::Unauthorized,
            7 => ErrorCode::NoSuchJob,
            8 => ErrorCode::NoSuchPoint,
            9 => ErrorCode::InvalidName,
            10 => ErrorCode::Busy,
            11 => ErrorCode::TokenRejected,
            12 => ErrorCode::RateLimited,
            13 => ErrorCode::Limit,
            14 => ErrorCode::Damaged,
            15 => ErrorCode::Internal,
            16 => ErrorCode::Usage,
            17 => ErrorCode::RepositoryFull,
            18 => ErrorCode::SealDelayed,
            c => ErrorCode::Unknown(c),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ErrorCode::Malformed => "malformed message",
            ErrorCode::Version => "unsupported protocol version",
            ErrorCode::OutOfOrder => "message out of order",
            ErrorCode::TooLarge => "frame too large",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unauthorized => "not authorized",
            ErrorCode::NoSuchJob => "no such job",
            ErrorCode::NoSuchPoint => "no such restore point",
            ErrorCode::InvalidName => "invalid name",
            ErrorCode::Busy => "job busy",
            ErrorCode::TokenRejected => "enrollment token rejected",
            ErrorCode::RateLimited => "rate limited",
            ErrorCode::Limit => "repository limit",
            ErrorCode::Damaged => "damaged data",
            ErrorCode::Internal => "server error",
            ErrorCode::Usage => "invalid argument",
            ErrorCode::RepositoryFull => "repository full",
            ErrorCode::SealDelayed => "sealing delayed",
            ErrorCode::Unknown(c) => return write!(f, "error code {c}"),
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn error_codes_keep_their_wire_values_and_new_ones_are_added_after() {
        // Codes 1..=16 are version 1 as first published; they never change meaning.
        let v1 = [
            (1, ErrorCode::Malformed),
            (2, ErrorCode::Version),
            (3, ErrorCode::OutOfOrder),
            (4, ErrorCode::TooLarge),
            (5, ErrorCode::Timeout),
            (6, ErrorCode::Unauthorized),
            (7, ErrorCode::NoSuchJob),
            (8, ErrorCode::NoSuchPoint),
            (9, ErrorCode::InvalidName),
            (10, ErrorCode::Busy),
            (11, ErrorCode::TokenRejected),
            (12, ErrorCode::RateLimited),
            (13, ErrorCode::Limit),
            (14, ErrorCode::Damaged),
            (15, ErrorCode::Internal),
            (16, ErrorCode::Usage),
            (17, ErrorCode::RepositoryFull),
            (18, ErrorCode::SealDelayed),
        ];
        for (n, c) in v1 {
            assert_eq!(c.to_u16(), n);
            assert_eq!(ErrorCode::from_u16(n), c);
        }
        assert_eq!(ErrorCode::from_u16(19), ErrorCode::Unknown(19));
        assert_eq!(ErrorCode::Unknown(19).to_u16(), 19);
    }
}
