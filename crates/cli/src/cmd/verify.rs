//! `bulwark verify`.

use std::path::Path;

use crate::output::{human, Output, EXIT_DAMAGE, EXIT_OK};

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
    let r = repo.verify(a.at.job.as_deref(), threads, out)?;
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
