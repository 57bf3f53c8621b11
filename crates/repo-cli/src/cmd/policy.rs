//! `bulwark-repo policy`: a job's retention policy, set on the repository.

use std::path::PathBuf;

use anyhow::Context;
use bulwark_repository::retention::Policy;
use bulwark_repository::Repository;

/// Arguments of `bulwark-repo policy`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder.
    dir: PathBuf,
    /// The job.
    #[arg(long)]
    job: String,
    /// Keep every restore point younger than this many days.
    #[arg(long)]
    keep_days: Option<u32>,
    /// Keep at least this many newest restore points (whichever of days and points keeps more).
    #[arg(long)]
    keep_points: Option<u32>,
    /// GFS: weekly fulls to keep.
    #[arg(long)]
    weekly: Option<u32>,
    /// GFS: monthly fulls to keep.
    #[arg(long)]
    monthly: Option<u32>,
    /// GFS: yearly fulls to keep.
    #[arg(long)]
    yearly: Option<u32>,
}

/// Runs `bulwark-repo policy`: shows the policy, or changes the fields given.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    super::as_repo_owner(&a.dir)?;
    let repo = Repository::open(&a.dir).with_context(|| format!("opening {}", a.dir.display()))?;
    let old = repo.policy(&a.job)?;
    let changes = [a.keep_days, a.keep_points, a.weekly, a.monthly, a.yearly];
    let policy = if changes.iter().any(Option::is_some) {
        let base = old.unwrap_or_default();
        let p = Policy {
            keep_days: a.keep_days.unwrap_or(base.keep_days),
            keep_points: a.keep_points.unwrap_or(base.keep_points),
            weekly: a.weekly.unwrap_or(base.weekly),
            monthly: a.monthly.unwrap_or(base.monthly),
            yearly: a.yearly.unwrap_or(base.yearly),
        };
        repo.set_policy(&a.job, &p)?;
        // A policy may be set before the first backup, but a mistyped name never applies.
        if let Err(e) = repo.require_job(&a.job) {
            eprintln!(
                "warning: {e}; the policy is set and applies once job {} has restore points: check the name",
                a.job
            );
        }
        Some(p)
    } else {
        old
    };
    match (policy, json) {
        (Some(p), true) => outln!(
            "{}",
            serde_json::json!({"job": a.job, "keep_days": p.keep_days, "keep_points": p.keep_points,
                "weekly": p.weekly, "monthly": p.monthly, "yearly": p.yearly})
        ),
        (Some(p), false) => outln!(
            "job {}: keep {} days or {} points (whichever keeps more); GFS {} weekly, {} monthly, {} yearly",
            a.job, p.keep_days, p.keep_points, p.weekly, p.monthly, p.yearly
        ),
        (None, true) => outln!("{}", serde_json::json!({"job": a.job, "policy": null})),
        (None, false) => outln!("job {}: no retention policy: nothing is ever removed", a.job),
    }
    Ok(0)
}
