//! Message types, their payload layouts and limits. `docs/protocol.md` describes each.

use bulwark_format::{BlockNo, Codec, Digest, PointId, PointKind, RetentionClass, StoredBlock};

use crate::codec::{Rd, Wr};
use crate::{ErrorCode, ProtocolError, Result};

/// Largest block the network carries: 4 MiB, the largest block size a client writes
/// (`bulwark_repository::plan::MAX_BLOCK_SIZE`), below the format's 16 MiB. A chain with larger
/// blocks is refused at `BeginBackup` and restored locally.
pub const MAX_NET_BLOCK_SIZE: u32 = 4 << 20;
/// Largest payload of a `Block` frame: its 77-byte header and a block of up to 4 MiB (plus
/// the 32 bytes of salt and tag when encrypted).
pub const MAX_DATA_PAYLOAD: u32 =
    BLOCK_HEADER_LEN as u32 + MAX_NET_BLOCK_SIZE + bulwark_format::ENCRYPTION_OVERHEAD;
/// Largest payload of every other frame.
pub const MAX_CONTROL_PAYLOAD: u32 = 1 << 20;
/// Job names in one `Jobs` frame.
pub const MAX_JOBS: usize = 10_000;
/// Restore points in one `Points` frame.
pub const MAX_POINTS_PER_FRAME: usize = 2048;
/// Parent hashes in one `Known` frame.
pub const MAX_KNOWN_PER_FRAME: usize = 16_384;
/// Damaged block numbers listed per restore point in a `VerifyReport`.
pub const MAX_DAMAGED_BLOCKS: usize = 4096;
/// Bytes of a block header inside a `Block` payload.
pub const BLOCK_HEADER_LEN: usize = 8 + 4 + 1 + 32 + 32;

const MAX_NAME: usize = 64;
const MAX_TEXT: usize = 4096;
const MAX_DER: usize = 16 * 1024;
const MAX_TOKEN: usize = 256;
const MAX_PROBLEMS: usize = 64;
const MAX_DAMAGED_POINTS: usize = 4096;
const SUMMARY_MIN: usize = 16 * 3 + 2 + 8 + 4 + 8 + 4 + 8 * 4 + 32 + 2;

macro_rules! msg_types {
    ($($name:ident = $code:literal, $max:expr;)*) => {
        /// The type byte of a frame.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum MsgType { $($name),* }
        impl MsgType {
            /// Wire value.
            pub fn code(self) -> u8 { match self { $(MsgType::$name => $code),* } }
            /// From the wire value.
            pub fn from_code(c: u8) -> Option<Self> {
                match c { $($code => Some(MsgType::$name),)* _ => None }
            }
            /// Largest payload a frame of this type may have.
            pub fn max_payload(self) -> u32 { match self { $(MsgType::$name => $max),* } }
            /// Every type, for tests and fuzzing.
            pub const ALL: &'static [MsgType] = &[$(MsgType::$name),*];
        }
    };
}

