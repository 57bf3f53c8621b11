//! Retention: which restore points to keep, and why. A pure function of the points, the
//! job's policy, the immutability expiries and `now`; applying the plan is separate.
//!
//! Rules, in the order they are applied:
//! 1. **Time floor** — every point younger than `keep_days` is kept.
//! 2. **Count** — the newest `keep_points` points are kept (1 and 2 combine: whichever keeps
//!    more). A flood of new points therefore cannot push out a point younger than the floor,
//!    and the repository caps how many points a job may create per day.
//! 3. **GFS** — the first full of each of the last `weekly` weeks, `monthly` months and
//!    `yearly` years that have a full is kept.
//! 4. **Immutability** — a point whose protection has not expired is kept.
//! 5. **Newest** — a job's newest restore point is always kept, whatever the policy says:
//!    backups that stopped (a client down for longer than `keep_days`) never lose their last
//!    restore point to retention.
//! 6. **Dependencies** — a kept point keeps every earlier point of its chain, and a chain is
//!    removed only as a whole: one kept point keeps the whole chain.

use std::collections::{BTreeMap, HashMap, HashSet};

use bulwark_format::{PointId, PointKind};
use bulwark_time::{Days, UnixTime, SECS_PER_DAY};
use serde::{Deserialize, Serialize};

/// A job's retention policy, set on the repository (never by a client).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Keep every restore point younger than this many days.
    pub keep_days: u32,
    /// Keep at least this many newest restore points.
    pub keep_points: u32,
    /// GFS: weekly fulls to keep.
    #[serde(default)]
    pub weekly: u32,
    /// GFS: monthly fulls to keep.
    #[serde(default)]
    pub monthly: u32,
    /// GFS: yearly fulls to keep.
    #[serde(default)]
    pub yearly: u32,
}

/// What the planner needs to know of a restore point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointFacts {
    pub point: PointId,
    pub chain: PointId,
    pub kind: PointKind,
    /// Creation time by the repository's clock (unix seconds).
    pub created: i64,
    /// End of immutability (unix seconds), when the immutability service guards the file.
    pub expiry: Option<i64>,
}

/// Why a restore point is kept.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeepReason {
    /// Younger than the policy's days.
    WithinDays(u32),
    /// Among the policy's newest points.
    WithinCount(u32),
    /// First full of a GFS week (`YYYY-Www` of its Monday).
    GfsWeekly(String),
    /// First full of a GFS month (`YYYY-MM`).
    GfsMonthly(String),
    /// First full of a GFS year.
    GfsYearly(i64),
    /// Still immutable until this time.
    Immutable(i64),
    /// The job's newest restore point, kept whatever the policy says.
    Newest,
    /// A later kept point of the chain depends on it.
    ChainDependency(PointId),
    /// Another point of its chain is kept, and chains are removed only as a whole.
    ChainKept,
}

impl std::fmt::Display for KeepReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepReason::WithinDays(d) => write!(f, "within retention ({d} days)"),
            KeepReason::WithinCount(n) => write!(f, "within retention (newest {n} points)"),
            KeepReason::GfsWeekly(w) => write!(f, "GFS weekly full of {w}"),
            KeepReason::GfsMonthly(m) => write!(f, "GFS monthly full of {m}"),
            KeepReason::GfsYearly(y) => write!(f, "GFS yearly full of {y}"),
            KeepReason::Immutable(t) => write!(f, "still immutable until {}", crate::utc(*t)),
            KeepReason::Newest => write!(f, "the job's newest restore point (always kept)"),
            KeepReason::ChainDependency(p) => write!(f, "chain dependency of {p}"),
            KeepReason::ChainKept => write!(f, "its chain is kept (chains are removed as a whole)"),
        }
    }
}

/// The planner's verdict on one restore point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub point: PointId,
    pub chain: PointId,
    /// Empty: remove.
    pub reasons: Vec<KeepReason>,
}

