//! `bulwark backup`.

use std::path::{Path, PathBuf};

use bulwark_engine::BackupOptions;

use crate::output::{human, utc, Output, EXIT_OK};

/// Arguments of `bulwark backup`.
#[derive(clap::Args)]
#[command(mut_args(super::job_help(
    "The job: one protected disk. Letters, digits, '.', '_' and '-'"
)))]
pub struct Args {
    #[command(flatten)]
    pub at: super::JobArg,
    /// What to back up: a raw disk image or block device, an image file (qcow2, vmdk, vdi,
    /// vhdx: read through qemu-nbd), or an NBD URI (nbd://HOST[:PORT]/EXPORT,
    /// nbd+unix:///EXPORT?socket=PATH).
    source: PathBuf,
    #[command(flatten)]
    live: super::live::LiveArgs,
    /// Start a new chain with an active full, even if the job has restore points.
    #[arg(long)]
    full: bool,
    /// After this backup, build a synthetic full from the chain on the repository (blocks
    /// cloned, not sent): the next backups start a new chain from it.
    #[arg(long, conflicts_with = "full")]
    synthetic_full: bool,
    /// Block size of a new chain (64K to 4M, a power of two). Default 1M.
    #[arg(long, value_parser = super::parse_size)]
    block_size: Option<u32>,
    /// zstd compression level (1 to 19, -7 to -1 for faster, 0 for none).
    #[arg(long, default_value_t = bulwark_engine::DEFAULT_COMPRESSION, allow_hyphen_values = true)]
    compression: i32,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Encrypt with this symmetric key file (`bulwark key create`); its passphrase from
    /// $BULWARK_PASSPHRASE, $BULWARK_PASSPHRASE_FILE, the systemd credential or the terminal.
    /// A job encrypted once is refused without its key.
    #[arg(long, conflicts_with = "public_key")]
    key: Option<PathBuf>,
    /// Encrypt as a write-only client with this public key (`bulwark key create
    /// --write-only`): the backup can be read only with the private restore key.
    #[arg(long)]
    public_key: Option<PathBuf>,
}

/// Runs `bulwark backup`.
pub fn run(a: Args, config_dir: &Path, out: &Output) -> anyhow::Result<i32> {
    // Ctrl-C / SIGTERM stop the backup between blocks: the unfinished file is removed and no
    // restore point is made (a second signal ends the process at once).
    bulwark_sys::catch_interrupts();
    let repo = &a.at.open(config_dir);
    let opts = BackupOptions {
        block_size: a.block_size,
        compression_level: a.compression,
        force_full: a.full,
        threads: a.threads.unwrap_or_else(bulwark_engine::default_threads),
    };
    let key = super::key::write_key(a.key.as_deref(), a.public_key.as_deref())?;
    let live = a.live.is_live(&a.source);
    let r = if live {
        repo.backup_live(
            &a.at.job,
            &a.source,
            &opts,
            &a.live,
            a.synthetic_full,
            key.as_ref(),
            out,
        )?
    } else {
        repo.backup_with(
            &a.at.job,
            &a.source,
            &opts,
            a.synthetic_full,
            key.as_ref(),
            out,
        )?
    };
    if let Some(alert) = &r.clock_alert {
        match &r.repository {
            Some(_) => eprintln!("ALERT from the repository: {alert}"),
            None => eprintln!("ALERT: {alert}"),
        }
    }
    let missed = r
        .cbt
        .as_ref()
        .and_then(|c| c.verify.as_ref())
        .is_some_and(|v| v.missed_blocks > 0);
    if out.json {
        out.json(&r);
        return Ok(if missed { 1 } else { EXIT_OK });
    }
    if let Some(why) = &r.full_reason {
        outln!("note: active full because {why}");
    }
    let rate = format!(
        "{} disk, {} read in {:.1}s, {:.0} MB/s",
        human(r.disk_size),
        human(r.counters.bytes_read),
        r.seconds,
        r.disk_size as f64 / r.seconds / 1e6
    );
    match (&r.repository, &r.client) {
        (Some(addr), Some(client)) => outln!(
            "{} {} of job {} sent to {addr} as client {client} ({rate})",
            r.kind,
            r.point,
            r.job
        ),
        _ => outln!("{} {} of job {} ({rate})", r.kind, r.point, r.job),
    }
    let stored = format!(
        "  {} new blocks ({} → {} stored), {} unchanged",
        r.counters.blocks_new,
        human(r.counters.bytes_new_plain),
        human(r.counters.bytes_stored),
        r.counters.blocks_unchanged
    );
    if r.repository.is_some() {
        outln!(
            "{stored}; created {} by the repository's clock",
            utc(r.created_unix)
        );
    } else {
        let zero = bulwark_format::block_count(r.disk_size, r.block_size)
            - r.counters.blocks_new
            - r.counters.blocks_unchanged;
        outln!("{stored}, {zero} zero or holes");
    }
    if r.immutable {
        outln!(
            "  sealed immutable until {}",
            utc(r.expiry_unix.unwrap_or(0))
        );
    } else {
        outln!(
            "  WARNING: no immutability service guards this repository: the file is NOT immutable"
        );
    }
    if let Some(o) = &r.synthetic_full {
        outln!(
            "synthetic full {} built from it in {:.2}s by {}: {} cloned, {} copied",
            o.point,
            o.seconds,
            o.method,
            human(o.bytes_cloned),
            human(o.bytes_copied)
        );
        if let Some(why) = &o.fallback_reason {
            outln!("  note: {why}: {}", bulwark_repository::REFLINK_ADVICE);
        }
    }
    if super::live::print_cbt(&r) {
        return Ok(1);
    }
    Ok(EXIT_OK)
}
