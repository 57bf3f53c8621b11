//! One module per subcommand, and what they share: the bucket a tier points at.

pub mod add;
pub mod import;
pub mod status;
pub mod sync;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::Context;
use bulwark_repository::Repository;
use bulwark_tier_s3::{tier_name, Tier, TierMode, TierSettings, DEFAULT_TIER};

/// Where the bucket is and how to reach it.
#[derive(clap::Args)]
pub struct Target {
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
    /// The settings of a tier on this bucket.
    pub fn settings(self, mode: TierMode, prefix: String) -> TierSettings {
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

/// Opens the repository in `dir`.
pub fn open(dir: &Path) -> anyhow::Result<Repository> {
    Repository::open(dir).with_context(|| format!("opening {}", dir.display()))
}

/// A repository folder and one of its tiers: the arguments of `sync` and `verify`.
#[derive(clap::Args)]
pub struct RepoTier {
    /// The repository folder.
    dir: PathBuf,
    /// The tier (default: the only one).
    #[arg(long)]
    name: Option<String>,
}

impl RepoTier {
    /// Opens the repository and the tier.
    pub fn open(&self) -> anyhow::Result<(Repository, Tier)> {
        let repo = open(&self.dir)?;
        let tier = Tier::open(&repo, &tier_name(&repo, self.name.as_deref())?)?;
        Ok((repo, tier))
    }
}
