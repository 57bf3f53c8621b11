//! The space report: what the restore points of each job and chain take on disk, from the
//! filesystem's extent map (`FIEMAP`), since `du` counts cloned blocks once per file.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bulwark_format::{PointId, PointKind};
use bulwark_immut_msg::{FileState, ImmutClient, Target};

use crate::{error_chain, now_unix, RepoError, Repository, Result};

/// Space taken by one restore-point file.
#[derive(Clone, Debug)]
pub struct FileSpace {
    pub path: PathBuf,
    pub point: PointId,
    pub kind: PointKind,
    /// Size of the file (what `du --apparent-size` counts).
    pub logical_bytes: u64,
    /// Bytes of the filesystem allocated to the file (what `du` counts).
    pub physical_bytes: u64,
    /// Of those, bytes whose extents are shared with other files (reflink).
    pub shared_bytes: u64,
    /// Protected until (unix seconds), when the immutability service has it locked.
    pub locked_until: Option<i64>,
}

/// Space taken by one chain.
#[derive(Clone, Debug)]
pub struct ChainSpace {
    pub chain: PointId,
    pub files: Vec<FileSpace>,
    pub logical_bytes: u64,
    /// Sum of the files' allocations (shared extents counted once per file).
    pub physical_bytes: u64,
    pub shared_bytes: u64,
    /// Physical bytes no other chain of the repository references: what removing this chain
    /// would free.
    pub exclusive_bytes: u64,
}

/// Space taken by one job.
#[derive(Clone, Debug)]
pub struct JobSpace {
    pub job: String,
    pub chains: Vec<ChainSpace>,
}

/// Bytes that stay locked at least until a date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockedUntil {
    /// The latest expiry of the files in this group (unix seconds); groups are per UTC day.
    pub until_unix: i64,
    /// Files whose protection ends that day.
    pub files: u64,
    /// Their logical size.
    pub logical_bytes: u64,
    /// Physical bytes that cannot be freed before that day: every extent of a file locked
    /// that long, counted once.
    pub physical_bytes: u64,
}

/// Whether the files are protected, and until when.
#[derive(Clone, Debug)]
pub enum Protection {
    /// No immutability service guards the repository.
    NotProtected,
    /// The service could not be asked; the text says why.
    Unknown(String),
    /// Locked bytes per future expiry day, soonest first.
    Locked(Vec<LockedUntil>),
}

/// The filesystem holding the repository.
#[derive(Clone, Debug)]
pub struct FsSpace {
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// The whole report of `bulwark-repo space`.
#[derive(Clone, Debug)]
pub struct SpaceReport {
    pub jobs: Vec<JobSpace>,
    pub logical_bytes: u64,
    /// Sum of every file's allocation: what `du` would report.
    pub allocated_bytes: u64,
    /// Bytes actually used on disk by the restore points: each extent counted once, however
    /// many files share it.
    pub physical_bytes: u64,
    /// Sum of every file's shared bytes.
    pub shared_bytes: u64,
    pub protection: Protection,
    pub filesystem: FsSpace,
}

/// One physical extent of one file, with the chain (index) that references it.
#[derive(Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    owner: usize,
}

/// Length of the union of spans, and for each owner the length only it references.
fn union_and_exclusive(mut spans: Vec<Span>, owners: usize) -> (u64, Vec<u64>) {
    let mut exclusive = vec![0u64; owners];
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(spans.len() * 2);
    for s in spans.drain(..) {
        if s.end > s.start {
            events.push((s.start, true, s.owner));
            events.push((s.end, false, s.owner));
        }
    }
    events.sort_unstable_by_key(|&(at, _, _)| at);
    let mut active: HashMap<usize, u32> = HashMap::new();
    let (mut total, mut prev) = (0u64, 0u64);
    for (at, open, owner) in events {
        if at > prev && !active.is_empty() {
            total += at - prev;
            if active.len() == 1 {
                let only = *active.keys().next().expect("one owner");
                exclusive[only] += at - prev;
            }
        }
        prev = at;
        if open {
            *active.entry(owner).or_default() += 1;
        } else if let Some(n) = active.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                active.remove(&owner);
            }
        }
    }
    (total, exclusive)
}

