//! The copy messages (types 0x60–0x6F): restore points copied between repositories by
//! `bulwark copy` (`docs/protocol.md`, "Copies").

use bulwark_format::{Digest, MapEntry, PointId, ENTRY_LEN};

use crate::codec::{Rd, Wr};
use crate::{MsgType, Result};

/// Held points in one `CopyHeldList` frame.
pub const MAX_HELD_PER_FRAME: usize = 4096;
/// Map entries in one `CopyMap` frame (960 000 bytes).
pub const MAX_MAP_ENTRIES_PER_FRAME: usize = 10_000;
/// Block numbers in one `CopyNeed` frame.
pub const MAX_NEED_PER_FRAME: usize = 65_536;
/// Largest metadata a copied point carries over the network.
pub const MAX_COPY_META: usize = 1 << 20;
/// Bytes of a header as copied (its first 80 bytes; the rest of its 4 KiB is zero).
pub const COPY_HEADER_LEN: usize = 80;
/// Bytes of a trailer.
pub const COPY_TRAILER_LEN: usize = 128;

const MAX_NAME: usize = 64;
const HELD_LEN: usize = 16 + 16 + 32 + 8 + 1 + 16 + 16 + 32;

/// A restore point the receiving side holds, with the source point it is a copy of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldEntry {
    pub point: PointId,
    pub chain: PointId,
    pub root: Digest,
    pub created: i64,
    /// (source point, source chain, source root) of a re-chained copy.
    pub origin: Option<(PointId, PointId, Digest)>,
}

/// Everything of a restore point but its blocks; its map follows in `CopyMap` frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyBegin {
    pub job: String,
    pub header: Vec<u8>,
    pub trailer: Vec<u8>,
    pub meta: Vec<u8>,
}

/// The receiver's answer to a `CopyBegin` and its map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyPlanMsg {
    /// 0 held, 1 verbatim, 2 new chain, 3 re-chained incremental.
    pub mode: u8,
    /// Block numbers in the `CopyNeed` frames that follow.
    pub needed: u64,
    pub resumed_bytes: u64,
    pub local_bytes: u64,
}

/// A copy message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyMsg {
    /// Client: what do you hold of this job (copies and their origins)?
    Held { job: String },
    /// Server: a page of held points; `last` ends the list.
    HeldList { last: bool, points: Vec<HeldEntry> },
    /// Client (push) or server (answering `ReadHead`): a point's header, trailer, metadata.
    Begin(CopyBegin),
    /// Either: map entries of the point being described, in order.
    Map { entries: Vec<MapEntry> },
    /// Server: which blocks it needs; `needed` block numbers follow in `Need` frames.
    Plan(CopyPlanMsg),
    /// Server (push: the blocks it needs) or client (pull: the blocks it asks for).
    Need { blocks: Vec<u64> },
    /// Client (pull): send the stored bytes of `count` blocks of `point`, listed in the `Need`
    /// frames that follow; the server answers with `Block` frames and `RestoreEnd`.
    Read {
        job: String,
        point: PointId,
        count: u64,
    },
    /// Client (pull): describe `point` of `job` (`Begin` and `Map` frames answer).
    ReadHead { job: String, point: PointId },
}

impl CopyMsg {
    /// The message's type.
    pub fn ty(&self) -> MsgType {
        match self {
            CopyMsg::Held { .. } => MsgType::CopyHeld,
            CopyMsg::HeldList { .. } => MsgType::CopyHeldList,
            CopyMsg::Begin(_) => MsgType::CopyBegin,
            CopyMsg::Map { .. } => MsgType::CopyMap,
            CopyMsg::Plan(_) => MsgType::CopyPlan,
            CopyMsg::Need { .. } => MsgType::CopyNeed,
            CopyMsg::Read { .. } => MsgType::CopyRead,
            CopyMsg::ReadHead { .. } => MsgType::CopyReadHead,
        }
    }