impl Mark {
    /// True when the point is kept.
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

const DAY: i64 = SECS_PER_DAY;

/// The Monday (days since epoch) of the week holding `t`.
fn week_of(t: i64) -> i64 {
    // 1970-01-01 was a Thursday: shifting by 3 makes weeks start on Monday.
    let days = UnixTime(t).day().0;
    days - (days + 3).rem_euclid(7)
}

/// The GFS period keys of a time: week (its Monday), month, year.
fn periods(t: i64) -> (i64, (i64, u32), i64) {
    let d = UnixTime(t).date();
    (week_of(t), (d.year, d.month), d.year)
}

fn add(reasons: &mut HashMap<PointId, Vec<KeepReason>>, p: PointId, r: KeepReason) {
    reasons.entry(p).or_default().push(r);
}

/// Marks every point keep (with reasons) or remove. `points` may be in any order.
pub fn plan(points: &[PointFacts], policy: &Policy, now: i64) -> Vec<Mark> {
    let mut order: Vec<&PointFacts> = points.iter().collect();
    order.sort_by_key(|p| (p.created, p.point));
    let mut reasons: HashMap<PointId, Vec<KeepReason>> = HashMap::new();

    let floor = now - i64::from(policy.keep_days) * DAY;
    for p in &order {
        if policy.keep_days > 0 && p.created > floor {
            add(
                &mut reasons,
                p.point,
                KeepReason::WithinDays(policy.keep_days),
            );
        }
    }
    for p in order.iter().rev().take(policy.keep_points as usize) {
        add(
            &mut reasons,
            p.point,
            KeepReason::WithinCount(policy.keep_points),
        );
    }
    // GFS: the first full of each period, for the most recent periods that have one.
    let fulls: Vec<&&PointFacts> = order.iter().filter(|p| p.kind.is_full()).collect();
    let mut weeks: BTreeMap<i64, PointId> = BTreeMap::new();
    let mut months: BTreeMap<(i64, u32), PointId> = BTreeMap::new();
    let mut years: BTreeMap<i64, PointId> = BTreeMap::new();
    for p in &fulls {
        let (w, m, y) = periods(p.created);
        weeks.entry(w).or_insert(p.point);
        months.entry(m).or_insert(p.point);
        years.entry(y).or_insert(p.point);
    }
    for (&w, &p) in weeks.iter().rev().take(policy.weekly as usize) {
        add(
            &mut reasons,
            p,
            KeepReason::GfsWeekly(format!("the week of {}", Days(w).date())),
        );
    }
    for (&(y, m), &p) in months.iter().rev().take(policy.monthly as usize) {
        add(
            &mut reasons,
            p,
            KeepReason::GfsMonthly(format!("{y:04}-{m:02}")),
        );
    }
    for (&y, &p) in years.iter().rev().take(policy.yearly as usize) {
        add(&mut reasons, p, KeepReason::GfsYearly(y));
    }
    for p in &order {
        if let Some(e) = p.expiry.filter(|&e| e > now) {
            add(&mut reasons, p.point, KeepReason::Immutable(e));
        }
    }
    if let Some(newest) = order.last() {
        add(&mut reasons, newest.point, KeepReason::Newest);
    }
    // Dependencies: each kept point keeps the earlier points of its chain.
    let mut by_chain: BTreeMap<PointId, Vec<&PointFacts>> = BTreeMap::new();
    for p in &order {
        by_chain.entry(p.chain).or_default().push(p);
    }
    for chain in by_chain.values() {
        if let Some(last_kept) = chain.iter().rposition(|p| reasons.contains_key(&p.point)) {
            let newest = chain[last_kept].point;
            for p in &chain[..last_kept] {
                add(&mut reasons, p.point, KeepReason::ChainDependency(newest));
            }
            for p in &chain[last_kept + 1..] {
                add(&mut reasons, p.point, KeepReason::ChainKept);
            }
        }
    }
    let kept: HashSet<PointId> = reasons.keys().copied().collect();
    debug_assert!(by_chain
        .values()
        .all(|c| c.iter().all(|p| kept.contains(&p.point))
            || c.iter().all(|p| !kept.contains(&p.point))));
    order
        .iter()
        .map(|p| {
            let mut r = reasons.remove(&p.point).unwrap_or_default();
            r.sort();
            r.dedup();
            Mark {
                point: p.point,
                chain: p.chain,
                reasons: r,
            }
        })
        .collect()
}

/// The retention class a new full gets: the longest GFS period for which it is the first
/// full, given the fulls already in the job. Decided by the repository when sealing.
pub fn gfs_class_for_new_full(
    existing_fulls: &[i64],
    created: i64,
    policy: &Policy,
) -> bulwark_format::RetentionClass {
    use bulwark_format::RetentionClass as C;
    let (w, m, y) = periods(created);
    let first = |key: &dyn Fn(i64) -> bool| !existing_fulls.iter().any(|&t| key(t));
    if policy.yearly > 0 && first(&|t| periods(t).2 == y) {
        C::Yearly
    } else if policy.monthly > 0 && first(&|t| periods(t).1 == m) {
        C::Monthly
    } else if policy.weekly > 0 && first(&|t| periods(t).0 == w) {
        C::Weekly
    } else {
        C::Regular
    }
}

/// How long a GFS full of `class` must be kept (and protected) after its creation.
pub fn gfs_lifetime_secs(class: bulwark_format::RetentionClass, policy: &Policy) -> i64 {
    use bulwark_format::RetentionClass as C;
    match class {
        C::Regular => 0,
        C::Weekly => i64::from(policy.weekly) * 7 * DAY,
        C::Monthly => i64::from(policy.monthly) * 31 * DAY,
        C::Yearly => i64::from(policy.yearly) * 366 * DAY,
    }
}
