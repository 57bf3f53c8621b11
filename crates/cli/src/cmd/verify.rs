//! `bulwark verify`.

use std::path::PathBuf;

use serde_json::json;

use crate::output::{human, Output, EXIT_DAMAGE, EXIT_OK};

/// Arguments of `bulwark verify`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository: a local folder, or HOST:PORT (or bulwark://HOST:PORT) of an enrolled repository service.
    #[arg(long)]
    repo: PathBuf,
    /// Only this job.
    #[arg(long)]
    job: Option<String>,
    /// Reader threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `bulwark verify`: exit 0 when clean, 1 naming each damaged restore point.
pub fn run(a: Args, out: &Output) -> anyhow::Result<i32> {
    if let Some(addr) = super::remote::target(&a.repo) {
        return super::remote::verify(&addr, a.job.as_deref(), out);
    }
    let repo = super::open_repo_with_tier(&a.repo)?;
    let pb = out.progress(0, "verify");
    let threads = a.threads.unwrap_or_else(bulwark_engine::default_threads);
    let r = repo.verify(a.job.as_deref(), threads, &|n| pb.inc(n))?;
    pb.finish_and_clear();
    if out.json {
        let damaged: Vec<_> = r
            .damaged
            .iter()
            .map(|d| {
                json!({"job": d.job, "point": d.point.map(|p| p.to_hex()), "path": d.path,
                            "problems": d.problems, "blocks": d.blocks})
            })
            .collect();
        out.json(&json!({"points_checked": r.points_checked, "blocks_checked": r.blocks_checked,
                         "bytes_checked": r.bytes_checked, "damaged": damaged, "clean": r.is_clean()}));
    } else {
        for d in &r.damaged {
            let id = d.point.map(|p| p.to_hex()).unwrap_or_else(|| "?".into());
            println!("DAMAGED job {} point {id} ({})", d.job, d.path.display());
            for p in &d.problems {
                println!("  {p}");
            }
            if !d.blocks.is_empty() {
                let shown: Vec<String> = d.blocks.iter().take(20).map(|b| b.to_string()).collect();
                let more = d.blocks.len().saturating_sub(20);
                println!(
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
        println!(
            "verified {} restore points, {} blocks, {} stored: {}",
            r.points_checked,
            r.blocks_checked,
            human(r.bytes_checked),
            if r.is_clean() {
                "all good".to_string()
            } else {
                format!("{} damaged", r.damaged.len())
            }
        );
        if !r.is_clean() {
            println!("The next backup of an affected job should be an active full: `bulwark backup --full ...`");
        }
    }
    Ok(if r.is_clean() { EXIT_OK } else { EXIT_DAMAGE })
}
