//! The report page of a Bulwark repository: a pure model (jobs, chains, restore points, the
//! locks the immutability service's ledger holds, space, alerts, the host audit) and one
//! function that renders it as a single self-contained HTML page.
//!
//! The page loads nothing: its CSS is inline, its charts are inline SVG drawn here, and it
//! reads completely without JavaScript (every date is printed in UTC inside a
//! `<time datetime>`; a few inline lines of script only rewrite those dates in the viewer's
//! time zone, keeping UTC in the hover text). Every string from the model is escaped.
//! Rendering is a pure function of the model, including "now", so it is tested without a
//! repository.

mod chart;
mod html;
mod page;

pub use html::{escape, human_bytes, iso_utc};
pub use page::render;

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// Everything the page shows.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// What the page is about: the repository folder, or the transport service's address.
    pub title: String,
    /// Where the figures come from, e.g. "bulwark-repo report on backup1" or
    /// "bulwark dashboard, client vm-host-1 of repo1:6162".
    pub source: String,
    /// "Now" of the page (unix seconds): the today mark and the 7/30-day horizons.
    pub generated_unix: i64,
    /// The repository's immutability period, when known.
    pub immutable_days: Option<u32>,
    /// Reload the page every so many seconds (the live dashboard); `None` for a file.
    pub refresh_secs: Option<u32>,
    pub jobs: Vec<Job>,
    /// Space figures; `None` where they cannot be seen (the dashboard of one client).
    pub space: Option<Space>,
    /// The immutability service's clock; `None` where it cannot be asked.
    pub clock: Option<Clock>,
    pub alerts: Vec<Alert>,
    /// The host audit (`bulwark-repo audit`); empty where it was not run.
    pub audit: Vec<AuditFinding>,
    /// Short notes on what this page cannot show, and why (e.g. no ledger through the network).
    pub notes: Vec<String>,
}

/// One job (one protected machine or disk).
#[derive(Clone, Debug, Default)]
pub struct Job {
    pub name: String,
    /// Oldest chain first.
    pub chains: Vec<Chain>,
    pub verify: Verify,
}

/// What the last verify of a job found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Verify {
    /// No verify result is known to this page.
    #[default]
    Unknown,
    /// Every stored block was re-read at `at_unix` and is good.
    Clean { at_unix: i64 },
    /// Verify at `at_unix` found damaged restore points.
    Damaged { at_unix: Option<i64>, points: u64 },
}

/// One chain: a full and its incrementals.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    /// The chain id (hex).
    pub id: String,
    /// Oldest first.
    pub points: Vec<Point>,
}

/// The GFS class of a restore point, which decides how long it is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gfs {
    #[default]
    Regular,
    Weekly,
    Monthly,
    Yearly,
}

impl Gfs {
    /// The name used on the page and in CSS classes.
    pub fn as_str(self) -> &'static str {
        match self {
            Gfs::Regular => "regular",
            Gfs::Weekly => "weekly",
            Gfs::Monthly => "monthly",
            Gfs::Yearly => "yearly",
        }
    }
}

/// One restore point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Point {
    /// The point id (hex).
    pub id: String,
    /// "full", "incremental" or "synthetic full".
    pub kind: String,
    pub class: Gfs,
    pub created_unix: i64,
    pub disk_bytes: u64,
    /// Size of the restore-point file.
    pub file_bytes: u64,
    /// Bytes of new data this point stored.
    pub new_bytes: u64,
    /// Its sealed file as the immutability service's ledger has it.
    pub lock: Option<Lock>,
    /// Verify found this point damaged.
    pub damaged: bool,
    /// When a verify last re-read this point, if known.
    pub verified_unix: Option<i64>,
}

/// A sealed file in the immutability service's ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lock {
    pub sealed_unix: i64,
    pub expiry_unix: i64,
    /// The ledger's state ("immutable", "expired", …).
    pub state: String,
}

/// Space of the repository's filesystem and restore points.
#[derive(Clone, Debug, Default)]
pub struct Space {
    pub filesystem: String,
    pub fs_total_bytes: u64,
    pub fs_free_bytes: u64,
    /// Sum of the files' sizes.
    pub logical_bytes: u64,
    /// Sum of every file's allocation (what `du` counts).
    pub allocated_bytes: u64,
    /// Each extent counted once.
    pub physical_bytes: u64,
    /// Bytes of extents shared with other files (block cloning).
    pub shared_bytes: u64,
    /// Bytes locked until each future date, soonest first.
    pub locked: Vec<LockedDay>,
    /// The most bytes the immutability service lets be locked, when known.
    pub locked_cap_bytes: Option<u64>,
    /// Bytes the immutability service says are locked now.
    pub locked_now_bytes: Option<u64>,
}

