//! `bulwark-repo verify`.

use std::path::PathBuf;

use anyhow::Context;
use bulwark_repository::Repository;

/// Arguments of `bulwark-repo verify`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder.
    dir: PathBuf,
    /// Only this job.
    #[arg(long)]
    job: Option<String>,
}

/// Runs `bulwark-repo verify`.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    let repo = Repository::open(&a.dir).with_context(|| format!("opening {}", a.dir.display()))?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let r = repo.verify(a.job.as_deref(), threads, &|_| {})?;
    if json {
        let damaged: Vec<_> = r
            .damaged
            .iter()
            .map(|d| serde_json::json!({"job": d.job, "point": d.point.map(|p| p.to_hex()), "path": d.path,
                                        "problems": d.problems, "blocks": d.blocks}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"points_checked": r.points_checked, "damaged": damaged})
        );
    } else {
        for d in &r.damaged {
            println!(
                "DAMAGED {} {}: {}",
                d.job,
                d.path.display(),
                d.problems.join("; ")
            );
        }
        println!(
            "verified {} restore points, {} blocks",
            r.points_checked, r.blocks_checked
        );
    }
    Ok(if r.is_clean() { 0 } else { 1 })
}
