//! Requests to the immutability service and its responses, and their byte encoding.
//!
//! Every payload starts with the protocol version (`u8`) and a message tag (`u8`). Integers
//! are little-endian; strings and paths are a `u16` length then bytes, bounded by
//! [`MAX_STR`]; ids and digests are raw bytes. See `docs/immutd-protocol.md`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bulwark_format::{Digest, PointId};

/// Version byte at the start of every payload.
pub const PROTOCOL_VERSION: u8 = 1;
/// Longest string or path in a message.
pub const MAX_STR: usize = 4096;
/// Longest statement or signature in a message (`u32` length).
pub const MAX_BLOB: usize = 32 * 1024;
/// Most strings or signatures in one list (`u16` count).
pub const MAX_LIST: usize = 128;

/// Which sealed file a request is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The sealed path, `REPO/store/<job>/<chain>/<point>.bwrp`.
    Path(PathBuf),
    /// The restore point id.
    Point(PointId),
}

/// What a client can ask. None of these can shorten or remove a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Seal the finished file `REPO/incoming/<point>.bwrp` of a guarded repository.
    Seal { path: PathBuf },
    /// Raise a file's expiry to at least `until_unix` (capped by the service's maximum).
    Extend { target: Target, until_unix: i64 },
    /// The ledger entry of a file.
    Query { target: Target },
    /// Delete a file whose protection has expired.
    Delete { target: Target },
    /// The service's state: clock, alerts, counts.
    Status,
    /// Root only: credit the current wall-clock time and end a clock freeze.
    TimeAccept,
    /// Root only: what `TimeAccept` would do now, without doing it.
    TimePreview,
    /// Ledger entries of one guarded repository (every repository when `repo` is empty),
    /// from index `cursor` on; answered with [`Response::Entries`], one page at a time.
    List { repo: PathBuf, cursor: u32 },
    /// Root only: issue the statement approvers must sign for one weakening action
    /// (`release` with `targets`, `time-accept`, `config`), valid for `valid_secs`.
    Prepare {
        action: String,
        targets: Vec<String>,
        valid_secs: u32,
    },
    /// Root only: perform the action of an issued statement, given the approvers' SSHSIG
    /// signature files over exactly its bytes.
    Apply {
        statement: Vec<u8>,
        signatures: Vec<Vec<u8>>,
    },
    /// Root only: clear the alerts of tampering that the service has undone (re-sealed).
    AckAlerts,
}

/// What accepting the wall clock now would change.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TimePreview {
    /// The trusted time now.
    pub trusted_unix: i64,
    /// The wall clock as the service reads it.
    pub wall_unix: i64,
    /// The trusted time after accepting: never earlier than `trusted_unix`.
    pub accepted_unix: i64,
    /// Locked files whose expiry lies between `trusted_unix` and `accepted_unix`: they would
    /// unlock at once (earlier than the trusted clock would unlock them).
    pub files_unlocking: u64,
    pub bytes_unlocking: u64,
    /// Earliest expiry among them, 0 when none.
    pub earliest_expiry_unix: i64,
    /// The clock alert that accepting would end, empty when none.
    pub alert: String,
}

/// Protection state of a sealed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    /// The immutable attribute is set.
    Locked,
    /// Expired and the attribute cleared; deletable on request.
    Unlocked,
    /// Deleted on request after expiry.
    Deleted,
}

impl FileState {
    fn code(self) -> u8 {
        match self {
            FileState::Locked => 1,
            FileState::Unlocked => 2,
            FileState::Deleted => 3,
        }
    }
    fn from_code(c: u8) -> Result<Self, DecodeError> {
        Ok(match c {
            1 => FileState::Locked,
            2 => FileState::Unlocked,
            3 => FileState::Deleted,
            _ => return Err(DecodeError::Value("file state")),
        })
    }
    /// Short name for listings.
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Locked => "locked",
            FileState::Unlocked => "unlocked",
            FileState::Deleted => "deleted",
        }
    }
}

