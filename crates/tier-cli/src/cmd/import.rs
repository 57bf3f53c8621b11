//! `bulwark-tier import`.

use std::path::PathBuf;

use bulwark_tier_s3::{import, TierMode};

use super::Target;

/// Arguments of `bulwark-tier import`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder (created when missing).
    dir: PathBuf,
    #[command(flatten)]
    target: Target,
    /// The id of the lost repository, when the bucket holds several.
    #[arg(long)]
    source_id: Option<String>,
}

/// Runs `bulwark-tier import`: rebuilds the tier catalog of a lost host from the bucket.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    let s = a.target.settings(TierMode::Copy, String::new());
    let r = import(&a.dir, s, a.source_id.as_deref())?;
    if json {
        outln!(
            "{}",
            serde_json::json!({"source_id": r.source_id, "created_repository": r.created_repository,
                "imported": r.imported, "skipped": r.skipped})
        );
    } else {
        for (v, why) in &r.skipped {
            eprintln!("skipped {v}: {why}");
        }
        outln!(
            "imported {} restore points of repository {} into {}{}; restore them with `bulwark restore --repo {} --job JOB TARGET`",
            r.imported.len(),
            r.source_id,
            a.dir.display(),
            if r.created_repository { " (new repository)" } else { "" },
            a.dir.display()
        );
    }
    Ok(0)
}
