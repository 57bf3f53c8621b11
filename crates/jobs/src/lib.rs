//! Backup jobs: a TOML job file (see `docs/jobs.md`) and the decision of whether the next
//! run is an incremental, a synthetic full or an active full — a pure function of the
//! schedule, what the repository holds, and `now`.

use std::path::{Path, PathBuf};

use bulwark_format::PointKind;
use serde::Deserialize;

const DAY: i64 = 86_400;
const MAX_JOB_FILE: u64 = 64 * 1024;

/// Errors reading a job file.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("reading job file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("job file {path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

/// Days of the week, for the synthetic-full day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Weekday {
    /// The weekday of a unix time (UTC).
    pub fn of(t: i64) -> Weekday {
        // 1970-01-01 was a Thursday (index 3).
        const ALL: [Weekday; 7] = [
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday,
            Weekday::Saturday,
            Weekday::Sunday,
        ];
        ALL[(t.div_euclid(DAY) + 3).rem_euclid(7) as usize]
    }
}

/// When fulls happen. Incrementals run whenever the job runs (its timer decides when).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Build a synthetic full on the repository on this day (UTC).
    pub synthetic_full_day: Option<Weekday>,
    /// Read the whole disk again every N weeks.
    #[serde(default)]
    pub active_full_every_weeks: u32,
    /// Read the whole disk again every N months (30 days each).
    #[serde(default)]
    pub active_full_every_months: u32,
}

/// A job file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// The job's name in the repository.
    pub name: String,
    /// Raw disk image or block device.
    pub source: PathBuf,
    /// Local repository folder.
    pub repository: String,
    /// Block size of new chains, e.g. "1M".
    pub block_size: Option<String>,
    /// zstd level.
    pub compression: Option<i32>,
    #[serde(default)]
    pub schedule: Schedule,
}

impl JobFile {
    /// Reads and checks a job file.
    pub fn load(path: &Path) -> Result<JobFile, JobError> {
        let io = |source| JobError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        let invalid = |msg: String| JobError::Invalid {
            path: path.to_path_buf(),
            msg,
        };
        if len > MAX_JOB_FILE {
            return Err(invalid("larger than 64 KiB".into()));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let job: JobFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        bulwark_format::validate_name("job", &job.name).map_err(|e| invalid(e.to_string()))?;
        let s = &job.schedule;
        if s.active_full_every_weeks > 0 && s.active_full_every_months > 0 {
            return Err(invalid(
                "give active_full_every_weeks or active_full_every_months, not both".into(),
            ));
        }
        Ok(job)
    }
}

/// What the repository holds for the job, as far as the schedule cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobState {
    /// (kind, creation time) of every restore point, oldest first.
    pub points: Vec<(PointKind, i64)>,
    /// Set when verify found the current chain damaged.
    pub damage: Option<String>,
}

/// What the next run does, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub kind: PointKind,
    pub reason: String,
}

fn date(t: i64) -> i64 {
    t.div_euclid(DAY)
}

/// Decides the next run at `now`.
pub fn decide(schedule: &Schedule, state: &JobState, now: i64) -> Decision {
    let d = |kind, reason: String| Decision { kind, reason };
    let Some(&(_, _last)) = state.points.last() else {
        return d(PointKind::ActiveFull, "first backup of the job".into());
    };
    if let Some(why) = &state.damage {
        return d(
            PointKind::ActiveFull,
            format!("{why}; starting a new chain"),
        );
    }
    let last_active = state
        .points
        .iter()
        .rev()
        .find(|(k, _)| *k == PointKind::ActiveFull)
        .map(|&(_, t)| t);
    let every = if schedule.active_full_every_weeks > 0 {
        Some((
            i64::from(schedule.active_full_every_weeks) * 7 * DAY,
            format!("{} weeks", schedule.active_full_every_weeks),
        ))
    } else if schedule.active_full_every_months > 0 {
        Some((
            i64::from(schedule.active_full_every_months) * 30 * DAY,
            format!("{} months", schedule.active_full_every_months),
        ))
    } else {
        None
    };
    if let Some((period, text)) = every {
        match last_active {
            // Compare dates so that a run a little earlier in the day still counts.
            Some(t) if date(now) - date(t) < period / DAY => {}
            Some(_) => {
                return d(
                    PointKind::ActiveFull,
                    format!("an active full is due every {text}"),
                )
            }
            None => {
                return d(
                    PointKind::ActiveFull,
                    format!("an active full is due every {text} and there is none"),
                )
            }
        }
    }
    if let Some(day) = schedule.synthetic_full_day {
        let last_full = state
            .points
            .iter()
            .rev()
            .find(|(k, _)| k.is_full())
            .map(|&(_, t)| t);
        if Weekday::of(now) == day && last_full.map(date) != Some(date(now)) {
            return d(
                PointKind::SyntheticFull,
                format!("synthetic full day ({day:?})"),
            );
        }
    }
    d(
        PointKind::Incremental,
        "changed blocks since the last restore point".into(),
    )
}

