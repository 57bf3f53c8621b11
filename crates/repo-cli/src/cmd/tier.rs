//! `bulwark-repo tier`: copies of sealed restore points in S3 Object Lock storage.

use std::path::PathBuf;

use anyhow::Context;
use bulwark_repository::{utc, Repository};
use bulwark_tier_s3::{import, tier_name, SyncOptions, Tier, TierMode, TierSettings, DEFAULT_TIER};

/// Arguments of `bulwark-repo tier`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where the bucket is and how to reach it.
#[derive(clap::Args)]
struct Target {
    /// S3 endpoint URL, e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:7480.
    #[arg(long)]
    endpoint: String,
    /// Bucket name; the bucket must have been created with Object Lock enabled.
    #[arg(long)]
    bucket: String,
    /// Region (signing region).
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// File with `access_key_id = "…"` and `secret_access_key = "…"`, mode 0600, owned by the
    /// service user. Keys are never taken from the command line.
    #[arg(long)]
    credentials: PathBuf,
    /// Name of the tier in this repository.
    #[arg(long, default_value = DEFAULT_TIER)]
    name: String,
    /// Multipart part size in MiB (5 to 256); larger files are uploaded in parts.
    #[arg(long, default_value_t = 16)]
    part_size_mib: u64,
}

impl Target {
    fn settings(self, mode: TierMode, prefix: String) -> TierSettings {
        let credentials = std::path::absolute(&self.credentials).unwrap_or(self.credentials);
        TierSettings {
            name: self.name,
            endpoint: self.endpoint,
            bucket: self.bucket,
            region: self.region,
            mode,
            credentials,
            prefix,
            part_size: self.part_size_mib << 20,
            max_attempts: 6,
        }
    }
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Add a tier: checks the bucket has Object Lock and that the store enforces it.
    Add {
        /// The repository folder.
        dir: PathBuf,
        #[command(flatten)]
        target: Target,
        /// copy: keep local files too; move: free local files whose protection ended, once
        /// their copy is confirmed.
        #[arg(long, default_value = "copy")]
        mode: TierMode,
        /// Create the bucket, with Object Lock enabled, if it does not exist.
        #[arg(long)]
        create_bucket: bool,
    },
    /// Upload restore points not copied yet, extend retention of grown chains, apply move mode.
    Sync {
        /// The repository folder.
        dir: PathBuf,
        /// The tier (default: the only one).
        #[arg(long)]
        name: Option<String>,
    },
    /// Check every copy's version, lock mode, retain-until and content hash (exit 1 if bad).
    Verify {
        /// The repository folder.
        dir: PathBuf,
        /// The tier (default: the only one).
        #[arg(long)]
        name: Option<String>,
    },
    /// Rebuild a repository's tier catalog from the bucket alone (the host was lost).
    Import {
        /// The repository folder (created when missing).
        dir: PathBuf,
        #[command(flatten)]
        target: Target,
        /// The id of the lost repository, when the bucket holds several.
        #[arg(long)]
        source_id: Option<String>,
    },
}

fn open(dir: &std::path::Path) -> anyhow::Result<Repository> {
    Repository::open(dir).with_context(|| format!("opening {}", dir.display()))
}