msg_types! {
    Hello = 0x01, 1024;
    Welcome = 0x02, 1024;
    Error = 0x03, 8192;
    Enroll = 0x04, 64 * 1024;
    Enrolled = 0x05, 64 * 1024;
    ListJobs = 0x10, 0;
    Jobs = 0x11, MAX_CONTROL_PAYLOAD;
    ListPoints = 0x12, 256;
    Points = 0x13, MAX_CONTROL_PAYLOAD;
    BeginBackup = 0x20, 256;
    BackupReady = 0x21, 4096;
    Known = 0x22, MAX_CONTROL_PAYLOAD;
    Block = 0x23, MAX_DATA_PAYLOAD;
    Unchanged = 0x24, 16;
    Finish = 0x25, 8;
    Sealed = 0x26, 2048;
    BeginRestore = 0x30, 256;
    RestoreReady = 0x31, 1024;
    RestoreEnd = 0x32, 8;
    Verify = 0x40, 256;
    VerifyReport = 0x41, MAX_CONTROL_PAYLOAD;
    CopyHeld = 0x60, crate::copy::LIM_HELD;
    CopyHeldList = 0x61, crate::copy::LIM_HELD_LIST;
    CopyBegin = 0x62, crate::copy::LIM_BEGIN;
    CopyMap = 0x63, crate::copy::LIM_MAP;
    CopyPlan = 0x64, crate::copy::LIM_PLAN;
    CopyNeed = 0x65, crate::copy::LIM_NEED;
    CopyRead = 0x66, crate::copy::LIM_READ;
    CopyReadHead = 0x67, crate::copy::LIM_READ_HEAD;
    OpenExport = 0x50, 256;
    ExportReady = 0x51, 1024;
    ExportMap = 0x52, MAX_CONTROL_PAYLOAD;
    ReadBlocks = 0x53, 12;
    BlockUnavailable = 0x54, 2048;
    ListLocks = 0x80, crate::locks::LIM_LIST;
    Locks = 0x81, crate::locks::LIM_PAGE;
    GetParentEncryption = 0x70, 0;
    EncryptionRecord = 0x71, MAX_RECORD as u32 + 4;
    Encryption = 0x72, MAX_RECORD as u32 + 4;
    GetParentCbt = 0x90, 0;
    ParentCbt = 0x91, MAX_RECORD as u32 + 4;
    Cbt = 0x92, MAX_RECORD as u32 + 4;
}

/// Largest encryption record on the wire (the format's extension limit).
pub const MAX_RECORD: usize = bulwark_format::MAX_EXTENSION_LEN;

/// Most blocks one `ReadBlocks` request may cover (bounds the reply to 64 `Block` frames).
pub const MAX_READ_BLOCKS: u32 = 64;
/// Map entries in one `ExportMap` frame.
pub const MAX_MAP_PER_FRAME: usize = 16_384;

/// One restore point as listed to its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointSummary {
    pub point: PointId,
    pub chain: PointId,
    pub parent: PointId,
    pub kind: PointKind,
    pub retention: RetentionClass,
    /// Creation time by the repository's clock.
    pub created_unix: i64,
    pub created_nanos: u32,
    pub disk_size: u64,
    pub block_size: u32,
    pub file_bytes: u64,
    pub stored_bytes: u64,
    pub new_bytes: u64,
    pub new_blocks: u64,
    pub root: Digest,
    /// The client that sent it.
    pub client: String,
}

/// What a client asks to back up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRequest {
    pub job: String,
    pub disk_size: u64,
    /// 0: the chain's block size, or the default for a new chain.
    pub block_size: u32,
    pub compression_level: i32,
    pub force_full: bool,
}

/// The server's answer to `BeginBackup`: what the new restore point will be. `known` parent
/// hashes follow in `Known` frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReady {
    pub point: PointId,
    pub chain: PointId,
    /// [`PointId::NONE`] for a full.
    pub parent: PointId,
    pub kind: PointKind,
    pub block_size: u32,
    pub known: u64,
    /// Why this is a full although the job has restore points; empty otherwise.
    pub full_reason: String,
}

/// A sealed restore point, as reported after `Finish`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedInfo {
    pub summary: PointSummary,
    pub immutable: bool,
    /// Unix seconds when the protection ends, when immutable.
    pub expiry: Option<i64>,
    /// What the administrator must know now (a clock alert of the immutability service),
    /// empty when nothing; sent only when not empty, so that older clients still decode.
    pub notice: String,
}

/// Longest `SealedInfo::notice`.
pub const MAX_NOTICE: usize = 600;

/// A restore point that verify found damaged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedPoint {
    pub job: String,
    pub point: Option<PointId>,
    pub problems: Vec<String>,
    /// At most [`MAX_DAMAGED_BLOCKS`] block numbers.
    pub blocks: Vec<u64>,
    /// Damaged blocks beyond those listed.
    pub more_blocks: u64,
}

