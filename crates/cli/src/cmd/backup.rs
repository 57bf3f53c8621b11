//! `bulwark backup`.

use std::path::PathBuf;

use anyhow::Context;
use bulwark_engine::{backup_local_source, BackupOptions, Source};
use serde_json::json;

use crate::output::{human, Output, EXIT_OK};

/// Arguments of `bulwark backup`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository: a local folder, or HOST:PORT (or bulwark://HOST:PORT) of an enrolled repository service.
    #[arg(long)]
    repo: PathBuf,
    /// The job: one protected disk. Letters, digits, '.', '_' and '-'.
    #[arg(long)]
    job: String,
    /// Raw disk image or block device to back up.
    source: PathBuf,
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
}

/// Runs `bulwark backup`.
pub fn run(a: Args, out: &Output) -> anyhow::Result<i32> {
    let opts = BackupOptions {
        block_size: a.block_size,
        compression_level: a.compression,
        force_full: a.full,
        threads: a.threads.unwrap_or_else(bulwark_engine::default_threads),
    };
    if let Some(addr) = super::remote::target(&a.repo) {
        return super::remote::backup(&addr, &a.job, &a.source, &opts, out);
    }
    let opened = super::become_repo_owner(&a.repo, &a.source)?;
    let repo = super::open_repo(&a.repo)?;
    let src = match opened {
        Some(s) => s,
        None => Source::open(&a.source).map_err(|e| match super::source_advice(&e) {
            Some(advice) => anyhow::anyhow!("{e}; {advice}"),
            None => e.into(),
        })?,
    };
    let pb = out.progress(src.size, "backup");
    let s = backup_local_source(&repo, &a.job, src, &opts, &|n| pb.inc(n))
        .with_context(|| format!("backing up {} as job {:?}", a.source.display(), a.job))?;
    pb.finish_and_clear();
    let synth = match a.synthetic_full {
        true => Some(
            repo.synthesize(&a.job)
                .with_context(|| format!("building a synthetic full of job {:?}", a.job))?,
        ),
        false => None,
    };
    let c = &s.counters;
    let m = &s.sealed.meta;
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    let clock_alert = repo.clock_alert();
    if let Some(a) = &clock_alert {
        eprintln!("ALERT: {a}");
    }
    if out.json {
        out.json(&json!({
            "job": m.job, "point": m.point.to_hex(), "chain": m.chain.to_hex(), "kind": m.kind.as_str(),
            "disk_size": m.disk_size, "block_size": m.block_size, "blocks_read": c.blocks_read,
            "blocks_zero": c.blocks_zero, "blocks_unchanged": c.blocks_unchanged, "blocks_new": c.blocks_new,
            "bytes_read": c.bytes_read, "bytes_new_plain": c.bytes_new_plain, "bytes_stored": c.bytes_stored,
            "seconds": secs, "path": s.sealed.path, "root_digest": s.sealed.root.to_hex(),
            "immutable": s.sealed.immutable, "expiry_unix": s.sealed.expiry, "full_reason": s.full_reason,
            "synthetic_full": synth.as_ref().map(synth_json),
            "clock_alert": clock_alert,
        }));
    } else {
        if let Some(why) = &s.full_reason {
            println!("note: active full because {why}");
        }
        println!(
            "{} {} of job {} ({} disk, {} read in {:.1}s, {:.0} MB/s)",
            m.kind.as_str(),
            m.point,
            m.job,
            human(m.disk_size),
            human(c.bytes_read),
            secs,
            m.disk_size as f64 / secs / 1e6
        );
        println!(
            "  {} new blocks ({} → {} stored), {} unchanged, {} zero or holes",
            c.blocks_new,
            human(c.bytes_new_plain),
            human(c.bytes_stored),
            c.blocks_unchanged,
            bulwark_format::block_count(m.disk_size, m.block_size)
                - c.blocks_new
                - c.blocks_unchanged
        );
        if s.sealed.immutable {
            println!(
                "  sealed immutable until {}",
                crate::output::utc(s.sealed.expiry.unwrap_or(0))
            );
        } else {
            println!("  WARNING: no immutability service guards this repository: the file is NOT immutable");
        }
        if let Some(o) = &synth {
            println!(
                "synthetic full {} built from it in {:.2}s by {}: {} cloned, {} copied",
                o.sealed.meta.point,
                o.elapsed.as_secs_f64(),
                o.method.as_str(),
                human(o.bytes_cloned),
                human(o.bytes_copied)
            );
            if let Some(why) = &o.fallback_reason {
                println!("  note: {why}: {}", bulwark_repository::REFLINK_ADVICE);
            }
        }
    }
    Ok(EXIT_OK)
}

fn synth_json(o: &bulwark_repository::SyntheticOutcome) -> serde_json::Value {
    json!({
        "point": o.sealed.meta.point.to_hex(), "chain": o.sealed.meta.chain.to_hex(),
        "method": o.method.as_str(), "fallback_reason": o.fallback_reason, "blocks": o.blocks,
        "bytes_cloned": o.bytes_cloned, "bytes_copied": o.bytes_copied, "seconds": o.elapsed.as_secs_f64(),
        "path": o.sealed.path, "immutable": o.sealed.immutable, "expiry_unix": o.sealed.expiry,
    })
}
