//! The next restore point of a job: an incremental on the newest point, or a new chain with an
//! active full, and its block size. A pure function of the request and of what the newest
//! point offers as a parent; the local engine and the transport service both use it, so a
//! local and a network backup of the same job decide the same way.
//!
//! Rules, in the order they are applied:
//! 1. **Forced** — `--full` (`force_full`) starts a new chain; the newest point is not read.
//! 2. **New job** — a job without restore points starts its first chain.
//! 3. **Damaged** — a newest point that cannot be read as a parent starts a new chain (verify
//!    names it; the damaged point stays readable where its blocks are good), and so does a
//!    current chain in which the last verify found damage (`health/<job>.damaged`): an
//!    incremental would reference its bad blocks and be unrestorable too.
//! 4. **Disk size** — a source whose size differs from the chain's disk starts a new chain.
//! 5. **Block size** — a requested block size that differs from the chain's starts a new chain.
//! 6. Otherwise an **incremental** on the newest point, with the chain's block size.
//!
//! A new chain uses the requested block size, or [`DEFAULT_BLOCK_SIZE`].

use std::fmt;
use std::ops::RangeInclusive;

use crate::{error_chain, ParentMap, Repository, Result};

/// Block size used when a new chain does not say: see `docs/performance.md` for the
/// measurements behind it.
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;
/// Smallest block size a client chooses for a new chain.
pub const MIN_BLOCK_SIZE: u32 = 64 << 10;
/// Largest block size a client chooses for a new chain (and the largest the network carries).
pub const MAX_BLOCK_SIZE: u32 = 4 << 20;
// What a client chooses is a block size the format allows.
const _: () = assert!(
    MIN_BLOCK_SIZE >= bulwark_format::MIN_BLOCK_SIZE
        && MAX_BLOCK_SIZE <= bulwark_format::MAX_BLOCK_SIZE
);
/// zstd level used when none is given.
pub const DEFAULT_COMPRESSION: i32 = 1;
/// zstd levels a backup may ask for: -7 to -1 (faster), 1 to 19; 0 stores blocks uncompressed.
pub const COMPRESSION_LEVELS: RangeInclusive<i32> = -7..=19;

/// True when a client may choose `block_size` for a new chain: a power of two from
/// [`MIN_BLOCK_SIZE`] to [`MAX_BLOCK_SIZE`].
pub fn block_size_choosable(block_size: u32) -> bool {
    (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) && block_size.is_power_of_two()
}

/// True when `level` is one of [`COMPRESSION_LEVELS`].
pub fn compression_level_ok(level: i32) -> bool {
    COMPRESSION_LEVELS.contains(&level)
}

/// What a backup asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanRequest {
    /// Size of the source in bytes.
    pub disk_size: u64,
    /// Block size of a new chain; `None`: the chain's, or the default for a new one.
    pub block_size: Option<u32>,
    /// Start a new chain even when the newest point could be a parent.
    pub force_full: bool,
}

/// What the job's newest restore point offers as a parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Newest {
    /// The job has no restore point (or it was not read because the full is forced).
    None,
    /// The newest point cannot be read as a parent: why.
    Damaged(String),
    /// The newest point reads, but the last verify found damage in its chain: what it found.
    VerifyFound(String),
    /// The newest point's chain.
    Chain { disk_size: u64, block_size: u32 },
}

/// Why the next point is what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// An active full because it was asked for.
    Forced,
    /// An active full because the job has no restore point yet.
    NewJob,
    /// An active full because the newest point is damaged (the error, on one line).
    Damaged(String),
    /// An active full because the last verify found damage in the current chain.
    VerifyFound(String),
    /// An active full because the source's size differs from the chain's disk.
    DiskSize { source: u64, chain: u64 },
    /// An active full because the requested block size differs from the chain's.
    BlockSize { requested: u32, chain: u32 },
    /// An incremental on the newest point.
    Incremental,
}

impl Reason {
    /// The reason a backup reports for a full although the job has restore points (the
    /// `full_reason` users and scripts see); `None` for an incremental, a first or a forced full.
    pub fn full_reason(&self) -> Option<String> {
        match self {
            Reason::Forced | Reason::NewJob | Reason::Incremental => None,
            Reason::Damaged(why) => Some(format!(
                "the newest restore point is damaged ({why}); starting a new chain"
            )),
            Reason::VerifyFound(what) => Some(format!("{what}; starting a new chain")),
            Reason::DiskSize { source, chain } => Some(format!(
                "the source is {source} bytes but the chain's disk is {chain} bytes; starting a new chain"
            )),
            Reason::BlockSize { requested, chain } => Some(format!(
                "block size {} KiB differs from the chain's {} KiB; starting a new chain",
                requested / 1024,
                chain / 1024
            )),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Incremental => f.write_str("incremental on the newest restore point"),
            Reason::Forced => f.write_str("active full because a full was asked for"),
            Reason::NewJob => f.write_str("active full because the job has no restore point"),
            r => write!(
                f,
                "active full because {}",
                r.full_reason().unwrap_or_default()
            ),
        }
    }
}