/// What the service knows of one sealed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub sealed_path: PathBuf,
    pub job: String,
    pub chain: PointId,
    pub point: PointId,
    /// Root digest the service read from the file's trailer when sealing it.
    pub root_digest: Digest,
    pub size: u64,
    pub inode: u64,
    /// Seal time by the service's trusted clock.
    pub sealed_unix: i64,
    /// Protected until this time (trusted clock), by the chain rule, period and extensions.
    pub expiry_unix: i64,
    /// The longest expiry requested with `Extend` (after capping), 0 for none.
    pub requested_expiry_unix: i64,
    pub state: FileState,
}

/// The service's state.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StatusInfo {
    /// Time credited by the trusted clock.
    pub trusted_unix: i64,
    /// The wall clock as the service reads it.
    pub wall_unix: i64,
    /// True while unlocks are frozen by a clock alert.
    pub unlocks_frozen: bool,
    /// The clock alert, empty when none.
    pub alert: String,
    pub files_locked: u64,
    pub bytes_locked: u64,
    pub files_unlocked: u64,
    /// Earliest expiry of a locked file, 0 when none.
    pub next_expiry_unix: i64,
    pub repositories: u32,
    /// Set when the audit log failed its check at startup.
    pub audit_problem: String,
    /// Connections being served now. This and the counters below were added at the end
    /// of the layout: an answer that ends before them (an older service) decodes them as 0.
    pub connections_open: u32,
    /// Connections from uids that may not use the service, closed at accept, since it started.
    pub refused_strangers: u64,
    /// Connections closed at accept because their uid or the service held every slot.
    pub refused_busy: u64,
    /// Requests cut because they were not complete within the request deadline.
    pub requests_timed_out: u64,
    /// Protection alerts (root's hand on sealed files or the settings, a weakening
    /// configuration not applied), one line each; added after the counters (an older
    /// answer decodes none).
    pub protection_alerts: Vec<String>,
}

/// Why the service refused or failed a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The message could not be decoded or is not allowed in this form.
    BadRequest,
    /// The peer's uid may not make this request.
    NotPermitted,
    /// No such file in the ledger or in `incoming/`.
    NotFound,
    /// The request is understood but refused (unexpired, would shorten, unsafe file, …).
    Refused,
    /// A root-set limit (maximum locked bytes) would be exceeded.
    Limit,
    /// Someone still holds the file open for writing; retry after closing it.
    Busy,
    /// An internal failure on the service side; see its log.
    Internal,
}

impl ErrorCode {
    fn code(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 1,
            ErrorCode::NotPermitted => 2,
            ErrorCode::NotFound => 3,
            ErrorCode::Refused => 4,
            ErrorCode::Limit => 5,
            ErrorCode::Busy => 6,
            ErrorCode::Internal => 7,
        }
    }
    fn from_code(c: u16) -> Self {
        match c {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::NotPermitted,
            3 => ErrorCode::NotFound,
            4 => ErrorCode::Refused,
            5 => ErrorCode::Limit,
            6 => ErrorCode::Busy,
            _ => ErrorCode::Internal,
        }
    }
}

/// What the service answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The file is sealed (or was already, for a repeated request).
    Sealed(FileInfo),
    /// Answer to `Query`.
    Entry(FileInfo),
    /// Answer to `Extend`; `capped` when the request was lowered to the maximum period.
    Extended { info: FileInfo, capped: bool },
    /// The file was deleted.
    Deleted { path: PathBuf },
    /// Answer to `Status`.
    Status(StatusInfo),
    /// Answer to `TimeAccept`: the trusted time now credited.
    TimeAccepted { trusted_unix: i64 },
    /// Answer to `TimePreview`.
    TimePreview(TimePreview),
    /// Answer to `List`: one page of entries; `next_cursor` is 0 after the last page.
    Entries {
        entries: Vec<FileInfo>,
        next_cursor: u32,
    },
    /// Answer to `Prepare`: the statement to sign, exactly.
    Statement { text: Vec<u8> },
    /// Answer to `Apply` and `AckAlerts`: what was done.
    Applied { summary: String },
    /// The request was refused or failed.
    Error { code: ErrorCode, message: String },
}