    pub(crate) fn encode(&self, b: &mut Vec<u8>) {
        match self {
            CopyMsg::Held { job } => b.string(job, MAX_NAME),
            CopyMsg::HeldList { last, points } => {
                b.u8(u8::from(*last));
                b.u32(points.len() as u32);
                for p in points {
                    b.raw(&p.point.0);
                    b.raw(&p.chain.0);
                    b.raw(&p.root.0);
                    b.i64(p.created);
                    let (op, oc, or) =
                        p.origin
                            .unwrap_or((PointId::NONE, PointId::NONE, Digest([0; 32])));
                    b.u8(u8::from(p.origin.is_some()));
                    b.raw(&op.0);
                    b.raw(&oc.0);
                    b.raw(&or.0);
                }
            }
            CopyMsg::Begin(c) => {
                b.string(&c.job, MAX_NAME);
                b.bytes(&c.header);
                b.bytes(&c.trailer);
                b.bytes(&c.meta);
            }
            CopyMsg::Map { entries } => {
                b.u32(entries.len() as u32);
                for e in entries {
                    e.encode_into(b);
                }
            }
            CopyMsg::Plan(p) => {
                b.u8(p.mode);
                b.u64(p.needed);
                b.u64(p.resumed_bytes);
                b.u64(p.local_bytes);
            }
            CopyMsg::Need { blocks } => {
                b.u32(blocks.len() as u32);
                for x in blocks {
                    b.u64(*x);
                }
            }
            CopyMsg::Read { job, point, count } => {
                b.string(job, MAX_NAME);
                b.raw(&point.0);
                b.u64(*count);
            }
            CopyMsg::ReadHead { job, point } => {
                b.string(job, MAX_NAME);
                b.raw(&point.0);
            }
        }
    }

    pub(crate) fn decode(ty: MsgType, r: &mut Rd<'_>) -> Result<CopyMsg> {
        Ok(match ty {
            MsgType::CopyHeld => CopyMsg::Held {
                job: r.string(MAX_NAME)?,
            },
            MsgType::CopyHeldList => {
                let last = r.bool()?;
                let points = r.list(MAX_HELD_PER_FRAME, HELD_LEN, |r| {
                    let point = r.id()?;
                    let chain = r.id()?;
                    let root = r.digest()?;
                    let created = r.i64()?;
                    let has = r.bool()?;
                    let o = (r.id()?, r.id()?, r.digest()?);
                    Ok(HeldEntry {
                        point,
                        chain,
                        root,
                        created,
                        origin: has.then_some(o),
                    })
                })?;
                CopyMsg::HeldList { last, points }
            }
            MsgType::CopyBegin => {
                let job = r.string(MAX_NAME)?;
                let header = r.bytes(COPY_HEADER_LEN)?;
                let trailer = r.bytes(COPY_TRAILER_LEN)?;
                if header.len() != COPY_HEADER_LEN || trailer.len() != COPY_TRAILER_LEN {
                    return Err(r.bad("a copied header is 80 bytes and a trailer 128"));
                }
                let meta = r.bytes(MAX_COPY_META)?;
                CopyMsg::Begin(CopyBegin {
                    job,
                    header,
                    trailer,
                    meta,
                })
            }
            MsgType::CopyMap => {
                let entries = r.list(MAX_MAP_ENTRIES_PER_FRAME, ENTRY_LEN, |r| {
                    Ok(MapEntry::decode(r.take(ENTRY_LEN)?))
                })?;
                CopyMsg::Map { entries }
            }
            MsgType::CopyPlan => CopyMsg::Plan(CopyPlanMsg {
                mode: r.u8()?,
                needed: r.u64()?,
                resumed_bytes: r.u64()?,
                local_bytes: r.u64()?,
            }),
            MsgType::CopyNeed => {
                let blocks = r.list(MAX_NEED_PER_FRAME, 8, |r| r.u64())?;
                CopyMsg::Need { blocks }
            }
            MsgType::CopyRead => CopyMsg::Read {
                job: r.string(MAX_NAME)?,
                point: r.id()?,
                count: r.u64()?,
            },
            MsgType::CopyReadHead => CopyMsg::ReadHead {
                job: r.string(MAX_NAME)?,
                point: r.id()?,
            },
            _ => unreachable!("only copy types are decoded here"),
        })
    }
}

/// Largest payload of each copy type.
pub(crate) const LIM_HELD: u32 = 256;
pub(crate) const LIM_HELD_LIST: u32 = (5 + MAX_HELD_PER_FRAME * HELD_LEN) as u32;
pub(crate) const LIM_BEGIN: u32 =
    (2 + MAX_NAME + 4 + COPY_HEADER_LEN + 4 + COPY_TRAILER_LEN + 4 + MAX_COPY_META) as u32;
pub(crate) const LIM_MAP: u32 = (4 + MAX_MAP_ENTRIES_PER_FRAME * ENTRY_LEN) as u32;
pub(crate) const LIM_PLAN: u32 = 25;
pub(crate) const LIM_NEED: u32 = (4 + MAX_NEED_PER_FRAME * 8) as u32;
pub(crate) const LIM_READ: u32 = 2 + MAX_NAME as u32 + 16 + 8;
pub(crate) const LIM_READ_HEAD: u32 = 2 + MAX_NAME as u32 + 16;
