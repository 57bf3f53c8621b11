//! `bulwark copy`: restore points of one or more jobs copied from one repository to another
//! (docs/copy-jobs.md), or with `--verify` both sides compared.

use std::path::Path;

use anyhow::Context;
use bulwark_copy::{
    CopyOptions, CopyReport, LocalSource, LocalTarget, NetSource, NetTarget, Source, Target,
    VerifyCopies,
};

use crate::output::{human, utc, Output, EXIT_DAMAGE, EXIT_OK};
use crate::repo::Repo;

/// Exit code when a job could not be copied for another reason than damage.
const EXIT_ERROR: i32 = 2;

/// Arguments of `bulwark copy`.
#[derive(clap::Args)]
pub struct Args {
    /// The source repository: a local folder, or HOST:PORT of a repository service this host
    /// is enrolled with (pull: the identity must own the jobs there).
    #[arg(long)]
    pub from: std::path::PathBuf,
    /// The target repository: a local folder, or HOST:PORT of a repository service this host
    /// is enrolled with (push).
    #[arg(long)]
    pub to: std::path::PathBuf,
    /// Jobs to copy (repeat for several); default: every job of the source.
    #[arg(long = "job")]
    pub jobs: Vec<String>,
    /// Compare both sides instead of copying: root digests of every point and each side's own
    /// verify (every stored block, and the immutability ledger when guarded). Exit 1 when
    /// anything differs or is damaged.
    #[arg(long)]
    pub verify: bool,
    /// Send at most this many bytes per second (e.g. 20M, 512K).
    #[arg(long, value_parser = parse_rate)]
    pub bwlimit: Option<u64>,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let (num, mult) = bulwark_jobs::copy::rate_parts(s);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate like 512K, 20M or 1G (bytes per second)"))?;
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s} is out of range"))
}

fn open_source(r: &Repo) -> anyhow::Result<Box<dyn Source>> {
    Ok(match r {
        Repo::Local(p) => Box::new(LocalSource {
            repo: crate::repo::open_local(p)?,
        }),
        Repo::Remote { addr, config_dir } => Box::new(
            NetSource::connect(config_dir, addr.clone())
                .with_context(|| format!("connecting to the source {addr}"))?,
        ),
    })
}

/// A copy into the repository it reads from would copy nothing and report success: refused,
/// whatever the spelling (`REPO/`, a symbolic link, `bulwark://H:P` and `H:P`). Two local
/// folders are the same repository when their repository ids are.
fn refuse_same_repository(from: &Repo, to: &Repo, what: &str) -> anyhow::Result<()> {
    let same = match (from, to) {
        (Repo::Local(f), Repo::Local(t)) => {
            let id = |p: &Path| {
                bulwark_repository::Repository::open(p)
                    .ok()
                    .map(|r| r.config().id.clone())
            };
            f.canonicalize().ok() == t.canonicalize().ok()
                || matches!((id(f), id(t)), (Some(a), Some(b)) if a == b)
        }
        (Repo::Remote { addr: f, .. }, Repo::Remote { addr: t, .. }) => f == t,
        _ => false,
    };
    if same {
        anyhow::bail!(
            "{what} are the same repository ({}); a copy needs a second repository",
            match from {
                Repo::Local(p) => p.display().to_string(),
                Repo::Remote { addr, .. } => addr.to_string(),
            }
        );
    }
    Ok(())
}

/// Root copying into a local repository that belongs to its service user would leave
/// root-owned files there (partial copies in `incoming/`, locks) that the service cannot
/// replace and the immutability service refuses to seal (it seals for the service user
/// only): refused before anything is written.
fn refuse_root_into_owned(p: &Path) -> anyhow::Result<()> {
    use bulwark_cli_common::owner::{repo_owner_for_root, RepoOwner};
    if let Some(RepoOwner::User { uid, .. } | RepoOwner::UserWithGroupRoot { uid }) =
        repo_owner_for_root(p)?
    {
        anyhow::bail!(
            "the target {} belongs to its service user (uid {uid}): a copy by root would leave root-owned files there that the service cannot seal or replace. Run the copy as that user (`sudo -u USER bulwark copy …`, or `User=` in the job's unit); nothing was written",
            p.display()
        );
    }
    Ok(())
}

fn open_target(r: &Repo) -> anyhow::Result<Box<dyn Target>> {
    Ok(match r {
        Repo::Local(p) => {
            refuse_root_into_owned(p)?;
            Box::new(LocalTarget::new(crate::repo::open_local(p)?))
        }
        Repo::Remote { addr, config_dir } => Box::new(
            NetTarget::connect(config_dir, addr.clone())
                .with_context(|| format!("connecting to the target {addr}"))?,
        ),
    })
}

