//! `bulwark-tier sync`.

use bulwark_tier_s3::SyncOptions;

/// Arguments of `bulwark-tier sync`.
pub use super::RepoTier as Args;

/// Runs `bulwark-tier sync`; a failed sync is resumed by running it again.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    let (repo, tier) = a.open()?;
    let r = tier.sync(&repo, &SyncOptions::default())?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({"uploaded": r.uploaded, "adopted": r.adopted, "already": r.already,
                "extended": r.extended, "moved": r.moved, "bytes_uploaded": r.bytes_uploaded,
                "parts_uploaded": r.parts_uploaded, "parts_resumed": r.parts_resumed,
                "clock_skew_seconds": r.skew, "unguarded": r.unguarded})
        );
    } else {
        outln!(
            "uploaded {} restore points ({} bytes, {} parts, {} parts resumed), adopted {}, {} already copied, {} retention extended, {} local files freed",
            r.uploaded.len(),
            r.bytes_uploaded,
            r.parts_uploaded,
            r.parts_resumed,
            r.adopted.len(),
            r.already,
            r.extended,
            r.moved.len()
        );
    }
    Ok(0)
}
