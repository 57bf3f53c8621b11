//! The S3 tier's local catalog: what a repository knows about its copies in object storage
//! without asking the store. Settings (`REPO/tiers/<name>.toml`), the credentials file's
//! checks, one record per copied restore point, and uploads to resume.
//!
//! This crate links no S3 SDK and no async runtime, so that `bulwark-repo status` (in the
//! same binary as the network-facing transport) can report the tiers; the SDK lives in
//! `bulwark-tier-s3`, which builds on this crate, and is linked only by `bulwark-tier` and the
//! client.

mod error;
pub mod record;
pub mod settings;

pub use error::{CatalogError, Result};
pub use record::ObjectRecord;
pub use settings::{Credentials, TierMode, TierSettings};

use std::collections::HashSet;

use bulwark_repository::Repository;
use bulwark_time::utc;

/// Name used when `bulwark-tier add` is given none.
pub const DEFAULT_TIER: &str = "s3";

/// The one tier of a repository when `name` is `None`, else `name`.
pub fn tier_name(repo: &Repository, name: Option<&str>) -> Result<String> {
    if let Some(n) = name {
        return Ok(n.to_string());
    }
    let names = TierSettings::names(repo.root())?;
    match names.as_slice() {
        [] => Err(CatalogError::Config(format!(
            "{} has no tier; add one with `bulwark-tier add {} --endpoint URL --bucket NAME --credentials FILE`",
            repo.root().display(),
            repo.root().display()
        ))),
        [one] => Ok(one.clone()),
        _ => Err(CatalogError::Config(format!(
            "several tiers ({}); say which with --name",
            names.join(", ")
        ))),
    }
}

/// State of one tier, from the catalog alone (no network); `--json` prints it as is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TierStatus {
    pub name: String,
    pub endpoint: String,
    pub bucket: String,
    /// Where `bulwark-tier sync` writes this repository's copies: `bulwark/<repository id>`.
    pub prefix: String,
    /// Prefixes of other repositories whose copies `bulwark-tier import` recorded here (read,
    /// never written).
    pub imported_from: Vec<String>,
    pub mode: TierMode,
    /// Restore points copied (record written after retention was read back).
    pub copied: usize,
    /// Local restore points not copied yet.
    pub pending: usize,
    /// Local restore-point files that cannot be read (not copied; `bulwark-repo verify`).
    pub unreadable: usize,
    /// Multipart uploads to resume.
    pub uploads_in_progress: usize,
    /// Copied points whose local file is gone (moved, or the host was rebuilt).
    pub remote_only: usize,
    /// Earliest and latest retain-until of the copies (store clock).
    pub retain_until: Option<(i64, i64)>,
}

impl TierStatus {
    /// One line for `bulwark-repo status` and `bulwark-tier status`.
    pub fn line(&self) -> String {
        let until = self
            .retain_until
            .map(|(a, b)| format!(", locked until {} … {}", utc(a), utc(b)))
            .unwrap_or_default();
        let imported = match self.imported_from.as_slice() {
            [] => String::new(),
            p => format!(", imported from {}/", p.join("/, ")),
        };
        format!(
            "tier {}: bucket {} at {}, prefix {}/{imported} ({} mode): {} copied, {} pending{}, {} uploads to resume, {} only in the tier{until}",
            self.name,
            self.bucket,
            self.endpoint,
            self.prefix,
            self.mode.as_str(),
            self.copied,
            self.pending,
            match self.unreadable {
                0 => String::new(),
                n => format!(" ({n} more unreadable: not copied, run bulwark-repo verify)"),
            },
            self.uploads_in_progress,
            self.remote_only
        )
    }
}

/// The state of every tier of `repo`, sorted by name.
pub fn status(repo: &Repository) -> Result<Vec<TierStatus>> {
    let mut out = Vec::new();
    for name in TierSettings::names(repo.root())? {
        let s = TierSettings::load(repo.root(), &name)?;
        let records = record::load_all(repo.root(), &name)?;
        let prefix = settings::repo_prefix(&repo.config().id);
        let imported_from: std::collections::BTreeSet<String> = records
            .iter()
            .filter_map(|r| settings::prefix_of_key(&r.key))
            .filter(|p| *p != prefix)
            .map(str::to_string)
            .collect();
        let copied: HashSet<&str> = records.iter().map(|r| r.point.as_str()).collect();
        let (mut pending, mut unreadable) = (0, 0);
        let mut local = HashSet::new();
        for job in repo.jobs()? {
            let scan = repo.scan_job(&job)?;
            unreadable += scan.unreadable.len();
            for p in scan.points {
                let id = p.meta.point.to_hex();
                if !copied.contains(id.as_str()) {
                    pending += 1;
                }
                local.insert(id);
            }
        }
        let uploads = std::fs::read_dir(settings::tier_dir(repo.root(), &name).join("uploads"))
            .map(|rd| rd.filter(|e| e.is_ok()).count())
            .unwrap_or(0);
        let retain_until = records
            .iter()
            .map(|r| r.retain_until)
            .fold(None, |acc: Option<(i64, i64)>, t| {
                Some(acc.map_or((t, t), |(a, b)| (a.min(t), b.max(t))))
            });
        out.push(TierStatus {
            name,
            endpoint: s.endpoint,
            bucket: s.bucket,
            prefix,
            imported_from: imported_from.into_iter().collect(),
            mode: s.mode,
            copied: records.len(),
            pending,
            unreadable,
            uploads_in_progress: uploads,
            remote_only: records.iter().filter(|r| !local.contains(&r.point)).count(),
            retain_until,
        });
    }
    Ok(out)
}