/// The decision: the next point's block size and why it is an incremental or a new chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub block_size: u32,
    pub reason: Reason,
}

impl Plan {
    /// True when the next point is an incremental on the newest point.
    pub fn is_incremental(&self) -> bool {
        self.reason == Reason::Incremental
    }
}

/// Decides the next restore point of a job (the rules are in the module doc).
pub fn plan_next_point(req: &PlanRequest, newest: &Newest) -> Plan {
    let new_chain = |reason| Plan {
        block_size: req.block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
        reason,
    };
    if req.force_full {
        return new_chain(Reason::Forced);
    }
    let (disk_size, block_size) = match newest {
        Newest::None => return new_chain(Reason::NewJob),
        Newest::Damaged(why) => return new_chain(Reason::Damaged(why.clone())),
        Newest::VerifyFound(what) => return new_chain(Reason::VerifyFound(what.clone())),
        Newest::Chain {
            disk_size,
            block_size,
        } => (*disk_size, *block_size),
    };
    if disk_size != req.disk_size {
        return new_chain(Reason::DiskSize {
            source: req.disk_size,
            chain: disk_size,
        });
    }
    match req.block_size {
        Some(bs) if bs != block_size => new_chain(Reason::BlockSize {
            requested: bs,
            chain: block_size,
        }),
        _ => Plan {
            block_size,
            reason: Reason::Incremental,
        },
    }
}

/// A plan and, for an incremental, the parent's map.
pub struct NextPoint {
    pub plan: Plan,
    pub parent: Option<ParentMap>,
}