/// A payload that is not a valid message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message truncated")]
    Truncated,
    #[error(
        "protocol version {0} is not supported (this build speaks version {PROTOCOL_VERSION})"
    )]
    Version(u8),
    #[error("unknown message tag {0}")]
    Tag(u8),
    #[error("invalid {0}")]
    Value(&'static str),
    #[error("string or path longer than {MAX_STR} bytes")]
    TooLong,
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

/// Smallest encoding of a [`FileInfo`] (empty path and job).
const MIN_INFO: usize = 2 + 2 + 16 + 16 + 32 + 8 * 5 + 1;

/// How many bytes [`FileInfo`] takes encoded, for filling a page up to a frame.
pub fn encoded_info_len(i: &FileInfo) -> usize {
    MIN_INFO + i.sealed_path.as_os_str().len().min(MAX_STR) + i.job.len().min(MAX_STR)
}

// Message tags.
const RQ_SEAL: u8 = 1;
const RQ_EXTEND: u8 = 2;
const RQ_QUERY: u8 = 3;
const RQ_DELETE: u8 = 4;
const RQ_STATUS: u8 = 5;
const RQ_TIME_ACCEPT: u8 = 6;
const RQ_TIME_PREVIEW: u8 = 7;
const RQ_LIST: u8 = 8;
const RQ_PREPARE: u8 = 9;
const RQ_APPLY: u8 = 10;
const RQ_ACK_ALERTS: u8 = 11;
const RS_SEALED: u8 = 0x81;
const RS_ENTRY: u8 = 0x82;
const RS_EXTENDED: u8 = 0x83;
const RS_DELETED: u8 = 0x84;
const RS_STATUS: u8 = 0x85;
const RS_TIME_ACCEPTED: u8 = 0x86;
const RS_TIME_PREVIEW: u8 = 0x87;
const RS_ENTRIES: u8 = 0x88;
const RS_STATEMENT: u8 = 0x89;
const RS_APPLIED: u8 = 0x8a;
const RS_ERROR: u8 = 0xff;
const TG_PATH: u8 = 1;
const TG_POINT: u8 = 2;

struct Enc(Vec<u8>);

impl Enc {
    fn new(tag: u8) -> Self {
        Enc(vec![PROTOCOL_VERSION, tag])
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        // Longer strings are cut: an encoder never produces an undecodable message.
        let b = &b[..b.len().min(MAX_STR)];
        self.u16(b.len() as u16);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        let mut end = s.len().min(MAX_STR);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.bytes(&s.as_bytes()[..end]);
    }
    fn path(&mut self, p: &Path) {
        self.bytes(p.as_os_str().as_bytes());
    }
    /// A `u32` length then bytes (statements, signatures), cut at [`MAX_BLOB`].
    fn blob(&mut self, b: &[u8]) {
        let b = &b[..b.len().min(MAX_BLOB)];
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    /// A `u16` count then the strings, at most [`MAX_LIST`] of them.
    fn strs(&mut self, v: &[String]) {
        let v = &v[..v.len().min(MAX_LIST)];
        self.u16(v.len() as u16);
        for s in v {
            self.str(s);
        }
    }
    fn target(&mut self, t: &Target) {
        match t {
            Target::Path(p) => {
                self.u8(TG_PATH);
                self.path(p);
            }
            Target::Point(id) => {
                self.u8(TG_POINT);
                self.0.extend_from_slice(&id.0);
            }
        }
    }
    fn info(&mut self, i: &FileInfo) {
        self.path(&i.sealed_path);
        self.str(&i.job);
        self.0.extend_from_slice(&i.chain.0);
        self.0.extend_from_slice(&i.point.0);
        self.0.extend_from_slice(&i.root_digest.0);
        self.u64(i.size);
        self.u64(i.inode);
        self.i64(i.sealed_unix);
        self.i64(i.expiry_unix);
        self.i64(i.requested_expiry_unix);
        self.u8(i.state.code());
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Value("boolean")),
        }
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()? as usize;
        if len > MAX_STR {
            return Err(DecodeError::TooLong);
        }
        self.take(len)
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| DecodeError::Value("UTF-8 string"))
    }
    fn blob(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32()? as usize;
        if len > MAX_BLOB {
            return Err(DecodeError::TooLong);
        }
        Ok(self.take(len)?.to_vec())
    }
    /// A count then that many items of at least `min` bytes each: the count is bounded by
    /// the bytes left before anything is allocated.
    fn list<T>(
        &mut self,
        min: usize,
        mut f: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.u16()? as usize;
        if n > MAX_LIST || n > self.0.len() / min {
            return Err(DecodeError::Truncated);
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(f(self)?);
        }
        Ok(v)
    }
    fn path(&mut self) -> Result<PathBuf, DecodeError> {
        let b = self.bytes()?;
        if b.contains(&0) {
            return Err(DecodeError::Value("path (contains NUL)"));
        }
        Ok(PathBuf::from(OsStr::from_bytes(b)))
    }
    fn target(&mut self) -> Result<Target, DecodeError> {
        match self.u8()? {
            TG_PATH => Ok(Target::Path(self.path()?)),
            TG_POINT => Ok(Target::Point(PointId(self.arr()?))),
            _ => Err(DecodeError::Value("target kind")),
        }
    }
    fn info(&mut self) -> Result<FileInfo, DecodeError> {
        Ok(FileInfo {
            sealed_path: self.path()?,
            job: self.str()?,
            chain: PointId(self.arr()?),
            point: PointId(self.arr()?),
            root_digest: Digest(self.arr()?),
            size: self.u64()?,
            inode: self.u64()?,
            sealed_unix: self.i64()?,
            expiry_unix: self.i64()?,
            requested_expiry_unix: self.i64()?,
            state: FileState::from_code(self.u8()?)?,
        })
    }
    fn start(b: &'a [u8]) -> Result<(Dec<'a>, u8), DecodeError> {
        let mut d = Dec(b);
        let v = d.u8()?;
        if v != PROTOCOL_VERSION {
            return Err(DecodeError::Version(v));
        }
        let tag = d.u8()?;
        Ok((d, tag))
    }
    /// A field added at the end of a layout: its default when the message ends before it.
    fn trailing<T: Default>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        if self.0.is_empty() {
            Ok(T::default())
        } else {
            f(self)
        }
    }
    fn end(self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.0.len()))
        }
    }
}