/// The outcome of a server-side verify of the client's jobs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub points_checked: u64,
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub damaged: Vec<DamagedPoint>,
}

/// A decoded message. `Block` borrows its data from the frame buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    /// Client, first message: its version.
    Hello { version: u16, software: String },
    /// Server: version chosen, the client's identity, the repository clock.
    Welcome {
        version: u16,
        client: String,
        server_unix: i64,
        repository: String,
    },
    /// Either side: a refusal or failure; the sender closes the connection after it.
    Error { code: ErrorCode, message: String },
    /// Client on an enrollment session: the token and a PKCS#10 request.
    Enroll { token: String, csr_der: Vec<u8> },
    /// Server: the client's new certificate and the repository CA.
    Enrolled {
        client: String,
        cert_der: Vec<u8>,
        ca_der: Vec<u8>,
    },
    /// Client: which jobs are mine?
    ListJobs,
    /// Server: the client's jobs.
    Jobs { jobs: Vec<String> },
    /// Client: the restore points of one of my jobs.
    ListPoints { job: String },
    /// Server: a page of restore points; `last` ends the list.
    Points {
        last: bool,
        points: Vec<PointSummary>,
    },
    /// Client: start a backup.
    BeginBackup(BackupRequest),
    /// Server: the backup may start.
    BackupReady(BackupReady),
    /// Server: parent hashes `(block, plain BLAKE3)`, ascending.
    Known { entries: Vec<(u64, Digest)> },
    /// A stored block (client to server in a backup, server to client in a restore): its
    /// fixed fields ([`BLOCK_HEADER_LEN`] bytes), then its stored bytes, borrowed.
    Block(StoredBlock<'a>),
    /// Client: `count` blocks from `first` are unchanged since the parent.
    Unchanged { first: u64, count: u64 },
    /// Client: every block was sent.
    Finish { blocks: u64 },
    /// Client, in a backup after `Known`: send the parent's encryption record
    /// (docs/encryption.md).
    GetParentEncryption,
    /// Client, in a backup before its first block: the parent's changed-block tracking
    /// record (docs/sources.md), answered by `ParentCbt`.
    GetParentCbt,
    /// Server: the parent's CBT record (empty when the parent has none or for a new chain).
    ParentCbt { record: Vec<u8> },
    /// Client, in a backup before `Finish`: the new point's CBT record (once).
    Cbt { record: Vec<u8> },
    /// Server: an encryption record; empty when the parent is not encrypted or there is none.
    /// Also sent before `RestoreReady` for an encrypted point: the sessions of every file the
    /// restore reads.
    EncryptionRecord { record: Vec<u8> },
    /// Client, in a backup before its first block: the new point's encryption record; its
    /// blocks are then all encrypted.
    Encryption { record: Vec<u8> },
    /// Server: the restore point is durable and sealed.
    Sealed(SealedInfo),
    /// Client: restore a point (`None`: the newest).
    BeginRestore { job: String, point: Option<PointId> },
    /// Server: what follows; `blocks` `Block` frames then `RestoreEnd`.
    RestoreReady { point: PointSummary, blocks: u64 },
    /// Server: the restore stream is complete.
    RestoreEnd { blocks: u64 },
    /// Client: verify my jobs (or one of them) on the server.
    Verify { job: Option<String> },
    /// Server: verify's outcome.
    VerifyReport(VerifyReport),
    /// Copies between repositories (types 0x60–0x6F, `crate::copy`).
    Copy(crate::copy::CopyMsg),
    /// Client: serve a restore point for random access (`None`: the newest); the session
    /// then carries only `ReadBlocks` requests.
    OpenExport { job: String, point: Option<PointId> },
    /// Server: the point, and how many map entries follow in `ExportMap` frames.
    ExportReady { point: PointSummary, entries: u64 },
    /// Server: a page of the point's block map `(block, plain BLAKE3)`, ascending.
    ExportMap { entries: Vec<(u64, Digest)> },
    /// Client: the stored bytes of the mapped blocks among `count` blocks from `first`; the
    /// server answers each mapped block, in order, with `Block` or `BlockUnavailable`.
    ReadBlocks { first: u64, count: u32 },
    /// Server: this block could not be read on the repository (the session goes on).
    BlockUnavailable { block: u64, message: String },
    /// The read-only lock messages (types 0x80–0x8F, `crate::locks`).
    Locks(crate::locks::LockMsg),
}