/// The kinds of the next `runs` daily runs starting at `now`, assuming each succeeds.
pub fn plan(schedule: &Schedule, state: &JobState, now: i64, runs: usize) -> Vec<(i64, Decision)> {
    let mut state = state.clone();
    (0..runs)
        .map(|i| {
            let t = now + i as i64 * DAY;
            let dec = decide(schedule, &state, t);
            state.points.push((dec.kind, t));
            state.damage = None;
            (t, dec)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MON: i64 = 1_798_416_000; // 2026-12-28, a Monday, 00:00 UTC

    fn st(points: &[(PointKind, i64)]) -> JobState {
        JobState {
            points: points.to_vec(),
            damage: None,
        }
    }

    #[test]
    fn weekdays() {
        assert_eq!(Weekday::of(0), Weekday::Thursday);
        assert_eq!(Weekday::of(MON + 3600), Weekday::Monday);
        assert_eq!(Weekday::of(MON + 6 * DAY + 80_000), Weekday::Sunday);
        assert_eq!(Weekday::of(MON - 1), Weekday::Sunday);
    }

    #[test]
    fn first_run_damage_and_default() {
        let s = Schedule::default();
        assert_eq!(decide(&s, &st(&[]), MON).kind, PointKind::ActiveFull);
        let mut state = st(&[(PointKind::ActiveFull, MON - DAY)]);
        assert_eq!(decide(&s, &state, MON).kind, PointKind::Incremental);
        state.damage = Some("verify found restore point x of the current chain damaged".into());
        let dec = decide(&s, &state, MON);
        assert_eq!(dec.kind, PointKind::ActiveFull);
        assert!(dec.reason.contains("verify found"), "{}", dec.reason);
    }

    #[test]
    fn a_month_of_runs_with_sunday_synthetic_and_4_weekly_active_fulls() {
        let s = Schedule {
            synthetic_full_day: Some(Weekday::Sunday),
            active_full_every_weeks: 4,
            ..Default::default()
        };
        let runs = plan(&s, &st(&[]), MON + 22 * 3600, 35);
        let kinds: String = runs
            .iter()
            .map(|(_, d)| match d.kind {
                PointKind::ActiveFull => 'A',
                PointKind::SyntheticFull => 'S',
                PointKind::Incremental => 'i',
            })
            .collect();
        // Monday start: active full, incrementals, synthetic fulls on Sundays, and the next
        // active full 28 days later, on a Monday.
        assert_eq!(kinds, "AiiiiiSiiiiiiSiiiiiiSiiiiiiSAiiiiiS");
    }

    #[test]
    fn synthetic_day_runs_once_even_if_the_job_runs_twice() {
        let s = Schedule {
            synthetic_full_day: Some(Weekday::Sunday),
            ..Default::default()
        };
        let sun = MON + 6 * DAY;
        let state = st(&[
            (PointKind::ActiveFull, MON),
            (PointKind::SyntheticFull, sun + 100),
        ]);
        assert_eq!(decide(&s, &state, sun + 5000).kind, PointKind::Incremental);
    }
}