impl Request {
    /// Encodes the payload of one frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut e;
        match self {
            Request::Seal { path } => {
                e = Enc::new(RQ_SEAL);
                e.path(path);
            }
            Request::Extend { target, until_unix } => {
                e = Enc::new(RQ_EXTEND);
                e.target(target);
                e.i64(*until_unix);
            }
            Request::Query { target } => {
                e = Enc::new(RQ_QUERY);
                e.target(target);
            }
            Request::Delete { target } => {
                e = Enc::new(RQ_DELETE);
                e.target(target);
            }
            Request::Status => e = Enc::new(RQ_STATUS),
            Request::TimeAccept => e = Enc::new(RQ_TIME_ACCEPT),
            Request::TimePreview => e = Enc::new(RQ_TIME_PREVIEW),
            Request::List { repo, cursor } => {
                e = Enc::new(RQ_LIST);
                e.path(repo);
                e.u32(*cursor);
            }
            Request::Prepare {
                action,
                targets,
                valid_secs,
            } => {
                e = Enc::new(RQ_PREPARE);
                e.str(action);
                e.strs(targets);
                e.u32(*valid_secs);
            }
            Request::Apply {
                statement,
                signatures,
            } => {
                e = Enc::new(RQ_APPLY);
                e.blob(statement);
                let sigs = &signatures[..signatures.len().min(MAX_LIST)];
                e.u16(sigs.len() as u16);
                for s in sigs {
                    e.blob(s);
                }
            }
            Request::AckAlerts => e = Enc::new(RQ_ACK_ALERTS),
        }
        e.0
    }

    /// Decodes a payload; every length is checked before use.
    pub fn decode(b: &[u8]) -> Result<Request, DecodeError> {
        let (mut d, tag) = Dec::start(b)?;
        let r = match tag {
            RQ_SEAL => Request::Seal { path: d.path()? },
            RQ_EXTEND => Request::Extend {
                target: d.target()?,
                until_unix: d.i64()?,
            },
            RQ_QUERY => Request::Query {
                target: d.target()?,
            },
            RQ_DELETE => Request::Delete {
                target: d.target()?,
            },
            RQ_STATUS => Request::Status,
            RQ_TIME_ACCEPT => Request::TimeAccept,
            RQ_TIME_PREVIEW => Request::TimePreview,
            RQ_LIST => Request::List {
                repo: d.path()?,
                cursor: d.u32()?,
            },
            RQ_PREPARE => Request::Prepare {
                action: d.str()?,
                targets: d.list(2, Dec::str)?,
                valid_secs: d.u32()?,
            },
            RQ_APPLY => Request::Apply {
                statement: d.blob()?,
                signatures: d.list(4, Dec::blob)?,
            },
            RQ_ACK_ALERTS => Request::AckAlerts,
            t => return Err(DecodeError::Tag(t)),
        };
        d.end()?;
        Ok(r)
    }

    /// Short name for logs and the audit trail.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Seal { .. } => "seal",
            Request::Extend { .. } => "extend",
            Request::Query { .. } => "query",
            Request::Delete { .. } => "delete",
            Request::Status => "status",
            Request::TimeAccept => "time-accept",
            Request::TimePreview => "time-preview",
            Request::List { .. } => "list",
            Request::Prepare { .. } => "prepare",
            Request::Apply { .. } => "apply",
            Request::AckAlerts => "ack-alerts",
        }
    }
}

