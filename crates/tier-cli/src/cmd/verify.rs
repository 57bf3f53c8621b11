//! `bulwark-tier verify`.

/// Arguments of `bulwark-tier verify`.
pub use super::RepoTier as Args;

/// Runs `bulwark-tier verify`: exit 1 when a copy's version, lock, retention or content is
/// not as recorded.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    let (_repo, tier) = a.open()?;
    let r = tier.verify()?;
    if json {
        let p: Vec<_> = r
            .problems
            .iter()
            .map(|p| serde_json::json!({"point": p.point, "key": p.key, "version_id": p.version_id, "problem": p.why}))
            .collect();
        outln!(
            "{}",
            serde_json::json!({"checked": r.checked, "bytes": r.bytes, "problems": p})
        );
    } else {
        for p in &r.problems {
            outln!(
                "BAD {} ({} version {}): {}",
                p.point,
                p.key,
                p.version_id,
                p.why
            );
        }
        outln!(
            "checked {} copies ({} bytes): {}",
            r.checked,
            r.bytes,
            if r.problems.is_empty() {
                "all COMPLIANCE-locked, retention and content as recorded".to_string()
            } else {
                format!("{} problems", r.problems.len())
            }
        );
    }
    Ok(if r.problems.is_empty() { 0 } else { 1 })
}