/// Runs `bulwark copy`.
pub fn run(a: Args, config_dir: &Path, out: &Output) -> anyhow::Result<i32> {
    let from = Repo::parse(&a.from, config_dir);
    let to = Repo::parse(&a.to, config_dir);
    refuse_same_repository(&from, &to, "--from and --to")?;
    let mut src = open_source(&from)?;
    let mut dst = open_target(&to)?;
    if a.verify {
        let v = bulwark_copy::verify_copies(src.as_mut(), dst.as_mut(), &a.jobs)
            .context("comparing the two repositories")?;
        return Ok(print_verify(&v, out));
    }
    let opts = CopyOptions {
        jobs: a.jobs,
        bandwidth: a.bwlimit,
    };
    let pb = out.progress(0, "copying");
    let mut before = 0u64;
    let mut last_point = None;
    let mut progress = |job: &str, point: bulwark_format::PointId, sent: u64| {
        if last_point != Some(point) {
            before = pb.position();
            last_point = Some(point);
            pb.set_message(job.to_string());
        }
        pb.set_length(before + sent);
        pb.set_position(before + sent);
    };
    let r = bulwark_copy::copy(src.as_mut(), dst.as_mut(), &opts, &mut progress)
        .context("copying restore points")?;
    pb.finish_and_clear();
    Ok(print_copy(&r, out))
}

/// The exit code of a copy: 0 every job copied, 1 damage, 2 another failure.
fn copy_code(r: &CopyReport) -> i32 {
    if r.ok() {
        EXIT_OK
    } else if r.jobs.iter().any(|j| j.damaged) {
        EXIT_DAMAGE
    } else {
        EXIT_ERROR
    }
}

fn print_copy(r: &CopyReport, out: &Output) -> i32 {
    let code = copy_code(r);
    if out.json {
        out.json(r);
        return code;
    }
    outln!("copy from {} to {}", r.from, r.to);
    for j in &r.jobs {
        for p in &j.points {
            let lock = match (p.immutable, p.expiry_unix) {
                (true, Some(e)) => format!(", locked until {}", utc(e)),
                _ if p.mode == "held" => String::new(),
                _ => ", NOT locked (the target has no immutability service)".into(),
            };
            // The class the target's own policy gives it (a verbatim file keeps the source's).
            let class = match p.retention {
                Some(c) if c != "regular" => format!(", kept as {c} by the target's policy"),
                _ => String::new(),
            };
            outln!(
                "  {} {} -> {} ({}): {} sent, {} from the target's own blocks, {} resumed{lock}{class}",
                j.job,
                p.source_point,
                p.target_point,
                p.mode,
                human(p.bytes_sent),
                human(p.bytes_local),
                human(p.bytes_resumed),
            );
        }
        outln!(
            "job {}: {} copied, {} skipped, {} failed; {} sent",
            j.job,
            j.points_copied,
            j.points_skipped,
            j.points_failed,
            human(j.bytes_sent)
        );
        if let Some(e) = &j.error {
            outln!("  FAILED: {e}");
            // Damage in the source fails again the same way, and a full target until it has
            // space (its message says what to do): no advice to retry.
            if !j.damaged && !j.target_full {
                outln!("  Run the same command again: points already copied are skipped and a partial copy resumes.");
            }
        }
    }
    let rate = human((r.bytes_sent as f64 / r.seconds.max(1e-3)) as u64);
    let failed = r.jobs.iter().filter(|j| j.error.is_some()).count();
    if failed == 0 {
        outln!(
            "{} sent in {:.1} s ({rate}/s)",
            human(r.bytes_sent),
            r.seconds
        );
    } else {
        outln!(
            "copy FAILED for {failed} of {} jobs ({} sent in {:.1} s, {rate}/s)",
            r.jobs.len(),
            human(r.bytes_sent),
            r.seconds
        );
    }
    code
}

