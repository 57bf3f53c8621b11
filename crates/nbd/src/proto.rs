//! NBD wire constants and the fixed-size headers, big-endian as the protocol says.
//!
//! Only the "fixed newstyle" negotiation is spoken (oldstyle is long deprecated). Every
//! header here has a fixed size; the variable parts that follow (option data, payloads) are
//! read by the caller, which must bound their length first ([`MAX_OPTION_DATA`] and the
//! export's own maximum request size).

/// "NBDMAGIC": the first eight bytes a server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": follows [`NBD_MAGIC`] in newstyle, and opens every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Opens every option reply from the server.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Opens every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Opens a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Opens a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server → client, 16 bits).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags (client → server, 32 bits).
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Options (client → server during negotiation).
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

/// Option reply types; errors have the top bit set.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_FLAG_ERROR: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
pub const REP_ERR_PLATFORM: u32 = REP_FLAG_ERROR | 4;
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_FLAG_ERROR | 8;
pub const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;

/// Information types inside `NBD_REP_INFO` (and requested by `NBD_OPT_INFO`/`NBD_OPT_GO`).
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags (per export, 16 bits).
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
pub const TFLAG_ROTATIONAL: u16 = 1 << 4;
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TFLAG_SEND_DF: u16 = 1 << 7;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const TFLAG_SEND_RESIZE: u16 = 1 << 9;
pub const TFLAG_SEND_CACHE: u16 = 1 << 10;
pub const TFLAG_SEND_FAST_ZERO: u16 = 1 << 11;

/// Commands (the request's `type` field).
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Command flags (the request's `flags` field).
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// Structured reply flags and chunk types.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_FLAG_ERROR: u16 = 1 << 15;
pub const REPLY_TYPE_ERROR: u16 = REPLY_TYPE_FLAG_ERROR | 1;
pub const REPLY_TYPE_ERROR_OFFSET: u16 = REPLY_TYPE_FLAG_ERROR | 2;

/// Error values in replies (the protocol's own numbering, equal to Linux errno).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

/// The `base:allocation` meta context and its status bits.
pub const META_BASE_ALLOCATION: &str = "base:allocation";
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;
/// The prefix of QEMU's dirty-bitmap meta contexts (`qemu:dirty-bitmap:NAME`) and its bit.
pub const META_QEMU_DIRTY_BITMAP_PREFIX: &str = "qemu:dirty-bitmap:";
pub const STATE_DIRTY: u32 = 1 << 0;

/// The most option data either side accepts in one option or option reply. The protocol
/// allows 2^32-1; real options (export names ≤ 4096, a few meta-context queries) are tiny.
pub const MAX_OPTION_DATA: u32 = 64 * 1024;
/// Export names and meta-context names are at most this long (the protocol's own limit).
pub const MAX_NAME: u32 = 4096;

/// Size of a transmission request header.
pub const REQUEST_LEN: usize = 28;
/// Size of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Size of a structured reply chunk header.
pub const STRUCTURED_REPLY_LEN: usize = 20;
/// Size of an option header (IHAVEOPT, option, length).
pub const OPTION_LEN: usize = 16;
/// Size of an option reply header (magic, option, type, length).
pub const OPTION_REPLY_LEN: usize = 20;

/// A header did not start with the magic it must start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad NBD magic in {what}: {found:#x}")]
pub struct BadMagic {
    pub what: &'static str,
    pub found: u64,
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Writes the big-endian `bytes` of a field at offset `at` of a header.
fn put<const N: usize>(b: &mut [u8], at: usize, bytes: [u8; N]) {
    b[at..at + N].copy_from_slice(&bytes);
}

/// `Err(BadMagic)` unless the header `what` starts with the magic `want`.
fn check_magic(what: &'static str, found: u64, want: u64) -> Result<(), BadMagic> {
    if found == want {
        Ok(())
    } else {
        Err(BadMagic { what, found })
    }
}

/// Appends `name` as option data carries a name (an export, a meta context): its length in
/// 32 bits, then its bytes. The caller bounds the length first ([`MAX_NAME`]).
pub fn put_name(data: &mut Vec<u8>, name: &str) {
    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
    data.extend_from_slice(name.as_bytes());
}

/// A transmission request (client → server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

impl Request {
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        put(&mut b, 0, REQUEST_MAGIC.to_be_bytes());
        put(&mut b, 4, self.flags.to_be_bytes());
        put(&mut b, 6, self.kind.to_be_bytes());
        put(&mut b, 8, self.cookie.to_be_bytes());
        put(&mut b, 16, self.offset.to_be_bytes());
        put(&mut b, 24, self.length.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; REQUEST_LEN]) -> Result<Self, BadMagic> {
        check_magic("request", be_u32(b, 0).into(), REQUEST_MAGIC.into())?;
        Ok(Request {
            flags: be_u16(b, 4),
            kind: be_u16(b, 6),
            cookie: be_u64(b, 8),
            offset: be_u64(b, 16),
            length: be_u32(b, 24),
        })
    }
}

/// A simple reply header (server → client); a read's data follows when `error == 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    pub error: u32,
    pub cookie: u64,
}

