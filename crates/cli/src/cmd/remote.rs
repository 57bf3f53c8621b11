//! The network path of `backup`, `restore`, `list` and `verify` when `--repo` is HOST:PORT.

use std::path::Path;

use anyhow::Context;
use bulwark_engine::{BackupOptions, RestoreOptions};
use bulwark_format::PointId;
use bulwark_remote::{config_dir, RemoteAddr};
use serde_json::json;

use crate::output::{human, utc, Output, EXIT_DAMAGE, EXIT_OK};

/// `--repo` as a remote address, if it names one.
pub fn target(repo: &Path) -> Option<RemoteAddr> {
    match bulwark_remote::parse_repo_arg(repo) {
        bulwark_remote::RepoTarget::Remote(a) => Some(a),
        bulwark_remote::RepoTarget::Local(_) => None,
    }
}

/// `bulwark backup` to a repository service.
pub fn backup(
    addr: &RemoteAddr,
    job: &str,
    source: &Path,
    opts: &BackupOptions,
    out: &Output,
) -> anyhow::Result<i32> {
    let size = bulwark_engine::Source::open(source)
        .map(|s| s.size)
        .unwrap_or(0);
    let pb = out.progress(size, "backup");
    let s =
        bulwark_remote::backup_remote(&config_dir(None), addr, job, source, opts, &|n| pb.inc(n))
            .with_context(|| format!("backing up {} as job {job:?} to {addr}", source.display()))?;
    pb.finish_and_clear();
    let c = &s.counters;
    let m = &s.sealed.summary;
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    let notice = (!s.sealed.notice.is_empty()).then_some(&s.sealed.notice);
    if let Some(n) = notice {
        eprintln!("ALERT from the repository: {n}");
    }
    if out.json {
        out.json(&json!({
            "repository": addr.to_string(), "client": s.client, "job": job, "point": m.point.to_hex(),
            "chain": m.chain.to_hex(), "kind": m.kind.as_str(), "disk_size": m.disk_size, "block_size": m.block_size,
            "blocks_read": c.blocks_read, "blocks_zero": c.blocks_zero, "blocks_unchanged": c.blocks_unchanged,
            "blocks_new": c.blocks_new, "bytes_read": c.bytes_read, "bytes_new_plain": c.bytes_new_plain,
            "bytes_stored": c.bytes_stored, "seconds": secs, "root_digest": m.root.to_hex(),
            "created_unix": m.created_unix, "immutable": s.sealed.immutable, "expiry_unix": s.sealed.expiry,
            "full_reason": s.full_reason, "clock_alert": notice,
        }));
    } else {
        if let Some(why) = &s.full_reason {
            println!("note: active full because {why}");
        }
        println!(
            "{} {} of job {job} sent to {addr} as client {} ({} disk, {} read in {:.1}s, {:.0} MB/s)",
            m.kind.as_str(),
            m.point,
            s.client,
            human(m.disk_size),
            human(c.bytes_read),
            secs,
            m.disk_size as f64 / secs / 1e6
        );
        println!(
            "  {} new blocks ({} → {} stored), {} unchanged; created {} by the repository's clock",
            c.blocks_new,
            human(c.bytes_new_plain),
            human(c.bytes_stored),
            c.blocks_unchanged,
            utc(m.created_unix)
        );
        if s.sealed.immutable {
            println!(
                "  sealed immutable until {}",
                utc(s.sealed.expiry.unwrap_or(0))
            );
        } else {
            println!("  WARNING: no immutability service guards this repository: the file is NOT immutable");
        }
    }
    Ok(EXIT_OK)
}

/// `bulwark restore` from a repository service.
pub fn restore(
    addr: &RemoteAddr,
    job: &str,
    point: Option<PointId>,
    target: &Path,
    opts: &RestoreOptions,
    out: &Output,
) -> anyhow::Result<i32> {
    let pb = out.progress(0, "restore");
    let s =
        bulwark_remote::restore_remote(&config_dir(None), addr, job, point, target, opts, &|n| {
            pb.inc(n)
        })
        .with_context(|| format!("restoring job {job:?} from {addr} to {}", target.display()))?;
    pb.finish_and_clear();
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    if out.json {
        out.json(&json!({
            "repository": addr.to_string(), "job": job, "point": s.point.to_hex(), "target": target,
            "disk_size": s.disk_size, "blocks_written": s.blocks_written, "bytes_written": s.bytes_written,
            "seconds": secs,
        }));
    } else {
        println!(
            "restored {} of job {job} from {addr} to {} ({} disk, {} data written in {:.1}s, {:.0} MB/s); every block matched its hash",
            s.point,
            target.display(),
            human(s.disk_size),
            human(s.bytes_written),
            secs,
            s.disk_size as f64 / secs / 1e6
        );
    }
    Ok(EXIT_OK)
}

