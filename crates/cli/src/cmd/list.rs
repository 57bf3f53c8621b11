//! `bulwark list`.

use std::path::PathBuf;

use bulwark_format::PointId;
use serde_json::json;

use crate::output::{human, utc, Output, EXIT_OK};

/// Arguments of `bulwark list`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository: a local folder, or HOST:PORT (or bulwark://HOST:PORT) of an enrolled repository service.
    #[arg(long)]
    repo: PathBuf,
    /// Only this job.
    #[arg(long)]
    job: Option<String>,
}

/// Runs `bulwark list`.
pub fn run(a: Args, out: &Output) -> anyhow::Result<i32> {
    if let Some(addr) = super::remote::target(&a.repo) {
        return super::remote::list(&addr, a.job.as_deref(), out);
    }
    let mut repo = super::open_repo(&a.repo)?;
    // Points only the S3 tier holds (after `tier import`, or moved) are listed too. The
    // tier's records are local files: listing makes no request to the store.
    if let Err(e) = bulwark_tier_s3::attach(&mut repo) {
        eprintln!(
            "warning: the S3 tier's records are unreadable, listing local files only: {}",
            bulwark_repository::error_chain(&e)
        );
    }
    let jobs = match a.job {
        Some(j) => vec![j],
        None => repo.jobs()?,
    };
    let mut all = Vec::new();
    for job in &jobs {
        let scan = repo.scan_job(job)?;
        if !out.json {
            println!("job {job}");
        }
        let mut last_chain = None;
        let mut points = Vec::new();
        for p in &scan.points {
            let m = &p.meta;
            if !out.json {
                if last_chain != Some(m.chain) {
                    println!("  chain {}", m.chain);
                    last_chain = Some(m.chain);
                }
                println!(
                    "    {}  {:14}  {}  disk {:>10}  stored {:>10}  new {:>10}",
                    m.point,
                    m.kind.as_str(),
                    utc(m.created_unix_secs),
                    human(m.disk_size),
                    human(p.file_size),
                    human(m.stats.bytes_new_plain)
                );
            }
            points.push(json!({
                "point": m.point.to_hex(), "chain": m.chain.to_hex(), "parent": (!m.parent.is_none()).then(|| m.parent.to_hex()),
                "kind": m.kind.as_str(), "created_unix": m.created_unix_secs, "created": utc(m.created_unix_secs),
                "disk_size": m.disk_size, "block_size": m.block_size, "file_bytes": p.file_size,
                "stored_bytes": m.stats.bytes_stored, "new_bytes": m.stats.bytes_new_plain,
                "new_blocks": m.stats.blocks_new, "root_digest": p.root.to_hex(), "retention": m.retention.as_str(),
                "location": "local",
            }));
        }
        let tier_only = tier_only_points(&repo, job, &scan)?;
        for (chain, point) in &tier_only {
            let created = created_unix(*point);
            let kind = if chain == point {
                "full"
            } else {
                "incremental"
            };
            if !out.json {
                if last_chain != Some(*chain) {
                    println!("  chain {chain}");
                    last_chain = Some(*chain);
                }
                println!("    {point}  {kind:14}  {}  in the tier only", utc(created));
            }
            points.push(json!({
                "point": point.to_hex(), "chain": chain.to_hex(), "kind": kind,
                "created_unix": created, "created": utc(created), "location": "tier",
            }));
        }
        for (path, e) in &scan.unreadable {
            if !out.json {
                println!(
                    "  UNREADABLE {}: {}",
                    path.display(),
                    bulwark_repository::error_chain(e)
                );
            }
        }
        let unreadable: Vec<_> = scan
            .unreadable
            .iter()
            .map(|(p, e)| json!({"path": p, "error": bulwark_repository::error_chain(e)}))
            .collect();
        all.push(json!({"job": job, "points": points, "unreadable": unreadable}));
    }
    if out.json {
        out.json(&json!({ "jobs": all }));
    } else if jobs.is_empty() {
        println!("no restore points yet");
    }
    Ok(EXIT_OK)
}

/// (chain, point) of the restore points of `job` that only the attached tier holds, oldest
/// first.
fn tier_only_points(
    repo: &bulwark_repository::Repository,
    job: &str,
    scan: &bulwark_repository::JobScan,
) -> anyhow::Result<Vec<(PointId, PointId)>> {
    let Some(r) = repo.remote() else {
        return Ok(vec![]);
    };
    let local: std::collections::HashSet<PointId> = scan
        .points
        .iter()
        .map(|p| p.meta.point)
        .chain(scan.unreadable.iter().filter_map(|(p, _)| {
            bulwark_immut_msg::layout::parse_point_file_name(&p.file_name()?.to_string_lossy())
        }))
        .collect();
    let mut v: Vec<_> = r
        .points(job)
        .map_err(|e| anyhow::anyhow!("listing {}: {e}", r.describe()))?
        .into_iter()
        .filter(|(_, p)| !local.contains(p))
        .collect();
    v.sort_by_key(|(_, p)| *p);
    Ok(v)
}

/// Creation time a point id carries (its leading nanoseconds by the repository's clock).
fn created_unix(p: PointId) -> i64 {
    (u64::from_be_bytes(p.0[..8].try_into().expect("8 bytes")) / 1_000_000_000) as i64
}