impl SimpleReply {
    pub fn encode(&self) -> [u8; SIMPLE_REPLY_LEN] {
        let mut b = [0u8; SIMPLE_REPLY_LEN];
        put(&mut b, 0, SIMPLE_REPLY_MAGIC.to_be_bytes());
        put(&mut b, 4, self.error.to_be_bytes());
        put(&mut b, 8, self.cookie.to_be_bytes());
        b
    }

    /// Decodes the 12 bytes after the 4-byte magic (the reader has already looked at the
    /// magic to tell a simple from a structured reply).
    pub fn decode_after_magic(b: &[u8; SIMPLE_REPLY_LEN - 4]) -> Self {
        SimpleReply {
            error: be_u32(b, 0),
            cookie: be_u64(b, 4),
        }
    }
}

/// A structured reply chunk header (server → client); `length` bytes of payload follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StructuredReply {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub length: u32,
}

impl StructuredReply {
    pub fn encode(&self) -> [u8; STRUCTURED_REPLY_LEN] {
        let mut b = [0u8; STRUCTURED_REPLY_LEN];
        put(&mut b, 0, STRUCTURED_REPLY_MAGIC.to_be_bytes());
        put(&mut b, 4, self.flags.to_be_bytes());
        put(&mut b, 6, self.kind.to_be_bytes());
        put(&mut b, 8, self.cookie.to_be_bytes());
        put(&mut b, 16, self.length.to_be_bytes());
        b
    }

    /// Decodes the 16 bytes after the 4-byte magic.
    pub fn decode_after_magic(b: &[u8; STRUCTURED_REPLY_LEN - 4]) -> Self {
        StructuredReply {
            flags: be_u16(b, 0),
            kind: be_u16(b, 2),
            cookie: be_u64(b, 4),
            length: be_u32(b, 12),
        }
    }

    pub fn is_done(&self) -> bool {
        self.flags & REPLY_FLAG_DONE != 0
    }

    pub fn is_error(&self) -> bool {
        self.kind & REPLY_TYPE_FLAG_ERROR != 0
    }
}

/// An option header (client → server); `length` bytes of option data follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub length: u32,
}

impl OptionHeader {
    pub fn encode(&self) -> [u8; OPTION_LEN] {
        let mut b = [0u8; OPTION_LEN];
        put(&mut b, 0, IHAVEOPT.to_be_bytes());
        put(&mut b, 8, self.option.to_be_bytes());
        put(&mut b, 12, self.length.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; OPTION_LEN]) -> Result<Self, BadMagic> {
        check_magic("option", be_u64(b, 0), IHAVEOPT)?;
        Ok(OptionHeader {
            option: be_u32(b, 8),
            length: be_u32(b, 12),
        })
    }
}

/// An option reply header (server → client); `length` bytes of reply data follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReply {
    pub option: u32,
    pub kind: u32,
    pub length: u32,
}

impl OptionReply {
    pub fn encode(&self) -> [u8; OPTION_REPLY_LEN] {
        let mut b = [0u8; OPTION_REPLY_LEN];
        put(&mut b, 0, OPTION_REPLY_MAGIC.to_be_bytes());
        put(&mut b, 8, self.option.to_be_bytes());
        put(&mut b, 12, self.kind.to_be_bytes());
        put(&mut b, 16, self.length.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; OPTION_REPLY_LEN]) -> Result<Self, BadMagic> {
        check_magic("option reply", be_u64(b, 0), OPTION_REPLY_MAGIC)?;
        Ok(OptionReply {
            option: be_u32(b, 8),
            kind: be_u32(b, 12),
            length: be_u32(b, 16),
        })
    }

    pub fn is_error(&self) -> bool {
        self.kind & REP_FLAG_ERROR != 0
    }
}

/// One extent of a `NBD_REPLY_TYPE_BLOCK_STATUS` chunk: `length` bytes with `flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub length: u32,
    pub flags: u32,
}

/// Encodes a block-status chunk payload: the meta-context id, then each extent.
pub fn encode_block_status(context_id: u32, extents: &[Extent]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + 8 * extents.len());
    b.extend_from_slice(&context_id.to_be_bytes());
    for e in extents {
        b.extend_from_slice(&e.length.to_be_bytes());
        b.extend_from_slice(&e.flags.to_be_bytes());
    }
    b
}