/// Wire code of a restore-point kind (same as the file format's).
pub(crate) fn kind_code(k: PointKind) -> u8 {
    match k {
        PointKind::ActiveFull => 1,
        PointKind::Incremental => 2,
        PointKind::SyntheticFull => 3,
    }
}

fn kind_from(r: &Rd<'_>, c: u8) -> Result<PointKind> {
    Ok(match c {
        1 => PointKind::ActiveFull,
        2 => PointKind::Incremental,
        3 => PointKind::SyntheticFull,
        _ => return Err(r.bad(format!("unknown restore point kind {c}"))),
    })
}

pub(crate) fn retention_code(k: RetentionClass) -> u8 {
    match k {
        RetentionClass::Regular => 0,
        RetentionClass::Weekly => 1,
        RetentionClass::Monthly => 2,
        RetentionClass::Yearly => 3,
    }
}

fn retention_from(r: &Rd<'_>, c: u8) -> Result<RetentionClass> {
    Ok(match c {
        0 => RetentionClass::Regular,
        1 => RetentionClass::Weekly,
        2 => RetentionClass::Monthly,
        3 => RetentionClass::Yearly,
        _ => return Err(r.bad(format!("unknown retention class {c}"))),
    })
}

fn put_summary(b: &mut Vec<u8>, s: &PointSummary) {
    b.raw(&s.point.0);
    b.raw(&s.chain.0);
    b.raw(&s.parent.0);
    b.u8(kind_code(s.kind));
    b.u8(retention_code(s.retention));
    b.i64(s.created_unix);
    b.u32(s.created_nanos);
    b.u64(s.disk_size);
    b.u32(s.block_size);
    for v in [s.file_bytes, s.stored_bytes, s.new_bytes, s.new_blocks] {
        b.u64(v);
    }
    b.raw(&s.root.0);
    b.string(&s.client, MAX_NAME);
}

fn get_summary(r: &mut Rd<'_>) -> Result<PointSummary> {
    let point = r.id()?;
    let chain = r.id()?;
    let parent = r.id()?;
    let k = r.u8()?;
    let kind = kind_from(r, k)?;
    let c = r.u8()?;
    let retention = retention_from(r, c)?;
    Ok(PointSummary {
        point,
        chain,
        parent,
        kind,
        retention,
        created_unix: r.i64()?,
        created_nanos: r.u32()?,
        disk_size: r.u64()?,
        block_size: r.u32()?,
        file_bytes: r.u64()?,
        stored_bytes: r.u64()?,
        new_bytes: r.u64()?,
        new_blocks: r.u64()?,
        root: r.digest()?,
        client: r.string(MAX_NAME)?,
    })
}

fn put_opt_id(b: &mut Vec<u8>, p: Option<PointId>) {
    b.raw(&p.unwrap_or(PointId::NONE).0);
}

fn get_opt_id(r: &mut Rd<'_>) -> Result<Option<PointId>> {
    let id = r.id()?;
    Ok((!id.is_none()).then_some(id))
}

/// Encodes a block's fixed fields ([`BLOCK_HEADER_LEN`] bytes); its data follows unencoded.
fn encode_block_header(blk: &StoredBlock<'_>, b: &mut Vec<u8>) {
    b.u64(blk.block.0);
    b.u32(blk.plain_len);
    // 0 raw, 1 zstd; 2 and 3 the same encrypted (docs/encryption.md). Builds before
    // encryption read this byte as a boolean and refuse 2 and 3.
    b.u8(blk.codec.flags() as u8);
    b.raw(&blk.plain_hash.0);
    b.raw(&blk.stored_hash.0);
}

