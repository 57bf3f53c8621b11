//! `bulwark list`.

use std::path::Path;

use crate::output::{human, Output, EXIT_OK};
use crate::repo::{open_local, Repo};

/// Arguments of `bulwark list`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub at: super::JobsArg,
}

/// Runs `bulwark list`.
pub fn run(a: Args, config_dir: &Path, out: &Output) -> anyhow::Result<i32> {
    if let Some(j) = &a.at.job {
        bulwark_format::validate_name("job", j)?;
    }
    let repo = &a.at.open(config_dir);
    let r = repo.list(a.at.job.as_deref())?;
    if let (Some(j), Repo::Local(path)) = (&a.at.job, repo) {
        // Nothing listed: a mistyped name, or a job only the immutability ledger still holds.
        if r.jobs
            .iter()
            .all(|l| l.points.is_empty() && l.unreadable.is_empty())
        {
            open_local(path)?.require_job(j)?;
        }
    }
    if out.json {
        out.json(&r);
        return Ok(EXIT_OK);
    }
    for j in &r.jobs {
        outln!("job {}", j.job);
        let mut last_chain = None;
        for p in &j.points {
            if last_chain != Some(&p.chain) {
                match (p.encryption, &p.key_fingerprint) {
                    (Some(mode), Some(k)) => {
                        outln!("  chain {} (encrypted, {mode}, key {k})", p.chain)
                    }
                    _ => outln!("  chain {}", p.chain),
                }
                last_chain = Some(&p.chain);
            }
            match (p.disk_size, p.file_bytes, p.new_bytes) {
                (Some(disk), Some(file), Some(new)) => outln!(
                    "    {}  {:14}  {}  disk {:>10}  stored {:>10}  new {:>10}",
                    p.point,
                    p.kind,
                    p.created,
                    human(disk),
                    human(file),
                    human(new)
                ),
                _ => outln!(
                    "    {}  {:14}  {}  in the tier only",
                    p.point,
                    p.kind,
                    p.created
                ),
            }
        }
        for u in &j.unreadable {
            outln!("  UNREADABLE {}: {}", u.path.display(), u.error);
        }
    }
    if r.jobs.is_empty() {
        match &r.repository {
            Some(addr) => outln!("no restore points of this client yet on {addr}"),
            None => outln!("no restore points yet"),
        }
    }
    Ok(EXIT_OK)
}