/// Runs `bulwark-repo tier …`.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    match a.cmd {
        Cmd::Add {
            dir,
            target,
            mode,
            create_bucket,
        } => {
            let repo = open(&dir)?;
            let prefix = format!("bulwark/{}", repo.config().id);
            let s = target.settings(mode, prefix);
            if create_bucket {
                bulwark_tier_s3::create_bucket(&repo, &s).context("creating the bucket")?;
            }
            let (tier, r) = Tier::add(&repo, s).context("adding the tier")?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({"tier": tier.settings.name, "bucket": tier.settings.bucket,
                        "endpoint": tier.settings.endpoint, "mode": tier.settings.mode.as_str(),
                        "lock_probe": {"delete_refused": r.probe.delete.err(), "shorten_refused": r.probe.shorten.err()},
                        "clock_skew_seconds": r.skew})
                );
            } else {
                println!(
                    "tier {} added: bucket {} at {} ({} mode)",
                    tier.settings.name,
                    tier.settings.bucket,
                    tier.settings.endpoint,
                    tier.settings.mode.as_str()
                );
                println!(
                    "lock probe: deleting a COMPLIANCE-locked version was refused ({}), shortening its retention was refused ({})",
                    r.probe.delete.clone().err().unwrap_or_default(),
                    r.probe.shorten.clone().err().unwrap_or_default()
                );
                println!(
                    "bucket default retention: COMPLIANCE, {} days",
                    repo.config().immutable_days
                );
                println!(
                    "copy restore points with `bulwark-repo tier sync {}`",
                    dir.display()
                );
            }
            Ok(0)
        }
        Cmd::Sync { dir, name } => {
            let repo = open(&dir)?;
            let tier = Tier::open(&repo, &tier_name(&repo, name.as_deref())?)?;
            let r = tier.sync(&repo, &SyncOptions::default())?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({"uploaded": r.uploaded, "adopted": r.adopted, "already": r.already,
                        "extended": r.extended, "moved": r.moved, "bytes_uploaded": r.bytes_uploaded,
                        "parts_uploaded": r.parts_uploaded, "parts_resumed": r.parts_resumed,
                        "clock_skew_seconds": r.skew, "unguarded": r.unguarded})
                );
            } else {
                println!(
                    "uploaded {} restore points ({} bytes, {} parts, {} parts resumed), adopted {}, {} already copied, {} retention extended, {} local files freed",
                    r.uploaded.len(),
                    r.bytes_uploaded,
                    r.parts_uploaded,
                    r.parts_resumed,
                    r.adopted.len(),
                    r.already,
                    r.extended,
                    r.moved.len()
                );
            }
            Ok(0)
        }
        Cmd::Verify { dir, name } => {
            let repo = open(&dir)?;
            let tier = Tier::open(&repo, &tier_name(&repo, name.as_deref())?)?;
            let r = tier.verify()?;
            if json {
                let p: Vec<_> = r
                    .problems
                    .iter()
                    .map(|p| serde_json::json!({"point": p.point, "key": p.key, "version_id": p.version_id, "problem": p.why}))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"checked": r.checked, "bytes": r.bytes, "problems": p})
                );
            } else {
                for p in &r.problems {
                    println!(
                        "BAD {} ({} version {}): {}",
                        p.point, p.key, p.version_id, p.why
                    );
                }
                println!(
                    "checked {} copies ({} bytes): {}",
                    r.checked,
                    r.bytes,
                    if r.problems.is_empty() {
                        "all COMPLIANCE-locked, retention and content as recorded".to_string()
                    } else {
                        format!("{} problems", r.problems.len())
                    }
                );
            }
            Ok(if r.problems.is_empty() { 0 } else { 1 })
        }
        Cmd::Import {
            dir,
            target,
            source_id,
        } => {
            let s = target.settings(TierMode::Copy, String::new());
            let r = import(&dir, s, source_id.as_deref())?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"source_id": r.source_id, "created_repository": r.created_repository,
                        "imported": r.imported, "skipped": r.skipped})
                );
            } else {
                for (v, why) in &r.skipped {
                    eprintln!("skipped {v}: {why}");
                }
                println!(
                    "imported {} restore points of repository {} into {}{}; restore them with `bulwark restore --repo {} --job JOB TARGET`",
                    r.imported.len(),
                    r.source_id,
                    dir.display(),
                    if r.created_repository { " (new repository)" } else { "" },
                    dir.display()
                );
            }
            Ok(0)
        }
    }
}

/// Lines describing the tiers of `repo` for `bulwark-repo status`.
pub fn status_lines(repo: &Repository) -> anyhow::Result<(Vec<String>, serde_json::Value)> {
    let mut lines = Vec::new();
    let mut js = Vec::new();
    for t in bulwark_tier_s3::status(repo)? {
        let until = t
            .retain_until
            .map(|(a, b)| format!(", locked until {} … {}", utc(a), utc(b)))
            .unwrap_or_default();
        lines.push(format!(
            "tier {}: bucket {} at {} ({} mode): {} copied, {} pending, {} uploads to resume, {} only in the tier{until}",
            t.name, t.bucket, t.endpoint, t.mode.as_str(), t.copied, t.pending, t.uploads_in_progress, t.remote_only
        ));
        js.push(
            serde_json::json!({"name": t.name, "bucket": t.bucket, "endpoint": t.endpoint,
            "mode": t.mode.as_str(), "copied": t.copied, "pending": t.pending,
            "uploads_in_progress": t.uploads_in_progress, "remote_only": t.remote_only,
            "retain_until": t.retain_until}),
        );
    }
    Ok((lines, serde_json::Value::Array(js)))
}