impl<'a> Msg<'a> {
    /// The message's type.
    pub fn ty(&self) -> MsgType {
        match self {
            Msg::Hello { .. } => MsgType::Hello,
            Msg::Welcome { .. } => MsgType::Welcome,
            Msg::Error { .. } => MsgType::Error,
            Msg::Enroll { .. } => MsgType::Enroll,
            Msg::Enrolled { .. } => MsgType::Enrolled,
            Msg::ListJobs => MsgType::ListJobs,
            Msg::Jobs { .. } => MsgType::Jobs,
            Msg::ListPoints { .. } => MsgType::ListPoints,
            Msg::Points { .. } => MsgType::Points,
            Msg::BeginBackup(_) => MsgType::BeginBackup,
            Msg::BackupReady(_) => MsgType::BackupReady,
            Msg::Known { .. } => MsgType::Known,
            Msg::Block(_) => MsgType::Block,
            Msg::Unchanged { .. } => MsgType::Unchanged,
            Msg::Finish { .. } => MsgType::Finish,
            Msg::Sealed(_) => MsgType::Sealed,
            Msg::BeginRestore { .. } => MsgType::BeginRestore,
            Msg::RestoreReady { .. } => MsgType::RestoreReady,
            Msg::RestoreEnd { .. } => MsgType::RestoreEnd,
            Msg::GetParentEncryption => MsgType::GetParentEncryption,
            Msg::GetParentCbt => MsgType::GetParentCbt,
            Msg::ParentCbt { .. } => MsgType::ParentCbt,
            Msg::Cbt { .. } => MsgType::Cbt,
            Msg::EncryptionRecord { .. } => MsgType::EncryptionRecord,
            Msg::Encryption { .. } => MsgType::Encryption,
            Msg::Verify { .. } => MsgType::Verify,
            Msg::VerifyReport(_) => MsgType::VerifyReport,
            Msg::Copy(c) => c.ty(),
            Msg::Locks(l) => l.ty(),
            Msg::OpenExport { .. } => MsgType::OpenExport,
            Msg::ExportReady { .. } => MsgType::ExportReady,
            Msg::ExportMap { .. } => MsgType::ExportMap,
            Msg::ReadBlocks { .. } => MsgType::ReadBlocks,
            Msg::BlockUnavailable { .. } => MsgType::BlockUnavailable,
        }
    }