const DAY: i64 = 86_400;

/// A locked file: its expiry, logical size and physical extents (start, end).
type LockedFile = (i64, u64, Vec<(u64, u64)>);

/// Groups file expiries per UTC day, with the physical bytes locked at least that long.
fn locked_per_day(files: &[LockedFile], now: i64) -> Vec<LockedUntil> {
    let mut days: BTreeMap<i64, LockedUntil> = BTreeMap::new();
    for (until, logical, _) in files.iter().filter(|(u, _, _)| *u > now) {
        let g = days.entry(until.div_euclid(DAY)).or_insert(LockedUntil {
            until_unix: *until,
            files: 0,
            logical_bytes: 0,
            physical_bytes: 0,
        });
        g.until_unix = g.until_unix.max(*until);
        g.files += 1;
        g.logical_bytes += logical;
    }
    for g in days.values_mut() {
        let day = g.until_unix.div_euclid(DAY);
        let spans = files
            .iter()
            .filter(|(u, _, _)| u.div_euclid(DAY) >= day && *u > now)
            .flat_map(|(_, _, ex)| ex.iter())
            .map(|&(start, end)| Span {
                start,
                end,
                owner: 0,
            })
            .collect();
        g.physical_bytes = union_and_exclusive(spans, 1).0;
    }
    days.into_values().collect()
}