impl Repository {
    /// Reads what the newest point of `job` offers as a parent (not when the full is forced)
    /// and plans the next point with [`plan_next_point`]. A newest point that is damaged
    /// starts a new chain; any other error reading it is returned.
    pub fn next_point(&self, job: &str, req: &PlanRequest) -> Result<NextPoint> {
        let mut parent = None;
        let newest = if req.force_full {
            Newest::None
        } else {
            match self.parent_map(job) {
                Ok(None) => Newest::None,
                Ok(Some(p)) => match self.chain_damage(job)? {
                    Some(what) => Newest::VerifyFound(what),
                    None => {
                        let chain = Newest::Chain {
                            disk_size: p.disk_size,
                            block_size: p.block_size,
                        };
                        parent = Some(p);
                        chain
                    }
                },
                Err(e) if e.is_damage() => Newest::Damaged(error_chain(&e)),
                Err(e) => return Err(e),
            }
        };
        let plan = plan_next_point(req, &newest);
        if !plan.is_incremental() {
            parent = None;
        }
        Ok(NextPoint { plan, parent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn req(disk_size: u64, block_size: Option<u32>, force_full: bool) -> PlanRequest {
        PlanRequest {
            disk_size,
            block_size,
            force_full,
        }
    }

    fn chain(disk_size: u64, block_size: u32) -> Newest {
        Newest::Chain {
            disk_size,
            block_size,
        }
    }

    #[test]
    fn a_forced_full_starts_a_new_chain_whatever_the_newest_point_offers() {
        for newest in [
            Newest::None,
            Newest::Damaged("bad".into()),
            chain(GIB, 1 << 20),
            chain(2 * GIB, 256 << 10),
        ] {
            let p = plan_next_point(&req(GIB, None, true), &newest);
            assert_eq!(p.reason, Reason::Forced, "{newest:?}");
            assert_eq!(p.block_size, DEFAULT_BLOCK_SIZE);
            assert!(!p.is_incremental());
            assert_eq!(p.reason.full_reason(), None);
            let p = plan_next_point(&req(GIB, Some(256 << 10), true), &newest);
            assert_eq!((p.reason, p.block_size), (Reason::Forced, 256 << 10));
        }
    }

    #[test]
    fn a_new_job_starts_its_first_chain_with_the_requested_or_default_block_size() {
        let p = plan_next_point(&req(GIB, None, false), &Newest::None);
        assert_eq!(p.reason, Reason::NewJob);
        assert_eq!(p.block_size, DEFAULT_BLOCK_SIZE);
        assert_eq!(p.reason.full_reason(), None);
        let p = plan_next_point(&req(GIB, Some(64 << 10), false), &Newest::None);
        assert_eq!((p.reason, p.block_size), (Reason::NewJob, 64 << 10));
    }

    #[test]
    fn a_damaged_newest_point_starts_a_new_chain_and_says_why() {
        let newest = Newest::Damaged("point 00ab: trailer checksum mismatch".into());
        let p = plan_next_point(&req(GIB, None, false), &newest);
        assert_eq!(
            p.reason,
            Reason::Damaged("point 00ab: trailer checksum mismatch".into())
        );
        assert_eq!(p.block_size, DEFAULT_BLOCK_SIZE);
        assert_eq!(
            p.reason.full_reason().unwrap(),
            "the newest restore point is damaged (point 00ab: trailer checksum mismatch); starting a new chain"
        );
        let p = plan_next_point(&req(GIB, Some(2 << 20), false), &newest);
        assert_eq!(p.block_size, 2 << 20);
    }

    #[test]
    fn a_source_of_another_size_starts_a_new_chain_even_with_the_chains_block_size() {
        let p = plan_next_point(&req(GIB + 4096, None, false), &chain(GIB, 256 << 10));
        assert_eq!(
            p.reason,
            Reason::DiskSize {
                source: GIB + 4096,
                chain: GIB
            }
        );
        // A new chain takes the default, not the old chain's block size.
        assert_eq!(p.block_size, DEFAULT_BLOCK_SIZE);
        assert_eq!(
            p.reason.full_reason().unwrap(),
            "the source is 1073745920 bytes but the chain's disk is 1073741824 bytes; starting a new chain"
        );
        // The disk size is checked before the block size.
        let p = plan_next_point(&req(GIB / 2, Some(4 << 20), false), &chain(GIB, 1 << 20));
        assert!(matches!(p.reason, Reason::DiskSize { .. }));
        assert_eq!(p.block_size, 4 << 20);
    }

    #[test]
    fn a_different_requested_block_size_starts_a_new_chain() {
        let p = plan_next_point(&req(GIB, Some(256 << 10), false), &chain(GIB, 1 << 20));
        assert_eq!(
            p.reason,
            Reason::BlockSize {
                requested: 256 << 10,
                chain: 1 << 20
            }
        );
        assert_eq!(p.block_size, 256 << 10);
        assert_eq!(
            p.reason.full_reason().unwrap(),
            "block size 256 KiB differs from the chain's 1024 KiB; starting a new chain"
        );
    }

    #[test]
    fn otherwise_an_incremental_keeps_the_chains_block_size() {
        // Also a chain whose block size is outside what a client chooses now (8 MiB, written
        // locally on the repository host): the server refuses it for the network, not the plan.
        for bs in [64 << 10, 1 << 20, 4 << 20, 8 << 20] {
            for asked in [None, Some(bs)] {
                let p = plan_next_point(&req(GIB, asked, false), &chain(GIB, bs));
                assert_eq!(p.reason, Reason::Incremental);
                assert_eq!(p.block_size, bs);
                assert!(p.is_incremental());
                assert_eq!(p.reason.full_reason(), None);
            }
        }
        // An empty disk with an empty chain is still one chain.
        let p = plan_next_point(&req(0, None, false), &chain(0, 1 << 20));
        assert_eq!(p.reason, Reason::Incremental);
    }

    #[test]
    fn every_reason_reads_as_what_the_point_is_and_why() {
        let all = [
            Reason::Forced,
            Reason::NewJob,
            Reason::Damaged("x".into()),
            Reason::DiskSize {
                source: 1,
                chain: 2,
            },
            Reason::BlockSize {
                requested: 1 << 20,
                chain: 2 << 20,
            },
            Reason::Incremental,
        ];
        for r in all {
            let text = r.to_string();
            if r == Reason::Incremental {
                assert_eq!(text, "incremental on the newest restore point");
            } else {
                assert!(text.starts_with("active full because "), "{text}");
            }
            if let Some(why) = r.full_reason() {
                assert!(text.ends_with(&why), "{text}");
            }
        }
    }

    #[test]
    fn limits_are_those_a_client_may_choose() {
        assert!(block_size_choosable(DEFAULT_BLOCK_SIZE));
        assert!(block_size_choosable(MIN_BLOCK_SIZE) && block_size_choosable(MAX_BLOCK_SIZE));
        for bad in [
            0,
            4096,
            32 << 10,
            (64 << 10) + 1,
            3 << 20,
            8 << 20,
            u32::MAX,
        ] {
            assert!(!block_size_choosable(bad), "{bad}");
        }
        for ok in [-7, -1, 0, DEFAULT_COMPRESSION, 19] {
            assert!(compression_level_ok(ok), "{ok}");
        }
        for bad in [-8, 20, i32::MIN, i32::MAX] {
            assert!(!compression_level_ok(bad), "{bad}");
        }
    }
}
