//! The read-only lock messages (types 0x80–0x8F): a client asks what the immutability
//! service's ledger says about one of its own jobs — when each sealed file was sealed and
//! until when it is protected — and the service's clock, for `bulwark dashboard`
//! (`docs/protocol.md`, "Locks"). Nothing here can change anything.

use bulwark_format::PointId;

use crate::codec::{Rd, Wr};
use crate::{MsgType, Result};

/// Ledger entries in one `Locks` frame.
pub const MAX_LOCKS_PER_FRAME: usize = 4096;
/// Longest clock alert carried.
pub const MAX_LOCK_ALERT: usize = 600;
/// Payload limit of `ListLocks`.
pub(crate) const LIM_LIST: u32 = 2 + MAX_NAME as u32;
/// Payload limit of `Locks`.
pub(crate) const LIM_PAGE: u32 =
    (4 + 8 + 8 + 1 + 2 + MAX_LOCK_ALERT + 4 + MAX_LOCKS_PER_FRAME * ENTRY) as u32;

const MAX_NAME: usize = 64;
const ENTRY: usize = 16 + 16 + 8 + 8 + 8 + 1;

/// The immutability service's clock as it reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockClock {
    pub trusted_unix: i64,
    pub wall_unix: i64,
    pub unlocks_frozen: bool,
    /// Empty when there is no alert.
    pub alert: String,
}

/// One sealed file of the job in the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEntry {
    pub point: PointId,
    pub chain: PointId,
    pub sealed_unix: i64,
    pub expiry_unix: i64,
    pub size: u64,
    /// 1 locked, 2 unlocked (expired), 3 deleted.
    pub state: u8,
}

impl LockEntry {
    /// The state's name, as the ledger spells it.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            1 => "locked",
            2 => "unlocked",
            3 => "deleted",
            _ => "unknown",
        }
    }
}

/// A page of the answer. Every page repeats `guarded` and `clock`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockPage {
    /// The last page.
    pub last: bool,
    /// An immutability service guards the repository.
    pub guarded: bool,
    /// Its clock, when it answered.
    pub clock: Option<LockClock>,
    pub entries: Vec<LockEntry>,
}

/// A lock message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockMsg {
    /// Client: the ledger entries of one of my jobs.
    List { job: String },
    /// Server: a page of them.
    Page(LockPage),
}

impl LockMsg {
    /// The message's type.
    pub fn ty(&self) -> MsgType {
        match self {
            LockMsg::List { .. } => MsgType::ListLocks,
            LockMsg::Page(_) => MsgType::Locks,
        }
    }

    pub(crate) fn encode(&self, b: &mut Vec<u8>) {
        match self {
            LockMsg::List { job } => b.string(job, MAX_NAME),
            LockMsg::Page(p) => {
                b.u8(u8::from(p.last)
                    | u8::from(p.guarded) << 1
                    | u8::from(p.clock.is_some()) << 2);
                if let Some(c) = &p.clock {
                    b.i64(c.trusted_unix);
                    b.i64(c.wall_unix);
                    b.u8(u8::from(c.unlocks_frozen));
                    b.string(&c.alert, MAX_LOCK_ALERT);
                }
                b.u32(p.entries.len() as u32);
                for e in &p.entries {
                    b.raw(&e.point.0);
                    b.raw(&e.chain.0);
                    b.i64(e.sealed_unix);
                    b.i64(e.expiry_unix);
                    b.u64(e.size);
                    b.u8(e.state);
                }
            }
        }
    }

    pub(crate) fn decode(ty: MsgType, r: &mut Rd<'_>) -> Result<LockMsg> {
        Ok(match ty {
            MsgType::ListLocks => LockMsg::List {
                job: r.string(MAX_NAME)?,
            },
            _ => {
                let flags = r.u8()?;
                if flags & !7 != 0 {
                    return Err(r.bad("unknown flags"));
                }
                let clock = if flags & 4 != 0 {
                    Some(LockClock {
                        trusted_unix: r.i64()?,
                        wall_unix: r.i64()?,
                        unlocks_frozen: r.bool()?,
                        alert: r.string(MAX_LOCK_ALERT)?,
                    })
                } else {
                    None
                };
                let entries = r.list(MAX_LOCKS_PER_FRAME, ENTRY, |r| {
                    let point = r.id()?;
                    let chain = r.id()?;
                    let sealed_unix = r.i64()?;
                    let expiry_unix = r.i64()?;
                    let size = r.u64()?;
                    let state = r.u8()?;
                    if !(1..=3).contains(&state) {
                        return Err(r.bad("unknown lock state"));
                    }
                    Ok(LockEntry {
                        point,
                        chain,
                        sealed_unix,
                        expiry_unix,
                        size,
                        state,
                    })
                })?;
                LockMsg::Page(LockPage {
                    last: flags & 1 != 0,
                    guarded: flags & 2 != 0,
                    clock,
                    entries,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{read_frame, write_msg, FrameBuf, Msg, FRAME_HEADER_LEN};

    fn page(n: usize) -> Msg<'static> {
        Msg::Locks(LockMsg::Page(LockPage {
            last: true,
            guarded: true,
            clock: Some(LockClock {
                trusted_unix: 1,
                wall_unix: 2,
                unlocks_frozen: false,
                alert: "é".repeat(MAX_LOCK_ALERT / 2),
            }),
            entries: (0..n)
                .map(|i| LockEntry {
                    point: PointId([i as u8; 16]),
                    chain: PointId([1; 16]),
                    sealed_unix: i as i64,
                    expiry_unix: i64::MAX,
                    size: u64::MAX,
                    state: 1 + (i % 3) as u8,
                })
                .collect(),
        }))
    }

    fn decode(bytes: &[u8]) -> Result<Msg<'static>> {
        let mut fb = FrameBuf::default();
        read_frame(&mut &bytes[..], &mut fb, |_| {})?;
        // Owned copy: the lock messages borrow nothing.
        fb.msg().map(|m| match m {
            Msg::Locks(l) => Msg::Locks(l),
            _ => panic!("not a lock message"),
        })
    }

    #[test]
    fn a_full_page_fits_its_limit_and_round_trips() {
        let m = page(MAX_LOCKS_PER_FRAME);
        let mut bytes = Vec::new();
        write_msg(&mut bytes, &m).unwrap();
        assert!(bytes.len() - FRAME_HEADER_LEN <= LIM_PAGE as usize);
        assert_eq!(decode(&bytes).unwrap(), m);
    }

    #[test]
    fn unknown_flags_and_states_are_refused() {
        let mut bytes = Vec::new();
        write_msg(&mut bytes, &page(1)).unwrap();
        let flags = FRAME_HEADER_LEN;
        let mut bad = bytes.clone();
        bad[flags] |= 8;
        assert!(decode(&bad).is_err(), "unknown flag bit");
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() = 4;
        assert!(decode(&bad).is_err(), "unknown state");
        let mut bad = bytes;
        bad.pop();
        assert!(decode(&bad).is_err(), "truncated");
    }
}