    /// Appends the payload to `b`, except a `Block`'s data (see [`crate::write_msg`]).
    pub fn encode_head(&self, b: &mut Vec<u8>) {
        match self {
            Msg::Hello { version, software } => {
                b.u16(*version);
                b.string(software, 256);
            }
            Msg::Welcome {
                version,
                client,
                server_unix,
                repository,
            } => {
                b.u16(*version);
                b.string(client, MAX_NAME);
                b.i64(*server_unix);
                b.string(repository, MAX_NAME);
            }
            Msg::Error { code, message } => {
                b.u16(code.to_u16());
                b.string(message, MAX_TEXT);
            }
            Msg::Enroll { token, csr_der } => {
                b.string(token, MAX_TOKEN);
                b.bytes(csr_der);
            }
            Msg::Enrolled {
                client,
                cert_der,
                ca_der,
            } => {
                b.string(client, MAX_NAME);
                b.bytes(cert_der);
                b.bytes(ca_der);
            }
            Msg::ListJobs => {}
            Msg::Jobs { jobs } => {
                b.u32(jobs.len() as u32);
                for j in jobs {
                    b.string(j, MAX_NAME);
                }
            }
            Msg::ListPoints { job } => b.string(job, MAX_NAME),
            Msg::Points { last, points } => {
                b.u8(u8::from(*last));
                b.u32(points.len() as u32);
                for p in points {
                    put_summary(b, p);
                }
            }
            Msg::BeginBackup(q) => {
                b.string(&q.job, MAX_NAME);
                b.u64(q.disk_size);
                b.u32(q.block_size);
                b.i32(q.compression_level);
                b.u8(u8::from(q.force_full));
            }
            Msg::BackupReady(r) => {
                b.raw(&r.point.0);
                b.raw(&r.chain.0);
                b.raw(&r.parent.0);
                b.u8(kind_code(r.kind));
                b.u32(r.block_size);
                b.u64(r.known);
                b.string(&r.full_reason, 1024);
            }
            Msg::Known { entries } => {
                b.u32(entries.len() as u32);
                for (block, h) in entries {
                    b.u64(*block);
                    b.raw(&h.0);
                }
            }
            Msg::Block(blk) => encode_block_header(blk, b),
            Msg::Unchanged { first, count } => {
                b.u64(*first);
                b.u64(*count);
            }
            Msg::Finish { blocks } | Msg::RestoreEnd { blocks } => b.u64(*blocks),
            Msg::GetParentEncryption | Msg::GetParentCbt => {}
            Msg::ParentCbt { record } | Msg::Cbt { record } => b.bytes(record),
            Msg::EncryptionRecord { record } | Msg::Encryption { record } => b.bytes(record),
            Msg::Sealed(s) => {
                put_summary(b, &s.summary);
                b.u8(u8::from(s.immutable));
                b.i64(s.expiry.unwrap_or(0));
                if !s.notice.is_empty() {
                    let mut end = s.notice.len().min(MAX_NOTICE);
                    while !s.notice.is_char_boundary(end) {
                        end -= 1;
                    }
                    b.string(&s.notice[..end], MAX_NOTICE);
                }
            }
            Msg::BeginRestore { job, point } | Msg::OpenExport { job, point } => {
                b.string(job, MAX_NAME);
                put_opt_id(b, *point);
            }
            Msg::ExportReady { point, entries } => {
                put_summary(b, point);
                b.u64(*entries);
            }
            Msg::ExportMap { entries } => {
                b.u32(entries.len() as u32);
                for (block, h) in entries {
                    b.u64(*block);
                    b.raw(&h.0);
                }
            }
            Msg::ReadBlocks { first, count } => {
                b.u64(*first);
                b.u32(*count);
            }
            Msg::BlockUnavailable { block, message } => {
                b.u64(*block);
                b.string(message, 1024);
            }
            Msg::RestoreReady { point, blocks } => {
                put_summary(b, point);
                b.u64(*blocks);
            }
            Msg::Verify { job } => b.string(job.as_deref().unwrap_or(""), MAX_NAME),
            Msg::Copy(c) => c.encode(b),
            Msg::Locks(l) => l.encode(b),
            Msg::VerifyReport(v) => {
                b.u64(v.points_checked);
                b.u64(v.blocks_checked);
                b.u64(v.bytes_checked);
                b.u32(v.damaged.len() as u32);
                for d in &v.damaged {
                    b.string(&d.job, MAX_NAME);
                    put_opt_id(b, d.point);
                    b.u32(d.problems.len() as u32);
                    for p in &d.problems {
                        b.string(p, 1024);
                    }
                    b.u32(d.blocks.len() as u32);
                    for x in &d.blocks {
                        b.u64(*x);
                    }
                    b.u64(d.more_blocks);
                }
            }
        }
    }

