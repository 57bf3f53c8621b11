//! `bulwark-repo verify`: re-reads stored blocks, names what is damaged, and records when
//! each restore point was last verified (`REPO/health/verified.json`, shown by `status` and
//! `bulwark list --json`). With `--within-days N` (the scheduled verify,
//! `bulwark-verify.timer`) only today's share of the jobs is re-read, so that every job is
//! re-read within N days (`bulwark_jobs::verified::due_today`).

use std::path::PathBuf;

use anyhow::Context;
use bulwark_jobs::verified::{due_today, Verified};
use bulwark_repository::{Repository, VerifyReport};

/// Arguments of `bulwark-repo verify`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder.
    dir: PathBuf,
    /// Only this job.
    #[arg(long)]
    job: Option<String>,
    /// Re-read only today's share of the jobs so that every job is re-read within N days
    /// (for a daily timer); jobs never verified come first.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
    within_days: Option<u32>,
}

/// Runs `bulwark-repo verify`.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    super::as_repo_owner(&a.dir)?;
    let repo = Repository::open(&a.dir).with_context(|| format!("opening {}", a.dir.display()))?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let now = bulwark_time::UnixTime::now().secs();
    let mut verified = Verified::load(repo.root()).unwrap_or_else(|e| {
        eprintln!("warning: {e}; starting a new record of verify times");
        Verified::default()
    });
    let all_jobs = match &a.job {
        Some(j) => {
            // Before scanning: a mistyped name is an error, not "0 restore points, all good".
            repo.require_job(j)?;
            vec![j.clone()]
        }
        None => repo.jobs()?,
    };
    let mut ids = Vec::with_capacity(all_jobs.len());
    for j in &all_jobs {
        let scan = repo.scan_job(j)?;
        ids.push(
            scan.points
                .iter()
                .map(|p| p.meta.point.to_hex())
                .collect::<Vec<_>>(),
        );
    }
    let todo: Vec<String> = match a.within_days {
        None => all_jobs.clone(),
        Some(n) => {
            let input: Vec<_> = all_jobs
                .iter()
                .zip(&ids)
                .map(|(j, p)| (j.clone(), verified.oldest(j, p)))
                .collect();
            due_today(&input, n, now)
        }
    };
    let mut r = VerifyReport::default();
    if a.within_days.is_none() && a.job.is_none() {
        // Everything at once: also the ledger's jobs whose files are all gone.
        r = repo.verify(None, threads, &|_| {})?;
    } else {
        for j in &todo {
            let one = repo.verify(Some(j), threads, &|_| {})?;
            r.points_checked += one.points_checked;
            r.blocks_checked += one.blocks_checked;
            r.bytes_checked += one.bytes_checked;
            r.damaged.extend(one.damaged);
        }
    }
    for (j, p) in all_jobs.iter().zip(&ids) {
        if todo.contains(j) {
            verified.mark(j, p, now);
        }
    }
    if let Err(e) = verified.save(repo.root()) {
        eprintln!("warning: {e}; the verify times of this run are not recorded");
    }
    if json {
        let damaged: Vec<_> = r
            .damaged
            .iter()
            .map(|d| serde_json::json!({"job": d.job, "point": d.point.map(|p| p.to_hex()), "path": d.path,
                                        "problems": d.problems, "blocks": d.blocks}))
            .collect();
        outln!(
            "{}",
            serde_json::json!({"points_checked": r.points_checked, "damaged": damaged,
                "jobs_verified": todo, "jobs": all_jobs.len(), "within_days": a.within_days})
        );
    } else {
        for d in &r.damaged {
            outln!(
                "DAMAGED {} {}: {}",
                d.job,
                d.path.display(),
                d.problems.join("; ")
            );
        }
        outln!(
            "verified {} restore points, {} blocks{}",
            r.points_checked,
            r.blocks_checked,
            match a.within_days {
                Some(n) => format!(
                    " ({} of {} jobs today, every job within {n} days)",
                    todo.len(),
                    all_jobs.len()
                ),
                None => String::new(),
            }
        );
    }
    Ok(if r.is_clean() { 0 } else { 1 })
}
