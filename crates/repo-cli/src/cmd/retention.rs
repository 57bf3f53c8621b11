//! `bulwark-repo retention`: show and apply the retention plan.

use std::path::PathBuf;

use anyhow::Context;
use bulwark_repository::{utc, Repository};

/// Arguments of `bulwark-repo retention`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder.
    dir: PathBuf,
    /// Only this job.
    #[arg(long)]
    job: Option<String>,
    /// Show the plan without removing anything.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `bulwark-repo retention`.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    super::as_repo_owner(&a.dir)?;
    let repo = Repository::open(&a.dir).with_context(|| format!("opening {}", a.dir.display()))?;
    let jobs = match a.job {
        Some(j) => vec![j],
        None => repo.jobs()?,
    };
    let now = bulwark_time::UnixTime::now().secs();
    let mut out = Vec::new();
    let mut refused = false;
    for job in jobs {
        let r = repo.apply_retention(&job, now, a.dry_run)?;
        refused |= !r.refused.is_empty();
        if json {
            let marks: Vec<_> = r
                .marks
                .iter()
                .map(|(m, f)| {
                    serde_json::json!({"point": m.point.to_hex(), "chain": m.chain.to_hex(), "created": utc(f.created),
                        "keep": m.keep(), "reasons": m.reasons.iter().map(|x| x.to_string()).collect::<Vec<_>>()})
                })
                .collect();
            let removed: Vec<_> = r.removed.iter().map(|p| p.to_hex()).collect();
            let refused: Vec<_> = r
                .refused
                .iter()
                .map(|(p, w)| serde_json::json!({"point": p.to_hex(), "why": w}))
                .collect();
            out.push(
                serde_json::json!({"job": job, "has_policy": r.policy.is_some(), "marks": marks,
                "removed": removed, "refused": refused, "dry_run": a.dry_run}),
            );
            continue;
        }
        outln!("job {job}");
        if r.policy.is_none() {
            outln!(
                "  no retention policy: nothing is removed (set one with `bulwark-repo policy`)"
            );
            continue;
        }
        for (m, f) in &r.marks {
            let verdict = if m.keep() {
                format!(
                    "keep: {}",
                    m.reasons
                        .iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            } else if a.dry_run {
                "would remove".to_string()
            } else {
                "remove".to_string()
            };
            outln!("  {} {}  {verdict}", m.point, utc(f.created));
        }
        for (p, why) in &r.refused {
            outln!("  REFUSED removal of {p}: {why}");
        }
        if !a.dry_run {
            outln!("  removed {} restore points", r.removed.len());
        }
    }
    if json {
        outln!("{}", serde_json::Value::Array(out));
    }
    Ok(if refused { 1 } else { 0 })
}
