//! `bulwark-repo space`.

use std::path::PathBuf;

use anyhow::Context;
use bulwark_repository::human;
use bulwark_repository::{Protection, Repository, SpaceReport};
use serde_json::json;

/// Arguments of `bulwark-repo space`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder.
    dir: PathBuf,
}

/// Runs `bulwark-repo space`.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    let repo = Repository::open(&a.dir).with_context(|| format!("opening {}", a.dir.display()))?;
    let r = repo
        .space()
        .with_context(|| format!("measuring the space of {}", a.dir.display()))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report_json(&r))?);
    } else {
        print_report(&a.dir, &r);
    }
    Ok(0)
}

fn report_json(r: &SpaceReport) -> serde_json::Value {
    let jobs: Vec<_> = r
        .jobs
        .iter()
        .map(|j| {
            let chains: Vec<_> = j
                .chains
                .iter()
                .map(|c| {
                    let files: Vec<_> = c
                        .files
                        .iter()
                        .map(|f| {
                            json!({"point": f.point.to_hex(), "kind": f.kind.as_str(), "path": f.path,
                                   "logical_bytes": f.logical_bytes, "physical_bytes": f.physical_bytes,
                                   "shared_bytes": f.shared_bytes, "locked_until_unix": f.locked_until})
                        })
                        .collect();
                    json!({"chain": c.chain.to_hex(), "logical_bytes": c.logical_bytes,
                           "physical_bytes": c.physical_bytes, "shared_bytes": c.shared_bytes,
                           "exclusive_bytes": c.exclusive_bytes, "files": files})
                })
                .collect();
            json!({"job": j.job, "chains": chains})
        })
        .collect();
    let locked = match &r.protection {
        Protection::NotProtected => json!({"state": "not-protected"}),
        Protection::Unknown(why) => json!({"state": "unknown", "reason": why}),
        Protection::Locked(days) => json!({"state": "locked", "until": days.iter().map(|d| json!({
            "until_unix": d.until_unix, "files": d.files, "logical_bytes": d.logical_bytes,
            "physical_bytes": d.physical_bytes})).collect::<Vec<_>>()}),
    };
    json!({
        "logical_bytes": r.logical_bytes, "allocated_bytes": r.allocated_bytes,
        "physical_bytes": r.physical_bytes, "shared_bytes": r.shared_bytes,
        "saved_bytes": r.allocated_bytes.saturating_sub(r.physical_bytes),
        "filesystem": {"name": r.filesystem.name, "total_bytes": r.filesystem.total_bytes,
                       "free_bytes": r.filesystem.free_bytes},
        "locked": locked, "jobs": jobs,
    })
}

fn print_report(dir: &std::path::Path, r: &SpaceReport) {
    outln!(
        "repository {} on {} ({} free of {})",
        dir.display(),
        r.filesystem.name,
        human(r.filesystem.free_bytes),
        human(r.filesystem.total_bytes)
    );
    outln!(
        "restore points: logical {}, allocated per file {} (what du counts), physical {} (each shared extent once), shared {}",
        human(r.logical_bytes),
        human(r.allocated_bytes),
        human(r.physical_bytes),
        human(r.shared_bytes)
    );
    if r.allocated_bytes > r.physical_bytes {
        outln!(
            "block cloning saves {}",
            human(r.allocated_bytes - r.physical_bytes)
        );
    }
    for j in &r.jobs {
        outln!("job {}", j.job);
        for c in &j.chains {
            outln!(
                "  chain {} (restore points: {}): logical {}, physical {}, shared {}, only in this chain {}",
                c.chain,
                c.files.len(),
                human(c.logical_bytes),
                human(c.physical_bytes),
                human(c.shared_bytes),
                human(c.exclusive_bytes)
            );
        }
    }
    match &r.protection {
        Protection::NotProtected => {
            outln!("locked: not protected (no immutability service guards this repository)")
        }
        Protection::Unknown(why) => outln!("locked: unknown: {why}"),
        Protection::Locked(days) if days.is_empty() => outln!("locked: nothing"),
        Protection::Locked(days) => {
            for d in days {
                outln!(
                    "locked until {}: {} files ({} logical), {} physical bytes not freeable before then",
                    utc_date(d.until_unix),
                    d.files,
                    human(d.logical_bytes),
                    human(d.physical_bytes)
                );
            }
        }
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
fn utc_date(secs: i64) -> String {
    bulwark_time::UnixTime(secs).utc_minutes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_sizes() {
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_795_000_000), "2026-11-18 11:06 UTC");
        assert_eq!(human(1536), "1.5 KiB");
    }
}
