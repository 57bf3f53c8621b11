//! The S3 Object Lock tier: copies of sealed restore points in S3-compatible object storage
//! (AWS S3, Ceph RGW, MinIO), locked in COMPLIANCE mode until the same date as the local
//! file, addressed by key and version id, and read back when the local file is missing.
//!
//! This is the only crate that links the S3 SDK; the repository sees it through
//! `bulwark_repository::RemoteStore`, and the immutability service never sees it.

mod error;
mod import;
pub mod probe;
pub mod record;
mod remote;
pub mod settings;
pub mod store;
mod sync;
mod verify;

pub use error::{Result, TierError};
pub use import::{import, ImportReport};
pub use record::ObjectRecord;
pub use remote::{attach, TierRemote};
pub use settings::{Credentials, TierMode, TierSettings};
pub use store::{Store, SKEW_WARN_SECS};
pub use sync::{SyncOptions, SyncReport};
pub use verify::{TierVerifyReport, VersionProblem};

use std::path::PathBuf;

use bulwark_repository::Repository;

/// Name used when `tier add` is given none.
pub const DEFAULT_TIER: &str = "s3";

/// An opened tier: settings, credentials checked, a client for the bucket.
pub struct Tier {
    pub settings: TierSettings,
    root: PathBuf,
    immutable_days: u32,
    store: Store,
}

/// What `tier add` found.
#[derive(Debug)]
pub struct AddReport {
    pub probe: probe::ProbeObservations,
    /// Store clock minus this host's, seconds.
    pub skew: Option<i64>,
    pub warnings: Vec<String>,
}

/// The one tier of a repository when `name` is `None`, else `name`.
pub fn tier_name(repo: &Repository, name: Option<&str>) -> Result<String> {
    if let Some(n) = name {
        return Ok(n.to_string());
    }
    let names = TierSettings::names(repo.root())?;
    match names.as_slice() {
        [] => Err(TierError::Config(format!(
            "{} has no tier; add one with `bulwark-repo tier add {} --endpoint URL --bucket NAME --credentials FILE`",
            repo.root().display(),
            repo.root().display()
        ))),
        [one] => Ok(one.clone()),
        _ => Err(TierError::Config(format!(
            "several tiers ({}); say which with --name",
            names.join(", ")
        ))),
    }
}

fn skew_warning(skew: Option<i64>) -> Option<String> {
    let s = skew?;
    (s.abs() > SKEW_WARN_SECS).then(|| {
        format!(
            "the store's clock is {s:+} s off this host's; retain-until dates are computed from the store's own clock (its Date header), but check NTP on both"
        )
    })
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Tier {
    /// Opens tier `name` of `repo`; makes no request yet.
    pub fn open(repo: &Repository, name: &str) -> Result<Tier> {
        let settings = TierSettings::load(repo.root(), name)?;
        Tier::with_settings(repo, settings)
    }

    fn with_settings(repo: &Repository, settings: TierSettings) -> Result<Tier> {
        settings.check()?;
        let owner = settings::repo_owner(repo.root())?;
        let creds = Credentials::load(&settings.credentials, owner)?;
        let store = Store::new(&settings, &creds)?;
        Ok(Tier {
            settings,
            root: repo.root().to_path_buf(),
            immutable_days: repo.config().immutable_days,
            store,
        })
    }

    /// The client for the tier's bucket.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Object key of a restore point.
    pub fn key_of(&self, job: &str, chain: &str, point: &str) -> String {
        format!(
            "{}/{job}/{chain}/{point}.{}",
            self.settings.prefix,
            bulwark_immut_msg::layout::POINT_EXT
        )
    }

    /// Checks the bucket (credentials, Object Lock on, locks enforced), sets its default
    /// retention, and saves the settings: `bulwark-repo tier add`.
    pub fn add(repo: &Repository, settings: TierSettings) -> Result<(Tier, AddReport)> {
        if TierSettings::names(repo.root())?.contains(&settings.name) {
            return Err(TierError::Config(format!(
                "tier {:?} already exists in {}",
                settings.name,
                repo.root().display()
            )));
        }
        let tier = Tier::with_settings(repo, settings)?;
        let s = &tier.store;
        if let Err(why) = s.object_lock_enabled()? {
            return Err(TierError::NoObjectLock {
                bucket: tier.settings.bucket.clone(),
                why,
            });
        }
        let probe = probe::run(s, &tier.settings.prefix)?;
        // A second safeguard: objects whose lock headers a store ignores still get locked.
        s.set_default_retention(tier.immutable_days)?;
        tier.settings.save(repo.root())?;
        let skew = s.skew();
        let warnings = skew_warning(skew).into_iter().collect();
        Ok((
            tier,
            AddReport {
                probe,
                skew,
                warnings,
            },
        ))
    }
}

/// Creates the bucket of `settings` with Object Lock enabled, unless it exists already.
pub fn create_bucket(repo: &Repository, settings: &TierSettings) -> Result<()> {
    let creds = Credentials::load(&settings.credentials, settings::repo_owner(repo.root())?)?;
    let store = Store::new(settings, &creds)?;
    match store.create_bucket(true) {
        Err(e)
            if matches!(
                e.code(),
                Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
            ) =>
        {
            Ok(())
        }
        r => r,
    }
}

/// State of one tier, for `bulwark-repo status` (no network).
#[derive(Debug, Clone)]
pub struct TierStatus {
    pub name: String,
    pub endpoint: String,
    pub bucket: String,
    pub mode: TierMode,
    /// Restore points copied (record written after retention was read back).
    pub copied: usize,
    /// Local restore points not copied yet.
    pub pending: usize,
    /// Multipart uploads to resume.
    pub uploads_in_progress: usize,
    /// Copied points whose local file is gone (moved, or the host was rebuilt).
    pub remote_only: usize,
    /// Earliest and latest retain-until of the copies (store clock).
    pub retain_until: Option<(i64, i64)>,
}

/// The state of every tier of `repo`.
pub fn status(repo: &Repository) -> Result<Vec<TierStatus>> {
    let mut out = Vec::new();
    for name in TierSettings::names(repo.root())? {
        let s = TierSettings::load(repo.root(), &name)?;
        let records = record::load_all(repo.root(), &name)?;
        let copied: std::collections::HashSet<&str> =
            records.iter().map(|r| r.point.as_str()).collect();
        let mut pending = 0;
        let mut local = std::collections::HashSet::new();
        for job in repo.jobs()? {
            for p in repo.scan_job(&job)?.points {
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
            mode: s.mode,
            copied: records.len(),
            pending,
            uploads_in_progress: uploads,
            remote_only: records.iter().filter(|r| !local.contains(&r.point)).count(),
            retain_until,
        });
    }
    Ok(out)
}
