//! `bulwark-repo synthesize`.

use std::path::PathBuf;

use anyhow::Context;
use bulwark_repository::{Repository, SynthMethod, SyntheticOutcome, REFLINK_ADVICE};

use bulwark_repository::human;

/// Arguments of `bulwark-repo synthesize`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder.
    dir: PathBuf,
    /// The job whose newest restore point becomes a new synthetic full.
    #[arg(long)]
    job: String,
}

/// Runs `bulwark-repo synthesize`.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    super::as_repo_owner(&a.dir)?;
    let repo = Repository::open(&a.dir).with_context(|| format!("opening {}", a.dir.display()))?;
    let o = repo
        .synthesize(&a.job)
        .with_context(|| format!("building a synthetic full of job {:?}", a.job))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&outcome_json(&o))?);
    } else {
        print_outcome(&o);
    }
    Ok(0)
}

/// The outcome as JSON (shared with `bulwark backup --synthetic-full`).
pub fn outcome_json(o: &SyntheticOutcome) -> serde_json::Value {
    let m = &o.sealed.meta;
    serde_json::json!({
        "job": m.job, "point": m.point.to_hex(), "chain": m.chain.to_hex(), "kind": m.kind.as_str(),
        "source_point": o.source_point.to_hex(), "source_chain": o.source_chain.to_hex(),
        "method": o.method.as_str(), "fallback_reason": o.fallback_reason, "blocks": o.blocks,
        "bytes_cloned": o.bytes_cloned, "bytes_copied": o.bytes_copied, "clone_calls": o.clone_calls,
        "seconds": o.elapsed.as_secs_f64(), "path": o.sealed.path, "root_digest": o.sealed.root.to_hex(),
        "immutable": o.sealed.immutable, "expiry_unix": o.sealed.expiry,
    })
}

fn print_outcome(o: &SyntheticOutcome) {
    let m = &o.sealed.meta;
    outln!(
        "synthetic full {} of job {} from {} (chain {}): {} blocks in {:.2}s",
        m.point,
        m.job,
        o.source_point,
        o.source_chain,
        o.blocks,
        o.elapsed.as_secs_f64()
    );
    match o.method {
        SynthMethod::Clone => outln!(
            "  cloned {} with {} FICLONERANGE calls: no block data was written",
            human(o.bytes_cloned),
            o.clone_calls
        ),
        SynthMethod::Copy => {
            outln!(
                "  COPIED {} (and cloned {}): {}",
                human(o.bytes_copied),
                human(o.bytes_cloned),
                o.fallback_reason
                    .as_deref()
                    .unwrap_or("the filesystem refused to clone")
            );
            outln!("  note: {REFLINK_ADVICE}");
        }
    }
    if o.sealed.immutable {
        outln!(
            "  sealed immutable until unix time {}",
            o.sealed.expiry.unwrap_or(0)
        );
    } else {
        outln!(
            "  WARNING: no immutability service guards this repository: the file is NOT immutable"
        );
    }
}
