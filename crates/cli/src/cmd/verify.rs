//! `bulwark verify`.

use std::path::Path;

use bulwark_jobs::verified::Verified;

use crate::output::{human, Output, EXIT_DAMAGE, EXIT_OK};
use crate::repo::{open_local, Repo, VerifyReport};

/// Arguments of `bulwark verify`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub at: super::JobsArg,
    /// Reader threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `bulwark verify`: exit 0 when clean, 1 naming each damaged restore point.
pub fn run(a: Args, config_dir: &Path, out: &Output) -> anyhow::Result<i32> {
    let repo = &a.at.open(config_dir);
    let threads = a.threads.unwrap_or_else(bulwark_engine::default_threads);
    let r = verify_recorded(repo, a.at.job.as_deref(), threads, out)?;
    let code = if r.clean { EXIT_OK } else { EXIT_DAMAGE };
    if out.json {
        out.json(&r);
        return Ok(code);
    }
    for d in &r.damaged {
        let id = d.point.clone().unwrap_or_else(|| "?".into());
        match &d.path {
            Some(p) => outln!("DAMAGED job {} point {id} ({})", d.job, p.display()),
            None => outln!("DAMAGED job {} point {id}", d.job),
        }
        for p in &d.problems {
            outln!("  {p}");
        }
        if !d.blocks.is_empty() {
            let shown: Vec<String> = d.blocks.iter().take(20).map(|b| b.to_string()).collect();
            let more = d.blocks.len().saturating_sub(20) as u64 + d.more_blocks;
            outln!(
                "  damaged blocks: {}{}",
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
    }
    outln!(
        "verified {} restore points, {} blocks, {} stored{}: {}",
        r.points_checked,
        r.blocks_checked,
        human(r.bytes_checked),
        r.repository
            .as_ref()
            .map(|a| format!(" on {a}"))
            .unwrap_or_default(),
        if r.clean {
            "all good".to_string()
        } else {
            format!("{} damaged", r.damaged.len())
        }
    );
    if !r.clean {
        outln!("The next backup of an affected job should be an active full: `bulwark backup --full ...`");
    }
    Ok(code)
}

/// [`Repo::verify`], and for a local repository the record of when each restore point was
/// last verified (`REPO/health/verified.json`, as `bulwark-repo verify` keeps it; shown by
/// `bulwark-repo status` and `bulwark list --json`). A record that cannot be written (a
/// read-only repository) is a warning: the verify itself went through. Through a service
/// nothing is recorded: the repository host's `bulwark-repo verify` keeps the record.
pub fn verify_recorded(
    repo: &Repo,
    job: Option<&str>,
    threads: usize,
    out: &Output,
) -> anyhow::Result<VerifyReport> {
    let Repo::Local(path) = repo else {
        return repo.verify(job, threads, out);
    };
    let local = open_local(path)?;
    let jobs = match job {
        Some(j) => {
            bulwark_format::validate_name("job", j)?;
            vec![j.to_string()]
        }
        None => local.jobs()?,
    };
    // The points held when verify starts: those are the ones it reads.
    let mut held = Vec::with_capacity(jobs.len());
    for j in jobs {
        let scan = local.scan_job(&j)?;
        let ids: Vec<String> = scan.points.iter().map(|p| p.meta.point.to_hex()).collect();
        held.push((j, ids));
    }
    let r = repo.verify(job, threads, out)?;
    let now = bulwark_time::UnixTime::now().secs();
    let mut verified = Verified::load(local.root()).unwrap_or_else(|e| {
        eprintln!("warning: {e}; starting a new record of verify times");
        Verified::default()
    });
    for (j, ids) in &held {
        verified.mark(j, ids, now);
    }
    if let Err(e) = verified.save(local.root()) {
        eprintln!("warning: {e}; the verify times of this run are not recorded");
    }
    Ok(r)
}
