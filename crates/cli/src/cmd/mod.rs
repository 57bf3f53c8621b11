//! One module per subcommand.

pub mod backup;
pub mod demo;
pub mod enroll;
pub mod job;
pub mod list;
pub mod remote;
pub mod restore;
pub mod verify;

use std::path::Path;

use anyhow::Context;
use bulwark_repository::Repository;

/// Opens the repository named by `--repo`.
pub fn open_repo(path: &Path) -> anyhow::Result<Repository> {
    Repository::open(path).with_context(|| format!("opening repository {}", path.display()))
}

/// Opens the repository and attaches its S3 tier, so that restore points missing locally
/// are read from their copies.
pub fn open_repo_with_tier(path: &Path) -> anyhow::Result<Repository> {
    let mut repo = open_repo(path)?;
    bulwark_tier_s3::attach(&mut repo)
        .with_context(|| format!("reading the tier settings of {}", path.display()))?;
    Ok(repo)
}

/// Parses sizes such as `1M`, `256K`, `65536`.
pub fn parse_size(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1024u64),
        Some('M' | 'm') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 64K, 1M or 4M"))?;
    u32::try_from(n * mult).map_err(|_| format!("{s} is too large"))
}