/// `bulwark list` of this client's jobs on a repository service.
pub fn list(addr: &RemoteAddr, job: Option<&str>, out: &Output) -> anyhow::Result<i32> {
    let dir = config_dir(None);
    let jobs = match job {
        Some(j) => vec![j.to_string()],
        None => bulwark_remote::list_jobs(&dir, addr)
            .with_context(|| format!("listing jobs on {addr}"))?,
    };
    let mut all = Vec::new();
    for job in &jobs {
        let points = bulwark_remote::list_points(&dir, addr, job)
            .with_context(|| format!("listing job {job:?} on {addr}"))?;
        if !out.json {
            println!("job {job}");
        }
        let mut last_chain = None;
        let mut pj = Vec::new();
        for m in &points {
            if !out.json {
                if last_chain != Some(m.chain) {
                    println!("  chain {}", m.chain);
                    last_chain = Some(m.chain);
                }
                println!(
                    "    {}  {:14}  {}  disk {:>10}  stored {:>10}  new {:>10}",
                    m.point,
                    m.kind.as_str(),
                    utc(m.created_unix),
                    human(m.disk_size),
                    human(m.file_bytes),
                    human(m.new_bytes)
                );
            }
            pj.push(json!({
                "point": m.point.to_hex(), "chain": m.chain.to_hex(), "parent": (!m.parent.is_none()).then(|| m.parent.to_hex()),
                "kind": m.kind.as_str(), "created_unix": m.created_unix, "created": utc(m.created_unix),
                "disk_size": m.disk_size, "block_size": m.block_size, "file_bytes": m.file_bytes,
                "stored_bytes": m.stored_bytes, "new_bytes": m.new_bytes, "new_blocks": m.new_blocks,
                "root_digest": m.root.to_hex(), "retention": m.retention.as_str(), "client": m.client,
            }));
        }
        all.push(json!({"job": job, "points": pj, "unreadable": []}));
    }
    if out.json {
        out.json(&json!({ "repository": addr.to_string(), "jobs": all }));
    } else if jobs.is_empty() {
        println!("no restore points of this client yet on {addr}");
    }
    Ok(EXIT_OK)
}

/// `bulwark verify` of this client's jobs, run by the repository service.
pub fn verify(addr: &RemoteAddr, job: Option<&str>, out: &Output) -> anyhow::Result<i32> {
    let r = bulwark_remote::verify_remote(&config_dir(None), addr, job)
        .with_context(|| format!("verifying on {addr}"))?;
    let clean = r.damaged.is_empty();
    if out.json {
        let damaged: Vec<_> = r
            .damaged
            .iter()
            .map(|d| {
                json!({"job": d.job, "point": d.point.map(|p| p.to_hex()), "problems": d.problems,
                            "blocks": d.blocks, "more_blocks": d.more_blocks})
            })
            .collect();
        out.json(
            &json!({"repository": addr.to_string(), "points_checked": r.points_checked,
                         "blocks_checked": r.blocks_checked, "bytes_checked": r.bytes_checked,
                         "damaged": damaged, "clean": clean}),
        );
    } else {
        for d in &r.damaged {
            let id = d.point.map(|p| p.to_hex()).unwrap_or_else(|| "?".into());
            println!("DAMAGED job {} point {id}", d.job);
            for p in &d.problems {
                println!("  {p}");
            }
            if !d.blocks.is_empty() {
                let shown: Vec<String> = d.blocks.iter().take(20).map(|b| b.to_string()).collect();
                println!("  damaged blocks: {}", shown.join(", "));
            }
        }
        println!(
            "verified {} restore points, {} blocks, {} stored on {addr}: {}",
            r.points_checked,
            r.blocks_checked,
            human(r.bytes_checked),
            if clean {
                "all good".to_string()
            } else {
                format!("{} damaged", r.damaged.len())
            }
        );
    }
    Ok(if clean { EXIT_OK } else { EXIT_DAMAGE })
}