/// Decodes a block-status chunk payload; `None` when its length is not 4 + 8·n with n ≥ 1.
pub fn decode_block_status(b: &[u8]) -> Option<(u32, Vec<Extent>)> {
    if b.len() < 12 || !(b.len() - 4).is_multiple_of(8) {
        return None;
    }
    let id = be_u32(b, 0);
    let extents = b[4..]
        .chunks_exact(8)
        .map(|c| Extent {
            length: be_u32(c, 0),
            flags: be_u32(c, 4),
        })
        .collect();
    Some((id, extents))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_checks_its_magic() {
        let r = Request {
            flags: CMD_FLAG_REQ_ONE,
            kind: CMD_BLOCK_STATUS,
            cookie: 0x0102_0304_0506_0708,
            offset: 1 << 40,
            length: 1 << 20,
        };
        let mut b = r.encode();
        assert_eq!(&b[0..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(Request::decode(&b), Ok(r));
        b[0] ^= 1;
        assert!(Request::decode(&b).is_err());
    }

    #[test]
    fn replies_decode_after_their_magic() {
        let s = StructuredReply {
            flags: REPLY_FLAG_DONE,
            kind: REPLY_TYPE_ERROR_OFFSET,
            cookie: 9,
            length: 14,
        };
        let b = s.encode();
        assert_eq!(be_u32(&b, 0), STRUCTURED_REPLY_MAGIC);
        let d = StructuredReply::decode_after_magic(b[4..].try_into().unwrap());
        assert_eq!(d, s);
        assert!(d.is_done() && d.is_error());
        let r = SimpleReply {
            error: EIO,
            cookie: 3,
        };
        let b = r.encode();
        assert_eq!(
            SimpleReply::decode_after_magic(b[4..].try_into().unwrap()),
            r
        );
    }

    #[test]
    fn options_round_trip() {
        let o = OptionHeader {
            option: OPT_GO,
            length: 7,
        };
        assert_eq!(OptionHeader::decode(&o.encode()), Ok(o));
        let r = OptionReply {
            option: OPT_GO,
            kind: REP_ERR_UNKNOWN,
            length: 0,
        };
        assert_eq!(OptionReply::decode(&r.encode()), Ok(r));
        assert!(r.is_error());
    }

    /// The exact bytes of every header, as docs/protocol (and the NBD spec) lay them out.
    #[test]
    fn headers_encode_to_the_protocols_bytes() {
        let r = Request {
            flags: 0x0102,
            kind: 0x0304,
            cookie: 0x0506_0708_090a_0b0c,
            offset: 0x0d0e_0f10_1112_1314,
            length: 0x1516_1718,
        };
        assert_eq!(
            r.encode(),
            [
                0x25, 0x60, 0x95, 0x13, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
                18, 19, 20, 21, 22, 23, 24
            ]
        );
        let s = SimpleReply {
            error: 0x0102_0304,
            cookie: 0x0506_0708_090a_0b0c,
        };
        assert_eq!(
            s.encode(),
            [0x67, 0x44, 0x66, 0x98, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        let c = StructuredReply {
            flags: 0x0102,
            kind: 0x0304,
            cookie: 0x0506_0708_090a_0b0c,
            length: 0x0d0e_0f10,
        };
        assert_eq!(
            c.encode(),
            [0x66, 0x8e, 0x33, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
        );
        let o = OptionHeader {
            option: 0x0102_0304,
            length: 0x0506_0708,
        };
        assert_eq!(
            o.encode(),
            [b'I', b'H', b'A', b'V', b'E', b'O', b'P', b'T', 1, 2, 3, 4, 5, 6, 7, 8]
        );
        let p = OptionReply {
            option: 0x0102_0304,
            kind: 0x0506_0708,
            length: 0x090a_0b0c,
        };
        assert_eq!(
            p.encode(),
            [
                0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                12
            ]
        );
        let mut name = Vec::new();
        put_name(&mut name, "ab");
        assert_eq!(name, [0, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn block_status_payloads_are_bounded() {
        let ex = [
            Extent {
                length: 65536,
                flags: STATE_HOLE | STATE_ZERO,
            },
            Extent {
                length: 4096,
                flags: 0,
            },
        ];
        let b = encode_block_status(1, &ex);
        assert_eq!(decode_block_status(&b), Some((1, ex.to_vec())));
        assert_eq!(decode_block_status(&b[..b.len() - 1]), None);
        assert_eq!(decode_block_status(&b[..4]), None);
    }
}
