//! `bulwark restore`.

use std::path::PathBuf;

use anyhow::Context;
use bulwark_engine::{restore_local, RestoreOptions};
use bulwark_format::PointId;
use serde_json::json;

use crate::output::{human, Output, EXIT_OK};

/// Arguments of `bulwark restore`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository: a local folder, or HOST:PORT (or bulwark://HOST:PORT) of an enrolled repository service.
    #[arg(long)]
    repo: PathBuf,
    /// The job to restore from.
    #[arg(long)]
    job: String,
    /// Restore point id (from `bulwark list`), or `latest`.
    #[arg(long, default_value = "latest")]
    point: String,
    /// Where to write the disk: a new file, or a block device.
    target: PathBuf,
    /// Replace TARGET if it is an existing file, or overwrite a block device that holds a
    /// filesystem, volume or partition table. A mounted or in-use device is always refused.
    #[arg(long)]
    force: bool,
    /// Worker threads (default: one per core, plus one).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `bulwark restore`.
pub fn run(a: Args, out: &Output) -> anyhow::Result<i32> {
    let point = if a.point == "latest" {
        None
    } else {
        Some(
            a.point
                .parse::<PointId>()
                .map_err(anyhow::Error::msg)
                .context("--point")?,
        )
    };
    let mut opts = RestoreOptions {
        force: a.force,
        ..Default::default()
    };
    if let Some(t) = a.threads {
        opts.threads = t;
    }
    if let Some(addr) = super::remote::target(&a.repo) {
        return super::remote::restore(&addr, &a.job, point, &a.target, &opts, out);
    }
    let repo = super::open_repo_with_tier(&a.repo)?;
    let pb = out.progress(0, "restore");
    let s = restore_local(&repo, &a.job, point, &a.target, &opts, &|n| pb.inc(n))
        .with_context(|| format!("restoring job {:?} to {}", a.job, a.target.display()))?;
    pb.finish_and_clear();
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    if out.json {
        out.json(&json!({
            "job": a.job, "point": s.point.to_hex(), "target": a.target, "disk_size": s.disk_size,
            "blocks_written": s.blocks_written, "bytes_written": s.bytes_written, "seconds": secs,
        }));
    } else {
        println!(
            "restored {} of job {} to {} ({} disk, {} data written in {:.1}s, {:.0} MB/s); every block matched its hash",
            s.point,
            a.job,
            a.target.display(),
            human(s.disk_size),
            human(s.bytes_written),
            secs,
            s.disk_size as f64 / secs / 1e6
        );
    }
    Ok(EXIT_OK)
}
