//! Backup jobs: a TOML job file (see `docs/jobs.md`) and the decision of whether the next
//! run is an incremental, a synthetic full or an active full — a pure function of the
//! schedule, what the repository holds, and `now`. A job's kind is [`JobKind`]; the record
//! of its last runs (one result per disk) is [`record::RunRecord`].

pub mod copy;
pub mod record;
pub mod verified;

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
    /// Read the whole disk again every N weeks (0, or the key left out: not on a schedule).
    #[serde(default, deserialize_with = "weeks")]
    pub active_full_every_weeks: u32,
    /// Read the whole disk again every N months (30 days each; 0 or left out: not on a
    /// schedule).
    #[serde(default, deserialize_with = "months")]
    pub active_full_every_months: u32,
}

/// A count of weeks or months between scheduled active fulls: 0 means none (as it always
/// has, the same as leaving the key out); less than 0 is refused with the key's name.
fn no_less_than_zero<'de, D: serde::Deserializer<'de>>(d: D, key: &str) -> Result<u32, D::Error> {
    let n = i64::deserialize(d)?;
    u32::try_from(n).map_err(|_| {
        serde::de::Error::custom(format!(
            "{key} = {n} is not an interval: give 1 or more, or 0 (or leave the key out) for no \
             scheduled active fulls"
        ))
    })
}

fn weeks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    no_less_than_zero(d, "active_full_every_weeks")
}

fn months<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    no_less_than_zero(d, "active_full_every_months")
}

/// `alert_after_hours`: 0 (or less) would make every job overdue the moment its run ends,
/// so it is refused with the key's name and what to write instead. The TOML error around it
/// shows the line.
fn alert_hours<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(serde::de::Error::custom(
            "alert_after_hours = 0 is not an interval: every job would be overdue the moment its \
             run ends; give the hours after which a job without a successful run is reported (at \
             least 1, default 26), or leave the key out",
        )),
        n => Ok(Some(n)),
    }
}

/// One disk of a machine (`[[disk]]`): its own job, and so its own chains, in the repository.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// The disk's name; the repository job is `<job name>.<disk name>`.
    pub name: String,
    /// Raw disk image or block device.
    pub source: PathBuf,
}

/// `[verify]`: a job that re-reads what the repository holds for the named jobs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// The repository jobs to verify; empty means every job this client (or folder) holds.
    #[serde(default)]
    pub jobs: Vec<String>,
}

/// A job file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// The job's name (of the machine, for a job of several disks).
    pub name: String,
    /// One raw disk image or block device (or give `[[disk]]` tables instead).
    pub source: Option<PathBuf>,
    /// Several disks of one machine, each its own chain, all backed up by one run.
    #[serde(default, rename = "disk")]
    pub disks: Vec<Disk>,
    /// A local repository folder, or `HOST:PORT` of a repository service this client is
    /// enrolled with.
    pub repository: String,
    /// Block size of new chains, e.g. "1M".
    pub block_size: Option<String>,
    /// zstd level.
    pub compression: Option<i32>,
    /// Changed-block tracking managed by Bulwark for qcow2 sources (`--cbt`, docs/sources.md).
    #[serde(default)]
    pub cbt: bool,
    /// Read only what this bitmap of an NBD source marks dirty (`--dirty-bitmap`).
    pub dirty_bitmap: Option<String>,
    /// The sources' image format (`--format`; default: probed from the content).
    pub format: Option<String>,
    /// Alert when the job has had no successful run for this many hours (default 26: a
    /// daily timer with slack; at least 1).
    #[serde(default, deserialize_with = "alert_hours")]
    pub alert_after_hours: Option<u32>,
    /// `[schedule]`: when a backup job makes fulls (backup jobs only; see [`JobFile::schedule`]).
    #[serde(rename = "schedule")]
    pub schedule_table: Option<Schedule>,
    /// Makes this a verify job instead of a backup job.
    pub verify: Option<VerifySpec>,
    /// Makes this a backup copy job (`[copy]`, docs/copy-jobs.md).
    pub copy: Option<copy::CopySpec>,
    /// Encrypt with this symmetric key file (`--key`, docs/encryption.md); its passphrase
    /// from `BULWARK_PASSPHRASE`, `BULWARK_PASSPHRASE_FILE` or the systemd credential
    /// `bulwark-passphrase` (docs/jobs.md, "Encrypted jobs").
    pub key: Option<PathBuf>,
    /// Encrypt as a write-only client with this public key (`--public-key`).
    pub public_key: Option<PathBuf>,
}

/// Where a job's repository is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A folder on this machine.
    Local(PathBuf),
    /// A repository service, `HOST:PORT` or `bulwark://HOST:PORT`.
    Network(String),
}

