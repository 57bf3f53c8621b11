//! Scheduled verify on the repository host: when each restore point was last re-read, and
//! which jobs today's run re-reads so that every stored block is re-read within N days.
//!
//! The rule ([`due_today`], a pure function of the jobs' last verify times, N and `now`): a
//! job never verified, or last verified N−1 days ago or more, is due; besides those, the
//! jobs verified longest ago are added until today's share is at least ⌈jobs ÷ N⌉. Run
//! daily, every job (so every point and block in it) is re-read at least every N days, and
//! the work is spread over the days. `within_days = 1` re-reads everything every day.
//!
//! The record is `REPO/health/verified.json`: job → point (hex) → unix time of the last
//! verify that read it clean or damaged; written by `bulwark-repo verify` by temporary file,
//! fsync, rename and fsync of the folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::record::{io_error, load_json, write_durably, RecordError};

/// Largest record read back.
const MAX_VERIFIED: u64 = 64 << 20;
const DAY: i64 = 86_400;

/// When each point of each job was last verified.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verified {
    pub jobs: BTreeMap<String, BTreeMap<String, i64>>,
}

/// The record file of a repository.
pub fn verified_path(repo: &Path) -> PathBuf {
    repo.join("health").join("verified.json")
}

impl Verified {
    /// The repository's record; empty when there is none yet.
    pub fn load(repo: &Path) -> Result<Verified, RecordError> {
        Ok(load_json(verified_path(repo), MAX_VERIFIED)?.unwrap_or_default())
    }

    /// When `point` of `job` was last verified.
    pub fn point(&self, job: &str, point: &str) -> Option<i64> {
        self.jobs.get(job)?.get(point).copied()
    }

    /// The oldest verify time over `points` of `job` (`None` if one was never verified).
    pub fn oldest(&self, job: &str, points: &[String]) -> Option<i64> {
        let mut oldest = i64::MAX;
        for p in points {
            oldest = oldest.min(self.point(job, p)?);
        }
        (oldest != i64::MAX).then_some(oldest)
    }

    /// Records that `points` of `job` were read at `at`; forgets points no longer held.
    pub fn mark(&mut self, job: &str, points: &[String], at: i64) {
        let m = self.jobs.entry(job.to_string()).or_default();
        m.retain(|p, _| points.contains(p));
        for p in points {
            m.insert(p.clone(), at);
        }
    }

    /// Writes the record: temporary file, fsync, rename, fsync of the folder.
    pub fn save(&self, repo: &Path) -> Result<(), RecordError> {
        let path = verified_path(repo);
        let dir = path.parent().expect("has a folder");
        if !dir.exists() {
            std::fs::create_dir(dir).map_err(io_error("creating", dir))?;
        }
        let tmp = dir.join(".verified.json.tmp");
        write_durably(&path, &tmp, &serde_json::to_vec(self).expect("serializes"))
    }
}

/// The jobs today's verify re-reads, given each job's oldest verify time (`None`: never),
/// so that every job is re-read within `within_days` days when this runs daily. Order:
/// never verified first, then oldest first; ties by name.
pub fn due_today(jobs: &[(String, Option<i64>)], within_days: u32, now: i64) -> Vec<String> {
    let n = i64::from(within_days.max(1));
    let mut order: Vec<&(String, Option<i64>)> = jobs.iter().collect();
    order.sort_by(|a, b| {
        a.1.unwrap_or(i64::MIN)
            .cmp(&b.1.unwrap_or(i64::MIN))
            .then(a.0.cmp(&b.0))
    });
    let share = (jobs.len() as i64 + n - 1) / n;
    let mut out = Vec::new();
    for (i, (job, last)) in order.into_iter().enumerate() {
        // Compare by days: a run at 03:10 and one at 03:05 the next day are one day apart.
        let overdue = match last {
            None => true,
            Some(t) => now.div_euclid(DAY) - t.div_euclid(DAY) >= n - 1,
        };
        if overdue || (i as i64) < share {
            out.push(job.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates `days` daily runs over `jobs` jobs and returns, for each job, the longest
    /// gap in days between two verifies (and from the start to the first).
    fn simulate(jobs: usize, within: u32, days: i64) -> (i64, Vec<usize>) {
        let names: Vec<String> = (0..jobs).map(|i| format!("j{i:02}")).collect();
        let mut last: Vec<Option<i64>> = vec![None; jobs];
        let mut worst = 0;
        let mut per_day = Vec::new();
        let start = 10_000 * DAY + 3 * 3600;
        for d in 0..days {
            let now = start + d * DAY + (d % 3) * 60; // the timer drifts by minutes
            let input: Vec<_> = names.iter().cloned().zip(last.iter().copied()).collect();
            let due = due_today(&input, within, now);
            per_day.push(due.len());
            for (i, n) in names.iter().enumerate() {
                if due.contains(n) {
                    let gap = match last[i] {
                        Some(t) => now.div_euclid(DAY) - t.div_euclid(DAY),
                        None => 0,
                    };
                    worst = worst.max(gap);
                    last[i] = Some(now);
                }
            }
            for t in last.iter().flatten() {
                worst = worst.max(now.div_euclid(DAY) - t.div_euclid(DAY));
            }
        }
        (worst, per_day)
    }

    #[test]
    fn every_job_is_reread_within_n_days_and_the_work_is_spread() {
        for jobs in [1, 2, 3, 7, 10, 31] {
            for within in [1, 2, 3, 7, 30] {
                let (worst, per_day) = simulate(jobs, within, 120);
                assert!(
                    worst <= i64::from(within),
                    "{jobs} jobs within {within} days: a gap of {worst} days"
                );
                let share = jobs.div_ceil(within as usize);
                // After the first day (everything never verified), no day reads much more
                // than its share.
                let max = per_day[1..].iter().max().copied().unwrap_or(0);
                assert!(
                    max <= 2 * share.max(1),
                    "{jobs} jobs within {within}: {max} on one day, share {share}: {per_day:?}"
                );
            }
        }
    }

    #[test]
    fn never_verified_jobs_come_first_and_a_day_verifies_everything() {
        let jobs = vec![
            ("a".to_string(), Some(5 * DAY)),
            ("b".to_string(), None),
            ("c".to_string(), Some(6 * DAY)),
        ];
        assert_eq!(due_today(&jobs, 30, 7 * DAY), ["b"]);
        assert_eq!(due_today(&jobs, 1, 7 * DAY), ["b", "a", "c"]);
        assert_eq!(due_today(&[], 7, 0), Vec::<String>::new());
    }

    #[test]
    fn the_record_keeps_each_points_time_and_forgets_removed_points() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Verified::load(dir.path()).unwrap();
        v.mark("j", &["p1".into(), "p2".into()], 100);
        v.save(dir.path()).unwrap();
        let mut v = Verified::load(dir.path()).unwrap();
        assert_eq!(v.point("j", "p1"), Some(100));
        assert_eq!(v.oldest("j", &["p1".into(), "p2".into()]), Some(100));
        assert_eq!(v.oldest("j", &["p1".into(), "p3".into()]), None);
        v.mark("j", &["p2".into(), "p3".into()], 200);
        assert_eq!(v.point("j", "p1"), None);
        assert_eq!(v.point("j", "p3"), Some(200));
    }
}
