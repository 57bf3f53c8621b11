//! `bulwark restore`.

use std::path::{Path, PathBuf};

use bulwark_engine::RestoreOptions;

use crate::output::{human, Output, EXIT_OK};

/// Arguments of `bulwark restore`.
#[derive(clap::Args)]
#[command(mut_args(super::job_help("The job to restore from")))]
pub struct Args {
    #[command(flatten)]
    pub at: super::PointArg,
    /// Where to write the disk: a new file, or a block device.
    target: PathBuf,
    /// Replace TARGET if it is an existing file, or overwrite a block device that holds a
    /// filesystem, volume or partition table. A mounted or in-use device is always refused.
    #[arg(long)]
    force: bool,
    /// Worker threads (default: one per core, plus one).
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    keys: super::KeyArgs,
}

/// Runs `bulwark restore`.
pub fn run(a: Args, config_dir: &Path, out: &Output) -> anyhow::Result<i32> {
    let repo = &a.at.open(config_dir);
    let point = a.at.id()?;
    let mut opts = RestoreOptions {
        force: a.force,
        ..Default::default()
    };
    if let Some(t) = a.threads {
        opts.threads = t;
    }
    let key = a.keys.load()?;
    let r = repo.restore_with(a.at.job(), point, &a.target, &opts, key.as_ref(), out)?;
    if out.json {
        out.json(&r);
    } else {
        outln!(
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
