//! `bulwark-tier status`: the same tier lines as `bulwark-repo status`, from the local catalog.

use std::path::PathBuf;

use super::open;

/// Arguments of `bulwark-tier status`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder.
    dir: PathBuf,
}

/// Runs `bulwark-tier status`; makes no request to the store (`bulwark-tier verify` does).
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    let repo = open(&a.dir)?;
    let tiers = bulwark_tier_s3::status(&repo)?;
    if json {
        outln!(
            "{}",
            serde_json::json!({"repository": a.dir, "tiers": tiers})
        );
    } else if tiers.is_empty() {
        outln!(
            "tiers: none (copies to S3 Object Lock storage: `bulwark-tier add {} --endpoint URL --bucket NAME --credentials FILE`)",
            a.dir.display()
        );
    } else {
        for t in &tiers {
            outln!("{}", t.line());
        }
    }
    Ok(0)
}