fn print_verify(v: &VerifyCopies, out: &Output) -> i32 {
    let code = if v.damaged() { EXIT_DAMAGE } else { EXIT_OK };
    if out.json {
        out.json(v);
        return code;
    }
    outln!("compared {} with {}", v.from, v.to);
    for j in &v.jobs {
        for p in j.points.iter().filter(|p| p.status != "same") {
            outln!(
                "  {} {}: {} (source {}, target {})",
                j.job,
                p.source_point.as_deref().unwrap_or("?"),
                p.status.to_uppercase(),
                p.source_root_digest.as_deref().unwrap_or("-"),
                p.target_root_digest.as_deref().unwrap_or("-"),
            );
        }
        for d in &j.source_damage {
            outln!("  {} DAMAGED on the source: {d}", j.job);
        }
        for d in &j.target_damage {
            outln!("  {} DAMAGED on the target: {d}", j.job);
        }
        outln!(
            "job {}: {} same, {} different, {} missing on the target, {} only on the target; source damage {}, target damage {}",
            j.job,
            j.same,
            j.different,
            j.missing_on_target,
            j.only_on_target,
            j.source_damage.len(),
            j.target_damage.len()
        );
    }
    if code != EXIT_OK {
        outln!("Damage or a difference was found: restore from the side that verifies clean, and run `bulwark verify` on the other.");
    }
    code
}

/// `bulwark job run FILE` of a `[copy]` job file: the same copy as `bulwark copy`, with the
/// job file's `repository` as the source, recorded like any job run (one result per copied
/// repository job) and notified when it fails. Its own fields of the run's JSON are the copy
/// report's (`from`, `to`, `jobs`, `bytes_sent`, `seconds`), also when it stopped early.
pub(crate) fn run_job(
    job: &bulwark_jobs::JobFile,
    spec: &bulwark_jobs::copy::CopySpec,
    config_dir: &Path,
    state_dir: &Path,
    notify: Option<&Path>,
    out: &Output,
) -> anyhow::Result<super::job::Ran> {
    use bulwark_jobs::record::{DiskResult, RunRecord};
    let now = || bulwark_time::UnixTime::now().secs();
    let previous = RunRecord::load(state_dir, &job.name)?;
    let record = RunRecord::starting(&job.name, previous.as_ref(), now());
    std::fs::create_dir_all(state_dir.join("jobs"))
        .with_context(|| format!("creating {}", state_dir.display()))?;
    record.save(state_dir)?;
    let result = (|| -> anyhow::Result<CopyReport> {
        let bandwidth = spec
            .rate()
            .map_err(|e| anyhow::anyhow!("job file of {}: {e}", job.name))?;
        let from = Repo::parse(Path::new(job.repository.trim()), config_dir);
        let to = Repo::parse(Path::new(spec.to.trim()), config_dir);
        refuse_same_repository(&from, &to, "the job's repository and [copy] to")?;
        let mut src = open_source(&from)?;
        let mut dst = open_target(&to)?;
        let opts = CopyOptions {
            jobs: spec.jobs.clone(),
            bandwidth,
        };
        bulwark_copy::copy(src.as_mut(), dst.as_mut(), &opts, &mut |_, _, _| {})
            .context("copying restore points")
    })();
    let (report, results) = match result {
        Ok(r) => {
            let results = r
                .jobs
                .iter()
                .map(|j| DiskResult {
                    disk: j.job.clone(),
                    job: j.job.clone(),
                    ok: j.error.is_none(),
                    kind: "copy".into(),
                    point: j.points.last().map(|p| p.target_point.clone()),
                    bytes_stored: j.bytes_sent,
                    seconds: r.seconds,
                    error: j.error.clone(),
                    ..Default::default()
                })
                .collect();
            (Some(r), Ok(results))
        }
        Err(e) => (None, Err(e)),
    };
    let (record, error) = super::job::Ran::finish(record, state_dir, "copy", results)?;
    if !record.ok {
        let failed: Vec<String> = record
            .disks
            .iter()
            .filter(|d| !d.ok)
            .map(|d| format!("{}: {}", d.job, d.error.clone().unwrap_or_default()))
            .collect();
        crate::notify::send(
            notify,
            crate::notify::Event::BackupFailed,
            &job.name,
            &format!("copy job {} failed: {}", job.name, failed.join(" | ")),
        );
    }
    let (extra, code) = match &report {
        Some(r) => {
            let code = if out.json {
                copy_code(r)
            } else {
                print_copy(r, out)
            };
            (serde_json::to_value(r)?, code)
        }
        None => (
            serde_json::json!({
                "from": job.repository, "to": spec.to, "jobs": [], "bytes_sent": 0,
                "seconds": 0.0,
            }),
            error
                .as_ref()
                .map_or(EXIT_ERROR, bulwark_cli_common::exit_code_of),
        ),
    };
    let serde_json::Value::Object(extra) = extra else {
        unreachable!("a copy report is an object")
    };
    Ok(super::job::Ran {
        record,
        error,
        extra,
        code,
    })
}
