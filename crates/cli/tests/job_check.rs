//! `bulwark job check` end to end, the real binary under libfaketime: a bad job file is
//! reported and the other jobs are still checked; a job failing every day, and one that
//! never ran, become overdue; a lasting overdue job is notified once per `repeat_hours`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use bulwark_testkit::system::job_file;
use bulwark_testkit::webhook::Hook;
use common::{init_repo, s};

/// What the job-check tests ask of the shared webhook receiver.
trait MissedHook {
    fn missed(&self, subject: &str) -> Vec<serde_json::Value>;
    fn config(&self, dir: &Path, extra: &str) -> PathBuf;
}

impl MissedHook for Hook {
    /// The `backup_missed` payloads received about `subject`.
    fn missed(&self, subject: &str) -> Vec<serde_json::Value> {
        self.events("backup_missed")
            .into_iter()
            .filter(|b| b["subject"] == subject)
            .collect()
    }

    /// notify.toml in `dir` pointing at this receiver, with `extra` settings on top.
    fn config(&self, dir: &Path, extra: &str) -> PathBuf {
        let p = dir.join("notify.toml");
        std::fs::write(&p, format!("{extra}[[webhook]]\nurl = \"{}\"\n", self.url)).unwrap();
        p
    }
}

/// Runs `bulwark args` with its wall clock at `faketime` (libfaketime's FAKETIME: "+3d",
/// "@2027-01-01 22:00:00"; `None`: the real clock).
fn bulwark_at(faketime: Option<(&Path, &str)>, args: &[&str]) -> Output {
    let mut c = Command::new(common::bin());
    c.args(args)
        .env_remove("BULWARK_STATE_DIR")
        .env_remove("BULWARK_NOTIFY_CONFIG");
    if let Some((lib, at)) = faketime {
        // TZ: an absolute FAKETIME is read as local time.
        c.env("LD_PRELOAD", lib)
            .env("TZ", "UTC")
            .env("FAKETIME", at)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    let o = c.output().unwrap();
    bulwark_testkit::show(
        &format!(
            "FAKETIME={:?} bulwark {}",
            faketime.map(|f| f.1),
            args.join(" ")
        ),
        &o,
    );
    o
}

/// `bulwark --json job check FILES --state-dir STATE --notify-config CFG` at `at`: its exit
/// code and report.
fn check(
    lib: Option<&Path>,
    at: &str,
    files: &[&Path],
    state: &Path,
    cfg: &Path,
) -> (Option<i32>, serde_json::Value) {
    let mut a = vec!["--json", "job", "check"];
    a.extend(files.iter().map(|f| s(f)));
    a.extend(["--state-dir", s(state), "--notify-config", s(cfg)]);
    let o = bulwark_at(lib.map(|l| (l, at)), &a);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o.status.code(), v)
}

/// The report's row of job file `file` (or of job `job`).
fn row<'a>(report: &'a serde_json::Value, file: &Path, job: &str) -> &'a serde_json::Value {
    report["jobs"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["file"] == s(file) || r["job"] == job)
        })
        .unwrap_or_else(|| panic!("no row for {} in {report}", file.display()))
}

/// Where every test here starts, once libfaketime is found (else the test skips): a scratch
/// folder with a repository and a state folder, and a webhook receiver with its notify.toml
/// (`notify` settings on top).
struct Rig {
    lib: PathBuf,
    dir: tempfile::TempDir,
    repo: PathBuf,
    state: PathBuf,
    hook: Hook,
    cfg: PathBuf,
}

fn rig(test: &str, notify: &str) -> Option<Rig> {
    let lib = bulwark_testkit::skip::require_faketime(test)?;
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path());
    let state = dir.path().join("state");
    let hook = Hook::start();
    let cfg = hook.config(dir.path(), notify);
    Some(Rig {
        lib,
        dir,
        repo,
        state,
        hook,
        cfg,
    })
}