/// What a job does: the one place a new kind of job is added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobKind<'a> {
    /// Back up each disk as its own repository job.
    Backup(Vec<DiskJob>),
    /// Re-read the stored blocks of these repository jobs (all when empty).
    Verify(&'a VerifySpec),
    /// Copy the restore points of these jobs to a second repository.
    Copy(&'a copy::CopySpec),
}

/// One disk of a backup job, resolved: its repository job name and its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskJob {
    /// The disk's name (the job's own name for a job of one `source`).
    pub disk: String,
    /// The job name in the repository.
    pub job: String,
    pub source: PathBuf,
}

/// Default of `alert_after_hours`.
pub const DEFAULT_ALERT_AFTER_HOURS: u32 = 26;

impl JobFile {
    /// Reads and checks a job file.
    pub fn load(path: &Path) -> Result<JobFile, JobError> {
        let io = |source| JobError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_JOB_FILE {
            return Err(JobError::Invalid {
                path: path.to_path_buf(),
                msg: "larger than 64 KiB".into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        JobFile::parse(&text).map_err(|msg| JobError::Invalid {
            path: path.to_path_buf(),
            msg,
        })
    }

    /// Parses and checks the text of a job file.
    pub fn parse(text: &str) -> Result<JobFile, String> {
        let job: JobFile = toml::from_str(text).map_err(|e| e.to_string())?;
        bulwark_format::validate_name("job", &job.name).map_err(|e| e.to_string())?;
        let s = job.schedule();
        if s.active_full_every_weeks > 0 && s.active_full_every_months > 0 {
            return Err(
                "give active_full_every_weeks or active_full_every_months, not both".into(),
            );
        }
        if job.repository.trim().is_empty() {
            return Err("repository is empty: give a folder or HOST:PORT".into());
        }
        if job.disks.len() > MAX_DISKS {
            return Err(format!("more than {MAX_DISKS} [[disk]] tables"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for d in &job.disks {
            bulwark_format::validate_name("disk", &d.name).map_err(|e| e.to_string())?;
            if !seen.insert(d.name.as_str()) {
                return Err(format!("disk {:?} is named twice", d.name));
            }
            // The repository job name must be a valid name too.
            bulwark_format::validate_name("job", &format!("{}.{}", job.name, d.name))
                .map_err(|e| format!("disk {:?}: {e}", d.name))?;
        }
        if let Some(c) = &job.copy {
            let mut extra = job.backup_keys();
            if job.verify.is_some() {
                extra.insert(0, "[verify]");
            }
            if !extra.is_empty() {
                return Err(format!(
                    "a [copy] job only copies: remove {}{}",
                    extra.join(", "),
                    schedule_hint(&extra)
                ));
            }
            c.check(&job.repository)?;
            return Ok(job);
        }
        match (&job.verify, &job.source, job.disks.is_empty()) {
            (Some(_), None, true) => {}
            (Some(_), _, _) => {
                return Err("a [verify] job backs nothing up: remove source and [[disk]]".into())
            }
            (None, Some(_), false) => {
                return Err("give source (one disk) or [[disk]] tables (several), not both".into())
            }
            (None, None, true) => {
                return Err(
                    "nothing to back up: give source = \"/dev/…\" or [[disk]] tables".into(),
                )
            }
            (None, _, _) => {}
        }
        if let Some(v) = &job.verify {
            let extra = job.backup_keys();
            if !extra.is_empty() {
                return Err(format!(
                    "a [verify] job backs nothing up: remove {}{}",
                    extra.join(", "),
                    schedule_hint(&extra)
                ));
            }
            unique_job_names("[verify] jobs", &v.jobs)?;
        }
        Ok(job)
    }

    /// The keys of the file that only a backup job uses, in file order of the docs: what a
    /// verify or copy job must not carry (they would be silently ignored).
    fn backup_keys(&self) -> Vec<&'static str> {
        let set = [
            ("source", self.source.is_some()),
            ("[[disk]]", !self.disks.is_empty()),
            ("block_size", self.block_size.is_some()),
            ("compression", self.compression.is_some()),
            ("cbt", self.cbt),
            ("dirty_bitmap", self.dirty_bitmap.is_some()),
            ("format", self.format.is_some()),
            ("key", self.key.is_some()),
            ("public_key", self.public_key.is_some()),
            ("[schedule]", self.schedule_table.is_some()),
        ];
        set.iter().filter(|(_, on)| *on).map(|(k, _)| *k).collect()
    }

    /// When a backup job makes fulls: its `[schedule]`, or none.
    pub fn schedule(&self) -> &Schedule {
        static NONE: Schedule = Schedule {
            synthetic_full_day: None,
            active_full_every_weeks: 0,
            active_full_every_months: 0,
        };
        self.schedule_table.as_ref().unwrap_or(&NONE)
    }

    /// Where the repository is: an absolute or relative folder, or `HOST:PORT`.
    pub fn target(&self) -> Target {
        let r = self.repository.trim();
        let looks_remote = r.starts_with("bulwark://")
            || (!r.starts_with('/') && !r.starts_with('.') && r.contains(':'));
        if looks_remote && !Path::new(r).is_dir() {
            Target::Network(r.to_string())
        } else {
            Target::Local(PathBuf::from(r))
        }
    }

    /// What the job does.
    pub fn kind(&self) -> JobKind<'_> {
        if let Some(c) = &self.copy {
            return JobKind::Copy(c);
        }
        if let Some(v) = &self.verify {
            return JobKind::Verify(v);
        }
        JobKind::Backup(self.disk_jobs())
    }

    /// The disks of a backup job, in file order (none for other kinds).
    pub fn disk_jobs(&self) -> Vec<DiskJob> {
        if let Some(src) = &self.source {
            return vec![DiskJob {
                disk: self.name.clone(),
                job: self.name.clone(),
                source: src.clone(),
            }];
        }
        self.disks
            .iter()
            .map(|d| DiskJob {
                disk: d.name.clone(),
                job: format!("{}.{}", self.name, d.name),
                source: d.source.clone(),
            })
            .collect()
    }

    /// Seconds without a successful run after which the job is reported missed.
    pub fn alert_after_secs(&self) -> i64 {
        i64::from(self.alert_after_hours.unwrap_or(DEFAULT_ALERT_AFTER_HOURS)) * 3600
    }
}

/// What to say when `[schedule]` is among the keys a verify or copy job must not carry.
fn schedule_hint(keys: &[&str]) -> &'static str {
    if keys.contains(&"[schedule]") {
        " ([schedule] only says when a backup job makes fulls; the job runs when its timer, \
         bulwark-job@NAME.timer, starts it)"
    } else {
        ""
    }
}

/// Refuses a list of repository jobs with an invalid or repeated name.
pub(crate) fn unique_job_names(what: &str, jobs: &[String]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for j in jobs {
        bulwark_format::validate_name("job", j).map_err(|e| format!("{what}: {e}"))?;
        if !seen.insert(j.as_str()) {
            return Err(format!("{what}: job {j:?} is named twice"));
        }
    }
    Ok(())
}

/// Most disks one job may name.
pub const MAX_DISKS: usize = 64;

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

    #[test]
    fn job_files_name_one_disk_several_disks_or_a_verify() {
        let one = JobFile::parse(
            "name = \"web01\"\nsource = \"/dev/sda\"\nrepository = \"backup.example.org:6162\"\n",
        )
        .unwrap();
        assert_eq!(
            one.target(),
            Target::Network("backup.example.org:6162".into())
        );
        assert_eq!(
            one.kind(),
            JobKind::Backup(vec![DiskJob {
                disk: "web01".into(),
                job: "web01".into(),
                source: "/dev/sda".into()
            }])
        );
        assert_eq!(one.alert_after_secs(), 26 * 3600);
        let two = JobFile::parse(
            "name = \"db\"\nrepository = \"/srv/bulwark/repo\"\nalert_after_hours = 2\n\
             [[disk]]\nname = \"os\"\nsource = \"/dev/vda\"\n[[disk]]\nname = \"data\"\nsource = \"/dev/vdb\"\n",
        )
        .unwrap();
        assert_eq!(two.target(), Target::Local("/srv/bulwark/repo".into()));
        let jobs: Vec<_> = two.disk_jobs().into_iter().map(|d| d.job).collect();
        assert_eq!(jobs, ["db.os", "db.data"]);
        assert_eq!(two.alert_after_secs(), 7200);
        let v =
            JobFile::parse("name = \"nightly\"\nrepository = \"[::1]:6162\"\n[verify]\n").unwrap();
        assert!(matches!(v.kind(), JobKind::Verify(_)));
        assert_eq!(v.target(), Target::Network("[::1]:6162".into()));
        assert_eq!(
            JobFile::parse("name = \"l\"\nsource = \"x\"\nrepository = \"./repo:1\"\n")
                .unwrap()
                .target(),
            Target::Local("./repo:1".into())
        );
    }

    /// What an administrator may write by mistake is refused with the key it concerns, not
    /// silently ignored: intervals of 0 or less, and keys of backup jobs (a `[schedule]`
    /// above all) in a verify or copy job.
    #[test]
    fn nonsense_intervals_and_keys_a_job_kind_ignores_are_refused_naming_the_key() {
        let backup = "name = \"a\"\nsource = \"/x\"\nrepository = \"/r\"\n";
        let copy = "name = \"a\"\nrepository = \"/r\"\n[copy]\nto = \"b:6162\"\n";
        let verify = "name = \"a\"\nrepository = \"/r\"\n[verify]\n";
        let cases = [
            (
                format!("alert_after_hours = 0\n{backup}"),
                "alert_after_hours = 0 is not an interval",
            ),
            (
                format!("alert_after_hours = 0\n{copy}"),
                "alert_after_hours = 0 is not an interval",
            ),
            (
                format!("alert_after_hours = -3\n{verify}"),
                "alert_after_hours = -3",
            ),
            (
                format!("{backup}[schedule]\nactive_full_every_months = -2\n"),
                "active_full_every_months = -2 is not an interval",
            ),
            (
                format!("{backup}[schedule]\nactive_full_every_weeks = -1\n"),
                "active_full_every_weeks = -1",
            ),
            (
                format!("{backup}[schedule]\nsynthetic_full_day = \"sundae\"\n"),
                "sundae",
            ),
            (
                format!("{backup}[schedule]\nevery = \"day\"\n"),
                "unknown field `every`",
            ),
            (format!("{backup}[scheduel]\n"), "unknown field `scheduel`"),
            (
                format!("{copy}[schedule]\nsynthetic_full_day = \"sunday\"\n"),
                "a [copy] job only copies: remove [schedule] ([schedule] only says",
            ),
            (format!("{copy}[schedule]\n"), "remove [schedule]"),
            (
                format!("block_size = \"1M\"\ncompression = 3\n{copy}"),
                "remove block_size, compression",
            ),
            (format!("key = \"/k\"\n{copy}"), "remove key"),
            (
                format!("{verify}[schedule]\nactive_full_every_weeks = 4\n"),
                "a [verify] job backs nothing up: remove [schedule]",
            ),
            (
                format!("public_key = \"/k.pub\"\n{verify}"),
                "remove public_key",
            ),
            (
                format!("{copy}jobs = [\"web\", \"web\"]\n"),
                "[copy] jobs: job \"web\" is named twice",
            ),
            (
                format!("{verify}jobs = [\"a\", \"a\"]\n"),
                "[verify] jobs: job \"a\" is named twice",
            ),
        ];
        for (text, want) in &cases {
            let e = JobFile::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // The TOML error shows the line of the key.
        let e = JobFile::parse(&format!("{backup}alert_after_hours = 0\n")).unwrap_err();
        assert!(
            e.contains("line 4") && e.contains("alert_after_hours = 0\n"),
            "{e}"
        );
        // What is meant is accepted: an empty [schedule] of a backup job, 1 hour, 1 week.
        let ok = JobFile::parse(&format!(
            "alert_after_hours = 1\n{backup}[schedule]\nactive_full_every_weeks = 1\n"
        ))
        .unwrap();
        assert_eq!(ok.alert_after_secs(), 3600);
        assert_eq!(ok.schedule().active_full_every_weeks, 1);
        assert_eq!(
            JobFile::parse(&format!("{backup}[schedule]\n"))
                .unwrap()
                .schedule(),
            &Schedule::default()
        );
        assert!(JobFile::parse(copy).unwrap().schedule_table.is_none());
        // 0 weeks or months has always meant "no scheduled active fulls", as leaving the key
        // out does; job files that say so keep working.
        for key in ["active_full_every_weeks", "active_full_every_months"] {
            let j = JobFile::parse(&format!("{backup}[schedule]\n{key} = 0\n")).unwrap();
            assert_eq!(j.schedule(), &Schedule::default(), "{key} = 0");
        }
    }

    #[test]
    fn bad_job_files_are_refused_with_what_to_change() {
        let cases = [
            ("name = \"a\"\nrepository = \"/r\"\n", "nothing to back up"),
            ("name = \"a\"\nsource = \"/x\"\nrepository = \"/r\"\n[[disk]]\nname = \"b\"\nsource = \"/y\"\n", "not both"),
            ("name = \"a\"\nrepository = \"/r\"\n[[disk]]\nname = \"b\"\nsource = \"/y\"\n[[disk]]\nname = \"b\"\nsource = \"/z\"\n", "named twice"),
            ("name = \"a\"\nrepository = \"/r\"\n[[disk]]\nname = \"../b\"\nsource = \"/y\"\n", "disk name"),
            ("name = \"a\"\nsource = \"/x\"\nrepository = \"/r\"\n[verify]\n", "backs nothing up"),
            ("name = \"a\"\nsource = \"/x\"\nrepository = \" \"\n", "repository is empty"),
            ("name = \"a\"\nsource = \"/x\"\nrepository = \"/r\"\nsurprise = 1\n", "unknown field"),
        ];
        for (text, want) in cases {
            let e = JobFile::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let long = "x".repeat(60);
        let e = JobFile::parse(&format!(
            "name = \"{long}\"\nrepository = \"/r\"\n[[disk]]\nname = \"abcdefgh\"\nsource = \"/y\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("disk \"abcdefgh\""), "{e}");
    }
}
