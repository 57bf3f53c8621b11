//! The record of a job's runs, kept by `bulwark job run` in the client's state folder
//! (`<state>/jobs/<name>.json`): when the last run started and ended, one result per disk,
//! when the first run it knows started, and when the job last succeeded. A run marks its
//! start before it does anything, so a run that was killed leaves a record that says so.
//! Whether a job is overdue is a pure function of the record, when the job file was written,
//! the job's alert interval and `now` ([`overdue`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest record read back (a record names at most `MAX_DISKS` disks).
const MAX_RECORD: u64 = 1 << 20;

/// Errors reading or writing a run record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run record {path} is not valid: {msg}; delete it (the next run writes a new one)")]
    Invalid { path: PathBuf, msg: String },
}

/// An I/O error of `what` on `path`, for `map_err`.
pub(crate) fn io_error(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> RecordError {
    let path = path.to_path_buf();
    move |source| RecordError::Io { what, path, source }
}

/// Reads the JSON record at `path`: `None` when there is none, invalid when it is larger
/// than `max` bytes (a whole number of MiB) or is not the record.
pub(crate) fn load_json<T: serde::de::DeserializeOwned>(
    path: PathBuf,
    max: u64,
) -> Result<Option<T>, RecordError> {
    use std::io::Read;
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RecordError::Io {
                what: "opening",
                path,
                source,
            })
        }
    };
    let mut text = String::new();
    f.take(max + 1)
        .read_to_string(&mut text)
        .map_err(io_error("reading", &path))?;
    if text.len() as u64 > max {
        return Err(RecordError::Invalid {
            path,
            msg: format!("larger than {} MiB", max >> 20),
        });
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| RecordError::Invalid {
            path,
            msg: e.to_string(),
        })
}

