//! `bulwark restore`.

use std::path::PathBuf;

use anyhow::Context;
use bulwark_engine::RestoreOptions;
use bulwark_format::PointId;

use crate::output::{human, Output, EXIT_OK};
use crate::repo::Repo;

/// Arguments of `bulwark restore`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub at: super::RepoArg,
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
    /// The symmetric key file an encrypted point was written with.
    #[arg(long, conflicts_with = "restore_key")]
    key: Option<PathBuf>,
    /// The private restore key of a write-only client's backups (`bulwark key create
    /// --write-only`); its passphrase from the terminal or $BULWARK_PASSPHRASE.
    #[arg(long)]
    restore_key: Option<PathBuf>,
}

/// Runs `bulwark restore`.
pub fn run(a: Args, repo: &Repo, out: &Output) -> anyhow::Result<i32> {
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
    let key = super::key::read_key(a.key.as_deref(), a.restore_key.as_deref())?;
    let r = repo.restore_with(&a.job, point, &a.target, &opts, key.as_ref(), out)?;
    if out.json {
        out.json(&r);
    } else {
        println!(
            "restored {} of job {}{} to {} ({} disk, {} data written in {:.1}s, {:.0} MB/s); every block matched its hash",
            r.point,
            r.job,
            r.repository
                .as_ref()
                .map(|a| format!(" from {a}"))
                .unwrap_or_default(),
            r.target.display(),
            human(r.disk_size),
            human(r.bytes_written),
            r.seconds,
            r.disk_size as f64 / r.seconds / 1e6
        );
    }
    Ok(EXIT_OK)
}