/// Bytes that stay locked at least until a date.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockedDay {
    pub until_unix: i64,
    pub files: u64,
    pub logical_bytes: u64,
    /// Physical bytes that cannot be freed before then.
    pub physical_bytes: u64,
}

/// The immutability service's trusted clock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    pub trusted_unix: i64,
    pub wall_unix: i64,
    pub unlocks_frozen: bool,
    /// The service's alert text, empty when all is well.
    pub alert: String,
}

/// How bad an alert or an audit finding is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    #[default]
    Ok,
    Warn,
    Fail,
}

impl Level {
    /// `PASS`, `WARN` or `FAIL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "PASS",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// Something that needs the administrator's attention.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Alert {
    pub level: Level,
    /// A short kind: "clock", "unsealed", "damage", "tier", "service", …
    pub kind: String,
    /// What happened and what to do.
    pub text: String,
}

/// One check of the host audit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFinding {
    pub level: Level,
    pub check: String,
    pub detail: String,
}

/// A sealed file becoming deletable within a horizon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletable<'a> {
    pub job: &'a str,
    pub chain: &'a str,
    pub point: &'a Point,
    pub expiry_unix: i64,
}

impl Report {
    /// Every point with a ledger entry, as (job, chain, point, lock).
    pub fn sealed(&self) -> impl Iterator<Item = (&Job, &Chain, &Point, &Lock)> {
        self.jobs.iter().flat_map(|j| {
            j.chains.iter().flat_map(move |c| {
                c.points
                    .iter()
                    .filter_map(move |p| p.lock.as_ref().map(|l| (j, c, p, l)))
            })
        })
    }

    /// Sealed files whose protection ends after now and within `days`, soonest first.
    pub fn deletable_within(&self, days: i64) -> Vec<Deletable<'_>> {
        let now = self.generated_unix;
        let end = now.saturating_add(days.saturating_mul(DAY));
        let mut v: Vec<_> = self
            .sealed()
            .filter(|(_, _, _, l)| l.expiry_unix > now && l.expiry_unix <= end)
            .map(|(j, c, p, l)| Deletable {
                job: &j.name,
                chain: &c.id,
                point: p,
                expiry_unix: l.expiry_unix,
            })
            .collect();
        v.sort_by_key(|d| d.expiry_unix);
        v
    }

    /// The worst level among the alerts and audit findings.
    pub fn worst(&self) -> Level {
        self.alerts
            .iter()
            .map(|a| a.level)
            .chain(self.audit.iter().map(|f| f.level))
            .max()
            .unwrap_or(Level::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(id: &str, sealed: i64, expiry: i64) -> Point {
        Point {
            id: id.into(),
            kind: "full".into(),
            created_unix: sealed,
            lock: Some(Lock {
                sealed_unix: sealed,
                expiry_unix: expiry,
                state: "immutable".into(),
            }),
            ..Point::default()
        }
    }

    #[test]
    fn deletable_within_counts_only_future_expiries_inside_the_horizon() {
        let now = 1_000 * DAY;
        let r = Report {
            generated_unix: now,
            jobs: vec![Job {
                name: "vm".into(),
                chains: vec![Chain {
                    id: "c".into(),
                    points: vec![
                        point("past", now - 20 * DAY, now - DAY),
                        point("d3", now - 4 * DAY, now + 3 * DAY),
                        point("d7", now - 4 * DAY, now + 7 * DAY),
                        point("d20", now - 4 * DAY, now + 20 * DAY),
                        point("d40", now - 4 * DAY, now + 40 * DAY),
                        Point {
                            id: "unsealed".into(),
                            ..Point::default()
                        },
                    ],
                }],
                verify: Verify::Unknown,
            }],
            ..Report::default()
        };
        let ids = |d: i64| -> Vec<String> {
            r.deletable_within(d)
                .iter()
                .map(|d| d.point.id.clone())
                .collect()
        };
        assert_eq!(ids(7), ["d3", "d7"]);
        assert_eq!(ids(30), ["d3", "d7", "d20"]);
        assert_eq!(r.sealed().count(), 5);
    }

    #[test]
    fn the_worst_level_comes_from_alerts_and_the_audit() {
        let mut r = Report::default();
        assert_eq!(r.worst(), Level::Ok);
        r.audit.push(AuditFinding {
            level: Level::Warn,
            ..Default::default()
        });
        assert_eq!(r.worst(), Level::Warn);
        r.alerts.push(Alert {
            level: Level::Fail,
            ..Default::default()
        });
        assert_eq!(r.worst(), Level::Fail);
    }
}