/// Writes `bytes` to `path` through the temporary file `tmp` beside it: write, fsync,
/// rename, fsync of the folder.
pub(crate) fn write_durably(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    let dir = path.parent().expect("a record path has a folder");
    let mut f = std::fs::File::create(tmp).map_err(io_error("creating", tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_error("writing", tmp))?;
    drop(f);
    std::fs::rename(tmp, path).map_err(io_error("renaming into place", path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing", dir))
}

/// One disk's result in a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskResult {
    /// The disk's name in the job file.
    pub disk: String,
    /// Its job name in the repository.
    pub job: String,
    pub ok: bool,
    /// `active_full`, `synthetic_full` or `incremental` (what was decided).
    #[serde(default)]
    pub kind: String,
    /// The restore point made.
    #[serde(default)]
    pub point: Option<String>,
    #[serde(default)]
    pub bytes_stored: u64,
    #[serde(default)]
    pub seconds: f64,
    /// What went wrong.
    #[serde(default)]
    pub error: Option<String>,
    /// What the schedule decided (`incremental`, `active-full`, `synthetic-full`) and why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decision: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The synthetic full built after the backup on its day, and how (`reflink` or `copy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic_full: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic_method: Option<String>,
    /// Changed-block tracking of a live source, in one line: what was read, or why
    /// everything was read instead (`cbt` / `dirty_bitmap` jobs, docs/sources.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cbt: Option<String>,
}

impl DiskResult {
    /// The result of a disk that failed with `error` before it made a restore point.
    pub fn failed(disk: String, job: String, kind: &str, error: String) -> DiskResult {
        DiskResult {
            disk,
            job,
            ok: false,
            kind: kind.to_string(),
            error: Some(error),
            ..Default::default()
        }
    }
}

/// The state of a job's runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub job: String,
    /// Start of the last run.
    pub started_unix: i64,
    /// Start of the first run this record knows, kept by every later run. `None` in records
    /// written before it was kept: there the last run's start stands in for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_started_unix: Option<i64>,
    /// End of the last run; `None` while it runs, or when it was killed.
    pub finished_unix: Option<i64>,
    /// Whether every disk of the last finished run succeeded.
    pub ok: bool,
    /// End of the last run in which every disk succeeded.
    pub last_success_unix: Option<i64>,
    /// The last run's results, one per disk.
    pub disks: Vec<DiskResult>,
}

/// The record file of a job.
pub fn record_path(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join("jobs").join(format!("{job}.json"))
}

impl RunRecord {
    /// The job's record, or `None` when it has never run here.
    pub fn load(state_dir: &Path, job: &str) -> Result<Option<RunRecord>, RecordError> {
        load_json(record_path(state_dir, job), MAX_RECORD)
    }

    /// Writes the record: temporary file, fsync, rename, fsync of the folder.
    pub fn save(&self, state_dir: &Path) -> Result<(), RecordError> {
        let path = record_path(state_dir, &self.job);
        let dir = path.parent().expect("record path has a folder");
        std::fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        let tmp = dir.join(format!(".{}.json.tmp", self.job));
        let text = serde_json::to_vec_pretty(self).expect("a record serializes");
        write_durably(&path, &tmp, &text)
    }

    /// The record of a run starting at `now`, keeping the first start and the last success
    /// of `previous`.
    pub fn starting(job: &str, previous: Option<&RunRecord>, now: i64) -> RunRecord {
        RunRecord {
            job: job.to_string(),
            started_unix: now,
            first_started_unix: Some(previous.map_or(now, RunRecord::first_started)),
            finished_unix: None,
            ok: false,
            last_success_unix: previous.and_then(|p| p.last_success_unix),
            disks: vec![],
        }
    }

    /// Start of the first run this record knows (the last run's in an older record).
    pub fn first_started(&self) -> i64 {
        self.first_started_unix.unwrap_or(self.started_unix)
    }

    /// Closes the run at `now` with its per-disk results.
    pub fn finish(&mut self, disks: Vec<DiskResult>, now: i64) {
        self.ok = !disks.is_empty() && disks.iter().all(|d| d.ok);
        self.disks = disks;
        self.finished_unix = Some(now);
        if self.ok {
            self.last_success_unix = Some(now);
        }
    }
}

/// Why job `job` is overdue at `now`: no successful run within `alert_after` seconds,
/// counted from the last success; when it never succeeded, from the first run's start; when
/// it never ran (no record: a timer never enabled, a mistyped instance), from
/// `file_written` — when its job file was written — so a job that never runs is not "ok"
/// forever. Says what the last run did. `None` when the job is within its interval.
pub fn overdue(
    job: &str,
    record: Option<&RunRecord>,
    file_written: i64,
    alert_after: i64,
    now: i64,
) -> Option<String> {
    let hours = |s: i64| format!("{:.1} h", s as f64 / 3600.0);
    let Some(r) = record else {
        return (now - file_written > alert_after).then(|| {
            format!(
                "job {job}: never ran; its job file was written {} ago ({}, alert after {})",
                hours(now - file_written),
                bulwark_time::utc(file_written),
                hours(alert_after)
            )
        });
    };
    let since = r.last_success_unix.unwrap_or_else(|| r.first_started());
    if now - since <= alert_after {
        return None;
    }
    let last = match (r.finished_unix, r.ok) {
        (None, _) => format!(
            "the last run, started {}, never finished (killed or still running)",
            bulwark_time::utc(r.started_unix)
        ),
        (Some(_), false) => {
            let failed: Vec<_> = r
                .disks
                .iter()
                .filter(|d| !d.ok)
                .map(|d| match &d.error {
                    Some(e) => format!("{}: {e}", d.disk),
                    None => d.disk.clone(),
                })
                .collect();
            format!("the last run failed ({})", failed.join("; "))
        }
        (Some(_), true) => "no run since".to_string(),
    };
    Some(match r.last_success_unix {
        Some(t) => format!(
            "job {job}: no successful backup for {} (last success {}, alert after {}); {last}",
            hours(now - t),
            bulwark_time::utc(t),
            hours(alert_after)
        ),
        None => format!(
            "job {job}: no successful backup since its first run {} ago ({}, alert after {}); \
             {last}",
            hours(now - r.first_started()),
            bulwark_time::utc(r.first_started()),
            hours(alert_after)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_disk(name: &str, ok: bool) -> DiskResult {
        DiskResult {
            disk: name.into(),
            job: format!("m.{name}"),
            ok,
            kind: "incremental".into(),
            point: None,
            bytes_stored: 0,
            seconds: 0.0,
            error: (!ok).then(|| "source unreadable".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_run_succeeds_only_when_every_disk_does() {
        let mut r = RunRecord::starting("m", None, 100);
        r.finish(vec![ok_disk("a", true), ok_disk("b", false)], 200);
        assert!(!r.ok);
        assert_eq!(r.last_success_unix, None);
        let mut r2 = RunRecord::starting("m", Some(&r), 300);
        r2.finish(vec![ok_disk("a", true), ok_disk("b", true)], 400);
        assert!(r2.ok);
        assert_eq!(r2.last_success_unix, Some(400));
        // A run with no disk at all is no success.
        let mut r3 = RunRecord::starting("m", Some(&r2), 500);
        r3.finish(vec![], 600);
        assert!(!r3.ok);
        assert_eq!(r3.last_success_unix, Some(400));
    }

    #[test]
    fn overdue_follows_the_last_success_and_names_what_went_wrong() {
        let h = 3600;
        let mut r = RunRecord::starting("m", None, 0);
        r.finish(vec![ok_disk("a", true)], 10);
        assert_eq!(overdue("m", Some(&r), 0, 26 * h, 10 + 26 * h), None);
        let late = overdue("m", Some(&r), 0, 26 * h, 11 + 26 * h).unwrap();
        assert!(
            late.contains("no successful backup") && late.contains("no run since"),
            "{late}"
        );
        // Killed: started, never finished.
        let killed = RunRecord::starting("m", Some(&r), 20 * h);
        let msg = overdue("m", Some(&killed), 0, 26 * h, 30 * h).unwrap();
        assert!(msg.contains("never finished"), "{msg}");
        assert_eq!(overdue("m", Some(&killed), 0, 26 * h, 20 * h), None);
        // Failed runs only, never a success: counted from the first start.
        let mut failed = RunRecord::starting("m", None, 0);
        failed.finish(vec![ok_disk("b", false)], 5);
        let msg = overdue("m", Some(&failed), 0, 60, 61).unwrap();
        assert!(
            msg.contains("failed") && msg.contains("b: source unreadable"),
            "{msg}"
        );
        assert_eq!(overdue("m", Some(&failed), 0, 60, 60), None);
    }

    #[test]
    fn a_job_failing_every_day_is_overdue_from_its_first_run() {
        let h = 3600;
        let day = 24 * h;
        let mut r: Option<RunRecord> = None;
        for d in 0..4 {
            let mut run = RunRecord::starting("n", r.as_ref(), d * day);
            run.finish(vec![ok_disk("a", false)], d * day + 60);
            r = Some(run);
        }
        let r = r.unwrap();
        assert_eq!(r.first_started_unix, Some(0));
        assert_eq!(r.started_unix, 3 * day);
        // 4 days after the first failing run, 1 hour after the last one.
        let msg = overdue("n", Some(&r), 0, 26 * h, 3 * day + h).unwrap();
        assert!(
            msg.contains("since its first run 73.0 h ago") && msg.contains("failed"),
            "{msg}"
        );
        assert_eq!(overdue("n", Some(&r), 0, 26 * h, 26 * h), None);
        // A success then counts from itself, and failures after it from the success.
        let mut ok = RunRecord::starting("n", Some(&r), 4 * day);
        ok.finish(vec![ok_disk("a", true)], 4 * day + 60);
        assert_eq!(ok.first_started_unix, Some(0));
        assert_eq!(overdue("n", Some(&ok), 0, 26 * h, 5 * day), None);
        let mut bad = RunRecord::starting("n", Some(&ok), 5 * day);
        bad.finish(vec![ok_disk("a", false)], 5 * day + 60);
        assert_eq!(
            overdue("n", Some(&bad), 0, 26 * h, 4 * day + 60 + 26 * h),
            None
        );
        let msg = overdue("n", Some(&bad), 0, 26 * h, 4 * day + 61 + 26 * h).unwrap();
        assert!(msg.contains("last success"), "{msg}");
    }

    #[test]
    fn a_record_written_before_the_first_start_was_kept_still_loads_and_counts_from_its_run() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
        std::fs::write(
            record_path(dir.path(), "old"),
            r#"{"job":"old","started_unix":1000,"finished_unix":1010,"ok":false,
                "last_success_unix":null,"disks":[]}"#,
        )
        .unwrap();
        let old = RunRecord::load(dir.path(), "old").unwrap().unwrap();
        assert_eq!(old.first_started_unix, None);
        assert_eq!(old.first_started(), 1000);
        assert_eq!(overdue("old", Some(&old), 0, 100, 1100), None);
        assert!(overdue("old", Some(&old), 0, 100, 1101).is_some());
        // The next run keeps the old run's start as the first one.
        let next = RunRecord::starting("old", Some(&old), 2000);
        assert_eq!(next.first_started_unix, Some(1000));
    }

    #[test]
    fn a_job_that_never_ran_is_overdue_from_when_its_file_was_written() {
        let h = 3600;
        assert_eq!(overdue("web", None, 1_000, 26 * h, 1_000 + 26 * h), None);
        let msg = overdue("web", None, 1_000, 26 * h, 1_001 + 26 * h).unwrap();
        assert!(
            msg.contains("job web: never ran") && msg.contains("written 26.0 h ago"),
            "{msg}"
        );
        // A file written "in the future" (a clock set back) is not overdue.
        assert_eq!(overdue("web", None, 10 * h, 26 * h, 0), None);
    }

    #[test]
    fn records_round_trip_through_the_state_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RunRecord::load(dir.path(), "m").unwrap(), None);
        let mut r = RunRecord::starting("m", None, 7);
        r.finish(vec![ok_disk("a", true)], 9);
        r.save(dir.path()).unwrap();
        assert_eq!(RunRecord::load(dir.path(), "m").unwrap(), Some(r));
        std::fs::write(record_path(dir.path(), "m"), b"{not json").unwrap();
        let e = RunRecord::load(dir.path(), "m").unwrap_err().to_string();
        assert!(e.contains("delete it"), "{e}");
    }
}
