//! `bulwark-tier add`.

use std::path::PathBuf;

use anyhow::Context;
use bulwark_tier_s3::{Tier, TierMode};

use super::{open, Target};

/// Arguments of `bulwark-tier add`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder.
    dir: PathBuf,
    #[command(flatten)]
    target: Target,
    /// copy: keep local files too; move: free local files whose protection ended, once
    /// their copy is confirmed.
    #[arg(long, default_value = "copy")]
    mode: TierMode,
    /// Create the bucket, with Object Lock enabled, if it does not exist.
    #[arg(long)]
    create_bucket: bool,
}

/// Runs `bulwark-tier add`: exit 0 once the lock probe passed and the settings are saved.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    let repo = open(&a.dir)?;
    let prefix = bulwark_tier_s3::settings::repo_prefix(&repo.config().id);
    let s = a.target.settings(a.mode, prefix);
    if a.create_bucket {
        bulwark_tier_s3::create_bucket(&repo, &s).context("creating the bucket")?;
    }
    let (tier, r) = Tier::add(&repo, s).context("adding the tier")?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({"tier": tier.settings.name, "bucket": tier.settings.bucket,
                "endpoint": tier.settings.endpoint, "prefix": tier.settings.prefix, "mode": tier.settings.mode.as_str(),
                "lock_probe": {"delete_refused": r.probe.delete.err(), "shorten_refused": r.probe.shorten.err()},
                "clock_skew_seconds": r.skew})
        );
    } else {
        outln!(
            "tier {} added: bucket {} at {}, copies under {}/ ({} mode)",
            tier.settings.name,
            tier.settings.bucket,
            tier.settings.endpoint,
            tier.settings.prefix,
            tier.settings.mode.as_str()
        );
        outln!(
            "lock probe: deleting a COMPLIANCE-locked version was refused ({}), shortening its retention was refused ({})",
            r.probe.delete.clone().err().unwrap_or_default(),
            r.probe.shorten.clone().err().unwrap_or_default()
        );
        outln!(
            "bucket default retention: COMPLIANCE, {} days",
            repo.config().immutable_days
        );
        outln!(
            "copy restore points with `bulwark-tier sync {}`",
            a.dir.display()
        );
    }
    Ok(0)
}