impl Repository {
    /// Measures every restore point's logical, physical and shared bytes from the extent
    /// map, per job and chain, and the bytes locked until each future date.
    pub fn space(&self) -> Result<SpaceReport> {
        let mut immut = match &self.config().immutd_socket {
            None => Err(Protection::NotProtected),
            Some(s) => ImmutClient::connect(s).map_err(|e| Protection::Unknown(error_chain(&e))),
        };
        let mut jobs = Vec::new();
        let mut spans = Vec::new();
        let mut chain_keys = Vec::new();
        let mut lock_input = Vec::new();
        let mut totals = (0u64, 0u64, 0u64);
        for job in self.jobs()? {
            let mut chains: BTreeMap<PointId, ChainSpace> = BTreeMap::new();
            for p in self.scan_job(&job)?.points {
                let f = std::fs::File::open(&p.path).map_err(RepoError::io(&p.path, "opening"))?;
                let extents = bulwark_sys::fiemap(&f)
                    .map_err(RepoError::io(&p.path, "reading the extent map (FIEMAP) of"))?;
                let chain = chains.entry(p.meta.chain).or_insert_with(|| ChainSpace {
                    chain: p.meta.chain,
                    files: vec![],
                    logical_bytes: 0,
                    physical_bytes: 0,
                    shared_bytes: 0,
                    exclusive_bytes: 0,
                });
                let owner = match chain_keys
                    .iter()
                    .position(|k| *k == (job.clone(), p.meta.chain))
                {
                    Some(i) => i,
                    None => {
                        chain_keys.push((job.clone(), p.meta.chain));
                        chain_keys.len() - 1
                    }
                };
                let mut fs = FileSpace {
                    path: p.path.clone(),
                    point: p.meta.point,
                    kind: p.meta.kind,
                    logical_bytes: p.file_size,
                    physical_bytes: 0,
                    shared_bytes: 0,
                    locked_until: None,
                };
                let mut mine = Vec::new();
                // Extents whose place is not known yet have no physical address to count.
                for e in extents
                    .iter()
                    .filter(|e| e.flags & bulwark_sys::FIEMAP_EXTENT_UNKNOWN == 0)
                {
                    fs.physical_bytes += e.length;
                    if e.is_shared() {
                        fs.shared_bytes += e.length;
                    }
                    mine.push((e.physical, e.physical + e.length));
                    spans.push(Span {
                        start: e.physical,
                        end: e.physical + e.length,
                        owner,
                    });
                }
                if let Ok(c) = immut.as_mut() {
                    match c.query(Target::Point(p.meta.point)) {
                        Ok(info) if info.state == FileState::Locked => {
                            fs.locked_until = Some(info.expiry_unix);
                            lock_input.push((info.expiry_unix, fs.logical_bytes, mine));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            immut = Err(Protection::Unknown(format!(
                                "{}: {}",
                                p.path.display(),
                                error_chain(&e)
                            )))
                        }
                    }
                }
                chain.logical_bytes += fs.logical_bytes;
                chain.physical_bytes += fs.physical_bytes;
                chain.shared_bytes += fs.shared_bytes;
                totals.0 += fs.logical_bytes;
                totals.1 += fs.physical_bytes;
                totals.2 += fs.shared_bytes;
                chain.files.push(fs);
            }
            jobs.push(JobSpace {
                job,
                chains: chains.into_values().collect(),
            });
        }
        let (physical, exclusive) = union_and_exclusive(spans, chain_keys.len());
        for j in &mut jobs {
            for c in &mut j.chains {
                if let Some(i) = chain_keys
                    .iter()
                    .position(|k| k.0 == j.job && k.1 == c.chain)
                {
                    c.exclusive_bytes = exclusive[i];
                }
            }
        }
        let protection = match immut {
            Ok(_) => Protection::Locked(locked_per_day(&lock_input, now_unix().0)),
            Err(p) => p,
        };
        let st = bulwark_sys::statvfs(self.root())
            .map_err(RepoError::io(self.root(), "reading free space of"))?;
        Ok(SpaceReport {
            jobs,
            logical_bytes: totals.0,
            allocated_bytes: totals.1,
            physical_bytes: physical,
            shared_bytes: totals.2,
            protection,
            filesystem: FsSpace {
                name: crate::filesystem_name(self.root()),
                total_bytes: st.blocks * st.frsize,
                free_bytes: st.blocks_available * st.frsize,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: u64, end: u64, owner: usize) -> Span {
        Span { start, end, owner }
    }

    #[test]
    fn union_counts_overlaps_once_and_exclusive_only_where_one_owner() {
        // Owner 0: [0,100) and [200,300); owner 1: [50,150) and a clone of [200,300).
        let spans = vec![
            span(0, 100, 0),
            span(200, 300, 0),
            span(50, 150, 1),
            span(200, 300, 1),
        ];
        let (total, ex) = union_and_exclusive(spans, 2);
        assert_eq!(total, 250);
        assert_eq!(ex, vec![50, 50]);
    }

    #[test]
    fn the_same_owner_twice_is_still_exclusive() {
        let (total, ex) = union_and_exclusive(vec![span(0, 10, 0), span(0, 10, 0)], 1);
        assert_eq!((total, ex), (10, vec![10]));
        let (total, ex) = union_and_exclusive(vec![], 1);
        assert_eq!((total, ex), (0, vec![0]));
    }

    #[test]
    fn locked_bytes_group_per_day_and_count_longer_locks_too() {
        let now = 100 * DAY;
        let files = vec![
            (now + DAY + 5, 10, vec![(0, 4096)]),
            (now + DAY + 9, 20, vec![(0, 4096), (8192, 12288)]),
            (now + 7 * DAY, 30, vec![(8192, 16384)]),
            (now - 1, 40, vec![(100_000, 200_000)]),
        ];
        let g = locked_per_day(&files, now);
        assert_eq!(
            g,
            vec![
                LockedUntil {
                    until_unix: now + DAY + 9,
                    files: 2,
                    logical_bytes: 30,
                    physical_bytes: 4096 + 8192,
                },
                LockedUntil {
                    until_unix: now + 7 * DAY,
                    files: 1,
                    logical_bytes: 30,
                    physical_bytes: 8192,
                },
            ]
        );
    }
}