impl Response {
    /// Encodes the payload of one frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut e;
        match self {
            Response::Sealed(i) => {
                e = Enc::new(RS_SEALED);
                e.info(i);
            }
            Response::Entry(i) => {
                e = Enc::new(RS_ENTRY);
                e.info(i);
            }
            Response::Extended { info, capped } => {
                e = Enc::new(RS_EXTENDED);
                e.info(info);
                e.u8(u8::from(*capped));
            }
            Response::Deleted { path } => {
                e = Enc::new(RS_DELETED);
                e.path(path);
            }
            Response::Status(s) => {
                e = Enc::new(RS_STATUS);
                e.i64(s.trusted_unix);
                e.i64(s.wall_unix);
                e.u8(u8::from(s.unlocks_frozen));
                e.str(&s.alert);
                e.u64(s.files_locked);
                e.u64(s.bytes_locked);
                e.u64(s.files_unlocked);
                e.i64(s.next_expiry_unix);
                e.u32(s.repositories);
                e.str(&s.audit_problem);
                e.u32(s.connections_open);
                e.u64(s.refused_strangers);
                e.u64(s.refused_busy);
                e.u64(s.requests_timed_out);
                e.strs(&s.protection_alerts);
            }
            Response::TimeAccepted { trusted_unix } => {
                e = Enc::new(RS_TIME_ACCEPTED);
                e.i64(*trusted_unix);
            }
            Response::TimePreview(p) => {
                e = Enc::new(RS_TIME_PREVIEW);
                e.i64(p.trusted_unix);
                e.i64(p.wall_unix);
                e.i64(p.accepted_unix);
                e.u64(p.files_unlocking);
                e.u64(p.bytes_unlocking);
                e.i64(p.earliest_expiry_unix);
                e.str(&p.alert);
            }
            Response::Entries {
                entries,
                next_cursor,
            } => {
                e = Enc::new(RS_ENTRIES);
                e.u32(*next_cursor);
                e.u32(entries.len() as u32);
                for i in entries {
                    e.info(i);
                }
            }
            Response::Statement { text } => {
                e = Enc::new(RS_STATEMENT);
                e.blob(text);
            }
            Response::Applied { summary } => {
                e = Enc::new(RS_APPLIED);
                e.str(summary);
            }
            Response::Error { code, message } => {
                e = Enc::new(RS_ERROR);
                e.u16(code.code());
                e.str(message);
            }
        }
        e.0
    }

    /// Decodes a payload; every length is checked before use.
    pub fn decode(b: &[u8]) -> Result<Response, DecodeError> {
        let (mut d, tag) = Dec::start(b)?;
        let r = match tag {
            RS_SEALED => Response::Sealed(d.info()?),
            RS_ENTRY => Response::Entry(d.info()?),
            RS_EXTENDED => Response::Extended {
                info: d.info()?,
                capped: d.bool()?,
            },
            RS_DELETED => Response::Deleted { path: d.path()? },
            RS_STATUS => Response::Status(StatusInfo {
                trusted_unix: d.i64()?,
                wall_unix: d.i64()?,
                unlocks_frozen: d.bool()?,
                alert: d.str()?,
                files_locked: d.u64()?,
                bytes_locked: d.u64()?,
                files_unlocked: d.u64()?,
                next_expiry_unix: d.i64()?,
                repositories: d.u32()?,
                audit_problem: d.str()?,
                connections_open: d.trailing(Dec::u32)?,
                refused_strangers: d.trailing(Dec::u64)?,
                refused_busy: d.trailing(Dec::u64)?,
                requests_timed_out: d.trailing(Dec::u64)?,
                protection_alerts: d.trailing(|d| d.list(2, Dec::str))?,
            }),
            RS_TIME_ACCEPTED => Response::TimeAccepted {
                trusted_unix: d.i64()?,
            },
            RS_TIME_PREVIEW => Response::TimePreview(TimePreview {
                trusted_unix: d.i64()?,
                wall_unix: d.i64()?,
                accepted_unix: d.i64()?,
                files_unlocking: d.u64()?,
                bytes_unlocking: d.u64()?,
                earliest_expiry_unix: d.i64()?,
                alert: d.str()?,
            }),
            RS_ENTRIES => {
                let next_cursor = d.u32()?;
                let n = d.u32()? as usize;
                // Each entry takes at least MIN_INFO bytes: bound the count before allocating.
                if n > d.0.len() / MIN_INFO {
                    return Err(DecodeError::Truncated);
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(d.info()?);
                }
                Response::Entries {
                    entries,
                    next_cursor,
                }
            }
            RS_STATEMENT => Response::Statement { text: d.blob()? },
            RS_APPLIED => Response::Applied { summary: d.str()? },
            RS_ERROR => Response::Error {
                code: ErrorCode::from_code(d.u16()?),
                message: d.str()?,
            },
            t => return Err(DecodeError::Tag(t)),
        };
        d.end()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info() -> FileInfo {
        FileInfo {
            sealed_path: "/r/store/j/00/11.bwrp".into(),
            job: "job-1".into(),
            chain: PointId([1; 16]),
            point: PointId([2; 16]),
            root_digest: Digest([3; 32]),
            size: 4096,
            inode: 77,
            sealed_unix: 1_700_000_000,
            expiry_unix: 1_700_604_800,
            requested_expiry_unix: 0,
            state: FileState::Locked,
        }
    }

    #[test]
    fn a_status_without_the_connection_counters_still_decodes() {
        let s = StatusInfo {
            files_locked: 3,
            audit_problem: "x".into(),
            connections_open: 2,
            refused_strangers: 70_000,
            refused_busy: 4,
            requests_timed_out: 1,
            ..Default::default()
        };
        let full = Response::Status(s.clone()).encode();
        assert_eq!(
            Response::decode(&full).unwrap(),
            Response::Status(s.clone())
        );
        // The layout before the counters: they decode as 0.
        let old = &full[..full.len() - (4 + 8 * 3 + 2)];
        let want = StatusInfo {
            connections_open: 0,
            refused_strangers: 0,
            refused_busy: 0,
            requests_timed_out: 0,
            ..s
        };
        assert_eq!(Response::decode(old).unwrap(), Response::Status(want));
        // A field cut in half is still an error.
        assert!(Response::decode(&full[..full.len() - 3]).is_err());
    }

    #[test]
    fn every_message_round_trips() {
        let reqs = [
            Request::Seal {
                path: "/r/incoming/a.bwrp".into(),
            },
            Request::Extend {
                target: Target::Point(PointId([9; 16])),
                until_unix: -5,
            },
            Request::Query {
                target: Target::Path("/r/store/x".into()),
            },
            Request::Delete {
                target: Target::Point(PointId([0; 16])),
            },
            Request::Status,
            Request::TimeAccept,
            Request::TimePreview,
            Request::List {
                repo: "/srv/repo".into(),
                cursor: 7,
            },
            Request::Prepare {
                action: "release".into(),
                targets: vec!["/r/store/j/c/p.bwrp".into(), "00ff".into()],
                valid_secs: 3600,
            },
            Request::Apply {
                statement: b"statement\n".to_vec(),
                signatures: vec![b"sig a".to_vec(), vec![], b"sig b".to_vec()],
            },
            Request::AckAlerts,
        ];
        for r in reqs {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        let resps = [
            Response::Sealed(info()),
            Response::Entry(FileInfo {
                state: FileState::Deleted,
                ..info()
            }),
            Response::Extended {
                info: info(),
                capped: true,
            },
            Response::Deleted { path: "/x".into() },
            Response::Status(StatusInfo {
                alert: "jump".into(),
                unlocks_frozen: true,
                ..Default::default()
            }),
            Response::TimeAccepted { trusted_unix: 5 },
            Response::Status(StatusInfo {
                protection_alerts: vec!["a".into(), String::new(), "b".into()],
                ..Default::default()
            }),
            Response::Statement {
                text: b"text".to_vec(),
            },
            Response::Applied {
                summary: "done".into(),
            },
            Response::TimePreview(TimePreview {
                trusted_unix: 1,
                wall_unix: 2,
                accepted_unix: 3,
                files_unlocking: 4,
                bytes_unlocking: 5,
                earliest_expiry_unix: 6,
                alert: "jump".into(),
            }),
            Response::Entries {
                entries: vec![info(), info()],
                next_cursor: 9,
            },
            Response::Entries {
                entries: vec![],
                next_cursor: 0,
            },
            Response::Error {
                code: ErrorCode::Refused,
                message: "no".into(),
            },
        ];
        for r in resps {
            assert_eq!(Response::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn bad_payloads_are_refused() {
        assert_eq!(Request::decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(
            Request::decode(&[2, RQ_STATUS]),
            Err(DecodeError::Version(2))
        );
        assert_eq!(Request::decode(&[1, 99]), Err(DecodeError::Tag(99)));
        assert_eq!(
            Request::decode(&[1, RQ_STATUS, 0]),
            Err(DecodeError::Trailing(1))
        );
        let mut long = vec![1, RQ_SEAL];
        long.extend_from_slice(&(MAX_STR as u16 + 1).to_le_bytes());
        assert_eq!(Request::decode(&long), Err(DecodeError::TooLong));
        assert_eq!(
            Request::decode(&[1, RQ_SEAL, 1, 0, 0]),
            Err(DecodeError::Value("path (contains NUL)"))
        );
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Request::decode(&b);
            let _ = Response::decode(&b);
        }

        #[test]
        fn paths_round_trip(p in proptest::collection::vec(1u8..=255, 0..200), n in any::<i64>()) {
            let r = Request::Extend { target: Target::Path(PathBuf::from(OsStr::from_bytes(&p))), until_unix: n };
            prop_assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
    }
}
