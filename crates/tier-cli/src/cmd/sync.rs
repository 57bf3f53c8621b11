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
                "clock_skew_seconds": r.skew, "unguarded": r.unguarded,
                "damaged": r.damaged, "unreadable": r.unreadable})
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
        for d in &r.damaged {
            outln!("DAMAGED, not uploaded: {d}");
        }
        for u in &r.unreadable {
            outln!("UNREADABLE, not uploaded: {u}");
        }
    }
    if !r.damaged.is_empty() || !r.unreadable.is_empty() {
        eprintln!(
            "error: {} restore points were not copied to the tier because they are damaged or unreadable (a damaged copy would stay locked there); they stay pending: run `bulwark-repo verify` and see docs/s3-tier.md",
            r.damaged.len() + r.unreadable.len()
        );
        return Ok(bulwark_cli_common::EXIT_DAMAGE);
    }
    Ok(0)
}
