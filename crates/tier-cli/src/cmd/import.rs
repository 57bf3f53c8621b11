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
            serde_json::json!({"source_id": r.source_id, "source_prefix": r.source_prefix,
                "repository_id": r.repository_id, "prefix": r.prefix,
                "created_repository": r.created_repository, "imported": r.imported,
                "already_recorded": r.already_recorded, "skipped": r.skipped})
        );
    } else {
        for (v, why) in &r.skipped {
            eprintln!("skipped {v}: {why}");
        }
        let d = a.dir.display();
        outln!(
            "imported {} restore points of repository {} (keys under {}/) into {d}{}{}; restore them with `bulwark restore --repo {d} --job JOB TARGET`",
            r.imported.len(),
            r.source_id,
            r.source_prefix,
            if r.created_repository { " (new repository)" } else { "" },
            match r.already_recorded.len() {
                0 => String::new(),
                n => format!(", {n} were recorded already"),
            },
        );
        if r.prefix == r.source_prefix {
            outln!(
                "they are this repository's own copies: `bulwark-tier sync {d}` goes on copying under {}/",
                r.prefix
            );
        } else {
            outln!(
                "this repository's id is {}: `bulwark-tier sync {d}` copies its own restore points under {}/; the imported copies stay under {}/ and are only read, so the two repositories never share a prefix",
                r.repository_id,
                r.prefix,
                r.source_prefix
            );
        }
    }
    Ok(0)
}