    /// Decodes a payload of type `ty`. Every byte must be used; nothing is allocated beyond
    /// what the (already bounded) payload holds.
    pub fn decode(ty: MsgType, payload: &'a [u8]) -> Result<Msg<'a>> {
        if payload.len() > ty.max_payload() as usize {
            return Err(ProtocolError::TooLarge {
                ty,
                len: payload.len() as u32,
                max: ty.max_payload(),
            });
        }
        let mut r = Rd::new(ty, payload);
        let m = match ty {
            MsgType::Hello => Msg::Hello {
                version: r.u16()?,
                software: r.string(256)?,
            },
            MsgType::Welcome => Msg::Welcome {
                version: r.u16()?,
                client: r.string(MAX_NAME)?,
                server_unix: r.i64()?,
                repository: r.string(MAX_NAME)?,
            },
            MsgType::Error => Msg::Error {
                code: ErrorCode::from_u16(r.u16()?),
                message: r.string(MAX_TEXT)?,
            },
            MsgType::Enroll => Msg::Enroll {
                token: r.string(MAX_TOKEN)?,
                csr_der: r.bytes(MAX_DER)?,
            },
            MsgType::Enrolled => Msg::Enrolled {
                client: r.string(MAX_NAME)?,
                cert_der: r.bytes(MAX_DER)?,
                ca_der: r.bytes(MAX_DER)?,
            },
            MsgType::ListJobs => Msg::ListJobs,
            MsgType::Jobs => {
                let jobs = r.list(MAX_JOBS, 2, |r| r.string(MAX_NAME))?;
                Msg::Jobs { jobs }
            }
            MsgType::ListPoints => Msg::ListPoints {
                job: r.string(MAX_NAME)?,
            },
            MsgType::Points => {
                let last = r.bool()?;
                let points = r.list(MAX_POINTS_PER_FRAME, SUMMARY_MIN, get_summary)?;
                Msg::Points { last, points }
            }
            MsgType::BeginBackup => {
                let job = r.string(MAX_NAME)?;
                let disk_size = r.u64()?;
                let block_size = r.u32()?;
                let compression_level = r.i32()?;
                let force_full = r.bool()?;
                Msg::BeginBackup(BackupRequest {
                    job,
                    disk_size,
                    block_size,
                    compression_level,
                    force_full,
                })
            }
            MsgType::BackupReady => {
                let point = r.id()?;
                let chain = r.id()?;
                let parent = r.id()?;
                let k = r.u8()?;
                Msg::BackupReady(BackupReady {
                    point,
                    chain,
                    parent,
                    kind: kind_from(&r, k)?,
                    block_size: r.u32()?,
                    known: r.u64()?,
                    full_reason: r.string(1024)?,
                })
            }
            MsgType::Known => {
                let entries = r.list(MAX_KNOWN_PER_FRAME, 40, |r| Ok((r.u64()?, r.digest()?)))?;
                Msg::Known { entries }
            }
            MsgType::Block => {
                let block = BlockNo(r.u64()?);
                let plain_len = r.u32()?;
                let codec = match r.u8()? {
                    c @ 0..=3 => Codec::of_flags(u32::from(c)),
                    c => return Err(r.bad(format!("unknown block codec {c}"))),
                };
                let plain_hash = r.digest()?;
                let stored_hash = r.digest()?;
                let data = r.rest();
                let overhead = if codec.is_encrypted() {
                    bulwark_format::ENCRYPTION_OVERHEAD as usize
                } else {
                    0
                };
                if data.len() <= overhead || data.len() > plain_len as usize + overhead {
                    return Err(r.bad(format!(
                        "{} stored bytes for a block of {} plain bytes",
                        data.len(),
                        plain_len
                    )));
                }
                if codec == Codec::Raw && data.len() != plain_len as usize {
                    return Err(r.bad("uncompressed block whose length differs from plain"));
                }
                Msg::Block(StoredBlock {
                    block,
                    plain_len,
                    plain_hash,
                    data,
                    codec,
                    stored_hash,
                })
            }
            MsgType::Unchanged => Msg::Unchanged {
                first: r.u64()?,
                count: r.u64()?,
            },
            MsgType::Finish => Msg::Finish { blocks: r.u64()? },
            MsgType::Sealed => {
                let summary = get_summary(&mut r)?;
                let immutable = r.bool()?;
                let expiry = r.i64()?;
                let notice = if r.left() > 0 {
                    r.string(MAX_NOTICE)?
                } else {
                    String::new()
                };
                Msg::Sealed(SealedInfo {
                    summary,
                    immutable,
                    expiry: immutable.then_some(expiry),
                    notice,
                })
            }
            MsgType::BeginRestore => Msg::BeginRestore {
                job: r.string(MAX_NAME)?,
                point: get_opt_id(&mut r)?,
            },
            MsgType::RestoreReady => Msg::RestoreReady {
                point: get_summary(&mut r)?,
                blocks: r.u64()?,
            },
            MsgType::RestoreEnd => Msg::RestoreEnd { blocks: r.u64()? },
            MsgType::GetParentEncryption => Msg::GetParentEncryption,
            MsgType::GetParentCbt => Msg::GetParentCbt,
            MsgType::ParentCbt => Msg::ParentCbt {
                record: r.bytes(MAX_RECORD)?,
            },
            MsgType::Cbt => Msg::Cbt {
                record: r.bytes(MAX_RECORD)?,
            },
            MsgType::EncryptionRecord => Msg::EncryptionRecord {
                record: r.bytes(MAX_RECORD)?,
            },
            MsgType::Encryption => Msg::Encryption {
                record: r.bytes(MAX_RECORD)?,
            },
            MsgType::OpenExport => Msg::OpenExport {
                job: r.string(MAX_NAME)?,
                point: get_opt_id(&mut r)?,
            },
            MsgType::ExportReady => Msg::ExportReady {
                point: get_summary(&mut r)?,
                entries: r.u64()?,
            },
            MsgType::ExportMap => {
                let entries = r.list(MAX_MAP_PER_FRAME, 40, |r| Ok((r.u64()?, r.digest()?)))?;
                Msg::ExportMap { entries }
            }
            MsgType::ReadBlocks => {
                let first = r.u64()?;
                let count = r.u32()?;
                if count == 0 || count > MAX_READ_BLOCKS {
                    return Err(r.bad(format!(
                        "ReadBlocks of {count} blocks (1 to {MAX_READ_BLOCKS})"
                    )));
                }
                Msg::ReadBlocks { first, count }
            }
            MsgType::BlockUnavailable => Msg::BlockUnavailable {
                block: r.u64()?,
                message: r.string(1024)?,
            },
            MsgType::Verify => {
                let job = r.string(MAX_NAME)?;
                Msg::Verify {
                    job: (!job.is_empty()).then_some(job),
                }
            }
            MsgType::CopyHeld
            | MsgType::CopyHeldList
            | MsgType::CopyBegin
            | MsgType::CopyMap
            | MsgType::CopyPlan
            | MsgType::CopyNeed
            | MsgType::CopyRead
            | MsgType::CopyReadHead => Msg::Copy(crate::copy::CopyMsg::decode(ty, &mut r)?),
            MsgType::ListLocks | MsgType::Locks => {
                Msg::Locks(crate::locks::LockMsg::decode(ty, &mut r)?)
            }
            MsgType::VerifyReport => {
                let points_checked = r.u64()?;
                let blocks_checked = r.u64()?;
                let bytes_checked = r.u64()?;
                let damaged = r.list(MAX_DAMAGED_POINTS, 2 + 16 + 4 + 4 + 8, |r| {
                    Ok(DamagedPoint {
                        job: r.string(MAX_NAME)?,
                        point: get_opt_id(r)?,
                        problems: r.list(MAX_PROBLEMS, 2, |r| r.string(1024))?,
                        blocks: r.list(MAX_DAMAGED_BLOCKS, 8, |r| r.u64())?,
                        more_blocks: r.u64()?,
                    })
                })?;
                Msg::VerifyReport(VerifyReport {
                    points_checked,
                    blocks_checked,
                    bytes_checked,
                    damaged,
                })
            }
        };
        r.finish()?;
        Ok(m)
    }

    /// Turns an `Error` message into a [`ProtocolError`], and any other message that is not
    /// what the caller expected into [`ProtocolError::Unexpected`].
    pub fn unexpected(self, expected: &'static str) -> ProtocolError {
        match self {
            Msg::Error { code, message } => ProtocolError::Remote { code, message },
            other => ProtocolError::Unexpected {
                got: other.ty(),
                expected,
            },
        }
    }
}