impl Rig {
    /// A 1 MiB image `d.img` of random bytes from `seed`.
    fn image(&self, seed: u64) -> PathBuf {
        let img = self.dir.path().join("d.img");
        std::fs::write(&img, bulwark_testkit::Rng::new(seed).bytes(1 << 20)).unwrap();
        img
    }

    /// The job file `NAME.toml` of job `name` backing up the file `source` of the scratch
    /// folder (which need not exist) to the rig's repository.
    fn job(&self, name: &str, source: &str, extra: &str) -> PathBuf {
        let job = self.dir.path().join(format!("{name}.toml"));
        job_file(&job, name, self.dir.path().join(source), &self.repo, extra);
        job
    }

    /// `bulwark job run JOB` with the rig's state folder at `faketime` (as [`bulwark_at`]).
    fn job_run(&self, faketime: Option<&str>, job: &Path) -> Output {
        bulwark_at(
            faketime.map(|at| (self.lib.as_path(), at)),
            &["job", "run", s(job), "--state-dir", s(&self.state)],
        )
    }

    /// [`check`] of `files` at `at` (`None`: the real clock) with the rig's state and hook.
    fn check(&self, at: Option<&str>, files: &[&Path]) -> (Option<i32>, serde_json::Value) {
        check(
            at.map(|_| self.lib.as_path()),
            at.unwrap_or(""),
            files,
            &self.state,
            &self.cfg,
        )
    }

    /// The overdue message of job `name` of the job file `job` when a check at `at` finds it
    /// overdue (which it must, exiting 1); the check's `backup_missed` notices of it.
    fn overdue(&self, at: &str, job: &Path, name: &str) -> (String, usize) {
        let (code, v) = self.check(Some(at), &[job]);
        assert_eq!(code, Some(1), "{name} is overdue at {at}: {v}");
        let msg = row(&v, job, name)["overdue"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (msg, self.hook.missed(name).len())
    }

    /// Asserts that a check at `at` finds job `name` of the job file `job` overdue, with a
    /// message that says every one of `says`, and that one `backup_missed` was sent about it.
    fn assert_overdue_once(&self, at: &str, job: &Path, name: &str, says: &[&str]) {
        let (msg, sent) = self.overdue(at, job, name);
        for s in says {
            assert!(msg.contains(s), "the message does not say {s:?}: {msg}");
        }
        assert_eq!(sent, 1, "{name} is notified once");
    }
}

/// Sets the modification time of `path` to `secs` seconds ago.
fn written_ago(path: &Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn a_bad_job_file_is_reported_and_every_other_job_is_still_checked_and_notified() {
    let test = "a_bad_job_file_is_reported_and_every_other_job_is_still_checked_and_notified";
    let Some(rig) = rig(test, "") else {
        return;
    };
    let Rig {
        dir,
        state,
        hook,
        cfg,
        ..
    } = &rig;
    let img = rig.image(1);
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    // Sorted first, so a check that stops at it never sees the good job.
    let bad = jobs.join("aa.toml");
    std::fs::write(&bad, "name = \"x\"\nsourec = \"/x\"\nrepository = \"/r\"\n").unwrap();
    let good = jobs.join("zz.toml");
    job_file(&good, "web", &img, &rig.repo, "");
    assert!(rig.job_run(None, &good).status.success());

    let (code, v) = rig.check(Some("+3d"), &[&jobs]);
    assert_eq!(code, Some(1), "an overdue job and a bad file exit 1: {v}");
    let b = row(&v, &bad, "x");
    let err = b["error"].as_str().unwrap_or_default();
    assert!(
        err.contains(s(&bad)) && err.contains("unknown field `sourec`"),
        "the bad file's row names it and its parse error: {b}"
    );
    let w = row(&v, &good, "web");
    assert_eq!(w["job"], "web");
    assert!(w["error"].is_null(), "{w}");
    assert!(
        w["overdue"]
            .as_str()
            .is_some_and(|m| m.contains("job web: no successful backup for 72.0 h")),
        "the good job is still checked: {w}"
    );
    assert_eq!(
        (v["overdue"].as_u64(), v["bad_files"].as_u64()),
        (Some(1), Some(1))
    );
    let web = hook.missed("web");
    assert_eq!(web.len(), 1, "web's backup_missed is still sent");
    let file = hook.missed(s(&bad));
    assert_eq!(file.len(), 1, "the bad file is notified too");
    assert!(
        file[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sourec") && m.contains("no job of this file runs")),
        "{}",
        file[0]
    );

    // The text report says the same, and exits 1 with nothing overdue but the bad file.
    let o = bulwark_at(
        None,
        &[
            "job",
            "check",
            s(&jobs),
            "--state-dir",
            s(state),
            "--notify-config",
            s(cfg),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("BAD     job file {}", s(&bad)))
            && text.contains("ok      job web: last success"),
        "{text}"
    );
    // Only good files: exit 0.
    let (code, v) = rig.check(None, &[&good]);
    assert_eq!(code, Some(0), "{v}");
}

#[test]
fn a_job_failing_every_day_is_overdue_from_its_first_run() {
    let test = "a_job_failing_every_day_is_overdue_from_its_first_run";
    let Some(rig) = rig(test, "") else {
        return;
    };
    let job = rig.job("n", "missing.img", "");
    for d in 1..=4 {
        let at = format!("@2027-01-0{d} 22:00:00");
        let o = rig.job_run(Some(&at), &job);
        assert_eq!(o.status.code(), Some(2), "a run whose disk failed exits 2");
    }
    // 23 h after the last failing run, 95 h after the first.
    rig.assert_overdue_once(
        "@2027-01-05 21:00:00",
        &job,
        "n",
        &[
            "since its first run 95.0 h ago (2027-01-01 22:00:00 UTC",
            "the last run failed",
        ],
    );
}

#[test]
fn a_job_that_never_ran_is_overdue_from_when_its_file_was_written() {
    let test = "a_job_that_never_ran_is_overdue_from_when_its_file_was_written";
    let Some(rig) = rig(test, "") else {
        return;
    };
    let job = rig.job("web", "d.img", "");
    // Just written: within its 26 hours.
    let (code, v) = rig.check(None, &[&job]);
    assert_eq!(code, Some(0), "{v}");
    assert!(row(&v, &job, "web")["overdue"].is_null(), "{v}");
    // 27 hours later, still no run record: overdue.
    rig.assert_overdue_once(
        "+27h",
        &job,
        "web",
        &[
            "job web: never ran; its job file was written 27.0 h ago",
            "is bulwark-job@web.timer enabled?",
        ],
    );
    // A file written long ago that never ran is overdue on the real clock too.
    written_ago(&job, 30 * 3600);
    let (code, _) = rig.check(None, &[&job]);
    assert_eq!(code, Some(1));
}

#[test]
fn a_lasting_overdue_job_is_notified_when_it_becomes_overdue_then_every_repeat_hours() {
    let test = "a_lasting_overdue_job_is_notified_when_it_becomes_overdue_then_every_repeat_hours";
    let Some(rig) = rig(test, "repeat_hours = 24\n") else {
        return;
    };
    rig.image(2);
    let job = rig.job("web", "d.img", "alert_after_hours = 1\n");
    let run = |at: &str| assert!(rig.job_run(Some(at), &job).status.success());
    let sent = |at: &str| rig.overdue(at, &job, "web").1;
    run("+0");
    assert_eq!(sent("+2h"), 1, "sent when it becomes overdue");
    assert_eq!(sent("+3h"), 1, "not again at the next hourly check");
    assert_eq!(sent("+25h"), 1, "not again within repeat_hours");
    assert_eq!(sent("+1561m"), 2, "again after repeat_hours");
    assert_eq!(sent("+27h"), 2);
    // It recovers: a successful run and a check that finds it in time.
    run("+27h");
    let (code, v) = rig.check(Some("+1650m"), &[&job]);
    assert_eq!(code, Some(0), "{v}");
    // Late again 1.5 h after the success: news again, though the last sending was 2.5 h ago.
    assert_eq!(sent("+1710m"), 3, "a new overdue spell is sent at once");
}
